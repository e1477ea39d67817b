"""The task registry: every built-in task loads offline, typed, split and free of leaks."""

from __future__ import annotations

import json
import math
import re
import socket

import pandas as pd
import pytest

from sllmbo.core.taskcard import TaskCard
from sllmbo.data import Task, infer_task_type, list_tasks, load_file_task, load_task, task_names
from sllmbo.data.registry import _ENTRIES, _load_cached

META_KEYS = {
    "n_rows", "n_features", "n_numeric", "n_categorical", "missing_share", "n_classes",
    "minority_share", "target_mean", "target_std", "target_skew", "description",
}  # fmt: skip
BENCHMARK_KINDS = {
    "bike_sharing", "gas_sensor", "cover_type", "census_income",
    "concrete_strength", "energy_efficiency", "retail_demand",
}  # fmt: skip
# Columns that would give the answer away (or identify the row) and must never be features.
LEAKY = {
    "bike_sharing": ["casual", "registered"],
    "flight_delays": ["dep_time", "dep_delay", "arr_time", "air_time", "tailnum", "flight",
                      "time_hour"],
    "college_applications": ["Accept", "Enroll"],
    "cps_income": ["wage"],
    "extramarital_affairs": ["affairs"],
    "fifa_value": ["short_name", "wage_eur"],
    "credit_balance": ["ID"],
    "auto_mpg": ["name"],
    "diamond_prices": ["rownames"],
}  # fmt: skip


def test_registry_lists_at_least_20_real_tasks_of_both_types_and_sizes():
    infos = list_tasks()
    names = [i.name for i in infos]
    assert len(infos) >= 20
    assert len(set(names)) == len(names) == len(task_names())
    assert all(re.fullmatch(r"[a-z][a-z0-9_]*", n) for n in names)
    assert {i.task_type for i in infos} == {"regression", "classification"}
    assert max(i.approx_rows for i in infos) >= 100_000
    assert min(i.approx_rows for i in infos) < 1_000


def test_every_sllmbo_benchmark_kind_is_represented_and_equivalents_are_marked():
    infos = list_tasks()
    assert {i.benchmark_kind for i in infos if i.benchmark_kind} == BENCHMARK_KINDS
    assert all(not i.is_equivalent for i in infos if i.benchmark_kind is None)
    real = {i.benchmark_kind for i in infos if i.benchmark_kind and not i.is_equivalent}
    assert {"bike_sharing", "concrete_strength"} <= real


def test_list_tasks_reads_no_data():
    before = _load_cached.cache_info().misses
    list_tasks()
    assert _load_cached.cache_info().misses == before


@pytest.mark.parametrize("name", task_names())
def test_task_reader_works_offline_and_writes_nothing_to_home(name, monkeypatch, tmp_path):
    def refuse(*args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setenv("HOME", str(tmp_path))
    frame = _ENTRIES[name].read()
    assert _ENTRIES[name].target in frame.columns
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("name", task_names())
def test_task_loads_typed_split_and_matches_its_info(name):
    info = next(i for i in list_tasks() if i.name == name)
    task = load_task(name)
    assert isinstance(task, Task) and task.task_type == info.task_type
    n = len(task.X_train) + len(task.X_test)
    assert n == info.approx_rows
    assert len(task.X_test) == math.ceil(0.2 * n)
    assert len(task.y_train) == len(task.X_train) and len(task.y_test) == len(task.X_test)
    assert task.X_train.index.intersection(task.X_test.index).empty
    assert list(task.X_train.columns) == list(task.X_test.columns)
    assert task.X_train.shape[1] == info.n_features
    _check_feature_dtypes(task)
    if task.task_type == "classification":
        _check_classification_target(task)
    else:
        assert task.y_train.dtype == "float64" and task.y_test.dtype == "float64"
        assert task.class_names is None
    assert task.metric == ("rmse" if task.task_type == "regression" else "log_loss")
    assert task.direction == "minimize"


def _check_feature_dtypes(task: Task) -> None:
    X = task.X_train
    assert task.target not in X.columns
    assert set(task.categorical_columns) | set(task.numeric_columns) == set(X.columns)
    assert not set(task.categorical_columns) & set(task.numeric_columns)
    for col in task.categorical_columns:
        assert isinstance(X[col].dtype, pd.CategoricalDtype), col
        assert X[col].dtype == task.X_test[col].dtype, col  # same categories on both sides
    for col in task.numeric_columns:
        assert pd.api.types.is_numeric_dtype(X[col]), col
        assert not pd.api.types.is_bool_dtype(X[col]), col
    assert not any(X[c].isna().all() for c in X.columns)


def _check_classification_target(task: Task) -> None:
    k = len(task.class_names or [])
    assert k >= 2
    for y in (task.y_train, task.y_test):
        assert y.dtype == "int64"
        assert set(y.unique()) == set(range(k))  # stratified: every class on both sides
    train_share = task.y_train.value_counts(normalize=True).sort_index()
    test_share = task.y_test.value_counts(normalize=True).sort_index()
    assert (train_share - test_share).abs().max() < 0.02


@pytest.mark.parametrize(("name", "columns"), sorted(LEAKY.items()))
def test_leaky_and_identifier_columns_are_not_features(name, columns):
    task = load_task(name)
    assert not set(columns) & set(task.X_train.columns)


def test_flight_delays_predicts_arrival_delay_from_schedule_only():
    task = load_task("flight_delays")
    assert task.target == "arr_delay" and len(task.X_train) + len(task.X_test) >= 100_000
    assert set(task.X_train.columns) == {
        "month", "day", "day_of_week", "sched_dep_time", "sched_arr_time", "hour", "minute",
        "carrier", "origin", "dest", "distance",
    }  # fmt: skip
    assert task.y_train.notna().all()


@pytest.mark.parametrize("name", ["bike_sharing", "cps_income", "penguin_species", "digits"])
def test_meta_features_have_the_card_keys_and_fit_a_task_card(name):
    task = load_task(name)
    meta = task.meta_features()
    assert set(meta) == META_KEYS
    assert meta["n_rows"] == len(task.X_train)
    assert meta["n_features"] == meta["n_numeric"] + meta["n_categorical"]
    assert 0.0 <= meta["missing_share"] <= 1.0
    if task.task_type == "classification":
        assert meta["n_classes"] == len(task.class_names)
        assert 0 < meta["minority_share"] <= 1 / meta["n_classes"]
        assert meta["target_mean"] is None
    else:
        assert meta["target_std"] > 0 and meta["n_classes"] is None
        assert meta["target_mean"] == pytest.approx(task.y_train.mean(), rel=1e-6)
    card = TaskCard(task=name, task_type=task.task_type, model_family="lightgbm",
                    metric=task.metric, direction=task.direction, **meta)  # fmt: skip
    assert card.n_rows == meta["n_rows"]


def test_penguins_keep_missing_values_and_count_them():
    meta = load_task("penguin_species").meta_features()
    assert 0 < meta["missing_share"] < 0.05


def test_load_task_is_cached_and_forgives_case_and_hyphens():
    assert load_task("Bike-Sharing") is load_task("bike_sharing")


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["a", "b", "a"], "classification"),
        ([True, False, True], "classification"),
        ([0, 1, 2, 1] * 5, "classification"),
        ([0.0, 1.0, 1.0], "classification"),
        (list(range(21)), "regression"),
        ([0.5, 1.25, 2.0], "regression"),
    ],
)
def test_task_type_is_inferred_from_the_target(values, expected):
    assert infer_task_type(pd.Series(values)) == expected


def test_user_csv_from_real_data_infers_classification_and_categories(tmp_path):
    frame = load_task("penguin_species")
    raw = pd.concat([frame.X_train, frame.X_test]).assign(
        species=[frame.class_names[i] for i in pd.concat([frame.y_train, frame.y_test])]
    )
    path = tmp_path / "My Penguins.csv"
    raw.to_csv(path, index=False)
    task = load_file_task(path, target="species")
    assert task.name == "my_penguins" and task.task_type == "classification"
    assert task.class_names == ["Adelie", "Chinstrap", "Gentoo"]
    assert set(task.categorical_columns) == {"island", "sex"}
    assert len(task.X_train) + len(task.X_test) == len(raw)
    again = load_file_task(path, target="species", name="penguins2")
    assert again.X_test.index.equals(task.X_test.index)  # fixed seed: the same split


def test_user_parquet_regression_keeps_dtypes_and_drops_missing_targets(tmp_path):
    task = load_task("diamond_prices")
    raw = task.X_train.head(500).assign(price=task.y_train.head(500).to_numpy())
    raw.loc[raw.index[:10], "price"] = float("nan")
    raw["listed"] = pd.Timestamp("2024-01-01")
    path = tmp_path / "diamonds.parquet"
    raw.to_parquet(path)
    loaded = load_file_task(path, target="price")
    assert loaded.task_type == "regression" and loaded.y_train.dtype == "float64"
    assert len(loaded.X_train) + len(loaded.X_test) == 490
    assert set(loaded.categorical_columns) == {"cut", "color", "clarity"}
    assert loaded.X_train["listed"].dtype == "float64"  # datetimes become epoch seconds


def test_an_all_missing_feature_column_is_dropped_with_a_warning(tmp_path):
    task = load_task("concrete_strength")
    raw = task.X_train.assign(strength=task.y_train, empty=float("nan"))
    path = tmp_path / "concrete.csv"
    raw.to_csv(path, index=False)
    with pytest.warns(UserWarning, match="entirely missing: empty"):
        loaded = load_file_task(path, target="strength", task_type="regression")
    assert "empty" not in loaded.X_train.columns and loaded.dropped_columns == ["empty"]


def _cli_app():
    import typer

    from sllmbo.cli import tasks

    app = typer.Typer()
    tasks.register(app)

    @app.callback()
    def _root() -> None:
        """Forces a command group so `tasks` stays a subcommand."""

    return app


def test_cli_tasks_json_lists_every_task_with_name_and_type():
    from typer.testing import CliRunner

    result = CliRunner().invoke(_cli_app(), ["tasks", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == task_names()
    assert all(r["type"] in ("regression", "classification") for r in rows)


def test_cli_tasks_table_and_type_filter():
    from typer.testing import CliRunner

    runner = CliRunner()
    table = runner.invoke(_cli_app(), ["tasks"], env={"COLUMNS": "160"})
    assert (
        table.exit_code == 0 and "bike_sharing" in table.output and "census_income*" in table.output
    )
    filtered = json.loads(
        runner.invoke(_cli_app(), ["tasks", "--json", "--type", "regression"]).output
    )
    assert filtered and {r["type"] for r in filtered} == {"regression"}
