"""The acquisition over predicted ratio bins (``sllmbo.rank``), on hand-made distributions."""

from __future__ import annotations

import numpy as np
import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.data.rank_targets import N_BINS
from sllmbo.rank import (
    expected_improvement,
    pick,
    probability_of_improvement,
    rank_candidates,
)

TIE = 4  # the bin of ratios within 2% of the best so far


def dist(**mass: float) -> np.ndarray:
    """A bin distribution from ``b<i>=p`` keywords."""
    out = np.zeros(N_BINS)
    for key, p in mass.items():
        out[int(key[1:])] = p
    return out


@pytest.mark.parametrize("acquisition", ["ei", "pi"])
def test_a_likely_improvement_beats_a_safe_copy_of_the_best(acquisition):
    safe_copy = dist(b4=1.0)  # certainly a tie with the best so far
    gamble = dist(b2=0.4, b6=0.6)  # 40%: 7-15% lower error; else worse
    assert pick(np.stack([safe_copy, gamble]), [7, 12], acquisition) == 12


def test_with_no_improvement_in_sight_the_safer_candidate_is_picked():
    worse = dist(b6=0.5, b8=0.5)
    safe_copy = dist(b4=1.0)
    assert pick(np.stack([worse, safe_copy]), [0, 1]) == 1


def test_ei_weighs_the_size_of_the_gain_pi_only_its_chance():
    big_rare = dist(b0=0.3, b7=0.7)  # 30% chance of a large gain
    small_often = dist(b3=0.6, b5=0.4)  # 60% chance of a few percent
    probs = np.stack([big_rare, small_often])
    assert expected_improvement(probs)[0] > expected_improvement(probs)[1]
    assert probability_of_improvement(probs)[1] > probability_of_improvement(probs)[0]
    assert rank_candidates(probs, [3, 9], "ei") == [3, 9]
    assert rank_candidates(probs, [3, 9], "pi") == [9, 3]


@pytest.mark.parametrize(("probs", "match"), [
    (np.ones((2, N_BINS - 1)) / (N_BINS - 1), "shape"),
    (np.full((2, N_BINS), 0.5), "not distributions")])
def test_a_scorer_answer_that_is_not_a_distribution_is_refused(probs, match):
    with pytest.raises(SllmboError, match=match):
        pick(probs, [0, 1])


def test_an_unknown_acquisition_is_one_clear_error():
    with pytest.raises(SllmboError, match="unknown acquisition"):
        pick(np.stack([dist(b4=1.0)]), [0], "ucb")
