"""Pool selectors built on the cross-evaluated matrix, the baselines a recommender must beat.

- ``knn``: the nearest training variants by scaled meta-features (auto-sklearn's and FLAML's
  warm start) and each one's best pool configuration, nearest first; budget b takes the first
  b distinct. Neighbours are of the same task type; every variant of the query's own dataset is
  skipped (the query is held out, or left out in validation).
- ``portfolio``: greedy forward selection on the training matrix's normalized regret
  (Feurer et al.; ``sllmbo.eval.portfolio.greedy_portfolio``), per task type.
- ``oracle-pool``: the best pool configuration of a held-out variant, from its own row of the
  held-out matrix: the ceiling of any selector from the pool, never a competitor.

Meta-features are the few that production selectors read (rows and features for auto-sklearn
2.0; FLAML adds classes and the numeric share): log rows, log features, numeric share and log
classes, standardized over the training variants.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from sllmbo.eval.portfolio import greedy_portfolio, regret_matrix

META_FEATURES = ("log_rows", "log_features", "numeric_share", "log_classes")


def meta_vector(card: Mapping[str, Any]) -> np.ndarray:
    """The selector's meta-features of a task card (``Task.meta_features`` keys)."""
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
    if not names:
        return []
    X = np.stack([meta_vector(cards[v]) for v in names])
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std == 0] = 1.0
    dist = (((X - mean) / std - (meta_vector(query) - mean) / std) ** 2).sum(axis=1)
    out: list[str] = []
    for i in np.argsort(dist, kind="stable"):
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


def oracle_pool(heldout_scores: Any, variant: str) -> str:
    """The held-out variant's best pool configuration (its own test scores, minimized)."""
    return str(heldout_scores.loc[variant].idxmin())


# ------------------------------------------------------------------ the suite's selectors

class PoolSelectors:
    """The selectors of the ``zero-shot`` suite over the committed matrices: configuration
    dicts (pool entries) for a held-out task, in the order a method tries them."""

    def __init__(self, train: Any, heldout: Any | None, pools: Mapping[str, Any]) -> None:
        self.train, self.heldout, self.pools = train, heldout, pools
        self.cards: dict[str, Any] = train.header.get("cards", {})

    def scores(self, family: str) -> Any:
        """The training variants whose whole ``family`` row is in (a partial row, from a
        collection under way, would rank only the configurations run so far)."""
        cells = self.train.cells[self.train.cells["family"] == family]
        counts = cells.groupby("variant").size()
        whole = counts.index[counts == len(self.pools[family])]
        return self.train.scores(family).loc[lambda t: t.index.isin(whole)]

    def _configs(self, family: str, ids: list[str]) -> list[dict[str, Any]]:
        by_id = {c.id: c.config for c in self.pools[family].configs}
        return [dict(by_id[i]) for i in ids]

    def knn(self, task: Any, family: str, budget: int) -> list[dict[str, Any]]:
        ids = knn(task.meta_features(), self.cards, self.scores(family), budget,
                  exclude_dataset=dataset_of(task.name))
        return self._configs(family, ids)

    def portfolio(self, task_type: str, family: str, budget: int) -> list[dict[str, Any]]:
        return self._configs(family, portfolio(self.cards, self.scores(family),
                                               task_type, budget))

    def oracle(self, task: Any, family: str) -> list[dict[str, Any]]:
        from sllmbo.errors import SllmboError

        scores = None if self.heldout is None else self.heldout.scores(family)
        if scores is None or task.name not in scores.index or scores.loc[task.name].isna().all():
            raise SllmboError(f"the held-out matrix has no {family} row for {task.name}",
                              hint="finish it: make matrix-heldout")
        return self._configs(family, [oracle_pool(scores, task.name)])


def load_selectors() -> PoolSelectors:
    """The committed training matrix, held-out matrix (when present) and pools, read once
    per process."""
    return _load_selectors()


@functools.cache
def _load_selectors() -> PoolSelectors:
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools
    from sllmbo.eval.heldout_matrix import HELDOUT_MATRIX, read_heldout_matrix

    pools = read_pools(POOL_FILE)
    heldout = read_heldout_matrix() if HELDOUT_MATRIX.exists() else None
    return PoolSelectors(read_matrix(pools=pools), heldout, pools)
