"""A registry entry: the cheap ``TaskInfo`` plus how to read the raw frame when asked."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd

from sllmbo.core.task import TaskInfo, TaskType
from sllmbo.data.splits import split_of


@dataclass(frozen=True)
class CatalogEntry:
    """``read`` returns the target column plus the feature columns, leaky ones already dropped."""

    info: TaskInfo
    target: str
    read: Callable[[], pd.DataFrame]


def entry(
    name: str,
    task_type: TaskType,
    target: str,
    *,
    package: str,
    source: str,
    description: str,
    rows: int,
    features: int,
    read: Callable[[], pd.DataFrame],
    stands_for: str | None = None,
    equivalent: bool = False,
) -> CatalogEntry:
    """Build an entry; ``rows`` (before the split) and ``features`` are checked by the tests."""
    info = TaskInfo(
        name=name,
        task_type=task_type,
        source=source,
        description=description,
        benchmark_kind=stands_for,
        is_equivalent=equivalent,
        approx_rows=rows,
        n_features=features,
        package=package,
        split=split_of(name),
    )
    return CatalogEntry(info=info, target=target, read=read)
