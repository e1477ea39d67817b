"""The tuning objective: K-fold cross-validation on the train split; the best configuration
is refit on the whole train split and scored once on the held-out test split.

Deterministic under a seed (fold assignment and model seeds). RMSE (the default objective) or
MAE for regression; log-loss (the default objective), accuracy or weighted F1 for
classification. An ``EvalProtocol`` (``sllmbo.core.protocol``) can fix the folds, the metric and the
estimator (a published paper's exact objective); a ``ScoreCache`` lets an evaluation harness
reuse the score of a configuration already fitted under the same data, family and settings.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from sllmbo.core import studyinfo
from sllmbo.core.errors import SllmboError, SllmboNote
from sllmbo.core.families import BuildContext, ModelFamily, plain_arguments, plain_estimator
from sllmbo.core.space import CategoricalParam, FloatParam, SearchSpace

if TYPE_CHECKING:
    import optuna

    from sllmbo.core.task import Task

#: Metric name -> direction. The first listed for a task type is its default objective.
METRICS: dict[str, str] = {
    "rmse": "minimize",
    "log_loss": "minimize",
    "accuracy": "maximize",
    "mae": "minimize",
    "f1_weighted": "maximize",
}
#: Metric name -> the task type it is defined for.
METRIC_TASK_TYPES: dict[str, str] = {
    "rmse": "regression",
    "mae": "regression",
    "log_loss": "classification",
    "accuracy": "classification",
    "f1_weighted": "classification",
}
#: How the estimator is made: through the family's builder, or the bare library class.
ESTIMATOR_MODES = ("family", "plain")


def metrics_for(task_type: str) -> list[str]:
    """The metrics defined for ``task_type``, in ``METRICS`` order."""
    return [m for m in METRICS if METRIC_TASK_TYPES[m] == task_type]


def check_metric(metric: str, task_type: str) -> None:
    """``SllmboError`` unless ``metric`` is known and defined for ``task_type``."""
    if metric not in METRICS:
        raise SllmboError(f"unknown metric '{metric}'", hint=f"choose one of: {', '.join(METRICS)}")
    if METRIC_TASK_TYPES[metric] != task_type:
        raise SllmboError(
            f"metric '{metric}' is for {METRIC_TASK_TYPES[metric]}; "
            f"this is a {task_type} task",
            hint=f"use one of: {', '.join(metrics_for(task_type))}",
        )


@dataclass(frozen=True)
class EvalSettings:
    """How a configuration is scored. ``n_jobs`` is threads per model fit.

    ``seed`` drives the fold assignment (when ``shuffle``) and, in ``family`` mode, the model
    seed. ``stratified``: classification folds keep the class shares (StratifiedKFold);
    regression always uses KFold. ``estimator``: ``family`` builds through the family's
    builder (its preprocessing and fixed extras); ``plain`` is the library estimator given
    only the configuration, ``fixed_args`` and ``n_jobs`` (threads are a resource, not part of
    a protocol), as published protocols use it. ``fixed_args`` are estimator arguments added
    to every configuration (``set_params`` keys in ``family`` mode).
    """

    n_folds: int = 5
    seed: int = 0
    n_jobs: int = 1
    metric: str | None = None  # None: the task's own objective (Task.metric)
    shuffle: bool = True
    stratified: bool = True
    estimator: str = "family"
    fixed_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.n_folds < 2:
            raise ValueError(f"n_folds must be >= 2, got {self.n_folds}")
        if self.metric is not None and self.metric not in METRICS:
            raise ValueError(f"metric must be one of {list(METRICS)}, got {self.metric!r}")
        if self.estimator not in ESTIMATOR_MODES:
            raise ValueError(
                f"estimator must be one of {list(ESTIMATOR_MODES)}, got {self.estimator!r}"
            )
        object.__setattr__(self, "fixed_args", dict(self.fixed_args))

    def key_dict(self) -> dict[str, Any]:
        """Everything that decides a score (``n_jobs`` does not): part of a cache key."""
        return {
            "n_folds": self.n_folds,
            "seed": self.seed,
            "metric": self.metric,
            "shuffle": self.shuffle,
            "stratified": self.stratified,
            "estimator": self.estimator,
            "fixed_args": dict(self.fixed_args),
        }


class ScoreCache(Protocol):
    """Where an evaluation harness keeps scores it has computed (the storage is the
    harness's: a SQLite table there, a dict in tests). Keys come from ``config_key``; values
    are JSON-compatible dicts."""

    def get(self, key: str) -> dict[str, Any] | None: ...

    def put(self, key: str, value: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class CVResult:
    mean: float
    std: float
    fold_scores: list[float]
    seconds: float
    #: True when the scores came from a ``ScoreCache`` (``seconds`` is the original fit's).
    cached: bool = False


class SettingsResolver(Protocol):
    """What the objective needs of a scoring protocol (``sllmbo.core.protocol.EvalProtocol``):
    a typed hook, so the objective does not import the protocol that builds on it."""

    def resolve(self, settings: EvalSettings) -> EvalSettings: ...


def _resolve(settings: EvalSettings, protocol: SettingsResolver | None) -> EvalSettings:
    return settings if protocol is None else protocol.resolve(settings)


def objective_metric(
    task: Task, settings: EvalSettings, protocol: SettingsResolver | None = None
) -> str:
    """The metric tuned: the protocol's or ``settings.metric`` if set, else the task's own."""
    return _resolve(settings, protocol).metric or task.metric


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
    from sklearn.metrics import (
        accuracy_score,
        f1_score,
        log_loss,
        mean_absolute_error,
        root_mean_squared_error,
    )

    if metric == "rmse":
        return float(root_mean_squared_error(y, model.predict(X)))
    if metric == "mae":
        return float(mean_absolute_error(y, model.predict(X)))
    if metric == "accuracy":
        return float(accuracy_score(y, model.predict(X)))
    if metric == "f1_weighted":
        return float(f1_score(y, model.predict(X), average="weighted"))
    if metric == "log_loss":
        proba = model.predict_proba(X)
        return float(log_loss(y, proba, labels=list(range(n_classes or proba.shape[1]))))
    raise ValueError(f"unknown metric {metric!r}")


def build_estimator(
    task: Task, family: ModelFamily, config: Mapping[str, Any], settings: EvalSettings
) -> Any:
    """The unfitted estimator for ``config`` under ``settings.estimator`` and ``fixed_args``."""
    if settings.estimator == "plain":
        params = {**config, **settings.fixed_args}
        if "n_jobs" in plain_arguments(family, task.task_type):
            params.setdefault("n_jobs", settings.n_jobs)
        return plain_estimator(family, task.task_type, params)
    model = family.build(config, _context(task, settings))
    if settings.fixed_args:
        try:
            model.set_params(**settings.fixed_args)
        except ValueError as err:
            raise SllmboError(
                f"fixed estimator arguments {sorted(settings.fixed_args)} do not apply to the "
                f"{family.name} builder's estimator: {err}",
                hint="use set_params keys (step__param in a pipeline) or estimator='plain'",
            ) from None
    return model


def splitter(task: Task, settings: EvalSettings) -> Any:
    """The CV splitter: KFold for regression, StratifiedKFold for classification unless
    ``settings.stratified`` is off; seeded only when it shuffles (scikit-learn's rule)."""
    from sklearn.model_selection import KFold, StratifiedKFold

    stratify = task.task_type == "classification" and settings.stratified
    splitter_cls = StratifiedKFold if stratify else KFold
    return splitter_cls(
        n_splits=settings.n_folds,
        shuffle=settings.shuffle,
        random_state=settings.seed if settings.shuffle else None,
    )


#: (task, training rows, folds) whose too-rare classes were noted: said once per process, not
#: once per trial.
_RARE_NOTED: set[tuple[str, int, int]] = set()


def fold_indices(task: Task, settings: EvalSettings) -> list[tuple[np.ndarray, np.ndarray]]:
    """The (train, validation) row positions of each CV fold.

    A class with fewer training rows than folds is legal (some validation folds then hold
    none of it), but scikit-learn's StratifiedKFold warns about it on every split, from its
    own source line, once per trial. Here it is said once, as a ``SllmboNote`` naming the
    classes, and scikit-learn's warning is silenced where this splitter is made on purpose."""
    import warnings

    X, y = task.X_train, task.y_train
    rare = rare_classes(task, settings.n_folds)
    if not rare:
        return list(splitter(task, settings).split(X, y))
    key = (task.name, len(y), settings.n_folds)
    if key not in _RARE_NOTED:
        _RARE_NOTED.add(key)
        listed = ", ".join(f"'{name}' ({count})" for name, count in rare.items())
        warnings.warn(
            f"task '{task.name}': {len(rare)} class{'es' if len(rare) > 1 else ''} with fewer "
            f"training rows than the {settings.n_folds} CV folds: {listed}; some validation "
            f"folds hold none of {'them' if len(rare) > 1 else 'it'}, so their scores are "
            "noisier (a smaller --n-folds or more rows helps)", SllmboNote, stacklevel=3)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class in y",
                                category=UserWarning)
        return list(splitter(task, settings).split(X, y))


def rare_classes(task: Task, n_folds: int) -> dict[str, int]:
    """Classes with fewer training rows than ``n_folds`` -> their row counts (rarest first);
    empty for regression."""
    if task.task_type != "classification":
        return {}
    names = task.class_names or []
    counts = task.y_train.value_counts(sort=True, ascending=True)
    out: dict[str, int] = {}
    for code, count in counts.items():
        if count >= n_folds:
            break
        is_code = isinstance(code, (int, np.integer)) and 0 <= int(code) < len(names)
        out[names[int(code)] if is_code else str(code)] = int(count)
    return out


def cross_validate(
    task: Task,
    family: ModelFamily,
    config: Mapping[str, Any],
    settings: EvalSettings,
    cache: ScoreCache | None = None,
    protocol: SettingsResolver | None = None,
) -> CVResult:
    """Mean and spread of the objective metric over the folds. ``protocol`` overrides the
    scoring parts of ``settings``; with ``cache``, a configuration scored before under the
    same key (``config_key``) is not refit and comes back with ``cached=True``."""
    settings = _resolve(settings, protocol)
    key = config_key(task, family, config, settings) if cache is not None else None
    if cache is not None and key is not None:
        stored = cache.get(key)
        if stored is not None:
            return CVResult(
                mean=float(stored["mean"]),
                std=float(stored["std"]),
                fold_scores=[float(v) for v in stored["fold_scores"]],
                seconds=float(stored["seconds"]),
                cached=True,
            )
    from sklearn.base import clone

    n_classes = len(task.class_names) if task.class_names else None
    metric = objective_metric(task, settings)
    X, y = task.X_train, task.y_train
    template = build_estimator(task, family, config, settings)
    started = time.perf_counter()
    scores: list[float] = []
    for train_idx, valid_idx in fold_indices(task, settings):
        model = clone(template)
        model.fit(X.iloc[train_idx], y.iloc[train_idx])
        scores.append(score(metric, model, X.iloc[valid_idx], y.iloc[valid_idx], n_classes))
    result = CVResult(
        mean=float(np.mean(scores)),
        std=float(np.std(scores)),
        fold_scores=scores,
        seconds=time.perf_counter() - started,
    )
    if cache is not None and key is not None:
        cache.put(key, {"mean": result.mean, "std": result.std,
                        "fold_scores": result.fold_scores, "seconds": result.seconds})
    return result


def holdout_scores(
    task: Task,
    family: ModelFamily,
    config: Mapping[str, Any],
    settings: EvalSettings,
    cache: ScoreCache | None = None,
    protocol: SettingsResolver | None = None,
) -> dict[str, float]:
    """Refit on the whole train split; the task's test metrics (and the objective metric when
    it is another one) on the test split. ``cache`` works as in ``cross_validate``."""
    settings = _resolve(settings, protocol)
    key = config_key(task, family, config, settings, kind="holdout") if cache else None
    if cache is not None and key is not None:
        stored = cache.get(key)
        if stored is not None:
            return {name: float(value) for name, value in stored.items()}
    n_classes = len(task.class_names) if task.class_names else None
    model = build_estimator(task, family, config, settings)
    model.fit(task.X_train, task.y_train)
    names = dict.fromkeys((*task.metrics, objective_metric(task, settings)))
    scores = {name: score(name, model, task.X_test, task.y_test, n_classes) for name in names}
    if cache is not None and key is not None:
        cache.put(key, scores)
    return scores


# ------------------------------------------------------------------------ cache keys

#: Task -> fingerprint of its data, computed once per loaded task (tasks are read-only).
_FINGERPRINTS: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
_LIBRARIES = {"lightgbm": "lightgbm", "xgboost": "xgboost"}


def data_fingerprint(task: Task) -> str:
    """Row counts and a hash of the train and test frames (values, index, column names): a
    cache key changes when the data does (another row cap, split, dropped column or
    package release)."""
    cached = _FINGERPRINTS.get(task)
    if cached is not None:
        return cached
    import pandas as pd

    digest = hashlib.sha256()
    for part in (task.X_train, task.y_train, task.X_test, task.y_test):
        digest.update(pd.util.hash_pandas_object(part, index=True).to_numpy().tobytes())
        names = list(part.columns) if isinstance(part, pd.DataFrame) else [part.name]
        digest.update(json.dumps([str(n) for n in names]).encode())
    fingerprint = f"{len(task.X_train)}+{len(task.X_test)}:{digest.hexdigest()[:24]}"
    _FINGERPRINTS[task] = fingerprint
    return fingerprint


def _library_versions(family: ModelFamily) -> dict[str, str]:
    """A score may move with the library that fits it, so its version is part of a key."""
    names = dict.fromkeys(["scikit-learn", _LIBRARIES.get(family.name, "scikit-learn")])
    return {name: metadata.version(name) for name in names}


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON-serializable: {value!r} ({type(value).__name__})")


def config_key(
    task: Task,
    family: ModelFamily,
    config: Mapping[str, Any],
    settings: EvalSettings,
    kind: str = "cv",
) -> str:
    """The ``ScoreCache`` key of one score: ``kind`` ("cv" or "holdout"), task name and data
    fingerprint, family and library versions, the scoring settings (already resolved against
    any protocol), and the configuration as canonical JSON (sorted keys; 3 and 3.0 differ)."""
    payload = {
        "kind": kind,
        "task": task.name,
        "data": data_fingerprint(task),
        "family": family.name,
        "libraries": _library_versions(family),
        "settings": settings.key_dict(),
        "config": dict(config),
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=_json_default)
    return f"{kind}:{hashlib.sha256(text.encode()).hexdigest()}"


# ------------------------------------------------------------------------ the objective


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
    task: Task,
    family: ModelFamily,
    default_space: SearchSpace,
    settings: EvalSettings,
    cache: ScoreCache | None = None,
) -> Callable[[optuna.Trial], float]:
    """An Optuna objective; the space is read from the study at each trial (it may adapt).
    With ``cache``, a configuration scored before is not refit: the trial gets the stored
    spread, folds and fit seconds, and ``studyinfo.CACHE_HIT``."""
    fit_errors = _fit_errors()

    def objective(trial: optuna.Trial) -> float:
        space = studyinfo.get_space(trial.study, default_space)
        params = suggest(trial, space)
        try:
            result = cross_validate(task, family, params, settings, cache=cache)
        except fit_errors as err:
            trial.set_user_attr(studyinfo.FIT_ERROR, f"{type(err).__name__}: {err}"[:500])
            return math.nan  # Optuna marks the trial FAIL and the study goes on.
        trial.set_user_attr(studyinfo.CV_STD, result.std)
        trial.set_user_attr(studyinfo.CV_FOLDS, result.fold_scores)
        trial.set_user_attr(studyinfo.FIT_SECONDS, round(result.seconds, 3))
        if result.cached:
            trial.set_user_attr(studyinfo.CACHE_HIT, True)
        return result.mean

    return objective
