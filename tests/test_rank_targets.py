"""Scorer targets on a hand-made matrix: log error ratios to the defaults with their noise,
noise-respecting labels, examples from sampled histories, and the held-out guard."""

from __future__ import annotations

import math
import random

import numpy as np
import pandas as pd
import pytest

from sllmbo.core.errors import TaskError
from sllmbo.data.matrix import COLUMNS, Matrix
from sllmbo.data.pool import Pool, PoolConfig
from sllmbo.data.rank_examples import (
    build_examples,
    dataset_fold,
    query_target,
    sample_history,
    split_rows,
)
from sllmbo.data.rank_features import feature_names
from sllmbo.data.rank_targets import (
    N_BINS,
    bin_of,
    grades,
    matrix_targets,
    noise_pairs,
    soft_bins,
)

CARD = {"n_rows": 500, "n_features": 6, "n_numeric": 6, "n_categorical": 0,
        "missing_share": 0.0, "n_classes": 3, "minority_share": 0.2}
REG_CARD = {**CARD, "n_classes": None, "minority_share": None}


def pool(n: int = 4) -> Pool:
    return Pool("lightgbm", tuple(PoolConfig(f"lightgbm-{i:03d}", "defaults" if i == 0
                                             else "sobol", {"x": i}) for i in range(n)))


def matrix(rows: dict[str, list[tuple[str, float | None, float, int]]],
           cards: dict[str, dict]) -> Matrix:
    """variant -> [(status, score, score_std, n_fits)] in pool order."""
    cells = []
    for variant, entries in rows.items():
        for i, (status, score, std, fits) in enumerate(entries):
            cells.append({"variant": variant, "family": "lightgbm",
                          "config_id": f"lightgbm-{i:03d}", "status": status, "score": score,
                          "score_std": std, "n_fits": fits, "fit_seconds": 1.0,
                          "error": None})
    return Matrix({"cards": cards}, pd.DataFrame(cells, columns=list(COLUMNS)))


def test_log_ratio_is_to_the_defaults_with_the_cv_standard_error():
    m = matrix({"a@500": [("ok", 2.0, 0.3, 9), ("ok", 1.0, 0.3, 9), ("ok", 4.0, 0.0, 1),
                          ("failed", None, None, None)]}, {"a@500": CARD})
    (row,) = matrix_targets(m, {"lightgbm": pool()})
    assert row.defaults == 0
    assert np.allclose(row.log_ratio[:3], [0.0, math.log(0.5), math.log(2.0)])
    assert row.log_ratio[3] == math.inf
    # se = 0.3 / sqrt(9) = 0.1, relative to the score
    assert np.allclose(row.rel_se[:3], [0.05, 0.1, 0.0])
    assert np.isclose(row.log_se()[1], math.hypot(0.1, 0.05))


def test_rows_still_collected_or_with_failed_defaults_are_left_out():
    whole = [("ok", 1.0, 0.1, 9)] * 4
    m = matrix({"a@500": whole, "b@500": whole[:3],
                "c@500": [("failed", None, None, None), *whole[1:]]},
               {v: CARD for v in ("a@500", "b@500", "c@500")})
    assert [r.variant for r in matrix_targets(m, {"lightgbm": pool()})] == ["a@500"]


def test_a_heldout_dataset_in_a_matrix_is_refused():
    m = matrix({"digits@500": [("ok", 1.0, 0.1, 9)] * 4}, {"digits@500": CARD})
    with pytest.raises(TaskError, match="held-out"):
        matrix_targets(m, {"lightgbm": pool()})
    with pytest.raises(TaskError, match="held-out"):
        dataset_fold("digits")


@pytest.mark.parametrize(("ratio", "expected"), [
    (0.5, 0), (0.7, 1), (0.9, 2), (1.0, 4), (1.01, 4), (1.06, 5), (1.5, 8), (3.0, 9),
    (math.inf, 9)])
def test_bins_are_fixed_ratio_intervals_and_a_failure_is_the_last(ratio, expected):
    assert int(bin_of(math.log(ratio))) == expected
    assert int(grades(np.array([math.log(ratio)]))[0]) == N_BINS - 1 - expected


def test_soft_labels_spread_by_the_standard_error():
    sure, noisy, failed = soft_bins(np.array([0.0, 0.0, math.inf]), np.array([1e-6, 0.05, 0.0]))
    assert sure[4] > 0.999  # the error is floored at MIN_REL_SE, not 0
    assert 0.1 < noisy[4] < 0.5 and noisy.sum() == pytest.approx(1.0)
    assert failed[-1] == 1.0


def test_pairs_are_kept_only_where_the_gap_exceeds_the_errors():
    ratio = np.log(np.array([1.0, 1.01, 1.5, np.inf]))
    rel_se = np.array([0.02, 0.02, 0.02, 0.0])
    pairs = set(noise_pairs(ratio, rel_se))
    assert (0, 2) in pairs and (1, 2) in pairs and (0, 3) in pairs
    assert (0, 1) not in pairs and (1, 0) not in pairs  # 1% apart, 2% errors: noise
    assert not any(i == 3 for i, _ in pairs)  # a failed fit beats nothing


def test_a_candidates_target_is_its_ratio_to_the_best_so_far():
    m = matrix({"a@500": [("ok", 2.0, 0.0, 9), ("ok", 1.0, 0.0, 9), ("ok", 4.0, 0.0, 9),
                          ("ok", 0.8, 0.0, 9)]}, {"a@500": CARD})
    (row,) = matrix_targets(m, {"lightgbm": pool()})
    empty, _ = query_target(row, [], [1, 3])
    assert np.allclose(empty, np.log([0.5, 0.4]))  # no trial yet: against the defaults
    after, _ = query_target(row, [2, 1], [0, 3])
    assert np.allclose(after, np.log([2.0, 0.8]))  # against entry 1, the best so far


def rows_of(n_datasets: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    entries = {f"set{d}@500": [("ok", float(s), 0.05, 9) for s in rng.uniform(1, 2, 6)]
               for d in range(n_datasets)}
    cards = {v: (CARD if i % 2 else REG_CARD) for i, v in enumerate(entries)}
    return matrix_targets(matrix(entries, cards), {"lightgbm": pool(6)})


def test_validation_folds_split_by_dataset_and_are_stable():
    rows = rows_of(20)
    learn, valid = split_rows(rows)
    assert valid and learn
    assert not {r.dataset for r in learn} & {r.dataset for r in valid}
    assert [dataset_fold(r.dataset) for r in rows] == [dataset_fold(r.dataset) for r in rows]


@pytest.mark.parametrize("kind", ["portfolio", "good", "random"])
def test_sampled_histories_are_distinct_pool_entries(kind):
    (row, *_) = rows_of(2)
    tried = sample_history(row, [3, 1, 0, 2, 5, 4], random.Random(0), 4, kind)
    assert len(tried) == len(set(tried)) == 4
    if kind == "portfolio":
        assert tried == [3, 1, 0, 2]


def test_examples_have_one_query_per_history_and_only_untried_candidates():
    rows = rows_of(6)
    unit = np.random.default_rng(0).uniform(size=(6, 2))
    ex = build_examples(rows, rows, unit, n_histories=3, seed=0)
    assert sum(ex.groups) == len(ex.X) == len(ex.target)
    assert ex.X.shape[1] == len(feature_names(6, 2))
    names = feature_names(6, 2)
    n_tried = ex.X[:, names.index("n_tried")]
    assert (n_tried + np.repeat(ex.groups, ex.groups) == 6).all()
    first = ex.groups[0]  # every row's first query is the empty history: all 6 candidates
    assert first == 6 and (n_tried[:first] == 0).all()
