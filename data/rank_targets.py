"""Targets for a learned scorer of pool entries, in the metric's own units, with their noise.

For every training variant and pool entry the target is the **log error ratio to the
variant's library-defaults score**, ``log(score / defaults' score)`` (negative: better than
the defaults). The defaults, not the row's best entry, are the reference because:

- the product's goals are stated in these units (GMR: the geometric-mean error ratio to the
  defaults; harm: more than 5% worse than them), so a scorer learns what is judged;
- the defaults are a measured pool entry of every row (``source == "defaults"``), while the
  row's best is the minimum of 60 noisy means, biased low (the winner's curse) and noisier;
- a ratio to any reference turns into a ratio to another by subtraction in logs, so the
  examples' targets (a candidate against the run's best so far) follow exactly from it.

Noise: the matrix stores each cell's spread over its CV fits (``score_std``, ``n_fits``); the
standard error of the mean score is ``score_std / sqrt(n_fits)`` (an underestimate: the fits
of repeated CV share rows). The relative error ``se / score`` is what a log ratio inherits.
Two labels respect it: soft bin labels (the probability mass a normal of that mean and error
puts in each bin) and pairs kept only where the gap exceeds ``z`` combined errors.

Bins are fixed intervals of the log ratio, finest near 1 where a run's improvements lie.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sllmbo.core.errors import SllmboError

if TYPE_CHECKING:
    from sllmbo.data.matrix import Matrix
    from sllmbo.data.pool import Pool

#: Bin edges as error ratios: bin 0 is below 0.7x (a large gain), bin 4 is a tie within 2%,
#: bin 9 is above 1.6x or a failed fit. Ten bins, so that an LLM answers with one digit.
BIN_RATIOS: tuple[float, ...] = (0.7, 0.85, 0.93, 0.98, 1.02, 1.07, 1.15, 1.3, 1.6)
BIN_EDGES: np.ndarray = np.log(np.array(BIN_RATIOS))
N_BINS = len(BIN_RATIOS) + 1
#: Each bin's representative log ratio (the middle of its edges in logs; the open ends at
#: 0.55x and 2x), what an acquisition counts a bin's improvement as.
BIN_VALUES: np.ndarray = np.concatenate((
    [math.log(0.55)], (BIN_EDGES[:-1] + BIN_EDGES[1:]) / 2, [math.log(2.0)]))
#: The smallest relative error a soft label uses (a cell with one fit has no spread).
MIN_REL_SE = 0.005
#: The error ratio a failed fit counts as (for a harm rate: beyond every bin edge).
FAILED_LOG_RATIO = math.log(2.0)


@dataclass(frozen=True)
class RowTargets:
    """One (variant, family) row of the matrix, every pool entry in pool order.

    ``scores`` (NaN: a failed fit) and ``rel_se`` (standard error / score) per entry;
    ``log_ratio`` = log(score / the defaults' score), ``inf`` for a failed fit."""

    variant: str
    family: str
    card: Mapping[str, Any]
    scores: np.ndarray
    rel_se: np.ndarray
    log_ratio: np.ndarray
    defaults: int

    @property
    def dataset(self) -> str:
        return self.variant.split("@", 1)[0]

    def log_se(self) -> np.ndarray:
        """The standard error of each log ratio (the entry's and the defaults' combined)."""
        return np.sqrt(self.rel_se ** 2 + self.rel_se[self.defaults] ** 2)


def row_targets(variant: str, family: str, card: Mapping[str, Any],
                cells: Mapping[str, Mapping[str, Any]], pool: Pool) -> RowTargets:
    """The targets of one row from its cells (config id -> a matrix row: status, score,
    score_std, n_fits). Every pool entry must be present; ``SllmboError`` otherwise, or
    when the defaults' own fit failed (nothing to compare with)."""
    missing = [c.id for c in pool.configs if c.id not in cells]
    if missing:
        raise SllmboError(f"{variant} lacks {len(missing)} {family} cells ({missing[0]}...)",
                          hint="targets need whole rows: finish the matrix first")
    defaults = next((i for i, c in enumerate(pool.configs) if c.source == "defaults"), None)
    if defaults is None:
        raise SllmboError(f"the {family} pool has no entry of source 'defaults'")
    scores, rel_se = [], []
    for c in pool.configs:
        cell = cells[c.id]
        ok = cell["status"] == "ok" and _finite(cell["score"])
        score = max(float(cell["score"]), 1e-12) if ok else math.nan
        std = float(cell["score_std"]) if ok and _finite(cell.get("score_std")) else 0.0
        fits = int(cell["n_fits"]) if _finite(cell.get("n_fits")) else 1
        scores.append(score)
        rel_se.append(std / math.sqrt(max(fits, 1)) / score if ok else math.nan)
    s = np.array(scores)
    if not np.isfinite(s[defaults]):
        raise SllmboError(f"the library defaults failed on {variant} ({family})")
    with np.errstate(invalid="ignore"):
        ratio = np.where(np.isfinite(s), np.log(s / s[defaults]), np.inf)
    return RowTargets(variant, family, dict(card), s, np.maximum(np.nan_to_num(
        np.array(rel_se), nan=0.0), 0.0), ratio, defaults)


def matrix_targets(matrix: Matrix, pools: Mapping[str, Pool],
                   datasets: Sequence[str] | None = None) -> list[RowTargets]:
    """Every whole (variant, family) row of ``matrix`` whose defaults fit, as targets,
    sorted by variant then family; ``datasets`` keeps only those. Held-out datasets are
    refused (``read_matrix`` reads only the training split; this checks again)."""
    from sllmbo.data.splits import refuse_heldout

    cards = matrix.header.get("cards", {})
    wanted = None if datasets is None else set(datasets)
    out = []
    for (variant, family), group in matrix.cells.groupby(["variant", "family"], sort=True):
        dataset = variant.split("@", 1)[0]
        refuse_heldout(dataset, "build scorer targets from")
        if (wanted is not None and dataset not in wanted) or family not in pools \
                or variant not in cards:
            continue
        pool = pools[family]
        cells = {r["config_id"]: r for r in group.to_dict("records")}
        if len(cells) < len(pool):
            continue  # a row still being collected
        try:
            out.append(row_targets(variant, family, cards[variant], cells, pool))
        except SllmboError:
            continue  # the defaults failed: no reference on this row
    return out


# -- labels ---------------------------------------------------------------------------------

def bin_of(log_ratio: np.ndarray | float) -> np.ndarray:
    """The bin (0 = the largest gain) of each log ratio; ``inf`` (a failed fit) is the last."""
    values = np.asarray(log_ratio, dtype=float)
    return np.searchsorted(BIN_EDGES, np.where(np.isfinite(values), values, 1e9), side="right")


def soft_bins(log_ratio: np.ndarray, log_se: np.ndarray) -> np.ndarray:
    """(n, N_BINS) probabilities: the mass a normal of mean ``log_ratio`` and spread
    ``log_se`` (at least ``MIN_REL_SE``) puts in each bin. A failed fit is all last bin."""
    from scipy.stats import norm

    mean = np.asarray(log_ratio, dtype=float)
    se = np.maximum(np.nan_to_num(np.asarray(log_se, dtype=float), nan=MIN_REL_SE), MIN_REL_SE)
    finite = np.isfinite(mean)
    cdf = norm.cdf((BIN_EDGES[None, :] - np.where(finite, mean, 0.0)[:, None]) / se[:, None])
    full = np.concatenate((np.zeros((len(mean), 1)), cdf, np.ones((len(mean), 1))), axis=1)
    probs = np.diff(full, axis=1)
    probs[~finite] = 0.0
    probs[~finite, -1] = 1.0
    return probs


def grades(log_ratio: np.ndarray) -> np.ndarray:
    """Relevance grades for a ranker: ``N_BINS - 1 - bin`` (9 = the largest gain)."""
    return (N_BINS - 1 - bin_of(log_ratio)).astype(int)


def noise_pairs(log_ratio: np.ndarray, rel_se: np.ndarray, z: float = 1.0
                ) -> list[tuple[int, int]]:
    """(better, worse) index pairs of one row whose gap in log ratio exceeds ``z`` times the
    two entries' combined relative errors (the defaults' error cancels within a row). A
    failed fit is worse than every fit; two failed fits make no pair."""
    lr = np.asarray(log_ratio, dtype=float)
    se = np.asarray(rel_se, dtype=float)
    pairs = []
    for i in range(len(lr)):
        for j in range(len(lr)):
            if i == j or not np.isfinite(lr[i]):
                continue
            gap = lr[j] - lr[i]
            if gap > z * math.sqrt(se[i] ** 2 + se[j] ** 2) and gap > 0:
                pairs.append((i, j))
    return pairs


def subtype_of(card: Mapping[str, Any]) -> str:
    """``regression``, ``binary`` or ``multiclass``: what the matrix says matters (the
    portfolio's first entry differs most between binary and many-class tasks)."""
    classes = card.get("n_classes")
    if not classes:
        return "regression"
    return "binary" if int(classes) <= 2 else "multiclass"


def _finite(value: Any) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False
