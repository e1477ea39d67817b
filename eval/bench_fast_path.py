"""Benchmark: the fast path ([8/8]), today's transformers path against each lever.

With the default adapter active: one greedy constrained answer on today's path (``generate``,
adapter unmerged) and with each lever added in turn (adapter merged, one-request loop, verified
jump-forward, prompt cache, prompt-lookup draft, sparse head; then all of them but the merge),
on recommend prompts and on one validation study's sampler prompts in trial order; ratios to
today's path, agreement of the answers with today's, validity; the wall time of ``sllmbo
recommend`` as a command (consensus and greedy; cold, and against a warm ``sllmbo serve``);
and the seconds a trial spends outside model fitting under TPE and under ``llm-tpe``.
``python -m sllmbo.eval.bench_inference --fast-path-only`` runs just this part.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

from sllmbo.core.errors import ConfigError
from sllmbo.core.prompts import Messages, config_schema
from sllmbo.core.space import SearchSpace
from sllmbo.inference import ChatRequest, SamplingParams

from .bench_commands import commands, merge_result
from .bench_overhead import llm_tpe_overhead
from .bench_prompts import prompts

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

    from sllmbo.core.families import get_family

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


def fast_path(llm: str | None, adapter: str, *, n: int, max_tokens: int,
              data: Path) -> dict[str, Any]:
    """Median latency of recommend prompts and of one study's sampler prompts on each rung of
    ``LADDER`` (the LLM ``llm`` with ``adapter``), as ratios to today's path, with greedy
    agreement and validity."""
    from sllmbo.core.home import resolve_model
    from sllmbo.inference.models import resolve_adapter
    from sllmbo.inference.transformers_backend import TransformersBackend

    model_path = resolve_model(llm)
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



def run(args: argparse.Namespace) -> dict[str, Any]:
    """The [8/8] goals: ladder, command time; merged into the results file."""
    load_avg = os.getloadavg()[0]
    ladder = fast_path(args.model, args.adapter, n=args.n_fast, max_tokens=args.max_tokens,
                       data=args.data)
    overhead = llm_tpe_overhead(args.model, args.adapter, n_trials=args.overhead_trials)
    timed = commands()
    result = merge_result(args.output, "fast_path", {
        **ladder, "commands": timed, "llm_tpe_overhead": overhead,
        "load_avg_1min_at_start": load_avg})
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

