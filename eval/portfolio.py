"""The ``portfolio`` baseline: an ordered list of configurations per model family, learned from
the training tasks' corpus studies with no LLM, tried in order by ``sllmbo eval``.

Method (a greedy portfolio, the zero-shot baseline of the AutoML literature: Auto-sklearn 2.0's
portfolio of Feurer et al., the greedy "defaults" of Pfisterer et al.):

1. **Candidates.** For each training task with corpus studies of the family, the best
   completed configuration over its studies (``--top-k`` best distinct ones, if asked), kept
   only if it lies in the family's default space. The tasks are walked in a seeded order
   stratified by task type, and each new configuration is taken until ``--candidates``
   distinct ones are in hand (tasks often share a best configuration: TPE's first trials are
   the same random draws on every task).
   Studies of held-out tasks (by study name or by their card) are refused and counted, as
   the instruction-data builder does; a candidate from a held-out task cannot exist.
2. **Cross-evaluation.** Every candidate is scored by K-fold cross-validation
   (``sllmbo.objective.cross_validate``, the tuning objective: RMSE or log-loss) on
   ``--max-tasks`` training tasks, drawn stratified by task type from the registry's training
   split and *disjoint from every task a candidate is a corpus best of*, so a candidate is
   never scored on a task it was tuned on (its regret there would be near zero by construction, and the
   greedy order would only reward self-matches). Tasks are row-capped (``--max-rows``) and
   use 3 folds by default, like the corpus. Each score is cached in a JSON-lines file per
   family under ``--cache``: a killed build re-runs nothing it finished.
3. **Regret.** Per task, a candidate's normalized regret is ``(score - best) / (median -
   best)`` clipped to ``[0, 1]``: 0 for the best candidate on that task, 1 for the median
   candidate and anything worse, and 1 for a fit that failed. The median (not the worst)
   anchors the scale because one diverged fit (an MLP's log-loss of 20 beside 0.3) would
   otherwise squash every other difference on that task to nothing.
4. **Greedy forward selection.** Start empty; repeatedly add the candidate that minimizes the
   mean over tasks of the best regret among the configurations selected so far (ties: the
   lower mean regret of the candidate alone, then the earlier candidate), up to ``--size``
   configurations (30, the largest budget of the default eval suite). Once every task has its
   best candidate selected, the rest follow in order of mean regret.

Why a real cross-evaluation rather than a surrogate: it measures what the portfolio is used
for (a fixed configuration on a new task) with no model error, and at the default settings
(30 candidates x 12 tasks, 6 for the slower MLP, x 4 families, 500 rows, 3 folds) it took
42 minutes on two CPU cores shared with the corpus collection (LightGBM 2.3, XGBoost 6.4,
random forest 10.6, MLP 22.6 minutes); a rerun reuses every cached score. Deterministic under ``--seed``: the same corpus
gives the same files (bar the date and the timings).

Output: ``eval/portfolios/<family>.json``, the ordered configurations with where each came
from, its cross-evaluation scores, and the provenance (corpus hash and trial counts, tasks
used, settings, command, date). ``load_portfolio(family)`` returns the configurations::

    python -m sllmbo.eval.portfolio --corpus data/corpus/trials.jsonl.gz --out eval/portfolios
    make portfolio
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import shlex
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.data.pool_select import greedy_portfolio, regret_matrix
from sllmbo.data.splits import heldout_match, refuse_heldout
from sllmbo.data.trial_logs import StudyLog, read_trial_logs
from sllmbo.errors import SllmboError
from sllmbo.families import FAMILIES, get_family

FORMAT = "sllmbo-portfolio/1"
#: Where the committed portfolios live (one JSON per family).
PORTFOLIO_DIR = Path(__file__).resolve().parent / "portfolios"
DEFAULT_CORPUS = "data/corpus/trials.jsonl.gz"
DEFAULT_CACHE = "runs/portfolio-cache"
#: Evaluation tasks per family when none is given: an MLP candidate costs 4-20x a tree
#: model's (7.5 s per 3-fold CV on 500 rows in the first build, against 0.4 s for LightGBM,
#: 1.1 s for XGBoost and 1.8 s for the random forest), so it gets half the tasks.
DEFAULT_MAX_TASKS: dict[str | None, int] = {None: 12, "mlp": 6}
METHOD = (
    "greedy forward selection over a cross-evaluation: candidates = the best corpus "
    "configuration of each training task (distinct ones, tasks in a seeded stratified "
    "order); each scored by K-fold CV on training tasks "
    "disjoint from its source tasks; per-task regret (score - best) / (median - best) clipped "
    "to [0, 1]; each step adds the candidate minimizing the mean over tasks of the best "
    "regret selected so far"
)


@dataclass(frozen=True)
class PortfolioSettings:
    """How a portfolio is built. Counts are per family."""

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


@dataclass(frozen=True)
class Candidate:
    """A corpus configuration: the best (or k-th best) of one training task and family."""

    config: dict[str, Any]
    task: str
    task_type: str
    study: str
    trial: int
    value: float


@dataclass
class Corpus:
    """One snapshot of the trial logs (the corpus is rewritten while it is collected)."""

    path: str
    sha256: str
    studies: list[StudyLog]


@dataclass
class CandidatePool:
    #: source task -> its candidates, best first
    by_task: dict[str, list[Candidate]] = field(default_factory=dict)
    #: held-out task -> studies refused
    heldout_refused: dict[str, int] = field(default_factory=dict)
    n_studies: int = 0
    n_trials: int = 0
    n_outside_space: int = 0


# -- reading the corpus -------------------------------------------------------------------


def read_corpus(path: str | Path) -> Corpus:
    """Read a snapshot of ``path`` (any storage ``read_trial_logs`` reads). An export file is
    copied first, so its hash and its studies are the same bytes even while it is rewritten."""
    path = Path(path)
    if path.is_file():
        data = path.read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_bytes(data)
            studies = read_trial_logs(copy).studies
        return Corpus(str(path), hashlib.sha256(data).hexdigest(), studies)
    return Corpus(str(path), "", read_trial_logs(str(path)).studies)


def config_key(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def corpus_candidates(studies: Iterable[StudyLog], family: str, top_k: int = 1) -> CandidatePool:
    """The ``top_k`` best distinct default-space configurations of ``family`` per training task.

    Studies of held-out tasks are refused (counted in ``heldout_refused``), as are studies
    without a task card or without completed trials (``select_studies`` decides)."""
    from sllmbo.data.instructions import select_studies

    name = get_family(family).name
    selection = select_studies(studies, rules=[])
    pool = CandidatePool(heldout_refused=dict(selection.heldout_refused))
    ranked: dict[str, list[tuple[float, str, int, dict[str, Any], str]]] = defaultdict(list)
    for usable in selection.usable:
        card, log = usable.card, usable.log
        try:
            if get_family(card.model_family).name != name:
                continue
        except SllmboError:  # a family this project does not know
            continue
        if heldout_match(card.task) or heldout_match(log.name):  # guards the guard
            raise AssertionError(f"held-out study {log.name} reached the portfolio")
        space = FAMILIES[name].default_space(card.task_type)
        sign = 1.0 if log.direction == "minimize" else -1.0
        pool.n_studies += 1
        for trial in log.complete:
            pool.n_trials += 1
            if not space.contains(trial.params):
                pool.n_outside_space += 1
                continue
            config = space.validate(trial.params)
            ranked[card.task].append((sign * float(trial.value), log.name, trial.number,
                                      config, card.task_type))
    for task in sorted(ranked):
        seen: set[str] = set()
        chosen: list[Candidate] = []
        for key, study, number, config, task_type in sorted(ranked[task],
                                                             key=lambda r: r[:3]):
            if config_key(config) in seen:
                continue
            seen.add(config_key(config))
            chosen.append(Candidate(config, task, task_type, study, number, key))
            if len(chosen) == top_k:
                break
        pool.by_task[task] = chosen
    return pool


# -- sampling, regret and greedy selection ------------------------------------------------


def stratified_order(types: Mapping[str, str], seed: int) -> list[str]:
    """Every name in ``types`` (name -> task type) in a seeded order whose every prefix holds
    the types in about their overall shares: each type is shuffled, its i-th member of n
    placed at (i + 1/2) / n, and the places are merged."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(types):
        groups[types[name]].append(name)
    rng = random.Random(seed)
    placed: list[tuple[float, str, str]] = []
    for kind in sorted(groups):
        members = rng.sample(groups[kind], len(groups[kind]))
        placed += [((i + 0.5) / len(members), kind, name) for i, name in enumerate(members)]
    return [name for _, _, name in sorted(placed)]


def stratified_sample(types: Mapping[str, str], n: int, seed: int) -> list[str]:
    """The first ``n`` of ``stratified_order``, sorted (all names if ``n`` covers them)."""
    return sorted(stratified_order(types, seed)[:n])


def select_candidates(pool: CandidatePool, n: int, seed: int) -> tuple[list[Candidate],
                                                                       dict[str, list[str]]]:
    """Up to ``n`` distinct configurations, walking the source tasks in ``stratified_order``.

    Several tasks often share their best configuration (TPE's first trials are random draws
    under one seed, the same on every task), so a configuration is taken once; the second
    value maps each chosen configuration to every task it is a candidate of."""
    types = {task: cands[0].task_type for task, cands in pool.by_task.items()}
    chosen: list[Candidate] = []
    keys: set[str] = set()
    for task in stratified_order(types, seed):
        for cand in pool.by_task[task]:
            key = config_key(cand.config)
            if key not in keys and len(chosen) < n:
                keys.add(key)
                chosen.append(cand)
    sources: dict[str, list[str]] = {config_key(c.config): [] for c in chosen}
    for task in sorted(pool.by_task):
        for cand in pool.by_task[task]:
            key = config_key(cand.config)
            if key in sources and task not in sources[key]:
                sources[key].append(task)
    return chosen, sources


# -- cross-evaluation ----------------------------------------------------------------------


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

    from sllmbo.objective import EvalSettings, _fit_errors, cross_validate

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


# -- building and loading ------------------------------------------------------------------


def _training_tasks() -> dict[str, str]:
    from sllmbo.data import list_tasks

    return {info.name: info.task_type for info in list_tasks("train")}


def _round(value: float) -> float | None:
    return None if not math.isfinite(value) else float(f"{value:.6g}")


def build_portfolio(
    corpus: str | Path | Corpus,
    family: str,
    *,
    settings: PortfolioSettings = PortfolioSettings(),
    tasks: Sequence[str] | None = None,
    cache_dir: str | Path | None = DEFAULT_CACHE,
    workers: int = 1,
    progress: Any = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Build the portfolio record of ``family`` (see the module docstring for the method).

    ``tasks``: the evaluation tasks (default: ``settings.max_tasks`` training tasks drawn
    under the seed, none of them a candidate's source). A held-out task raises ``TaskError``.
    """
    name = get_family(family).name
    settings = settings.for_family(name)
    assert settings.max_tasks is not None
    snapshot = corpus if isinstance(corpus, Corpus) else read_corpus(corpus)
    pool = corpus_candidates(snapshot.studies, name, settings.top_k)
    if not pool.by_task:
        raise SllmboError(
            f"the corpus {snapshot.path} holds no usable {name} study of a training task",
            hint="collect one with `make corpus` (or `sllmbo data collect`)")
    training = _training_tasks()
    for task in pool.by_task:
        refuse_heldout(task, "build a portfolio from")
    candidates, sources_of = select_candidates(pool, settings.candidates, settings.seed)
    sources = sorted({t for tasks_of in sources_of.values() for t in tasks_of})
    if tasks is None:
        # no candidate is scored on a task it is a corpus best of
        others = {t: kind for t, kind in training.items() if t not in set(sources)}
        if not others:
            raise SllmboError("no training task is left to evaluate on: every one is a "
                              "candidate's source", hint="lower --candidates")
        eval_tasks = stratified_sample(others, settings.max_tasks, settings.seed + 1)
    else:
        eval_tasks = list(dict.fromkeys(tasks))
    for task in eval_tasks:
        refuse_heldout(task, "build a portfolio on")

    started = time.perf_counter()
    scores, stats = cross_evaluate(candidates, eval_tasks, name, settings, cache_dir,
                                   workers, progress)
    regret = regret_matrix(scores)
    order, curve = greedy_portfolio(regret, settings.size)
    alone = regret.mean(axis=1)
    entries = [
        {
            "rank": rank,
            "config": candidates[row].config,
            "source_task": candidates[row].task,
            "source_tasks": sources_of[config_key(candidates[row].config)],
            "source_study": candidates[row].study,
            "source_trial": candidates[row].trial,
            "source_cv_score": _round(candidates[row].value),
            "mean_regret": round(float(alone[row]), 6),
            "portfolio_regret": round(curve[rank - 1], 6),
            "cv_scores": [_round(v) for v in scores[row]],
        }
        for rank, row in enumerate(order, start=1)
    ]
    provenance = {
        "method": METHOD,
        "command": command,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "corpus": snapshot.path,
        "corpus_sha256": snapshot.sha256,
        "corpus_studies": len(snapshot.studies),
        "corpus_trials": sum(len(s.complete) for s in snapshot.studies),
        "family_studies_used": pool.n_studies,
        "family_trials_used": pool.n_trials,
        "trials_outside_default_space": pool.n_outside_space,
        "heldout_studies_refused": pool.heldout_refused,
        "training_tasks_with_studies": len(pool.by_task),
        "candidates": len(candidates),
        "candidate_tasks": sources,
        "evaluation_tasks": eval_tasks,
        "evaluation_task_types": {t: training.get(t, "?") for t in eval_tasks},
        "settings": asdict(settings),
        "cells": stats["cells"],
        "evaluated_now": stats["evaluated"],
        "from_cache": stats["cached"],
        "failed_fits": stats["failed"],
        "fit_seconds": stats["fit_seconds"],
        "wall_seconds": round(time.perf_counter() - started, 1),
    }
    return {"format": FORMAT, "family": name, "portfolio": entries, "provenance": provenance}


def write_portfolio(record: Mapping[str, Any], out: str | Path) -> Path:
    """Write ``record`` to ``out/<family>.json`` atomically; the path written."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{record['family']}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    shutil.move(str(tmp), path)
    return path


def read_portfolio(family: str, folder: str | Path | None = None) -> dict[str, Any]:
    """The whole record of ``family``'s portfolio (configurations, scores, provenance)."""
    name = get_family(family).name
    path = Path(folder or PORTFOLIO_DIR) / f"{name}.json"
    if not path.is_file():
        raise SllmboError(f"no portfolio for {name} at {path}",
                          hint="build it with `make portfolio`")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SllmboError(f"{path} is not valid JSON: {err}",
                          hint="rebuild it with `make portfolio`") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or \
            record.get("family") != name or not isinstance(record.get("portfolio"), list):
        raise SllmboError(f"{path} is not a {FORMAT} portfolio of {name}",
                          hint="rebuild it with `make portfolio`")
    return record


def load_portfolio(family: str, folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The ordered configurations of ``family``'s committed portfolio (first: try first),
    each checked against the family's default space."""
    record = read_portfolio(family, folder)
    space = FAMILIES[record["family"]].default_space()
    return [space.validate(entry["config"]) for entry in record["portfolio"]]


# -- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sllmbo.eval.portfolio",
        description="Build the portfolio baseline (ordered configurations per model family) "
        "from the training tasks of the trial-log corpus.")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="trial logs: the corpus export or any Optuna storage")
    parser.add_argument("--out", default=str(PORTFOLIO_DIR),
                        help="folder of the <family>.json files (default: the committed ones)")
    parser.add_argument("--families", nargs="+", default=list(FAMILIES),
                        help="families (space- or comma-separated); default: all")
    defaults = PortfolioSettings()
    parser.add_argument("--candidates", type=int, default=defaults.candidates,
                        help="distinct candidate configurations per family")
    parser.add_argument("--max-tasks", type=int, default=None,
                        help="training tasks each candidate is cross-evaluated on (default: "
                        f"{DEFAULT_MAX_TASKS[None]}; {DEFAULT_MAX_TASKS['mlp']} for the MLP, "
                        "whose fits are several times slower)")
    parser.add_argument("--size", type=int, default=defaults.size,
                        help="configurations in each portfolio")
    parser.add_argument("--top-k", type=int, default=defaults.top_k,
                        help="best distinct configurations taken per source task")
    parser.add_argument("--max-rows", type=int, default=defaults.max_rows,
                        help="training rows per evaluation task (a fixed subsample)")
    parser.add_argument("--n-folds", type=int, default=defaults.n_folds)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--cache", default=DEFAULT_CACHE,
                        help="folder of the score cache (a rerun resumes from it)")
    parser.add_argument("--workers", type=int, default=1, help="parallel evaluations")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    command = shlex.join(["python", "-m", "sllmbo.eval.portfolio",
                          *(sys.argv[1:] if argv is None else argv)])
    try:
        families = [get_family(f).name for part in args.families for f in part.split(",") if f]
        settings = PortfolioSettings(args.candidates, args.max_tasks, args.size, args.top_k,
                                     args.max_rows, args.n_folds, args.seed)
        snapshot = read_corpus(args.corpus)
        return _run(snapshot, families, settings, args, command)
    except SllmboError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code


def _run(snapshot: Corpus, families: list[str], settings: PortfolioSettings,
         args: argparse.Namespace, command: str) -> int:
    import optuna
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    columns = (TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())
    started = time.perf_counter()
    with Progress(*columns, disable=args.no_progress) as progress:
        for family in families:
            record = build_portfolio(snapshot, family, settings=settings, cache_dir=args.cache,
                                     workers=args.workers, progress=progress, command=command)
            path = write_portfolio(record, args.out)
            prov = record["provenance"]
            progress.console.print(
                f"{family}: {len(record['portfolio'])} configurations -> {path} "
                f"({prov['evaluated_now']} evaluated, {prov['from_cache']} cached, "
                f"{prov['failed_fits']} failed; {prov['wall_seconds']:.0f} s; "
                f"mean best regret {record['portfolio'][0]['portfolio_regret']:.3f} at 1, "
                f"{record['portfolio'][-1]['portfolio_regret']:.3f} at "
                f"{len(record['portfolio'])})")
    print(f"done in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
