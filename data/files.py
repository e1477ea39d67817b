"""The user's own CSV or Parquet file as a ``Task``, under the same rules as the built-ins."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from sllmbo.core.errors import TaskError
from sllmbo.core.task import Task
from sllmbo.data.prepare import build_task

CSV_SUFFIXES = (".csv", ".csv.gz", ".csv.bz2", ".csv.zip", ".csv.xz")
PARQUET_SUFFIXES = (".parquet", ".pq")


def load_file_task(
    path: str | Path, target: str, task_type: str | None = None, name: str | None = None
) -> Task:
    """Read ``path`` (CSV or Parquet), predict ``target``; ``task_type=None`` infers it.

    The name defaults to the file's stem in snake_case, so study names stay readable.
    """
    path = Path(path).expanduser()
    if path.is_dir():
        raise TaskError(f"--data {path} is a folder; give a CSV or Parquet file",
                        hint=f"e.g. --data {path / 'data.csv'}")
    if not path.is_file():
        raise TaskError(
            f"data file not found: {path}",
            hint="check the path; `sllmbo tasks` lists the built-in tasks instead",
        )
    frame = _read(path)
    return build_task(
        frame,
        target=target,
        task_type=task_type,
        name=name or _snake(path),
        source=f"file: {path}",
        description=f"user data from {path.name}, target '{target}'",
    )


def _read(path: Path) -> pd.DataFrame:
    lower = path.name.lower()
    try:
        if lower.endswith(CSV_SUFFIXES):
            frame = pd.read_csv(path)
            _check_unique_header(path)
            return frame
        if lower.endswith(PARQUET_SUFFIXES):
            return pd.read_parquet(path)
    except pd.errors.EmptyDataError:
        raise TaskError(
            f"data file {path} is empty", hint="write a header row and data rows"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, ValueError) as err:
        # pyarrow's ArrowInvalid is a ValueError; a corrupt file surfaces as one of these.
        raise TaskError(
            f"data file {path} cannot be read: {err}",
            hint="write it with pandas' to_csv or to_parquet",
        ) from None
    supported = ", ".join(CSV_SUFFIXES + PARQUET_SUFFIXES)
    raise TaskError(
        f"unsupported data file extension '{''.join(path.suffixes) or '(none)'}' for {path}",
        hint=f"save it as one of: {supported}",
    )


def _check_unique_header(path: Path) -> None:
    """Refuse repeated column names: pandas silently renames the second ``y`` to ``y.1``,
    which would then be a feature holding the target (a leak)."""
    header = pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()
    repeated = sorted({str(c) for c in header if header.count(c) > 1})
    if repeated:
        raise TaskError(
            f"data file {path} repeats column names: {', '.join(map(repr, repeated))}",
            hint="give every column its own name in the header row",
        )


def _snake(path: Path) -> str:
    stem = path.name.split(".")[0]
    return re.sub(r"[^0-9a-zA-Z]+", "_", stem).strip("_").lower() or "user_data"
