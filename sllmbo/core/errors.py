"""Expected failures: bad input or a broken environment.

Every ``SllmboError`` reaching the CLI becomes one line on stderr (the rule, the bad value,
the next step) and exit code 2, never a traceback. Anything else is a bug and keeps its
traceback.
"""

from __future__ import annotations

from pathlib import Path


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


#: What SQLite and the OS say when a file cannot be written, and what to tell the user.
_WRITE_FAILURES = (
    ("readonly database", "the storage is read-only", "make the file (and its folder) "
     "writable, or point --storage/--out at a writable place"),
    ("read-only file system", "the file system is read-only", "point --storage/--out at a "
     "writable place"),
    ("disk is full", "the disk is full", "free space, or point --storage/--out elsewhere; "
     "the run resumes where it stopped"),
    ("no space left on device", "the disk is full", "free space, or point --storage/--out "
     "elsewhere; the run resumes where it stopped"),
    ("unable to open database file", "the storage file cannot be opened", "check that its "
     "folder exists and is writable"),
    ("permission denied", "permission denied", "make the file (and its folder) writable"),
)


def environment_failure(err: BaseException) -> SllmboError | None:
    """A ``StorageError`` for a write the machine refused (read-only file or file system, full
    disk, no permission), from SQLite's, SQLAlchemy's or the OS's exception; None for anything
    else (a bug keeps its traceback)."""
    import errno

    if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EROFS, errno.EACCES,
                                                  errno.EDQUOT):
        text = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk is full",
                errno.EROFS: "read-only file system"}.get(err.errno, "permission denied")
        where = f" ({err.filename})" if err.filename else ""
    elif type(err).__name__ == "OperationalError":  # sqlite3's or SQLAlchemy's wrapper
        text, where = str(err).lower(), ""
    else:
        return None
    for needle, what, hint in _WRITE_FAILURES:
        if needle in text:
            return StorageError(f"cannot write: {what}{where}", hint=hint)
    return None


def check_output_file(path: str | Path, flag: str) -> None:
    """Refuse, before any work, a file path a command could not write at the end: a folder
    in its place, or a file where a parent folder should be."""
    path = Path(path)
    if path.is_dir():
        raise SllmboError(f"{flag} {path} is a folder; it must be a file path",
                          hint=f"e.g. {flag} {path / 'result.json'}")
    _check_parents(path, flag)


def check_output_folder(path: str | Path, flag: str) -> None:
    """Refuse, before any work, a folder path with a file in its place (or in a parent's)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise SllmboError(f"{flag} {path} is a file; it must be a folder",
                          hint=f"remove the file or choose another {flag}")
    _check_parents(path, flag)


def _check_parents(path: Path, flag: str) -> None:
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise SllmboError(f"{flag} {path}: {parent} is a file, not a folder",
                                  hint=f"choose another {flag}")
            return


#: Largest seed every library here takes (NumPy, scikit-learn, torch, vLLM: 32-bit signed).
MAX_SEED = 2**31 - 1


def check_seed(seed: int, flag: str = "--seed") -> None:
    """Refuse a seed the libraries would reject mid-run (NumPy raises on -1)."""
    if not 0 <= seed <= MAX_SEED:
        raise SllmboError(f"{flag} must be in 0..{MAX_SEED}, got {seed}")


def shown(value: object) -> str:
    """``repr`` of ``value`` as a user would write it: a NumPy scalar as a plain number
    (``3.0``, not ``np.float64(3.0)``)."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()  # type: ignore[attr-defined]
    return repr(value)


class SllmboNote(UserWarning):
    """A note for the user (a dropped column, a clipped range): the CLI prints it as one
    ``note:`` line on stderr, not as a Python warning with a source path."""
