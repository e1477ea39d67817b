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


@pytest.mark.parametrize("argv, kind", [
    (["tune", "--data", "{data}", "--target", "y", "--n-trials", "2", "--output", "{dir}"],
     "--output {dir} is a folder"),
    (["eval", "--data", "{data}", "--target", "y", "--out", "{file}", *EVAL_FAST],
     "--out {file} is a file"),
    (["data", "build", "--storage", "{data}", "--out", "{file}", "--overwrite"],
     "--out {file} is a file"),
    (["data", "export", "--storage", "{data}", "--out", "{file}/x.jsonl.gz"],
     "{file} is a file, not a folder"),
])
def test_an_output_path_of_the_wrong_kind_is_refused_before_any_work(argv, kind, tmp_path,
                                                                     capsys, monkeypatch):
    import sllmbo.tune as tune_module

    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the output path was checked")

    monkeypatch.setattr(tune_module, "resolve_task", forbidden)
    paths = {"data": str(_csv(tmp_path)), "dir": str(tmp_path / "a_dir"),
             "file": str(tmp_path / "a_file")}
    (tmp_path / "a_dir").mkdir()
    (tmp_path / "a_file").write_text("keep me")
    err = _fails([a.format(**paths) for a in argv], capsys)
    assert kind.format(**paths) in err
    assert (tmp_path / "a_file").read_text() == "keep me"


def _not_optuna_sqlite(path: Path) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")


def _corrupt_sqlite(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + b"\x01" * 3000)


def _unknown_op_journal(path: Path) -> None:
    path.write_text('{"op_code": 99, "worker_id": "w"}\n')


def _empty_optuna_sqlite(path: Path) -> None:
    import optuna

    optuna.create_study(storage=f"sqlite:///{path}", study_name="no-trials")


@pytest.mark.parametrize("name, write, words", [
    ("other.db", _not_optuna_sqlite, "no such table"),
    ("corrupt.db", _corrupt_sqlite, "file is not a database"),
    ("ops.log", _unknown_op_journal, "an operation Optuna does not know"),
    ("junk.log", lambda p: p.write_text("hello world\n"), "holds no Optuna study"),
    ("empty.log", lambda p: p.write_text(""), "holds no Optuna study"),
    ("empty.db", _empty_optuna_sqlite, "0 instruction examples"),
])
def test_data_build_on_a_bad_storage_exits_2_and_writes_nothing(name, write, words, tmp_path,
                                                               capsys, monkeypatch):
    import sllmbo.data.build as build

    monkeypatch.setattr(build, "load_tokenizer", lambda path=None: pytest.fail("tokenizer"))
    write(tmp_path / name)
    out = tmp_path / "out"
    err = _fails(["data", "build", "--storage", str(tmp_path / name), "--out", str(out),
                  "--quiet"], capsys)
    assert words in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [name]


def test_data_import_of_a_bad_export_creates_no_database(tmp_path, capsys):
    import gzip

    export = tmp_path / "bad.jsonl.gz"
    export.write_bytes(gzip.compress(b"not json\n"))
    err = _fails(["data", "import", str(export), "--storage",
                  f"sqlite:///{tmp_path / 'new.db'}"], capsys)
    assert "damaged export line" in err and "nothing imported" in err
    assert not (tmp_path / "new.db").exists()
