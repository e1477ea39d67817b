"""Benchmark: constrained (xgrammar) against free decoding on the transformers backend.

Single-shot latency (median over ``--n-single`` one-request greedy calls, the shape of a
``sllmbo recommend`` call once the model is loaded); batch throughput (median over ``--repeats``
calls of ``--batch-size`` requests); their constrained/unconstrained ratios (per call and per
generated token: unconstrained answers ramble on to ``max_tokens``, so the per-token ratio is
the fair price of the grammar); the share of ``--n-constrained`` sampled constrained answers
that finish, parse and validate against their search space; and free decoding speed in fp32 and
bf16, the measurement behind the backend's dtype choice on CPU. Run through
``python -m sllmbo.eval.bench_inference`` (its default run starts with this).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

from sllmbo.core.errors import ConfigError
from sllmbo.inference import SamplingParams

from .bench_prompts import make_request, prompts, tokens_per_s


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
        single_tps.append(tokens_per_s([c], wall))
        single_tokens.append(c.completion_tokens)
    batch_walls, batch_tps = [], []
    for r in range(repeats):
        requests = [make_request(r * batch_size + i, greedy) for i in range(batch_size)]
        start = time.perf_counter()
        outs = backend.complete(requests)
        wall = time.perf_counter() - start
        batch_walls.append(wall)
        batch_tps.append(tokens_per_s(outs, wall))
    return {"single_latency_s": statistics.median(single),
            "single_tokens": statistics.median(single_tokens),
            "singletokens_per_s": statistics.median(single_tps),
            "batch_wall_s": statistics.median(batch_walls),
            "batch_answers_per_s": batch_size / statistics.median(batch_walls),
            "batchtokens_per_s": statistics.median(batch_tps)}


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


def dtype_speed(llm: str | None, *, n: int, max_tokens: int) -> dict[str, Any]:
    """Free greedy decoding speed of the LLM ``llm`` in fp32 and bf16 (median tokens/s of ``n``
    single requests), the measurement behind the backend's dtype choice on CPU."""
    import torch

    from sllmbo.core.home import resolve_model
    from sllmbo.inference.transformers_backend import TransformersBackend, resolve_dtype

    speed: dict[str, Any] = {}
    for dtype in ("float32", "bfloat16"):
        backend = TransformersBackend(resolve_model(llm), device="cpu", dtype=dtype,
                                      constrained=False)
        greedy = SamplingParams(max_tokens=max_tokens, temperature=0.0)
        backend.complete([make_request(0, greedy)])  # warm-up
        rates = []
        for i in range(n):
            start = time.perf_counter()
            [c] = backend.complete([make_request(i, greedy)])
            rates.append(tokens_per_s([c], time.perf_counter() - start))
        speed[dtype] = {"tokens_per_s": statistics.median(rates),
                        "ms_per_token": 1000 / statistics.median(rates)}
        backend.close()
    speed["bf16_speedup"] = speed["bfloat16"]["tokens_per_s"] / speed["float32"]["tokens_per_s"]
    speed["auto_picks"] = str(resolve_dtype("auto", torch.device("cpu"), torch))
    return speed



def run(args: argparse.Namespace) -> dict[str, Any]:
    """The transformers backend constrained and free, written to ``args.output``."""
    import torch

    from sllmbo.inference import create_backend

    load_avg = os.getloadavg()[0]
    start = time.perf_counter()
    backend = create_backend("transformers", llm=args.model, device="cpu")
    load_s = time.perf_counter() - start
    kw = {"n_single": args.n_single, "batch_size": args.batch_size, "repeats": args.repeats,
          "max_tokens": args.max_tokens}
    free = measure(backend, constrained=False, **kw)
    bound = measure(backend, constrained=True, **kw)
    ratios = {
        "single_latency": bound["single_latency_s"] / free["single_latency_s"],
        "single_time_per_token": free["singletokens_per_s"] / bound["singletokens_per_s"],
        "batch_wall": bound["batch_wall_s"] / free["batch_wall_s"],
        "batch_time_per_token": free["batchtokens_per_s"] / bound["batchtokens_per_s"],
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
    return result


def _print(result: dict[str, Any], path: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{result['model']}: constrained vs unconstrained (CPU, greedy)")
    for column in ("metric", "unconstrained", "constrained", "ratio c/u"):
        table.add_column(column, justify="right")
    free, bound, ratio = (result["unconstrained"], result["constrained"],
                          result["ratio_constrained_over_unconstrained"])
    rows = [("single latency (s, median)", "single_latency_s", ratio["single_latency"]),
            ("single tokens/s", "singletokens_per_s", ratio["single_time_per_token"]),
            ("single answer tokens", "single_tokens", None),
            ("batch wall (s, median)", "batch_wall_s", ratio["batch_wall"]),
            ("batch answers/s", "batch_answers_per_s", None),
            ("batch tokens/s", "batchtokens_per_s", ratio["batch_time_per_token"])]
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

