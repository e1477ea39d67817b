"""Opening an Optuna storage the way sllmbo's workers need it: a lock timeout for SQLite,
heartbeats so a dead worker's trial is retried, and the creation race of workers that start
together on a new database absorbed instead of reported.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

from sllmbo.errors import StorageError

#: Seconds between heartbeats of a running trial; a trial silent for GRACE_S is failed.
HEARTBEAT_S = 20
GRACE_S = 60


def open_storage(url: str | None) -> Any:
    """An Optuna storage for ``url`` (None: in memory); ``StorageError`` if it won't open."""
    import optuna
    import sqlalchemy.exc

    if url is None:
        return optuna.storages.InMemoryStorage()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several workers on one SQLite file: wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # A trial whose worker died is failed after GRACE_S and its parameters retried.
                return optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                    ),
                )
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as err:
            # Workers starting together on a new database race to create its tables and to
            # stamp its schema version; the loser sees one of these and simply opens what the
            # winner made.
            if _creation_race(err) and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StorageError(
                f"storage '{url}' does not open: {first_line}",
                hint="use e.g. sqlite:///runs.db (the folder must exist) or "
                "postgresql://user:pass@host/db",
            ) from None
    raise AssertionError("unreachable")


def _creation_race(err: BaseException) -> bool:
    """Whether ``err`` is another worker creating the same storage at the same moment."""
    import sqlalchemy.exc

    text = str(err)
    return isinstance(err, sqlalchemy.exc.IntegrityError) or any(
        words in text for words in ("already exists", "database is locked")
    )
