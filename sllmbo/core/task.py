"""The two records every other stage reads: ``TaskInfo`` (cheap) and ``Task`` (loaded data).

A ``Task`` is a fixed train/test split of one tabular dataset, with dtypes already normalized
(categorical features as pandas ``category``, classification targets as 0..K-1 ints), so the
model families, the CV objective and the task card never re-interpret raw columns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import pandas as pd

TaskType = Literal["regression", "classification"]
TASK_TYPES: tuple[str, ...] = ("regression", "classification")


@dataclass(frozen=True)
class TaskInfo:
    """What ``list_tasks`` says about a registered task without loading any data.

    ``benchmark_kind`` names the SLLMBO benchmark dataset this task stands for (e.g.
    ``"bike_sharing"``, ``"census_income"``), or None when it stands for none of them;
    ``is_equivalent`` is True when the task is a real, related dataset used *in place of*
    that benchmark dataset because no offline package ships the original.
    """

    name: str
    task_type: TaskType
    source: str
    description: str
    benchmark_kind: str | None
    is_equivalent: bool
    approx_rows: int
    n_features: int
    package: str
    #: ``train`` or ``heldout`` (fixed in ``sllmbo.data.splits``; held-out tasks never train).
    split: str = "train"


@dataclass(frozen=True, eq=False)
class Task:
    """A loaded task: a fixed 80/20 split (seed 0, stratified for classification).

    Treat the frames as read-only: ``load_task`` caches tasks in-process, so a mutation
    would leak into every later caller.
    """

    name: str
    task_type: TaskType
    target: str
    source: str
    description: str
    X_train: pd.DataFrame
    y_train: pd.Series
    X_test: pd.DataFrame
    y_test: pd.Series
    categorical_columns: list[str]
    numeric_columns: list[str]
    class_names: list[str] | None = None
    benchmark_kind: str | None = None
    is_equivalent: bool = False
    dropped_columns: list[str] = field(default_factory=list)
    #: Rows of the full training split when this task is a row-capped subsample, else None.
    full_train_rows: int | None = None

    def subsample(self, max_rows: int, seed: int = 0) -> Task:
        """At most ``max_rows`` training rows and ``max_rows // 4`` test rows (stratified for
        classification), so a trial of corpus collection stays near a second; ``self`` when
        it is small enough already."""
        if max_rows < 20:
            raise ValueError(f"max_rows must be >= 20, got {max_rows}")
        if len(self.X_train) <= max_rows:
            return self
        X_train, y_train = sample_rows(self.X_train, self.y_train, max_rows, seed, self.task_type)
        X_test, y_test = sample_rows(self.X_test, self.y_test, max(max_rows // 4, 20), seed,
                                 self.task_type)
        return replace(self, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test,
                       full_train_rows=len(self.X_train))

    @property
    def metric(self) -> str:
        """The objective: RMSE for regression, log-loss for classification (both minimized)."""
        return "rmse" if self.task_type == "regression" else "log_loss"

    @property
    def metrics(self) -> tuple[str, ...]:
        """Every metric reported on the test split; the first is the objective."""
        return ("rmse",) if self.task_type == "regression" else ("log_loss", "accuracy")

    @property
    def direction(self) -> str:
        return "minimize"

    def meta_features(self) -> dict[str, Any]:
        """Dataset meta-features for the task card, computed on the training split only.

        Keys match ``sllmbo.core.taskcard.TaskCard``; class-balance keys are None for regression
        and target-spread keys are None for classification.
        """
        X, y = self.X_train, self.y_train
        cells = X.shape[0] * X.shape[1]
        missing = float(X.isna().to_numpy().sum() / cells) if cells else 0.0
        features: dict[str, Any] = {
            "n_rows": len(X),
            "n_features": int(X.shape[1]),
            "n_numeric": len(self.numeric_columns),
            "n_categorical": len(self.categorical_columns),
            "missing_share": round(missing, 6),
            "n_classes": None,
            "minority_share": None,
            "target_mean": None,
            "target_std": None,
            "target_skew": None,
            "description": self.description,
        }
        if self.task_type == "classification":
            shares = y.value_counts(normalize=True)
            features["n_classes"] = len(self.class_names or [])
            features["minority_share"] = round(float(shares.min()), 6)
        else:
            features["target_mean"] = _finite(y.mean())
            features["target_std"] = _finite(y.std())
            features["target_skew"] = _finite(y.skew())
        return features


def sample_rows(
    X: pd.DataFrame, y: pd.Series, n: int, seed: int, task_type: str
) -> tuple[pd.DataFrame, pd.Series]:
    if len(X) <= n:
        return X, y
    from sklearn.model_selection import train_test_split

    counts = y.value_counts()
    stratify = y if task_type == "classification" and counts.min() >= 2 and len(counts) <= n else None
    X_kept, _, y_kept, _ = train_test_split(X, y, train_size=n, random_state=seed, stratify=stratify)
    return X_kept, y_kept


def _finite(value: float) -> float | None:
    """A plain rounded float, or None where pandas gives NaN (e.g. a constant target's skew)."""
    value = float(value)
    return round(value, 6) if math.isfinite(value) else None
