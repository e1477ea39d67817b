"""The last hardening items: `train --out` of the wrong kind, YAML 1.2 numbers in every file a
user writes, an LLM server that is down under `eval`, and scikit-learn's rare-class warning."""

from __future__ import annotations

import re
import socket
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_helpers import fails, runs

from sllmbo.core.errors import SllmboNote

ROOT = Path(__file__).resolve().parents[1]




def _forbidden(*args, **kwargs):
    raise AssertionError("work started before the input was checked")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _regression_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=60), "b": rng.normal(size=60)})
    frame["y"] = 2 * frame["a"] + rng.normal(scale=0.1, size=60)
    path = tmp_path / "data.csv"
    frame.to_csv(path, index=False)
    return path


# ------------------------------------------------------------------ train --out of the wrong kind


@pytest.mark.parametrize("out, message", [
    ("{file}", "--out {file} is a file; it must be a folder"),
    ("{file}/adapter", "--out {file}/adapter: {file} is a file, not a folder"),
    (None, "--out {home}/adapters/smollm2-135m-lora is a file; it must be a folder"),
])
def test_train_refuses_an_out_of_the_wrong_kind_before_any_work(out, message, tmp_path, capsys,
                                                                monkeypatch):
    import sllmbo.training.sft as sft

    monkeypatch.setattr(sft, "train", _forbidden)
    home = tmp_path / "home"
    (home / "adapters").mkdir(parents=True)
    (home / "adapters" / "smollm2-135m-lora").write_text("not an adapter")
    monkeypatch.setenv("SLLMBO_HOME", str(home))
    paths = {"file": str(tmp_path / "a_file"), "home": str(home)}
    (tmp_path / "a_file").write_text("keep me")
    argv = ["train", "--recipe", "smollm2-135m-lora", "--quiet"]
    if out is not None:
        argv += ["--out", out.format(**paths)]
    err = fails(argv, capsys)
    assert message.format(**paths) in err
    assert (tmp_path / "a_file").read_text() == "keep me"


# ------------------------------------------------------------------------ YAML 1.2 numbers


@pytest.mark.parametrize("text, value", [
    ("1e-8", 1e-8), ("2e6", 2e6), ("-3E+2", -300.0), ("1.5e3", 1500.0), (".5e1", 5.0),
    ("1e", "1e"), ("e5", "e5"), ("0x10", 16), ("12", 12), ("yes", True),
])
def test_load_yaml_reads_exponent_numbers_as_floats_and_nothing_else_changes(text, value):
    from sllmbo.core.taskcard import load_yaml

    got = load_yaml(f"x: {text}")["x"]
    assert got == value and type(got) is type(value)


CARD = """task: t
task_type: regression
model_family: lightgbm
metric: rmse
direction: minimize
n_rows: 1e4
n_features: 3
n_numeric: 3
n_categorical: 0
missing_share: 1e-3
"""


def test_a_task_card_and_a_cards_file_read_exponent_numbers(tmp_path):
    from sllmbo.core.taskcard import TaskCard
    from sllmbo.data.cards import load_card_rules

    (tmp_path / "card.yaml").write_text(CARD)
    card = TaskCard.from_yaml(tmp_path / "card.yaml")
    assert card.n_rows == 10_000 and card.missing_share == 1e-3
    indented = "".join(f"    {line}\n" for line in CARD.splitlines())
    (tmp_path / "cards.yaml").write_text("cards:\n  - match: 'study*'\n" + indented)
    assert load_card_rules(tmp_path / "cards.yaml")[0].card.n_rows == 10_000


def test_a_recipe_and_set_overrides_read_exponent_numbers(tmp_path):
    from sllmbo.training.recipe import load_recipe, parse_overrides

    (tmp_path / "r.yaml").write_text("base_model: somewhere\ntoken_budget: 2e6\n"
                                     "learning_rate: 1e-4\n")
    changes = parse_overrides(["max_steps=1e3", "weight_decay=1e-2"])
    assert changes == {"max_steps": 1000.0, "weight_decay": 0.01}
    recipe = load_recipe(tmp_path / "r.yaml", changes)
    assert (recipe.token_budget, recipe.max_steps, recipe.learning_rate) == (2_000_000, 1000,
                                                                             1e-4)


def test_every_user_yaml_goes_through_the_one_yaml12_loader():
    """A sibling guard: a new ``yaml.safe_load`` would bring back YAML 1.1's string ``1e-8``."""
    readers = []
    for package in ("sllmbo", "data", "training", "inference", "eval"):
        for path in (ROOT / package).rglob("*.py"):
            text = path.read_text()
            if re.search(r"yaml\.(safe_load|load|full_load|unsafe_load)\(", text):
                readers.append(str(path.relative_to(ROOT)))
    assert readers == ["sllmbo/core/taskcard.py"]


# ------------------------------------------------------------- eval and an LLM server that is down


EVAL_FAST = ["--families", "lightgbm", "--budgets", "2", "--seeds", "1", "--quiet"]


def test_eval_stops_before_writing_anything_when_the_llm_server_is_down(tmp_path, capsys,
                                                                        monkeypatch):
    import sllmbo.eval.harness as harness

    monkeypatch.setattr(harness, "execute", _forbidden)
    out = tmp_path / "eval"
    err = fails(["eval", "--data", str(_regression_csv(tmp_path)), "--target", "y",
                  "--methods", "tpe,llm-tpe-base", "--backend", "openai", "--base-url",
                  f"http://127.0.0.1:{_free_port()}/v1", "--out", str(out), *EVAL_FAST],
                 capsys)
    assert "the LLM server cannot answer, so no evaluation run ran" in err
    assert "cannot reach the model server" in err and "--methods" in err
    assert not out.exists()


def test_eval_without_llm_methods_does_not_ask_the_server(tmp_path, capsys):
    out = tmp_path / "eval"
    runs(["eval", "--data", str(_regression_csv(tmp_path)), "--target", "y",
           "--methods", "tpe", "--backend", "openai", "--base-url",
           f"http://127.0.0.1:{_free_port()}/v1", "--out", str(out), *EVAL_FAST])
    assert (out / "results.json").is_file()


def test_eval_reports_llm_runs_whose_every_answer_fell_back_to_tpe(tmp_path, monkeypatch):
    from llm_scripts import ScriptedBackend

    import sllmbo.eval.methods.llm as llm_methods
    from sllmbo.core.errors import BackendError

    backend = ScriptedBackend([BackendError("the server went away")])
    # where the LLM methods look it up (they import it by name: patching sllmbo.eval.runs
    # only worked when no earlier test had imported them)
    monkeypatch.setattr(llm_methods, "shared_backend", lambda *args, **kwargs: backend)
    out = tmp_path / "eval"
    runs(["eval", "--data", str(_regression_csv(tmp_path)), "--target", "y",
          "--methods", "llm-base", "--backend", "transformers", "--adapter", "none",
           "--out", str(out), *EVAL_FAST])
    assert backend.requests, "the LLM method never asked its backend"
    report = (out / "report.md").read_text()
    assert "## Notes" in report and "the LLM produced no configuration" in report


# --------------------------------------------------------------- classes rarer than the folds


def _rare_class_csv(tmp_path: Path, name: str) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    frame["y"] = np.where(np.arange(80) < 4, "rare", np.where(frame["a"] > 0, "up", "down"))
    path = tmp_path / f"{name}.csv"
    frame.to_csv(path, index=False)
    return path


def test_a_class_rarer_than_the_folds_is_said_once_in_sllmbos_words(tmp_path, monkeypatch):
    import sllmbo.core.objective as objective
    from sllmbo.core.families import get_family
    from sllmbo.data import load_file_task

    monkeypatch.setattr(objective, "_RARE_NOTED", set())
    task = load_file_task(_rare_class_csv(tmp_path, "rare_once"), target="y")
    settings = objective.EvalSettings(n_folds=5)
    assert objective.rare_classes(task, 5) == {"rare": 3}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            objective.cross_validate(task, get_family("lightgbm"), {"n_estimators": 10},
                                     settings)
    notes = [str(w.message) for w in caught if issubclass(w.category, SllmboNote)]
    others = [str(w.message) for w in caught if not issubclass(w.category, SllmboNote)]
    assert len(notes) == 1 and "'rare' (3)" in notes[0] and "5 CV folds" in notes[0], notes
    assert not [m for m in others if "least populated class" in m], others


def test_tune_on_a_rare_class_shows_one_note_and_no_sklearn_warning(tmp_path, capfd,
                                                                      monkeypatch):
    import sllmbo.core.objective as objective

    monkeypatch.setattr(objective, "_RARE_NOTED", set())
    monkeypatch.delenv("SLLMBO_DEBUG", raising=False)
    runs(["tune", "--data", str(_rare_class_csv(tmp_path, "rare_cli")), "--target", "y",
           "--n-trials", "3", "--sampler", "tpe", "--quiet"])
    err = capfd.readouterr().err
    assert "least populated class" not in err, err
    assert err.count("note: task 'rare_cli': 1 class with fewer training rows than the 5 CV "
                     "folds: 'rare' (3)") == 1, err


def test_no_rare_class_note_for_regression_or_common_classes(tmp_path):
    from sllmbo.core.objective import rare_classes
    from sllmbo.data import load_file_task

    regression = load_file_task(_regression_csv(tmp_path), target="y")
    assert rare_classes(regression, 5) == {}
    assert rare_classes(load_file_task(_rare_class_csv(tmp_path, "c"), target="y"), 3) == {}
