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

Both also judge two probes, not product methods, that ask whether the headroom can be
reached from what a card says:

- ``surrogate``: a gradient-boosted regressor from (meta-features, the configuration's
  log-scaled values) to the cell's regret, fitted on the training rows, picking the pool
  entries it predicts best: a learned pointwise scorer, the shape of [10/12]'s scoring
  formulation, with the meta-features given as numbers;
- ``feedback``: few-shot, not zero-shot: the portfolio's first ``FEEDBACK_START`` entries,
  then each next entry the one of least mean regret on the ``FEEDBACK_NEIGHBOURS`` training
  variants whose scores on the entries tried so far, min-max scaled among those entries, are
  nearest to the query's own (a run knows the scores it has seen, never its row's best or
  median): whether trials 2-5 gain from the task's first results;
- ``size-portfolio``: the greedy portfolio of the training variants of the same task type
  whose rows lie within a factor e of the query's (the global one when fewer than 3 do): a
  hand-made prior that conditions on size alone.

``--curve`` adds a learning curve: leave-one-dataset-out regret at 1 trial when the selectors
learn from a random share (25/50/75/100%) of the other training datasets, 3 draws each. A
selector that improves with more datasets while the portfolio does not says the matrix's
conditional signal is limited by how many datasets it has.

Each probe is also compared with the portfolio by a Wilcoxon signed-rank test over datasets.

``pick_target_ceiling_at_1`` asks what the pick formulation's training targets can teach: the
leave-one-dataset-out regret of a perfect learner of top-k targets and of soft targets
(``--matrix-pick-temperature``), reading the task type alone or the type and the size.

``structure`` asks where the portfolio's regret comes from, on the training datasets that have
several variants (sizes): ``sibling-portfolio`` is the greedy portfolio of a variant's own
siblings (the other sizes of its dataset), what a selector that recognized the dataset
perfectly could reach; ``noise-floor@1`` is the regret, on the row's means, of the best entry
of the row re-measured once with each cell's CV standard error (``score_std / sqrt(n_fits)``),
the part of a regret no selector can remove; ``variance_share`` splits the regret matrix's sum
of squares into a configuration main effect, a per-variant offset, configuration x dataset,
and what is left within a dataset (size and noise).

Regret is the portfolio objective's (``sllmbo.eval.portfolio.regret_matrix``): 0 = the row's
best pool configuration, 1 = its median or worse; the first ``b`` picks count by their best
(an upper bound of what CV selection within b achieves). Means are over datasets (variants
averaged first).

    python -m sllmbo.eval.pool_headroom --curve --out eval/results/pool_headroom.json
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sllmbo.data.pool_select import (
    FEEDBACK_START,
    dataset_of,
    greedy_portfolio,
    knn,
    meta_vector,
    portfolio,
    regret_matrix,
    task_type_of,
)
from sllmbo.eval.zeroshot_baselines import PoolSelectors
from sllmbo.samplers.pool import FEEDBACK_NEIGHBOURS

BUDGETS = (1, 2, 3, 5)
#: Selectors compared with the portfolio by a Wilcoxon test over datasets.
COMPARED = ("defaults", "knn", "surrogate", "size-portfolio", "feedback")
CURVE_SHARES = (0.25, 0.5, 0.75, 1.0)
SIZE_WINDOW = 1.0  # |log rows - log query rows|: within a factor e


def best_of(values: Sequence[float], budget: int) -> float:
    """The best regret among the first ``budget`` picks (1, the cap, when none is finite)."""
    chosen = [v for v in values[:budget] if math.isfinite(v)]
    return min(chosen) if chosen else 1.0


def row_regrets(row: Any) -> dict[str, float]:
    """Regret of each config id in one variant's score row."""
    values = regret_matrix(row.to_numpy()[:, None])[:, 0]
    return dict(zip(row.index.astype(str), values, strict=True))


def _best_of(regret: dict[str, float], picks: list[str], budget: int) -> float:
    """The best regret of the first ``budget`` picks on one row (``validate_adapter``'s rule)."""
    return best_of([regret.get(p, 1.0) for p in picks], budget)


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
            for config_id, value in row_regrets(scores.loc[variant]).items():
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


def size_portfolio(card: dict[str, Any], cards: dict[str, Any], scores: Any, size: int,
                   window: float = SIZE_WINDOW) -> list[str]:
    """The greedy portfolio of the training variants of ``card``'s task type whose rows are
    within ``exp(window)`` of its own (the task type's portfolio when fewer than 3 are)."""
    log_rows = math.log(max(int(card["n_rows"]), 1))
    near = [v for v in scores.index if task_type_of(cards[v]) == task_type_of(card)
            and abs(math.log(max(int(cards[v]["n_rows"]), 1)) - log_rows) <= window]
    if len(near) < 3:
        return portfolio(cards, scores, task_type_of(card), size)
    table = scores.loc[near]
    order, _ = greedy_portfolio(regret_matrix(table.to_numpy().T), size)
    return [str(table.columns[i]) for i in order]


def _scaled(values: np.ndarray) -> np.ndarray:
    """Min-max scaled among themselves (all 0 where they do not spread; NaN stays NaN)."""
    low, high = np.nanmin(values), np.nanmax(values)
    return np.zeros_like(values) if not high > low else (values - low) / (high - low)


def _regret_table(scores: Any) -> pd.DataFrame:
    """A (variants x config ids) score table as regrets, each row on its own scale."""
    return pd.DataFrame(regret_matrix(scores.to_numpy().T).T, index=scores.index,
                        columns=scores.columns)


def feedback_picks(folio: list[str], observed: Any, scores: Any, cards: dict[str, Any],
                   task_type: str, budget: int, start: int = FEEDBACK_START,
                   neighbours: int = FEEDBACK_NEIGHBOURS) -> list[str]:
    """The first ``start`` entries of ``folio`` (the task type's portfolio on ``scores``),
    then entries chosen one at a time from the query's observed scores (``observed``:
    config id -> score, read only for the entries tried) by ``NeighbourChooser`` over the
    training variants of ``task_type`` in ``scores``: what ``PoolSampler`` tries."""
    from sllmbo.samplers.pool import NeighbourChooser

    same = [v for v in scores.index if task_type_of(cards[v]) == task_type]
    tried = list(folio[:min(start, budget)])
    if not same:
        return tried
    table = scores.loc[same]
    columns = [str(c) for c in table.columns]
    position = {c: i for i, c in enumerate(columns)}
    choose = NeighbourChooser(table.to_numpy(float), _regret_table(table).to_numpy(float),
                              [position[c] for c in folio], neighbours)
    while len(tried) < budget:
        index = choose([(position[c], observed[c]) for c in tried], {position[c] for c in tried})
        if index is None:
            break
        tried.append(columns[index])
    return tried


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
            regret = row_regrets(scores.loc[variant])
            picks = {"defaults": [default_id],
                     "portfolio": folios[task_type_of(card)],
                     "knn": knn(card, cards, rest, max(BUDGETS)),
                     "surrogate": surrogate.ranked(card, max(BUDGETS)),
                     "size-portfolio": size_portfolio(card, cards, rest, max(BUDGETS)),
                     "feedback": feedback_picks(folios[task_type_of(card)],
                                                scores.loc[variant], rest, cards,
                                                task_type_of(card), max(BUDGETS))}
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
        regret = row_regrets(test.loc[variant])
        picks = {"defaults": [default_id], "portfolio": folios[task_type_of(card)],
                 "knn": knn(card, selectors.cards, train, max(BUDGETS),
                            exclude_dataset=dataset_of(variant)),
                 "surrogate": surrogate.ranked(card, max(BUDGETS)),
                 "size-portfolio": size_portfolio(card, selectors.cards, train, max(BUDGETS)),
                 "feedback": feedback_picks(folios[task_type_of(card)],
                                            test.loc[variant], train, selectors.cards,
                                            task_type_of(card), max(BUDGETS))}
        for b in BUDGETS:
            for method, chosen in picks.items():
                per_dataset[dataset_of(variant)][f"{method}@{b}"].append(
                    _best_of(regret, chosen, b))
    return _summary(per_dataset)


def learning_curve(selectors: PoolSelectors, family: str, shares: tuple[float, ...] = CURVE_SHARES,
                   draws: int = 3) -> dict[str, dict[str, float]]:
    """Leave-one-dataset-out mean regret at 1 trial of portfolio, size-portfolio and knn
    learning from a random ``share`` of the other datasets (``draws`` seeded draws)."""
    import random

    scores, cards = selectors.scores(family), selectors.cards
    datasets = sorted({dataset_of(v) for v in scores.index})
    out: dict[str, dict[str, float]] = {}
    for share in shares:
        means: dict[str, list[float]] = defaultdict(list)
        for draw in range(draws if share < 1 else 1):
            rng = random.Random(draw)
            per_dataset: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
            for dataset in datasets:
                others = [d for d in datasets if d != dataset]
                kept = set(rng.sample(others, max(3, round(share * len(others)))))
                rest = scores.loc[[dataset_of(v) in kept for v in scores.index]]
                folios = {t: portfolio(cards, rest, t, 1) for t in ("regression", "classification")}
                for variant in [v for v in scores.index if dataset_of(v) == dataset]:
                    card, regret = cards[variant], row_regrets(scores.loc[variant])
                    picks = {"portfolio": folios[task_type_of(card)],
                             "size-portfolio": size_portfolio(card, cards, rest, 1),
                             "knn": knn(card, cards, rest, 1)}
                    for method, chosen in picks.items():
                        per_dataset[dataset][method].append(_best_of(regret, chosen, 1))
            for method in ("portfolio", "size-portfolio", "knn"):
                means[method].append(float(np.nanmean(
                    [np.nanmean(d[method]) for d in per_dataset.values() if d.get(method)])))
        out[f"{share:.2f}"] = {m: round(float(np.mean(v)), 4) for m, v in means.items()}
    return out


PICK_TARGETS = ("top1", "top5", "soft0.1", "soft0.5", "soft1")


def pick_target_distribution(row: Any, kind: str) -> dict[str, float]:
    """What ``matrix-pick`` examples of one variant's row teach, as a distribution over the
    pool: ``topK`` (its K best entries, equally) or ``softT`` (``soft_pick_targets``)."""
    from sllmbo.data.matrix_examples import soft_pick_targets

    if kind.startswith("top"):
        best = row.sort_values(kind="stable").index[: int(kind[3:])]
        return {str(i): 1.0 / len(best) for i in best}
    scores = {str(i): (float(v) if np.isfinite(v) else None) for i, v in row.items()}
    weights = dict(soft_pick_targets(scores, float(kind[4:])))
    total = sum(weights.values())
    return {i: w / total for i, w in weights.items()}


def pick_target_ceiling(selectors: PoolSelectors, family: str,
                        kinds: tuple[str, ...] = PICK_TARGETS) -> dict[str, float]:
    """Leave-one-dataset-out regret at 1 trial of a perfect learner of each pick target: the
    most probable entry of the targets averaged over the training variants a card cannot
    tell apart (``kind/type``: those of its task type; ``kind/size``: of its task type
    within a factor e in rows). It bounds what cross-entropy on those targets can teach a
    picker that reads only the task type, or the size."""
    scores, cards = selectors.scores(family), selectors.cards
    targets = {k: {v: pick_target_distribution(scores.loc[v], k) for v in scores.index}
               for k in kinds}
    per_dataset: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for variant in scores.index:
        dataset, card = dataset_of(variant), cards[variant]
        regret = row_regrets(scores.loc[variant])
        same = [v for v in scores.index if dataset_of(v) != dataset
                and task_type_of(cards[v]) == task_type_of(card)]
        log_rows = math.log(max(int(card["n_rows"]), 1))
        near = [v for v in same
                if abs(math.log(max(int(cards[v]["n_rows"]), 1)) - log_rows) <= SIZE_WINDOW]
        for kind in kinds:
            for name, group in (("type", same), ("size", near if len(near) >= 3 else same)):
                mass: dict[str, float] = defaultdict(float)
                for v in group:
                    for config_id, p in targets[kind][v].items():
                        mass[config_id] += p
                if mass:
                    best = max(sorted(mass), key=mass.__getitem__)
                    per_dataset[dataset][f"{kind}/{name}"].append(regret[best])
    keys = sorted({k for d in per_dataset.values() for k in d})
    return {k: round(float(np.mean([np.mean(d[k]) for d in per_dataset.values() if d.get(k)])),
                     4) for k in keys}


STRUCTURE_BUDGETS = (1, 5)


def noise_floor(scores: Any, std_error: Any, draws: int = 50, seed: int = 0) -> list[float]:
    """Per variant (rows of ``scores``): the mean regret, on the row's means, of the best entry
    of the row re-measured ``draws`` times with Gaussian noise of ``std_error`` (NaN: 0)."""
    rng = np.random.default_rng(seed)
    out = []
    for variant in scores.index:
        means = scores.loc[variant].to_numpy(float)
        error = np.nan_to_num(std_error.loc[variant, scores.columns].to_numpy(float))
        regret = regret_matrix(means[:, None])[:, 0]
        finite = np.isfinite(means)
        picks = []
        for _ in range(draws):
            noisy = np.where(finite, means + rng.standard_normal(len(means)) * error, np.inf)
            picks.append(regret[int(np.argmin(noisy))])
        out.append(float(np.mean(picks)))
    return out


def variance_share(regret: Any) -> dict[str, float]:
    """Shares of the regret table's (variants x configs, no NaN) sum of squares: the configs'
    main effect, the variants' offsets, configuration x dataset, and the rest within a dataset.
    Meaningful on datasets with several variants (one variant's rest is all "dataset")."""
    x = regret.to_numpy(float)
    grand = x.mean()
    config = x.mean(axis=0, keepdims=True) - grand
    offset = x.mean(axis=1, keepdims=True) - grand
    additive = grand + config + offset
    groups = [dataset_of(v) for v in regret.index]
    interaction = (pd.DataFrame(x - additive, index=regret.index)
                   .groupby(groups).transform("mean").to_numpy())
    within = x - additive - interaction
    total = float(((x - grand) ** 2).sum())
    parts = {"config": float((config ** 2).sum()) * x.shape[0],
             "variant_offset": float((offset ** 2).sum()) * x.shape[1],
             "config_x_dataset": float((interaction ** 2).sum()),
             "within_dataset": float((within ** 2).sum())}
    return {k: round(v / total, 3) for k, v in parts.items()} if total > 0 else parts


def structure(selectors: PoolSelectors, family: str,
              budgets: tuple[int, ...] = STRUCTURE_BUDGETS) -> dict[str, Any]:
    """Leave-one-dataset-out portfolio against the sibling portfolio (the dataset's other
    variants), the noise floor and the variance shares, on datasets with several variants."""
    scores, cards = selectors.scores(family), selectors.cards
    by_dataset: dict[str, list[str]] = defaultdict(list)
    for variant in scores.index:
        by_dataset[dataset_of(variant)].append(variant)
    multi = {d: vs for d, vs in by_dataset.items() if len(vs) >= 2}
    if not multi:
        return {}
    cells = selectors.train.cells
    cells = cells[(cells["family"] == family) & cells["variant"].isin(scores.index)]
    std_error = (cells.pivot(index="variant", columns="config_id", values="score_std")
                 / np.sqrt(cells.pivot(index="variant", columns="config_id",
                                       values="n_fits").clip(lower=1)))
    per_dataset: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    size = max(budgets)
    for dataset, variants in sorted(multi.items()):
        rest = scores.loc[[dataset_of(v) != dataset for v in scores.index]]
        folio = portfolio(cards, rest, task_type_of(cards[variants[0]]), size)
        floors = noise_floor(scores.loc[variants], std_error)
        for variant, floor in zip(variants, floors, strict=True):
            siblings = scores.loc[[v for v in variants if v != variant]]
            sibling = portfolio(cards, siblings, task_type_of(cards[variant]), size)
            regret = row_regrets(scores.loc[variant])
            for b in budgets:
                per_dataset[dataset][f"portfolio@{b}"].append(_best_of(regret, folio, b))
                per_dataset[dataset][f"sibling-portfolio@{b}"].append(
                    _best_of(regret, sibling, b))
            per_dataset[dataset]["noise-floor@1"].append(floor)
    keys = sorted({k for d in per_dataset.values() for k in d})
    means = {k: round(float(np.mean([np.mean(d[k]) for d in per_dataset.values()])), 4)
             for k in keys}
    table = scores.loc[[v for vs in multi.values() for v in vs]]
    regret = _regret_table(table)
    return {"n_datasets": len(multi), "n_variants": len(table), "mean_regret": means,
            "variance_share": variance_share(regret)}


def summarize(per: Mapping[str, Mapping[str, list[float]]]) -> dict[str, Any]:
    """Means over datasets, and each method against the portfolio (``paired_test``: wins,
    ties, losses and the Wilcoxon p over datasets)."""
    from sllmbo.eval.overdatasets import paired_test

    keys = sorted({k for d in per.values() for k in d})
    table = {k: np.array([np.mean(d[k]) if d.get(k) else np.nan for d in per.values()])
             for k in keys}
    versus: dict[str, Any] = {}
    for key in keys:
        method, budget = key.rsplit("@", 1)
        if method != "portfolio":
            paired = paired_test(table[key], table[f"portfolio@{budget}"])
            versus[key] = {"wins": paired.wins, "ties": paired.ties, "losses": paired.losses,
                           "wilcoxon_p": paired.p_value}
    return {"n_datasets": len(per),
            "mean_regret": {k: round(float(np.nanmean(v)), 4) for k, v in table.items()},
            "versus_portfolio": versus}


def _summary(per_dataset: dict[str, dict[str, list[float]]]) -> dict[str, Any]:
    keys = sorted({k for d in per_dataset.values() for k in d})
    table = {k: [float(np.nanmean(d[k])) for d in per_dataset.values() if d.get(k)]
             for k in keys}
    summary = summarize(per_dataset)
    return {"n_datasets": summary["n_datasets"], "mean_regret": summary["mean_regret"],
            "median_regret": {k: round(float(np.nanmedian(v)), 4) for k, v in table.items()},
            "versus_portfolio": {k: v for k, v in summary["versus_portfolio"].items()
                                 if k.rsplit("@", 1)[0] in COMPARED}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    parser.add_argument("--curve", action="store_true",
                        help="add the learning curve over shares of the training datasets")
    args = parser.parse_args(argv)
    from sllmbo.eval.zeroshot_baselines import load_selectors

    selectors = load_selectors()
    result = {"train_variants_whole": {f: len(selectors.scores(f))
                                       for f in selectors.pools},
              "leave_one_dataset_out": {f: leave_one_dataset_out(selectors, f)
                                        for f in selectors.pools},
              "heldout": {f: heldout(selectors, f) for f in selectors.pools}}
    result["pick_target_ceiling_at_1"] = {f: pick_target_ceiling(selectors, f)
                                          for f in selectors.pools}
    result["structure"] = {f: structure(selectors, f) for f in selectors.pools}
    if args.curve:
        result["learning_curve_at_1"] = {f: learning_curve(selectors, f) for f in selectors.pools}
    emit(result, args.out)
    return 0


def emit(result: dict[str, Any], out: Path | None) -> None:
    """Print a probe's JSON, and write it to ``out`` too where given."""
    text = json.dumps(result, indent=1)
    print(text)
    if out is not None:
        out.write_text(text + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
