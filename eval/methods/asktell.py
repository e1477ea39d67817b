"""Optuna samplers driven by other libraries' ask/tell optimizers: SMAC3 (``SMACSampler``)
and syne-tune (``QuantileSurrogateSampler``). Imported only by the methods that run them.

Before each sampled trial the optimizer is told the study's finished trials it has not seen
(enqueued ones included, so an initial design run by the study counts), then asked for a
whole configuration, which is coerced to plain numbers and clipped into the space; every
repair is counted in the trial's ``sllmbo:repairs``. Parameters outside the space fall to
Optuna's ``RandomSampler``. The optimizer lives in this process: a resumed run tells a fresh
one every finished trial first.
"""

from __future__ import annotations

import contextlib
import io
import math
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial, TrialState

from sllmbo.core.errors import SllmboError
from sllmbo.core.space import FloatParam, IntParam, SearchSpace
from sllmbo.core.studyinfo import SOURCE

#: Trial attribute: the repairs the sampler made to the library's answer.
REPAIRS = "sllmbo:repairs"


class AskTellSampler(BaseSampler):
    """Subclasses implement ``ask`` (the next configuration) and ``tell`` (a finished
    configuration and its value to minimize)."""

    #: The trials' ``sllmbo:source``.
    label = "asktell"

    def __init__(self, *, space: SearchSpace, seed: int | None = None) -> None:
        self._space = space
        self._seed = seed
        self._told: set[int] = set()
        self._independent = RandomSampler(seed=seed)

    # -- what a library adapter implements -----------------------------------------------
    def ask(self) -> Mapping[str, Any]:
        raise NotImplementedError

    def tell(self, params: Mapping[str, Any], loss: float) -> None:
        raise NotImplementedError

    # -- Optuna's sampler interface ------------------------------------------------------
    def reseed_rng(self) -> None:
        self._independent.reseed_rng()

    def infer_relative_search_space(self, study: Study,
                                    trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self._space.to_optuna()

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        self._raise_error_if_multi_objective(study)
        if not search_space or "fixed_params" in trial.system_attrs:
            return {}  # an enqueued configuration keeps its values
        self._catch_up(study)
        params, repairs = self._space.clip({k: _plain(v) for k, v in self.ask().items()
                                            if k in self._space})
        study._storage.set_trial_user_attr(trial._trial_id, SOURCE, self.label)
        study._storage.set_trial_user_attr(trial._trial_id, REPAIRS, len(repairs))
        return {k: v for k, v in params.items() if k in search_space}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._independent.sample_independent(study, trial, param_name,
                                                    param_distribution)

    def _catch_up(self, study: Study) -> None:
        sign = -1.0 if study.direction == StudyDirection.MAXIMIZE else 1.0
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if t.number in self._told or t.value is None or not math.isfinite(t.value):
                continue
            self._told.add(t.number)
            if all(name in t.params for name in self._space.names):
                self.tell({n: t.params[n] for n in self._space.names}, sign * t.value)


class SMACSampler(AskTellSampler):
    """SMAC3's ``HyperparameterOptimizationFacade`` behind Optuna's sampler interface. The
    objective is deterministic for SMAC (fixed folds): each configuration is run once."""

    label = "smac"

    def __init__(self, *, space: SearchSpace, initial_design: Sequence[Mapping[str, Any]],
                 n_trials: int, seed: int | None = None) -> None:
        super().__init__(space=space, seed=seed)
        try:
            from ConfigSpace import Configuration
            from smac import HyperparameterOptimizationFacade, Scenario
        except ImportError:
            raise SllmboError("the smac baseline needs SMAC3",
                              hint="pip install 'smac>=2.4' (an evaluation-only dependency)"
                              ) from None
        self._workdir = tempfile.TemporaryDirectory(prefix="sllmbo-smac-")
        seed = 0 if seed is None else seed % (2**31 - 1)
        configspace = _configspace(space, seed)
        scenario = Scenario(configspace, deterministic=True, n_trials=n_trials, seed=seed,
                            output_directory=Path(self._workdir.name))
        design = HyperparameterOptimizationFacade.get_initial_design(
            scenario, n_configs=0,
            additional_configs=[Configuration(configspace, values=space.clip(c)[0])
                                for c in initial_design])
        self._smac = HyperparameterOptimizationFacade(
            scenario, _ask_tell_only, initial_design=design,
            intensifier=HyperparameterOptimizationFacade.get_intensifier(
                scenario, max_config_calls=1),
            overwrite=True, logging_level=40)
        self._configspace = configspace
        self._asked: dict[tuple[tuple[str, Any], ...], Any] = {}

    def ask(self) -> Mapping[str, Any]:
        info = self._smac.ask()
        params = dict(info.config)
        self._asked[_key(params)] = info
        return params

    def tell(self, params: Mapping[str, Any], loss: float) -> None:
        from ConfigSpace import Configuration
        from smac.runhistory.dataclasses import TrialInfo, TrialValue

        info = self._asked.pop(_key(params), None)
        if info is None:  # enqueued, or run before a resume: told as SMAC's own would be
            info = TrialInfo(Configuration(self._configspace, values=dict(params)), seed=0)
        self._smac.tell(info, TrialValue(cost=loss))


def _configspace(space: SearchSpace, seed: int) -> Any:
    from ConfigSpace import Categorical, ConfigurationSpace, Float, Integer

    cs = ConfigurationSpace(seed=seed)
    for p in space:
        if isinstance(p, FloatParam):
            cs.add(Float(p.name, (p.low, p.high), log=p.log))
        elif isinstance(p, IntParam):
            cs.add(Integer(p.name, (p.low, p.high), log=p.log))
        else:
            cs.add(Categorical(p.name, list(p.choices)))
    return cs


def _ask_tell_only(config: Any, seed: int = 0) -> float:
    raise RuntimeError("SMACSampler drives SMAC by ask and tell; the study runs the trials")


def _key(params: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, round(float(v), 10) if isinstance(v, float) else v)
                        for k, v in params.items()))


class QuantileSurrogateSampler(AskTellSampler):
    """syne-tune's ``QuantileBasedSurrogateSearcher`` (Salinas, Shen and Perrone, ICML 2020:
    Copula Thompson sampling) behind Optuna's sampler interface: an XGBoost surrogate fitted
    on other tasks' evaluations, each task's errors mapped to Gaussian quantiles, and each
    suggestion the best of 100,000 random configurations under one posterior draw. As in
    syne-tune, the run's own results do not update it (they are passed on all the same)."""

    label = "quantile-surrogate"
    #: Fitted searchers by the caller's key (the same training rows, space and seed): the fit
    #: and the 100,000 candidates' predictions cost about a minute on a busy core, and every
    #: held-out task of one family and subtype reads the same rows. Each run takes a copy, so
    #: its draws do not depend on the runs before it.
    _fitted: ClassVar[dict[Any, Any]] = {}

    def __init__(self, *, space: SearchSpace,
                 evaluations: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[float]]],
                 seed: int | None = None, cache_key: Any = None) -> None:
        super().__init__(space=space, seed=seed)
        import copy

        if cache_key is None:
            self._searcher = self._fit(space, evaluations, seed)
        else:
            key = (cache_key, seed)
            if key not in self._fitted:
                self._fitted[key] = self._fit(space, evaluations, seed)
            self._searcher = copy.deepcopy(self._fitted[key])
        self._told_count = 0

    @staticmethod
    def _fit(space: SearchSpace,
             evaluations: Mapping[str, tuple[Sequence[Mapping[str, Any]], Sequence[float]]],
             seed: int | None) -> Any:
        try:
            from syne_tune.optimizer.schedulers.transfer_learning.quantile_based.quantile_based_searcher import (
                QuantileBasedSurrogateSearcher,
            )
            from syne_tune.optimizer.schedulers.transfer_learning.transfer_learning_task_evaluation import (
                TransferLearningTaskEvaluations,
            )
        except ImportError:
            raise SllmboError("the quantile-surrogate baseline needs syne-tune",
                              hint="pip install 'syne-tune>=0.16' (an evaluation-only "
                              "dependency)") from None
        import numpy as np
        import pandas as pd

        if not evaluations:
            raise SllmboError("quantile-surrogate has no training task to transfer from")
        domains = _syne_space(space)
        tasks = {name: TransferLearningTaskEvaluations(
            configuration_space=domains, hyperparameters=pd.DataFrame(list(configs)),
            objectives_names=["error"],
            objectives_evaluations=np.asarray(errors, dtype=float).reshape(-1, 1, 1, 1))
            for name, (configs, errors) in evaluations.items()}
        with contextlib.redirect_stdout(io.StringIO()):  # syne-tune prints its timings
            return QuantileBasedSurrogateSearcher(
                config_space=domains, transfer_learning_evaluations=tasks,
                random_seed=0 if seed is None else seed % (2**31 - 1))

    def ask(self) -> Mapping[str, Any]:
        return self._searcher.suggest()

    def tell(self, params: Mapping[str, Any], loss: float) -> None:
        self._searcher.on_trial_complete(trial_id=self._told_count, config=dict(params),
                                         metric=loss)
        self._told_count += 1


def _syne_space(space: SearchSpace) -> dict[str, Any]:
    from syne_tune.config_space import choice, lograndint, loguniform, randint, uniform

    domains: dict[str, Any] = {}
    for p in space:
        if isinstance(p, FloatParam):
            domains[p.name] = (loguniform if p.log else uniform)(p.low, p.high)
        elif isinstance(p, IntParam):
            domains[p.name] = (lograndint if p.log else randint)(p.low, p.high)
        else:
            domains[p.name] = choice(list(p.choices))
    return domains


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers."""
    return value.item() if hasattr(value, "item") else value
