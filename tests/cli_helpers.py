"""CLI assertions shared by the hardening tests: one message and exit 2, or success."""

from __future__ import annotations

import pytest

from sllmbo.cli import main


def fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit 2 with one message and no traceback; return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


def runs(argv: list[str]) -> None:
    """Run the CLI and expect success (typer exits 0 at the end of a command)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None)
