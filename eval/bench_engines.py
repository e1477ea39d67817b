"""Benchmark: transformers against vLLM ([7/8]) in one process on the same prompts.

Run with the vLLM environment's Python (``make bench-engines``: ``--engines-only``), the
default adapter active: single-request latency, batch throughput, validity of sampled answers,
and vLLM's ratios to transformers; writes ``results/bench_engines.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

from .bench_constrained import measure, parse_rate


def engine_backend(engine: str, llm: str | None, adapter: str) -> Any:
    """The backend of ``engine`` for the LLM ``llm``, with ``adapter`` resolved as
    ``recommend`` resolves it."""
    from sllmbo.inference.factory import create_backend

    if engine == "vllm":
        from sllmbo.core.home import resolve_model
        from sllmbo.inference.models import resolve_adapter
        from sllmbo.inference.vllm_backend import VLLMBackend

        path = resolve_model(llm)
        return VLLMBackend(path, adapter_path=resolve_adapter(adapter, model_path=path),
                           max_model_len=2048, enforce_eager=True)
    return create_backend("transformers", llm=llm, adapter=adapter, device="cpu")


def run(args: argparse.Namespace) -> dict[str, Any]:
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

