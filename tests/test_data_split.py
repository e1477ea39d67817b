"""The fixed train / held-out split: sizes, aliases, duplicates, and who may read what."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sllmbo.cli import main
from sllmbo.core.errors import TaskError
from sllmbo.data import list_tasks, load_task
from sllmbo.data.splits import HELDOUT, heldout_match, refuse_heldout, split_of

REPO = Path(__file__).resolve().parents[1]


def test_at_least_100_training_and_10_heldout_tasks_of_both_types():
    train, heldout = list_tasks("train"), list_tasks("heldout")
    assert len(train) >= 100 and len(heldout) >= 10
    assert len(train) + len(heldout) == len(list_tasks())
    for infos in (train, heldout):
        assert {i.task_type for i in infos} == {"regression", "classification"}
    sizes = [i.approx_rows for i in heldout]
    assert min(sizes) < 500 and max(sizes) > 20_000
    assert {i.name for i in heldout} == set(HELDOUT) and "concrete_strength" in HELDOUT


def test_heldout_tasks_have_mixed_and_missing_features():
    tasks = [load_task(i.name) for i in list_tasks("heldout")]
    assert sum(bool(t.categorical_columns and t.numeric_columns) for t in tasks) >= 8
    assert sum(t.X_train.isna().any().any() for t in tasks) >= 2


@pytest.mark.parametrize("name, expected", [
    ("optuna_cement_strength_lightgbm", "concrete_strength"),
    ("optuna_bike_sharing_xgboost_hybrid_sampler_gpt_4o", "bike_sharing"),
    ("corpus:concrete_strength:mlp:tpe:s0", "concrete_strength"),
    ("Titanic", "titanic_survival"),
    ("optuna_adult_census_lightgbm", None),
    ("concretely_not", None),
])
def test_heldout_match_recognises_names_and_aliases(name, expected):
    assert heldout_match(name) == expected


def test_no_training_task_is_named_like_a_heldout_one():
    assert all(split_of(i.name) == "train" for i in list_tasks("train"))


def _fingerprints(name: str) -> tuple[str, set[str]]:
    """A hash of the whole frame, and hashes of each high-cardinality numeric column's sorted
    values (the target's too): equal hashes mean the same data under another name/target."""
    task = load_task(name)
    X = pd.concat([task.X_train, task.X_test]).sort_index()
    y = pd.concat([task.y_train, task.y_test]).sort_index()
    whole = hashlib.sha1(pd.util.hash_pandas_object(X, index=False).values.tobytes()).hexdigest()
    columns = set()
    for series in [*(X[c] for c in task.numeric_columns), y]:
        values = np.sort(series.dropna().to_numpy(dtype=float))
        if len(np.unique(values)) > 20:
            columns.add(hashlib.sha1(np.round(values, 4).tobytes()).hexdigest())
    return whole, columns


def test_no_task_duplicates_or_nearly_duplicates_another():
    """Exact copies count once; and no two tasks share two distinctive columns (the same data
    under another name or target), which also keeps copies of held-out data out of training."""
    prints = {i.name: _fingerprints(i.name) for i in list_tasks()}
    wholes = [w for w, _ in prints.values()]
    assert len(set(wholes)) == len(wholes), "two tasks hold the same feature frame"
    names = sorted(prints)
    for i, name in enumerate(names):
        for other in names[i + 1:]:
            shared = prints[name][1] & prints[other][1]
            assert len(shared) < 2, f"{name} and {other} share {len(shared)} columns"


def test_collect_refuses_a_heldout_task(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "collect", "--storage", f"sqlite:///{tmp_path / 'c.db'}",
              "--tasks", "concrete_strength"])
    assert exit_info.value.code == 2
    assert "held-out" in capsys.readouterr().err
    assert not (tmp_path / "c.db").exists()
    with pytest.raises(TaskError):
        refuse_heldout("german_credit", "train on")


def test_cli_tasks_split_filter(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tasks", "--split", "heldout", "--json"])
    assert exit_info.value.code == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == set(HELDOUT) and {r["split"] for r in rows} == {"heldout"}


def test_committed_corpus_holds_no_heldout_task():
    from sllmbo.data.export import read_export

    export = REPO / "data" / "corpus" / "trials.jsonl.gz"
    if not export.is_file():
        pytest.skip("no committed corpus export yet")
    result = read_export(export)
    assert result.studies and not result.skipped
    for study in result.studies:
        card = study.user_attrs["sllmbo:task_card"]
        assert heldout_match(study.name) is None and heldout_match(card["task"]) is None
