"""sllmbo: hyperparameter optimization with a local, fine-tuned LLM on Optuna.

``import sllmbo`` is light; ``tune``, ``recommend`` and the samplers load on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "tune": "sllmbo.tune",
    "recommend": "sllmbo.recommend",
    "LLMSampler": "sllmbo.samplers",
    "LLMTPESampler": "sllmbo.samplers",
    "SearchSpace": "sllmbo.core.space",
    "TaskCard": "sllmbo.core.taskcard",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sllmbo' has no attribute {name!r}")


__all__ = list(_LAZY)
