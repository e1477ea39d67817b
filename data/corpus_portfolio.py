"""Building the ``portfolio`` baseline: an ordered list of configurations per model family,
learned from the training tasks' corpus studies with no LLM, tried in order by ``sllmbo eval``.

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
   (``sllmbo.core.objective.cross_validate``, the tuning objective: RMSE or log-loss) on
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
used, settings, command, date). The evaluation reads them (``sllmbo.eval.portfolio``'s
``load_portfolio(family)`` returns the configurations); this module only builds them::

    python -m sllmbo.data.corpus_portfolio --corpus data/corpus/trials.jsonl.gz  # eval/portfolios
    make portfolio

The committed portfolios were built by the same code when it lived in ``eval/portfolio.py``;
their provenance records that command (``python -m sllmbo.eval.portfolio ...``).

The steps live in one module each: the candidates and the stratified order in
:mod:`sllmbo.data.corpus_candidates`, the cross-evaluation and its cache in
:mod:`sllmbo.data.corpus_crosseval`, regret and the greedy selection in
:mod:`sllmbo.data.pool_select` (the matrix's portfolio uses the same two functions).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import shutil
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import FAMILIES, get_family
from sllmbo.data.corpus_candidates import (
    Corpus,
    config_key,
    corpus_candidates,
    read_corpus,
    select_candidates,
    stratified_sample,
)
from sllmbo.data.corpus_crosseval import DEFAULT_MAX_TASKS, PortfolioSettings, cross_evaluate
from sllmbo.data.pool_select import greedy_portfolio, regret_matrix
from sllmbo.data.splits import refuse_heldout

#: The file format ``sllmbo.eval.portfolio`` reads.
FORMAT = "sllmbo-portfolio/1"
#: Where the committed portfolios live (``sllmbo.eval.portfolio.PORTFOLIO_DIR``), named by
#: path because the data stage does not import the evaluation: ``eval/`` beside ``data/`` in
#: the checkout, and ``sllmbo/eval`` beside ``sllmbo/data`` when installed.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "eval" / "portfolios"
DEFAULT_CORPUS = "data/corpus/trials.jsonl.gz"
DEFAULT_CACHE = "runs/portfolio-cache"
#: The module the command line runs, recorded in each portfolio's provenance.
PROG = "python -m sllmbo.data.corpus_portfolio"
METHOD = (
    "greedy forward selection over a cross-evaluation: candidates = the best corpus "
    "configuration of each training task (distinct ones, tasks in a seeded stratified "
    "order); each scored by K-fold CV on training tasks "
    "disjoint from its source tasks; per-task regret (score - best) / (median - best) clipped "
    "to [0, 1]; each step adds the candidate minimizing the mean over tasks of the best "
    "regret selected so far"
)


# -- building and writing ----------------------------------------------------------------


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


# -- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Build the portfolio baseline (ordered configurations per model family) "
        "from the training tasks of the trial-log corpus.")
    parser.add_argument("--corpus", default=DEFAULT_CORPUS,
                        help="trial logs: the corpus export or any Optuna storage")
    parser.add_argument("--out", default=str(DEFAULT_OUT),
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
    command = shlex.join([*PROG.split(), *(sys.argv[1:] if argv is None else argv)])
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
