"""The evaluation's own state, in one SQLite file beside its Optuna studies.

Two tables of JSON values: ``scores`` (cross-validation and test scores of a configuration on
a task under fixed folds, so the same configuration is never fitted twice: the library
defaults and the portfolio's configurations recur across methods) and ``runs`` (the finished
result of each (task, family, method, seed) run, and a single-shot run's answers, so a killed
evaluation re-runs nothing that finished and never asks the LLM twice for the same run).
Several worker processes share the file: writes are short transactions and readers wait.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS scores (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS runs (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
)


class EvalStore:
    """Key -> JSON value tables in ``path``; ``get``/``put`` make it a score cache for
    ``tune(cache=...)``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute("PRAGMA journal_mode=WAL")
            for statement in _SCHEMA:
                db.execute(statement)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=120)

    def _get(self, table: str, key: str) -> Any | None:
        with self._connect() as db:
            row = db.execute(f"SELECT value FROM {table} WHERE key = ?", (key,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _put(self, table: str, key: str, value: Any) -> None:
        text = json.dumps(value, sort_keys=True)
        with self._connect() as db:
            db.execute(f"INSERT OR REPLACE INTO {table} (key, value) VALUES (?, ?)", (key, text))

    # The score cache (``sllmbo.core.objective.ScoreCache``).
    def get(self, key: str) -> dict[str, Any] | None:
        return self._get("scores", key)

    def put(self, key: str, value: dict[str, Any]) -> None:
        self._put("scores", key, value)

    # Finished runs and stored LLM answers.
    def run(self, key: str) -> Any | None:
        return self._get("runs", key)

    def put_run(self, key: str, value: Any) -> None:
        self._put("runs", key, value)

    def forget_runs(self, keys: list[str]) -> int:
        """Drop these finished runs (and stored answers); returns how many there were."""
        with self._connect() as db:
            return sum(db.execute("DELETE FROM runs WHERE key = ?", (k,)).rowcount for k in keys)

    def run_keys(self) -> set[str]:
        with self._connect() as db:
            return {row[0] for row in db.execute("SELECT key FROM runs")}
