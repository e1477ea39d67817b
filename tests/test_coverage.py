"""The coverage report: subtypes, separability from the defaults' score, training beside
held-out, and no held-out score ever shown."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from sllmbo.data import coverage as cov
from sllmbo.data.registry import list_tasks

IDS = {"lightgbm": "lightgbm-000", "xgboost": "xgboost-000"}


def _facts(task_type: str, rows: int, features: int, classes: int | None = None,
           target_std: float | None = None) -> dict:
    return {"task_type": task_type, "n_rows": rows, "n_features": features,
            "n_classes": classes, "target_std": target_std}


def _cell(variant: str, config_id: str, score: float, status: str = "ok") -> dict:
    return {"variant": variant, "family": config_id.split("-")[0], "config_id": config_id,
            "status": status, "score": score}


FACTS = {
    "species": _facts("classification", 300, 4, 3),
    "brand_choice": _facts("classification", 800, 8, 3),
    "sensors": _facts("classification", 400, 20, 5),
    "spam": _facts("classification", 1_000, 150, 2),
    "prices": _facts("regression", 30_000, 10, target_std=10.0),
    "heldout_images": _facts("classification", 2_000, 64, 10),
}
SPLITS = {"species": "train", "brand_choice": "train", "sensors": "train", "spam": "train",
          "prices": "train", "heldout_images": "heldout"}
CELLS = pd.DataFrame([
    _cell("species@300", "lightgbm-000", 0.1), _cell("species@300", "xgboost-000", 0.12),
    _cell("species@300", "lightgbm-007", 0.3),
    _cell("brand_choice@800", "lightgbm-000", 1.0), _cell("brand_choice@800", "xgboost-000", 1.1),
    _cell("species@75", "lightgbm-000", 0.9),          # a lower rung: not the dataset's row
    _cell("spam@1000", "lightgbm-000", 0.3), _cell("spam@1000", "xgboost-000", 0.31),
    _cell("prices@20000", "lightgbm-000", 5.0), _cell("prices@20000", "xgboost-000", 6.0),
    _cell("heldout_images@2000", "lightgbm-000", 0.05),  # must never be shown
])


def _gather() -> list[cov.DatasetCoverage]:
    return cov.gather(FACTS, SPLITS, CELLS, IDS, entropy_of=lambda name: math.log(3))


def test_prior_entropy_is_the_class_frequency_guess_log_loss():
    assert cov.prior_entropy(["a", "b", "c", "d"] * 5) == pytest.approx(math.log(4))
    assert cov.prior_entropy(["a"] * 9 + ["b"]) == pytest.approx(
        -(0.9 * math.log(0.9) + 0.1 * math.log(0.1)))
    assert cov.defaults_skill(math.log(4), math.log(4)) == pytest.approx(0.0)
    assert cov.defaults_skill(0.0, math.log(4)) == 1.0


def test_a_multiclass_dataset_is_separable_when_its_defaults_remove_half_the_prior_loss():
    rows = {d.name: d for d in _gather()}
    assert rows["species"].skill == pytest.approx(1 - 0.1 / math.log(3))
    assert rows["species"].separability == "separable"
    assert rows["brand_choice"].separability == "noisy"
    assert rows["sensors"].separability is None  # its cells have not run yet
    assert rows["spam"].subtype == "binary" and rows["spam"].separability is None


def test_the_portfolio_first_entry_ratio_to_the_defaults_is_shown_for_multiclass():
    rows = {d.name: d for d in cov.gather(FACTS, SPLITS, CELLS, IDS, lambda name: math.log(3),
                                          first_entry="lightgbm-007")}
    assert rows["species"].first_ratio == pytest.approx(3.0)
    assert rows["brand_choice"].first_ratio is None  # that entry has not run there
    assert "| 3.00x |" in cov.multiclass_listing(list(rows.values()))


def test_scores_come_from_the_top_rung_and_regression_is_scaled_by_the_target_sd():
    rows = {d.name: d for d in _gather()}
    assert rows["species"].scores == {"lightgbm": 0.1, "xgboost": 0.12}
    assert rows["prices"].scores == {"lightgbm": 0.5, "xgboost": 0.6}  # capped rung 20,000


def test_heldout_rows_carry_meta_features_but_never_a_score():
    held = next(d for d in _gather() if d.split == "heldout")
    assert (held.rows, held.features, held.classes) == (2_000, 64, 10)
    assert held.scores == {"lightgbm": None, "xgboost": None} and held.skill is None
    table = cov.coverage_table(_gather())
    assert "0.05" not in table


def test_table_has_training_beside_heldout_for_every_subtype():
    lines = cov.coverage_table(_gather()).splitlines()
    multiclass = [line for line in lines if line.startswith("| multiclass |")]
    assert multiclass[0].startswith("| multiclass | training | 3 (2 scored) | 300 / 400 / 800 |")
    assert multiclass[1] == "| multiclass | held-out | 1 | 2,000 / 2,000 / 2,000 | " \
        "64 / 64 / 64 | 10 / 10 / 10 | — | — |"
    assert any(line.startswith("| multiclass, separable | training | 1 |") for line in lines)
    assert any(line.startswith("| multiclass, noisy | held-out | n/a |") for line in lines)
    assert any(line.startswith("| regression | training | 1 |") for line in lines)
    assert "| wide (>= 100 features) | 1 | 0 |" in cov.kinds_table(_gather())


def test_spread_is_min_median_max_of_what_is_present():
    assert cov.spread([3, None, 1, 2]) == "1 / 2 / 3"
    assert cov.spread([0.5, 0.25]) == "0.25 / 0.375 / 0.5"
    assert cov.spread([None]) == "—"


def test_the_registry_report_lists_every_registered_dataset_once():
    datasets = cov.registry_coverage()
    assert sorted(d.name for d in datasets) == sorted(i.name for i in list_tasks())
    assert all(d.skill is None and all(v is None for v in d.scores.values())
               for d in datasets if d.split == "heldout")
    assert any(d.separability == "noisy" for d in datasets)


def test_unwritable_out_is_one_message_and_exit_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(cov, "registry_coverage", _gather)
    assert cov.main(["--out", str(tmp_path / "missing" / "coverage.md")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the coverage report" in err and "Traceback" not in err
    assert cov.main(["--out", str(tmp_path / "coverage.md")]) == 0
    assert (tmp_path / "coverage.md").read_text().startswith("# Coverage of the training split")
