"""Supervised fine-tuning of a LoRA / QLoRA adapter with TRL's ``SFTTrainer``.

The instruction data (``sllmbo data build``) holds conversational prompt/completion rows, so
TRL renders them with the base model's chat template and puts the loss on the completion
only (prompt tokens get label -100); nothing here tokenizes or masks on its own.

``train`` is the entry point: it checks and loads the data (``sft_data.py``),
resolves the base model and the hardware (``sft_model.py``), builds the trainer and its step
count (``sft_trainer.py``), resumes from the last checkpoint when asked, and writes the
adapter folder (``outputs.py``).

Runs under ``accelerate launch -m sllmbo train ...`` unchanged: the Trainer shards the data
over processes and only the main process writes files.
"""

from __future__ import annotations

import json
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError

from .recipe import Recipe
from .sft_data import DEFAULT_DATA, check_data, load_splits
from .sft_trainer import CHECKPOINTS, build_trainer, plan_steps

#: Recipe keys that may change between a run and its ``--resume`` (the schedule's length and
#: how often things happen); every other key must match the checkpoint's run.
RESUMABLE_CHANGES = frozenset({"max_steps", "token_budget", "epochs", "eval_steps",
                               "logging_steps", "save_steps", "save_total_limit", "data"})


@dataclass
class TrainResult:
    """What a run produced; ``metrics`` is also ``OUT/metrics.json``."""

    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    merged: Path | None = None


def train(recipe: Recipe, *, data: str | Path | None = None, out: str | Path | None = None,
          resume: bool = False, merge: bool = False, progress: bool = True,
          echo: Any = print, callbacks: list[Any] | None = None) -> TrainResult:
    """Train the adapter the recipe describes; see the module docstring and ``outputs.py``.

    ``callbacks``: extra ``transformers.TrainerCallback``s (timers, tests)."""
    from sllmbo.core.home import adapters_dir

    from . import outputs

    training_data = check_data(data or recipe.data or DEFAULT_DATA)
    out = Path(out) if out is not None else adapters_dir() / recipe.name
    checkpoint = _prepare_out(out, resume)
    base = _resolve_base(recipe.base_model)
    resolved = {**recipe.model_dump(mode="json"), "base_model": str(base),
                "data": str(training_data.path), "data_card_sha256": training_data.card_sha256}
    if checkpoint is not None:
        _check_resume_matches(out, resolved)
    _quiet_libraries(progress)
    train_rows, val_rows = load_splits(training_data, recipe)
    trainer = build_trainer(recipe, base, train_rows, val_rows, out, progress=progress,
                            callbacks=callbacks)
    plan = plan_steps(recipe, trainer)
    resolved.update(precision=trainer.sllmbo_precision, device=trainer.sllmbo_device,
                    schedule=plan)
    main = trainer.is_world_process_zero()
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / outputs.RECIPE_FILE).write_text(json.dumps(resolved, indent=2) + "\n")
        longest = training_data.card.get("token_lengths", {}).get("train", {}).get("max")
        if isinstance(longest, int) and longest > recipe.max_length:
            echo(f"note: the longest training example has {longest} tokens (data card); "
                 f"max_length {recipe.max_length} cuts longer ones from the end")
        n_val = len(val_rows) if val_rows is not None else 0
        packs = ""
        if recipe.shared_prefix:
            packs = f" in {len(trainer.train_dataset)} shared-prefix packs"
            n_val = len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0
        echo(f"training {recipe.name}: {len(train_rows)} train examples{packs} / {n_val} "
             f"validation {'packs' if recipe.shared_prefix else 'examples'}, "
             f"{plan['max_steps']} steps of ~{plan['tokens_per_step']:.0f} tokens, "
             f"{trainer.sllmbo_precision} on {trainer.sllmbo_device}"
             + (f", resuming from {checkpoint.name}" if checkpoint else ""))
    tokens_before = _tokens_seen_in(checkpoint)
    started = time.perf_counter()
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    seconds = time.perf_counter() - started
    final_eval = _final_eval(trainer) if val_rows is not None else {}
    if not main:
        return TrainResult(out)
    tokens = int(trainer.state.num_input_tokens_seen) - tokens_before
    metrics = outputs.metrics_from(trainer.state.log_history, final_eval, {
        "mean_train_loss": round(float(output.training_loss), 5),
        "train_seconds": round(seconds, 1),
        "tokens_this_run": tokens,
        "tokens_per_s": round(tokens / seconds, 1) if seconds > 0 else None,
        "peak_memory_gib": round(peak_memory_gib(trainer.sllmbo_device), 2),
        "steps": int(trainer.state.global_step),
        "resumed_from": checkpoint.name if checkpoint else None,
    })
    trainer.model.save_pretrained(str(out))
    if trainer.sllmbo_precision == "bf16":
        outputs.store_adapter_weights_as_bf16(out)
    outputs.write_beside_adapter(out, base=base, data=training_data, recipe=resolved,
                                 metrics=metrics)
    shutil.rmtree(out / CHECKPOINTS, ignore_errors=True)  # the adapter is the result
    merged = outputs.merge_adapter(base, out, out / "merged") if merge else None
    return TrainResult(out, metrics, merged)


def _resolve_base(name: str) -> Path:
    from sllmbo.core.errors import ModelNotFoundError
    from sllmbo.core.home import DEFAULT_MODEL_NAME, resolve_model

    try:
        return resolve_model(name).resolve()
    except ModelNotFoundError as err:
        if name == DEFAULT_MODEL_NAME:
            raise
        raise SllmboError(f"no base model at {name} (recipe key base_model)",
                          hint="pass --base-model FOLDER (a local Hugging Face causal-LM "
                          "folder: config.json, weights, tokenizer)") from err


def peak_memory_gib(device: str) -> float:
    """Peak resident memory of this process (CPU) or peak allocated GPU memory (CUDA)."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def _prepare_out(out: Path, resume: bool) -> Path | None:
    """The checkpoint to resume from (None: a fresh run); refuses to overwrite a result."""
    from transformers.trainer_utils import get_last_checkpoint

    ckpt_dir = out / CHECKPOINTS
    last = get_last_checkpoint(str(ckpt_dir)) if ckpt_dir.is_dir() else None
    finished = (out / "adapter_config.json").is_file()
    if resume:
        if last is None and finished:
            raise SllmboError(f"nothing to resume: {out} holds a finished adapter",
                              hint="choose another --out to train again")
        return Path(last) if last else None
    if finished or last is not None:
        what = "a finished adapter" if finished else f"checkpoints ({Path(last).name})"
        raise SllmboError(f"{out} already holds {what}",
                          hint="pass --resume to continue from its last checkpoint, or "
                          "choose another --out")
    return None


def _check_resume_matches(out: Path, resolved: dict[str, Any]) -> None:
    from . import outputs

    path = out / outputs.RECIPE_FILE
    if not path.is_file():
        return
    saved = json.loads(path.read_text())
    diffs = [f"{k}: {saved.get(k)!r} -> {v!r}" for k, v in resolved.items()
             if k not in RESUMABLE_CHANGES and k in saved and saved[k] != v]
    if diffs:
        raise SllmboError(f"cannot resume {out} with a different recipe or data ("
                          + "; ".join(diffs) + ")",
                          hint="resume with the run's own recipe and data, or start a new --out")


def _final_eval(trainer: Any) -> dict[str, Any]:
    """The validation loss at the last step: logged already, or evaluated now."""
    step = trainer.state.global_step
    for entry in reversed(trainer.state.log_history):
        if "eval_loss" in entry and entry.get("step") == step:
            return entry
    return trainer.evaluate()


def _tokens_seen_in(checkpoint: Path | None) -> int:
    if checkpoint is None or not (checkpoint / "trainer_state.json").is_file():
        return 0
    state = json.loads((checkpoint / "trainer_state.json").read_text())
    return int(state.get("num_input_tokens_seen", 0))


def _quiet_libraries(progress: bool) -> None:
    """Weight-loading and map bars only when a progress bar was asked for."""
    if progress:
        return
    import datasets
    from transformers.utils import logging as hf_logging

    datasets.disable_progress_bars()
    hf_logging.disable_progress_bar()
