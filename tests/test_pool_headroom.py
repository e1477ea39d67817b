"""The pool-headroom probes (eval/pool_headroom.py): the size-conditioned portfolio learns from
variants of a similar size only, and a pick list counts by its best entry within the budget."""

from __future__ import annotations

import pandas as pd
import pytest

from sllmbo.eval.pool_headroom import _best_of, size_portfolio


def size_split_matrix() -> tuple[dict, pd.DataFrame]:
    """Config "small" wins on ~100-row variants, "large" on ~10,000-row ones; "mid" is a close
    second everywhere, so it is the global portfolio's first pick (least mean regret)."""
    rows = {"a@100": 100, "b@120": 120, "c@130": 130, "a@10000": 10000, "b@12000": 12000,
            "c@13000": 13000}
    cards = {v: {"n_rows": n, "n_classes": 0} for v, n in rows.items()}
    scores = pd.DataFrame(
        {"small": [0.0 if n < 1000 else 10.0 for n in rows.values()],
         "large": [10.0 if n < 1000 else 0.0 for n in rows.values()],
         "mid": [1.0] * 6, "bad": [20.0] * 6},
        index=list(rows))
    return cards, scores


def test_the_size_portfolio_follows_the_querys_size():
    cards, scores = size_split_matrix()
    assert size_portfolio({"n_rows": 110, "n_classes": 0}, cards, scores, 1) == ["small"]
    assert size_portfolio({"n_rows": 11000, "n_classes": 0}, cards, scores, 1) == ["large"]


def test_with_too_few_near_variants_it_is_the_task_types_portfolio():
    cards, scores = size_split_matrix()
    assert size_portfolio({"n_rows": 1000, "n_classes": 0}, cards, scores, 1) == ["mid"]
    assert size_portfolio({"n_rows": 110, "n_classes": 2}, cards, scores, 1) == []  # no rows


def test_a_pick_list_counts_by_its_best_within_the_budget():
    regret = {"x": 0.7, "y": 0.1, "z": 0.0}
    assert _best_of(regret, ["x", "y", "z"], 1) == 0.7
    assert _best_of(regret, ["x", "y", "z"], 2) == 0.1
    assert _best_of(regret, ["gone", "z"], 1) == 1.0  # an entry the row lacks is the cap
    assert _best_of(regret, [], 3) == 1.0


def test_pick_targets_are_distributions_over_the_row():
    from sllmbo.eval.pool_headroom import pick_target_distribution

    _, scores = size_split_matrix()
    row = scores.loc["a@100"]
    assert pick_target_distribution(row, "top1") == {"small": 1.0}
    assert pick_target_distribution(row, "top2") == {"small": 0.5, "mid": 0.5}
    soft = pick_target_distribution(row, "soft0.5")
    assert sum(soft.values()) == pytest.approx(1.0)
    assert max(soft, key=soft.get) == "small" and soft["mid"] > soft["large"]


def test_variance_share_tells_a_global_best_from_a_dataset_specific_one():
    from sllmbo.eval.pool_headroom import variance_share

    index = ["a@1", "a@2", "b@1", "b@2"]
    same_everywhere = pd.DataFrame({"x": [0.0] * 4, "y": [1.0] * 4}, index=index)
    assert variance_share(same_everywhere)["config"] == pytest.approx(1.0)
    per_dataset = pd.DataFrame({"x": [0.0, 0.0, 1.0, 1.0], "y": [1.0, 1.0, 0.0, 0.0]},
                               index=index)
    share = variance_share(per_dataset)
    assert share["config_x_dataset"] == pytest.approx(1.0)
    assert share["config"] == pytest.approx(0.0) and share["within_dataset"] == pytest.approx(0.0)
    by_size = pd.DataFrame({"x": [0.0, 1.0, 0.0, 1.0], "y": [1.0, 0.0, 1.0, 0.0]}, index=index)
    assert variance_share(by_size)["within_dataset"] == pytest.approx(1.0)


def test_the_noise_floor_is_zero_without_noise_and_grows_with_it():
    from sllmbo.eval.pool_headroom import noise_floor

    scores = pd.DataFrame({"x": [0.0], "y": [1.0], "z": [2.0]}, index=["a@1"])
    quiet = noise_floor(scores, scores * 0.0)
    loud = noise_floor(scores, scores * 0.0 + 5.0)
    assert quiet == [0.0]
    assert 0.2 < loud[0] <= 1.0


def test_structure_compares_the_portfolio_with_a_datasets_own_siblings():
    """Dataset "a" prefers "ax" at both sizes, "b" prefers "bx"; "mid" is second everywhere
    and so the other datasets' portfolio: the siblings know better, the portfolio does not."""
    from types import SimpleNamespace

    from sllmbo.eval.pool_headroom import structure

    variants = ["a@1", "a@2", "b@1", "b@2", "c@1", "c@2"]
    best = {"a": "ax", "b": "bx", "c": "cx"}
    scores = pd.DataFrame({c: [0.0 if best[v[0]] == c else 2.0 for v in variants]
                           for c in ("ax", "bx", "cx")}, index=variants)
    scores["mid"] = 0.8
    scores["bad"] = 3.0
    cells = pd.DataFrame([{"variant": v, "family": "f", "config_id": c, "score_std": 0.0,
                           "n_fits": 3} for v in variants for c in scores.columns])
    selectors = SimpleNamespace(scores=lambda family: scores, train=SimpleNamespace(cells=cells),
                                cards={v: {"n_rows": 100, "n_classes": 0} for v in variants})
    result = structure(selectors, "f", budgets=(1,))
    assert result["n_datasets"] == 3 and result["n_variants"] == 6
    assert result["mean_regret"]["sibling-portfolio@1"] == 0.0
    assert result["mean_regret"]["portfolio@1"] == pytest.approx(0.4)  # mid: 0.8 of a median of 2
    assert result["mean_regret"]["noise-floor@1"] == 0.0


def test_feedback_follows_the_training_rows_that_agree_with_what_the_run_has_seen():
    """Two kinds of dataset: on "A" rows probe p beats probe q and "a" is best, on "B" rows q
    beats p and "b" is best. A query that saw q beat p goes to "b" next, one that saw p
    beat q to "a"; the scores' scale (the query's units) does not matter."""
    from sllmbo.eval.pool_headroom import feedback_picks

    kinds = {"a1@1": "A", "a2@1": "A", "a3@1": "A", "b1@1": "B", "b2@1": "B", "b3@1": "B"}
    rows = {"A": {"p": 1.0, "q": 3.0, "a": 0.0, "b": 5.0, "z": 9.0},
            "B": {"p": 3.0, "q": 1.0, "a": 5.0, "b": 0.0, "z": 9.0}}
    scores = pd.DataFrame([rows[k] for k in kinds.values()], index=list(kinds))
    cards = {v: {"n_rows": 100, "n_classes": 0} for v in kinds}
    like_b = {"p": 300.0, "q": 100.0, "a": 500.0, "b": 0.0, "z": 900.0}
    like_a = {"p": 0.1, "q": 0.3, "a": 0.0, "b": 0.5, "z": 0.9}
    assert feedback_picks(["p", "q"], like_b, scores, cards, "regression", 3,
                          neighbours=3) == ["p", "q", "b"]
    assert feedback_picks(["p", "q"], like_a, scores, cards, "regression", 3,
                          neighbours=3) == ["p", "q", "a"]
    assert feedback_picks(["p", "q"], like_a, scores, cards, "regression", 1) == ["p"]
    failed = {**like_a, "q": float("nan")}  # nothing to compare: the portfolio's next entry
    assert len(feedback_picks(["p", "q"], failed, scores, cards, "regression", 3)) == 3


def test_feedback_reads_only_the_scores_of_the_entries_it_has_tried():
    """The probe is few-shot, not an oracle: choosing the third entry reads the scores of the
    first two only (a normalization by the row's best or median would read them all)."""
    from sllmbo.eval.pool_headroom import feedback_picks

    _, scores = size_split_matrix()
    cards = {v: {"n_rows": n, "n_classes": 0}
             for v, n in zip(scores.index, (100, 120, 130, 10000, 12000, 13000), strict=True)}
    reads: list[str] = []

    class Observed(dict):
        def __getitem__(self, key):
            reads.append(key)
            return super().__getitem__(key)

    out = feedback_picks(["mid", "bad"], Observed(scores.loc["a@100"].to_dict()), scores,
                         cards, "regression", 3, neighbours=2)
    assert out[:2] == ["mid", "bad"] and len(out) == 3
    assert reads and set(reads) <= {"mid", "bad"}
