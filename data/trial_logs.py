"""Read trial logs from any Optuna storage, never writing to it.

Sources: an RDB URL (``sqlite:///``, ``postgresql://``, ``mysql://``), a SQLite or journal file,
this project's compact export (``.jsonl.gz``, see :mod:`sllmbo.data.export`), or a folder of
such files. Every study becomes a :class:`StudyLog`: its direction, user attributes (the task
card of a study written by ``sllmbo tune``) and its trials in every state, as plain records.

Failed and pruned trials are kept as history but carry no value; a trial row that cannot be
read (damaged JSON, a value outside its distribution, a COMPLETE trial without a finite value)
is skipped and counted, never fatal. A trial that Optuna's heartbeat retried counts once: of
an original and its retries, only the first that completed is kept as complete.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sllmbo.core.errors import StorageError
from sllmbo.core.storage import mask_url, redact
from sllmbo.data.logged import LoggedTrial, ReadResult, StudyLog

STATES = {"COMPLETE": "complete", "FAIL": "failed", "PRUNED": "pruned", "RUNNING": "running",
          "WAITING": "waiting"}
EXPORT_SUFFIXES = (".jsonl.gz", ".jsonl")
SQLITE_MAGIC = b"SQLite format 3\x00"


def read_trial_logs(location: str | Path, study_filter: str | None = None) -> ReadResult:
    """Every study at ``location`` whose name matches ``study_filter`` (an fnmatch pattern;
    None: all). Raises ``StorageError`` when the location does not open at all."""
    text = str(location)
    if "://" in text:
        return _read_rdb(_read_only_url(text), mask_url(text) or text, study_filter)
    path = Path(text)
    if path.is_dir():
        result = ReadResult()
        files = sorted(p for p in path.iterdir() if p.is_file() and _is_log_file(p))
        if not files:
            raise StorageError(f"folder {path} holds no Optuna storage files",
                               hint="expected *.db / *.sqlite SQLite files, journal files "
                               "(*.log, *.journal) or exports (*.jsonl.gz)")
        for file in files:
            result.extend(read_trial_logs(file, study_filter))
        return result
    if not path.is_file():
        raise StorageError(f"storage '{text}' does not exist",
                           hint="give an RDB URL (sqlite:///runs.db), a SQLite or journal "
                           "file, an export (*.jsonl.gz) or a folder of them")
    if path.name.endswith(EXPORT_SUFFIXES):
        from sllmbo.data.export import read_export

        return read_export(path, study_filter)
    with path.open("rb") as handle:
        head = handle.read(len(SQLITE_MAGIC))
    if head == SQLITE_MAGIC:
        return _read_rdb(_read_only_url(f"sqlite:///{path.resolve()}"), str(path), study_filter)
    return _read_journal(path, study_filter)


def _is_log_file(path: Path) -> bool:
    return path.suffix in (".db", ".sqlite", ".sqlite3", ".log", ".journal") or path.name.endswith(
        EXPORT_SUFFIXES
    )


def _read_only_url(url: str) -> str:
    """SQLite files are opened read-only (``mode=ro``), so reading never migrates or locks."""
    if url.startswith("sqlite:///") and "mode=ro" not in url:
        path = url.removeprefix("sqlite:///")
        if not Path(path).is_file():
            raise StorageError(f"SQLite file '{path}' does not exist")
        return f"sqlite:///file:{Path(path).resolve()}?mode=ro&uri=true"
    return url


def _read_rdb(url: str, shown: str, study_filter: str | None) -> ReadResult:
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = optuna.storages.RDBStorage(
            url, skip_table_creation=True, skip_compatibility_check=True
        )
        summaries = storage.get_all_studies()
    except (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError,
            ValueError, ImportError) as err:
        raise StorageError(f"storage '{shown}' does not open: {_first_line(err, url)}",
                           hint="check the URL, credentials and that it is an Optuna storage"
                           ) from None
    return _read_studies(storage, summaries, shown, study_filter, rdb=True)


def _first_line(err: BaseException, url: str) -> str:
    """The first line of what went wrong, credentials masked: Optuna wraps SQLAlchemy's error
    (a missing table, a file that is not a database) in a StorageInternalError that only says
    "an exception is raised during the commit"."""
    import optuna

    if isinstance(err, optuna.exceptions.StorageInternalError) and err.__cause__ is not None:
        err = err.__cause__
    first = (str(err).strip().splitlines() or [type(err).__name__])[0]
    return redact(first, url)


def _read_journal(path: Path, study_filter: str | None) -> ReadResult:
    import json

    import optuna
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        storage = JournalStorage(JournalFileBackend(str(path)))
        summaries = storage.get_all_studies()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError, KeyError, TypeError,
            AssertionError) as err:  # Optuna asserts on an operation code it does not know
        what = (f"{type(err).__name__}: {str(err)[:200]}" if not isinstance(err, AssertionError)
                else "a line holds an operation Optuna does not know")
        raise StorageError(
            f"{path} is neither a SQLite file nor a readable Optuna journal: {what}",
            hint="a journal cut off mid-write loses only its last line; restore the file "
            "from a backup or remove the damaged line",
        ) from None
    if not summaries:  # Optuna reads a file of junk (or nothing) as a journal of no studies
        raise StorageError(
            f"{path} holds no Optuna study: it is empty, or neither a SQLite file nor an "
            "Optuna journal",
            hint="give a SQLite file, a journal written by Optuna's JournalStorage or an "
            "export (*.jsonl.gz)",
        )
    return _read_studies(storage, summaries, str(path), study_filter, rdb=False)


def _read_studies(storage: Any, summaries: Iterable[Any], shown: str,
                  study_filter: str | None, *, rdb: bool) -> ReadResult:
    result = ReadResult()
    for summary in summaries:
        name = summary.study_name
        if study_filter is not None and not fnmatch.fnmatchcase(name, study_filter):
            continue
        if len(summary.directions) != 1:
            result.skipped.append((name, f"multi-objective ({len(summary.directions)} "
                                         "objectives); only single-objective studies are read"))
            continue
        study_id = summary._study_id
        trials, n_bad = _frozen_trials(storage, study_id, rdb, shown)
        log = StudyLog(
            name=name, source=shown, direction=summary.direction.name.lower(),
            user_attrs=dict(summary.user_attrs), trials=[], n_corrupt=n_bad,
        )
        for trial in trials:
            record = to_logged(trial)
            if record is None:
                log.n_corrupt += 1
            else:
                log.trials.append(record)
        log.trials.sort(key=lambda t: t.number)
        log.n_retry_duplicates = drop_retry_duplicates(log)
        result.studies.append(log)
    return result


def _frozen_trials(storage: Any, study_id: int, rdb: bool,
                   shown: str) -> tuple[list[Any], int]:
    """All trials of a study; on a damaged row, re-read one trial at a time and count the
    rows that fail. A file the database itself calls damaged (a garbled SQLite page, which
    Optuna reports as a StorageInternalError around SQLAlchemy's DatabaseError) is a
    ``StorageError``: its rows cannot be told apart into good and bad."""
    import json

    import optuna
    import sqlalchemy.exc
    from sqlalchemy import text

    errors = (ValueError, KeyError, TypeError, json.JSONDecodeError,
              sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
    try:
        return storage.get_all_trials(study_id, deepcopy=False), 0
    except errors:
        if not rdb:
            raise
    trials, bad = [], 0
    try:
        with storage.engine.connect() as connection:
            ids = [row[0] for row in connection.execute(
                text("SELECT trial_id FROM trials WHERE study_id = :s ORDER BY number"),
                {"s": study_id})]
        for trial_id in ids:
            try:
                trials.append(storage.get_trial(trial_id))
            except errors as err:
                if _damaged_file(err):
                    raise
                bad += 1
    except errors as err:
        if not _damaged_file(err):
            raise
        raise StorageError(f"storage '{shown}' is damaged: {_first_line(err, shown)}",
                           hint="restore it from a backup; `sqlite3 FILE .recover` may save "
                           "the readable rows of a SQLite file") from None
    return trials, bad


def _damaged_file(err: BaseException) -> bool:
    """Whether ``err`` is SQLite calling the file itself damaged ("database disk image is
    malformed", "file is not a database"), not one row holding bad data."""
    import sqlite3

    for wrapped in (err, err.__cause__):
        orig = getattr(wrapped, "orig", None)  # SQLAlchemy keeps the driver's error there
        if type(orig) is sqlite3.DatabaseError:
            return True
    return False


def to_logged(trial: Any) -> LoggedTrial | None:
    """A ``LoggedTrial`` from a FrozenTrial, or None for a row that cannot be trusted."""
    from optuna.distributions import distribution_to_json

    state = STATES.get(trial.state.name)
    if state is None:
        return None
    value = None
    if state == "complete":
        if trial.values is None or len(trial.values) != 1:
            return None
        value = float(trial.values[0])
        if not math.isfinite(value):
            return None
    distributions: dict[str, str] = {}
    for name, dist in trial.distributions.items():
        if name not in trial.params:
            return None
        try:
            if not dist._contains(dist.to_internal_repr(trial.params[name])):
                return None
        except (ValueError, TypeError):
            return None
        distributions[name] = distribution_to_json(dist)
    history = trial.system_attrs.get("retry_history") or []
    root = history[0] if history else trial.system_attrs.get("failed_trial")
    return LoggedTrial(
        number=int(trial.number), state=state, params=dict(trial.params),
        distributions=distributions, value=value, datetime_start=trial.datetime_start,
        datetime_complete=trial.datetime_complete, user_attrs=dict(trial.user_attrs),
        retry_root=None if root is None else int(root),
    )


def drop_retry_duplicates(log: StudyLog) -> int:
    """Keep one completed trial per heartbeat-retry chain (the first); return how many
    completed copies were turned into plain history (state ``failed``)."""
    from dataclasses import replace

    seen: set[int] = set()
    dropped = 0
    for i, trial in enumerate(log.trials):
        if trial.state != "complete":
            continue
        root = trial.number if trial.retry_root is None else trial.retry_root
        if root in seen:
            log.trials[i] = replace(trial, state="failed", value=None)
            dropped += 1
        seen.add(root)
    return dropped
