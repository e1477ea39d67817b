"""Targets in the metric's units: log error ratios to the defaults, with their CV noise."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.data.matrix import COLUMNS, Matrix, read_matrix
from sllmbo.data.matrix_targets import (
    TARGET_COLUMNS,
    beat_probability,
    cell_se,
    log_ratio_targets,
)

DEFAULTS = {"lightgbm": "lightgbm-000"}


def _row(variant: str, config_id: str, score: float | None, std: float | None = 0.3,
         n_fits: int = 9, status: str = "ok") -> dict:
    return {"variant": variant, "family": "lightgbm", "config_id": config_id, "status": status,
            "score": score, "score_std": std, "n_fits": n_fits, "fit_seconds": 1.0,
            "error": None if status == "ok" else "ValueError: boom"}


def _matrix(rows: list[dict], split: str = "train") -> Matrix:
    return Matrix({"split": split}, pd.DataFrame(rows, columns=list(COLUMNS)))


ROWS = [
    _row("species@300", "lightgbm-000", 1.0, std=0.3),      # se 0.1
    _row("species@300", "lightgbm-001", 0.5, std=0.15),     # se 0.05: half the defaults' error
    _row("species@300", "lightgbm-002", 2.0, std=0.6),
    _row("species@300", "lightgbm-003", None, status="failed"),
    _row("choice@500", "lightgbm-001", 0.9),                # its defaults have not run
]


def test_an_entry_half_the_defaults_error_has_log_ratio_log_half_with_delta_method_se():
    targets = log_ratio_targets(_matrix(ROWS), defaults=DEFAULTS).set_index("config_id")
    assert list(targets.columns) == [c for c in TARGET_COLUMNS if c != "config_id"]
    assert targets.loc["lightgbm-001", "log_ratio"] == pytest.approx(math.log(0.5))
    assert targets.loc["lightgbm-001", "log_ratio_se"] == pytest.approx(math.sqrt(0.1**2 + 0.1**2))
    assert targets.loc["lightgbm-002", "log_ratio"] == pytest.approx(math.log(2.0))
    assert targets.loc["lightgbm-000", ["log_ratio", "log_ratio_se"]].tolist() == [0.0, 0.0]
    assert set(targets["dataset"]) == {"species"}


def test_failed_cells_and_variants_without_their_reference_are_left_out():
    targets = log_ratio_targets(_matrix(ROWS), defaults=DEFAULTS)
    assert "lightgbm-003" not in set(targets["config_id"])
    assert "choice@500" not in set(targets["variant"])


def test_ratio_to_the_best_entry_is_zero_at_the_best_and_positive_elsewhere():
    targets = log_ratio_targets(_matrix(ROWS), reference="best", defaults=DEFAULTS)
    by_id = targets.set_index(["variant", "config_id"])["log_ratio"]
    assert by_id[("species@300", "lightgbm-001")] == 0.0
    assert by_id[("species@300", "lightgbm-000")] == pytest.approx(math.log(2.0))
    assert by_id[("choice@500", "lightgbm-001")] == 0.0  # the best needs no defaults cell
    assert (targets["log_ratio"] >= 0).all()


def test_heldout_data_never_becomes_a_target():
    with pytest.raises(SllmboError, match="training matrix only"):
        log_ratio_targets(_matrix(ROWS, split="heldout"), defaults=DEFAULTS)
    leaked = [*ROWS, _row("digits@1437", "lightgbm-000", 0.1)]
    with pytest.raises(SllmboError, match="held-out variants"):
        log_ratio_targets(_matrix(leaked), defaults=DEFAULTS)


def test_cell_se_is_the_fold_spread_over_root_fits_and_nan_without_it():
    assert cell_se(0.3, 9) == pytest.approx(0.1)
    assert math.isnan(cell_se(float("nan"), 9)) and math.isnan(cell_se(0.3, 0))


def test_beat_probability_is_a_soft_label_that_is_unsure_inside_the_noise():
    assert beat_probability(0.0, 0.1, 0.0, 0.1) == pytest.approx(0.5)
    assert beat_probability(-1.0, 0.1, 0.0, 0.1) > 0.999
    p, q = beat_probability(-0.05, 0.1, 0.0, 0.1), beat_probability(0.0, 0.1, -0.05, 0.1)
    assert 0.5 < p < 0.7 and p + q == pytest.approx(1.0)
    assert beat_probability(np.array([0.0, 1.0]), 0.0, 0.5, 0.0).tolist() == [1.0, 0.0]


def test_the_committed_matrix_gives_a_finite_target_for_every_finished_cell():
    matrix = read_matrix()
    targets = log_ratio_targets(matrix)
    ok = matrix.cells[matrix.cells["status"] == "ok"]
    with_defaults = ok[ok["variant"].isin(targets["variant"])]
    assert len(targets) == len(with_defaults) > 30_000
    assert np.isfinite(targets["log_ratio"]).all() and np.isfinite(targets["log_ratio_se"]).all()
    defaults = targets[targets["config_id"].str.endswith("-000")]
    assert (defaults["log_ratio"] == 0).all() and (defaults["log_ratio_se"] == 0).all()
