"""Training-speed benchmark of the fine-tuning recipes (``make bench-train``).

On CPU it measures the SmolLM2-135M LoRA recipe (``training/recipes/smollm2-135m-lora.yaml``)
on real instruction data: the plain configuration (fp32, padded batches, the default prompt
budget) against each speed-up on its own and all of them together, in one run:

- ``bf16``: autocast to bfloat16 with fp32 master weights, only where the CPU has native bf16
  (AVX512-BF16 / AMX; emulated bf16 is slower than fp32, so it is skipped elsewhere);
- ``packing``: padding-free best-fit packing (no pad tokens computed);
- ``short prompts``: the same examples built with a 768-token prompt budget instead of 1024
  (``sllmbo data build --max-tokens 768``: sequential prompts show a shorter history table);
  it changes tokens per example, not tokens per second, so compare examples/s;
- ``completion-only LM head``: TRL's fused LM head projects only the completion positions
  (it does so on CUDA; on CPU it projects every position unless ``sllmbo.training.sft_trainer``
  switches it, which ``sllmbo train`` does).

The recipe's own gradient-checkpointing and batch settings are kept in every configuration
(``--set KEY=VALUE`` changes them for all; the result records them); gradient accumulation is
set to 1 (it does not change tokens/s).

Each configuration runs in its own process (peak memory is that process's peak RSS, capped by
``--memory-limit-gib`` so a configuration that does not fit fails alone) for ``--steps``
timed optimizer steps after one warm-up step. Ratios are against the plain configuration.
The data: two instruction builds of the committed corpus (``--studies`` picks the studies),
made into a temporary folder.

On a CUDA machine the same command measures QLoRA (NF4, double quantization, LoRA r=16 on all
linear layers, gradient checkpointing, sdpa, batch 8 x 512) on a random-weight Llama of Code
Llama 7B's exact shape (hidden 4096, 32 layers, 32 heads, intermediate 11008, vocab 32016)
with synthetic token ids. That path has NOT been run in this repository's CI or on its
development machines (no GPU there); the reference to beat is 6,466 tokens/s at 47.9 GiB on
one H100 with plain transformers + peft + bitsandbytes (goal: 1.5x under 16 GiB).

Run: ``python -m sllmbo.eval.bench_train [--steps N]``; writes ``results/bench_train.json``
and prints a markdown table. Timings depend on free cores: the load average is recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus" / "trials.jsonl.gz"
RECIPE = "smollm2-135m-lora"
NOT_RUN_NOTE = ("the CUDA path (QLoRA on a random-weight Code Llama 7B-shaped Llama) was not "
                "run here: no GPU on this machine")
#: name -> (recipe overrides, which data build, score only completion positions in the head)
CPU_VARIANTS: dict[str, tuple[dict[str, Any], str, bool]] = {
    "plain (fp32, padded, 1024-token prompts)": ({"precision": "fp32", "packing": False},
                                                 "long", False),
    "bf16 autocast": ({"precision": "bf16", "packing": False}, "long", False),
    "padding-free packing": ({"precision": "fp32", "packing": True}, "long", False),
    "short prompts (768-token budget)": ({"precision": "fp32", "packing": False}, "short",
                                         False),
    "completion-only LM head": ({"precision": "fp32", "packing": False}, "long", True),
    "all four": ({"precision": "bf16", "packing": True}, "short", True),
}
#: Recipe keys recorded with the result (what every configuration shares).
SETTINGS_SHOWN = ("lora_r", "lora_target_modules", "batch_size", "max_length",
                  "gradient_checkpointing")
CODELLAMA_SHAPE = {"hidden_size": 4096, "num_hidden_layers": 32, "num_attention_heads": 32,
                   "num_key_value_heads": 32, "intermediate_size": 11008, "vocab_size": 32016}


# -- one configuration, in a child process ------------------------------------------------------

def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec['steps'] + 1`` steps of the recipe with overrides; time all but the first."""
    import torch
    from transformers import TrainerCallback

    from sllmbo.core.home import resolve_model
    from sllmbo.training import sft
    from sllmbo.training.recipe import load_recipe

    steps = int(spec["steps"])
    recipe = load_recipe(spec["recipe"], {
        **spec.get("settings", {}), **spec["overrides"], "max_steps": steps + 1, "token_budget": None, "eval_steps": 0,
        "save_steps": 10**9, "logging_steps": 1, "epochs": 100, "grad_accum": 1})
    data = sft.check_data(spec["data"])
    train, _ = sft.load_splits(data, recipe)
    n_rows = min(len(train), recipe.batch_size * recipe.grad_accum * (steps + 1) * 2)
    train = train.shuffle(seed=0).select(range(n_rows))

    class Timer(TrainerCallback):
        t0: float | None = None
        n0 = 0

        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:
                self.t0, self.n0 = time.perf_counter(), state.num_input_tokens_seen

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.seconds = time.perf_counter() - (self.t0 or time.perf_counter())
            self.tokens = state.num_input_tokens_seen - self.n0

    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        base = resolve_model(recipe.base_model)
        trainer = sft.build_trainer(recipe, base, train, None, Path(tmp), progress=False,
                                    callbacks=[timer], compact_head=spec["compact_head"])
        trainer.train()
    lengths = [len(x) for x in trainer.train_dataset["input_ids"]]
    per_example = data.card["token_lengths"]["train"]["total"] / data.card["n_examples"]["train"]
    tokens_per_s = timer.tokens / timer.seconds
    return {
        "tokens_per_s": round(tokens_per_s, 1),
        "examples_per_s": round(tokens_per_s / per_example, 3),
        "mean_tokens_per_example": round(per_example, 1),
        "rows_per_batch": recipe.batch_size, "mean_row_tokens": round(sum(lengths) / len(lengths)),
        "timed_steps": steps, "seconds": round(timer.seconds, 1),
        "peak_memory_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "precision": trainer.sllmbo_precision, "threads": torch.get_num_threads(),
    }


def spawn(spec: dict[str, Any], memory_limit_gib: float) -> dict[str, Any]:
    """``run_child`` in a fresh process under an address-space limit; its result or error."""
    limit = int(memory_limit_gib * 2**30)

    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    proc = subprocess.run([sys.executable, "-m", "sllmbo.eval.bench_train", "--child",
                           json.dumps(spec)], capture_output=True, text=True, preexec_fn=cap,
                          check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
    memory = "MemoryError" in proc.stderr or "alloc" in tail.lower() or proc.returncode == -9
    return {"error": (f"out of memory under the {memory_limit_gib:g} GiB limit: " if memory
                      else f"exit {proc.returncode}: ") + tail[:300]}


# -- the CPU run --------------------------------------------------------------------------------

def build_data(tmp: Path, studies: str) -> dict[str, Path]:
    """Two builds of the same studies: the default prompt budget and a 768-token one."""
    from sllmbo.data.build import build_dataset, load_tokenizer
    from sllmbo.data.instructions import BuildOptions

    tokenizer = load_tokenizer(None)
    out = {}
    for name, budget in (("long", 1024), ("short", 768)):
        build_dataset([str(CORPUS)], tmp / name, study_filter=studies,
                      options=BuildOptions(max_tokens=budget), tokenizer=tokenizer,
                      progress=False)
        out[name] = tmp / name
    return out


def cpu_bench(args: argparse.Namespace) -> dict[str, Any]:
    from sllmbo.training.sft_model import cpu_has_native_bf16

    native_bf16 = cpu_has_native_bf16()
    rows: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-train-data-") as tmp:
        data = build_data(Path(tmp), args.studies)
        for name, (overrides, which, compact) in CPU_VARIANTS.items():
            if overrides["precision"] == "bf16" and not native_bf16:
                rows[name] = {"skipped": "this CPU has no native bf16 (AVX512-BF16/AMX)"}
                continue
            spec = {"recipe": args.recipe, "overrides": overrides, "data": str(data[which]),
                    "steps": args.steps, "compact_head": compact, "settings": args.settings}
            started = time.perf_counter()
            rows[name] = spawn(spec, args.memory_limit_gib)
            print(f"  {name}: {rows[name]} ({time.perf_counter() - started:.0f} s)",
                  file=sys.stderr, flush=True)
    base = rows[next(iter(CPU_VARIANTS))]
    for row in rows.values():
        if "tokens_per_s" in row and "tokens_per_s" in base:
            row["tokens_per_s_ratio"] = round(row["tokens_per_s"] / base["tokens_per_s"], 2)
            row["examples_per_s_ratio"] = round(row["examples_per_s"] / base["examples_per_s"], 2)
            row["memory_ratio"] = round(row["peak_memory_gib"] / base["peak_memory_gib"], 2)
    from sllmbo.training.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.settings)
    settings = {k: getattr(recipe, k) for k in SETTINGS_SHOWN}
    return {"device": "cpu", "native_bf16": native_bf16, "recipe": args.recipe,
            "recipe_settings": {**settings, "grad_accum": 1},
            "studies": args.studies, "variants": rows, "note": NOT_RUN_NOTE}


def table(result: dict[str, Any]) -> str:
    lines = ["| configuration | tokens/s | examples/s | peak GiB | tokens/s x | examples/s x "
             "| memory x |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, row in result["variants"].items():
        if "tokens_per_s" not in row:
            lines.append(f"| {name} | {row.get('skipped') or row.get('error')} ||||||")
            continue
        lines.append(f"| {name} | {row['tokens_per_s']} | {row['examples_per_s']} | "
                     f"{row['peak_memory_gib']} | {row.get('tokens_per_s_ratio', '')} | "
                     f"{row.get('examples_per_s_ratio', '')} | {row.get('memory_ratio', '')} |")
    return "\n".join(lines)


# -- the CUDA run (not run here) -----------------------------------------------------------------

def cuda_bench(args: argparse.Namespace) -> dict[str, Any]:
    """QLoRA on a random-weight Code Llama 7B-shaped Llama, synthetic ids, batch 8 x 512."""
    import torch
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from sllmbo.core.home import resolve_model
    from sllmbo.training.recipe import load_recipe

    seq, batch, steps = 512, 8, args.steps
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(3, CODELLAMA_SHAPE["vocab_size"], (batch * (steps + 1) * 2, seq),
                        generator=gen)
    completion = [0] * (seq * 3 // 4) + [1] * (seq - seq * 3 // 4)
    rows = Dataset.from_dict({"input_ids": ids.tolist(),
                              "completion_mask": [completion] * len(ids)})
    variants = {
        "trl default (nf4, r=16 all-linear, gradient checkpointing, bf16)": {},
        "no gradient checkpointing": {"gradient_checkpointing": False},
        "batch 16 x 512": {"batch_size": 16},
    }
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-codellama-") as tmp:
        folder = Path(tmp) / "codellama-7b-shape"
        config = LlamaConfig(**CODELLAMA_SHAPE, max_position_embeddings=16384,
                             rope_theta=1e6, bos_token_id=1, eos_token_id=2)
        with torch.device("cuda"):
            model = LlamaForCausalLM(config).to(torch.bfloat16)
        model.save_pretrained(folder)
        del model
        torch.cuda.empty_cache()
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(resolve_model(None)))
        tokenizer.save_pretrained(folder)  # only for the trainer's pad id; data is pre-tokenized
        for name, overrides in variants.items():
            recipe = load_recipe("codellama-7b-instruct-qlora", {
                "base_model": str(folder), "max_steps": steps + 1, "eval_steps": 0,
                "save_steps": 10**9, "batch_size": batch, "grad_accum": 1,
                "max_length": seq, "packing": False, **overrides})
            out[name] = _cuda_variant(recipe, folder, rows, steps)
    return {"device": torch.cuda.get_device_name(), "variants": out,
            "reference_h100": {"tokens_per_s": 6466, "peak_gib": 47.9}}


def _cuda_variant(recipe: Any, folder: Path, rows: Any, steps: int) -> dict[str, Any]:
    import torch
    from transformers import TrainerCallback

    from sllmbo.training import sft

    class Timer(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if state.global_step == 1:
                torch.cuda.synchronize()
                self.t0 = time.perf_counter()

        def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            torch.cuda.synchronize()
            self.seconds = time.perf_counter() - self.t0

    torch.cuda.reset_peak_memory_stats()
    timer = Timer()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = sft.build_trainer(recipe, folder, rows, None, Path(tmp), progress=False,
                                        callbacks=[timer])
            trainer.train()
    except torch.cuda.OutOfMemoryError as err:
        return {"error": f"out of memory: {str(err).splitlines()[0][:200]}"}
    tokens = recipe.batch_size * recipe.max_length * steps
    return {"tokens_per_s": round(tokens / timer.seconds, 1),
            "peak_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration "
                        "(after one warm-up step)")
    parser.add_argument("--recipe", default=RECIPE, help="CPU recipe (name or path)")
    parser.add_argument("--studies", default="corpus:[a-c]*", help="corpus studies (fnmatch) "
                        "the CPU data is built from")
    parser.add_argument("--memory-limit-gib", type=float, default=16.0,
                        help="address-space cap of each configuration's process")
    parser.add_argument("--set", dest="settings", action="append", default=[],
                        metavar="KEY=VALUE", help="recipe override for every configuration, "
                        "e.g. --set gradient_checkpointing=true")
    parser.add_argument("--out", type=Path, default=RESULTS / "bench_train.json")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run_child(json.loads(args.child))), flush=True)
        return
    import torch

    from sllmbo.training.recipe import parse_overrides

    args.settings = parse_overrides(args.settings)
    started = time.perf_counter()
    load = os.getloadavg()[0]
    if torch.cuda.is_available():
        result = cuda_bench(args)
    else:
        print(f"CPU: {NOT_RUN_NOTE}", file=sys.stderr)
        result = cpu_bench(args)
    result.update(load_average_at_start=round(load, 2),
                  load_average_at_end=round(os.getloadavg()[0], 2), cores=os.cpu_count(),
                  machine=platform.processor() or platform.machine(),
                  seconds=round(time.perf_counter() - started))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    if result["device"] == "cpu":
        print(table(result))
    else:
        print(json.dumps(result, indent=2))
    print(f"\nwrote {args.out} (load average at start {load:.2f} on {os.cpu_count()} cores)")


if __name__ == "__main__":
    main()
