"""Benchmark: the engines on busy cores ([16/16]), each figure a ratio to a baseline of the same run.

Why: ``tune`` workers share the cores with their own LightGBM fits, and users train other
things while they tune. An engine that runs one thread per core and lets them spin stalls at
every kernel's barrier when one of those cores is taken (``inference/cpu_threads.py``). Two
figures, each against a baseline measured just before it on the same cores:

- **a greedy answer with one core taken**: the median of ``n`` greedy constrained answers while
  one other process (``python -c 'while True: pass'``) saturates a core, over the median of the
  same answers just before without it; in process on each engine, and ``sllmbo recommend
  --decode greedy`` as a cold command. Goal: at most 2x.
- **two tune workers on one study**: two ``sllmbo tune --sampler llm-tpe`` processes started
  together on one SQLite study with a target of ``2n`` trials, over one worker running the
  ``2n`` trials alone. Goal: at most 1x.

Timings are wall seconds on whatever else the machine runs: the load average before each
figure is recorded beside it. ``python -m sllmbo.eval.bench_inference --busy-cores-only``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sllmbo.inference import SamplingParams

from .bench_commands import command_seconds_with, merge_result
from .bench_prompts import make_request

#: The other process: one core's worth of pure Python spinning.
HOG = "while True: pass"
#: Engines measured in process (the llama.cpp one is what ``recommend`` runs on a CPU).
ENGINES = ("llamacpp", "transformers")
#: The tune figure's task and family: small enough that a trial is mostly LLM and bookkeeping.
TUNE_ARGS = ("--task", "concrete_strength", "--model", "lightgbm", "--sampler", "llm-tpe",
             "--n-folds", "3", "--patience", "0", "--quiet")


@contextlib.contextmanager
def busy_core(settle_s: float = 1.0) -> Iterator[None]:
    """One other process saturating one core while the block runs."""
    hog = subprocess.Popen([sys.executable, "-c", HOG])
    try:
        time.sleep(settle_s)  # a load that was there before the answer, as a user's job is
        yield
    finally:
        hog.kill()
        hog.wait()


def _greedy_walls(backend: Any, n: int, max_tokens: int) -> list[float]:
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    walls = []
    for i in range(n):
        start = time.perf_counter()
        backend.complete([make_request(i, greedy)])
        walls.append(time.perf_counter() - start)
    return walls


def _threads_now(backend: Any) -> int | None:
    if hasattr(backend, "n_threads"):
        return int(backend.n_threads)
    if str(getattr(backend, "name", "")).startswith("transformers"):
        import torch

        return int(torch.get_num_threads())
    return None


def answer_on_a_busy_core(engine: str, *, n: int, max_tokens: int) -> dict[str, Any]:
    """Greedy answers in process, the same ``n`` prompts quiet then with one core taken."""
    from sllmbo.inference.factory import create_backend

    backend = create_backend(engine, adapter="default", device="cpu")
    try:
        _greedy_walls(backend, 1, max_tokens)  # warm-up: grammar, first allocations
        load = os.getloadavg()[0]
        quiet = _greedy_walls(backend, n, max_tokens)
        quiet_threads = _threads_now(backend)
        with busy_core():
            busy = _greedy_walls(backend, n, max_tokens)
            busy_threads = _threads_now(backend)
    finally:
        backend.close()
    return {"backend": backend.name, "load_avg_1min_before": load,
            "quiet_median_s": statistics.median(quiet), "busy_median_s": statistics.median(busy),
            "busy_over_quiet": statistics.median(busy) / statistics.median(quiet),
            "quiet_s": quiet, "busy_s": busy,
            "threads_quiet": quiet_threads, "threads_busy": busy_threads}


def command_on_a_busy_core(engine: str, repeats: int) -> dict[str, Any]:
    """``sllmbo recommend --decode greedy`` as a cold command, quiet then with one core
    taken."""
    load = os.getloadavg()[0]
    quiet = command_seconds_with(engine, repeats, ("--decode", "greedy"))
    with busy_core():
        busy = command_seconds_with(engine, repeats, ("--decode", "greedy"))
    return {"command": quiet["command"], "load_avg_1min_before": load,
            "quiet_median_s": quiet["median_s"], "busy_median_s": busy["median_s"],
            "busy_over_quiet": busy["median_s"] / quiet["median_s"]}


def _completed(storage: str, study: str) -> int:
    import optuna

    loaded = optuna.load_study(study_name=study, storage=storage)
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in loaded.trials)


def tune_workers(n_trials: int) -> dict[str, Any]:
    """Wall seconds of one ``tune`` worker reaching ``2 * n_trials`` trials alone, then of two
    workers started together on one study with the same target."""
    target = 2 * n_trials
    with tempfile.TemporaryDirectory() as tmp:
        storage = f"sqlite:///{Path(tmp) / 'workers.db'}"
        base = [sys.executable, "-m", "sllmbo", "tune", *TUNE_ARGS, "--storage", storage,
                "--n-trials", str(target)]
        load = os.getloadavg()[0]
        start = time.perf_counter()
        subprocess.run([*base, "--study", "one"], capture_output=True, check=True)
        one = time.perf_counter() - start
        start = time.perf_counter()
        procs = [subprocess.Popen([*base, "--study", "two", "--seed", str(seed)],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                 for seed in (0, 1)]
        for proc in procs:
            _, err = proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"a tune worker failed ({proc.returncode}): {err[-2000:]}")
        two = time.perf_counter() - start
        counts = {"one": _completed(storage, "one"), "two": _completed(storage, "two")}
    return {"command": " ".join(["sllmbo", *base[3:]]).replace(storage, "sqlite:///TMP"),
            "load_avg_1min_before": load, "target_trials": target,
            "one_worker_s": one, "two_workers_s": two, "two_over_one": two / one,
            "completed_one": counts["one"], "completed_two": counts["two"]}


def busy_cores(args: argparse.Namespace) -> dict[str, Any]:
    """Both figures, for every engine."""
    n = 3 if args.quick else 5
    block: dict[str, Any] = {"cpus": os.cpu_count(), "answers": {}, "commands": {}}
    for engine in ENGINES:
        a = block["answers"][engine] = answer_on_a_busy_core(engine, n=n,
                                                             max_tokens=args.max_tokens)
        print(f"{engine} answer: {a['quiet_median_s']:.2f} s, busy {a['busy_median_s']:.2f} s",
              flush=True)
        c = block["commands"][engine] = command_on_a_busy_core(engine, args.command_repeats)
        print(f"{engine} command: {c['quiet_median_s']:.2f} s, busy {c['busy_median_s']:.2f} s",
              flush=True)
    block["tune_workers"] = tune_workers(args.busy_trials)
    return block


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The busy-core figures, merged into the results file."""
    block = busy_cores(args)
    result = merge_result(args.output, "busy_cores", block)
    _print(block, args.output)
    return result


def _print(block: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="busy cores: one other process saturating one core, against the "
                  "same work just before without it (same run)")
    for column in ("figure", "goal", "baseline s", "busy s", "ratio", "threads", "load before"):
        table.add_column(column, justify="right")
    for engine, a in block["answers"].items():
        table.add_row(f"greedy answer, in process, {engine}", "<= 2x",
                      f"{a['quiet_median_s']:.2f}", f"{a['busy_median_s']:.2f}",
                      f"{a['busy_over_quiet']:.2f}x", f"{a['threads_quiet']} -> "
                      f"{a['threads_busy']}", f"{a['load_avg_1min_before']:.1f}")
    for engine, c in block["commands"].items():
        table.add_row(f"`recommend --decode greedy`, {engine}", "<= 2x",
                      f"{c['quiet_median_s']:.2f}", f"{c['busy_median_s']:.2f}",
                      f"{c['busy_over_quiet']:.2f}x", "", f"{c['load_avg_1min_before']:.1f}")
    w = block["tune_workers"]
    table.add_row(f"2 llm-tpe workers, one study, {w['target_trials']} trials "
                  f"(vs 1 worker alone)", "<= 1x", f"{w['one_worker_s']:.1f}",
                  f"{w['two_workers_s']:.1f}", f"{w['two_over_one']:.2f}x", "",
                  f"{w['load_avg_1min_before']:.1f}")
    Console().print(table)
    print(f"completed trials: one worker {w['completed_one']}, two workers "
          f"{w['completed_two']}; written to {path}")
