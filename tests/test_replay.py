"""The offline replay (``sllmbo.eval.replay``): it tries exactly what the real zero-shot suite
tried, a new method is one registered function, and its statistics are the report's."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from sllmbo.eval.replay import Bench, best_within, replay_records, replay_run
from sllmbo.eval.replay_methods import REPLAY_METHODS, Context, register

ROOT = Path(__file__).resolve().parents[1]
#: The zero-shot-30 suite's store: its runs read today's training matrix, as the replay does
#: (the zero-shot suite's ran before the coverage datasets joined the matrix).
STORE = ROOT / "eval" / "results" / "zero-shot-30" / "eval.sqlite"
#: A regression, a binary and a multiclass held-out dataset.
DATASETS = ("hitters_salary@210", "german_credit@800", "penguin_species@275")


@pytest.fixture(scope="module")
def heldout_bench() -> Bench:
    from sllmbo.eval.replay import load_benches

    return load_benches(["heldout"])[0]


@pytest.mark.parametrize("method", ["portfolio", "feedback", "portfolio-ratio",
                                    "defaults-first-ratio"])
def test_replay_tries_the_real_suites_configurations(heldout_bench: Bench, method: str) -> None:
    """Every stored run of ``method`` on three held-out datasets x both families, replayed
    with the CV scores its sampler saw, tries the same pool entries in the same order."""
    from sllmbo.data.matrix import POOL_FILE
    from sllmbo.data.pool import read_pools
    from sllmbo.eval.replay import reproduce, stored_runs

    configs = {c.id: c.config for pool in read_pools(POOL_FILE).values() for c in pool.configs}
    runs = [r for r in stored_runs(STORE, [method]) if r["task"] in DATASETS]
    assert len(runs) == 6
    for run in runs:
        real, replayed = reproduce(heldout_bench, run, configs)
        assert None not in real and len(real) >= 5, run["key"]
        assert replayed == real, run["key"]


def tiny_bench() -> Bench:
    """Two pool entries, three training rows, one task whose own scores favour ``p-1``."""
    ids = ("p-0", "p-1", "p-2")
    train = pd.DataFrame([[1.0, 2.0, 3.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]],
                         index=["r@1", "s@1", "t@1"], columns=list(ids))
    card = {"n_rows": 100, "n_features": 3, "n_numeric": 3, "n_classes": None}
    own = {"p-0": 5.0, "p-1": 4.0, "p-2": 6.0}
    return Bench("tiny", {("q@1", "f"): own}, {("q@1", "f"): own}, {"q@1": card},
                 {"f": train}, {v: card for v in train.index}, {"f": ids}, {"f": "p-0"})


def test_a_registered_method_is_replayed_and_a_repeat_ends_its_run() -> None:
    @register("always-p2")
    def always_p2(ctx: Context, history: list[tuple[str, float | None]]) -> str | None:
        return "p-2"

    try:
        records = replay_records(tiny_bench(), ["defaults", "always-p2", "oracle-pool"], [1, 2])
        by = {(r["method"], r["budget"]): r for r in records}
        assert by[("always-p2", 2)]["n_tried"] == 1  # it repeated itself: one trial, not two
        assert by[("oracle-pool", 1)]["config_id"] == "p-1"
        assert by[("defaults", 2)]["test_score"] == 5.0
        with pytest.raises(ValueError, match="registered twice"):
            register("always-p2")(always_p2)
    finally:
        REPLAY_METHODS.pop("always-p2")


def test_the_portfolio_replay_follows_the_greedy_order() -> None:
    """Regrets on the tiny matrix: p-0 is best alone (1/3), p-1 then covers the rest."""
    bench = tiny_bench()
    ctx = Context("q@1", "f", bench.cards["q@1"], bench.pool_ids["f"], "p-0",
                  bench.train["f"], bench.train_cards)
    assert replay_run(REPLAY_METHODS["portfolio"], ctx, {}, 3) == ["p-0", "p-1", "p-2"]


def test_the_configuration_handed_over_is_the_best_seen_earliest_on_ties() -> None:
    seen = {"a": 2.0, "b": 2.0, "c": math.nan, "d": 1.0}
    assert best_within(["a", "b", "c", "d"], seen, 3) == "a"
    assert best_within(["a", "b", "c", "d"], seen, 4) == "d"
    assert best_within(["c"], seen, 1) is None


def test_random_over_pool_is_seeded() -> None:
    bench = tiny_bench()
    a = [r["config_id"] for r in replay_records(bench, ["random-over-pool"], [1])]
    b = [r["config_id"] for r in replay_records(bench, ["random-over-pool"], [1])]
    assert a == b and len(a) == REPLAY_METHODS["random-over-pool"].seeds


def test_an_unknown_method_is_one_message_and_exit_2(capsys: pytest.CaptureFixture[str]
                                                     ) -> None:
    from sllmbo.eval.replay_report import main

    assert main(["--methods", "defaults,nope", "--benches", "heldout"]) == 2
    err = capsys.readouterr().err
    assert "--methods: unknown nope" in err and "choose from" in err


def _ratio_context(card: dict, train: pd.DataFrame, cards: dict) -> Context:
    return Context("q@1", "f", card, tuple(train.columns), "d", train, cards)


def test_the_ratio_portfolio_keeps_a_multiclass_disaster_out_of_first_place() -> None:
    """``bad`` is the best entry on every binary row by a little and 5x the best log-loss on
    every multiclass row: the clipped-regret portfolio of all classification rows may put
    it first; the log-ratio portfolio of the multiclass subtype does not."""
    binary = {"n_rows": 100, "n_features": 3, "n_numeric": 3, "n_classes": 2}
    multi = {**binary, "n_classes": 7}
    train = pd.DataFrame([[0.30, 0.31, 0.32], [0.40, 0.41, 0.42], [0.50, 0.52, 0.51],
                          [2.50, 0.50, 0.55], [3.00, 0.60, 0.58]],
                         index=["b1@1", "b2@1", "b3@1", "m1@1", "m2@1"],
                         columns=["bad", "d", "e"])
    cards = {"b1@1": binary, "b2@1": binary, "b3@1": binary, "m1@1": multi, "m2@1": multi}
    ctx = _ratio_context(multi, train, cards)
    order = replay_run(REPLAY_METHODS["portfolio-ratio"], ctx, {}, 3)
    assert order[0] != "bad" and order[-1] == "bad"
    first = replay_run(REPLAY_METHODS["defaults-first-ratio"], ctx, {}, 2)
    assert first == ["d", order[0] if order[0] != "d" else order[1]]


def test_feedback_ratio_follows_the_rows_that_score_like_the_run() -> None:
    """Four kinds of training rows. The log-ratio portfolio starts y, z and goes on with c
    (what helps the most rows); a run whose scores on y and z look like the ``a_like`` rows
    (the nearest ten) goes on with x, the entry that lowers those rows' best ratio."""
    card = {"n_rows": 100, "n_features": 3, "n_numeric": 3, "n_classes": None}
    columns = ["a", "b", "x", "c", "y", "z"]
    a_like = [1.0, 2.0, 0.7, 3.0, 1.5, 1.5]
    kinds = [a_like] * 10 + [[2.0, 1.0, 3.0, 0.7, 1.5, 1.5]] * 10 \
        + [[1.0, 1.0, 1.5, 1.0, 1.5, 0.3]] * 10 + [[2.0, 1.0, 3.0, 0.9, 0.3, 1.5]] * 15
    train = pd.DataFrame(kinds, index=[f"r{i}@{i}" for i in range(len(kinds))],
                         columns=columns)
    ctx = _ratio_context(card, train, {v: card for v in train.index})
    assert replay_run(REPLAY_METHODS["portfolio-ratio"], ctx, {}, 3) == ["y", "z", "c"]
    seen = dict(zip(columns, a_like, strict=True))
    assert replay_run(REPLAY_METHODS["feedback-ratio"], ctx, seen, 3) == ["y", "z", "x"]


def test_gbdt_rank_replays_on_held_out_datasets_only(heldout_bench: Bench) -> None:
    """The shipped scorer trained on every training row: the leave-one-out bench leaves it
    out, and a context naming a training dataset is refused, never scored."""
    from dataclasses import replace

    from sllmbo.core.errors import SllmboError
    from sllmbo.eval.replay import contexts
    from sllmbo.rank import POOL_TRIALS

    assert REPLAY_METHODS["gbdt-rank"].heldout_only
    assert REPLAY_METHODS["gbdt-rank"].budget_cap == POOL_TRIALS  # then TPE, not replayed
    tried = replay_run(REPLAY_METHODS["gbdt-rank"],
                       next(contexts(heldout_bench, REPLAY_METHODS["gbdt-rank"]))[0], {}, 3)
    assert len(set(tried)) == 3
    assert replay_records(replace(heldout_bench, leave_out=True), ["gbdt-rank"]) == []
    ctx, _ = next(contexts(heldout_bench, REPLAY_METHODS["gbdt-rank"]))
    with pytest.raises(SllmboError, match="trained on"):
        REPLAY_METHODS["gbdt-rank"].policy(replace(ctx, task="wine_cultivar@142"), [])


def test_the_replay_report_runs_as_a_module() -> None:
    """``make bench-replay`` is ``python -m sllmbo.eval.replay_report``: the module runs its
    ``main`` (an unknown bench is one message and exit 2, before any work)."""
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "sllmbo.eval.replay_report", "--benches", "nosuch"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2 and "unknown nosuch" in run.stderr


def test_defaults_first_level_follows_the_rows_as_noisy_as_the_runs_defaults() -> None:
    """Multiclass rows of two kinds: separable ones, where the defaults' log-loss is a small
    share of the prior entropy and ``deep`` is best, and noisy ones (most of the rows), where
    ``shallow`` is. After the defaults, a run whose defaults scored like the separable rows
    goes on with ``deep``; one that scored like the noisy rows, with ``shallow``."""
    from sllmbo.data.pool_select import prior_error
    from sllmbo.eval.replay_methods import LEVEL_NEIGHBOURS

    card = {"n_rows": 100, "n_features": 3, "n_numeric": 3, "n_classes": 4}
    assert prior_error(card) == pytest.approx(math.log(4))
    separable = [[0.10, 0.02, 0.03]] * LEVEL_NEIGHBOURS
    noisy = [[1.20, 1.50, 1.00]] * (2 * LEVEL_NEIGHBOURS)
    columns = ["d", "deep", "shallow"]
    train = pd.DataFrame(separable + noisy, index=[f"r{i}@1" for i in range(30)], columns=columns)
    ctx = _ratio_context(card, train, {v: card for v in train.index})
    assert replay_run(REPLAY_METHODS["portfolio-ratio"], ctx, {}, 1) == ["shallow"]
    assert replay_run(REPLAY_METHODS["defaults-first-level"], ctx,
                      {"d": 0.12, "deep": 0.03, "shallow": 0.4}, 2) == ["d", "deep"]
    assert replay_run(REPLAY_METHODS["defaults-first-level"], ctx,
                      {"d": 1.1, "deep": 1.6, "shallow": 0.9}, 2) == ["d", "shallow"]
