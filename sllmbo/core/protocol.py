"""Evaluation protocols: how a configuration is scored, fixed as one record.

The registry's own protocol (a seed-0 80/20 split, shuffled K-fold CV seeded by the run, the
family builders' estimators) suits tuning. Comparing with published numbers needs *their*
protocol: their dropped columns, split and fold seeds, metric, bare library estimator with
their fixed arguments, and their search space. ``EvalProtocol`` says all of that in one frozen
record that ``tune(protocol=...)`` and the objective functions take, and that every study
records (``to_dict``) so a result names how it was scored.
"""

from __future__ import annotations

import json
import math
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import SllmboError, TaskError
from sllmbo.core.objective import ESTIMATOR_MODES, METRICS, EvalSettings, check_metric
from sllmbo.core.space import SearchSpace

if TYPE_CHECKING:
    from sllmbo.core.families import ModelFamily
    from sllmbo.core.task import Task

_SCALARS = (str, int, float, bool, type(None))
_DATA_FIELDS = ("drop_columns", "test_size", "split_seed", "split_shuffle", "split_stratify")


def _within(param: Any, limit: Any) -> bool:
    """Whether ``param``'s range (or choices) lies inside ``limit``'s."""
    if hasattr(param, "choices"):
        return hasattr(limit, "choices") and set(param.choices) <= set(limit.choices)
    return not hasattr(limit, "choices") and limit.low <= param.low and param.high <= limit.high


def _check_seed(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise SllmboError(f"protocol {name} must be a whole number or None, got {value!r}")


@dataclass(frozen=True)
class EvalProtocol:
    """How a configuration is scored, beyond the registry's defaults. Every field left at
    its default keeps the registry's behaviour for that part.

    - ``metric``: the objective (a name in ``sllmbo.core.objective.METRICS``); None: the task's.
    - ``drop_columns``: feature columns removed before anything else.
    - ``test_size``: re-split train+test (in the data's original row order) with this test
      share, ``split_seed`` and ``split_shuffle`` (``train_test_split``'s arguments);
      ``split_stratify`` None stratifies classification targets when shuffling. None keeps
      the task's own split.
    - ``n_folds`` (None: tune's ``n_folds``), ``cv_seed`` (None: tune's ``seed``),
      ``cv_shuffle``, ``cv_stratify`` (classification: StratifiedKFold; regression: KFold).
    - ``estimator``: ``family`` (the family builder) or ``plain`` (the bare library class
      with only ``fixed_args`` + the configuration, as e.g. ``LGBMRegressor(**params,
      random_state=42)``).
    - ``fixed_args``: estimator arguments added to every configuration (JSON scalars).
    - ``space``: the search space, authoritative (the family's hard limits do not apply in
      ``plain`` mode).
    """

    name: str = "custom"
    metric: str | None = None
    drop_columns: tuple[str, ...] = ()
    test_size: float | None = None
    split_seed: int | None = 0
    split_shuffle: bool = True
    split_stratify: bool | None = None
    n_folds: int | None = None
    cv_seed: int | None = None
    cv_shuffle: bool = True
    cv_stratify: bool = True
    estimator: str = "family"
    fixed_args: Mapping[str, Any] = field(default_factory=dict)
    space: SearchSpace | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SllmboError(f"protocol name must be a non-empty string, got {self.name!r}")
        if self.metric is not None and self.metric not in METRICS:
            raise SllmboError(
                f"protocol metric must be one of {', '.join(METRICS)}, got {self.metric!r}"
            )
        drop = (self.drop_columns,) if isinstance(self.drop_columns, str) else self.drop_columns
        drop = tuple(drop)
        if not all(isinstance(c, str) and c for c in drop) or len(set(drop)) != len(drop):
            raise SllmboError(
                f"protocol drop_columns must be distinct column names, got {list(drop)}"
            )
        object.__setattr__(self, "drop_columns", drop)
        if self.test_size is not None and not (
            isinstance(self.test_size, (int, float)) and 0 < self.test_size < 1
        ):
            raise SllmboError(
                f"protocol test_size must be a share in (0, 1), got {self.test_size!r}",
                hint="e.g. 0.2 for an 80/20 split; None keeps the task's own split",
            )
        for name in ("split_seed", "cv_seed"):
            _check_seed(name, getattr(self, name))
        if not self.split_shuffle and self.split_stratify:
            raise SllmboError("protocol split_stratify needs split_shuffle=True "
                              "(a stratified split shuffles)")
        if self.n_folds is not None and (
            not isinstance(self.n_folds, int) or isinstance(self.n_folds, bool) or self.n_folds < 2
        ):
            raise SllmboError(f"protocol n_folds must be an integer >= 2, got {self.n_folds!r}")
        if not self.cv_shuffle and self.cv_seed is not None:
            raise SllmboError(
                f"protocol cv_seed={self.cv_seed} does nothing without cv_shuffle",
                hint="set cv_shuffle=True or cv_seed=None",
            )
        if self.estimator not in ESTIMATOR_MODES:
            raise SllmboError(
                f"protocol estimator must be one of {', '.join(ESTIMATOR_MODES)}, "
                f"got {self.estimator!r}"
            )
        fixed = dict(self.fixed_args)
        bad = {k: v for k, v in fixed.items() if not isinstance(k, str)
               or not isinstance(v, _SCALARS) or (isinstance(v, float) and not math.isfinite(v))}
        if bad:
            raise SllmboError(
                f"protocol fixed_args must map names to JSON scalars, got {bad!r}",
                hint="e.g. {'random_state': 42}",
            )
        object.__setattr__(self, "fixed_args", fixed)
        space = self.space
        if isinstance(space, Mapping):
            space = SearchSpace.from_dict(space)
            object.__setattr__(self, "space", space)
        if space is not None and not isinstance(space, SearchSpace):
            raise SllmboError(f"protocol space must be a SearchSpace, got {type(space).__name__}")
        if space is not None:
            clash = sorted(set(space.names) & set(fixed))
            if clash:
                raise SllmboError(
                    f"protocol fixed_args {clash} are also tuned by its space",
                    hint="fix a parameter or tune it, not both",
                )

    # -- scoring ------------------------------------------------------------------------
    def resolve(self, settings: EvalSettings) -> EvalSettings:
        """``settings`` with this protocol's scoring parts in place (threads and, when the
        protocol leaves them open, folds and seed stay the caller's)."""
        return replace(
            settings,
            n_folds=self.n_folds if self.n_folds is not None else settings.n_folds,
            seed=self.cv_seed if self.cv_seed is not None else settings.seed,
            metric=self.metric if self.metric is not None else settings.metric,
            shuffle=self.cv_shuffle,
            stratified=self.cv_stratify,
            estimator=self.estimator,
            fixed_args=dict(self.fixed_args),
        )

    def check(self, task: Task, family: ModelFamily) -> None:
        """``SllmboError`` where this protocol cannot score ``family`` on ``task``: a metric
        of the other task type, a family-mode space outside the family's hard limits, or a
        plain estimator that lacks a tuned argument."""
        from sllmbo.core.families import plain_arguments

        if self.metric is not None:
            check_metric(self.metric, task.task_type)
        if self.space is None:
            return
        if self.estimator == "family":
            limits = family.hard_limits(task.task_type)
            unknown = [n for n in self.space.names if n not in limits]
            outside = [p.name for p in self.space if p.name in limits
                       and not _within(p, limits[p.name])]
            if unknown or outside:
                raise SllmboError(
                    f"protocol '{self.name}' space does not fit the {family.name} family: "
                    f"unknown {unknown}, outside the hard limits {outside}",
                    hint="use estimator='plain' to score the library estimator with this space",
                )
        elif family.name in ("random_forest", "mlp"):
            missing = sorted(set(self.space.names) - plain_arguments(family, task.task_type))
            if missing:
                raise SllmboError(
                    f"the plain {family.name} estimator takes no argument {missing}",
                    hint="name the library's own constructor arguments in the protocol space",
                )

    # -- data ---------------------------------------------------------------------------
    def changes_data(self) -> bool:
        return bool(self.drop_columns) or self.test_size is not None

    def apply(self, task: Task) -> Task:
        """``task`` with this protocol's columns dropped and split made (the same ``Task``
        when it changes neither). Idempotent: columns already dropped stay dropped, and the
        split is redone from the original row order (train and test rows sorted by index)."""
        if not self.changes_data():
            return task
        per_task = _APPLIED.setdefault(task, {})
        key = json.dumps(self._data_dict(), sort_keys=True)
        if key not in per_task:
            applied = self._apply(task)
            per_task[key] = applied
            _APPLIED.setdefault(applied, {})[key] = applied  # applying again changes nothing
        return per_task[key]

    def _apply(self, task: Task) -> Task:
        import pandas as pd

        columns = set(task.X_train.columns)
        missing = [c for c in self.drop_columns
                   if c not in columns and c not in task.dropped_columns]
        if missing:
            raise TaskError(
                f"protocol '{self.name}' drops columns {missing} that task '{task.name}' "
                f"does not have; its columns: {', '.join(map(str, task.X_train.columns))}",
                hint="fix the protocol's drop_columns",
            )
        drop = [c for c in self.drop_columns if c in columns]
        if len(drop) == len(columns):
            raise TaskError(f"protocol '{self.name}' drops every feature of task '{task.name}'")
        X_train, X_test = task.X_train.drop(columns=drop), task.X_test.drop(columns=drop)
        y_train, y_test = task.y_train, task.y_test
        if self.test_size is not None:
            from sklearn.model_selection import train_test_split

            X = pd.concat([X_train, X_test]).sort_index(kind="stable")
            y = pd.concat([y_train, y_test]).loc[X.index]
            stratify = self.split_stratify
            if stratify is None:
                stratify = task.task_type == "classification" and self.split_shuffle
            try:
                X_train, X_test, y_train, y_test = train_test_split(
                    X, y, test_size=self.test_size,
                    random_state=self.split_seed if self.split_shuffle else None,
                    shuffle=self.split_shuffle, stratify=y if stratify else None,
                )
            except ValueError as err:
                raise TaskError(
                    f"protocol '{self.name}' cannot split task '{task.name}': {err}",
                    hint="change test_size or turn split_stratify off",
                ) from None
        return replace(
            task,
            X_train=X_train,
            y_train=y_train,
            X_test=X_test,
            y_test=y_test,
            categorical_columns=[c for c in task.categorical_columns if c not in drop],
            numeric_columns=[c for c in task.numeric_columns if c not in drop],
            dropped_columns=[*task.dropped_columns, *drop],
        )

    def _data_dict(self) -> dict[str, Any]:
        """The fields that decide the data (two protocols that agree here share a task)."""
        return {k: v for k, v in self.to_dict().items() if k in _DATA_FIELDS}

    # -- records ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: stored in the study's run config and next to results."""
        return {
            "name": self.name,
            "metric": self.metric,
            "drop_columns": list(self.drop_columns),
            "test_size": self.test_size,
            "split_seed": self.split_seed,
            "split_shuffle": self.split_shuffle,
            "split_stratify": self.split_stratify,
            "n_folds": self.n_folds,
            "cv_seed": self.cv_seed,
            "cv_shuffle": self.cv_shuffle,
            "cv_stratify": self.cv_stratify,
            "estimator": self.estimator,
            "fixed_args": dict(self.fixed_args),
            "space": None if self.space is None else self.space.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvalProtocol:
        """The inverse of ``to_dict``; an unknown key is an error, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise SllmboError(f"unknown protocol fields {unknown}",
                              hint=f"known: {', '.join(sorted(known))}")
        values = dict(data)
        if values.get("space") is not None:
            values["space"] = SearchSpace.from_dict(values["space"])
        if "drop_columns" in values:
            values["drop_columns"] = tuple(values["drop_columns"])
        return cls(**values)


#: Task -> {protocol JSON: applied task}: re-applying a protocol to the same loaded task
#: returns the same object (so its data fingerprint is computed once).
_APPLIED: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()
