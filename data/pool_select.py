"""Choosing from the pool on the training matrix: normalized regret, the greedy portfolio and
the nearest training variants.

One implementation for every stage that chooses pool entries: the loop (``recommend
--decode pick``'s list, the ``feedback`` samplers), the instruction data (few-shot histories,
soft pick targets) and the evaluation's baselines (``portfolio``, ``knn``). It lives in
``data`` because the loop and the instruction data must not import ``eval``; it reads only
the training matrix and what it is given, never the held-out matrix.

Meta-features are the few that production selectors read (rows and features for auto-sklearn
2.0; FLAML adds classes and the numeric share): log rows, log features, numeric share and log
classes, standardized over the training variants.

Two losses: the normalized regret clipped at the median (``portfolio``, ``knn``: [9/12]'s
selectors, kept for the committed results), and the log error ratio, unclipped, per subtype
(binary, multiclass, regression: ``ratio_portfolio``, ``ratio_knn``), which sees that a
configuration 5x worse on multiclass log-loss is 5x worse.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sllmbo.core.errors import SllmboError

if TYPE_CHECKING:
    from sllmbo.data.matrix import Matrix
    from sllmbo.data.pool import Pool

#: Entries a few-shot run tries from the portfolio before a chooser is asked (the
#: ``feedback`` samplers, ``pool_headroom``'s probe and the few-shot pick's training
#: histories all start the same way).
FEEDBACK_START = 2


# -- regret and the greedy portfolio -------------------------------------------------------

def regret_matrix(scores: np.ndarray) -> np.ndarray:
    """Normalized regret of candidates (rows) on tasks (columns) from scores to minimize:
    ``(score - best) / (median - best)`` per column, clipped to [0, 1]; NaN (a failed fit)
    is 1. A column whose finite scores do not spread above the best is 0 where finite."""
    scores = np.asarray(scores, dtype=float)
    regret = np.ones_like(scores)
    for col in range(scores.shape[1]):
        column = scores[:, col]
        finite = np.isfinite(column)
        if not finite.any():
            continue
        best, scale = regret_scale(column[finite])
        if scale <= 0:
            regret[finite, col] = 0.0
            continue
        regret[finite, col] = np.clip((column[finite] - best) / scale, 0.0, 1.0)
    return regret


def regret_scale(finite: np.ndarray) -> tuple[float, float]:
    """A row's best finite score and the spread that regret 1 stands for: the median's
    distance from the best, or the worst's where the median ties the best (0: no spread)."""
    best = float(finite.min())
    scale = float(np.median(finite)) - best
    if scale <= 0:
        scale = float(finite.max()) - best
    return best, scale


def greedy_portfolio(regret: np.ndarray, size: int,
                     start: Sequence[int] = ()) -> tuple[list[int], list[float]]:
    """Greedy forward selection on a (candidates x tasks) regret matrix.

    Each step adds the candidate that minimizes the mean over tasks of the smallest regret
    among the selected candidates; ties go to the lower mean regret of the candidate alone,
    then to the lower index. ``start`` rows are taken first, as given (a list that begins
    with a task-specific choice and goes on with what complements it). Returns the chosen
    row indices in order and, per step, the mean best regret reached."""
    regret = np.asarray(regret, dtype=float)
    n_candidates = regret.shape[0]
    alone = regret.mean(axis=1)
    current = np.full(regret.shape[1], np.inf)
    order: list[int] = []
    curve: list[float] = []

    def take(row: int) -> None:
        nonlocal current
        order.append(int(row))
        current = np.minimum(current, regret[row])
        curve.append(float(current.mean()))

    for row in list(dict.fromkeys(start))[:size]:
        take(row)
    for _ in range(min(size, n_candidates) - len(order)):
        best: tuple[float, float, int] | None = None
        for row in range(n_candidates):
            if row in order:
                continue
            value = float(np.minimum(current, regret[row]).mean())
            key = (round(value, 12), round(float(alone[row]), 12), row)
            if best is None or key < best:
                best = key
        assert best is not None
        take(best[2])
    return order, curve


# -- selectors on a (variants x config ids) score table ------------------------------------

def meta_vector(card: Mapping[str, Any]) -> np.ndarray:
    """The selector's meta-features of a task card (``Task.meta_features`` keys): log rows,
    log features, numeric share, log classes."""
    n_features = max(int(card["n_features"]), 1)
    return np.array([
        math.log(max(int(card["n_rows"]), 1)),
        math.log(n_features),
        int(card["n_numeric"]) / n_features,
        math.log(int(card.get("n_classes") or 1)),
    ])


def dataset_of(variant: str) -> str:
    return variant.split("@", 1)[0]


def task_type_of(card: Mapping[str, Any]) -> str:
    return "classification" if card.get("n_classes") else "regression"


def best_configs(scores: Any) -> dict[str, str]:
    """Each variant's best config id in a (variants x config ids) score table (minimized)."""
    finite = scores.dropna(axis=0, how="all")
    return {v: str(finite.loc[v].idxmin()) for v in finite.index}


def knn(query: Mapping[str, Any], cards: Mapping[str, Mapping[str, Any]], scores: Any,
        budget: int, exclude_dataset: str | None = None) -> list[str]:
    """The first ``budget`` distinct best configurations of the training variants nearest to
    the ``query`` card (same task type; ``exclude_dataset``'s variants skipped)."""
    bests = best_configs(scores)
    names = [v for v in bests if v in cards and task_type_of(cards[v]) == task_type_of(query)
             and dataset_of(v) != exclude_dataset]
    out: list[str] = []
    for i in _nearest(query, [cards[v] for v in names]):
        config = bests[names[i]]
        if config not in out:
            out.append(config)
        if len(out) == budget:
            break
    return out


def portfolio(cards: Mapping[str, Mapping[str, Any]], scores: Any, task_type: str,
              size: int, start: Sequence[str] = ()) -> list[str]:
    """The greedy portfolio of ``task_type``'s training variants (config ids, in order);
    with ``start`` (config ids), the list begins with them and goes on greedily with the
    entries that best complement them."""
    rows = [v for v in scores.index if v in cards and task_type_of(cards[v]) == task_type]
    if not rows:
        return []
    table = scores.loc[rows]
    regret = regret_matrix(table.to_numpy().T)  # candidates x tasks
    columns = [str(c) for c in table.columns]
    order, _ = greedy_portfolio(regret, size, start=[columns.index(i) for i in start])
    return [columns[i] for i in order]


# -- the log error ratio, per subtype --------------------------------------------------------

#: The subtypes a selector keeps apart: what suits binary tasks can ruin multiclass log-loss.
SUBTYPES: tuple[str, ...] = ("binary", "multiclass", "regression")
#: Training variants whose rows a ``ratio_knn`` list is built on.
KNN_NEIGHBOURS = 10
#: Errors are floored here before the log (a perfect fit scores 0).
_ERROR_FLOOR = 1e-12


def subtype_of(card: Mapping[str, Any]) -> str:
    """``binary``, ``multiclass`` or ``regression`` from a card's (or ``Task.meta_features``')
    class count."""
    n_classes = card.get("n_classes")
    if not n_classes:
        return "regression"
    return "binary" if int(n_classes) == 2 else "multiclass"


def prior_error(card: Mapping[str, Any]) -> float:
    """The error of knowing only the target's distribution, from the card: the class entropy
    (binary from the minority share; multiclass at most ``log k``, the card holds no more) or
    the target's standard deviation (what RMSE is without features). A score over it says how
    noisy a task is, which no meta-feature does; NaN where the card lacks it."""
    n_classes = card.get("n_classes")
    if not n_classes:
        std = card.get("target_std")
        return float(std) if std else math.nan
    if int(n_classes) > 2:
        return math.log(int(n_classes))
    p = min(max(float(card.get("minority_share") or 0.5), 1e-6), 0.5)
    return -(p * math.log(p) + (1 - p) * math.log(1 - p))


def error_level(score: float | None, card: Mapping[str, Any]) -> float:
    """``log(score / prior_error(card))``: how much of the prior error a fit leaves (about 0:
    nothing learned; very negative: nearly separable). NaN without a finite positive score or
    prior."""
    prior = prior_error(card)
    if score is None or not math.isfinite(score) or score <= 0 or not prior > 0:
        return math.nan
    return math.log(score / prior)


def log_ratio_matrix(scores: np.ndarray) -> np.ndarray:
    """``log(error / best error)`` of candidates (rows) on tasks (columns), errors to minimize
    (log-loss, RMSE): 0 for a column's best, log 5 for five times its error, unclipped. A
    failed fit (NaN) counts as the column's worst; a column with no finite score is 0. The
    reference (the column's best) shifts a column by a constant, so a greedy choice on the
    mean is the same for any reference, the library defaults included."""
    scores = np.asarray(scores, dtype=float)
    out = np.zeros_like(scores)
    for col in range(scores.shape[1]):
        column = scores[:, col]
        finite = np.isfinite(column)
        if not finite.any():
            continue
        logs = np.log(np.maximum(column[finite], _ERROR_FLOOR))
        out[finite, col] = logs - logs.min()
        out[~finite, col] = logs.max() - logs.min()
    return out


def ratio_portfolio(cards: Mapping[str, Mapping[str, Any]], scores: Any, subtype: str,
                    size: int) -> list[str]:
    """The greedy portfolio (config ids, in order) minimizing the mean over ``subtype``'s
    training variants of the best log error ratio among the chosen entries."""
    if subtype not in SUBTYPES:
        raise SllmboError(f"unknown task subtype '{subtype}'", hint=f"one of {SUBTYPES}")
    rows = [v for v in scores.index if v in cards and subtype_of(cards[v]) == subtype]
    return _ratio_greedy(scores.loc[rows], size)


def ratio_knn(query: Mapping[str, Any], cards: Mapping[str, Mapping[str, Any]], scores: Any,
              budget: int, exclude_dataset: str | None = None,
              neighbours: int = KNN_NEIGHBOURS) -> list[str]:
    """The greedy log-ratio portfolio of the ``neighbours`` training variants of the query's
    subtype nearest to the ``query`` card by meta-features (``exclude_dataset``'s variants
    skipped): a list good together on the tasks most like the query, not each neighbour's
    single best."""
    subtype = subtype_of(query)
    names = [v for v in scores.dropna(axis=0, how="all").index
             if v in cards and subtype_of(cards[v]) == subtype and dataset_of(v) != exclude_dataset]
    nearest = [names[i] for i in _nearest(query, [cards[v] for v in names])[:neighbours]]
    return _ratio_greedy(scores.loc[nearest], budget)


def _ratio_greedy(table: Any, size: int) -> list[str]:
    if table.empty:
        return []
    columns = [str(c) for c in table.columns]
    return [columns[i] for i in ratio_order(table.to_numpy(), size)]


def ratio_order(scores: np.ndarray, size: int) -> list[int]:
    """The greedy log-ratio portfolio of a (tasks x candidates) table of errors (NaN: a
    failed fit), as candidate positions in order."""
    order, _ = greedy_portfolio(log_ratio_matrix(np.asarray(scores, dtype=float).T), size)
    return list(order)


def _nearest(query: Mapping[str, Any], cards: Sequence[Mapping[str, Any]]) -> list[int]:
    """Positions of ``cards`` by distance to ``query`` on standardized meta-features,
    nearest first (ties keep the given order)."""
    if not cards:
        return []
    X = np.stack([meta_vector(c) for c in cards])
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0
    dist = (((X - mean) / std - (meta_vector(query) - mean) / std) ** 2).sum(axis=1)
    return [int(i) for i in np.argsort(dist, kind="stable")]


def whole_rows(matrix: Matrix, pool: Pool) -> Any:
    """The (variants x config ids) scores of the training variants whose whole row of
    ``pool``'s family is in: a partial row, from a collection under way, would rank only
    the configurations run so far."""
    cells = matrix.cells[matrix.cells["family"] == pool.family]
    counts = cells.groupby("variant").size()
    whole = counts.index[counts == len(pool.configs)]
    return matrix.scores(pool.family).loc[lambda t: t.index.isin(whole)]


# -- the committed training matrix, for the loop -------------------------------------------

def training_table(pool: Pool, task_type: str) -> np.ndarray:
    """The committed training matrix's whole rows of ``task_type`` for ``pool``: scores
    (rows x pool positions, minimized). Only the training matrix is read."""
    from sllmbo.data.matrix import read_matrix

    return _task_rows(read_matrix(), pool, task_type)[[c.id for c in pool.configs]].to_numpy(float)


def _task_rows(matrix: Matrix, pool: Pool, task_type: str) -> Any:
    cards = matrix.header.get("cards", {})
    scores = whole_rows(matrix, pool)
    scores = scores.loc[[task_type_of(cards[v]) == task_type for v in scores.index]]
    if scores.empty:
        raise SllmboError(f"the training matrix has no whole {pool.family} row of a "
                          f"{task_type} task", hint="finish the collection: make matrix")
    return scores


#: Entries of the log-ratio portfolio a warm-started optimizer tries first (``tpe-warm``;
#: the evaluation's ``tpe-warm``, ``gp-warm`` and ``smac``).
WARM_START = 3


def warm_start(family: str, card: Mapping[str, Any], size: int = WARM_START
               ) -> list[dict[str, Any]]:
    """The first ``size`` configurations of the log-ratio portfolio of the ``card``'s
    subtype (``n_classes``: binary, multiclass or regression) on the committed training
    matrix: what a warm-started optimizer tries before its own model takes over."""
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools

    pools = read_pools(POOL_FILE)
    if family not in pools:
        raise SllmboError(f"the committed pool has no {family} configurations to warm-start "
                          "from", hint=f"use one of {', '.join(sorted(pools))}, or --sampler tpe")
    return ratio_start(read_matrix(pools=pools), pools[family], card, size)


def ratio_start(matrix: Matrix, pool: Pool, card: Mapping[str, Any], size: int
                ) -> list[dict[str, Any]]:
    """The first ``size`` configurations of ``pool``'s log-ratio portfolio for the ``card``'s
    subtype on ``matrix``'s whole rows (``warm_start`` and the evaluation's
    ``portfolio-ratio`` read the committed ones)."""
    ids = ratio_portfolio(matrix.header.get("cards", {}), whole_rows(matrix, pool),
                          subtype_of(card), size)
    by_id = {c.id: c.config for c in pool.configs}
    return [dict(by_id[i]) for i in ids]


def training_rows(family: str, task_type: str) -> tuple[Pool, np.ndarray, np.ndarray, list[int]]:
    """The committed pool of ``family`` and the training matrix's whole rows of ``task_type``
    for it: scores and regrets (rows x pool positions) and the greedy portfolio's order (pool
    positions). Only the training matrix is read."""
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools

    pools = read_pools(POOL_FILE)
    if family not in pools:
        raise SllmboError(f"the committed pool has no {family} configurations",
                          hint=f"use one of {', '.join(sorted(pools))}")
    pool = pools[family]
    matrix = read_matrix(pools=pools)
    scores = _task_rows(matrix, pool, task_type)
    ids = [c.id for c in pool.configs]
    table = scores[ids].to_numpy(float)
    folio = portfolio(matrix.header.get("cards", {}), scores, task_type, len(ids))
    return pool, table, regret_matrix(table.T).T, [ids.index(c) for c in folio]


def complement(scores: np.ndarray, first: Sequence[int], size: int) -> list[int]:
    """``first`` (pool positions), then the entries that best complement them on the
    training rows ``scores`` (rows x pool positions, minimized): the greedy portfolio
    continued from a task-specific start, so a list for budget ``size`` is good together."""
    order, _ = greedy_portfolio(regret_matrix(np.asarray(scores).T), size, start=first)
    return order
