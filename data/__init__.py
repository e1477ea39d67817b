"""The data stage: real tabular tasks that load offline from files inside PyPI packages.

``list_tasks()`` is cheap (no data read); ``load_task(name)`` reads, validates and splits a
registered task once per process; ``load_file_task(path, target)`` does the same for the
user's CSV or Parquet file. Bad input raises ``sllmbo.core.errors.TaskError``.

Every task is ``train`` or ``heldout`` (:mod:`sllmbo.data.splits`). The trial-log side of the
stage: :mod:`~sllmbo.data.trial_logs` reads any Optuna storage, :mod:`~sllmbo.data.collect`
runs the corpus studies, :mod:`~sllmbo.data.export` is the committed compact form, and
:mod:`~sllmbo.data.instructions` / :mod:`~sllmbo.data.build` turn logs into instruction data.

The names below are imported on first use, so a light submodule (``splits``, ``facts``)
does not pull pandas in with it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sllmbo.core.task import Task, TaskInfo
    from sllmbo.data.files import load_file_task
    from sllmbo.data.prepare import infer_task_type
    from sllmbo.data.registry import list_tasks, load_task, task_names

#: Where each name lives. ``Task`` is a foundation type (the objective takes one), so it
#: lives in :mod:`sllmbo.core.task`; the data stage builds and loads them.
_HOMES = {
    "Task": "sllmbo.core.task", "TaskInfo": "sllmbo.core.task",
    "infer_task_type": "sllmbo.data.prepare", "list_tasks": "sllmbo.data.registry",
    "load_task": "sllmbo.data.registry", "task_names": "sllmbo.data.registry",
    "load_file_task": "sllmbo.data.files",
}

__all__ = ["Task", "TaskInfo", "infer_task_type", "list_tasks", "load_file_task", "load_task",
           "task_names"]


def __getattr__(name: str) -> Any:
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_HOMES[name]), name)
    globals()[name] = value
    return value
