"""``LLMTPESampler``: per trial, the LLM with probability ``p``, else Optuna's TPE.

The paper's hybrid (SLLMBO, arXiv 2410.20302) balances the LLM's prior knowledge with TPE's
exploitation of the observed trials; both draw on the same trials of the same study.

With ``adaptive=True``, ``p`` follows whichever source has been improving the best value. The
rule, computed from the stored trials only (so every worker agrees and a resume continues):

* walk the completed trials in order, marking each that improved the best value so far;
* over the last ``window`` trials whose source is ``llm`` or ``tpe`` (a ``fallback`` trial was
  sampled by TPE and counts as ``tpe``), estimate each source's improvement rate with a
  uniform prior, ``r = (improvements + 1) / (trials + 2)``;
* move the prior odds by the ratio of the rates: ``odds = p0 / (1 - p0) * r_llm / r_tpe``,
  ``p = odds / (1 + odds)``, clamped to ``[p_min, p_max]`` so neither source is ever starved.

With no data both rates are 1/2 and ``p == p0``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from sllmbo.core import history as hist
from sllmbo.core.space import SearchSpace
from sllmbo.core.taskcard import TaskCard
from sllmbo.inference.base import Backend
from sllmbo.samplers import attrs
from sllmbo.samplers.llm import LLMSampler, _plain_value, require_backend

if TYPE_CHECKING:
    from optuna.study import Study


def adapted_p(
    trials: Sequence[FrozenTrial],
    direction: str,
    *,
    p0: float,
    p_min: float,
    p_max: float,
    window: int,
) -> float:
    """The LLM probability for the next trial (see the module docstring for the rule)."""
    records = hist.to_records(trials)
    improving = {number for number, _ in hist.best_so_far(records, direction)}
    outcomes: list[tuple[str, bool]] = []
    for r in hist.finite_complete(records):
        source = "tpe" if r.source == "fallback" else r.source  # a fallback is a TPE sample
        if source in ("llm", "tpe"):
            outcomes.append((source, r.number in improving))
    recent = outcomes[-window:]
    rate = {}
    for source in ("llm", "tpe"):
        hits = [improved for s, improved in recent if s == source]
        rate[source] = (sum(hits) + 1) / (len(hits) + 2)
    odds = p0 / (1 - p0) * rate["llm"] / rate["tpe"]
    return min(max(odds / (1 + odds), p_min), p_max)


class LLMTPESampler(BaseSampler):
    """The SLLMBO hybrid sampler.

    Args:
        backend, space, card, temperature, top_p, max_tokens, timeout, max_retries, k_best,
            k_recent: as for :class:`LLMSampler`.
        p_llm: probability that a trial is proposed by the LLM (paper: 0.5).
        adaptive: move ``p_llm`` toward the source that improves the best value.
        p_min, p_max: clamp of the adapted probability (default 0.1, 0.9).
        window: how many recent LLM/TPE trials the adaptation looks at (default 30).
        seed: seeds the source draws, TPE and the LLM request seeds.
        tpe_options: ``TPESampler`` keywords for the TPE half (default none: the paper's TPE,
            sampled one parameter at a time, random for its first 10 trials). With
            ``multivariate=True`` a TPE trial samples the whole configuration jointly;
            ``n_startup_trials`` sets when TPE stops sampling at random (the evaluation ties
            it to the enqueued initial configurations).
    """

    def __init__(
        self,
        *,
        backend: Backend,
        space: SearchSpace | None = None,
        card: TaskCard | None = None,
        seed: int | None = None,
        p_llm: float = 0.5,
        adaptive: bool = False,
        p_min: float = 0.1,
        p_max: float = 0.9,
        window: int = 30,
        temperature: float = 0.7,
        top_p: float = 0.95,
        max_tokens: int = 256,
        timeout: float | None = None,
        max_retries: int = 1,
        k_best: int = 10,
        k_recent: int = 5,
        tpe_options: Mapping[str, Any] | None = None,
    ) -> None:
        if not 0.0 <= p_llm <= 1.0:
            raise ValueError(f"p_llm must be in [0, 1], got {p_llm}")
        if not 0.0 < p_min <= p_max < 1.0:
            raise ValueError(f"need 0 < p_min <= p_max < 1, got p_min={p_min}, p_max={p_max}")
        if adaptive and not 0.0 < p_llm < 1.0:
            raise ValueError(f"adaptive=True needs 0 < p_llm < 1, got {p_llm}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self._tpe = TPESampler(seed=seed, **dict(tpe_options or {}))
        self._joint_tpe = bool((tpe_options or {}).get("multivariate"))
        self._llm = LLMSampler(
            backend=backend, space=space, card=card, seed=seed, independent_sampler=self._tpe,
            temperature=temperature, top_p=top_p, max_tokens=max_tokens, timeout=timeout,
            max_retries=max_retries, k_best=k_best, k_recent=k_recent,
        )
        self._seed = seed
        self._p_llm = p_llm
        self._adaptive = adaptive
        self._p_min, self._p_max, self._window = p_min, p_max, window
        self._rng_state: np.random.RandomState | None = None

    @property
    def _rng(self) -> np.random.RandomState:
        if self._rng_state is None:
            self._rng_state = np.random.RandomState(self._seed)
        return self._rng_state

    def reseed_rng(self) -> None:
        self._rng.seed()
        self._llm.reseed_rng()  # also reseeds the shared TPE

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._tpe.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Any) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._llm.infer_relative_search_space(study, trial)

    def current_p(self, study: Study) -> float:
        """The LLM probability for the next trial of ``study``."""
        if not self._adaptive:
            return self._p_llm
        return adapted_p(
            study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)),
            study.direction.name.lower(), p0=self._p_llm, p_min=self._p_min,
            p_max=self._p_max, window=self._window,
        )

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if not search_space or "fixed_params" in trial.system_attrs:
            return {}
        p = self.current_p(study)
        if self._rng.uniform() < p:
            attrs.set_trial_attrs(study, trial, {attrs.P_LLM: round(p, 4)})
            return self._llm.sample_relative(study, trial, search_space)
        attrs.set_trial_attrs(study, trial, {attrs.SOURCE: "tpe", attrs.P_LLM: round(p, 4)})
        if not self._joint_tpe:
            return self._llm.fallback_params(study, trial, search_space)
        # Joint TPE ({} while it still samples at random); what it leaves out, one at a time.
        joint = {name: _plain_value(search_space[name], value) for name, value
                 in self._tpe.sample_relative(study, trial, dict(search_space)).items()}
        rest = {n: d for n, d in search_space.items() if n not in joint}
        return {**joint, **self._llm.fallback_params(study, trial, rest)}

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        self._raise_error_if_multi_objective(study)
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)


def build_llm_tpe(*, backend: Backend | None = None, space: SearchSpace | None = None,
                  card: TaskCard | None = None, seed: int | None = None,
                  **options: Any) -> LLMTPESampler:
    """``llm-tpe`` by name (``sllmbo.samplers.registry``)."""
    return LLMTPESampler(backend=require_backend("llm-tpe", backend), space=space, card=card,
                         seed=seed, **options)
