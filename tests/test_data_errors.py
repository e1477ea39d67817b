"""Bad input to the data stage: one TaskError that names the rule, the bad value, the next step."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from sllmbo.core.errors import TaskError
from sllmbo.data import load_file_task, load_task


def _penguins() -> pd.DataFrame:
    """Real rows (penguin species) to break in different ways."""
    task = load_task("penguin_species")
    X = pd.concat([task.X_train, task.X_test])
    y = pd.concat([task.y_train, task.y_test]).map(dict(enumerate(task.class_names)))
    return X.assign(species=y).reset_index(drop=True)


def _csv(frame: pd.DataFrame) -> Callable[[Path], Path]:
    def write(tmp_path: Path) -> Path:
        path = tmp_path / "data.csv"
        frame.to_csv(path, index=False)
        return path

    return write


def _text(name: str, text: str) -> Callable[[Path], Path]:
    def write(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path

    return write


PENGUINS = _penguins()
CASES = [
    # (id, file writer, load_file_task kwargs, words the message must hold)
    ("missing_file", lambda p: p / "nope.csv", {"target": "y"}, ["not found", "nope.csv"]),
    ("unsupported_extension", _text("data.xlsx", "a,b\n1,2\n"), {"target": "b"},
     ["unsupported", ".xlsx", ".parquet"]),
    ("empty_file", _text("data.csv", ""), {"target": "y"}, ["empty"]),
    ("header_only", _text("data.csv", "a,b,y\n"), {"target": "y"}, ["no rows"]),
    ("target_missing", _csv(PENGUINS), {"target": "Species"},
     ["'Species'", "available columns", "island", "body_mass_g"]),
    ("target_all_missing", _csv(PENGUINS.assign(species=float("nan"))), {"target": "species"},
     ["no rows after dropping", "'species'"]),
    ("all_nan_features", _csv(PENGUINS[["species"]].assign(a=float("nan"), b=float("nan"))),
     {"target": "species"}, ["entirely missing", "a, b"]),
    ("single_class", _csv(PENGUINS[PENGUINS.species == "Adelie"]), {"target": "species"},
     ["single class", "'Adelie'"]),
    ("regression_on_text", _csv(PENGUINS), {"target": "species", "task_type": "regression"},
     ["must be numeric", "'species'", "Adelie"]),
    ("too_few_rows", _csv(PENGUINS.head(12).assign(species=["a", "b"] * 6)), {"target": "species"},
     ["12 rows", "at least 20"]),
    ("bad_task_type", _csv(PENGUINS), {"target": "species", "task_type": "ranking"},
     ["task_type must be", "'ranking'"]),
    ("class_with_one_row", _csv(PENGUINS.assign(species=["lonely"] + ["x", "y"] * 171 + ["x"])),
     {"target": "species"}, ["single row", "'lonely'"]),
    ("no_features", _csv(PENGUINS[["species"]]), {"target": "species"}, ["no feature columns"]),
]  # fmt: skip


@pytest.mark.parametrize(
    ("writer", "kwargs", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_file_input_raises_task_error_with_the_rule_and_value(tmp_path, writer, kwargs, words):
    path = writer(tmp_path)
    with pytest.raises(TaskError) as info:
        load_file_task(path, **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"
    assert info.value.hint, "every data error says the next step"


def test_unknown_task_suggests_close_names():
    with pytest.raises(TaskError) as info:
        load_task("bike_shareing")
    assert "unknown task 'bike_shareing'" in info.value.message
    assert "bike_sharing" in info.value.hint and "sllmbo tasks" in info.value.hint


def test_unknown_task_without_close_match_still_says_where_to_look():
    with pytest.raises(TaskError) as info:
        load_task("zzzz")
    assert (
        "did you mean" not in info.value.hint and "--data PATH --target COLUMN" in info.value.hint
    )


def test_corrupt_parquet_is_a_task_error(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"this is not parquet")
    with pytest.raises(TaskError, match="cannot be read"):
        load_file_task(path, target="y")


def test_missing_data_package_names_the_pip_install(monkeypatch):
    from sllmbo.data import sources

    monkeypatch.setattr(sources.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(TaskError) as info:
        sources.read_csv("ISLP", "data/Bikeshare.csv", pip_name="ISLP")
    assert "not installed" in info.value.message and info.value.hint == "pip install ISLP"


def test_cli_rejects_an_unknown_type_filter():
    import typer
    from typer.testing import CliRunner

    from sllmbo.cli import tasks

    app = typer.Typer()
    tasks.register(app)

    @app.callback()
    def _root() -> None:
        """Forces a command group."""

    result = CliRunner().invoke(app, ["tasks", "--type", "ranking"])
    assert isinstance(result.exception, TaskError) and "'ranking'" in str(result.exception)
