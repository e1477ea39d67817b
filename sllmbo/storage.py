"""Opening an Optuna storage the way sllmbo's workers need it: a lock timeout for SQLite,
transactions that hold SQLite's write lock from their start (so two workers never pop the same
enqueued trial), heartbeats so a dead worker's trial is retried, and the creation race of
workers that start together on a new database absorbed instead of reported.
"""

from __future__ import annotations

import time
import warnings
from typing import Any
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from sllmbo.errors import StorageError

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
                storage = optuna.storages.RDBStorage(
                    url,
                    engine_kwargs=engine_kwargs,
                    heartbeat_interval=HEARTBEAT_S,
                    grace_period=GRACE_S,
                    heartbeat_stale_trial_callback=(
                        optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1)
                    ),
                )
            return serialize_sqlite(storage)
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as err:
            # Workers starting together on a new database race to create its tables and to
            # stamp its schema version; the loser sees one of these and simply opens what the
            # winner made.
            if _creation_race(err) and attempt < 4:
                time.sleep(0.5 + attempt)
                continue
            first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise StorageError(
                f"storage '{mask_url(url)}' does not open: {redact(first_line, url)}",
                hint="use e.g. sqlite:///runs.db (the folder must exist) or "
                "postgresql://user:pass@host/db",
            ) from None
    raise AssertionError("unreachable")


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
