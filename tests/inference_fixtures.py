"""Builders for inference tests: tiny random-weight Llama models, LoRA adapters, servers.

Tiny models reuse the embedded model's tokenizer (and chat template), so prompts, stop tokens
and grammars behave like the real thing while a forward pass costs microseconds.
"""

from __future__ import annotations

import shutil
import socket
from pathlib import Path
from typing import Any

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja",
                   "special_tokens_map.json")


def copy_tokenizer(src: Path, dst: Path) -> None:
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy(src / name, dst / name)


def build_tiny_llama(dst: Path, tokenizer_src: Path, *, hidden_size: int = 64,
                     seed: int = 0, **overrides: Any) -> Path:
    """A 2-layer random Llama with the embedded tokenizer's vocabulary, saved to ``dst``."""
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=49152, hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=1, eos_token_id=2, pad_token_id=2, **overrides)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst)
    copy_tokenizer(tokenizer_src, dst)
    return dst


def build_lora_adapter(base: Path, dst: Path, *, seed: int = 0, scale: float = 1.0) -> Path:
    """A LoRA adapter on ``base`` whose B matrices are random (peft starts them at zero, which
    would make the adapter a no-op and any 'the adapter changed the output' test vacuous)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8,
                                                  target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, scale)
    peft_model.save_pretrained(dst)
    return dst


def free_port() -> int:
    """A loopback port nothing listens on (bound, read, released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SCHEMAS: dict[str, dict[str, Any]] = {
    "lightgbm": {
        "type": "object",
        "properties": {
            "learning_rate": {"type": "number", "minimum": 0.001, "maximum": 0.3},
            "num_leaves": {"type": "integer", "minimum": 8, "maximum": 256},
            "min_child_samples": {"type": "integer", "minimum": 5, "maximum": 100},
            "boosting_type": {"type": "string", "enum": ["gbdt", "dart", "goss"]},
        },
        "required": ["learning_rate", "num_leaves", "min_child_samples", "boosting_type"],
        "additionalProperties": False,
    },
    "xgboost": {
        "type": "object",
        "properties": {
            "max_depth": {"type": "integer", "minimum": 2, "maximum": 12},
            "eta": {"type": "number", "minimum": 0.001, "maximum": 0.5},
            "subsample": {"type": "number", "minimum": 0.5, "maximum": 1.0},
            "booster": {"type": "string", "enum": ["gbtree", "dart"]},
        },
        "required": ["max_depth", "eta", "subsample", "booster"],
        "additionalProperties": False,
    },
    "random_forest": {
        "type": "object",
        "properties": {
            "n_estimators": {"type": "integer", "minimum": 10, "maximum": 1000},
            "max_features": {"type": "string", "enum": ["sqrt", "log2"]},
            "bootstrap": {"type": "boolean"},
        },
        "required": ["n_estimators", "max_features", "bootstrap"],
        "additionalProperties": False,
    },
    "finite": {  # a finite language: any model, even random weights, must finish it
        "type": "object",
        "properties": {
            "kernel": {"type": "string", "enum": ["rbf", "linear"]},
            "shrinking": {"type": "boolean"},
        },
        "required": ["kernel", "shrinking"],
        "additionalProperties": False,
    },
}


class WordTokenizer:
    """Counts whitespace-separated words: enough to measure examples without a model."""

    name_or_path = "words"

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[str]]:
        return {"input_ids": text.split()}

    def apply_chat_template(self, messages: list[dict[str, str]], tokenize: bool = True,
                            return_dict: bool = True) -> dict[str, list[str]]:
        return {"input_ids": " ".join(m["content"] for m in messages).split()}
