"""The corpus portfolio's cross-evaluation: every candidate scored by K-fold CV on row-capped
training tasks, each score cached so that a killed build re-runs nothing it finished.

Step 2 of the build (:mod:`sllmbo.data.corpus_portfolio`). It is not the matrix's engine
(:mod:`sllmbo.data.matrix`, Optuna-scheduled cells of the committed pools on every task
variant, repeated CV on the full training rows): the committed ``eval/portfolios`` were
scored here, by one K-fold CV of the tuning objective (``sllmbo.core.objective``) on a fixed
``--max-rows`` subsample, with a JSON-lines cache keyed by that protocol, so that a rebuild
reproduces them and resumes from their cache.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import FAMILIES
from sllmbo.data.corpus_candidates import Candidate
from sllmbo.data.splits import refuse_heldout

#: Evaluation tasks per family when none is given: an MLP candidate costs 4-20x a tree
#: model's (7.5 s per 3-fold CV on 500 rows in the first build, against 0.4 s for LightGBM,
#: 1.1 s for XGBoost and 1.8 s for the random forest), so it gets half the tasks.
DEFAULT_MAX_TASKS: dict[str | None, int] = {None: 12, "mlp": 6}


@dataclass(frozen=True)
class PortfolioSettings:
    """How a portfolio is built. Counts are per family; ``max_rows``, ``n_folds`` and ``seed``
    are the cross-evaluation's protocol (and key its cache)."""

    candidates: int = 30
    #: None: the family's default (``DEFAULT_MAX_TASKS``)
    max_tasks: int | None = None
    size: int = 30
    top_k: int = 1
    max_rows: int = 500
    n_folds: int = 3
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.candidates, self.max_tasks or 1, self.size, self.top_k) < 1:
            raise SllmboError("--candidates, --max-tasks, --size and --top-k must be >= 1")
        if self.max_rows < 20:
            raise SllmboError(f"--max-rows must be >= 20, got {self.max_rows}")
        if self.n_folds < 2:
            raise SllmboError(f"--n-folds must be >= 2, got {self.n_folds}")

    def for_family(self, family: str) -> PortfolioSettings:
        """These settings with the family's default number of evaluation tasks filled in."""
        if self.max_tasks is not None:
            return self
        return replace(self, max_tasks=DEFAULT_MAX_TASKS.get(family, DEFAULT_MAX_TASKS[None]))


@cache
def _capped_task(name: str, max_rows: int) -> Any:
    from sllmbo.data import load_task

    refuse_heldout(name, "build a portfolio on")
    return load_task(name).subsample(max_rows)


def evaluate_cell(task: str, family: str, config: dict[str, Any], max_rows: int,
                  n_folds: int, seed: int) -> dict[str, Any]:
    """One CV score of ``config`` on the row-capped ``task``; a failed fit is recorded, not
    raised. Top-level so that worker processes can run it."""
    import warnings

    from sllmbo.core.objective import EvalSettings, _fit_errors, cross_validate

    capped = _capped_task(task, max_rows)
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Small tasks make the MLP clip its batch size and stop early: expected, not news.
        warnings.filterwarnings("ignore", category=UserWarning)
        warnings.filterwarnings("ignore", message=".*(converge|Stochastic Optimizer).*")
        try:
            result = cross_validate(capped, FAMILIES[family], config,
                                    EvalSettings(n_folds=n_folds, seed=seed, n_jobs=1))
        except _fit_errors() as err:
            return {"score": None, "seconds": round(time.perf_counter() - started, 3),
                    "error": f"{type(err).__name__}: {str(err)[:200]}"}
    score = result.mean if math.isfinite(result.mean) else None
    return {"score": score, "seconds": round(result.seconds, 3),
            "error": None if score is not None else "non-finite score"}


class ScoreCache:
    """CV scores of (task, family, config, protocol), one JSON line each, appended as they come
    (a line cut off by a kill is ignored on the next read)."""

    def __init__(self, folder: str | Path | None, family: str) -> None:
        self.path = None if folder is None else Path(folder) / f"{family}.jsonl"
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path is not None and self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                    self.entries[entry["key"]] = entry
                except (json.JSONDecodeError, KeyError, TypeError):
                    continue

    @staticmethod
    def key(task: str, family: str, config: Mapping[str, Any], settings: PortfolioSettings) -> str:
        text = json.dumps({"task": task, "family": family, "config": dict(config),
                           "max_rows": settings.max_rows, "n_folds": settings.n_folds,
                           "seed": settings.seed}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def get(self, key: str) -> dict[str, Any] | None:
        return self.entries.get(key)

    def put(self, key: str, task: str, config: Mapping[str, Any], result: dict[str, Any]) -> None:
        entry = {"key": key, "task": task, "config": dict(config), **result}
        self.entries[key] = entry
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as handle:
                handle.write(json.dumps(entry) + "\n")


def cross_evaluate(candidates: Sequence[Candidate], tasks: Sequence[str], family: str,
                   settings: PortfolioSettings, cache_dir: str | Path | None,
                   workers: int = 1, progress: Any = None) -> tuple[np.ndarray, dict[str, Any]]:
    """The (candidates x tasks) matrix of CV scores (NaN: failed fit) and run statistics.
    ``progress``: a ``rich.progress.Progress`` to report to, or None."""
    store = ScoreCache(cache_dir, family)
    scores = np.full((len(candidates), len(tasks)), np.nan)
    todo: list[tuple[int, int, str]] = []
    stats = {"cells": scores.size, "evaluated": 0, "cached": 0, "failed": 0, "fit_seconds": 0.0}
    bar = None if progress is None else progress.add_task(family, total=scores.size)

    def record(i: int, j: int, result: dict[str, Any]) -> None:
        if result.get("score") is not None:
            scores[i, j] = float(result["score"])
        else:
            stats["failed"] += 1
        stats["fit_seconds"] += float(result.get("seconds") or 0.0)
        if bar is not None:
            progress.advance(bar)

    for i, cand in enumerate(candidates):
        for j, task in enumerate(tasks):
            key = ScoreCache.key(task, family, cand.config, settings)
            hit = store.get(key)
            if hit is not None:
                stats["cached"] += 1
                record(i, j, hit)
            else:
                todo.append((i, j, key))
    args = [(tasks[j], family, candidates[i].config, settings.max_rows, settings.n_folds,
             settings.seed) for i, j, _ in todo]
    if workers <= 1:
        results: Iterable[dict[str, Any]] = (evaluate_cell(*a) for a in args)
        for (i, j, key), result in zip(todo, results, strict=True):
            store.put(key, tasks[j], candidates[i].config, result)
            stats["evaluated"] += 1
            record(i, j, result)
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=workers) as pool:
            futures = {pool.submit(evaluate_cell, *a): cell for a, cell in zip(args, todo, strict=True)}
            for future in as_completed(futures):
                i, j, key = futures[future]
                result = future.result()
                store.put(key, tasks[j], candidates[i].config, result)
                stats["evaluated"] += 1
                record(i, j, result)
    stats["fit_seconds"] = round(stats["fit_seconds"], 1)
    return scores, stats
