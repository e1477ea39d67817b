"""Bad user input (files, paths, options): one clear message, exit 2, no traceback, and
nothing written until the input is known good."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sllmbo.cli import main


def _frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    frame["y"] = 2 * frame["a"] + rng.normal(scale=0.1, size=rows)
    return frame


def _csv(tmp_path: Path, frame: pd.DataFrame | None = None, name: str = "data.csv") -> Path:
    path = tmp_path / name
    (frame if frame is not None else _frame()).to_csv(path, index=False)
    return path


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    """Run the CLI, expect exit 2 with one message and no traceback; return stderr."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "Traceback" not in err and err.startswith("error: "), err
    return err


def _runs(argv: list[str]) -> None:
    """Run the CLI and expect success (typer exits 0 at the end of a command)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code in (0, None)


EVAL_FAST = ["--families", "lightgbm", "--methods", "defaults", "--budgets", "1",
             "--seeds", "1", "--quiet"]


def test_eval_with_a_bad_file_writes_nothing_and_the_corrected_rerun_runs(tmp_path, capsys):
    data, out = _csv(tmp_path), tmp_path / "eval"
    err = _fails(["eval", "--data", str(data), "--target", "nope", "--max-rows", "40",
                  "--out", str(out), *EVAL_FAST], capsys)
    assert "target column 'nope'" in err
    assert not out.exists()
    _runs(["eval", "--data", str(data), "--target", "y", "--out", str(out), *EVAL_FAST])
    assert (out / "results.json").is_file()
