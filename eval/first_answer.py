"""The first answer from the pool: which rule picks it, and whether the training split can tell.

A pool selector's first answer is one entry per (family, subtype). This measures, in the
metric's own units (the log error ratio to the library defaults), three rules for choosing it
from the training rows:

- ``mean``: least mean log ratio over the training variants, the log-ratio portfolio's first
  entry (``data.pool_select.ratio_portfolio``, what ``portfolio-ratio`` and ``tpe-warm`` try
  first);
- ``dataset-mean``: the same with each training dataset weighing one, however many sizes
  (variants) it has: the suite judges over datasets;
- ``minimax``: least worst log ratio over the training datasets: the safest entry seen.

Each rule is judged twice: leave-one-dataset-out on the training matrix (each dataset's top
rung, CV scores; the rule learns from the other datasets) and on the held-out matrix (the rule
learns from every training row; test scores of refits). A rule is chosen on the first; the
second is the judge, read after. ``margin`` says how far apart the training rows hold the
``mean`` rule's first two entries, beside their held-out ratios: a near-tie on training that is
far apart on held-out is a gap in the training split's coverage, not in the rule.

    python -m sllmbo.eval.first_answer --out eval/results/first_answer.json
"""

from __future__ import annotations

import argparse
import math
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.data.pool_select import SUBTYPES, dataset_of, log_ratio_matrix, subtype_of
from sllmbo.eval.ratios import gmr, harm_rate

Rule = Callable[[np.ndarray, Sequence[str]], int]


def log_ratios_to_defaults(scores: np.ndarray, defaults: int) -> np.ndarray:
    """``log(error / defaults' error)`` of a (rows x candidates) table of errors; a failed fit
    (NaN) counts as the row's worst."""
    to_best = log_ratio_matrix(np.asarray(scores, dtype=float).T).T
    return to_best - to_best[:, [defaults]]


def _by_dataset(ratios: np.ndarray, names: Sequence[str]) -> np.ndarray:
    groups: dict[str, list[int]] = defaultdict(list)
    for i, name in enumerate(names):
        groups[dataset_of(name)].append(i)
    return np.stack([ratios[rows].mean(axis=0) for rows in groups.values()])


def mean_rule(ratios: np.ndarray, names: Sequence[str]) -> int:
    return int(np.argmin(ratios.mean(axis=0)))


def dataset_mean_rule(ratios: np.ndarray, names: Sequence[str]) -> int:
    return int(np.argmin(_by_dataset(ratios, names).mean(axis=0)))


def minimax_rule(ratios: np.ndarray, names: Sequence[str]) -> int:
    return int(np.argmin(_by_dataset(ratios, names).max(axis=0)))


RULES: dict[str, Rule] = {"mean": mean_rule, "dataset-mean": dataset_mean_rule,
                          "minimax": minimax_rule}


def summary(logs: Sequence[float]) -> dict[str, float]:
    """GMR, harm rate and worst ratio of per-dataset log ratios to the defaults."""
    x = np.asarray(logs, dtype=float)
    if not len(x):
        return {"gmr": math.nan, "harm": math.nan, "worst": math.nan, "n_datasets": 0}
    return {"gmr": round(gmr(x), 4), "harm": round(harm_rate(x), 4),
            "worst": round(math.exp(float(x.max())), 4), "n_datasets": len(x)}


def top_rungs(names: Sequence[str]) -> dict[str, str]:
    """Each dataset's largest variant (``name@rows``)."""
    top: dict[str, str] = {}
    for name in names:
        d = dataset_of(name)
        if d not in top or int(name.split("@")[1]) > int(top[d].split("@")[1]):
            top[d] = name
    return top


def leave_one_dataset_out(ratios: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Each rule learning from the other datasets, judged on each dataset's top rung."""
    index = {n: i for i, n in enumerate(names)}
    logs: dict[str, list[float]] = {r: [] for r in RULES}
    for dataset, variant in sorted(top_rungs(names).items()):
        rest = [i for i, n in enumerate(names) if dataset_of(n) != dataset]
        if not rest:
            continue
        for rule, pick in RULES.items():
            choice = pick(ratios[rest], [names[i] for i in rest])
            logs[rule].append(float(ratios[index[variant], choice]))
    return {rule: summary(x) for rule, x in logs.items()}


def first_answers(train: Any, cards: Mapping[str, Mapping[str, Any]], defaults_id: str,
                  heldout: Any, heldout_cards: Mapping[str, Mapping[str, Any]]
                  ) -> dict[str, Any]:
    """Per subtype: the rules left-one-dataset-out on ``train`` and judged on ``heldout``
    (both (variants x config ids) error tables of one family, same columns), and the
    ``mean`` rule's margin between its first two entries."""
    ids = [str(c) for c in train.columns]
    defaults = ids.index(defaults_id)
    out: dict[str, Any] = {}
    for subtype in SUBTYPES:
        rows = [v for v in train.index if v in cards and subtype_of(cards[v]) == subtype]
        held = [v for v in heldout.index if subtype_of(heldout_cards[v]) == subtype]
        if not rows or not held:
            continue
        ratios = log_ratios_to_defaults(train.loc[rows, ids].to_numpy(), defaults)
        held_ratios = log_ratios_to_defaults(heldout.loc[held, ids].to_numpy(), defaults)
        picks = {rule: pick(ratios, rows) for rule, pick in RULES.items()}
        order = np.argsort(ratios.mean(axis=0), kind="stable")[:2]
        out[subtype] = {
            "leave_one_dataset_out": leave_one_dataset_out(ratios, rows),
            "heldout": {rule: {"config_id": ids[c], **summary(held_ratios[:, c])}
                        for rule, c in picks.items()},
            "margin": [{"config_id": ids[c],
                        "train_gmr": round(math.exp(float(ratios[:, c].mean())), 4),
                        "heldout_gmr": round(math.exp(float(held_ratios[:, c].mean())), 4)}
                       for c in order],
            "train_datasets": len({dataset_of(v) for v in rows}),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=None, help="write the JSON here too")
    args = parser.parse_args(argv)
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools
    from sllmbo.data.pool_select import whole_rows
    from sllmbo.eval.heldout_matrix import read_heldout_matrix
    from sllmbo.eval.pool_headroom import emit

    pools = read_pools(POOL_FILE)
    train = read_matrix(pools=pools)
    held = read_heldout_matrix()
    result = {}
    for family, pool in pools.items():
        ids = [c.id for c in pool.configs]
        defaults_id = next(c.id for c in pool.configs if c.source == "defaults")
        result[family] = first_answers(whole_rows(train, pool)[ids], train.header["cards"],
                                       defaults_id, held.scores(family)[ids],
                                       held.header["cards"])
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
