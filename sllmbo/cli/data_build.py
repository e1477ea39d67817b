"""``sllmbo data build``: trial logs in any Optuna storage -> instruction data."""

from __future__ import annotations

import typer


def register(group: typer.Typer) -> None:
    pass
