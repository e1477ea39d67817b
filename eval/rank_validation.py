"""``gbdt-rank`` against the pool's baselines on validation datasets of the training split.

Leave-datasets-out: the training datasets of validation fold ``--fold`` (a seeded hash of
their names, ``sllmbo.data.rank_examples.dataset_fold``) are set aside; every method learns
from the other training datasets only (the portfolio's greedy order, ``feedback``'s
neighbour rows, the scorer's examples and its evidence) and is replayed on each validation
row (variant, family) by looking its choices up in the matrix: no fitting. Held-out
datasets never enter (``read_matrix`` reads the training split; every dataset is checked).

Methods, each a sequence of pool entries:

- ``defaults``: the library defaults, then the portfolio's order;
- ``portfolio``: the greedy portfolio of the row's task type;
- ``portfolio-ratio``: the greedy log-ratio portfolio of the row's subtype (binary,
  multiclass, regression), and ``defaults-first-ratio``, the defaults then that list: the
  strongest pool baselines of the held-out suite, so the bar here is the bar there;
- ``feedback``: the portfolio's first two entries, then ``NeighbourChooser``'s picks;
- ``gbdt-rank:<kind>:<acquisition>``: the scorer of each kind (``bins``, ``regress``:
  ``ei`` and ``pi``; ``rank``: its raw score), from the empty history on.

Statistics, at budgets 1, 3, 5 and 10, in the metric's units: a row's ratio is its best
CV score among the entries chosen so far over the defaults' CV score (a failed fit counts
as 2x); a dataset's ratio is the geometric mean over its variants, per family; GMR is the
geometric mean over (dataset, family) units, harm the share of units more than 5% worse
than the defaults. Wilcoxon signed-rank tests (two-sided, over units) compare ``gbdt-rank``
(the kind and acquisition of least mean GMR over the budgets, chosen on this same fold:
an optimistic choice among five) with ``feedback``, ``portfolio`` and ``portfolio-ratio`` at 1
and 5 trials. Several ``--folds`` pool their units: each fold's methods learn without it.

    python -m sllmbo.eval.rank_validation --out eval/results/rank_validation.json
    python -m sllmbo.eval.rank_validation --folds 1 --kinds regress \
        --out eval/results/rank_validation_fold1.json   # the kind chosen on fold 0, unselected
    python -m sllmbo.eval.rank_validation --folds 0 1 2 3 4 --kinds regress \
        --out eval/results/rank_validation_folds.json   # every training dataset validated once
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.data.pool_select import (
    FEEDBACK_START,
    ratio_order,
    regret_matrix,
    subtype_of,
    task_type_of,
)
from sllmbo.data.rank_examples import N_FOLDS, history_of, portfolios, split_rows
from sllmbo.data.rank_targets import FAILED_LOG_RATIO, RowTargets
from sllmbo.samplers.gbdt_rank import GbdtScorer
from sllmbo.samplers.pool import FEEDBACK_NEIGHBOURS, NeighbourChooser
from sllmbo.training.gbdt_rank import FitOptions, train_family, training_rows

BUDGETS = (1, 3, 5, 10)
HARM_RATIO = 1.05
#: (history as (position, score), taken positions) -> the next position.
Choose = Callable[[list[tuple[int, float | None]], set[int]], int]


def replay(row: RowTargets, choose: Choose, budget: int) -> list[int]:
    """The pool positions a method tries on ``row``, in order, fed the row's own scores."""
    tried: list[int] = []
    for _ in range(budget):
        nxt = choose(history_of(row, tried), set(tried))
        if nxt in tried:
            raise AssertionError(f"a method tried entry {nxt} twice")
        tried.append(nxt)
    return tried


def best_log_ratios(row: RowTargets, order: Sequence[int],
                    budgets: Sequence[int] = BUDGETS) -> list[float]:
    """The log ratio of the best entry among the first b of ``order`` to the defaults."""
    ratio = np.where(np.isfinite(row.log_ratio), row.log_ratio, FAILED_LOG_RATIO)
    return [float(ratio[list(order[:b])].min()) for b in budgets]


def ordered(order: Sequence[int]) -> Choose:
    """A fixed order as a method: its first untried entry."""
    return lambda history, taken: next(i for i in order if i not in taken)


def baseline_methods(learn: Sequence[RowTargets], family: str
                     ) -> dict[str, Callable[[RowTargets], Choose]]:
    """``defaults``, ``portfolio`` and ``feedback`` built on the learning rows of
    ``family`` (per task type), ``portfolio-ratio`` and ``defaults-first-ratio`` (per
    subtype)."""
    rows = [r for r in learn if r.family == family]
    folios = portfolios(rows)
    ratio_folios = {}
    for subtype in {subtype_of(r.card) for r in rows}:
        table = np.stack([r.scores for r in rows if subtype_of(r.card) == subtype])
        ratio_folios[subtype] = ratio_order(table, table.shape[1])
    tables: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for task_type in folios:
        scores = np.stack([r.scores for r in rows if task_type_of(r.card) == task_type])
        tables[task_type] = (scores, regret_matrix(scores.T).T)

    def feedback(row: RowTargets) -> Choose:
        folio = folios[task_type_of(row.card)]
        scores, regret = tables[task_type_of(row.card)]
        chooser = NeighbourChooser(scores, regret, folio, FEEDBACK_NEIGHBOURS)
        start = folio[:FEEDBACK_START]

        def choose(history: list[tuple[int, float | None]], taken: set[int]) -> int:
            first = next((i for i in start if i not in taken), None)
            if first is not None:
                return first
            pick = chooser(history, taken)
            return pick if pick is not None else next(i for i in folio if i not in taken)
        return choose

    return {
        "defaults": lambda row: ordered([row.defaults, *folios[task_type_of(row.card)]]),
        "portfolio": lambda row: ordered(folios[task_type_of(row.card)]),
        "feedback": feedback,
        "portfolio-ratio": lambda row: ordered(ratio_folios[subtype_of(row.card)]),
        "defaults-first-ratio": lambda row: ordered([row.defaults,
                                                     *ratio_folios[subtype_of(row.card)]]),
    }


def scorer_method(scorer: GbdtScorer, acquisition: str) -> Callable[[RowTargets], Choose]:
    def make(row: RowTargets) -> Choose:
        def choose(history: list[tuple[int, float | None]], taken: set[int]) -> int:
            left = [i for i in range(len(row.log_ratio)) if i not in taken]
            return scorer.choose(row.card, history, left, acquisition)
        return choose
    return make


def summarize(per_unit: dict[str, dict[tuple[str, str], list[float]]]) -> dict[str, Any]:
    """GMR and harm per method and budget, overall and per family."""
    out: dict[str, Any] = {}
    for method, units in per_unit.items():
        values = np.array(list(units.values()))  # units x budgets, log ratios
        families = sorted({f for _, f in units})
        entry: dict[str, Any] = {}
        for j, b in enumerate(BUDGETS):
            entry[str(b)] = _stats(values[:, j])
            for f in families:
                sub = np.array([v[j] for (d, fam), v in units.items() if fam == f])
                entry[str(b)][f] = _stats(sub)
        out[method] = entry
    return out


def _stats(values: np.ndarray) -> dict[str, Any]:
    return {"gmr": round(float(np.exp(values.mean())), 4),
            "harm": round(float((values > math.log(HARM_RATIO)).mean()), 4),
            "n": len(values)}


def wilcoxon(per_unit: dict[str, dict[tuple[str, str], list[float]]], a: str, b: str,
             budget: int) -> dict[str, Any]:
    """Two-sided Wilcoxon signed-rank test over units of ``a`` against ``b`` at ``budget``."""
    from scipy.stats import wilcoxon as test

    j = BUDGETS.index(budget)
    keys = sorted(per_unit[a])
    diff = np.array([per_unit[a][k][j] - per_unit[b][k][j] for k in keys])
    result: dict[str, Any] = {"a": a, "b": b, "budget": budget, "n": len(diff),
                              "a_better": int((diff < 0).sum()), "b_better": int((diff > 0).sum()),
                              "median_log_diff": round(float(np.median(diff)), 4)}
    if np.count_nonzero(diff) == 0:
        return {**result, "p": 1.0}
    return {**result, "p": float(test(diff, zero_method="zsplit").pvalue)}


def run(folds: Sequence[int], kinds: Sequence[str], options: FitOptions) -> dict[str, Any]:
    from sllmbo.data.matrix import POOL_FILE
    from sllmbo.data.pool import read_pools

    pools = read_pools(POOL_FILE)
    rows = training_rows()
    per_row: dict[str, dict[str, list[float]]] = defaultdict(dict)
    fits: dict[str, Any] = {}
    validation: list[RowTargets] = []
    learned_from: set[str] = set()
    for fold in folds:
        learn, valid = split_rows(rows, fold=fold)
        validation += valid
        learned_from |= {r.dataset for r in learn}
        _validate_fold(learn, valid, pools, kinds, options, per_row,
                       fits if len(folds) == 1 else fits.setdefault(str(fold), {}))
    per_unit = {m: _by_unit(rows) for m, rows in per_row.items()}
    summary = summarize(per_unit)
    scorers = [m for m in per_unit if m.startswith("gbdt-rank")]
    chosen = min(scorers, key=lambda m: np.mean([summary[m][str(b)]["gmr"] for b in BUDGETS]))
    tests = [wilcoxon(per_unit, chosen, other, b)
             for other in ("feedback", "portfolio", "portfolio-ratio") for b in (1, 5)]
    return {"folds": list(folds), "validation_datasets": sorted({r.dataset for r in validation}),
            "n_learn_datasets": len(learned_from),
            "n_validation_rows": len(validation), "budgets": list(BUDGETS), "fits": fits,
            "options": {"target_cap": options.target_cap, "n_histories": options.n_histories},
            "chosen": chosen, "summary": summary, "wilcoxon": tests,
            "per_unit": {m: {f"{d}:{f}": [round(x, 5) for x in v] for (d, f), v in u.items()}
                         for m, u in per_unit.items()}}


def _validate_fold(learn: Sequence[RowTargets], valid: Sequence[RowTargets], pools: Any,
                   kinds: Sequence[str], options: FitOptions,
                   per_row: dict[str, dict[str, list[float]]], fits: dict[str, Any]) -> None:
    """Every method learned from ``learn``, replayed on each row of ``valid``."""
    for family in sorted(pools):
        methods = baseline_methods(learn, family)
        learn_f = [r for r in learn if r.family == family]
        for kind in kinds:
            entry = train_family(learn_f, family, pools[family],
                                 replace(options, kind=kind))
            fits[f"{family}:{kind}"] = {k: entry[k] for k in ("n_examples", "n_queries",
                                                              "fit_seconds")}
            scorer = GbdtScorer(entry, pools[family], learn_f)
            for acquisition in (("ei", "pi") if kind != "rank" else ("score",)):
                methods[f"gbdt-rank:{kind}:{acquisition}"] = scorer_method(
                    scorer, "ei" if acquisition == "score" else acquisition)
        for row in (r for r in valid if r.family == family):
            for name, make in methods.items():
                order = replay(row, make(row), max(BUDGETS))
                per_row[name][f"{row.variant}:{family}"] = best_log_ratios(row, order)


def _by_unit(rows: dict[str, list[float]]) -> dict[tuple[str, str], list[float]]:
    """Row log ratios averaged over each (dataset, family)'s variants."""
    groups: dict[tuple[str, str], list[list[float]]] = defaultdict(list)
    for key, values in rows.items():
        variant, family = key.rsplit(":", 1)
        groups[variant.split("@", 1)[0], family].append(values)
    return {k: list(np.mean(v, axis=0)) for k, v in sorted(groups.items())}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folds", type=int, nargs="+", default=[0],
                        help="validation folds of the training split, pooled")
    parser.add_argument("--target-cap", type=float, default=FitOptions.target_cap,
                        help="regress: the error ratio its target is clipped at")
    parser.add_argument("--kinds", nargs="+", default=["bins", "regress", "rank"])
    parser.add_argument("--n-histories", type=int, default=FitOptions.n_histories)
    parser.add_argument("--out", default="eval/results/rank_validation.json")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        options = FitOptions(n_histories=args.n_histories, target_cap=args.target_cap)
    except ValueError as err:
        parser.error(str(err))
    if any(not 0 <= f < N_FOLDS for f in args.folds):
        parser.error(f"--folds lie in 0..{N_FOLDS - 1}")
    result = run(sorted(set(args.folds)), args.kinds, options)
    result["seconds"] = round(time.perf_counter() - start, 1)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    for method, entry in result["summary"].items():
        print(f"{method:28s} " + "  ".join(
            f"@{b}: {entry[str(b)]['gmr']:.3f}/{entry[str(b)]['harm']:.0%}" for b in BUDGETS))
    for t in result["wilcoxon"]:
        print(f"{t['a']} vs {t['b']} @{t['budget']}: p={t['p']:.3g} "
              f"({t['a_better']} better, {t['b_better']} worse, n={t['n']})")
    print(f"chosen: {result['chosen']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
