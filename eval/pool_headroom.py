"""How much a task-aware pick from the pool could gain, measured on the matrices alone.

Before training a recommender on the matrix, measure whether the matrix rewards reading the
task: if the best configuration were the same everywhere, a static portfolio would already be
the ceiling. Two measurements, both exact (no fits: every selector here picks pool entries,
whose scores the matrices hold):

- **leave-one-dataset-out on the training matrix**: for each training dataset, the portfolio
  and ``knn`` are built from the other datasets and judged on each of its variants (CV
  scores); the oracle is the variant's own best;
- **the held-out matrix**: defaults, the portfolio and ``knn`` built on the whole training
  matrix, judged on each held-out dataset's test scores (its best: the ``oracle-pool``).

Both also judge ``surrogate``: a gradient-boosted regressor from (meta-features, the
configuration's log-scaled values) to the cell's regret, fitted on the training rows, picking
the pool entries it predicts best. It is not a product method; it measures how much of the
headroom the meta-features can explain at all, which bounds what a scorer ([10/12]) reading
the same card can learn from this matrix.

Regret is the portfolio objective's (``sllmbo.eval.portfolio.regret_matrix``): 0 = the row's
best pool configuration, 1 = its median or worse; the first ``b`` picks count by their best
(an upper bound of what CV selection within b achieves). Means are over datasets (variants
averaged first).

    python -m sllmbo.eval.pool_headroom --out eval/results/pool_headroom.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.eval.portfolio import regret_matrix
from sllmbo.eval.zeroshot_baselines import (
    PoolSelectors,
    dataset_of,
    knn,
    meta_vector,
    portfolio,
    task_type_of,
)

BUDGETS = (1, 2, 3, 5)


def _row_regret(row: Any) -> dict[str, float]:
    """Regret of each config id in one variant's score row."""
    values = regret_matrix(row.to_numpy()[:, None])[:, 0]
    return dict(zip(row.index.astype(str), values, strict=True))


def _best_of(regret: dict[str, float], picks: list[str], budget: int) -> float:
    chosen = [regret[p] for p in picks[:budget] if p in regret]
    return min(chosen) if chosen else float("nan")


def _config_vector(config: dict[str, Any], keys: list[str]) -> list[float]:
    return [math.log(float(config[k])) if float(config[k]) > 0 else 0.0 for k in keys]


class Surrogate:
    """Predicted regret of every pool entry on a card (LightGBM on meta-features + values)."""

    def __init__(self, selectors: PoolSelectors, family: str, scores: Any) -> None:
        import lightgbm

        self.pool = selectors.pools[family]
        self.keys = sorted(self.pool.configs[0].config)
        self.configs = {c.id: _config_vector(c.config, self.keys) for c in self.pool.configs}
        X, y = [], []
        for variant in scores.index:
            meta = list(meta_vector(selectors.cards[variant]))
            for config_id, value in _row_regret(scores.loc[variant]).items():
                if np.isfinite(value):
                    X.append(meta + self.configs[config_id])
                    y.append(value)
        self.model = lightgbm.LGBMRegressor(n_estimators=300, learning_rate=0.03,
                                            num_leaves=15, min_child_samples=20,
                                            subsample=0.8, subsample_freq=1, n_jobs=1,
                                            verbose=-1)
        self.model.fit(np.array(X), np.array(y))

    def ranked(self, card: dict[str, Any], budget: int) -> list[str]:
        meta = list(meta_vector(card))
        ids = list(self.configs)
        pred = self.model.predict(np.array([meta + self.configs[i] for i in ids]))
        return [ids[i] for i in np.argsort(pred, kind="stable")[:budget]]


def leave_one_dataset_out(selectors: PoolSelectors, family: str) -> dict[str, Any]:
    """Per budget: mean regret over training datasets of defaults, portfolio, knn, oracle."""
    scores = selectors.scores(family)
    cards = selectors.cards
    default_id = selectors.pools[family].configs[0].id
    per_dataset: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    datasets = sorted({dataset_of(v) for v in scores.index})
    for dataset in datasets:
        rest = scores.loc[[dataset_of(v) != dataset for v in scores.index]]
        if rest.empty:
            continue
        folios = {t: portfolio(cards, rest, t, max(BUDGETS))
                  for t in ("regression", "classification")}
        surrogate = Surrogate(selectors, family, rest)
        for variant in [v for v in scores.index if dataset_of(v) == dataset]:
            card = cards[variant]
            regret = _row_regret(scores.loc[variant])
            picks = {"defaults": [default_id],
                     "portfolio": folios[task_type_of(card)],
                     "knn": knn(card, cards, rest, max(BUDGETS)),
                     "surrogate": surrogate.ranked(card, max(BUDGETS))}
            for b in BUDGETS:
                for method, chosen in picks.items():
                    per_dataset[dataset][f"{method}@{b}"].append(_best_of(regret, chosen, b))
    return _summary(per_dataset)


def heldout(selectors: PoolSelectors, family: str) -> dict[str, Any]:
    """Per budget: mean test regret over held-out datasets of defaults, portfolio, knn."""
    if selectors.heldout is None:
        return {}
    test = selectors.heldout.scores(family)
    counts = selectors.heldout.cells[selectors.heldout.cells["family"] == family] \
        .groupby("variant").size()
    whole = counts.index[counts == len(selectors.pools[family])]
    train = selectors.scores(family)
    cards = {**selectors.cards, **selectors.heldout.header.get("cards", {})}
    default_id = selectors.pools[family].configs[0].id
    folios = {t: portfolio(selectors.cards, train, t, max(BUDGETS))
              for t in ("regression", "classification")}
    surrogate = Surrogate(selectors, family, train)
    per_dataset: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for variant in whole:
        card = cards[variant]
        regret = _row_regret(test.loc[variant])
        picks = {"defaults": [default_id], "portfolio": folios[task_type_of(card)],
                 "knn": knn(card, selectors.cards, train, max(BUDGETS),
                            exclude_dataset=dataset_of(variant)),
                 "surrogate": surrogate.ranked(card, max(BUDGETS))}
        for b in BUDGETS:
            for method, chosen in picks.items():
                per_dataset[dataset_of(variant)][f"{method}@{b}"].append(
                    _best_of(regret, chosen, b))
    return _summary(per_dataset)


def _summary(per_dataset: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    keys = sorted({k for d in per_dataset.values() for k in d})
    table = {k: [float(np.nanmean(d[k])) for d in per_dataset.values() if d.get(k)]
             for k in keys}
    return {"n_datasets": len(per_dataset),
            "mean_regret": {k: round(float(np.nanmean(v)), 4) for k, v in table.items()},
            "median_regret": {k: round(float(np.nanmedian(v)), 4) for k, v in table.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    from sllmbo.eval.zeroshot_baselines import load_selectors

    selectors = load_selectors()
    result = {"train_variants_whole": {f: len(selectors.scores(f))
                                       for f in selectors.pools},
              "leave_one_dataset_out": {f: leave_one_dataset_out(selectors, f)
                                        for f in selectors.pools},
              "heldout": {f: heldout(selectors, f) for f in selectors.pools}}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out is not None:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
