"""Expected failures: bad input or a broken environment.

Every ``SllmboError`` reaching the CLI becomes one line on stderr (the rule, the bad value,
the next step) and exit code 2, never a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations


class SllmboError(Exception):
    """Base class for errors the user can fix; ``hint`` says the next step."""

    exit_code = 2

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class SpaceError(SllmboError):
    """A search space definition is invalid (low > high, non-positive log bound, ...)."""


class ConfigError(SllmboError):
    """A proposed configuration does not fit its search space; ``problems`` lists why."""

    def __init__(self, problems: list[str], hint: str | None = None) -> None:
        super().__init__("invalid configuration: " + "; ".join(problems), hint)
        self.problems = problems


class TaskError(SllmboError):
    """A task cannot be loaded: unknown name, missing column, empty data, single class."""


class StorageError(SllmboError):
    """An Optuna storage URL does not open or holds something unexpected."""


class BackendError(SllmboError):
    """An LLM backend cannot answer: missing model, server down, garbage reply, timeout."""


class ModelNotFoundError(BackendError):
    """No local model folder where one is needed."""
