"""The first-answer rules (eval/first_answer.py) on hand-made error tables: where the mean,
the per-dataset mean and the minimax rule part ways, and how each is judged."""

import math

import numpy as np
import pandas as pd
import pytest

from sllmbo.eval.first_answer import (
    dataset_mean_rule,
    first_answers,
    leave_one_dataset_out,
    log_ratios_to_defaults,
    mean_rule,
    minimax_rule,
)


def test_log_ratios_are_to_the_defaults_and_a_failed_fit_counts_as_the_rows_worst():
    scores = np.array([[1.0, 0.5, np.nan], [2.0, 4.0, 1.0]])
    got = log_ratios_to_defaults(scores, defaults=0)
    assert got[0].tolist() == pytest.approx([0.0, math.log(0.5), 0.0])
    assert got[1].tolist() == pytest.approx([0.0, math.log(2.0), math.log(0.5)])


def test_a_dataset_with_many_sizes_outvotes_the_others_only_under_the_plain_mean():
    # "big" has three sizes where candidate 1 is a little better; "a" and "b" have one size
    # each, where candidate 2 is much better. Candidate 0 is the defaults.
    names = ["big@100", "big@200", "big@400", "a@50", "b@50"]
    ratios = np.array([[0, -0.3, 0.0], [0, -0.3, 0.0], [0, -0.3, 0.0],
                       [0, 0.0, -0.4], [0, 0.0, -0.4]])
    assert mean_rule(ratios, names) == 1
    assert dataset_mean_rule(ratios, names) == 2


def test_minimax_takes_the_safe_entry_over_the_better_mean_with_a_disaster():
    names = ["a@1", "b@1", "c@1"]
    ratios = np.array([[0, -0.9, -0.1], [0, -0.9, -0.1], [0, math.log(1.5), -0.05]])
    assert mean_rule(ratios, names) == 1
    assert minimax_rule(ratios, names) == 2


def test_leave_one_dataset_out_judges_each_dataset_at_its_top_rung_learning_from_the_others():
    names = ["a@10", "a@20", "b@10", "c@10"]
    # Left out, "a" is judged on a@20 (its top rung) with what b and c prefer (candidate 1).
    ratios = np.array([[0, 0.9, -0.2], [0, 0.7, -0.1], [0, -0.2, 0.1], [0, -0.2, 0.1]])
    got = leave_one_dataset_out(ratios, names)
    assert got["mean"]["n_datasets"] == 3
    # a: candidate 1 (0.7); b: learns from a (both rows) and c -> candidate 2 (0.1); c: likewise.
    expected = (0.7 + 0.1 + 0.1) / 3
    assert got["mean"]["gmr"] == pytest.approx(math.exp(expected), abs=1e-4)
    assert got["mean"]["harm"] == pytest.approx(1.0)


def test_first_answers_reports_each_subtype_with_the_margin_between_the_first_two_entries():
    ids = ["d", "x", "y"]
    train = pd.DataFrame([[1.0, 0.80, 0.81], [1.0, 0.80, 0.79], [1.0, 0.5, 0.6]],
                         index=["m1@100", "m2@100", "r1@100"], columns=ids)
    cards = {"m1@100": {"n_classes": 5}, "m2@100": {"n_classes": 4}, "r1@100": {"n_classes": None}}
    held = pd.DataFrame([[1.0, 3.0, 0.5], [1.0, 0.9, 0.9]], index=["h@1", "g@1"], columns=ids)
    held_cards = {"h@1": {"n_classes": 3}, "g@1": {"n_classes": 0}}
    got = first_answers(train, cards, "d", held, held_cards)
    multi = got["multiclass"]
    assert multi["train_datasets"] == 2
    assert [m["config_id"] for m in multi["margin"]] == ["y", "x"]
    assert multi["heldout"]["mean"] == {"config_id": "y", "gmr": 0.5, "harm": 0.0,
                                        "worst": 0.5, "n_datasets": 1}
    assert got["regression"]["heldout"]["mean"]["config_id"] == "x"
    assert "binary" not in got
