"""Learning targets in the metric's own units: each pool entry's log error ratio to the
variant's library defaults, with its CV standard error.

Why the defaults, not the variant's best entry, are the reference:

- the evaluation's headline is the geometric-mean error ratio to the defaults and its harm
  rate (more than 5% worse than the defaults), so a target of ``log(score / defaults)`` is that
  statistic per cell: ``exp(target) > 1.05`` is harm;
- the defaults are one fixed cell that every variant runs, so a target does not move when the
  pool grows, and it carries one cell's CV noise; the best of 60 noisy entries is biased low
  (the winner's curse) and its noise is not any cell's standard error;
- the ratio to the best is one subtraction away (``reference="best"``) for a learner that
  wants regret.

The standard error of a cell's mean CV score is ``score_std / sqrt(n_fits)`` from the
matrix's columns (the spread of its fold scores, over its repeats). The log ratio's is
``sqrt((se / score)^2 + (se_ref / ref)^2)`` (delta method). Every entry of a variant is scored
on the same folds, so their errors are positively correlated and this overstates the noise of
a difference; the matrix keeps no fold scores to pair them. Fold scores of one repeat share
training rows, which makes ``std / sqrt(n)`` understate a mean's noise; the two biases pull
in opposite directions and neither is corrected here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

from sllmbo.core.errors import SllmboError

Reference = Literal["defaults", "best"]
#: Columns of :func:`log_ratio_targets`' table.
TARGET_COLUMNS = ("variant", "dataset", "family", "config_id", "score", "se", "ref_config_id",
                  "ref_score", "ref_se", "log_ratio", "log_ratio_se")


def defaults_ids(pools: Mapping[str, Any]) -> dict[str, str]:
    """Each family's config id whose source is the library defaults."""
    return {family: next(c.id for c in pool.configs if c.source == "defaults")
            for family, pool in pools.items()}


def cell_se(score_std: float, n_fits: float) -> float:
    """The standard error of a cell's mean CV score (NaN when the matrix lacks its spread)."""
    if n_fits is None or score_std is None or not n_fits > 0 or math.isnan(score_std):
        return math.nan
    return float(score_std) / math.sqrt(float(n_fits))


def log_ratio_targets(matrix: Any, reference: Reference = "defaults",
                      defaults: Mapping[str, str] | None = None) -> Any:
    """One row per finished training cell: its log error ratio to the reference entry of its
    variant and family, with standard errors (columns ``TARGET_COLUMNS``; pandas).

    ``matrix``: a training :class:`~sllmbo.data.matrix.Matrix`. ``defaults``: family ->
    config id of the library defaults (default: from the committed pool). Failed cells,
    non-positive scores and variants whose reference cell has not run are left out.
    """
    import numpy as np

    from sllmbo.data.splits import heldout_match
    from sllmbo.data.variants import parse_variant

    if reference not in ("defaults", "best"):
        raise SllmboError(f"reference must be 'defaults' or 'best', got '{reference}'")
    if matrix.header.get("split") != "train":
        raise SllmboError("targets are built from the training matrix only, got the "
                          f"{matrix.header.get('split')} one", hint="read data/matrix/train.csv.gz")
    if defaults is None:
        from sllmbo.data.matrix import POOL_FILE
        from sllmbo.data.pool import read_pools

        defaults = defaults_ids(read_pools(POOL_FILE))
    cells = matrix.cells
    cells = cells[(cells["status"] == "ok") & (cells["score"] > 0)].copy()
    held = sorted({v for v in cells["variant"].unique() if heldout_match(v)})
    if held:
        raise SllmboError(f"the matrix holds held-out variants ({', '.join(held[:3])}): "
                          "they never become training targets", hint="rebuild the matrix")
    cells["se"] = [cell_se(s, n) for s, n in zip(cells["score_std"], cells["n_fits"], strict=True)]
    if reference == "defaults":
        ref = cells[cells["config_id"] == cells["family"].map(defaults)]
    else:
        ref = cells.loc[cells.groupby(["variant", "family"])["score"].idxmin()]
    ref = ref[["variant", "family", "config_id", "score", "se"]].rename(
        columns={"config_id": "ref_config_id", "score": "ref_score", "se": "ref_se"})
    out = cells.merge(ref, on=["variant", "family"], how="inner")
    out["dataset"] = [(parse_variant(v) or (v, 0))[0] for v in out["variant"]]
    out["log_ratio"] = np.log(out["score"] / out["ref_score"])
    rel = (out["se"] / out["score"]) ** 2 + (out["ref_se"] / out["ref_score"]) ** 2
    # The reference cell is exactly its own reference: ratio 1, no noise.
    out["log_ratio_se"] = np.where(out["config_id"] == out["ref_config_id"], 0.0, np.sqrt(rel))
    return out[list(TARGET_COLUMNS)].reset_index(drop=True)


def beat_probability(log_ratio_a: Any, se_a: Any, log_ratio_b: Any, se_b: Any) -> Any:
    """The chance that entry a's true error is below entry b's, treating both log ratios as
    normal with their standard errors: a soft pairwise label that says how sure the matrix
    is (0.5 where the gap is inside the noise). Works on scalars and numpy arrays."""
    import numpy as np
    from scipy.special import ndtr

    gap = np.asarray(log_ratio_b, float) - np.asarray(log_ratio_a, float)
    noise = np.hypot(np.asarray(se_a, float), np.asarray(se_b, float))
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(noise > 0, gap / noise, np.sign(gap) * np.inf)
    return ndtr(z)
