"""The error level (data.pool_select.error_level): a score over the prior error says how noisy
a task is, which the card's meta-features do not (``defaults-first-level`` reads it)."""

from __future__ import annotations

import math

import pytest

from sllmbo.data.pool_select import error_level, prior_error

MULTI = {"n_rows": 500, "n_features": 6, "n_numeric": 6, "n_categorical": 0,
         "missing_share": 0.0, "n_classes": 4, "minority_share": 0.1}


@pytest.mark.parametrize(("card", "expected"), [
    ({"n_classes": 4}, math.log(4)),
    ({"n_classes": 2, "minority_share": 0.5}, math.log(2)),
    ({"n_classes": 2, "minority_share": 0.1}, -(0.1 * math.log(0.1) + 0.9 * math.log(0.9))),
    ({"n_classes": None, "target_std": 3.0}, 3.0),
])
def test_the_prior_error_is_the_class_entropy_or_the_targets_sd(card, expected):
    assert prior_error(card) == pytest.approx(expected)


def test_the_level_is_the_log_share_of_the_prior_error_and_nan_where_unknown():
    assert error_level(math.log(4) / 10, MULTI) == pytest.approx(math.log(0.1))
    assert math.isnan(error_level(None, MULTI))
    assert math.isnan(error_level(0.5, {"n_classes": None, "target_std": None}))
    assert math.isnan(error_level(float("nan"), MULTI))
