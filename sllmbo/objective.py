"""The tuning objective: K-fold cross-validation on the train split; the best configuration
is refit on the whole train split and scored once on the held-out test split.

Deterministic under a seed (fold assignment and model seeds). RMSE for regression; log-loss
(the objective) and accuracy for classification.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from sllmbo import studyinfo
from sllmbo.families import BuildContext, ModelFamily
from sllmbo.space import CategoricalParam, FloatParam, SearchSpace

if TYPE_CHECKING:
    import optuna

    from sllmbo.data import Task

#: Metric name -> direction. The first listed for a task type is its objective.
METRICS: dict[str, str] = {"rmse": "minimize", "log_loss": "minimize", "accuracy": "maximize"}


@dataclass(frozen=True)
class EvalSettings:
    """How a configuration is scored. ``n_jobs`` is threads per model fit."""

    n_folds: int = 5
    seed: int = 0
    n_jobs: int = 1
    metric: str | None = None  # None: the task's own objective (Task.metric)

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, got {self.metric!r}")


@dataclass(frozen=True)
class CVResult:
    mean: float
    std: float
    fold_scores: list[float]
    seconds: float


def objective_metric(task: Task, settings: EvalSettings) -> str:
    """The metric tuned: ``settings.metric`` if set, else the task's own objective."""
    return settings.metric or task.metric


def _context(task: Task, settings: EvalSettings) -> BuildContext:
    return BuildContext(
        task_type=task.task_type,
        categorical_columns=tuple(task.categorical_columns),
        numeric_columns=tuple(task.numeric_columns),
        n_classes=len(task.class_names) if task.class_names else None,
        seed=settings.seed,
        n_jobs=settings.n_jobs,
    )


def score(metric: str, model: Any, X: Any, y: Any, n_classes: int | None) -> float:
    """``metric`` of a fitted ``model`` on (X, y)."""
    from sklearn.metrics import accuracy_score, log_loss, root_mean_squared_error

    if metric == "rmse":
        return float(root_mean_squared_error(y, model.predict(X)))
    if metric == "accuracy":
        return float(accuracy_score(y, model.predict(X)))
    if metric == "log_loss":
        proba = model.predict_proba(X)
        return float(log_loss(y, proba, labels=list(range(n_classes or proba.shape[1]))))
    raise ValueError(f"unknown metric {metric!r}")


def cross_validate(
    task: Task, family: ModelFamily, config: Mapping[str, Any], settings: EvalSettings
) -> CVResult:
    """Mean and spread of the objective metric over ``settings.n_folds`` folds."""
    from sklearn.base import clone
    from sklearn.model_selection import KFold, StratifiedKFold

    ctx = _context(task, settings)
    metric = objective_metric(task, settings)
    splitter_cls = KFold if task.task_type == "regression" else StratifiedKFold
    splitter = splitter_cls(n_splits=settings.n_folds, shuffle=True, random_state=settings.seed)
    X, y = task.X_train, task.y_train
    template = family.build(config, ctx)
    started = time.perf_counter()
    scores: list[float] = []
    for train_idx, valid_idx in splitter.split(X, y):
        model = clone(template)
        model.fit(X.iloc[train_idx], y.iloc[train_idx])
        scores.append(score(metric, model, X.iloc[valid_idx], y.iloc[valid_idx], ctx.n_classes))
    return CVResult(
        mean=float(np.mean(scores)),
        std=float(np.std(scores)),
        fold_scores=scores,
        seconds=time.perf_counter() - started,
    )


def holdout_scores(
    task: Task, family: ModelFamily, config: Mapping[str, Any], settings: EvalSettings
) -> dict[str, float]:
    """Refit on the whole train split; every metric of the task type on the test split."""
    ctx = _context(task, settings)
    model = family.build(config, ctx)
    model.fit(task.X_train, task.y_train)
    return {
        name: score(name, model, task.X_test, task.y_test, ctx.n_classes) for name in task.metrics
    }


#: Errors a model fit may raise for a legal but unlucky configuration; the trial fails, the
#: study goes on. Programming errors (TypeError, KeyError, ...) still surface.
def _fit_errors() -> tuple[type[BaseException], ...]:
    import lightgbm
    import xgboost

    return (ValueError, ArithmeticError, lightgbm.basic.LightGBMError, xgboost.core.XGBoostError)


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Ask the trial for every parameter of ``space`` (the sampler decides the values)."""
    params: dict[str, Any] = {}
    for p in space:
        if isinstance(p, CategoricalParam):
            params[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif isinstance(p, FloatParam):
            params[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        else:
            params[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
    return params


def make_objective(
    task: Task, family: ModelFamily, default_space: SearchSpace, settings: EvalSettings
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective; the space is read from the study at each trial (it may adapt)."""
    fit_errors = _fit_errors()

    def objective(trial: optuna.Trial) -> float:
        space = studyinfo.get_space(trial.study, default_space)
        params = suggest(trial, space)
        try:
            result = cross_validate(task, family, params, settings)
        except fit_errors as err:
            trial.set_user_attr("sllmbo:fit_error", f"{type(err).__name__}: {err}"[:500])
            return math.nan  # Optuna marks the trial FAIL and the study goes on.
        trial.set_user_attr(studyinfo.CV_STD, result.std)
        trial.set_user_attr(studyinfo.CV_FOLDS, result.fold_scores)
        trial.set_user_attr(studyinfo.FIT_SECONDS, round(result.seconds, 3))
        return result.mean

    return objective
