"""Training recipes: one YAML file per adapter, validated before anything heavy is loaded.

A recipe is flat (``key: value``), so any key can be overridden from the command line
(``sllmbo train --set lora_r=8``). Unknown keys and bad values fail with one message that
lists every problem; the resolved recipe is saved next to the adapter it produced
(``recipe.json``).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sllmbo.core.errors import SllmboError
from sllmbo.core.taskcard import load_yaml

#: The recipes that ship with the project (``training/recipes/*.yaml``).
RECIPES_DIR = Path(__file__).resolve().parent / "recipes"


class RecipeError(SllmboError):
    """A recipe file is missing, not YAML, or holds unknown keys or bad values."""


class Recipe(BaseModel):
    """How one adapter is trained. Defaults suit a small model on CPU."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(default="adapter", min_length=1, pattern=r"^[A-Za-z0-9._-]+$",
                      description="adapter name: the default output folder is "
                      "$SLLMBO_HOME/adapters/<name>")
    base_model: str = Field(default="smollm2-135m-instruct", min_length=1,
                            description="a local Hugging Face causal-LM folder, or a model "
                            "name under $SLLMBO_HOME/models (default: the embedded model)")
    data: str | None = Field(default=None, description="instruction-data folder written by "
                             "`sllmbo data build` (default: runs/instructions)")
    # -- LoRA / QLoRA ---------------------------------------------------------------------
    quantization: Literal["none", "nf4"] = Field(
        default="none", description="nf4: QLoRA, the base loaded in 4-bit NF4 with double "
        "quantization through bitsandbytes (CPU or CUDA)")
    lora_r: int = Field(default=16, ge=1, le=1024, description="LoRA rank")
    lora_alpha: float = Field(default=32.0, gt=0, description="LoRA scale numerator "
                              "(the update is scaled by alpha / r)")
    lora_dropout: float = Field(default=0.05, ge=0.0, lt=1.0)
    lora_target_modules: Literal["all-linear"] | list[str] = Field(
        default="all-linear", description="'all-linear' (every linear layer but the output "
        "head) or module names such as [q_proj, v_proj]")
    # -- the schedule -----------------------------------------------------------------------
    epochs: float = Field(default=1.0, gt=0, description="passes over the training split")
    max_steps: int | None = Field(default=None, ge=1, description="optimizer steps; caps "
                                  "epochs and token_budget")
    token_budget: int | None = Field(
        default=None, ge=1, description="stop after about this many training tokens (prompt "
        "and completion, no padding): sets the step count from the data's mean example length")
    batch_size: int = Field(default=8, ge=1, description="sequences (or packs) per device "
                            "and step")
    grad_accum: int = Field(default=1, ge=1, description="batches per optimizer step")
    learning_rate: float = Field(default=2e-4, gt=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = "cosine"
    warmup_ratio: float = Field(default=0.03, ge=0.0, lt=1.0,
                                description="share of the steps spent warming up")
    weight_decay: float = Field(default=0.0, ge=0.0)
    max_grad_norm: float = Field(default=1.0, gt=0)
    seed: int = Field(default=0, ge=0)
    # -- sequences and speed ----------------------------------------------------------------
    max_length: int = Field(default=1024, ge=16, description="tokens per sequence (per pack "
                            "with packing); longer examples are cut from the end")
    packing: bool = Field(default=False, description="padding-free packing (best-fit "
                          "decreasing): examples share a row, attention kept apart by "
                          "position ids; no padding is computed")
    shared_prefix: bool = Field(default=False, description="pack examples that share a "
                                "prompt head (the matrix's scoring and single-shot groups) "
                                "behind one copy of it, each tail masked to see only the head "
                                "and itself: the head is computed once per pack")
    shared_prefix_min_tokens: int = Field(default=32, ge=1, description="the fewest shared "
                                          "tokens that make two examples one pack")
    precision: Literal["auto", "fp32", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 on CUDA and on CPUs with native bf16 "
        "(AVX512-BF16/AMX, under autocast with fp32 master weights), else fp32")
    gradient_checkpointing: bool = Field(default=False, description="recompute activations "
                                         "in the backward pass: less memory, ~30% slower")
    # -- evaluation, logging, checkpoints -------------------------------------------------
    eval_steps: int = Field(default=100, ge=0, description="validation loss every this many "
                            "steps (0: only at the end)")
    eval_max_examples: int | None = Field(default=256, ge=1, description="a fixed random "
                                          "subset of the validation split (None: all)")
    logging_steps: int = Field(default=5, ge=1)
    save_steps: int = Field(default=50, ge=1, description="checkpoint every this many steps")
    save_total_limit: int = Field(default=2, ge=1, description="checkpoints kept")

    @model_validator(mode="after")
    def _cross_checks(self) -> Recipe:
        if isinstance(self.lora_target_modules, list):
            if not self.lora_target_modules or not all(
                    isinstance(m, str) and m for m in self.lora_target_modules):
                raise ValueError("lora_target_modules must be 'all-linear' or a non-empty "
                                 "list of module names")
            if "lm_head" in self.lora_target_modules:
                raise ValueError("lora_target_modules cannot include lm_head (TRL computes the "
                                 "loss from its weight directly, so the adapter would not train)")
        if self.shared_prefix and self.packing:
            raise ValueError("packing and shared_prefix are two ways to pack; choose one")
        if self.quantization == "nf4" and self.precision == "fp16":
            raise ValueError("quantization nf4 computes in bf16 or fp32; use precision auto, "
                             "bf16 or fp32")
        return self

    def overridden(self, changes: Mapping[str, Any]) -> Recipe:
        """A copy with ``changes`` applied and validated again."""
        return parse_recipe({**self.model_dump(), **changes}, "recipe with overrides")


def parse_recipe(data: Any, source: str) -> Recipe:
    """A ``Recipe`` from a mapping; ``RecipeError`` listing every unknown key and bad value."""
    if not isinstance(data, Mapping):
        raise RecipeError(f"{source} must be a mapping of recipe keys, got "
                          f"{type(data).__name__}", hint=_keys_hint())
    try:
        return Recipe.model_validate(dict(data))
    except ValidationError as err:
        problems = [_problem(e) for e in err.errors()]
        raise RecipeError(f"{source} is not a valid recipe: " + "; ".join(problems),
                          hint=_keys_hint()) from None


def load_recipe(path: str | Path, overrides: Mapping[str, Any] | None = None) -> Recipe:
    """Read a recipe YAML file (a path, or the name of a shipped recipe) and apply
    ``overrides`` (keys as in the file). The name defaults to the file's stem."""
    import yaml

    path = resolve_recipe_path(path)
    try:
        data = load_yaml(path.read_text())
    except OSError as err:
        raise RecipeError(f"cannot read recipe {path}: {err.strerror}") from None
    except yaml.YAMLError as err:
        raise RecipeError(f"recipe {path} is not valid YAML: {str(err).splitlines()[0]}",
                          hint="check indentation and quoting") from None
    if data is None:
        data = {}
    if isinstance(data, Mapping):
        data = {"name": path.stem, **data, **(overrides or {})}
    return parse_recipe(data, f"recipe {path}")


def resolve_recipe_path(path: str | Path) -> Path:
    """``path`` when it is a file, else a shipped recipe of that name (with or without .yaml)."""
    candidate = Path(path).expanduser()
    if candidate.is_file():
        return candidate
    shipped = RECIPES_DIR / (candidate.name if candidate.suffix else f"{candidate.name}.yaml")
    if candidate.parent == Path(".") and shipped.is_file():
        return shipped
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    raise RecipeError(f"no recipe at {candidate}",
                      hint=f"pass a recipe YAML file, or one of the shipped recipes: {names}")


def parse_overrides(items: list[str]) -> dict[str, Any]:
    """``["lora_r=8", "packing=true"]`` -> ``{"lora_r": 8, "packing": True}`` (values as YAML)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise RecipeError(f"--set takes KEY=VALUE, got {item!r}",
                              hint="e.g. --set lora_r=8 --set packing=true")
        try:
            out[key.strip()] = load_yaml(value)
        except yaml.YAMLError:
            raise RecipeError(f"--set {key}: {value!r} is not a YAML value") from None
    return out


def _problem(error: Mapping[str, Any]) -> str:
    loc = ".".join(str(p) for p in error["loc"])
    if error["type"] == "extra_forbidden":
        close = difflib.get_close_matches(loc, list(Recipe.model_fields), n=1)
        return f"unknown key '{loc}'" + (f" (did you mean '{close[0]}'?)" if close else "")
    if not loc:  # a cross-field check
        return str(error["msg"]).removeprefix("Value error, ")
    got = error.get("input")
    return f"{loc}: {error['msg']} (got {got!r})"


def _keys_hint() -> str:
    return "recipe keys: " + ", ".join(Recipe.model_fields)
