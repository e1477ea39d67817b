"""The harness's measures against values computed by hand."""

from __future__ import annotations

import math

import pytest

from sllmbo.eval.metrics import (
    TrialRow,
    best_within_budget,
    cumulative,
    gap_rmse,
    normalized_regret,
    paired_wilcoxon,
    score_range,
    time_to_reach,
    wins_ties_losses,
)


def rows(*scores: float) -> list[TrialRow]:
    return [TrialRow(number=i, cv_score=s, params={"x": i}, fit_s=1.0, llm_s=0.5 * (i % 2),
                     other_s=0.25, llm_calls=i % 2, llm_tokens=100 * (i % 2))
            for i, s in enumerate(scores)]


def test_best_within_budget_reads_only_the_first_b_trials() -> None:
    trials = rows(5.0, 3.0, 4.0, 1.0, 3.0)
    assert best_within_budget(trials, 1, "minimize").number == 0
    assert best_within_budget(trials, 3, "minimize").number == 1
    assert best_within_budget(trials, 4, "minimize").number == 3
    assert best_within_budget(trials, 50, "minimize").number == 3  # fewer trials than budget
    assert best_within_budget(trials, 3, "maximize").number == 0
    # Ties keep the earliest: that configuration was found first.
    assert best_within_budget(rows(2.0, 1.0, 1.0), 3, "minimize").number == 1
    assert best_within_budget([], 3, "minimize") is None
    assert best_within_budget(rows(math.nan, 2.0), 2, "minimize").number == 1
    with pytest.raises(ValueError):
        best_within_budget(trials, 0, "minimize")


def test_cumulative_costs_add_up_the_first_b_trials() -> None:
    costs = cumulative(rows(1, 2, 3), 2)
    # trial 0: 1 + 0 + 0.25; trial 1: 1 + 0.5 + 0.25
    assert costs == {"fit_s": 2.0, "llm_s": 0.5, "wall_s": 3.0, "llm_calls": 1,
                     "llm_tokens": 100}


def test_normalized_regret_by_hand() -> None:
    # RMSE task: best 2.0, worst 6.0 -> a score of 3.0 is a quarter of the way.
    assert normalized_regret(3.0, 2.0, 6.0, "minimize") == pytest.approx(0.25)
    assert normalized_regret(2.0, 2.0, 6.0, "minimize") == 0.0
    assert normalized_regret(6.0, 2.0, 6.0, "minimize") == 1.0
    # Accuracy: best 0.9, worst 0.7 -> 0.85 is 0.25 of the span away.
    assert normalized_regret(0.85, 0.9, 0.7, "maximize") == pytest.approx(0.25)
    assert normalized_regret(1.0, 1.0, 1.0, "minimize") == 0.0  # every method agreed
    assert score_range([3.0, 1.0, math.nan, 2.0], "minimize") == (1.0, 3.0)
    assert score_range([0.5, 0.9], "maximize") == (0.9, 0.5)


def test_gap_rmse_by_hand() -> None:
    assert gap_rmse([0.0, 0.3, 0.4]) == pytest.approx(math.sqrt((0.09 + 0.16) / 3))
    assert math.isnan(gap_rmse([]))


def test_wins_ties_losses_and_wilcoxon() -> None:
    method = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    baseline = [1.0005, 2.5, 3.5, 4.5, 5.5, 5.0]  # tie (0.05%), 4 wins, 1 loss (minimize)
    c = wins_ties_losses(method, baseline, "minimize")
    assert (c.wins, c.ties, c.losses, c.n) == (4, 1, 1, 6)
    # scipy on the 5 non-tied differences: -0.5 x4, +1.0 -> exact two-sided p.
    from scipy.stats import wilcoxon

    assert c.p_value == pytest.approx(wilcoxon([-0.5, -0.5, -0.5, -0.5, 1.0]).pvalue)
    assert wins_ties_losses(method, baseline, "maximize").wins == 1
    assert paired_wilcoxon([1.0, 2.0], [1.0, 2.0]) is None
    with pytest.raises(ValueError):
        wins_ties_losses([1.0], [1.0, 2.0], "minimize")


def test_time_to_reach_counts_wall_time_until_the_target() -> None:
    trials = rows(5.0, 3.0, 2.0)  # walls 1.25, 1.75, 1.25
    assert time_to_reach(trials, 3.0, "minimize") == pytest.approx(3.0)
    assert time_to_reach(trials, 5.0, "minimize") == pytest.approx(1.25)
    assert time_to_reach(trials, 1.0, "minimize") is None


def test_a_trial_lost_with_its_worker_carries_its_llm_time_not_the_hours_it_lay_dead() -> None:
    from datetime import datetime, timedelta

    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import FrozenTrial, TrialState

    from sllmbo.core import studyinfo
    from sllmbo.eval.runs import trial_rows
    from sllmbo.samplers import attrs

    t0 = datetime(2026, 11, 24, 15, 0, 0)

    def trial(number: int, state: TrialState, start_s: float, end_s: float,
              system_attrs: dict | None = None) -> FrozenTrial:
        done = state == TrialState.COMPLETE
        return FrozenTrial(
            number=number, state=state, value=1.0 + number if done else None,
            datetime_start=t0 + timedelta(seconds=start_s),
            datetime_complete=t0 + timedelta(seconds=end_s),
            params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={attrs.LATENCY_S: 2.0, **({studyinfo.FIT_SECONDS: 1.0} if done else {})},
            system_attrs=system_attrs or {}, intermediate_values={}, trial_id=number)

    study = optuna.create_study()
    for t in (trial(0, TrialState.COMPLETE, 0, 3.5),
              trial(1, TrialState.FAIL, 4, 4 + 7200),          # failed by the heartbeat on resume
              trial(2, TrialState.COMPLETE, 7210, 7214,
                    {"failed_trial": 1, "retry_history": [1]}),  # as Optuna writes a retry
              trial(3, TrialState.FAIL, 7215, 7220),           # raised: its 5 s were spent
              trial(4, TrialState.COMPLETE, 7220, 7223)):
        study.add_trial(t)
    got = trial_rows(study)
    assert [r.number for r in got] == [0, 2, 4]
    assert [r.wall_s for r in got] == pytest.approx([3.5, 4.0 + 2.0, 3.0 + 5.0])
