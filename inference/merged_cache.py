"""Merged base + LoRA weights kept on disk, so a cold start skips the adapter.

Loading a LoRA adapter means importing peft (which pulls in bitsandbytes and torch's
compiler: about a second here), reading the adapter and folding it into every layer. The
result is the same for the same base weights, adapter and dtype, so the first load saves it
(``save_pretrained``, safetensors) under ``$SLLMBO_HOME/cache/merged/<key>`` and later loads
read it like any model folder. The key hashes the adapter's files and the base model's
config and weight files (name, size, modification time) and the dtype: a retrained adapter or
a re-pulled model gets a new entry. Writing is best effort (a read-only home just skips it);
a half-written entry never becomes visible (written to a temporary folder, then renamed).
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from pathlib import Path
from typing import Any

from .models import sllmbo_home

#: Files of a model folder whose identity decides the merged weights.
_WEIGHT_SUFFIXES = (".safetensors", ".bin")


def cache_key(model_path: Path, adapter_path: Path, dtype: str) -> str:
    digest = hashlib.sha256(f"dtype={dtype}\n".encode())
    for path in sorted(adapter_path.iterdir()):
        if path.is_file() and (path.suffix in _WEIGHT_SUFFIXES or path.name.endswith(".json")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    for path in sorted(model_path.iterdir()):
        if path.name == "config.json":
            digest.update(path.read_bytes())
        elif path.is_file() and path.suffix in _WEIGHT_SUFFIXES:
            stat = path.stat()
            digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:20]


def cache_dir(model_path: Path, adapter_path: Path, dtype: str,
              home: str | Path | None = None) -> Path:
    return sllmbo_home(home) / "cache" / "merged" / cache_key(model_path, adapter_path, dtype)


def is_complete(folder: Path) -> bool:
    return (folder / "config.json").is_file() and any(
        p.suffix == ".safetensors" for p in folder.glob("*.safetensors"))


def save(model: Any, folder: Path) -> bool:
    """Write ``model`` (merged, plain ``PreTrainedModel``) to ``folder``; False if it could
    not be written (the cache is an optimization, never a failure)."""
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=folder.parent))
    except OSError:
        return False
    try:
        model.save_pretrained(staging, safe_serialization=True)
        staging.rename(folder)
        return True
    except OSError:  # full disk, read-only, or another process renamed its copy first
        shutil.rmtree(staging, ignore_errors=True)
        return is_complete(folder)
