"""Look-up of the registered tasks: ``list_tasks`` (no data read) and ``load_task`` (cached)."""

from __future__ import annotations

import difflib
from functools import cache

from sllmbo.core.errors import TaskError
from sllmbo.core.task import Task, TaskInfo
from sllmbo.data.classification_tasks import CLASSIFICATION_TASKS
from sllmbo.data.entry import CatalogEntry
from sllmbo.data.facts import registered_facts, task_key
from sllmbo.data.prepare import build_task
from sllmbo.data.rdatasets_tasks import RDATASETS_TASKS
from sllmbo.data.regression_tasks import REGRESSION_TASKS
from sllmbo.data.splits import SPLITS
from sllmbo.data.variants import Variant, ladder, parse_variant, subsample_variant

_ENTRIES: dict[str, CatalogEntry] = {
    e.info.name: e for e in REGRESSION_TASKS + CLASSIFICATION_TASKS + RDATASETS_TASKS
}


def list_tasks(split: str | None = None) -> list[TaskInfo]:
    """Registered tasks (all, or one ``split``), regression first, in registration order;
    reads no data."""
    if split is not None and split not in SPLITS:
        raise TaskError(
            f"split must be one of {', '.join(SPLITS)}, got '{split}'",
            hint="leave the split out to list every task",
        )
    return [e.info for e in _ENTRIES.values() if split in (None, e.info.split)]


def task_names(split: str | None = None) -> list[str]:
    return [i.name for i in list_tasks(split)]


def load_task(name: str) -> Task:
    """The registered task ``name`` (``-`` and case are forgiven), loaded once per process.

    ``<task>@<rows>`` is the task's variant fitted on ``rows`` training rows
    (:mod:`sllmbo.data.variants`); its rows must be a rung of the task's ladder.
    """
    variant = parse_variant(name) if isinstance(name, str) else None
    if variant is not None:
        return _load_variant(*variant)
    key = task_key(name) if isinstance(name, str) else name
    if key not in _ENTRIES:
        close = difflib.get_close_matches(str(key), _ENTRIES, n=3, cutoff=0.5)
        suggestion = f"did you mean {', '.join(close)}? " if close else ""
        raise TaskError(
            f"unknown task '{name}'",
            hint=f"{suggestion}`sllmbo tasks` lists the {len(_ENTRIES)} built-in tasks; "
            "for your own CSV or Parquet file use --data PATH --target COLUMN",
        )
    return _load_cached(key)


@cache
def _load_variant(dataset: str, rows: int) -> Task:
    return subsample_variant(load_task(dataset), rows)


@cache
def _load_cached(key: str) -> Task:
    spec = _ENTRIES[key]
    info = spec.info
    return build_task(
        spec.read(),
        target=spec.target,
        task_type=info.task_type,
        name=info.name,
        source=info.source,
        description=info.description,
        benchmark_kind=info.benchmark_kind,
        is_equivalent=info.is_equivalent,
    )


def plan_variants(split: str, datasets: list[str] | None = None) -> list[Variant]:
    """Every variant of the registered datasets of ``split`` (or of ``datasets``), smallest
    first, so a collection cut short has covered every dataset at its small sizes."""
    names = task_names(split) if datasets is None else datasets
    out: list[Variant] = []
    for name in names:
        facts = registered_facts(name)
        if facts is None:
            raise TaskError(f"task '{name}' has no shipped facts",
                            hint="rebuild them: python -m sllmbo.data.facts_build")
        full = int(facts["n_rows"])
        out += [Variant(name, rows, full, facts["task_type"]) for rows in ladder(full)]
    return sorted(out, key=lambda v: (v.rows, v.dataset))
