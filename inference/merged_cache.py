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

from sllmbo.core.home import sllmbo_home

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


# -- merged GGUF files for the llama.cpp engine ----------------------------------------------

#: Bumped when ``gguf_merge`` changes what it writes, so old files are not reused.
GGUF_MERGE_VERSION = 1


def gguf_key(base: Path, adapter_path: Path | None, out_type: str) -> str:
    """Hash of the adapter's files, the base GGUF's identity (name, size, modification time)
    and the output type."""
    digest = hashlib.sha256(f"gguf-merge={GGUF_MERGE_VERSION}\ntype={out_type}\n".encode())
    stat = base.stat()
    digest.update(f"{base.name}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    if adapter_path is not None:
        for path in sorted(adapter_path.iterdir()):
            if path.is_file() and (path.suffix in _WEIGHT_SUFFIXES
                                   or path.name == "adapter_config.json"):
                digest.update(path.name.encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:20]


def gguf_path(base: Path, adapter_path: Path | None, out_type: str,
              home: str | Path | None = None) -> Path:
    """Where the merged GGUF of ``base`` + ``adapter_path`` at ``out_type`` lives."""
    return (sllmbo_home(home) / "cache" / "gguf"
            / f"{gguf_key(base, adapter_path, out_type)}-{out_type.lower()}.gguf")


def gguf_file(base: Path, adapter_path: Path | None, out_type: str = "Q8_0",
              home: str | Path | None = None, on_note: Any = None) -> Path:
    """The merged GGUF, written on first use (``gguf_merge.merge_to_gguf``, ~15 s on 2 cores)
    and reused while the adapter and base are unchanged. Where the cache cannot be written
    (read-only home) the file goes to a temporary folder for this process."""
    from .gguf_merge import merge_to_gguf

    path = gguf_path(base, adapter_path, out_type, home)
    if path.is_file():
        return path
    if on_note is not None:
        what = "merging the adapter into" if adapter_path is not None else "converting the model to"
        on_note(f"{what} a {out_type} GGUF for llama.cpp (once; cached at {path})")
    try:
        return merge_to_gguf(base, adapter_path, path, out_type)
    except OSError:
        fallback = Path(tempfile.mkdtemp(prefix="sllmbo-gguf-")) / path.name
        return merge_to_gguf(base, adapter_path, fallback, out_type)


def kv_dir(home: str | Path | None = None) -> Path:
    """Prompt KV states the llama.cpp engine keeps between processes."""
    return sllmbo_home(home) / "cache" / "kv"


def prepare_default() -> Path | None:
    """Write the embedded model + shipped adapter's merged GGUF now (``make model``), so the
    first ``sllmbo recommend`` does not pay the ~15 s merge; None where there is no GGUF."""
    from sllmbo.core.home import default_model_path, is_pulled

    from .models import base_gguf, shipped_adapter_path

    if not is_pulled():
        return None
    base = base_gguf(default_model_path())
    if base is None:
        return None
    return gguf_file(base, shipped_adapter_path())


if __name__ == "__main__":
    print(prepare_default() or "no embedded model GGUF: nothing merged")
