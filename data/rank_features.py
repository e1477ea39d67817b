"""Features of (task card, the run's history, a candidate pool entry) for a learned scorer.

One implementation for the examples a scorer learns from (``sllmbo.data.rank_examples``) and
for the loop that asks it (``sllmbo.samplers.gbdt_rank``), so the two never drift apart.
Pure numpy; every column has a name (``feature_names``).

- **card**: subtype (0 regression, 1 binary, 2 multiclass), log classes, log rows, log
  features, numeric share, missing share, minority share;
- **history**: entries tried, failed fits, the spread of the tried scores (log worst/best);
  one column per pool entry: its score scaled within the run as ``log(score / best so far)``
  (``FAILED_SLOT`` for a failed fit, NaN untried). A ratio to the run's own best needs no
  unit, and unlike a min-max scale it keeps how far apart the scores are;
- **candidate**: its pool position, its configuration in the unit cube, its distance to the
  best-so-far entry and to the nearest tried entry, and that entry's scaled score;
- **evidence** (retrieval): on the ``k`` training rows of the same task type nearest to this
  run (the run's min-max scaled scores on the tried entries against each row's min-max
  scaled log ratios, nearly the same scale over a few percent, as ``feedback`` compares runs;
  by the card's meta-features while fewer than two fits are in), the candidate's mean and
  median log ratio to those rows' best tried entry (to their defaults for an empty history)
  and the share of them where it beats it. A query's own dataset is left out of its evidence.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sllmbo.data.pool_select import meta_vector, task_type_of
from sllmbo.data.rank_targets import FAILED_LOG_RATIO, RowTargets, subtype_of

#: The pool-entry column of a failed fit (a ratio of e to the best so far: worse than any).
FAILED_SLOT = 1.0
#: Training rows whose evidence a query reads.
N_NEIGHBOURS = 10
SUBTYPES = ("regression", "binary", "multiclass")
#: (pool position, score to minimize or None for a failed fit), in trial order.
History = Sequence[tuple[int, float | None]]


@dataclass(frozen=True)
class Evidence:
    """Training rows of one family that a query may read: log ratios to the defaults
    (rows x pool positions, a failed fit at ``FAILED_LOG_RATIO``), their cards' meta
    vectors, datasets and task types."""

    log_ratio: np.ndarray
    meta: np.ndarray
    datasets: tuple[str, ...]
    task_types: tuple[str, ...]

    @classmethod
    def from_rows(cls, rows: Sequence[RowTargets]) -> Evidence:
        if not rows:
            raise ValueError("evidence needs at least one training row")
        ratio = np.stack([np.where(np.isfinite(r.log_ratio), r.log_ratio, FAILED_LOG_RATIO)
                          for r in rows])
        return cls(ratio, np.stack([meta_vector(r.card) for r in rows]),
                   tuple(r.dataset for r in rows), tuple(task_type_of(r.card) for r in rows))


def feature_names(n_pool: int, n_dims: int) -> list[str]:
    return ["subtype", "log_classes", "log_rows", "log_features", "numeric_share",
            "missing_share", "minority_share", "n_tried", "n_failed", "tried_spread",
            *(f"slot_{i}" for i in range(n_pool)), "position",
            *(f"unit_{d}" for d in range(n_dims)), "dist_best", "dist_nearest",
            "nearest_slot", "nb_mean", "nb_median", "nb_beats"]


#: Columns LightGBM treats as categories.
CATEGORICAL = ("subtype", "position")


def card_features(card: Mapping[str, Any]) -> list[float]:
    n_features = max(int(card["n_features"]), 1)
    minority = card.get("minority_share")
    return [float(SUBTYPES.index(subtype_of(card))),
            math.log(int(card.get("n_classes") or 1)),
            math.log(max(int(card["n_rows"]), 1)), math.log(n_features),
            int(card["n_numeric"]) / n_features, float(card.get("missing_share") or 0.0),
            math.nan if minority is None else float(minority)]


def slots(history: History, n_pool: int) -> tuple[np.ndarray, int | None]:
    """Each pool entry's score scaled within the run (log ratio to the best so far), and
    the position of the best so far (None: no fit finished)."""
    out = np.full(n_pool, np.nan)
    finite = [(i, s) for i, s in history if s is not None and math.isfinite(s)]
    best = min(finite, key=lambda t: t[1]) if finite else None
    for i, s in history:
        if s is None or not math.isfinite(s):
            out[i] = FAILED_SLOT
        else:
            out[i] = math.log(max(s, 1e-12) / max(best[1], 1e-12))  # type: ignore[index]
    return out, None if best is None else best[0]


def query_features(card: Mapping[str, Any], history: History, candidates: Sequence[int],
                   unit: np.ndarray, evidence: Evidence | None,
                   exclude_dataset: str | None = None,
                   k: int = N_NEIGHBOURS) -> np.ndarray:
    """(len(candidates), n_features) features of each candidate pool position given the
    card and the history. ``unit``: the pool's configurations in the unit cube (pool
    positions x dimensions)."""
    n_pool = len(unit)
    slot, best = slots(history, n_pool)
    tried = [i for i, _ in history]
    finite = slot[np.isfinite(slot) & (slot != FAILED_SLOT)]
    head = [*card_features(card), float(len(history)),
            float(sum(1 for _, s in history if s is None or not math.isfinite(s))),
            float(finite.max()) if len(finite) else 0.0]
    cand = np.asarray(candidates, dtype=int)
    nb = neighbour_evidence(card, history, cand, evidence, exclude_dataset, k)
    rows = []
    for j, c in enumerate(cand):
        dist_best = float(np.linalg.norm(unit[c] - unit[best])) if best is not None \
            else math.nan
        if tried:
            d = np.linalg.norm(unit[tried] - unit[c], axis=1)
            near = int(np.argmin(d))
            dist_near, near_slot = float(d[near]), float(slot[tried[near]])
        else:
            dist_near, near_slot = math.nan, math.nan
        rows.append([*head, *slot, float(c), *unit[c], dist_best, dist_near, near_slot,
                     *nb[j]])
    return np.array(rows, dtype=float)


def neighbour_evidence(card: Mapping[str, Any], history: History, candidates: np.ndarray,
                       evidence: Evidence | None, exclude_dataset: str | None,
                       k: int) -> np.ndarray:
    """(len(candidates), 3): mean and median log ratio of each candidate to the nearest
    training rows' best tried entry, and the share of rows where it beats that entry."""
    if evidence is None:
        return np.full((len(candidates), 3), np.nan)
    keep = np.array([t == task_type_of(card) and d != exclude_dataset
                     for t, d in zip(evidence.task_types, evidence.datasets, strict=True)])
    if not keep.any():
        return np.full((len(candidates), 3), np.nan)
    ratio, meta = evidence.log_ratio[keep], evidence.meta[keep]
    finite = [(i, s) for i, s in history if s is not None and math.isfinite(s)]
    if len(finite) >= 2:
        tried = [i for i, _ in finite]
        seen = np.array([s for _, s in finite])
        distance = np.abs(_min_max(ratio[:, tried]) - _min_max(seen[None, :])).mean(axis=1)
    else:
        std = meta.std(axis=0)
        std[std == 0] = 1.0
        distance = (((meta - meta_vector(card)) / std) ** 2).sum(axis=1)
    near = np.argsort(distance, kind="stable")[:k]
    tried_all = [i for i, _ in history]
    reference = ratio[near][:, tried_all].min(axis=1) if tried_all else np.zeros(len(near))
    rel = ratio[near][:, candidates] - reference[:, None]
    return np.stack([rel.mean(axis=0), np.median(rel, axis=0), (rel < 0).mean(axis=0)],
                    axis=1)


def _min_max(values: np.ndarray) -> np.ndarray:
    """Each row scaled among itself to [0, 1] (0 where it does not spread)."""
    low = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True) - low
    return np.where(span > 0, (values - low) / np.where(span > 0, span, 1.0), 0.0)
