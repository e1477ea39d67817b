"""Bad user input (files, paths, options): one clear message, exit 2, no traceback, and
nothing written until the input is known good."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import fails, runs


def _frame(rows: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"a": rng.normal(size=rows), "b": rng.normal(size=rows)})
    frame["y"] = 2 * frame["a"] + rng.normal(scale=0.1, size=rows)
    return frame


def _csv(tmp_path: Path, frame: pd.DataFrame | None = None, name: str = "data.csv") -> Path:
    path = tmp_path / name
    (frame if frame is not None else _frame()).to_csv(path, index=False)
    return path




EVAL_FAST = ["--families", "lightgbm", "--methods", "defaults", "--budgets", "1",
             "--seeds", "1", "--quiet"]


def test_eval_with_a_bad_file_writes_nothing_and_the_corrected_rerun_runs(tmp_path, capsys):
    data, out = _csv(tmp_path), tmp_path / "eval"
    err = fails(["eval", "--data", str(data), "--target", "nope", "--max-rows", "40",
                  "--out", str(out), *EVAL_FAST], capsys)
    assert "target column 'nope'" in err
    assert not out.exists()
    runs(["eval", "--data", str(data), "--target", "y", "--out", str(out), *EVAL_FAST])
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
    err = fails([a.format(**paths) for a in argv], capsys)
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
    err = fails(["data", "build", "--storage", str(tmp_path / name), "--out", str(out),
                  "--quiet"], capsys)
    assert words in err
    assert not out.exists() and [p.name for p in tmp_path.iterdir()] == [name]


def test_data_import_of_a_bad_export_creates_no_database(tmp_path, capsys):
    import gzip

    export = tmp_path / "bad.jsonl.gz"
    export.write_bytes(gzip.compress(b"not json\n"))
    err = fails(["data", "import", str(export), "--storage",
                  f"sqlite:///{tmp_path / 'new.db'}"], capsys)
    assert "damaged export line" in err and "nothing imported" in err
    assert not (tmp_path / "new.db").exists()


def _classes(rows: int, n_classes: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({"a": rng.normal(size=rows),
                         "y": np.resize(np.arange(n_classes), rows)})


def _with(frame: pd.DataFrame, row: int, column: str, value: object) -> pd.DataFrame:
    frame = frame.copy()
    frame.loc[row, column] = value
    return frame


@pytest.mark.parametrize("frame, words", [
    (_classes(30, 15), "has 15 classes but 30 rows: the 20% test split holds 6, fewer than "
                       "one row per class; at least 71 rows are needed"),
    (_with(_frame(), 3, "y", np.inf), "infinite values (inf or -inf) in the target 'y' (1 rows)"),
    (_with(_frame(), 3, "a", -np.inf), "infinite values (inf or -inf) in columns 'a' (1 rows)"),
])
@pytest.mark.parametrize("command", ["tune", "eval"])
def test_data_that_cannot_be_scored_is_refused_when_it_loads(frame, words, command, tmp_path,
                                                            capsys):
    data, out = _csv(tmp_path, frame), tmp_path / "out"
    argv = (["tune", "--data", str(data), "--target", "y", "--n-trials", "2", "--quiet"]
            if command == "tune" else
            ["eval", "--data", str(data), "--target", "y", "--out", str(out), *EVAL_FAST])
    assert words in fails(argv, capsys)
    assert not out.exists()


def test_repeated_csv_column_names_are_refused_not_renamed(tmp_path, capsys):
    path = tmp_path / "dup.csv"
    path.write_text("a,y,y\n" + "".join(f"{i},{i % 2},{i * 3}\n" for i in range(40)))
    err = fails(["tune", "--data", str(path), "--target", "y", "--n-trials", "2"], capsys)
    assert "repeats column names: 'y'" in err


@pytest.mark.parametrize("extra, words", [
    (["--seed", "-1"], "--seed must be in 0..2147483647, got -1"),
    (["--seed", str(2**40)], "--seed must be in 0..2147483647"),
    (["--n-folds", "1"], "--n-folds must be >= 2, got 1"),
    (["--n-folds", "60"], "60-fold cross-validation cannot split the 48 training rows"),
    (["--n-jobs", "0"], "--n-jobs must be >= 1 (or -1: every core), got 0"),
])
def test_bad_tune_numbers_exit_2_before_any_trial(extra, words, tmp_path, capsys, monkeypatch):
    import sllmbo.tune as tune_module

    monkeypatch.setattr(tune_module, "optimize_until",
                        lambda *a, **k: pytest.fail("trials ran"))
    err = fails(["tune", "--data", str(_csv(tmp_path)), "--target", "y", "--quiet", *extra],
                 capsys)
    assert words in err


def test_a_built_in_task_refuses_target_and_task_type(capsys, monkeypatch):
    import sllmbo.data as data_stage

    monkeypatch.setattr(data_stage, "load_task", lambda *a: pytest.fail("loaded"))
    err = fails(["tune", "--task", "diabetes", "--target", "y", "--task-type", "regression"],
                 capsys)
    assert "--target and --task-type only apply to --data" in err


@pytest.mark.parametrize("name, text", [
    ("space.json", '{"learning_rate": {"type": "float", "low": 1e-8, "high": 0.3, "log": true}}'),
    ("space.yaml", "learning_rate: {type: float, low: 1e-8, high: 0.3, log: true}\n"),
])
def test_a_space_file_reads_exponent_numbers_as_numbers(name, text, tmp_path):
    from sllmbo.data.resolve import load_space_file

    (tmp_path / name).write_text(text)
    assert load_space_file(tmp_path / name).to_dict()["learning_rate"]["low"] == 1e-8


def test_when_every_trial_fails_the_message_shows_the_cause(tmp_path, capsys, monkeypatch):
    import sllmbo.core.objective as objective

    def broken(*args, **kwargs):
        raise ValueError("Input contains NaN in column 'a'")

    monkeypatch.setattr(objective, "cross_validate", broken)
    err = fails(["tune", "--data", str(_csv(tmp_path)), "--target", "y", "--n-trials", "2",
                  "--quiet"], capsys)
    assert "Cause of 10: ValueError: Input contains NaN in column 'a'" in err
    assert "sllmbo:fit_error" not in err


def test_an_unreachable_llm_server_stops_tune_before_anything_is_written(tmp_path, capsys):
    import socket

    import optuna

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    err = fails(["tune", "--data", str(_csv(tmp_path)), "--target", "y", "--n-trials", "2",
                  "--sampler", "llm-tpe", "--backend", "openai", "--base-url",
                  f"http://127.0.0.1:{port}/v1", "--storage", storage, "--quiet"], capsys)
    assert "the LLM cannot answer, so no trial ran: cannot reach the model server" in err
    assert optuna.get_all_study_names(storage) == []


def test_initial_configurations_are_capped_by_n_trials(tmp_path):
    from llm_scripts import ScriptedBackend

    from sllmbo.tune import LLMOptions, tune

    backend = ScriptedBackend()
    result = tune(data=_csv(tmp_path), target="y", sampler="llm", n_trials=2, n_folds=2,
                  progress=False, backend=backend,
                  llm=LLMOptions(n_initial=5, init="initializer"))
    asked = backend.requests[0].json_schema["properties"]["configs"]
    assert asked["maxItems"] <= 2
    assert result.n_complete == 2 and result.llm["sources"].get("initial", 0) <= 2


def test_a_clip_note_shows_numpy_numbers_as_plain_numbers():
    from sllmbo.core.space import SearchSpace

    space = SearchSpace.from_dict({"x": {"type": "float", "low": 0.0, "high": 1.0}})
    assert space.clip({"x": np.float64(3.0)})[1] == ["clipped 'x' from 3.0 to 1.0"]


def test_hints_use_cli_flags_not_python_arguments(tmp_path, capsys):
    frame = _frame()
    frame["y"] = ["a"] * 59 + ["b"]
    err = fails(["tune", "--data", str(_csv(tmp_path, frame)), "--target", "y"], capsys)
    assert "('b')" in err and "--task-type regression" in err and "task_type=" not in err


def test_notes_are_one_plain_line_and_library_deprecations_stay_quiet(tmp_path, capsys,
                                                                       monkeypatch):
    import warnings

    import sllmbo.data as data_stage
    from sllmbo.core.errors import SllmboNote

    def noisy(*args, **kwargs):
        warnings.warn("dropping column 'empty'", SllmboNote, stacklevel=2)
        warnings.warn("`past_key_values` is deprecated", FutureWarning, stacklevel=2)
        return []

    monkeypatch.setattr(data_stage, "list_tasks", noisy)
    monkeypatch.delenv("SLLMBO_DEBUG", raising=False)
    runs(["tasks", "--json"])
    err = capsys.readouterr().err
    assert err == "note: dropping column 'empty'\n"


def test_data_build_with_a_tokenizer_folder_that_holds_none_exits_2(tmp_path, capsys):
    (tmp_path / "not-a-tokenizer").mkdir()
    err = fails(["data", "build", "--storage", str(tmp_path / "x.db"), "--out",
                  str(tmp_path / "out"), "--tokenizer", str(tmp_path / "not-a-tokenizer")],
                 capsys)
    assert "no tokenizer loads from" in err and not (tmp_path / "out").exists()


def test_data_that_is_a_folder_is_named_as_such(tmp_path, capsys):
    err = fails(["tune", "--data", str(tmp_path), "--target", "y"], capsys)
    assert f"--data {tmp_path} is a folder" in err


def test_a_build_with_one_task_writes_a_dataset_that_loads_back(tmp_path):
    from datasets import load_from_disk
    from inference_fixtures import WordTokenizer

    from sllmbo.data.build import build_dataset
    from sllmbo.tune import tune

    storage = f"sqlite:///{tmp_path / 'runs.db'}"
    tune(data=_csv(tmp_path), target="y", n_trials=3, n_folds=2, storage=storage,
         progress=False, score_test=False)
    card = build_dataset([storage], tmp_path / "out", tokenizer=WordTokenizer(),
                         progress=False)
    assert card["n_examples"]["validation"] == 0  # one task: none left for validation
    data = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert list(data) == ["train"] and len(data["train"]) == card["n_examples"]["train"]
