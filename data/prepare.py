"""One frame + a target column -> a validated, dtype-normalized, split ``Task``.

Both the registry and the user's files go through ``build_task``, so a built-in task and a
CSV obey the same rules and raise the same ``TaskError`` messages.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd

from sllmbo.core.errors import SllmboNote, TaskError, shown
from sllmbo.core.task import TASK_TYPES, Task, TaskType

TEST_SHARE = 0.2
SPLIT_SEED = 0
MIN_ROWS = 20  # 5-fold CV needs at least 4 rows a fold to say anything
MAX_CLASSES_WHEN_INFERRING = 20


def infer_task_type(y: pd.Series) -> TaskType:
    """Classification for non-numeric targets or <= 20 distinct integer values, else regression."""
    if not _is_number(y):
        return "classification"
    values = y.dropna().unique()
    integral = bool(np.all(np.mod(values.astype(float), 1.0) == 0.0))
    return (
        "classification" if integral and len(values) <= MAX_CLASSES_WHEN_INFERRING else "regression"
    )


def build_task(
    frame: pd.DataFrame,
    *,
    target: str,
    task_type: str | None,
    name: str,
    source: str,
    description: str,
    benchmark_kind: str | None = None,
    is_equivalent: bool = False,
) -> Task:
    """Validate ``frame``, normalize dtypes, encode the target and split 80/20 (seed 0).

    Rows with a missing target are dropped; feature NaNs stay (the model families handle
    them); feature columns that are entirely missing are dropped with a warning.
    """
    from sklearn.model_selection import train_test_split

    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise TaskError(f"task '{name}' has no rows", hint=f"check the data in {source}")
    frame = frame.rename(columns=str)
    if target not in frame.columns:
        raise TaskError(
            f"target column '{target}' is not in task '{name}'; "
            f"available columns: {', '.join(frame.columns)}",
            hint="pass one of the available columns as the target",
        )
    frame = frame.loc[frame[target].notna()]
    if frame.empty:
        raise TaskError(
            f"task '{name}' has no rows after dropping rows whose target '{target}' is missing",
            hint="choose a target column that has values",
        )
    _check_finite(frame, target, name)
    kind = _resolve_task_type(frame[target], task_type, name)
    X = _normalize_features(frame.drop(columns=[target]), name)
    dropped = [c for c in frame.columns if c != target and c not in X.columns]
    if len(frame) < MIN_ROWS:
        raise TaskError(
            f"task '{name}' has {len(frame)} rows with a target; 5-fold CV needs at least {MIN_ROWS}",
            hint="use a larger dataset",
        )
    y, class_names = _encode_target(frame[target], kind, name, target)
    if class_names is not None:
        _check_split_holds_classes(len(y), len(class_names), name, target)
    X_train, X_test, y_train, y_test = train_test_split(
        X,
        y,
        test_size=TEST_SHARE,
        random_state=SPLIT_SEED,
        stratify=y if kind == "classification" else None,
    )
    categorical = [c for c in X.columns if isinstance(X[c].dtype, pd.CategoricalDtype)]
    return Task(
        name=name,
        task_type=kind,
        target=target,
        source=source,
        description=description,
        X_train=X_train,
        y_train=y_train,
        X_test=X_test,
        y_test=y_test,
        categorical_columns=categorical,
        numeric_columns=[c for c in X.columns if c not in categorical],
        class_names=class_names,
        benchmark_kind=benchmark_kind,
        is_equivalent=is_equivalent,
        dropped_columns=dropped,
    )


def _is_number(values: pd.Series) -> bool:
    return pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)


def _resolve_task_type(y: pd.Series, task_type: str | None, name: str) -> TaskType:
    if task_type is None:
        return infer_task_type(y)
    if task_type not in TASK_TYPES:
        raise TaskError(
            f"task_type must be one of {', '.join(TASK_TYPES)}, got '{task_type}' for task '{name}'",
            hint="pass --task-type regression or --task-type classification, or leave it out to infer it",
        )
    if task_type == "regression" and not _is_number(y):
        examples = ", ".join(map(shown, y.unique()[:3].tolist()))
        raise TaskError(
            f"a regression target must be numeric; column '{y.name}' of task '{name}' "
            f"holds {y.dtype} values such as {examples}",
            hint="use --task-type classification, or choose a numeric target column",
        )
    return task_type  # type: ignore[return-value]


def _check_finite(frame: pd.DataFrame, target: str, name: str) -> None:
    """Refuse infinite numbers when the data loads: every model family and metric fails on
    them later, trial after trial, with a message about something else."""
    numeric = [c for c in frame.columns if _is_number(frame[c])]
    infinite = {c: int(np.isinf(frame[c].to_numpy(dtype="float64")).sum()) for c in numeric}
    infinite = {c: n for c, n in infinite.items() if n}
    if not infinite:
        return
    listed = ", ".join(f"'{c}' ({n} rows)" for c, n in list(infinite.items())[:5])
    where = "the target" if list(infinite) == [target] else "columns"
    raise TaskError(
        f"task '{name}' holds infinite values (inf or -inf) in {where} {listed}",
        hint="replace them with finite numbers, or leave the cells empty (missing values "
        "are allowed in features; rows with a missing target are dropped)",
    )


def _check_split_holds_classes(rows: int, n_classes: int, name: str, target: str) -> None:
    """The stratified 80/20 split needs every class in both parts: at least as many test rows
    (and training rows) as classes."""
    n_test = math.ceil(TEST_SHARE * rows)
    if n_test >= n_classes and rows - n_test >= n_classes:
        return
    needed = next(n for n in range(rows, rows + 10 * n_classes + 10)
                  if min(math.ceil(TEST_SHARE * n), n - math.ceil(TEST_SHARE * n)) >= n_classes)
    raise TaskError(
        f"classification target '{target}' of task '{name}' has {n_classes} classes but "
        f"{rows} rows: the {TEST_SHARE:.0%} test split holds {n_test}, fewer than one row per "
        f"class; at least {needed} rows are needed",
        hint="add rows, merge rare classes, or use --task-type regression for a numeric target",
    )


def _normalize_features(X: pd.DataFrame, name: str) -> pd.DataFrame:
    """Numbers stay numbers, datetimes become epoch seconds, everything else ``category``."""
    if X.shape[1] == 0:
        raise TaskError(
            f"task '{name}' has no feature columns besides the target",
            hint="add the columns the target should be predicted from",
        )
    empty = [c for c in X.columns if X[c].isna().all()]
    if len(empty) == X.shape[1]:
        raise TaskError(
            f"every feature column of task '{name}' is entirely missing (all NaN): {', '.join(empty)}",
            hint="check that the file was read with the right separator and has values",
        )
    if empty:
        warnings.warn(
            f"task '{name}': dropping feature columns that are entirely missing: {', '.join(empty)}",
            SllmboNote,
            stacklevel=3,
        )
        X = X.drop(columns=empty)
    columns: dict[str, pd.Series] = {}
    for col in X.columns:
        values = X[col]
        if pd.api.types.is_datetime64_any_dtype(values):
            columns[col] = values.astype("int64").where(values.notna()).astype("float64") / 1e9
        elif _is_number(values):
            columns[col] = values
        else:
            columns[col] = values.astype("category")
    return pd.DataFrame(columns, index=X.index)


def _encode_target(
    y: pd.Series, kind: TaskType, name: str, target: str
) -> tuple[pd.Series, list[str] | None]:
    if kind == "regression":
        return y.astype("float64"), None
    if isinstance(y.dtype, pd.CategoricalDtype):
        y = y.astype(object)
    counts = y.value_counts()
    if len(counts) < 2:
        raise TaskError(
            f"classification target '{target}' of task '{name}' has a single class "
            f"({shown(counts.index[0])}); at least two are needed",
            hint="choose another target column, or use --task-type regression for a numeric one",
        )
    rare = counts[counts < 2]
    if len(rare):
        raise TaskError(
            f"classification target '{target}' of task '{name}' has classes with a single row "
            f"({', '.join(map(shown, rare.index[:5].tolist()))}); a stratified split needs >= 2 each",
            hint="merge or drop the rare classes, or use --task-type regression for a numeric target",
        )
    labels = sorted(counts.index, key=_sort_key)
    codes = y.map({label: i for i, label in enumerate(labels)}).astype("int64")
    return codes.rename(target), [str(label) for label in labels]


def _sort_key(label: object) -> tuple[int, float, str]:
    """Numbers in numeric order before strings, so class 10 comes after class 9."""
    if isinstance(label, (int, float, np.integer, np.floating)) and not isinstance(label, bool):
        return (0, float(label), "")
    return (1, 0.0, str(label))
