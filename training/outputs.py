"""The adapter folder ``sllmbo train`` writes, and what it writes beside the PEFT files.

::

    OUT/adapter_config.json, adapter_model.safetensors   PEFT (transformers backend, vLLM
                                                          --lora-modules, peft all load it);
                                                          bf16 when trained in bf16 (half the
                                                          bytes of PEFT's fp32 default)
    OUT/recipe.json        the resolved recipe: base path, data, precision, step plan
    OUT/metrics.json       train / validation loss history; tokens/s (training tokens per
                           wall-clock second of the run, evaluation and checkpoints included),
                           time, peak memory
    OUT/base_config.json   the base model's config (inference/adapters.py checks it)
    OUT/training.json      base model identity, the data card's SHA-256, library versions
    OUT/data_card.json     the data card the adapter was trained on (eval refuses held-out)
    OUT/loss_curve.png     the loss curves
    OUT/README.md          the model card: data, recipe, losses, time (replaces PEFT's template)
    OUT/merged/            with --merge: base + adapter as one model folder (base's dtype)
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

RECIPE_FILE = "recipe.json"
METRICS_FILE = "metrics.json"
BASE_CONFIG_FILE = "base_config.json"
TRAINING_FILE = "training.json"
CARD_FILE = "data_card.json"
PLOT_FILE = "loss_curve.png"
CARD_README = "README.md"


def metrics_from(log_history: list[dict[str, Any]], final_eval: dict[str, Any],
                 extra: dict[str, Any]) -> dict[str, Any]:
    """Loss histories as ``[step, loss]`` pairs from the Trainer's log, plus ``extra``."""
    train = [[int(e["step"]), round(float(e["loss"]), 5)] for e in log_history if "loss" in e]
    evals = {int(e["step"]): round(float(e["eval_loss"]), 5)
             for e in log_history if "eval_loss" in e}
    final = final_eval.get("eval_loss")
    return {
        "train_loss": train,
        "eval_loss": [[s, v] for s, v in sorted(evals.items())],
        "final_train_loss": train[-1][1] if train else None,
        "final_eval_loss": round(float(final), 5) if final is not None else None,
        **extra,
    }


def base_identity(base: Path) -> dict[str, Any]:
    """What names the base: its folder, config hash and weight files (hashing a 7B model's
    weights would take minutes; names and sizes catch a swapped folder)."""
    config_path = base / "config.json"
    config = json.loads(config_path.read_text())
    weights = sorted(p for p in base.iterdir()
                     if p.suffix in {".safetensors", ".bin"} and p.is_file())
    return {
        "path": str(base),
        "name": base.name,
        "model_type": config.get("model_type"),
        "architectures": config.get("architectures"),
        "config_sha256": hashlib.sha256(config_path.read_bytes()).hexdigest(),
        "weights": [{"file": p.name, "bytes": p.stat().st_size} for p in weights],
    }


def store_adapter_weights_as_bf16(out: Path) -> None:
    """Rewrite ``adapter_model.safetensors`` in bf16, in place (atomically).

    Why: a bf16-trained adapter gains nothing from fp32 storage, and the shipped default is
    committed to git; PEFT casts the weights back to the LoRA layers' dtype when it loads them.
    """
    import torch
    from safetensors.torch import load_file, save_file

    path = out / "adapter_model.safetensors"
    tensors = {k: (v.to(torch.bfloat16) if v.is_floating_point() else v)
               for k, v in load_file(str(path)).items()}
    tmp = path.with_suffix(".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def write_beside_adapter(out: Path, *, base: Path, data: Any, recipe: dict[str, Any],
                         metrics: dict[str, Any]) -> None:
    """Everything but the PEFT files (see the module docstring)."""
    import importlib.metadata as md

    versions = {}
    for package in ("torch", "transformers", "peft", "trl", "accelerate", "bitsandbytes"):
        try:
            versions[package] = md.version(package)
        except md.PackageNotFoundError:
            versions[package] = None
    (out / RECIPE_FILE).write_text(json.dumps(recipe, indent=2) + "\n")
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    shutil.copyfile(base / "config.json", out / BASE_CONFIG_FILE)
    copy_card(data.path / CARD_FILE, out / CARD_FILE)
    info = {
        "format": "sllmbo-adapter/1",
        "base_model": base_identity(base),
        "data": {"path": str(data.path), "card_sha256": data.card_sha256,
                 "n_examples": data.card.get("n_examples"), "n_tasks": data.card.get("n_tasks")},
        "versions": versions,
    }
    (out / TRAINING_FILE).write_text(json.dumps(info, indent=2) + "\n")
    plot_losses(metrics, out / PLOT_FILE, title=str(recipe.get("name", out.name)))
    write_model_card(out)


def copy_card(source: Path, target: Path) -> None:
    """Copy the data card beside the adapter byte for byte (its SHA-256 names the data), but
    with any credential in a source URL masked: a card written before ``data build`` masked
    them must not carry a database password into a folder that gets shared."""
    from sllmbo.core.storage import mask_url

    card = json.loads(source.read_text())
    sources = card.get("sources", [])
    masked = [{**s, "location": mask_url(s.get("location"))} if isinstance(s, dict) else s
              for s in sources]
    if masked == sources:
        shutil.copyfile(source, target)
        return
    target.write_text(json.dumps({**card, "sources": masked}, indent=2) + "\n")


def write_model_card(out: Path) -> None:
    """``README.md`` from the files beside the adapter: what it is, data, recipe, training."""
    recipe = json.loads((out / RECIPE_FILE).read_text())
    metrics = json.loads((out / METRICS_FILE).read_text())
    card = json.loads((out / CARD_FILE).read_text())
    info = json.loads((out / TRAINING_FILE).read_text())
    n_ex, n_tasks = card.get("n_examples", {}), card.get("n_tasks", {})
    kinds = card.get("by_kind", {}).get("train", {})
    families = card.get("by_family", {}).get("train", {})
    tokens = card.get("token_lengths", {}).get("train", {})
    schedule = recipe.get("schedule", {})
    evals = metrics.get("eval_loss") or []
    train = metrics.get("train_loss") or []
    sources = ", ".join(f"`{s.get('location')}` (sha256 {str(s.get('sha256'))[:12]})"
                        for s in card.get("sources", []))
    minutes = (metrics.get("train_seconds") or 0) / 60
    lines = [
        f"# {recipe.get('name', out.name)}: a LoRA adapter for hyperparameter recommendation",
        "",
        f"A PEFT LoRA adapter on `{info['base_model'].get('model_type')}` base "
        f"`{Path(str(info['base_model'].get('path'))).name}`, trained by `sllmbo train` on "
        "sllmbo's instruction data (arXiv 2504.06006): given a task card and a search space, "
        "answer one JSON configuration (single-shot) or the next configuration after a trial "
        "history (sequential).",
        "",
        "Use: `sllmbo recommend --adapter PATH ...`, `sllmbo tune --adapter PATH ...`, "
        "`sllmbo serve --adapter PATH` or `vllm serve BASE --enable-lora --lora-modules "
        "NAME=PATH`.",
        "",
        "## Data",
        "",
        f"- {n_ex.get('train')} training / {n_ex.get('validation')} validation examples from "
        f"{n_tasks.get('train')} + {n_tasks.get('validation')} tasks (split by task); "
        f"sources: {sources or 'see data_card.json'}",
        f"- kinds (train): {', '.join(f'{k} {v}' for k, v in kinds.items())}",
        f"- families (train): {', '.join(f'{k} {v}' for k, v in families.items())}",
        f"- tokens per training example: median {tokens.get('median')}, p90 "
        f"{tokens.get('p90')}, max {tokens.get('max')}",
        "- no held-out task of sllmbo is in the data (`sllmbo train` refuses such data; "
        "`data_card.json` lists every task)",
        "",
        "## Recipe",
        "",
        f"- LoRA r {recipe.get('lora_r')}, alpha {recipe.get('lora_alpha')}, dropout "
        f"{recipe.get('lora_dropout')}, modules {recipe.get('lora_target_modules')}; "
        f"quantization {recipe.get('quantization')}",
        f"- {schedule.get('max_steps')} steps of {recipe.get('batch_size')} x "
        f"{recipe.get('grad_accum')} packed rows of up to {recipe.get('max_length')} tokens "
        f"(~{schedule.get('tokens_per_step')} tokens per step, "
        f"{schedule.get('planned_tokens')} planned), learning rate "
        f"{recipe.get('learning_rate')} ({recipe.get('lr_scheduler')}), "
        f"{recipe.get('precision')} on {recipe.get('device')}",
        "- the full resolved recipe: `recipe.json`",
        "",
        "## Training",
        "",
        f"- {metrics.get('steps')} steps, {metrics.get('tokens_this_run')} tokens in "
        f"{minutes:.1f} min ({metrics.get('tokens_per_s')} tokens/s, peak "
        f"{metrics.get('peak_memory_gib')} GiB)"
        + (f", resumed from {metrics['resumed_from']}" if metrics.get("resumed_from") else ""),
        f"- training loss (completion tokens, nats/token): {train[0][1] if train else '-'} at "
        f"step {train[0][0] if train else '-'}, {metrics.get('final_train_loss')} at the end",
        "- validation loss: " + (", ".join(f"{v} (step {s})" for s, v in evals) or "-")
        + (f"; final {metrics.get('final_eval_loss')}" if metrics.get("final_eval_loss")
           else ""),
        "",
        f"![loss curves]({PLOT_FILE})",
        "",
    ]
    (out / CARD_README).write_text("\n".join(lines))


def plot_losses(metrics: dict[str, Any], path: Path, title: str) -> None:
    """Training loss per logged step and validation loss per evaluation (nats per token)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    if metrics["train_loss"]:
        steps, losses = zip(*metrics["train_loss"], strict=True)
        ax.plot(steps, losses, label="training loss", color="#1f77b4", linewidth=1.2,
                marker="." if len(steps) < 30 else None)
    if metrics["eval_loss"]:
        steps, losses = zip(*metrics["eval_loss"], strict=True)
        ax.plot(steps, losses, "o-", label="validation loss", color="#d62728", linewidth=1.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss on completion tokens (nats / token)")
    ax.set_title(f"{title}: loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def merge_adapter(base: Path, adapter: Path, dest: Path) -> Path:
    """Base + adapter folded into one model folder (with the base's tokenizer).

    The base is loaded again unquantized (in its own dtype), so a QLoRA adapter merges into
    full weights."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(base), dtype="auto")
    merged = PeftModel.from_pretrained(model, str(adapter)).merge_and_unload()
    if dest.exists():
        shutil.rmtree(dest)
    merged.save_pretrained(str(dest))
    AutoTokenizer.from_pretrained(str(base)).save_pretrained(str(dest))
    return dest
