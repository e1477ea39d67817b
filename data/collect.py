"""Corpus collection: TPE and random-search studies over the training tasks x model families.

Every (task, family, sampler, seed) is one study in one storage, run by ``sllmbo.tune`` (so
each study carries its task card and resumes like any ``sllmbo tune`` run). Jobs are spread
over worker processes; a killed collection re-runs nothing that finished: a study that holds
its target of completed trials is skipped, a partial one runs only what is missing.
Held-out tasks are refused before anything runs.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.data.splits import refuse_heldout

#: Study names of the corpus: ``corpus:<task>:<family>:<sampler>:s<seed>``.
STUDY_PREFIX = "corpus"
SAMPLERS = ("tpe", "random")


@dataclass(frozen=True)
class CollectJob:
    task: str
    family: str
    sampler: str
    seed: int
    n_trials: int

    @property
    def study_name(self) -> str:
        return f"{STUDY_PREFIX}:{self.task}:{self.family}:{self.sampler}:s{self.seed}"

    @property
    def sampler_seed(self) -> int:
        """The seed ``tune`` gets: replicate ``seed`` mixed with the task, family and sampler.
        One seed for every study would make the random startup configurations (all of a
        random-search study, TPE's first ten) the same on every task, and a corpus whose best
        configurations repeat across tasks teaches a recommender nothing about tasks."""
        import zlib

        key = f"{self.task}:{self.family}:{self.sampler}:{self.seed}".encode()
        return zlib.crc32(key) % (2**31)


@dataclass
class CollectReport:
    """What one ``collect`` call did; ``errors`` maps a study name to its failure message."""

    n_jobs: int = 0
    n_skipped: int = 0
    n_trials_before: int = 0
    n_trials_after: int = 0
    seconds: float = 0.0
    errors: dict[str, str] = field(default_factory=dict)


def plan_jobs(
    tasks: Sequence[str],
    families: Sequence[str],
    trials_per_sampler: dict[str, int],
    seeds: Sequence[int] = (0,),
) -> list[CollectJob]:
    """Every job, held-out tasks refused. Ordered sampler-major, then task, then family, so a
    collection cut short covers every task and family evenly with TPE studies first."""
    from sllmbo.core.families import get_family
    from sllmbo.data import task_names

    known = set(task_names())
    for task in tasks:
        refuse_heldout(task, "collect trials on")
        if task not in known:
            raise SllmboError(f"unknown task '{task}'", hint="`sllmbo tasks --split train`")
    families = [get_family(f).name for f in families]
    for sampler, n in trials_per_sampler.items():
        if sampler not in SAMPLERS:
            raise SllmboError(f"collection samplers are {SAMPLERS}, got '{sampler}'")
        if n < 1:
            raise SllmboError(f"trials per study must be >= 1, got {n} for {sampler}")
    return [
        CollectJob(task, family, sampler, seed, n)
        for seed in seeds
        for sampler, n in trials_per_sampler.items()
        for task in tasks
        for family in families
    ]


def completed_counts(storage_url: str) -> dict[str, int]:
    """Completed trials per corpus study in the storage (0 studies for a new storage)."""
    import optuna
    from optuna.trial import TrialState

    from sllmbo.core.storage import open_storage

    storage = open_storage(storage_url)
    counts: dict[str, int] = {}
    for summary in optuna.get_all_study_summaries(storage, include_best_trial=False):
        if summary.study_name.startswith(STUDY_PREFIX + ":"):
            trials = storage.get_all_trials(summary._study_id, deepcopy=False,
                                            states=(TrialState.COMPLETE,))
            counts[summary.study_name] = len(trials)
    return counts


def run_job(job: CollectJob, storage: str, max_rows: int | None, n_folds: int) -> tuple[int, str | None]:
    """Run one study to its target (in a worker process); (completed trials, error or None)."""
    import warnings

    from sllmbo.tune import LLMOptions, tune

    # Small tasks make the MLP clip its batch size and stop early: expected, not news.
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", message=".*(converge|Stochastic Optimizer).*")
    try:
        result = tune(
            job.task, family=job.family, sampler=job.sampler, n_trials=job.n_trials,
            storage=storage, study_name=job.study_name, seed=job.sampler_seed, n_folds=n_folds,
            max_rows=max_rows, score_test=False, progress=False, llm=LLMOptions(patience=0),
        )
    except SllmboError as err:
        return 0, err.message
    return result.n_complete, None


def export_corpus(storage: str, path: str | Path) -> int:
    """Write the storage's corpus studies to ``path`` (atomically); the number of studies."""
    from sllmbo.data.export import write_export
    from sllmbo.data.trial_logs import read_trial_logs

    return write_export(read_trial_logs(storage, f"{STUDY_PREFIX}:*").studies, path)


def _log_line(job: CollectJob, n_complete: int, error: str | None, finished: int, total: int,
              before: int, elapsed: float) -> str:
    """A progress line for logs: the study, the corpus count and the ETA at this run's pace."""
    rate = (finished - before) / elapsed if elapsed > 0 else 0.0
    eta = f"{(total - finished) / rate / 3600:.1f} h" if rate > 0 else "?"
    status = f"failed: {error}" if error else f"{n_complete} trials"
    return (f"{time.strftime('%H:%M:%S')} {job.study_name}: {status} | corpus "
            f"{finished}/{total} trials, {rate * 3600:.0f}/h, eta {eta}")


def collect(
    jobs: Iterable[CollectJob],
    storage: str,
    *,
    workers: int = 2,
    max_rows: int | None = 2000,
    n_folds: int = 3,
    progress: bool = True,
    export: str | Path | None = None,
    export_every_s: float = 600.0,
) -> CollectReport:
    """Run the jobs that are not finished in ``storage``, ``workers`` processes at a time.

    With ``export``, the corpus studies are also written there as a compact export every
    ``export_every_s`` seconds and at the end, so a long collection checkpoints itself into a
    file that can be committed (and imported by a later session)."""
    import multiprocessing

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if workers < 1:
        raise SllmboError(f"--workers must be >= 1, got {workers}")
    started = time.perf_counter()
    jobs = list(jobs)
    done = completed_counts(storage)
    todo = [j for j in jobs if done.get(j.study_name, 0) < j.n_trials]
    report = CollectReport(n_jobs=len(jobs), n_skipped=len(jobs) - len(todo))
    total = sum(j.n_trials for j in jobs)
    report.n_trials_before = sum(min(done.get(j.study_name, 0), j.n_trials) for j in jobs)
    finished = report.n_trials_before
    columns: list[Any] = [TextColumn("[bold]collect"), BarColumn(), MofNCompleteColumn(),
                          TextColumn("trials"), TimeElapsedColumn(), TextColumn("eta"),
                          TimeRemainingColumn(), TextColumn("{task.fields[last]}")]
    with Progress(*columns, disable=not progress) as bar, ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        bar_id = bar.add_task("collect", total=total, completed=finished, last="")
        pending = {pool.submit(run_job, j, storage, max_rows, n_folds): j for j in todo}
        last_export = time.perf_counter()
        while pending:
            ready, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in ready:
                job = pending.pop(future)
                n_complete, error = future.result()
                if error is not None:
                    report.errors[job.study_name] = error
                finished += max(0, min(n_complete, job.n_trials) - done.get(job.study_name, 0))
                bar.update(bar_id, completed=finished, last=job.study_name)
                if progress and not bar.console.is_terminal:  # a log file: one line a study
                    print(_log_line(job, n_complete, error, finished, total,
                                    report.n_trials_before, time.perf_counter() - started),
                          flush=True)
            if export is not None and time.perf_counter() - last_export >= export_every_s:
                export_corpus(storage, export)
                last_export = time.perf_counter()
    if export is not None:
        export_corpus(storage, export)
    report.n_trials_after = finished
    report.seconds = round(time.perf_counter() - started, 1)
    return report
