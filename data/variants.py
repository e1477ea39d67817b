"""Task variants: one dataset fitted at several training sizes, named ``<dataset>@<rows>``.

Data size is the strongest documented driver of good GBDT settings (leaf sizes, trees x
learning rate, regularization), so the meta-dataset shows every dataset at its own size (capped
at ``VARIANT_CAP`` training rows for speed) and, for the larger ones, at subsamples on a
geometric ladder (x1/4 steps down to about ``MIN_VARIANT_ROWS``). A variant keeps its dataset's
train/test split: its training rows are a fixed subsample (seed 0) of the dataset's training
split, so the variants of one dataset count as **one dataset** in every statistic, and a
variant of a held-out dataset is held out (its name contains the dataset's).

Planning reads only ``data/task_facts.json`` (no data); loading a variant loads its dataset.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sllmbo.core.errors import TaskError

if TYPE_CHECKING:
    from sllmbo.core.task import Task

#: Training rows a variant is fitted on at most (the issue's floor for a speed cap is 20,000).
VARIANT_CAP = 20_000
#: Each rung of the ladder has this many times fewer rows than the one above it.
LADDER_FACTOR = 4
#: No rung below this many training rows (the smallest registered dataset has 210).
MIN_VARIANT_ROWS = 250

_VARIANT = re.compile(r"^(?P<dataset>[a-z0-9_]+)@(?P<rows>[0-9]+)$")


@dataclass(frozen=True, order=True)
class Variant:
    """A dataset at ``rows`` training rows (``full_rows``: its whole training split)."""

    dataset: str
    rows: int
    full_rows: int
    task_type: str

    @property
    def name(self) -> str:
        return variant_name(self.dataset, self.rows)

    @property
    def is_full(self) -> bool:
        """True for the dataset's top rung (its whole training split, or the cap)."""
        return self.rows == min(self.full_rows, VARIANT_CAP)


def variant_name(dataset: str, rows: int) -> str:
    return f"{dataset}@{rows}"


def parse_variant(name: str) -> tuple[str, int] | None:
    """``(dataset, rows)`` for a variant name, None for a plain task name."""
    match = _VARIANT.match(name.strip().lower().replace("-", "_"))
    return (match["dataset"], int(match["rows"])) if match else None


def ladder(full_rows: int) -> list[int]:
    """Training sizes of a dataset with ``full_rows`` training rows, largest first: the whole
    split (capped), then x1/LADDER_FACTOR steps while a rung keeps MIN_VARIANT_ROWS rows."""
    rows = [min(full_rows, VARIANT_CAP)]
    while rows[-1] // LADDER_FACTOR >= MIN_VARIANT_ROWS:
        rows.append(rows[-1] // LADDER_FACTOR)
    return rows


def check_rows(dataset: str, rows: int, full_rows: int) -> None:
    """``TaskError`` unless ``rows`` is a rung of ``dataset``'s ladder: an arbitrary size
    would be a task no matrix row describes."""
    rungs = ladder(full_rows)
    if rows not in rungs:
        raise TaskError(
            f"'{variant_name(dataset, rows)}' is not a variant of {dataset}",
            hint=f"its variants have {', '.join(map(str, rungs))} training rows",
        )


def subsample_variant(task: Task, rows: int) -> Task:
    """``task`` fitted on ``rows`` training rows (a fixed subsample, seed 0, stratified for
    classification), named as the variant. Every variant keeps the dataset's test split (at
    most ``VARIANT_CAP // 4`` rows), so a small variant's test score is not noise."""
    from dataclasses import replace

    from sllmbo.core.task import sample_rows

    full = len(task.X_train)
    check_rows(task.name, rows, full)
    X_train, y_train = sample_rows(task.X_train, task.y_train, rows, 0, task.task_type)
    X_test, y_test = sample_rows(task.X_test, task.y_test, VARIANT_CAP // 4, 0, task.task_type)
    return replace(task, name=variant_name(task.name, rows), X_train=X_train, y_train=y_train,
                   X_test=X_test, y_test=y_test, full_train_rows=full if rows < full else None)
