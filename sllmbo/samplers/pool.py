"""``PoolSampler``: one entry of a fixed pool of configurations per trial, each chosen from
the scores of the entries already tried: the few-shot pick of [10/12].

A run starts with ``start`` (the portfolio's first entries, the best static guesses), then
asks a ``Chooser`` for the next entry given the history so far: pool positions with their
values, lower is better (a maximized study's values are negated first), ``None`` for a
failed trial. Two choosers exist:

- ``NeighbourChooser``: the entry of least mean regret on the training variants whose scores
  on the tried entries, min-max scaled, are nearest to this run's (classical; the baseline);
- ``sllmbo.scoring.feedback_pick``: the adapter names the next entry, given the card and the
  tried entries with their scaled scores (``pick_messages(..., tried)``).

The history is read from the study's trials (their ``sllmbo:pool_index`` user attribute), never
from sampler memory, so a killed run resumes where it stopped and workers that share a study
do not try one entry twice (running trials count as taken). Enqueued trials keep their own
values; once the pool is spent, or a chooser fails, TPE samples (counted in ``source``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, TPESampler
from optuna.trial import FrozenTrial, TrialState

from sllmbo.core.errors import ConfigError, SllmboError
from sllmbo.core.space import SearchSpace
from sllmbo.data.pool_select import FEEDBACK_START, training_rows
from sllmbo.samplers import attrs

if TYPE_CHECKING:
    from optuna.study import Study

    from sllmbo.core.taskcard import TaskCard
    from sllmbo.data.pool import Pool
    from sllmbo.inference.base import Backend

#: The trial user attribute naming the pool position a trial tried.
POOL_INDEX = "sllmbo:pool_index"
#: History -> the next pool position (None: nothing to choose; TPE samples the trial).
History = Sequence[tuple[int, float | None]]
Chooser = Callable[[History, set[int]], int | None]


class PoolSampler(BaseSampler):
    """Try pool ``configs`` one per trial: ``start`` first (pool positions), then
    ``choose(history, taken)``.

    Args:
        configs: the pool's configurations, each a full configuration of ``space``.
        space: the search space the configurations lie in.
        choose: the next position from the history (pool position, value or None) and the
            positions already taken (tried or running); lower values are better.
        start: positions tried first, in order, before ``choose`` is asked.
        seed: seeds the TPE that samples once the pool is spent.
    """

    def __init__(self, *, configs: Sequence[Mapping[str, Any]], space: SearchSpace,
                 choose: Chooser, start: Sequence[int] = (), seed: int | None = None,
                 fallback_sampler: BaseSampler | None = None) -> None:
        if not configs:
            raise ValueError("a PoolSampler needs at least one configuration")
        if any(not 0 <= i < len(configs) for i in start):
            raise ValueError(f"start positions must lie in the pool of {len(configs)}")
        self._configs: list[dict[str, Any] | None] = [_inside(space, c) for c in configs]
        #: Entries outside ``space`` (a narrowed or user space) count as taken from the start.
        self._outside = {i for i, c in enumerate(self._configs) if c is None}
        if len(self._outside) == len(configs):
            raise SllmboError("no pool configuration lies in this search space",
                              hint="tune in the family's default space, or use another "
                              "sampler")
        self._space = space
        self._choose = choose
        self._start = list(start)
        self._tpe = fallback_sampler or TPESampler(seed=seed)

    def reseed_rng(self) -> None:
        self._tpe.reseed_rng()

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._space.to_optuna()

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if "fixed_params" in trial.system_attrs:
            return {}
        history, taken = self.history(study, trial)
        taken |= self._outside
        index = next((i for i in self._start if i not in taken), None)
        if index is None and len(taken) < len(self._configs):
            try:
                index = self._choose(history, taken)
            except SllmboError:  # e.g. the backend failed: this trial is TPE's, counted
                index = None
        config = None if index is None or index in taken or not 0 <= index < len(
            self._configs) else self._configs[index]
        if config is None:
            attrs.set_trial_attrs(study, trial, {attrs.SOURCE: "tpe"})
            return {}  # sample_independent: TPE, parameter by parameter
        attrs.set_trial_attrs(study, trial, {attrs.SOURCE: "pool", POOL_INDEX: index})
        return dict(config)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._tpe.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self._tpe.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState,
                    values: Sequence[float] | None) -> None:
        self._tpe.after_trial(study, trial, state, values)

    def history(self, study: Study, trial: FrozenTrial) -> tuple[list[tuple[int, float | None]],
                                                                  set[int]]:
        """The finished pool trials as (position, value to minimize or None), in trial order,
        and every position taken (finished or running)."""
        sign = -1.0 if study.direction.name == "MAXIMIZE" else 1.0
        history: list[tuple[int, float | None]] = []
        taken: set[int] = set()
        for t in study.get_trials(deepcopy=False):
            index = t.user_attrs.get(POOL_INDEX)
            if index is None or t.number == trial.number:
                continue
            taken.add(int(index))
            if t.state == TrialState.COMPLETE and t.value is not None \
                    and math.isfinite(t.value):
                history.append((int(index), sign * t.value))
            elif t.state in (TrialState.FAIL, TrialState.PRUNED):
                history.append((int(index), None))
        return history, taken


def _inside(space: SearchSpace, config: Mapping[str, Any]) -> dict[str, Any] | None:
    try:
        return space.validate({k: config[k] for k in space.names if k in config})
    except ConfigError:
        return None


def min_max(values: np.ndarray) -> np.ndarray:
    """Scaled among themselves to [0, 1] (all 0 where they do not spread)."""
    low, high = np.nanmin(values), np.nanmax(values)
    return np.zeros_like(values) if not high > low else (values - low) / (high - low)


class NeighbourChooser:
    """The next entry is the untried one of least mean ``regret`` over the ``neighbours``
    training rows whose ``scores`` on the tried entries, min-max scaled, are nearest (mean
    absolute difference) to this run's. With a failed trial in the history nothing can be
    compared: the first untried position of ``fallback`` (the portfolio's order) is next.

    ``scores`` and ``regret`` are (training rows x pool positions) arrays, NaN for a failed
    fit; ``regret`` is on the portfolio's scale (0 = a row's best)."""

    def __init__(self, scores: np.ndarray, regret: np.ndarray, fallback: Sequence[int],
                 neighbours: int = 10) -> None:
        if scores.shape != regret.shape or scores.ndim != 2 or not len(scores):
            raise ValueError("scores and regret must be matching, non-empty 2-D arrays")
        self.scores, self.regret = scores, regret
        self.fallback, self.neighbours = list(fallback), neighbours

    def __call__(self, history: History, taken: set[int]) -> int | None:
        left = [i for i in range(self.scores.shape[1]) if i not in taken]
        if not left:
            return None
        tried = [i for i, _ in history]
        seen = np.array([np.nan if v is None else v for _, v in history], dtype=float)
        if not tried or not np.isfinite(seen).all():
            return next((i for i in self.fallback if i not in taken), left[0])
        rows = np.array([min_max(r) for r in self.scores[:, tried]])
        distance = np.nanmean(np.abs(rows - min_max(seen)), axis=1)
        distance = np.where(np.isfinite(distance), distance, np.inf)
        near = np.argsort(distance, kind="stable")[:self.neighbours]
        mean = self.regret[np.ix_(near, left)].mean(axis=0)
        return left[int(np.argmin(mean))]


#: Training variants whose scores on the tried entries are nearest, for ``NeighbourChooser``.
FEEDBACK_NEIGHBOURS = 10


def feedback_sampler(kind: str, *, family: str, card: TaskCard, space: SearchSpace,
                     seed: int | None = None, backend: Backend | None = None) -> PoolSampler:
    """``feedback``: the portfolio's first ``FEEDBACK_START`` entries, then the
    ``NeighbourChooser``'s; ``llm-feedback``: the same start, then the adapter's few-shot
    pick (``sllmbo.scoring.pick_probabilities`` with the history)."""
    pool, scores, regret, folio = training_rows(family, card.task_type)
    configs = [c.config for c in pool.configs]
    start = folio[:FEEDBACK_START]
    if kind == "feedback":
        chooser: Chooser = NeighbourChooser(scores, regret, folio, FEEDBACK_NEIGHBOURS)
    elif kind == "llm-feedback":
        if backend is None:
            raise SllmboError("sampler 'llm-feedback' needs an LLM backend",
                              hint="pass backend=create_backend(...) or use --backend")
        chooser = LLMChooser(backend, card, pool)
    else:
        raise SllmboError(f"unknown pool sampler '{kind}'",
                          hint="choose feedback or llm-feedback")
    return PoolSampler(configs=configs, space=space, choose=chooser, start=start, seed=seed)


def _pool_sampler(kind: str, card: TaskCard | None, space: SearchSpace | None,
                  seed: int | None, backend: Backend | None,
                  options: dict[str, Any]) -> PoolSampler:
    if options:
        raise SllmboError(f"sampler '{kind}' takes no options, got {sorted(options)}")
    if card is None or space is None:
        raise SllmboError(f"sampler '{kind}' needs the task card and the search space")
    return feedback_sampler(kind, family=card.model_family, card=card, space=space, seed=seed,
                            backend=backend)


def build_feedback(*, card: TaskCard | None = None, space: SearchSpace | None = None,
                   seed: int | None = None, backend: Backend | None = None,
                   **options: Any) -> PoolSampler:
    """``feedback`` by name (``sllmbo.samplers.registry``)."""
    return _pool_sampler("feedback", card, space, seed, None, options)


def build_llm_feedback(*, card: TaskCard | None = None, space: SearchSpace | None = None,
                       seed: int | None = None, backend: Backend | None = None,
                       **options: Any) -> PoolSampler:
    """``llm-feedback`` by name (``sllmbo.samplers.registry``)."""
    return _pool_sampler("llm-feedback", card, space, seed, backend, options)


class LLMChooser:
    """The untried entry the adapter names most probably given the card and the history
    (one forward pass of ``pick_messages(card, pool, n, history)``)."""

    def __init__(self, backend: Backend, card: TaskCard | None, pool: Pool) -> None:
        self.backend, self.card, self.pool = backend, card, pool

    def __call__(self, history: History, taken: set[int]) -> int | None:
        from sllmbo.scoring import pick_probabilities

        probs = pick_probabilities(self.backend, self.card, self.pool, history)
        probs[sorted(taken)] = 0.0
        return int(np.argmax(probs)) if probs.max() > 0 else None
