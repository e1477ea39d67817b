"""The meta-dataset of [9/12]: variants, the pool, the cross-evaluated matrix and its guards."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from sllmbo.core.errors import SllmboError, TaskError
from sllmbo.data.matrix import MatrixSpec, collect_matrix, read_matrix, run_order, training_spec
from sllmbo.data.pool import Pool, read_pools, write_pools
from sllmbo.data.registry import plan_variants
from sllmbo.data.splits import HELDOUT
from sllmbo.data.variants import MIN_VARIANT_ROWS, VARIANT_CAP, ladder

ROOT = Path(__file__).resolve().parents[1]


def test_variant_cards_state_the_rows_they_are_fitted_on() -> None:
    from sllmbo.data import load_task

    task = load_task("bike_sharing@1729")
    card = task.meta_features()
    assert task.name == "bike_sharing@1729" and card["n_rows"] == len(task.X_train) == 1729
    assert task.full_train_rows == len(load_task("bike_sharing").X_train)
    with pytest.raises(TaskError, match="not a variant"):
        load_task("bike_sharing@1000")


def test_variant_rows_span_what_the_readme_states() -> None:
    """The cap (20,000) over the ladder's floor (~250) is 80x by construction, short of the
    two orders of magnitude [9/12] asked for; the README states these spans."""
    assert ladder(100_000) == [VARIANT_CAP, 5000, 1250, 312]
    assert ladder(300) == [300] and min(ladder(1001)) >= MIN_VARIANT_ROWS
    spans = {}
    for split in ("train", "heldout"):
        rows = [v.rows for v in plan_variants(split)]
        spans[split] = (min(rows), max(rows))
    assert spans == {"train": (120, VARIANT_CAP), "heldout": (210, VARIANT_CAP)}


def test_run_order_reaches_every_size_band_within_the_first_rounds() -> None:
    variants = training_spec().variants
    order = run_order(variants)
    assert sorted(order) == sorted(variants)
    first = order[:8]
    assert min(v.rows for v in first) < 1_000 and max(v.rows for v in first) >= 16_000


def test_at_least_30_heldout_datasets_and_their_variants_are_held_out() -> None:
    from sllmbo.data.splits import heldout_match

    assert len(HELDOUT) >= 30
    assert heldout_match("imdb_movie_rating@5000") == "imdb_movie_rating"
    assert all(heldout_match(v.name) is None for v in plan_variants("train"))


def test_training_spec_refuses_a_heldout_dataset() -> None:
    with pytest.raises(TaskError, match="held-out"):
        training_spec(datasets=["diamond_prices"])


def test_committed_pool_is_in_its_families_spaces_and_rejects_edits(tmp_path: Path) -> None:
    pools = read_pools(ROOT / "data" / "matrix" / "pool.json")
    assert set(pools) == {"lightgbm", "xgboost"}
    assert all(50 <= len(p) <= 100 for p in pools.values())
    assert pools["lightgbm"].configs[0].source == "defaults"
    record = json.loads((ROOT / "data" / "matrix" / "pool.json").read_text())
    record["families"]["lightgbm"]["configs"][1]["config"]["num_leaves"] = 100_000
    bad = tmp_path / "pool.json"
    bad.write_text(json.dumps(record))
    with pytest.raises(SllmboError, match="outside the lightgbm space"):
        read_pools(bad)


def _must_not_run(*args: object) -> dict[str, float]:
    raise AssertionError("a cell restored from the export ran again")


def _tiny_spec() -> MatrixSpec:
    spec = training_spec(families=["lightgbm"], datasets=["professor_salaries"])
    return MatrixSpec("train", spec.variants, (Pool("lightgbm", spec.pools[0].configs[:2]),))


def test_matrix_collects_resumes_and_its_reader_rejects_a_foreign_pool(tmp_path: Path) -> None:
    spec = _tiny_spec()
    url, out = f"sqlite:///{tmp_path}/m.db", tmp_path / "train.csv.gz"
    state = collect_matrix(spec, url, out, workers=1, poll_s=0.5)
    assert state["complete"] == 2 and "waiting" not in state  # + one pruned end-of-queue trial
    pools = {"lightgbm": spec.pools[0]}
    matrix = read_matrix(out, pools=pools)
    assert list(matrix.cells["config_id"]) == ["lightgbm-000", "lightgbm-001"]
    assert (matrix.cells["n_fits"] == 9).all()  # 3 x 3-fold below 2,000 rows
    assert collect_matrix(spec, url, out, workers=1, poll_s=0.5)["complete"] == 2  # nothing rerun
    before = out.read_bytes()
    fresh = f"sqlite:///{tmp_path}/lost.db"  # the database is gone: resume from the export
    state = collect_matrix(spec, fresh, out, workers=1, poll_s=0.5, scorer=_must_not_run)
    assert state["complete"] == 2 and out.read_bytes() == before
    other = {"lightgbm": Pool("lightgbm", spec.pools[0].configs[:1])}
    with pytest.raises(SllmboError, match="another pool"):
        read_matrix(out, pools=other)
    with pytest.raises(SllmboError, match="not the heldout one"):
        read_matrix(out, pools=pools, split="heldout")
    header = out.with_name("train.json")
    record = json.loads(header.read_text())
    header.write_text(json.dumps({**record, "n_rows": 3}))
    with pytest.raises(SllmboError, match="truncated"):
        read_matrix(out, pools=pools)


def test_no_code_under_data_or_training_reads_the_heldout_matrix() -> None:
    pattern = re.compile(r"heldout\.csv|heldout_matrix|HELDOUT_MATRIX|split=[\"']heldout")
    offenders = [str(p.relative_to(ROOT)) for folder in ("data", "training")
                 for p in (ROOT / folder).rglob("*.py") if pattern.search(p.read_text())]
    assert offenders == []


def test_write_pools_round_trips(tmp_path: Path) -> None:
    pools = read_pools(ROOT / "data" / "matrix" / "pool.json")
    path = write_pools(list(pools.values()), tmp_path / "pool.json")
    assert {f: p.hash for f, p in read_pools(path).items()} == {f: p.hash for f, p in pools.items()}


def _hand_made() -> tuple[dict, object]:
    import pandas as pd

    def card(rows: int, classes: int | None = None) -> dict:
        return {"n_rows": rows, "n_features": 10, "n_numeric": 10, "n_classes": classes}

    cards = {"small@300": card(300), "big@20000": card(20000), "mid@2000": card(2000),
             "cls@20000": card(20000, 2)}
    scores = pd.DataFrame({"c0": [1.0, 5.0, 3.0, 0.1], "c1": [2.0, 1.0, 1.0, 0.9],
                           "c2": [3.0, 3.0, 2.0, 0.5]},
                          index=["small@300", "big@20000", "mid@2000", "cls@20000"])
    return cards, scores


def test_knn_takes_the_nearest_variants_best_configurations_in_order() -> None:
    from sllmbo.data.pool_select import knn

    cards, scores = _hand_made()
    query = {"n_rows": 15000, "n_features": 10, "n_numeric": 10, "n_classes": None}
    # nearest regression variant is big@20000 (best c1), then mid@2000 (c1 again), small (c0)
    assert knn(query, cards, scores, budget=1) == ["c1"]
    assert knn(query, cards, scores, budget=2) == ["c1", "c0"]
    assert knn(query, cards, scores, budget=2, exclude_dataset="big") == ["c1", "c0"]
    small = {**query, "n_rows": 250}
    assert knn(small, cards, scores, budget=1) == ["c0"]


def test_oracle_pool_is_the_best_entry_of_the_heldout_row() -> None:
    from sllmbo.data.pool_select import portfolio
    from sllmbo.eval.zeroshot_baselines import oracle_pool

    cards, scores = _hand_made()
    for variant in scores.index:
        assert scores.loc[variant, oracle_pool(scores, variant)] == scores.loc[variant].min()
    assert portfolio(cards, scores, "regression", 2)[0] in {"c1", "c2"}


def test_a_portfolio_can_begin_with_a_given_choice() -> None:
    from sllmbo.data.pool_select import portfolio

    cards, scores = _hand_made()
    full = portfolio(cards, scores, "regression", 3)
    started = portfolio(cards, scores, "regression", 3, start=["c0"])
    assert started[0] == "c0" and sorted(started) == sorted(full)
    assert portfolio(cards, scores, "regression", 1, start=["c2"]) == ["c2"]


def test_matrix_examples_rank_the_pool_and_prompt_as_inference_does(tmp_path: Path) -> None:
    from sllmbo.core.families import get_family
    from sllmbo.core.prompts import recommend_messages, score_messages
    from sllmbo.data.matrix_examples import MatrixOptions, matrix_examples, rank_deciles
    from sllmbo.recommend import recommend_task

    assert rank_deciles({"a": 1.0, "b": 3.0, "c": None, "d": 2.0, "e": 1.0}) == \
        {"a": 0, "b": 6, "c": 9, "d": 4, "e": 0}
    spec = _tiny_spec()
    url, out = f"sqlite:///{tmp_path}/m.db", tmp_path / "train.csv.gz"
    collect_matrix(spec, url, out, workers=1, poll_s=0.5)
    pools = {"lightgbm": spec.pools[0]}
    rows = matrix_examples(out, MatrixOptions(top_k=1, score_per_variant=None), pools=pools)
    variant = spec.variants[0].name
    single = [r for r in rows if r["kind"] == "matrix-single-shot"]
    scored = [r for r in rows if r["kind"] == "matrix-score"]
    assert len(single) == len(spec.variants) and len(scored) == 2 * len(spec.variants)
    matrix = read_matrix(out, pools=pools)
    best = matrix.scores("lightgbm").loc[variant].idxmin()
    first = next(r for r in single if r["task"] == variant)
    assert first["config_id"] == best and first["rank"] == 1
    # Prompt parity: what `sllmbo recommend --task <variant>` sends, byte for byte.
    captured: list[object] = []

    from sllmbo.inference.base import Backend

    class Capture(Backend):
        name = "capture"

        def complete(self, requests):
            captured.extend(r.messages for r in requests)
            raise RuntimeError("captured")

    with pytest.raises(RuntimeError, match="captured"):
        recommend_task(variant, "lightgbm", 1, Capture(), decode="greedy")
    assert captured[0] == first["prompt"]
    family = get_family("lightgbm")
    space = family.default_space("regression")
    config = {n: pools["lightgbm"].configs[0].config[n] for n in space.names}
    row = next(r for r in scored if r["task"] == variant and r["config_id"] == "lightgbm-000")
    assert row["prompt"] == score_messages(_card_of(variant), space, config)
    assert recommend_messages(_card_of(variant), space) == first["prompt"]


def _card_of(variant: str):
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data import load_task
    from sllmbo.data.resolve import build_card

    return build_card(load_task(variant), get_family("lightgbm"), EvalSettings())
