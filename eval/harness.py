"""``sllmbo eval``: plan the runs of a suite, run them (resumably, in parallel), and write
``results.json``, ``report.md`` and the plots into the output folder.

The folder is the evaluation: ``studies.db`` (the Optuna studies of every run), ``eval.sqlite``
(cached scores, finished runs, stored LLM answers), ``plan.json`` (what was asked), and the
results. Run the same command again and only unfinished runs run.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.eval.methods import get as get_method
from sllmbo.eval.metrics import normalized_regret, score_range
from sllmbo.eval.plan import EvalPlan
from sllmbo.eval.runs import (
    RunContext,
    RunJob,
    RunLog,
    RunSettings,
    TaskRef,
    close_backends,
    load_eval_task,
)
from sllmbo.eval.store import EvalStore
from sllmbo.eval.suites import Suite


def plan_eval(suite: Suite, tasks: Sequence[TaskRef] | None, out_dir: str | Path,
              llm: Any, adapter: str | None, methods_given: bool,
              report_methods: Sequence[str] = ()) -> EvalPlan:
    """Resolve the suite's tasks and methods; refuse what would break held-out discipline.

    Adapter methods need an adapter: without one they are left out (said in the report),
    or, when the user named them with ``--methods``, the evaluation stops. The results cover
    ``report_methods`` (default: the methods run), each with whatever runs of it finished.
    """
    from sllmbo.data.splits import HELDOUT

    if tasks:
        refs = tuple(tasks)
    elif suite.heldout_variants and suite.tasks is None:
        from sllmbo.data.registry import plan_variants

        refs = tuple(TaskRef(name=v.name) for v in plan_variants("heldout") if v.is_full)
    else:
        refs = tuple(TaskRef(name=n) for n in (suite.tasks or HELDOUT))
    if suite.name in ("default", "zero-shot") and not tasks:
        _check_all_heldout(refs)
    adapter = _resolve_eval_adapter(adapter, llm)
    skipped: list[str] = []
    wanted_adapter = [m for m in suite.methods if get_method(m).needs_adapter]
    if wanted_adapter and adapter is None:
        if methods_given:
            raise SllmboError(
                f"methods {', '.join(wanted_adapter)} run the fine-tuned adapter; none was given",
                hint="pass --adapter DIR, or use the -base methods for the base model",
            )
        skipped = wanted_adapter
    excluded: list[tuple[str, str]] = []
    if adapter is not None and suite.heldout_variants:
        # An adapter older than the split may have trained on datasets held out since: its
        # methods skip those (said in the report); every other method runs on all of them.
        clash = adapter_clashes(adapter, [r.label for r in refs])
        excluded = [(t, m) for t in clash for m in wanted_adapter]
    elif adapter is not None:
        check_adapter_heldout(adapter, [r.label for r in refs])
    caps = dict(suite.budget_caps)  # the suite's, then the methods' own
    caps.update({m: suite.budget_of(m) for m in suite.methods
                 if m not in caps and get_method(m).budget_cap is not None})
    settings = RunSettings(out_dir=str(out_dir), max_budget=suite.max_budget,
                           n_folds=suite.n_folds, max_rows=suite.max_rows,
                           protocol=suite.protocol, llm=llm, adapter=adapter,
                           portfolio_source=suite.portfolio_source,
                           budget_caps=tuple(sorted(caps.items())))
    if adapter is None:
        report_methods = [m for m in report_methods if not get_method(m).needs_adapter]
    return EvalPlan(suite, refs, settings, tuple(skipped), tuple(report_methods),
                    tuple(excluded))


def _resolve_eval_adapter(adapter: str | None, llm: Any) -> str | None:
    """The adapter folder the adapter methods run ("default": the shipped one, with the
    embedded model); None when there is none (those methods are then left out)."""
    if llm.backend == "openai":
        return None if adapter in (None, "default", "none") else adapter
    from sllmbo.core.home import resolve_model
    from sllmbo.inference.models import resolve_adapter

    if adapter in (None, "default", "none"):
        model_path = resolve_model(llm.model_path) if adapter == "default" else None
        path = resolve_adapter(adapter, model_path=model_path)
        return str(path) if path is not None else None
    return str(resolve_adapter(adapter))


def _check_all_heldout(refs: Iterable[TaskRef]) -> None:
    from sllmbo.data.splits import split_of

    trained = [r.label for r in refs if r.name is None or split_of(r.name) != "heldout"]
    if trained:
        raise SllmboError(f"the default suite runs held-out tasks only; got {trained}")


def adapter_clashes(adapter: str | Path, tasks: Sequence[str]) -> list[str]:
    """The ``tasks`` whose data (or a variant, duplicate or alias of it) the adapter's
    training data holds, by its data card; refuses an adapter without one."""
    from sllmbo.data.splits import heldout_match

    card_path = Path(adapter) / "data_card.json"
    if not card_path.is_file():
        raise SllmboError(
            f"adapter {adapter} has no data_card.json: cannot check it never trained on the "
            "evaluated tasks",
            hint="adapters written by `sllmbo train` carry the data card of their training data",
        )
    card = json.loads(card_path.read_text())
    trained = {t for names in card.get("tasks", {}).values() for t in names}
    trained_keys = {heldout_match(t) or t.split("@", 1)[0] for t in trained}
    return sorted(t for t in tasks
                  if t in trained or (heldout_match(t) or t.split("@", 1)[0]) in trained_keys)


def check_adapter_heldout(adapter: str | Path, tasks: Sequence[str]) -> None:
    """Stop when the adapter's training data (its data card) holds a task being evaluated."""
    clash = adapter_clashes(adapter, tasks)
    if clash:
        raise SllmboError(
            f"adapter {adapter} was trained on data from {', '.join(clash)}, which this "
            "evaluation scores: its results would not be held out",
            hint="evaluate on held-out tasks (`sllmbo tasks --split heldout`) or retrain "
            "without them",
        )


def run_eval(plan: EvalPlan, workers: int = 1, progress: bool = True,
             run: bool = True, rerun: bool = False) -> list[dict[str, Any]]:
    """Run every unfinished job, then write the results; returns the result records.

    ``run=False`` runs nothing: the results and report cover the runs finished so far (a
    long evaluation reported while it is still under way, or after a kill). ``rerun=True``
    first forgets the plan's finished runs, their stored LLM answers and their studies, so
    they run again: after a change to how a method runs."""
    out = Path(plan.settings.out_dir)
    if run:
        check_user_data(plan)
        check_llm_server(plan)
    out.mkdir(parents=True, exist_ok=True)
    _write_plan(out, plan)
    if rerun and run:
        forget_runs(plan)
    logs = _run_jobs(plan.jobs, plan.settings, workers, progress, run=run)
    if plan.report_jobs != plan.jobs:
        logs = _run_jobs(plan.report_jobs, plan.settings, workers, progress=False, run=False)
    records = [r for log in logs
               for r in log.records([b for b in plan.suite.budgets
                                     if b <= plan.suite.budget_of(log.method)])]
    fill_regret(records)
    write_results(out, plan, records, logs)
    return records


def check_user_data(plan: EvalPlan) -> None:
    """Load every user file the plan scores before anything is written, so a bad file is
    one message and the corrected rerun finds its ``--out`` untouched. (Registered tasks are
    known by name; their loads stay in the runs.)"""
    for ref in plan.tasks:
        if ref.data is not None:
            load_eval_task(ref, plan.settings.max_rows, plan.settings.protocol)


def check_llm_server(plan: EvalPlan) -> None:
    """Stop before anything is written when LLM runs are left to do and the server at
    ``--base-url`` does not answer: left to run, every LLM trial would fall back to TPE and
    the report would compare TPE with itself. The README promises one message and exit 2
    for a server that is down, as ``tune`` does. (An in-process model fails when it loads.)"""
    from sllmbo.core.errors import BackendError
    from sllmbo.eval.runs import shared_backend

    llm = plan.settings.llm
    if llm.backend != "openai":
        return
    store = Path(plan.settings.store_path)
    done = EvalStore(store).run_keys() if store.is_file() else set()
    if not any(get_method(j.method).uses_llm and j.key not in done for j in plan.iter_jobs()):
        return
    try:
        shared_backend(llm, None).fine_tuned  # noqa: B018 - the property asks the server
    except BackendError as err:
        raise BackendError(
            f"the LLM server cannot answer, so no evaluation run ran: {err.message}",
            hint=(err.hint or "check --base-url") + "; or leave the LLM methods out with "
            "--methods",
        ) from None


def forget_runs(plan: EvalPlan) -> int:
    """Forget the plan's jobs: run records, stored answers and Optuna studies (scores of
    configurations stay cached: they do not depend on the method)."""
    return _forget_jobs(plan.jobs, plan.settings)


def _forget_jobs(jobs: Sequence[RunJob], settings: RunSettings) -> int:
    import optuna

    from sllmbo.core.storage import open_storage

    keys = [job.key for job in jobs]
    forgotten = EvalStore(settings.store_path).forget_runs(keys + [f"{k}:answers" for k in keys])
    storage = open_storage(settings.storage)
    existing = {s.study_name for s in storage.get_all_studies()}
    for key in keys:
        if key in existing:
            optuna.delete_study(study_name=key, storage=storage)
    return forgotten


def _write_plan(out: Path, plan: EvalPlan) -> None:
    path = out / "plan.json"
    new = plan.to_dict()
    if path.is_file():
        old = json.loads(path.read_text())
        keep = ("settings",)
        changed = [k for k in keep if old.get(k, {}).get("n_folds") != new[k]["n_folds"]
                   or old.get(k, {}).get("max_rows") != new[k]["max_rows"]
                   or old.get(k, {}).get("protocol") != new[k]["protocol"]]
        if changed:
            raise SllmboError(
                f"{out} holds an evaluation scored differently (folds, row cap or protocol)",
                hint="use another --out folder, or the same settings to resume",
            )
    path.write_text(json.dumps(new, indent=2) + "\n")


def _run_jobs(jobs: list[RunJob], settings: RunSettings, workers: int,
              progress: bool, run: bool = True) -> list[RunLog]:
    from tqdm.auto import tqdm

    store = EvalStore(settings.store_path)
    done_keys = store.run_keys()
    logs: dict[str, RunLog] = {}
    todo = []
    stale: list[RunJob] = []
    for job in jobs:
        stored = store.run(job.key) if job.key in done_keys else None
        if stored is not None and run and is_stale(job, settings, stored):
            stale.append(job)
            stored = None
        if stored is not None:
            logs[job.key] = RunLog.from_dict(stored)
        else:
            todo.append(job)
    if stale:
        if progress:
            print(f"{len(stale)} finished runs were given other configurations than the "
                  "matrix gives now: they run again")
        _forget_jobs(stale, settings)
    if not run:
        if progress:
            print(f"{len(logs)} of {len(jobs)} runs finished; reporting those, running none")
        return [logs[job.key] for job in jobs if job.key in logs]
    total = sum(settings.max_budget for _ in todo)
    bar = tqdm(total=total, unit="trial", desc=f"eval ({len(logs)} of {len(jobs)} runs done)",
               disable=not progress, dynamic_ncols=True)
    started = time.perf_counter()
    try:
        if workers <= 1:
            for job in todo:
                bar.set_description(f"eval {job.method} {job.task.label} {job.family}")
                logs[job.key] = execute(job, settings)
                bar.update(settings.max_budget)
        else:
            _run_parallel(todo, settings, workers, logs, bar)
    finally:
        bar.close()
        close_backends()
    if todo and progress:
        print(f"{len(todo)} runs in {time.perf_counter() - started:.0f} s")
    return [logs[job.key] for job in jobs]


def _run_parallel(todo: list[RunJob], settings: RunSettings, workers: int,
                  logs: dict[str, RunLog], bar: Any) -> None:
    """Worker processes (spawned: no forked model or thread state); each loads its own
    model once. Studies and the store are SQLite files they share."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    threads = max(1, (os.cpu_count() or 1) // workers)
    with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                             initializer=limit_threads, initargs=(threads,)) as pool:
        pending = {pool.submit(_execute_in_worker, job, settings): job for job in todo}
        while pending:
            finished, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in finished:
                job = pending.pop(future)
                logs[job.key] = RunLog.from_dict(future.result())
                bar.update(settings.max_budget)
                bar.set_description(f"eval (done: {job.method} {job.task.label})")


def limit_threads(threads: int) -> None:
    """Give each worker its share of the cores before torch or a BLAS starts: with every
    worker's OpenMP pool sized to the whole machine, threads spin against each other and an
    LLM answer took 20x longer beside a model fit (measured in the default suite)."""
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[name] = str(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def execute(job: RunJob, settings: RunSettings) -> RunLog:
    """Run ``job`` to its method's budget (resuming what a killed run left) and score the
    best configuration of each budget on the test split. Stored when done."""
    settings = settings.for_method(job.method)
    store = EvalStore(settings.store_path)
    done = store.run(job.key)
    if done is not None:
        return RunLog.from_dict(done)
    method = get_method(job.method)
    ctx = RunContext(job, settings, store)
    inputs = method.inputs(ctx)
    log = method.run(ctx)
    log.inputs = inputs
    store.put_run(job.key, log.to_dict())
    return log


def is_stale(job: RunJob, settings: RunSettings, stored: dict[str, Any]) -> bool:
    """Whether a stored run was given other configurations than the matrix gives now (at
    the method's own budget, as the run was)."""
    settings = settings.for_method(job.method)
    ctx = RunContext(job, settings, EvalStore(settings.store_path))
    return stored.get("inputs") != get_method(job.method).inputs(ctx)


def _execute_in_worker(job: RunJob, settings: RunSettings) -> dict[str, Any]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return execute(job, settings).to_dict()


def fill_regret(records: list[dict[str, Any]]) -> None:
    """Normalized regret of each record against the best and worst test score any method
    reached on its task and family."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["test_score"] is not None:
            groups[(r["task"], r["family"])].append(r)
    for group in groups.values():
        direction = group[0]["direction"]
        best, worst = score_range((r["test_score"] for r in group), direction)
        for r in group:
            r["regret"] = round(normalized_regret(r["test_score"], best, worst, direction), 6)


def write_results(out: Path, plan: EvalPlan, records: list[dict[str, Any]],
                  logs: Sequence[RunLog]) -> None:
    from sllmbo.eval.report import write_report

    (out / "results.json").write_text(json.dumps(records, indent=1) + "\n")
    write_report(out, plan, records, logs)
