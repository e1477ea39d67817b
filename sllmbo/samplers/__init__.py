"""Optuna samplers driven by an LLM: ``LLMSampler`` and the ``LLMTPESampler`` hybrid, the
few-shot ``PoolSampler`` (``feedback``, ``llm-feedback``), and ``build_sampler`` that makes any
sampler ``sllmbo tune`` knows by name."""

from __future__ import annotations

from typing import Any

from optuna.samplers import BaseSampler, RandomSampler, TPESampler

from sllmbo.errors import SllmboError
from sllmbo.inference.base import Backend
from sllmbo.samplers.llm import LLMSampler
from sllmbo.samplers.llm_tpe import LLMTPESampler
from sllmbo.samplers.pool import PoolSampler, feedback_sampler
from sllmbo.space import SearchSpace
from sllmbo.taskcard import TaskCard

KINDS = ("tpe", "random", "llm", "llm-tpe", "feedback", "llm-feedback")
#: Samplers that try the committed pool's entries, chosen from the run's own scores.
POOL_KINDS = ("feedback", "llm-feedback")
#: Options only the hybrid takes.
_HYBRID_ONLY = ("p_llm", "adaptive", "p_min", "p_max", "window")


def check_kind(kind: str) -> None:
    """``SllmboError`` naming the choices when ``build_sampler`` does not know ``kind``."""
    if kind not in KINDS:
        raise SllmboError(f"unknown sampler '{kind}'", hint=f"choose one of: {', '.join(KINDS)}")


def build_sampler(
    kind: str,
    *,
    space: SearchSpace | None = None,
    card: TaskCard | None = None,
    backend: Backend | None = None,
    seed: int | None = None,
    **options: Any,
) -> BaseSampler:
    """A sampler by name: ``tpe`` and ``random`` are Optuna's (seeded; ``options`` must be
    empty), ``llm`` and ``llm-tpe`` need a ``backend`` and take their constructors' options;
    ``feedback`` and ``llm-feedback`` (the latter needs a ``backend``) need ``card`` and
    ``space`` and take no options."""
    if kind in POOL_KINDS:
        if options:
            raise SllmboError(f"sampler '{kind}' takes no options, got {sorted(options)}")
        if card is None or space is None:
            raise SllmboError(f"sampler '{kind}' needs the task card and the search space")
        return feedback_sampler(kind, family=card.model_family, card=card, space=space,
                                seed=seed, backend=backend)
    if kind in ("tpe", "random"):
        if options:
            raise SllmboError(f"sampler '{kind}' takes no options, got {sorted(options)}")
        return TPESampler(seed=seed) if kind == "tpe" else RandomSampler(seed=seed)
    check_kind(kind)
    if backend is None:
        raise SllmboError(f"sampler '{kind}' needs an LLM backend",
                          hint="pass backend=create_backend(...) or use --backend")
    if kind == "llm":
        misplaced = sorted(set(options) & set(_HYBRID_ONLY))
        if misplaced:
            raise SllmboError(f"options {misplaced} are for sampler 'llm-tpe', not 'llm'")
        return LLMSampler(backend=backend, space=space, card=card, seed=seed, **options)
    return LLMTPESampler(backend=backend, space=space, card=card, seed=seed, **options)


__all__ = ["KINDS", "POOL_KINDS", "LLMSampler", "LLMTPESampler", "PoolSampler",
           "build_sampler", "check_kind"]
