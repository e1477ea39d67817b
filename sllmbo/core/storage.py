"""Opening an Optuna storage the way sllmbo's workers need it: a lock timeout for SQLite,
transactions that hold SQLite's write lock from their start (so two workers never pop the same
enqueued trial), heartbeats so a dead worker's trial is retried, and the creation race of
workers that start together on a new database absorbed instead of reported.
"""

from __future__ import annotations

import time
import warnings
from contextlib import closing
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from sllmbo.core.errors import StorageError

#: Seconds between heartbeats of a running trial; a trial silent for GRACE_S is failed.
HEARTBEAT_S = 20
GRACE_S = 60

MASK = "***"
#: Query parameters that carry a credential (libpq takes ``?password=``, some servers a token).
SECRET_QUERY_KEYS = ("password", "passwd", "pwd", "token", "secret", "api_key", "apikey")


def mask_url(url: str | None) -> str | None:
    """``url`` as it may be shown or stored: its password (and any credential in the query)
    replaced by ``***``. RDB URLs go through SQLAlchemy's own renderer
    (``render_as_string(hide_password=True)``); others (an HTTP base URL, a URL SQLAlchemy
    cannot parse) through urllib. A URL without credentials comes back unchanged."""
    if url is None or "://" not in url or not _secrets(url):
        return url
    if not url.startswith(("http://", "https://")):
        import sqlalchemy.exc
        from sqlalchemy.engine import make_url

        try:
            parsed = make_url(url)
        except (sqlalchemy.exc.ArgumentError, ValueError):
            pass
        else:
            query = {k: MASK if _secret_key(k) else v for k, v in parsed.query.items()}
            shown = parsed.update_query_dict(query).render_as_string(hide_password=True)
            return shown.replace("%2A%2A%2A", MASK)
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else netloc
    query = urlencode([(k, MASK if _secret_key(k) else v)
                       for k, v in parse_qsl(parts.query, keep_blank_values=True)], safe="*")
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def redact(text: str, url: str | None) -> str:
    """``text`` (an error message from a library, say) with ``url`` and its secrets masked."""
    if url is None:
        return text
    text = text.replace(url, mask_url(url) or url)
    for secret in _secrets(url):
        if len(secret) >= 3:  # a one-letter password would blank out ordinary words
            text = text.replace(secret, MASK)
    return text


def _secret_key(key: str) -> bool:
    return key.lower() in SECRET_QUERY_KEYS


def _secrets(url: str) -> list[str]:
    """The credentials in ``url``, raw and %-decoded: its password, secret query values."""
    parts = urlsplit(url)
    found: list[str] = []
    userinfo = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    if ":" in userinfo:
        found.append(userinfo.split(":", 1)[1])
    found += [v for k, v in parse_qsl(parts.query, keep_blank_values=False) if _secret_key(k)]
    return [s for raw in found if raw for s in dict.fromkeys((raw, unquote(raw)))]


def open_storage(url: str | None, *, heartbeat_s: int = HEARTBEAT_S, grace_s: int = GRACE_S,
                 max_retry: int = 1) -> Any:
    """An Optuna storage for ``url`` (None: in memory); ``StorageError`` if it won't open.

    Every command that writes trials opens its storage here (``tune``, ``data collect``,
    ``data matrix``), so they refuse the same things with the same words: a URL SQLAlchemy
    cannot parse, a missing database driver, and a SQLite file that is damaged or is not
    Optuna's (Optuna would otherwise add its tables to someone else's database). A running
    trial silent for ``grace_s`` seconds (heartbeat every ``heartbeat_s``) is failed and its
    parameters retried up to ``max_retry`` times."""
    import optuna
    import sqlalchemy.exc

    if url is None:
        return optuna.storages.InMemoryStorage()
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        check_sqlite_file(url)
        # Several workers on one SQLite file: wait for the lock instead of failing at once.
        engine_kwargs["connect_args"] = {"timeout": 60}

    for attempt in range(5):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                # A trial whose worker died is failed after grace_s and its parameters retried.
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=heartbeat_s,
                    grace_period=grace_s,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
                    ),
                )
            return serialize_sqlite(storage)
        except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
                ValueError, ImportError) as err:
            # Workers starting together on a new database race to create its tables and to
            # stamp its schema version; the loser sees one of these and simply opens what the
            # winner made.
            if _creation_race(err) and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            raise StorageError(
                f"storage '{mask_url(url)}' does not open: {_first_line(err, url)}",
                hint=("install the database driver the URL names (postgresql:// needs "
                      "psycopg2-binary, postgresql+psycopg:// needs psycopg)"
                      if isinstance(err, ImportError) else
                      "use e.g. sqlite:///runs.db (the folder must exist) or "
                      "postgresql://user:pass@host/db"),
            ) from None
    raise AssertionError("unreachable")


#: Tables an Optuna RDB storage holds (any one of them: another worker may be creating it).
OPTUNA_TABLES = frozenset({"studies", "trials", "alembic_version", "version_info"})


def check_sqlite_file(url: str) -> None:
    """``StorageError`` unless the SQLite file of ``url`` is absent, empty, or an undamaged
    Optuna storage. Read-only and before SQLAlchemy touches it: opening a foreign database
    as Optuna's would add Optuna's tables to it. ``PRAGMA quick_check`` reads every page
    (about 0.25 s for 90 MB), so a damaged page is one message now, not a traceback mid-run."""
    import sqlite3

    import sqlalchemy.exc
    from sqlalchemy.engine import make_url

    try:
        path = make_url(url).database
    except (sqlalchemy.exc.ArgumentError, ValueError):
        return  # not a URL: RDBStorage says so in open_storage's words
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    file = Path(path)
    if not file.is_file() or file.stat().st_size == 0:
        return
    shown = mask_url(url)
    try:
        with closing(sqlite3.connect(f"{file.resolve().as_uri()}?mode=ro", uri=True,
                                     timeout=60)) as db:
            tables = {row[0] for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table'")}
            verdict = [row[0] for row in db.execute("PRAGMA quick_check")]
    except sqlite3.DatabaseError as err:
        raise StorageError(
            f"storage '{shown}' does not open: {err} (it is damaged or not a SQLite file)",
            hint="restore it from a backup, or point --storage at a new file",
        ) from None
    if verdict != ["ok"]:
        raise StorageError(
            f"storage '{shown}' is damaged: SQLite's check says {verdict[0]}",
            hint="restore it from a backup, or point --storage at a new file (an export "
            "made with `sllmbo data export` can be imported into it)",
        )
    if tables and not tables & OPTUNA_TABLES:
        raise StorageError(
            f"storage '{shown}' is a SQLite database but not an Optuna storage (its tables: "
            f"{', '.join(sorted(tables)[:5])}); nothing was written to it",
            hint="point --storage at an Optuna storage or at a new file",
        )


def _first_line(err: BaseException, url: str) -> str:
    """The first line of what went wrong, credentials masked (a StorageInternalError only
    says "an exception is raised during the commit": the SQLAlchemy error it wraps says
    what)."""
    cause = err.__cause__ if type(err).__name__ == "StorageInternalError" else None
    err = cause if cause is not None else err
    text = str(err).strip()
    return redact(text.splitlines()[0] if text else type(err).__name__, url)


def serialize_sqlite(storage: Any) -> Any:
    """Make every transaction of a SQLite-backed ``RDBStorage`` start with ``BEGIN IMMEDIATE``.

    Optuna pops an enqueued trial by reading it as WAITING and then setting it RUNNING, under
    ``SELECT ... FOR UPDATE``, which SQLite ignores; and Python's sqlite3 opens a transaction
    only at the first write. Two workers can then both read the same WAITING trial and both
    run it; the second to finish fails with "Cannot tell a COMPLETE trial" (seen on the
    matrix's last variant, 2026-12-04). Taking the write lock when the transaction begins
    (SQLAlchemy's documented pysqlite recipe) makes the pop atomic. Other databases lock the
    row and are left alone. Returns ``storage``."""
    from sqlalchemy import event

    engine = getattr(storage, "engine", None)
    if engine is None or engine.dialect.name != "sqlite":
        return storage

    @event.listens_for(engine, "connect")
    def _no_implicit_begin(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # sqlite3 emits no BEGIN of its own

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    engine.dispose()  # connections opened while the storage set itself up get the listeners
    return storage


def _creation_race(err: BaseException) -> bool:
    """Whether ``err`` is another worker creating the same storage at the same moment."""
    import sqlalchemy.exc

    text = str(err)
    return isinstance(err, sqlalchemy.exc.IntegrityError) or any(
        words in text for words in ("already exists", "database is locked")
    )
