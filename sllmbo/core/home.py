"""Where local models and adapters live on disk: the model store every stage reads.

Data measures examples with the embedded model's tokenizer, training starts from it and the
backends load it, so its location is a foundation fact, not an inference one. Pulling the
model (``sllmbo models pull``) stays in :mod:`sllmbo.inference.models`.

Layout under ``$SLLMBO_HOME`` (default ``~/.cache/sllmbo``)::

    models/<name>/      Hugging Face causal-LM folders (config.json + weights + tokenizer)
    adapters/<name>/    PEFT adapter folders (adapter_config.json)
"""

from __future__ import annotations

import os
from pathlib import Path

from sllmbo.core.errors import ModelNotFoundError

DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
#: Written last by a pull: a folder without it is an interrupted pull and is redone.
MARKER = ".sllmbo-complete"
PULL_HINT = "run `sllmbo models pull` (or `make model`) to fetch the embedded default model"


def sllmbo_home(home: str | Path | None = None) -> Path:
    """``home``, else ``$SLLMBO_HOME``, else ``~/.cache/sllmbo``."""
    if home is not None:
        return Path(home).expanduser()
    env = os.environ.get("SLLMBO_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sllmbo"


def models_dir(home: str | Path | None = None) -> Path:
    return sllmbo_home(home) / "models"


def adapters_dir(home: str | Path | None = None) -> Path:
    return sllmbo_home(home) / "adapters"


def default_model_path(home: str | Path | None = None) -> Path:
    """Where the embedded default model lives once pulled (it may not exist yet)."""
    return models_dir(home) / DEFAULT_MODEL_NAME


def is_pulled(home: str | Path | None = None) -> bool:
    return (default_model_path(home) / MARKER).is_file()


def resolve_model(llm: str | None, home: str | Path | None = None) -> Path:
    """The LLM's model folder from ``llm``: a path, a name under ``$SLLMBO_HOME/models``, or
    None (the embedded default).

    Raises ``ModelNotFoundError`` with the pull hint when nothing usable is there.
    """
    if llm is None or llm == DEFAULT_MODEL_NAME:
        path = default_model_path(home)
        if not is_pulled(home):
            raise ModelNotFoundError(f"no model at {path}", hint=PULL_HINT)
        return path
    candidate = Path(llm).expanduser()
    if not candidate.exists() and os.sep not in llm:
        candidate = models_dir(home) / llm
    if not candidate.is_dir():
        raise ModelNotFoundError(
            f"no model at {candidate}",
            hint=f"pass a local Hugging Face model folder, or {PULL_HINT}",
        )
    return candidate
