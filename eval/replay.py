"""A fast offline benchmark: pool-restricted methods replayed by looking scores up in the
cross-evaluated matrices instead of fitting, so an idea for a sampler is judged in minutes,
before any real run. The real suite stays the final judge.

Two benches:

- ``heldout``: every held-out dataset x family of ``eval/matrix/heldout.csv.gz``; the methods
  read the whole training matrix. That matrix stores one score per cell, the test score of
  the configuration refit on the training split, so a run's history and its choice of the
  best configuration within a budget read the test score too (the real suite reads 3-fold CV
  there): the replay picks the best of what it tried a little optimistically, for every
  method alike.
- ``train-loo``: every training variant x family of ``data/matrix/train.csv.gz``, the
  variant's whole dataset left out of what the methods read. That matrix stores the CV score
  only, which is both what a run sees and what it is judged on.

The results are in the metric's own units (``sllmbo.eval.ratios``): the geometric-mean ratio
of test error to the defaults' and the harm rate, at budgets 1..30 (the pool holds 60).

    python -m sllmbo.eval.replay_report --out eval/results/replay
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.data.pool_select import dataset_of, whole_rows
from sllmbo.eval.replay_methods import REPLAY_METHODS, Context, ReplayMethod

#: Budgets the benchmark reports (every one from 1 to 30 is computed).
MAX_BUDGET = 30
SHOWN_BUDGETS: tuple[int, ...] = (1, 2, 3, 5, 10, 20, 30)


@dataclass(frozen=True)
class Bench:
    """One bench: per (task, family) what the methods read and what they are judged on."""

    name: str
    #: (task, family) -> config id -> the score a run sees (history, best-so-far).
    seen: Mapping[tuple[str, str], Mapping[str, float]]
    #: (task, family) -> config id -> the score a run is judged on.
    test: Mapping[tuple[str, str], Mapping[str, float]]
    cards: Mapping[str, Mapping[str, Any]]
    #: family -> the training rows (variants x pool ids) and cards the methods read.
    train: Mapping[str, Any]
    train_cards: Mapping[str, Mapping[str, Any]]
    pool_ids: Mapping[str, tuple[str, ...]]
    defaults_ids: Mapping[str, str]
    #: Leave the task's own dataset out of the training rows (the training-matrix bench).
    leave_out: bool = False


def _score_maps(scores: Any) -> dict[str, dict[str, float]]:
    return {str(v): {str(c): float(s) for c, s in row.items()} for v, row in scores.iterrows()}


def load_benches(which: Sequence[str] = ("heldout", "train-loo")) -> list[Bench]:
    """The benches over the committed matrices and pools."""
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools

    pools = read_pools(POOL_FILE)
    train = read_matrix(pools=pools)
    tables = {f: whole_rows(train, pool) for f, pool in pools.items()}
    pool_ids = {f: tuple(c.id for c in pool.configs) for f, pool in pools.items()}
    defaults = {f: next(c.id for c in pool.configs if c.source == "defaults")
                for f, pool in pools.items()}
    cards = train.header.get("cards", {})
    benches = []
    for name in which:
        if name == "heldout":
            from sllmbo.eval.heldout_matrix import read_heldout_matrix

            matrix = read_heldout_matrix()
            own = {f: _score_maps(matrix.scores(f)) for f in pools}
            task_cards = matrix.header.get("cards", {})
        elif name == "train-loo":
            own = {f: _score_maps(tables[f]) for f in pools}
            task_cards = cards
        else:
            raise ValueError(f"unknown bench '{name}' (heldout, train-loo)")
        scores = {(v, f): s for f, by_v in own.items() for v, s in by_v.items()}
        benches.append(Bench(name, scores, scores, task_cards, tables, cards, pool_ids,
                             defaults, leave_out=name == "train-loo"))
    return benches


def replay_run(method: ReplayMethod, ctx: Context, seen: Mapping[str, float],
               budget: int = MAX_BUDGET) -> list[str]:
    """The config ids ``method`` tries in ``budget`` trials (fewer when it stops or repeats
    itself: a repeat would be a cache hit, not a new trial)."""
    tried: list[str] = []
    history: list[tuple[str, float | None]] = []
    for _ in range(budget):
        config = method.policy(ctx, history)
        if config is None or config in tried:
            break
        tried.append(config)
        value = seen.get(config, math.nan)
        history.append((config, value if math.isfinite(value) else None))
    return tried


def best_within(tried: Sequence[str], seen: Mapping[str, float], budget: int) -> str | None:
    """The configuration handed over after ``budget`` trials: least seen score among the
    first ``budget`` tried, the earliest on ties (``metrics.best_within_budget``'s rule)."""
    best: str | None = None
    for config in tried[:budget]:
        value = seen.get(config, math.nan)
        if math.isfinite(value) and (best is None or value < seen[best]):
            best = config
    return best


def contexts(bench: Bench, method: ReplayMethod) -> Iterator[tuple[Context, Mapping[str, float]]]:
    """Each run of ``method`` on ``bench``: its context and the scores it sees."""
    memos: dict[tuple[str, str | None], dict[Any, Any]] = {}
    for (task, family), seen in sorted(bench.seen.items()):
        left_out = dataset_of(task) if bench.leave_out else None
        train = bench.train[family]
        if left_out is not None:
            train = train.loc[[dataset_of(v) != left_out for v in train.index]]
        memo = memos.setdefault((family, left_out), {})
        for seed in range(method.seeds):
            yield Context(task=task, family=family, card=bench.cards[task],
                          pool_ids=bench.pool_ids[family],
                          defaults_id=bench.defaults_ids[family], train_scores=train,
                          train_cards=bench.train_cards, seed=seed,
                          own_scores=bench.test[(task, family)], memo=memo), seen


def replay_records(bench: Bench, methods: Iterable[str],
                   budgets: Sequence[int] = tuple(range(1, MAX_BUDGET + 1))
                   ) -> list[dict[str, Any]]:
    """Result records (the suite's keys that ``sllmbo.eval.ratios`` reads) of every run of
    ``methods`` on ``bench``: the test score of the configuration handed over per budget.
    A held-out-only method is left out of a leave-one-out bench."""
    records = []
    for name in methods:
        method = REPLAY_METHODS[name]
        if method.heldout_only and bench.leave_out:
            continue
        for ctx, seen in contexts(bench, method):
            tried = replay_run(method, ctx, seen, max(budgets))
            test = bench.test[(ctx.task, ctx.family)]
            for b in budgets:
                if method.budget_cap is not None and b > method.budget_cap:
                    break
                best = best_within(tried, seen, b)
                records.append({"task": ctx.task, "family": ctx.family, "method": name,
                                "budget": b, "seed": ctx.seed, "direction": "minimize",
                                "test_score": None if best is None else test[best],
                                "config_id": best, "n_tried": min(b, len(tried))})
    return records


@dataclass(frozen=True)
class Row:
    method: str
    budget: int
    gmr: float
    low: float
    high: float
    harm: float
    worst: float
    n_datasets: int


def summary_rows(records: Sequence[Mapping[str, Any]], methods: Sequence[str],
                 budgets: Sequence[int]) -> list[Row]:
    """GMR (with its bootstrap interval over datasets), harm rate and worst ratio."""
    from sllmbo.eval.ratios import ratio_table, summarize

    rows = []
    for b in budgets:
        table = ratio_table(records, methods, b)
        for m in methods:
            s = summarize(table, m, subtype_of=lambda _task: "all")
            if s is not None:
                rows.append(Row(m, b, s.gmr, s.low, s.high, s.harm, s.worst, s.n_datasets))
    return rows


def suite_gmr(results: Sequence[Mapping[str, Any]], methods: Sequence[str],
              budget: int) -> dict[str, float]:
    """The real suite's GMR per method at ``budget`` (its ``results.json`` records)."""
    from sllmbo.eval.ratios import ratio_table, summarize

    table = ratio_table(results, methods, budget)
    out = {}
    for m in methods:
        s = summarize(table, m, subtype_of=lambda _task: "all")
        if s is not None:
            out[m] = s.gmr
    return out


@dataclass(frozen=True)
class Agreement:
    budget: int
    methods: tuple[str, ...]
    suite: tuple[float, ...]
    replay: tuple[float, ...]
    tau: float
    p_value: float
    #: Method pairs the two order differently.
    discordant: tuple[tuple[str, str], ...]


def rank_agreement(suite: Mapping[str, float], replay: Mapping[str, float],
                   budget: int) -> Agreement:
    """Kendall's tau (scipy) between the suite's and the replay's GMR of the methods both
    have, and the pairs they order differently."""
    from scipy.stats import kendalltau

    names = tuple(m for m in suite if m in replay)
    a = np.array([suite[m] for m in names])
    b = np.array([replay[m] for m in names])
    result = kendalltau(a, b)
    discordant = tuple((names[i], names[j]) for i in range(len(names))
                       for j in range(i + 1, len(names))
                       if (a[i] - a[j]) * (b[i] - b[j]) < 0)
    return Agreement(budget, names, tuple(map(float, a)), tuple(map(float, b)),
                     float(result.statistic), float(result.pvalue), discordant)



# -- the real suite's runs, to check that a replay tries what the suite tried -------------

def stored_runs(store: Path, methods: Iterable[str]) -> list[dict[str, Any]]:
    """The finished runs of ``methods`` in an evaluation's ``eval.sqlite``, opened read-only
    (the committed file is never written)."""
    import json
    import sqlite3

    wanted = set(methods)
    with sqlite3.connect(f"file:{store}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT key, value FROM runs WHERE key LIKE 'eval:%'").fetchall()
    runs = []
    for key, value in rows:
        parts = key.split(":")
        if len(parts) == 5 and parts[3] in wanted:
            runs.append(json.loads(value))
    return sorted(runs, key=lambda r: r["key"])


def config_id(params: Mapping[str, Any], configs: Mapping[str, Mapping[str, Any]]
              ) -> str | None:
    """The pool id whose configuration ``params`` is (values equal to 1e-9 relative)."""
    for cid, config in configs.items():
        if config.keys() == params.keys() and all(
                math.isclose(float(config[k]), float(params[k]), rel_tol=1e-9)
                if isinstance(config[k], (int, float)) else config[k] == params[k]
                for k in config):
            return cid
    return None


def reproduce(bench: Bench, run: Mapping[str, Any],
              configs: Mapping[str, Mapping[str, Any]]) -> tuple[list[str | None], list[str]]:
    """(the ids a stored run tried, the ids its replay tries) over as many trials, the replay
    seeing the run's own CV scores (what its sampler saw)."""
    # the library's own defaults (no argument at all) stand as the pool's defaults entry
    defaults = bench.defaults_ids[run["family"]]
    real = [defaults if not t["params"] else config_id(t["params"], configs)
            for t in run["trials"]]
    seen = {cid: float(t["cv_score"]) for cid, t in zip(real, run["trials"], strict=True)
            if cid is not None}
    key = (run["task"], run["family"])
    method = REPLAY_METHODS[run["method"]]
    view = Bench(bench.name, {key: seen}, {key: bench.test[key]}, bench.cards, bench.train,
                 bench.train_cards, bench.pool_ids, bench.defaults_ids, bench.leave_out)
    ctx, _ = next(contexts(view, method))
    return real, replay_run(method, ctx, seen, len(real))
