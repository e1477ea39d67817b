"""The harness's measures, as pure functions over trial logs and result records.

- ``best_within_budget``: the configuration a method would hand over after ``b`` completed
  trials (best cross-validation score among its first ``b``); its test score is what counts.
- ``normalized_regret``: ``(score - best) / (worst - best)`` per task and family, where best and
  worst are the best and worst test scores any method reached on that task and family (0: the
  best anyone found, 1: the worst); scale-free, so RMSE and log-loss tasks average together.
- ``gap_rmse``: the root mean square, across tasks, of a method's normalized regret (the
  measure of arXiv 2504.06006: how far, on average, from the best configuration known).
- ``wins_ties_losses`` and ``paired_wilcoxon``: a method against a baseline at equal budget,
  paired over tasks x seeds (the measure of arXiv 2410.20302); the test is scipy's.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Two test scores closer than this (relative to the larger magnitude) are a tie.
TIE_RTOL = 1e-3


@dataclass(frozen=True)
class TrialRow:
    """One completed trial of a run, in the order it completed (by trial number)."""

    number: int
    cv_score: float
    params: Mapping[str, object]
    #: Seconds spent on this trial and on failed trials just before it: model fitting
    #: (the original fit's time when the score came from the cache), LLM inference, rest.
    fit_s: float = 0.0
    llm_s: float = 0.0
    other_s: float = 0.0
    llm_calls: int = 0
    llm_tokens: int = 0

    @property
    def wall_s(self) -> float:
        return self.fit_s + self.llm_s + self.other_s


def better(a: float, b: float, direction: str) -> bool:
    """Whether score ``a`` is strictly better than ``b``."""
    return a < b if direction == "minimize" else a > b


def best_within_budget(trials: Sequence[TrialRow], budget: int,
                       direction: str) -> TrialRow | None:
    """The best trial by CV score among the first ``budget`` completed trials (the earliest
    one on ties: that is the configuration the method had found by then)."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    best: TrialRow | None = None
    for trial in trials[:budget]:
        if not math.isfinite(trial.cv_score):
            continue
        if best is None or better(trial.cv_score, best.cv_score, direction):
            best = trial
    return best


def cumulative(trials: Sequence[TrialRow], budget: int) -> dict[str, float]:
    """Fit, LLM and wall seconds, LLM calls and tokens of the first ``budget`` trials."""
    head = trials[:budget]
    return {
        "fit_s": sum(t.fit_s for t in head),
        "llm_s": sum(t.llm_s for t in head),
        "wall_s": sum(t.wall_s for t in head),
        "llm_calls": sum(t.llm_calls for t in head),
        "llm_tokens": sum(t.llm_tokens for t in head),
    }


def normalized_regret(score: float, best: float, worst: float, direction: str) -> float:
    """0 at ``best``, 1 at ``worst`` (both from the same task and family); 0 when they agree."""
    span = (worst - best) if direction == "minimize" else (best - worst)
    if not span > 0:
        return 0.0
    gap = (score - best) if direction == "minimize" else (best - score)
    return max(0.0, gap / span)


def score_range(scores: Iterable[float], direction: str) -> tuple[float, float]:
    """(best, worst) of finite ``scores``."""
    finite = [s for s in scores if math.isfinite(s)]
    if not finite:
        raise ValueError("no finite scores")
    lo, hi = min(finite), max(finite)
    return (lo, hi) if direction == "minimize" else (hi, lo)


def gap_rmse(regrets: Iterable[float]) -> float:
    """Root mean square of normalized regrets (one per task and family, seeds averaged)."""
    values = list(regrets)
    if not values:
        return math.nan
    return math.sqrt(sum(r * r for r in values) / len(values))


def is_tie(a: float, b: float, rtol: float = TIE_RTOL) -> bool:
    return abs(a - b) <= rtol * max(abs(a), abs(b), 1e-12)


@dataclass(frozen=True)
class Comparison:
    """A method against a baseline over paired (task, family, seed) results."""

    wins: int
    ties: int
    losses: int
    p_value: float | None  # two-sided Wilcoxon signed-rank; None when every pair ties
    n: int

    def to_dict(self) -> dict[str, object]:
        return {"wins": self.wins, "ties": self.ties, "losses": self.losses,
                "p_value": self.p_value, "n": self.n}


def wins_ties_losses(method: Sequence[float], baseline: Sequence[float], direction: str,
                     rtol: float = TIE_RTOL) -> Comparison:
    """Count pairs where ``method`` beats, ties or loses to ``baseline``; Wilcoxon p-value."""
    if len(method) != len(baseline):
        raise ValueError("method and baseline need the same number of paired results")
    wins = ties = losses = 0
    for a, b in zip(method, baseline, strict=True):
        if is_tie(a, b, rtol):
            ties += 1
        elif better(a, b, direction):
            wins += 1
        else:
            losses += 1
    return Comparison(wins, ties, losses, paired_wilcoxon(method, baseline, rtol), len(method))


def paired_wilcoxon(a: Sequence[float], b: Sequence[float],
                    rtol: float = TIE_RTOL) -> float | None:
    """Two-sided Wilcoxon signed-rank p-value of paired scores; ties (within ``rtol``) are
    dropped as the test prescribes; None when no pair differs."""
    from scipy.stats import wilcoxon

    diffs = [x - y for x, y in zip(a, b, strict=True) if not is_tie(x, y, rtol)]
    if not diffs:
        return None
    return float(wilcoxon(diffs).pvalue)


def time_to_reach(trials: Sequence[TrialRow], target: float, direction: str) -> float | None:
    """Wall seconds until the best CV score so far is at least as good as ``target``."""
    elapsed = 0.0
    for trial in trials:
        elapsed += trial.wall_s
        if math.isfinite(trial.cv_score) and not better(target, trial.cv_score, direction):
            return elapsed
    return None
