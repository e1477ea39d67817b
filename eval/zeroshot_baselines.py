"""Pool selectors built on the cross-evaluated matrix, the baselines a recommender must beat.

- ``knn``: the nearest training variants by scaled meta-features (auto-sklearn's and FLAML's
  warm start) and each one's best pool configuration, nearest first; budget b takes the first
  b distinct. Neighbours are of the same task type; every variant of the query's own dataset is
  skipped (the query is held out, or left out in validation).
- ``portfolio``: greedy forward selection on the training matrix's normalized regret
  (Feurer et al.; ``sllmbo.data.pool_select.greedy_portfolio``), per task type.
- ``portfolio-ratio``, ``knn-ratio``: the same two rebuilt on the log error ratio (unclipped)
  per subtype (binary, multiclass, regression): ``sllmbo.data.pool_select.ratio_portfolio``
  and ``ratio_knn``.
- ``oracle-pool``: the best pool configuration of a held-out variant, from its own row of the
  held-out matrix: the ceiling of any selector from the pool, never a competitor.

The selection rules themselves are ``sllmbo.data.pool_select``'s, shared with the loop; this
module binds them to the committed matrices, the held-out one included.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from sllmbo.data.pool_select import (
    dataset_of,
    knn,
    portfolio,
    ratio_knn,
    ratio_start,
    whole_rows,
)


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
        return whole_rows(self.train, self.pools[family])

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

    def portfolio_ratio(self, task: Any, family: str, budget: int) -> list[dict[str, Any]]:
        return ratio_start(self.train, self.pools[family], task.meta_features(), budget)

    def knn_ratio(self, task: Any, family: str, budget: int) -> list[dict[str, Any]]:
        ids = ratio_knn(task.meta_features(), self.cards, self.scores(family), budget,
                        exclude_dataset=dataset_of(task.name))
        return self._configs(family, ids)

    def oracle(self, task: Any, family: str) -> list[dict[str, Any]]:
        from sllmbo.core.errors import SllmboError

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
