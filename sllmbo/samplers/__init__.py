"""Optuna samplers driven by an LLM: ``LLMSampler`` and the ``LLMTPESampler`` hybrid, the
few-shot ``PoolSampler`` (``feedback``, ``llm-feedback``), and ``build_sampler`` that makes any
sampler ``sllmbo tune`` knows by name (the names and their facts: ``samplers.registry``).

The package is light: the CLI reads the registry for ``--help``, and a sampler's module (and
optuna with it) is imported when the sampler is first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from sllmbo.samplers import registry

if TYPE_CHECKING:
    from optuna.samplers import BaseSampler

    from sllmbo.core.space import SearchSpace
    from sllmbo.core.taskcard import TaskCard
    from sllmbo.inference.base import Backend
    from sllmbo.samplers.llm import LLMSampler
    from sllmbo.samplers.llm_tpe import LLMTPESampler
    from sllmbo.samplers.pool import PoolSampler

_LAZY = {"LLMSampler": "sllmbo.samplers.llm", "LLMTPESampler": "sllmbo.samplers.llm_tpe",
         "PoolSampler": "sllmbo.samplers.pool"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def build_sampler(
    kind: str,
    *,
    space: SearchSpace | None = None,
    card: TaskCard | None = None,
    backend: Backend | None = None,
    seed: int | None = None,
    **options: Any,
) -> BaseSampler:
    """A sampler by its registered name (``sllmbo.samplers.registry``): ``tpe`` and ``random``
    are Optuna's (seeded; ``options`` must be empty), ``llm`` and ``llm-tpe`` need a
    ``backend`` and take their constructors' options; ``feedback`` and ``llm-feedback`` (the
    latter needs a ``backend``) need ``card`` and ``space`` and take no options."""
    return registry.get(kind).build(space=space, card=card, backend=backend, seed=seed,
                                    **options)


__all__ = ["LLMSampler", "LLMTPESampler", "PoolSampler", "build_sampler"]
