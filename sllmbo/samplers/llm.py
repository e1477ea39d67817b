"""``LLMSampler``: each trial's whole configuration is proposed by an LLM.

The prompt holds the task card, the current search space and a history summary sized to the
backend's context. The answer is data: parsed as JSON, clipped into the space (every repair
counted), snapped to Optuna step grids, coerced to plain ``int``/``float``. A rejected answer
(unparseable, unrepairable, or a repeat of an evaluated configuration) gets ONE retry with the
reason shown to the model; after that, or on a backend error or timeout, the trial is sampled
by TPE and marked ``source="fallback"`` with its cause. The study always goes on.

No state that matters lives in the sampler: the current space is read from the study
(``sllmbo:space``), counters are written into each trial's user attributes, so any number of
worker processes can share one storage and a killed run resumes from storage alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.samplers import BaseSampler, TPESampler
from optuna.search_space import intersection_search_space
from optuna.trial import FrozenTrial, TrialState

from sllmbo.core.errors import SllmboError
from sllmbo.core.optimizer_prompt import DEFAULT_PROMPT_TOKENS, PromptBudget, optimizer_prompt
from sllmbo.core.prompts import config_schema
from sllmbo.core.space import SearchSpace
from sllmbo.core.studyinfo import get_space
from sllmbo.core.taskcard import TaskCard
from sllmbo.inference.base import Backend, SamplingParams
from sllmbo.samplers import attrs
from sllmbo.samplers.calls import Answer, DuplicateError, ask_json

if TYPE_CHECKING:
    from optuna.study import Study


@dataclass(frozen=True)
class Proposal:
    """One LLM question's outcome: ``params`` is None when it failed (see ``answer.cause``)."""

    params: dict[str, Any] | None
    repairs: list[str]
    answer: Answer[Any]
    history_k: tuple[int, int]
    #: The finished trials the prompt was built from (what a replay needs).
    history_trials: tuple[int, ...] = ()


class LLMSampler(BaseSampler):
    """Sample whole configurations from an LLM, with TPE as the counted fallback.

    Args:
        backend: the LLM (any :class:`sllmbo.inference.base.Backend`).
        space: the search space when the study holds none in ``sllmbo:space``; with neither,
            the intersection of the completed trials' distributions is used (as TPE's
            multivariate mode does), so the sampler works in any plain Optuna study.
        card: the task card; default: the study's ``sllmbo:task_card`` if any.
        seed: seeds the request seeds and the default TPE samplers.
        independent_sampler: samples parameters outside the relative space (default: TPE).
        fallback_sampler: samples a whole configuration when the LLM fails (default: TPE,
            the same instance as the independent sampler).
        temperature, top_p, max_tokens: decoding settings of each request.
        timeout: seconds to wait for one answer (None: wait as long as the backend does).
        max_retries: re-asks after a rejected answer (the paper's loop: 1).
        k_best, k_recent: most trials shown in the history table (shrunk to fit the context).
        max_prompt_tokens: the history shrinks until the prompt and the answer fit this many
            tokens or the backend's context, whichever is smaller (the instruction data is
            built to the same budget; None: the backend's context).
    """

    def __init__(
        self,
        *,
        backend: Backend,
        space: SearchSpace | None = None,
        card: TaskCard | None = None,
        seed: int | None = None,
        independent_sampler: BaseSampler | None = None,
        fallback_sampler: BaseSampler | None = None,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 256,
        timeout: float | None = None,
        max_retries: int = 1,
        k_best: int = 10,
        k_recent: int = 5,
        max_prompt_tokens: int | None = DEFAULT_PROMPT_TOKENS,
    ) -> None:
        if not isinstance(backend, Backend):
            raise TypeError(f"backend must be a sllmbo Backend, got {type(backend).__name__}")
        if space is not None and not isinstance(space, SearchSpace):
            raise TypeError(f"space must be a SearchSpace, got {type(space).__name__}")
        if card is not None and not isinstance(card, TaskCard):
            raise TypeError(f"card must be a TaskCard, got {type(card).__name__}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds or None, got {timeout}")
        if max_prompt_tokens is not None and max_prompt_tokens < max_tokens:
            raise ValueError(f"max_prompt_tokens must be >= max_tokens ({max_tokens}), got "
                             f"{max_prompt_tokens}")
        if max_retries < 0 or k_best < 0 or k_recent < 0:
            raise ValueError(
                "max_retries, k_best and k_recent must be >= 0, got "
                f"{max_retries}, {k_best}, {k_recent}"
            )
        # Validates temperature, top_p and max_tokens now rather than at the first trial.
        SamplingParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p)
        self._backend = backend
        self._space = space
        self._card = card
        self._seed = seed
        self._tpe = fallback_sampler or independent_sampler or TPESampler(seed=seed)
        self._independent = independent_sampler or self._tpe
        self._temperature = temperature
        self._top_p = top_p
        self._max_tokens = max_tokens
        self._timeout = timeout
        self._max_retries = max_retries
        self._k_best = k_best
        self._k_recent = k_recent
        self._max_prompt_tokens = max_prompt_tokens
        self._rng_state: np.random.RandomState | None = None

    # -- Optuna's sampler interface ------------------------------------------------------------
    def reseed_rng(self) -> None:
        self._rng.seed()
        for sampler in {id(s): s for s in (self._tpe, self._independent)}.values():
            sampler.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._independent.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self._independent.after_trial(study, trial, state, values)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        space = self.current_space(study)
        if space is not None:
            return space.to_optuna()
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        return {n: d for n, d in intersection_search_space(complete).items() if not d.single()}

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if not search_space or "fixed_params" in trial.system_attrs:
            # Enqueued trials (the initializer's configurations) keep their own values.
            return {}
        proposal = self.propose(study, trial, search_space)
        record = self.answer_attrs(proposal.answer, proposal.repairs)
        record[attrs.HISTORY_K] = list(proposal.history_k)
        record[attrs.HISTORY_TRIALS] = list(proposal.history_trials)
        if proposal.params is None:
            record[attrs.SOURCE] = "fallback"
            record[attrs.FALLBACK_CAUSE] = proposal.answer.cause
            params = self.fallback_params(study, trial, search_space)
        else:
            record[attrs.SOURCE] = "llm"
            params = proposal.params
        attrs.set_trial_attrs(study, trial, record)
        return params

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._raise_error_if_multi_objective(study)
        return self._independent.sample_independent(study, trial, param_name, param_distribution)

    # -- the LLM step ----------------------------------------------------------------------------
    def current_space(self, study: Study) -> SearchSpace | None:
        """The study's adapted space if any, else the constructor's ``space`` (may be None)."""
        if self._space is None and "sllmbo:space" not in study.user_attrs:
            return None
        return get_space(study, self._space)  # type: ignore[arg-type]

    def card(self, study: Study) -> TaskCard | None:
        return self._card if self._card is not None else TaskCard.from_study(study)

    def propose(
        self, study: Study, trial: FrozenTrial, search_space: Mapping[str, BaseDistribution]
    ) -> Proposal:
        """Ask the LLM for a configuration of ``search_space``; the answer may be a failure."""
        space = SearchSpace.from_optuna(search_space)
        others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
        card = self.card(study)
        prompt = optimizer_prompt(
            card, space, others, study.direction.name.lower(),
            PromptBudget(context_length=self._context_tokens(),
                         count_tokens=self._backend.count_tokens, max_new_tokens=self._max_tokens,
                         k_best=self._k_best, k_recent=self._k_recent),
        )
        summary = prompt.summary
        seen = {config_key(t.params) for t in others if t.params}

        def check(data: Any) -> tuple[dict[str, Any], list[str]]:
            params, repairs = coerce(data, space, search_space)
            if config_key(params) in seen:
                raise DuplicateError(
                    f"the configuration {params} was already evaluated; propose a new one"
                )
            return params, repairs

        sampling = SamplingParams(
            max_tokens=self._max_tokens, temperature=self._temperature, top_p=self._top_p,
            seed=self._request_seed(trial),
        )
        answer = ask_json(
            self._backend, prompt.messages, check,
            schema=config_schema(space), sampling=sampling, timeout=self._timeout,
            max_retries=self._max_retries,
        )
        params, repairs = answer.value if answer.value is not None else (None, [])
        return Proposal(params, repairs, answer, (summary.k_best, summary.k_recent),
                        prompt.history_trials)

    def _context_tokens(self) -> int:
        context = self._backend.context_length
        return context if self._max_prompt_tokens is None else min(context, self._max_prompt_tokens)

    @staticmethod
    def answer_attrs(answer: Answer[Any], repairs: list[str]) -> dict[str, Any]:
        """The trial attributes that account for one LLM question."""
        record: dict[str, Any] = {
            attrs.LLM_CALLS: answer.stats.calls,
            attrs.LATENCY_S: round(answer.stats.latency_s, 4),
            attrs.PROMPT_TOKENS: answer.stats.prompt_tokens,
            attrs.COMPLETION_TOKENS: answer.stats.completion_tokens,
            attrs.RETRIES: answer.retries,
            attrs.REPAIRS: list(repairs),
        }
        if answer.error:
            record[attrs.VALIDATION_ERROR] = answer.error[:500]
        return record

    def fallback_params(
        self, study: Study, trial: FrozenTrial, search_space: Mapping[str, BaseDistribution]
    ) -> dict[str, Any]:
        """A whole configuration from the fallback sampler (TPE, one parameter at a time)."""
        return {
            name: _plain_value(dist, self._tpe.sample_independent(study, trial, name, dist))
            for name, dist in search_space.items()
        }

    @property
    def _rng(self) -> np.random.RandomState:
        if self._rng_state is None:
            self._rng_state = np.random.RandomState(self._seed)
        return self._rng_state

    def _request_seed(self, trial: FrozenTrial) -> int:
        # With a seed, the request seed depends on the trial number only, so a resumed run
        # or another worker asks the same question the same way.
        if self._seed is not None:
            return (self._seed * 1_000_003 + trial.number) % (2**31)
        return int(self._rng.randint(2**31))


def config_key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """A hashable identity of a configuration; floats compared to 10 significant digits."""
    def norm(v: Any) -> Any:
        if isinstance(v, float) and math.isfinite(v):
            return ("f", float(f"{v:.10g}"))
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            return ("f", float(v))
        return (type(v).__name__, v)

    return tuple(sorted((k, norm(v)) for k, v in params.items()))


def accept_config(
    data: Any, space: SearchSpace, seen: set[Any]
) -> tuple[dict[str, Any], list[str]]:
    """``data`` clipped into ``space`` and validated, unless it repeats a key in ``seen``.

    The one rule for zero-shot configurations (the initializer's and ``recommend``'s): raises
    ``ConfigError`` for what cannot be repaired and ``DuplicateError`` for a repeat; an
    accepted configuration's key is added to ``seen``. Returns (config, repairs).
    """
    fixed, repairs = space.clip(data)
    config = space.validate(fixed)
    key = config_key(config)
    if key in seen:
        raise DuplicateError("repeats an earlier configuration")
    seen.add(key)
    return config, repairs


def coerce(
    data: Any, space: SearchSpace, distributions: Mapping[str, BaseDistribution]
) -> tuple[dict[str, Any], list[str]]:
    """Clip ``data`` into ``space``, snap to step grids, plain types; list every repair.

    Raises ``ConfigError`` for what cannot be repaired (not an object, missing keys,
    non-numbers, unknown choices).
    """
    fixed, repairs = space.clip(data)
    out: dict[str, Any] = {}
    for name, value in space.validate(fixed).items():
        dist = distributions[name]
        snapped = _snap(dist, value)
        if snapped != value:
            repairs.append(f"snapped '{name}' from {value!r} to the step grid: {snapped!r}")
        out[name] = _plain_value(dist, snapped)
    return out, repairs


def _snap(dist: BaseDistribution, value: Any) -> Any:
    step = getattr(dist, "step", None)
    if step is None or isinstance(dist, CategoricalDistribution):
        return value
    low, high = dist.low, dist.high  # type: ignore[attr-defined]
    k = round((value - low) / step)
    snapped = min(max(low + k * step, low), high)
    return int(snapped) if isinstance(dist, IntDistribution) else float(snapped)


def _plain_value(dist: BaseDistribution, value: Any) -> Any:
    """Plain ``int``/``float`` (Optuna and JSON dislike numpy scalars)."""
    if isinstance(dist, IntDistribution):
        return int(value)
    if isinstance(dist, FloatDistribution):
        return float(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


#: Options only the hybrid (``llm-tpe``) takes.
HYBRID_ONLY = ("p_llm", "adaptive", "p_min", "p_max", "window")


def require_backend(name: str, backend: Backend | None) -> Backend:
    if backend is None:
        raise SllmboError(f"sampler '{name}' needs an LLM backend",
                          hint="pass backend=create_backend(...) or use --backend")
    return backend


def build_llm(*, backend: Backend | None = None, space: SearchSpace | None = None,
              card: TaskCard | None = None, seed: int | None = None,
              **options: Any) -> LLMSampler:
    """``llm`` by name (``sllmbo.samplers.registry``): the constructor's options, not the
    hybrid's."""
    backend = require_backend("llm", backend)
    misplaced = sorted(set(options) & set(HYBRID_ONLY))
    if misplaced:
        raise SllmboError(f"options {misplaced} are for sampler 'llm-tpe', not 'llm'")
    return LLMSampler(backend=backend, space=space, card=card, seed=seed, **options)
