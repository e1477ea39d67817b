"""Supervised fine-tuning of a LoRA / QLoRA adapter with TRL's ``SFTTrainer``.

The instruction data (``sllmbo data build``) holds conversational prompt/completion rows, so
TRL renders them with the base model's chat template and puts the loss on the completion
only (prompt tokens get label -100); this module does no tokenization or masking of its own.
It resolves the recipe against the hardware (precision, 4-bit loading), builds the trainer,
turns a token budget into a step count, and writes the adapter folder (``outputs.py``).

Runs under ``accelerate launch -m sllmbo train ...`` unchanged: the Trainer shards the data
over processes and only the main process writes files.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import resource
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sllmbo.errors import SllmboError

from .recipe import Recipe, RecipeError

CHECKPOINTS = "checkpoints"
DEFAULT_DATA = Path("runs/instructions")
#: Recipe keys that may change between a run and its ``--resume`` (the schedule's length and
#: how often things happen); every other key must match the checkpoint's run.
RESUMABLE_CHANGES = frozenset({"max_steps", "token_budget", "epochs", "eval_steps",
                               "logging_steps", "save_steps", "save_total_limit", "data"})


@dataclass(frozen=True)
class TrainingData:
    """An instruction-data folder that passed the held-out check."""

    path: Path
    card: dict[str, Any]
    card_sha256: str


@dataclass
class TrainResult:
    """What a run produced; ``metrics`` is also ``OUT/metrics.json``."""

    out: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    merged: Path | None = None


def check_data(path: str | Path) -> TrainingData:
    """The data folder's card, refused when it lists a held-out task (before any loading)."""
    import hashlib

    from sllmbo.data.build import CARD_FILE, card_lists_heldout
    from sllmbo.data.splits import heldout_match

    path = Path(path)
    card_path = path / CARD_FILE
    if not (path / "dataset").is_dir() or not card_path.is_file():
        raise SllmboError(f"no instruction data in {path} (needs dataset/ and {CARD_FILE})",
                          hint="build it with `sllmbo data build --storage STORAGE --out DIR` "
                          "(or `make instructions`), then pass --data DIR")
    raw = card_path.read_bytes()
    try:
        card = json.loads(raw)
        heldout = card_lists_heldout(card_path)
    except (json.JSONDecodeError, AttributeError) as err:
        raise SllmboError(f"{card_path} is not a data card: {err}",
                          hint="rebuild the data with `sllmbo data build`") from None
    if heldout:
        aliases = sorted({str(heldout_match(t)) for t in heldout} - set(heldout))
        raise SllmboError(
            f"refusing to train on {path}: its data card lists held-out tasks {heldout}"
            + (f" (aliases of {aliases})" if aliases else "")
            + "; held-out tasks are kept for evaluation only",
            hint="rebuild the data with `sllmbo data build` (it drops held-out studies)")
    return TrainingData(path, card, hashlib.sha256(raw).hexdigest())


def load_splits(data: TrainingData, recipe: Recipe) -> tuple[Any, Any | None]:
    """Train and validation ``Dataset``s (prompt/completion, and weight where examples are
    weighted); validation subsampled to
    ``eval_max_examples`` by a seeded shuffle, None when the split is empty."""
    from datasets import load_from_disk

    from sllmbo.data.splits import heldout_match

    dsd = load_from_disk(str(data.path / "dataset"))
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise SllmboError(f"{data.path} has no training examples",
                          hint="build the data from a storage with completed trials")
    for split in dsd.values():  # guards the card check: the rows themselves
        if "task" in split.column_names:
            leaked = sorted({t for t in set(split["task"]) if heldout_match(t)})
            if leaked:
                raise SllmboError(f"refusing to train on {data.path}: rows of held-out tasks "
                                  f"{leaked} are in the data although its card omits them",
                                  hint="rebuild the data with `sllmbo data build`")
    keep = ["prompt", "completion"]
    if "weight" in dsd["train"].column_names:
        if not recipe.shared_prefix:
            if any(w != 1.0 for split in dsd.values() for w in split["weight"]):
                raise RecipeError(f"{data.path} has weighted examples (soft pick targets), "
                                  "which only the shared-prefix trainer weighs",
                                  hint="set shared_prefix: true in the recipe, or rebuild the "
                                  "data with --matrix-picks instead of a temperature")
        else:
            keep.append("weight")
    train = dsd["train"].select_columns(keep)
    val = dsd["validation"].select_columns(keep) if "validation" in dsd else None
    if val is not None and len(val) == 0:
        val = None
    if (val is not None and recipe.eval_max_examples and len(val) > recipe.eval_max_examples
            and not recipe.shared_prefix):  # shared-prefix packs are subsampled whole
        val = val.shuffle(seed=recipe.seed).select(range(recipe.eval_max_examples))
    return train, val


def resolve_precision(recipe: Recipe, device: str) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``device`` ("cpu" or "cuda")."""
    import torch

    if device == "cuda":
        if recipe.precision == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return recipe.precision
    if recipe.precision == "fp16":
        raise RecipeError("precision fp16 needs a CUDA GPU", hint="use auto, bf16 or fp32 on CPU")
    if recipe.precision == "auto":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return recipe.precision


def cpu_has_native_bf16() -> bool:
    """AVX512-BF16 or AMX: bf16 matmuls run natively (elsewhere they are emulated, slower)."""
    import torch

    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def load_base(recipe: Recipe, base: Path, precision: str, device: str) -> Any:
    """The base model: fp32 master weights on CPU (bf16 runs under autocast), the training
    dtype on CUDA, NF4 through bitsandbytes for QLoRA."""
    import os

    import torch
    from transformers import AutoModelForCausalLM

    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    kwargs: dict[str, Any] = {"dtype": torch.float32 if device == "cpu" else dtypes[precision]}
    if recipe.quantization == "nf4":
        kwargs["quantization_config"] = nf4_config(
            torch.bfloat16 if precision == "bf16" else torch.float32)
        kwargs["device_map"] = ({"": "cpu"} if device == "cpu"
                                else {"": int(os.environ.get("LOCAL_RANK", "0"))})
    try:
        model = AutoModelForCausalLM.from_pretrained(str(base), **kwargs)
    except (OSError, ValueError) as err:
        raise SllmboError(f"cannot load the base model {base}: {str(err).splitlines()[0]}",
                          hint="set base_model (or --base-model) to a local Hugging Face "
                          "causal-LM folder") from None
    model.config.use_cache = False  # the KV cache is useless (and warned about) in training
    return model


def nf4_config(compute_dtype: Any) -> Any:
    """QLoRA's quantization: NF4 weights, double quantization, ``compute_dtype`` matmuls."""
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SllmboError("quantization nf4 needs bitsandbytes, which is not installed",
                          hint="pip install 'bitsandbytes>=0.50.2' (it runs 4-bit on CPU too)"
                          ) from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype)


def lora_config(recipe: Recipe) -> Any:
    from peft import LoraConfig

    return LoraConfig(r=recipe.lora_r, lora_alpha=recipe.lora_alpha,
                      lora_dropout=recipe.lora_dropout, bias="none", task_type="CAUSAL_LM",
                      target_modules=recipe.lora_target_modules)


def training_kwargs(recipe: Recipe, out: Path, precision: str, device: str, *, has_eval: bool,
                    progress: bool) -> dict[str, Any]:
    """The ``TrainingArguments`` both trainers share: schedule, precision, checkpoints in OUT."""
    evaluate = has_eval and recipe.eval_steps > 0
    return dict(
        output_dir=str(out / CHECKPOINTS),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps or -1,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        gradient_accumulation_steps=recipe.grad_accum,
        learning_rate=recipe.learning_rate,
        lr_scheduler_type=recipe.lr_scheduler,
        warmup_steps=recipe.warmup_ratio,  # a float in [0, 1) is a share of the steps
        weight_decay=recipe.weight_decay,
        max_grad_norm=recipe.max_grad_norm,
        seed=recipe.seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=device == "cpu",
        gradient_checkpointing=recipe.gradient_checkpointing,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=recipe.eval_steps if evaluate else None,
        logging_steps=recipe.logging_steps,
        logging_first_step=True,
        save_strategy="steps",
        save_steps=recipe.save_steps,
        save_total_limit=recipe.save_total_limit,
        report_to="none",
        disable_tqdm=not progress,
        dataloader_num_workers=0,
    )


def sft_config(recipe: Recipe, out: Path, precision: str, device: str, *, has_eval: bool,
               progress: bool) -> Any:
    """TRL's ``SFTConfig`` for the recipe: completion-only loss, checkpoints in OUT."""
    from trl import SFTConfig

    return SFTConfig(
        **training_kwargs(recipe, out, precision, device, has_eval=has_eval, progress=progress),
        max_length=recipe.max_length,
        packing=recipe.packing,
        packing_strategy="bfd",
        padding_free=recipe.packing,
        completion_only_loss=True,
        include_num_input_tokens_seen="non_padding",
    )


def build_trainer(recipe: Recipe, base: Path, train: Any, val: Any | None, out: Path, *,
                  progress: bool = True, callbacks: list[Any] | None = None,
                  compact_head: bool = True) -> Any:
    """An ``SFTTrainer`` for ``recipe`` on ``base`` (tokenized data, LoRA attached).

    ``compact_head``: on CPU, score only the completion positions in TRL's LM head (see
    ``score_completions_only_on_cpu``; False keeps TRL's own behaviour, for the benchmark)."""
    # bitsandbytes warns on import that an optional CPU kernel package (fetched from a hub at
    # run time) is missing; its own CPU code runs instead, so the line is noise here.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    import torch
    from transformers import AutoTokenizer
    from trl import SFTTrainer

    device = "cuda" if torch.cuda.is_available() else "cpu"
    precision = resolve_precision(recipe, device)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(base))
    except (OSError, ValueError) as err:
        raise SllmboError(f"cannot load the tokenizer of {base}: {str(err).splitlines()[0]}",
                          hint="the base folder needs tokenizer files and a chat template"
                          ) from None
    if not getattr(tokenizer, "chat_template", None):
        raise SllmboError(f"the tokenizer of {base} has no chat template",
                          hint="use an instruct model (its template is what inference uses)")
    model = load_base(recipe, base, precision, device)
    if recipe.shared_prefix:
        trainer = _shared_prefix_trainer(recipe, model, tokenizer, train, val, out, precision,
                                         device, progress=progress, callbacks=callbacks)
        trainer.sllmbo_precision = precision
        trainer.sllmbo_device = device
        return trainer
    if device == "cpu" and compact_head:
        score_completions_only_on_cpu()
    args = sft_config(recipe, out, precision, device, has_eval=val is not None,
                      progress=progress)
    trainer = SFTTrainer(model=model, args=args, train_dataset=train, eval_dataset=val,
                         processing_class=tokenizer, peft_config=lora_config(recipe),
                         callbacks=callbacks)
    trainer.sllmbo_precision = precision
    trainer.sllmbo_device = device
    return trainer


def _shared_prefix_trainer(recipe: Recipe, model: Any, tokenizer: Any, train: Any,
                           val: Any | None, out: Path, precision: str, device: str, *,
                           progress: bool, callbacks: list[Any] | None) -> Any:
    """A ``transformers.Trainer`` on shared-prefix packs (``shared_prefix.py``), LoRA from
    the recipe; the loss is the completion tokens' cross-entropy, as on the TRL path."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import Trainer, TrainingArguments, set_seed

    from . import shared_prefix

    shared_prefix.check_attention(model)
    set_seed(recipe.seed)  # the LoRA init draws from it (TRL's trainer seeds before its init)
    if recipe.quantization == "nf4":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=recipe.gradient_checkpointing)
    elif recipe.gradient_checkpointing:
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config(recipe))
    pack = functools.partial(shared_prefix.packed_dataset, tokenizer,
                             max_length=recipe.max_length,
                             min_shared=recipe.shared_prefix_min_tokens)
    args = TrainingArguments(
        **training_kwargs(recipe, out, precision, device, has_eval=val is not None,
                          progress=progress),
        remove_unused_columns=False,
        include_num_input_tokens_seen="all",  # packs are padded only to the batch's longest
    )

    class SharedPrefixTrainer(Trainer):
        def compute_loss(self, model: Any, inputs: dict[str, Any], return_outputs: bool = False,
                         num_items_in_batch: Any = None) -> Any:
            loss, outputs = shared_prefix.packed_loss(model, inputs, num_items_in_batch)
            return (loss, outputs) if return_outputs else loss

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    val_packs = None
    if val is not None:
        val_packs = shared_prefix.subsample_packs(pack(val), recipe.eval_max_examples,
                                                  recipe.seed)
    return SharedPrefixTrainer(model=model, args=args, train_dataset=pack(train),
                               eval_dataset=val_packs,
                               data_collator=shared_prefix.SharedPrefixCollator(pad),
                               processing_class=tokenizer, callbacks=callbacks)


def score_completions_only_on_cpu() -> bool:
    """Let TRL's fused LM head score only the labelled (completion) positions on CPU.

    TRL computes per-token log-probabilities in chunks without building the full logits. Where
    Triton runs (CUDA, XPU) it projects only the positions whose label is not -100; elsewhere it
    projects every position, so that graph compilers see fixed shapes. Eager CPU training gains
    nothing from that, and our rows are mostly prompt (about 85% of the tokens), so on CPU the
    head did ~6x the work it needs. The losses are identical (the same tiles, fewer rows); on a
    2-layer test model one step ran 2.9x faster. Returns False when this TRL has no such switch
    (then nothing changes).
    """
    import trl.trainer.utils as trl_utils

    original = getattr(trl_utils, "_use_triton", None)
    if original is None or getattr(original, "sllmbo_cpu_compact", False):
        return original is not None

    def compact_on_cpu(device: Any) -> bool:
        return device.type == "cpu" or original(device)

    compact_on_cpu.sllmbo_cpu_compact = True  # type: ignore[attr-defined]
    trl_utils._use_triton = compact_on_cpu
    return True


def plan_steps(recipe: Recipe, trainer: Any) -> dict[str, Any]:
    """Set ``max_steps`` from the token budget (when given); returns the schedule's numbers.

    Tokens per step come from the tokenized (and packed) training split, so the budget holds
    whatever the tokenizer, ``max_length`` and packing make of the data.
    """
    lengths = [len(ids) for ids in trainer.train_dataset["input_ids"]]
    world = trainer.args.world_size
    per_step = recipe.batch_size * recipe.grad_accum * world
    steps_per_epoch = max(1, math.ceil(len(lengths) / per_step))
    tokens_per_step = sum(lengths) / steps_per_epoch
    steps = math.ceil(recipe.epochs * steps_per_epoch)
    if recipe.token_budget is not None:
        steps = min(steps, max(1, math.ceil(recipe.token_budget / tokens_per_step)))
    if recipe.max_steps is not None:
        steps = min(steps, recipe.max_steps)
    trainer.args.max_steps = steps
    return {"max_steps": steps, "steps_per_epoch": steps_per_epoch,
            "rows_per_epoch": len(lengths), "tokens_per_epoch": sum(lengths),
            "tokens_per_step": round(tokens_per_step, 1),
            "planned_tokens": round(steps * tokens_per_step)}


def train(recipe: Recipe, *, data: str | Path | None = None, out: str | Path | None = None,
          resume: bool = False, merge: bool = False, progress: bool = True,
          echo: Any = print, callbacks: list[Any] | None = None) -> TrainResult:
    """Train the adapter the recipe describes; see the module docstring and ``outputs.py``.

    ``callbacks``: extra ``transformers.TrainerCallback``s (timers, tests)."""
    from sllmbo.inference.models import adapters_dir

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
    from sllmbo.errors import ModelNotFoundError
    from sllmbo.inference.models import DEFAULT_MODEL_NAME, resolve_model

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
