"""The model a run fine-tunes: the recipe's precision resolved against the hardware, the base
model loaded in it (NF4 through bitsandbytes for QLoRA), and the LoRA adapter's config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError

from .recipe import Recipe, RecipeError


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
