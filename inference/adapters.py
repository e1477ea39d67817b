"""Checks that a PEFT adapter folder fits a base model, before any weights are loaded.

A LoRA adapter trained on another base (another hidden size or vocabulary) fails deep inside
peft or vLLM with a size-mismatch traceback; these checks turn that into one message that names
both folders and the differing field.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sllmbo.core.errors import BackendError

#: Config fields that must agree between the adapter's recorded base and the base in use.
_SHAPE_FIELDS = ("model_type", "hidden_size", "vocab_size", "num_hidden_layers",
                 "intermediate_size", "num_attention_heads", "num_key_value_heads")


def read_adapter_config(adapter: Path) -> dict[str, Any]:
    """The adapter's ``adapter_config.json`` as a dict; ``BackendError`` when unreadable."""
    path = adapter / "adapter_config.json"
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise BackendError(f"no adapter_config.json in {adapter}",
                           hint="pass a PEFT adapter folder (save_pretrained writes "
                           "adapter_config.json next to the weights)") from None
    except (OSError, json.JSONDecodeError) as err:
        raise BackendError(f"cannot read {path}: {err}") from None
    if not isinstance(config, dict):
        raise BackendError(f"{path} is not a JSON object")
    return config


def check_adapter_fits(adapter: Path, base: Path, base_config: dict[str, Any]) -> None:
    """Raise ``BackendError`` when the adapter was trained on a visibly different base.

    Compares the adapter's recorded base config (when ``base_model_name_or_path`` is a local
    folder, or ``base_config.json`` saved beside it by our trainer) with ``base_config``.
    An adapter whose base cannot be inspected passes here; peft's own shape checks still run.
    """
    adapter_config = read_adapter_config(adapter)
    recorded = _recorded_base_config(adapter, adapter_config)
    if recorded is None:
        return
    diffs = [f"{key}: adapter base {recorded[key]!r} vs model {base_config.get(key)!r}"
             for key in _SHAPE_FIELDS
             if key in recorded and key in base_config and recorded[key] != base_config[key]]
    if diffs:
        raise BackendError(
            f"adapter {adapter} was trained on a different base model than {base} ("
            + "; ".join(diffs) + ")",
            hint=f"use the base the adapter was trained on "
            f"({adapter_config.get('base_model_name_or_path')!r}) or retrain the adapter",
        )


def _recorded_base_config(adapter: Path, adapter_config: dict[str, Any]) -> dict[str, Any] | None:
    saved = adapter / "base_config.json"  # written by sllmbo's trainer when present
    candidates = [saved]
    base_name = adapter_config.get("base_model_name_or_path")
    if isinstance(base_name, str) and base_name:
        base_path = Path(base_name).expanduser()
        if not base_path.is_absolute():
            base_path = (adapter / base_path).resolve()
        candidates.append(base_path / "config.json")
    for path in candidates:
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict):
                return data.get("text_config", data) if "hidden_size" not in data else data
    return None
