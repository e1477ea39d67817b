"""Every sampler ``sllmbo tune --sampler`` knows, with the facts the loop needs about it.

The table is light on purpose (no optuna, no torch): the CLI lists it in ``--help``, and the
loop reads a sampler's facts (does it need an LLM backend, does it label its own trials, its
early-stopping patience, which of tune's options it takes) before building anything. Each
entry names the function that builds its sampler (``"module:function"``); that module is
imported only when the sampler is built. Adding a sampler is its module, one entry here, and
its test.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sllmbo.core.registry import Registry

#: tune's LLM options a sampler may take (``LLMOptions`` field -> the sampler's keyword).
LLM_CALL_OPTIONS: dict[str, str] = {"timeout": "timeout", "temperature": "temperature",
                                    "max_tokens": "max_tokens"}
HYBRID_OPTIONS: dict[str, str] = {"p_llm": "p_llm", "adaptive_p": "adaptive"}


@dataclass(frozen=True)
class SamplerSpec:
    """One sampler's name and facts. ``builder`` is ``"module:function"``; the function takes
    ``space``, ``card``, ``backend``, ``seed`` and the sampler's own keyword options."""

    name: str
    help: str
    builder: str
    needs_backend: bool = False
    #: Sets each trial's source attribute itself (else ``tune`` labels it with the name).
    labels_own_trials: bool = False
    #: Starts from the LLM initializer's enqueued configurations (``--n-initial``).
    runs_initializer: bool = False
    #: Default early-stopping patience in completed trials (0: no early stopping).
    patience: int = 0
    #: Samples in the study's current space (the initializer may have narrowed it), not the
    #: family's default space.
    uses_study_space: bool = False
    #: ``LLMOptions`` fields ``tune`` passes on, and the keyword each becomes.
    tune_options: dict[str, str] = field(default_factory=dict)
    #: ``"module:function"`` giving, from the family and the task card, the configurations
    #: ``tune`` enqueues first on a fresh study (Optuna's ``enqueue_trial``); "" for none.
    warm_start: str = ""

    def build(self, **kwargs: Any) -> Any:
        return _function(self.builder)(**kwargs)

    def warm_configs(self, family: str, card: Any) -> list[dict[str, Any]]:
        """The configurations to try first (``warm_start``); [] for a cold sampler."""
        if not self.warm_start:
            return []
        configs: list[dict[str, Any]] = _function(self.warm_start)(family, card.model_dump())
        return configs

    def options_from(self, options: Any) -> dict[str, Any]:
        """The sampler's keyword options from tune's ``LLMOptions``."""
        return {keyword: getattr(options, name) for name, keyword in self.tune_options.items()}


def _function(reference: str) -> Callable[..., Any]:
    """The function a ``"module:function"`` reference names (its module imported now)."""
    module, _, function = reference.partition(":")
    found: Callable[..., Any] = getattr(importlib.import_module(module), function)
    return found


SAMPLERS: Registry[SamplerSpec] = Registry("sampler")


def register(spec: SamplerSpec) -> SamplerSpec:
    """Add ``spec``; a second sampler under a taken name is refused."""
    return SAMPLERS.register(spec.name, spec)


def names() -> tuple[str, ...]:
    return SAMPLERS.names()


def get(name: str) -> SamplerSpec:
    """The spec of ``name``; an unknown name is one message listing the choices."""
    return SAMPLERS.get_or_fail(name)


register(SamplerSpec(
    name="tpe", help="Optuna's TPE (its defaults: 10 random start-up trials)",
    builder="sllmbo.samplers.optuna_builtin:build_tpe"))
register(SamplerSpec(
    name="tpe-warm",
    help="the log-ratio portfolio's first 3 entries for the task's subtype, then "
         "multivariate TPE (n_startup_trials=3)",
    builder="sllmbo.samplers.optuna_builtin:build_tpe_warm",
    warm_start="sllmbo.data.pool_select:warm_start"))
register(SamplerSpec(
    name="random", help="Optuna's random sampler",
    builder="sllmbo.samplers.optuna_builtin:build_random"))
register(SamplerSpec(
    name="llm", help="the LLM proposes every trial from the history (SLLMBO)",
    builder="sllmbo.samplers.llm:build_llm", needs_backend=True, labels_own_trials=True,
    runs_initializer=True, patience=15, tune_options=LLM_CALL_OPTIONS))
register(SamplerSpec(
    name="llm-tpe", help="the SLLMBO hybrid: LLM or TPE each trial, by --p-llm",
    builder="sllmbo.samplers.llm_tpe:build_llm_tpe", needs_backend=True,
    labels_own_trials=True, runs_initializer=True, patience=5,
    tune_options={**LLM_CALL_OPTIONS, **HYBRID_OPTIONS}))
register(SamplerSpec(
    name="feedback", help="pool entries chosen by the nearest training variants' scores",
    builder="sllmbo.samplers.pool:build_feedback", labels_own_trials=True,
    uses_study_space=True))
register(SamplerSpec(
    name="llm-feedback", help="pool entries the adapter picks given the run's scores",
    builder="sllmbo.samplers.pool:build_llm_feedback", needs_backend=True,
    labels_own_trials=True, uses_study_space=True))
register(SamplerSpec(
    name="gbdt-rank",
    help="pool entries a LightGBM scorer picks by expected improvement, then TPE",
    builder="sllmbo.samplers.gbdt_rank:build_gbdt_rank", labels_own_trials=True,
    uses_study_space=True))
register(SamplerSpec(
    name="llm-rank",
    help="pool entries the LLM scorer picks by expected improvement, then TPE",
    builder="sllmbo.samplers.llm_rank:build_llm_rank", needs_backend=True,
    labels_own_trials=True, uses_study_space=True))
