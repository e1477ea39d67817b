"""The ``sllmbo`` command: a thin typer layer, one module per command group.

Heavy libraries are imported inside commands so ``sllmbo --help`` stays instant. Every
``SllmboError`` becomes one message and exit code 2; ``SLLMBO_DEBUG=1`` shows tracebacks.
"""

from __future__ import annotations

import functools
import os
import sys
from typing import Any

import typer

app = typer.Typer(
    name="sllmbo",
    help="Hyperparameter optimization with a local LLM (the SLLMBO loop on Optuna).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    add_completion=False,
)


_registered = False


def _register() -> None:
    """Let each command module add its commands to ``app`` (once; imports stay light)."""
    global _registered
    if _registered:
        return
    from sllmbo.cli import data, evaluation, models, recommend, serve, tasks, train, tune

    for module in (tasks, tune, recommend, models, serve, data, evaluation, train):
        module.register(app)
    _wrap_commands(app)
    _registered = True


INTERRUPTED = "interrupted: finished trials are stored; run the same command to resume"


def _wrap_commands(group: typer.Typer) -> None:
    """Ctrl-C inside any command prints how to resume and exits 130. (Click turns a
    KeyboardInterrupt into 'Aborted!' and exit 1 before ``main`` could see it.)"""
    for info in group.registered_commands:
        if info.callback is not None:
            info.callback = _interruptible(info.callback)
    for sub in group.registered_groups:
        if sub.typer_instance is not None:
            _wrap_commands(sub.typer_instance)


def _interruptible(callback: Any) -> Any:
    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except KeyboardInterrupt:
            typer.echo(INTERRUPTED, err=True)
            raise typer.Exit(130) from None

    return run


def _refused_write(err: BaseException) -> Exception | None:
    """The ``StorageError`` for ``err`` or for what it wraps (Optuna and worker pools re-raise
    SQLite's and the OS's errors inside their own)."""
    from sllmbo.core.errors import environment_failure

    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        mapped = environment_failure(current)
        if mapped is not None:
            return mapped
        current = current.__cause__ or current.__context__
    return None


def _show_notes_plainly() -> None:
    """``SllmboNote`` warnings become one ``note: ...`` line on stderr (the user's words, not
    a Python warning with a source path); every other warning is shown as Python shows it."""
    import warnings

    from sllmbo.core.errors import SllmboNote

    python_way = warnings.showwarning
    if getattr(python_way, "sllmbo_notes", False):
        return
    if not os.environ.get("SLLMBO_DEBUG"):
        # A library's deprecation notes (transformers' `past_key_values`) are for developers;
        # SLLMBO_DEBUG=1 shows them. TRANSFORMERS_VERBOSITY is read when transformers loads.
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

    def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        if issubclass(category, SllmboNote):
            typer.echo(f"note: {message}", err=True)
        else:
            python_way(message, category, *args, **kwargs)

    show.sllmbo_notes = True  # type: ignore[attr-defined]
    warnings.showwarning = show


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``sllmbo`` console script."""
    import logging

    from sllmbo.core.errors import SllmboError

    # bitsandbytes (imported by peft when installed) warns that an optional CPU kernel
    # package from a model hub is missing; its own CPU code runs instead: noise for a user.
    logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)
    _show_notes_plainly()
    _register()
    try:
        try:
            app(args=argv, prog_name="sllmbo")
        except Exception as raw:  # a write the machine refused is the user's to fix
            mapped = None if isinstance(raw, SllmboError) else _refused_write(raw)
            if mapped is None:
                raise
            raise mapped from raw
    except SllmboError as err:
        if os.environ.get("SLLMBO_DEBUG"):
            raise
        typer.secho(f"error: {err.message}", fg=typer.colors.RED, err=True)
        if err.hint:
            typer.echo(f"  hint: {err.hint}", err=True)
        sys.exit(err.exit_code)
    except KeyboardInterrupt:  # outside a command (e.g. while importing one)
        typer.echo(INTERRUPTED, err=True)
        sys.exit(130)
