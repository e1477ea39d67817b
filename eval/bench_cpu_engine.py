"""Benchmark: the CPU engine ([11/12]), llama.cpp against today's transformers path, same run.

As ratios: ``sllmbo recommend`` as a cold command (consensus and greedy), a warm answer in
process and from ``sllmbo serve``, 8 sampled answers and scoring a pool of 100 configurations
against one answer, validity of sampled answers, greedy agreement with the reference, and
``llm-tpe``'s overhead per trial. ``python -m sllmbo.eval.bench_inference --cpu-engine-only``
runs just this part.
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
from sllmbo.core.space import SearchSpace
from sllmbo.inference import SamplingParams

from .bench_commands import command_seconds_with, merge_result, served_answer_s
from .bench_overhead import llm_tpe_overhead
from .bench_prompts import make_request, prompts

CPU_ENGINES = ("transformers", "llamacpp")


def random_pool(space: SearchSpace, n: int, seed: int = 0) -> list[str]:
    """``n`` random configurations of ``space`` as the compact JSON answers are written."""
    import math
    import random

    from sllmbo.core.prompts import render_config
    from sllmbo.core.space import CategoricalParam, IntParam

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
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.core.prompts import SCORE_ANSWERS, score_messages
    from sllmbo.data.resolve import registered_card

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
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.resolve import registered_card
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    block = cpu_engine(args)
    result = merge_result(args.output, "cpu_engine", block)
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

