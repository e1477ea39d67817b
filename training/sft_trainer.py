"""The trainer of a run: TRL's ``SFTTrainer`` on prompt/completion rows (completion-only loss,
packing, the chat template), or a ``transformers.Trainer`` on shared-prefix packs; both share
one set of ``TrainingArguments``, and ``plan_steps`` turns a token budget into a step count.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError

from .recipe import Recipe
from .sft_model import load_base, lora_config, resolve_precision

#: The checkpoints' folder inside a run's OUT (removed once the adapter is written).
CHECKPOINTS = "checkpoints"


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
