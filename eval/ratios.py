"""Statistics in the metric's own units: each method's test error as a ratio to the library
defaults' on the same dataset and family.

A ratio of 0.9 is 10% less log-loss (or RMSE) than the defaults; 2.0 is twice the error. For a
metric to maximize the ratio is inverted (defaults / method), so below 1 is always better.
The definitions, in the order they are applied:

- a method's test score on a (dataset, family) pair is the arithmetic mean over its seeds
  (seeds averaged first, as the scores they are), then the pair's log ratio is taken;
- the geometric-mean ratio (GMR) is ``exp`` of the mean log ratio over datasets, each dataset
  the mean of its families' log ratios (with both families everywhere this is the mean over
  the pairs): averaging in log space makes 0.5 and 2.0 cancel, as halving and doubling should;
- its 95% interval is scipy's bootstrap (BCa) of that mean over datasets, exponentiated;
- the harm rate is the share of pairs more than ``HARM`` (5%) worse than the defaults, and
  the worst ratio is the largest over the pairs;
- against the defaults, wins/ties/losses and the two-sided Wilcoxon signed-rank test are over
  datasets on the per-dataset mean log ratio (``overdatasets.paired_test``);
- the subtype breakdown (binary, multiclass, regression) is the GMR over the pairs of each.

The reference's score does not depend on the budget (one configuration); it is read at its
smallest budget, so a budget the reference's runs stop below still has a reference.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sllmbo.data.pool_select import dataset_of

#: A pair is harmed when its ratio exceeds 1 + HARM.
HARM = 0.05
#: The method every ratio is taken against.
REFERENCE = "defaults"
SUBTYPES: tuple[str, ...] = ("binary", "multiclass", "regression")


def error_ratio(score: float, reference: float, direction: str) -> float:
    """``score / reference`` for a metric to minimize, ``reference / score`` to maximize;
    NaN where either is not a positive finite number (no ratio of errors exists)."""
    if not (math.isfinite(score) and math.isfinite(reference) and score > 0 and reference > 0):
        return math.nan
    return score / reference if direction == "minimize" else reference / score


def seed_means(records: Sequence[Mapping[str, Any]], budget: int
               ) -> dict[tuple[str, str, str], float]:
    """(method, task, family) -> the mean test score over seeds at ``budget``."""
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for r in records:
        if r["budget"] == budget and r.get("test_score") is not None:
            cells[(r["method"], r["task"], r["family"])].append(float(r["test_score"]))
    return {key: float(np.mean(v)) for key, v in cells.items()}


@dataclass(frozen=True)
class RatioTable:
    """Log error ratios at one budget: ``log_ratio[i, j]`` is method ``j`` on ``pairs[i]``
    (a (task, family)); NaN where the method has no result there."""

    budget: int
    methods: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    log_ratio: np.ndarray

    def column(self, method: str) -> np.ndarray:
        return self.log_ratio[:, self.methods.index(method)]

    def datasets(self) -> list[str]:
        return sorted({dataset_of(task) for task, _ in self.pairs})

    def by_dataset(self) -> np.ndarray:
        """(datasets x methods) mean log ratio over each dataset's pairs (NaN: none)."""
        names = self.datasets()
        out = np.full((len(names), len(self.methods)), np.nan)
        rows: dict[str, list[int]] = defaultdict(list)
        for i, (task, _) in enumerate(self.pairs):
            rows[dataset_of(task)].append(i)
        for k, name in enumerate(names):
            block = self.log_ratio[rows[name]]
            for j in range(len(self.methods)):
                finite = block[:, j][np.isfinite(block[:, j])]
                if len(finite):
                    out[k, j] = float(finite.mean())
        return out


def ratio_table(records: Sequence[Mapping[str, Any]], methods: Sequence[str], budget: int,
                reference: str = REFERENCE) -> RatioTable:
    """The log error ratio of every method to ``reference`` on every (task, family) pair the
    reference has, seeds averaged first."""
    direction = {(r["task"], r["family"]): r["direction"] for r in records}
    ref_budgets = sorted({r["budget"] for r in records if r["method"] == reference})
    base = seed_means(records, ref_budgets[0]) if ref_budgets else {}
    ref = {(t, f): s for (m, t, f), s in base.items() if m == reference}
    means = seed_means(records, budget)
    pairs = tuple(sorted(ref))
    table = np.full((len(pairs), len(methods)), np.nan)
    for i, (task, family) in enumerate(pairs):
        for j, m in enumerate(methods):
            score = means.get((m, task, family))
            if score is not None:
                ratio = error_ratio(score, ref[(task, family)], direction[(task, family)])
                table[i, j] = math.log(ratio) if ratio > 0 else math.nan
    return RatioTable(budget, tuple(methods), pairs, table)


def gmr(log_ratios: np.ndarray) -> float:
    """The geometric-mean ratio of finite log ratios (NaN: none)."""
    finite = log_ratios[np.isfinite(log_ratios)]
    return float(math.exp(finite.mean())) if len(finite) else math.nan


def gmr_interval(dataset_logs: np.ndarray, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """The bootstrap (BCa) interval of the GMR over datasets (``dataset_logs``: one mean
    log ratio per dataset), exponentiated; both ends the GMR when it cannot spread."""
    from sllmbo.eval.overdatasets import bootstrap_ci

    low, high = bootstrap_ci(np.asarray(dataset_logs, dtype=float), confidence, seed)
    return math.exp(low), math.exp(high)


def harm_rate(log_ratios: np.ndarray, harm: float = HARM) -> float:
    """Share of finite pairs whose ratio exceeds ``1 + harm``."""
    finite = log_ratios[np.isfinite(log_ratios)]
    return float((finite > math.log1p(harm)).mean()) if len(finite) else math.nan


def worst_ratio(log_ratios: np.ndarray) -> float:
    finite = log_ratios[np.isfinite(log_ratios)]
    return float(math.exp(finite.max())) if len(finite) else math.nan


@dataclass(frozen=True)
class RatioSummary:
    """One method at one budget, in the metric's units."""

    method: str
    budget: int
    n_pairs: int
    n_datasets: int
    gmr: float
    low: float
    high: float
    harm: float
    worst: float
    #: Over datasets against the reference: wins (mean log ratio below 0), ties, losses, p.
    wins: int
    ties: int
    losses: int
    p_value: float | None
    #: Subtype -> GMR over that subtype's pairs (absent: no pair of it).
    by_subtype: Mapping[str, float]


def summarize(table: RatioTable, method: str,
              subtype_of: Callable[[str], str] | None = None) -> RatioSummary | None:
    """``method``'s statistics in ``table`` (None: no result); ``subtype_of`` maps a task to
    its subtype (default: ``methodmeta.subtype_of``, the registered facts)."""
    from sllmbo.eval.overdatasets import paired_test

    if subtype_of is None:
        from sllmbo.eval.methodmeta import subtype_of
    pairs = table.column(method)
    if not np.isfinite(pairs).any():
        return None
    per_dataset = table.by_dataset()[:, table.methods.index(method)]
    per_dataset = per_dataset[np.isfinite(per_dataset)]
    low, high = gmr_interval(per_dataset)
    test = paired_test(per_dataset, np.zeros_like(per_dataset))
    groups: dict[str, list[float]] = defaultdict(list)
    for (task, _), value in zip(table.pairs, pairs, strict=True):
        if math.isfinite(value):
            groups[subtype_of(task)].append(value)
    return RatioSummary(
        method, table.budget, int(np.isfinite(pairs).sum()), len(per_dataset),
        gmr(per_dataset), low, high, harm_rate(pairs), worst_ratio(pairs),
        test.wins, test.ties, test.losses, test.p_value,
        {s: gmr(np.array(groups[s])) for s in SUBTYPES if groups.get(s)})


def reach_budget(tables: Mapping[int, RatioTable], method: str, target: np.ndarray
                 ) -> list[int | None]:
    """Per dataset (``target``'s order, ``RatioTable.datasets``): the smallest budget at
    which ``method``'s mean log ratio is at or below ``target`` (None: never within the
    budgets it has)."""
    out: list[int | None] = []
    columns = {b: t.by_dataset()[:, t.methods.index(method)]
               for b, t in sorted(tables.items()) if method in t.methods}
    for k in range(len(target)):
        reached = None
        for b, column in columns.items():
            value = column[k]
            if math.isfinite(value) and math.isfinite(target[k]) and value <= target[k] + 1e-12:
                reached = b
                break
        out.append(reached)
    return out


def median_reach(reached: Sequence[int | None]) -> float:
    """The median over datasets of the budgets reached, a dataset never reached counting as
    infinitely many trials (so the median is infinite when half never reach)."""
    values = [math.inf if r is None else float(r) for r in reached]
    return float(np.median(values)) if values else math.nan
