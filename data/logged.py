"""Trial logs as plain data: what every reader of a storage returns (``trial_logs`` for Optuna
storages, ``export`` for the compact export), in one module both import."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class LoggedTrial:
    """One trial as plain data. ``value`` is None unless ``state == "complete"``;
    ``distributions`` are Optuna's JSON (``distribution_to_json``) per parameter."""

    number: int
    state: str
    params: dict[str, Any]
    distributions: dict[str, str]
    value: float | None
    datetime_start: datetime | None
    datetime_complete: datetime | None
    user_attrs: dict[str, Any]
    retry_root: int | None = None

    @property
    def duration_s(self) -> float | None:
        if self.datetime_start is None or self.datetime_complete is None:
            return None
        return (self.datetime_complete - self.datetime_start).total_seconds()


@dataclass
class StudyLog:
    name: str
    source: str
    direction: str
    user_attrs: dict[str, Any]
    trials: list[LoggedTrial]
    n_corrupt: int = 0
    n_retry_duplicates: int = 0

    @property
    def complete(self) -> list[LoggedTrial]:
        return [t for t in self.trials if t.state == "complete"]


@dataclass
class ReadResult:
    studies: list[StudyLog] = field(default_factory=list)
    #: (study or file, why it was not read)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def n_corrupt(self) -> int:
        return sum(s.n_corrupt for s in self.studies)

    def extend(self, other: ReadResult) -> None:
        self.studies.extend(other.studies)
        self.skipped.extend(other.skipped)
