"""The corpus export: trial logs as gzip-compressed JSON lines, one study per line.

A SQLite Optuna storage of 12,000 trials weighs tens of MB (every parameter row repeats its
distribution's JSON); this export keeps the same facts in a few MB, so it is what the
repository commits. ``sllmbo data build`` reads it directly, and ``import_export`` writes it
back into any Optuna storage so a collection continues in a later session.
"""

from __future__ import annotations

import fnmatch
import gzip
import json
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from sllmbo.core.errors import StorageError
from sllmbo.data.logged import LoggedTrial, ReadResult, StudyLog

FORMAT = "sllmbo-trial-logs/1"


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def study_to_json(study: StudyLog) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "study": study.name,
        "direction": study.direction,
        "user_attrs": study.user_attrs,
        "trials": [
            {
                "number": t.number, "state": t.state, "params": t.params,
                "distributions": t.distributions, "value": t.value,
                "datetime_start": _time(t.datetime_start),
                "datetime_complete": _time(t.datetime_complete),
                "user_attrs": t.user_attrs, "retry_root": t.retry_root,
            }
            for t in study.trials
        ],
    }


def write_export(studies: Iterable[StudyLog], path: str | Path) -> int:
    """Write ``studies`` to ``path`` atomically (a temporary file, then a rename); return
    the number of studies written. Deterministic: same studies, same bytes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as handle:
        for study in sorted(studies, key=lambda s: s.name):
            # No sort_keys: parameter order is the search space order the prompts show.
            line = json.dumps(study_to_json(study), separators=(",", ":"))
            handle.write(line.encode() + b"\n")
            n += 1
    os.replace(tmp, path)
    return n


def read_export(path: str | Path, study_filter: str | None = None) -> ReadResult:
    """The studies of an export; a damaged line is skipped and reported, a file that is not
    an export raises ``StorageError``."""
    path = Path(path)
    result = ReadResult()
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as handle:
            for i, line in enumerate(handle, 1):
                try:
                    data = json.loads(line)
                    if data.get("format") != FORMAT:
                        raise ValueError(f"format is {data.get('format')!r}, not {FORMAT}")
                    if study_filter and not fnmatch.fnmatchcase(data["study"], study_filter):
                        continue
                    result.studies.append(_study(data, str(path)))
                except (ValueError, KeyError, TypeError, AttributeError) as err:
                    result.skipped.append((f"{path}:{i}", f"damaged export line: {err}"))
    except (OSError, EOFError, UnicodeDecodeError) as err:
        if not result.studies and not result.skipped:
            raise StorageError(f"{path} is not a readable trial-log export: {err}") from None
        result.skipped.append((str(path), f"file cut short after {len(result.studies)} "
                                          f"studies: {err}"))
    return result


def _study(data: dict[str, Any], source: str) -> StudyLog:
    def when(text: str | None) -> datetime | None:
        return None if text is None else datetime.fromisoformat(text)

    trials = [
        LoggedTrial(
            number=int(t["number"]), state=str(t["state"]), params=dict(t["params"]),
            distributions=dict(t["distributions"]),
            value=None if t["value"] is None else float(t["value"]),
            datetime_start=when(t["datetime_start"]),
            datetime_complete=when(t["datetime_complete"]),
            user_attrs=dict(t["user_attrs"]), retry_root=t.get("retry_root"),
        )
        for t in data["trials"]
    ]
    if data["direction"] not in ("minimize", "maximize"):
        raise ValueError(f"direction {data['direction']!r}")
    return StudyLog(name=str(data["study"]), source=source, direction=data["direction"],
                    user_attrs=dict(data["user_attrs"]), trials=trials)


def _frozen(study: StudyLog, states: dict[str, Any]) -> list[Any]:
    """The study's trials as FrozenTrials numbered as in the export (recorded histories
    name trials by number): an unfinished or unreadable trial becomes a FAIL placeholder,
    so a resumed collection runs it again. FrozenTrial, not create_trial, keeps timestamps."""
    from optuna.distributions import json_to_distribution
    from optuna.trial import FrozenTrial, TrialState

    by_number = {t.number: t for t in study.trials}
    out = []
    for number in range(max(by_number, default=-1) + 1):
        t = by_number.get(number)
        if t is None or t.state not in states:
            when = (t.datetime_start if t is not None else None) or datetime.now()
            out.append(FrozenTrial(
                number=number, state=TrialState.FAIL, value=None, datetime_start=when,
                datetime_complete=when, params={}, distributions={},
                user_attrs={"sllmbo:imported": "unfinished or unreadable in the export"},
                system_attrs={}, intermediate_values={}, trial_id=0))
            continue
        out.append(FrozenTrial(
            number=number, state=states[t.state], value=t.value,
            datetime_start=t.datetime_start, datetime_complete=t.datetime_complete,
            params=t.params,
            distributions={k: json_to_distribution(v) for k, v in t.distributions.items()},
            user_attrs=t.user_attrs, system_attrs={}, intermediate_values={}, trial_id=0))
    return out


def _readable_export(path: str | Path) -> list[StudyLog]:
    """The export's studies, or ``StorageError`` when a line is damaged or there are none:
    an import writes nothing from an export that is not known good."""
    if not Path(path).is_file():
        raise StorageError(f"export {path} does not exist",
                           hint="write one with `sllmbo data export --out FILE.jsonl.gz`")
    read = read_export(path)
    if read.skipped:
        where, why = read.skipped[0]
        raise StorageError(
            f"{where}: {why}" + (f" (and {len(read.skipped) - 1} more)"
                                 if len(read.skipped) > 1 else "") + "; nothing imported",
            hint=f"`sllmbo data export --storage {path} --out fixed.jsonl.gz` keeps the "
            "readable studies; import that")
    if not read.studies:
        raise StorageError(f"export {path} holds no studies; nothing imported")
    return read.studies


def import_export(path: str | Path, storage_url: str) -> tuple[int, int]:
    """Write the export's studies that ``storage_url`` lacks into it, trial numbers kept
    (unfinished trials become FAIL placeholders that a resumed collection re-runs).
    Returns (studies imported, studies already present)."""
    import optuna
    from optuna.trial import TrialState

    from sllmbo.core.storage import open_storage

    states = {"complete": TrialState.COMPLETE, "failed": TrialState.FAIL,
              "pruned": TrialState.PRUNED}
    studies = _readable_export(path)  # before the storage is opened (and maybe created)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = open_storage(storage_url)
    present = {s.study_name for s in optuna.get_all_study_summaries(storage, False)}
    imported = 0
    for study in studies:
        if study.name in present:
            continue
        target = optuna.create_study(storage=storage, study_name=study.name,
                                     direction=study.direction)
        for key, value in study.user_attrs.items():
            target.set_user_attr(key, value)
        target.add_trials(_frozen(study, states))
        imported += 1
    return imported, len(present)
