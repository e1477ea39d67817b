"""Evaluation protocols, the new metrics, and tune()'s protocol / enqueue / cache hooks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import optuna
import pytest

from sllmbo.core import studyinfo
from sllmbo.core.errors import SllmboError, TaskError
from sllmbo.core.families import get_family
from sllmbo.core.objective import (
    METRICS,
    EvalSettings,
    check_metric,
    config_key,
    cross_validate,
    holdout_scores,
    score,
)
from sllmbo.core.protocol import EvalProtocol
from sllmbo.core.space import FloatParam, IntParam, SearchSpace
from sllmbo.core.studyinfo import CACHE_HIT
from sllmbo.core.studyinfo import ENQUEUED as ENQUEUED_ATTR
from sllmbo.data import load_task
from sllmbo.tune import tune

REGRESSION, CLASSIFICATION = "diabetes", "breast_cancer"
#: A quick LightGBM space with the library's own argument names (for the plain estimator).
SMALL = SearchSpace((
    IntParam("n_estimators", 10, 30),
    IntParam("num_leaves", 4, 16),
    FloatParam("learning_rate", 0.05, 0.3),
))
PLAIN = EvalProtocol(name="plain-mae", metric="mae", n_folds=2, cv_seed=7, estimator="plain",
                     fixed_args={"random_state": 3, "verbose": -1}, space=SMALL)


class Fixed:
    """A 'fitted model' that predicts given values: metrics on hand-computed cases."""

    def __init__(self, predictions: list[float]) -> None:
        self.predictions = np.asarray(predictions)

    def predict(self, X: Any) -> np.ndarray:
        return self.predictions


class DictCache:
    """The smallest ScoreCache: a dict, counting look-ups and hits."""

    def __init__(self) -> None:
        self.values: dict[str, dict[str, Any]] = {}
        self.gets = self.hits = 0

    def get(self, key: str) -> dict[str, Any] | None:
        self.gets += 1
        value = self.values.get(key)
        self.hits += value is not None
        return value

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.values[key] = value


# ----------------------------------------------------------------------------- metrics


def test_mae_is_the_mean_absolute_error():
    # |1-1| + |2-3| + |3-1| + |4-4| = 3, over 4 rows
    assert score("mae", Fixed([1, 3, 1, 4]), None, [1, 2, 3, 4], None) == pytest.approx(0.75)


def test_f1_weighted_weights_each_class_f1_by_its_support():
    # class 0 (2 rows): P = R = 1/2 -> F1 0.5; class 1 (3 rows): P = R = 2/3 -> F1 2/3
    # weighted: (2 * 0.5 + 3 * 2/3) / 5 = 0.6
    y, predicted = [0, 0, 1, 1, 1], [0, 1, 1, 1, 0]
    assert score("f1_weighted", Fixed(predicted), None, y, None) == pytest.approx(0.6)


def test_new_metrics_have_their_directions():
    assert METRICS["mae"] == "minimize" and METRICS["f1_weighted"] == "maximize"


@pytest.mark.parametrize(
    ("metric", "task_type", "words"),
    [
        ("mae", "classification", "metric 'mae' is for regression"),
        ("f1_weighted", "regression", "metric 'f1_weighted' is for classification"),
        ("r2", "regression", "unknown metric 'r2'"),
    ],
)
def test_a_metric_of_the_other_task_type_is_refused(metric, task_type, words):
    with pytest.raises(SllmboError, match=words):
        check_metric(metric, task_type)


# ------------------------------------------------------------------- protocol validation


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"metric": "r2"}, "protocol metric must be one of"),
        ({"test_size": 0}, "test_size must be a share in"),
        ({"test_size": 1.5}, "test_size must be a share in"),
        ({"n_folds": 1}, "n_folds must be an integer >= 2"),
        ({"cv_seed": 1.5}, "cv_seed must be a whole number"),
        ({"cv_shuffle": False, "cv_seed": 42}, "does nothing without cv_shuffle"),
        ({"split_shuffle": False, "split_stratify": True}, "needs split_shuffle=True"),
        ({"estimator": "bare"}, "protocol estimator must be one of"),
        ({"fixed_args": {"random_state": [42]}}, "fixed_args must map names to JSON scalars"),
        ({"fixed_args": {"num_leaves": 31}, "space": SMALL}, "also tuned by its space"),
        ({"drop_columns": ("age", "age")}, "distinct column names"),
        ({"name": " "}, "protocol name must be a non-empty string"),
    ],
)
def test_bad_protocol_values_get_a_clear_message(kwargs, words):
    with pytest.raises(SllmboError, match=words):
        EvalProtocol(**kwargs)


def test_a_protocol_round_trips_through_plain_json_values():
    again = EvalProtocol.from_dict(PLAIN.to_dict())
    assert again == PLAIN and again.space == SMALL


def test_an_unknown_protocol_field_is_refused():
    with pytest.raises(SllmboError, match="unknown protocol fields"):
        EvalProtocol.from_dict({**PLAIN.to_dict(), "folds": 3})


def test_a_family_mode_space_outside_the_hard_limits_is_refused():
    task = load_task(REGRESSION)
    outside = EvalProtocol(space=SearchSpace((FloatParam("reg_alpha", 0.0, 5.0),)))
    with pytest.raises(SllmboError, match="estimator='plain'"):
        outside.check(task, get_family("lightgbm"))
    EvalProtocol(space=outside.space, estimator="plain").check(task, get_family("lightgbm"))


def test_a_protocol_metric_of_the_other_task_type_is_refused():
    with pytest.raises(SllmboError, match="is for classification"):
        EvalProtocol(metric="f1_weighted").check(load_task(REGRESSION), get_family("lightgbm"))


# ------------------------------------------------------------------------- data handling


def test_a_protocol_drops_columns_and_resplits_in_the_original_row_order():
    task = load_task(REGRESSION)
    protocol = EvalProtocol(drop_columns=("age",), test_size=0.25, split_seed=42)
    applied = protocol.apply(task)
    n = len(task.X_train) + len(task.X_test)
    assert "age" not in applied.X_train.columns and "age" in applied.dropped_columns
    assert len(applied.X_test) == math.ceil(0.25 * n)
    # the split is sklearn's on the rows in their original order
    from sklearn.model_selection import train_test_split

    rows = sorted([*task.X_train.index, *task.X_test.index])
    expected_train, _ = train_test_split(rows, test_size=0.25, random_state=42, shuffle=True)
    assert list(applied.X_train.index) == expected_train
    assert (applied.y_train.index == applied.X_train.index).all()
    assert protocol.apply(applied) is applied  # applying twice changes nothing
    assert protocol.apply(task) is applied  # computed once per loaded task


def test_a_protocol_dropping_a_missing_column_names_the_columns():
    with pytest.raises(TaskError, match="does not have; its columns"):
        EvalProtocol(drop_columns=("no_such",)).apply(load_task(REGRESSION))


def test_a_protocol_without_data_parts_keeps_the_task():
    task = load_task(REGRESSION)
    assert EvalProtocol(metric="mae").apply(task) is task


def test_the_protocol_overrides_the_scoring_settings_but_not_the_threads():
    settings = PLAIN.resolve(EvalSettings(n_folds=5, seed=0, n_jobs=3))
    assert (settings.n_folds, settings.seed, settings.n_jobs) == (2, 7, 3)
    assert settings.metric == "mae" and settings.estimator == "plain"
    assert settings.fixed_args == {"random_state": 3, "verbose": -1}


def test_a_plain_estimator_is_the_library_class_with_only_fixed_args_and_the_config():
    from sllmbo.core.objective import build_estimator

    task = load_task(REGRESSION)
    config = {"n_estimators": 20, "num_leaves": 8, "learning_rate": 0.1}
    model = build_estimator(task, get_family("lightgbm"), config,
                            PLAIN.resolve(EvalSettings(n_jobs=1)))
    assert type(model).__name__ == "LGBMRegressor"
    params = model.get_params()
    assert params["subsample_freq"] == 0  # the family builder would set 1
    assert params["random_state"] == 3 and params["num_leaves"] == 8
    assert "deterministic" not in params  # nor its LightGBM extras


# ---------------------------------------------------------------------- tune(protocol=)


def _study(url: str, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=url)


def test_tune_scores_under_the_protocol_and_records_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    result = tune(REGRESSION, family="lightgbm", n_trials=3, storage=url, study_name="p",
                  protocol=PLAIN, progress=False)
    assert (result.metric, result.direction) == ("mae", "minimize")
    assert set(result.test_scores) == {"rmse", "mae"}
    assert SMALL.contains(result.best_params)
    study = _study(url, "p")
    run = study.user_attrs[studyinfo.RUN_CONFIG]
    assert run["protocol"] == PLAIN.to_dict() and run["n_folds"] == 2
    assert study.user_attrs[studyinfo.TASK_CARD]["metric"] == "mae"
    again = cross_validate(load_task(REGRESSION), get_family("lightgbm"), result.best_params,
                           EvalSettings(), protocol=PLAIN)
    assert again.mean == result.best_value and len(again.fold_scores) == 2


def test_tune_accepts_a_loaded_task():
    task = load_task(REGRESSION).subsample(100)
    result = tune(task, family="lightgbm", n_trials=1, n_folds=2, protocol=PLAIN,
                  score_test=False, progress=False)
    assert result.task == REGRESSION and result.task_card["n_rows"] == 100


def test_tune_without_a_protocol_behaves_as_before(tmp_path):
    url = f"sqlite:///{tmp_path / 'd.db'}"
    plain = tune(REGRESSION, family="lightgbm", n_trials=2, n_folds=2, storage=url,
                 study_name="none", score_test=False, progress=False)
    default = tune(REGRESSION, family="lightgbm", n_trials=2, n_folds=2, storage=url,
                   study_name="default", score_test=False, progress=False,
                   protocol=EvalProtocol())
    assert plain.metric == default.metric == "rmse"
    assert "protocol" not in _study(url, "none").user_attrs[studyinfo.RUN_CONFIG]
    values = [t.value for t in _study(url, "none").trials]
    assert values == [t.value for t in _study(url, "default").trials]  # defaults change nothing
    best = _study(url, "none").best_trial
    expected = cross_validate(load_task(REGRESSION), get_family("lightgbm"), best.params,
                              EvalSettings(n_folds=2, seed=0))
    assert best.value == expected.mean


def test_a_metric_that_contradicts_the_protocol_is_refused():
    with pytest.raises(SllmboError, match="contradicts protocol"):
        tune(REGRESSION, n_trials=1, metric="rmse", protocol=PLAIN, progress=False)


# ------------------------------------------------------------------------------ enqueue


def test_enqueued_configs_run_first_clipped_and_labelled_and_a_resume_does_not_repeat_them(
    tmp_path,
):
    url = f"sqlite:///{tmp_path / 'e.db'}"
    configs = [
        {"n_estimators": 12, "num_leaves": 5, "learning_rate": 0.1},
        {"n_estimators": 10_000, "num_leaves": 2.6, "learning_rate": 0.2, "gamma": 1.0},
    ]
    kwargs: dict[str, Any] = dict(family="lightgbm", storage=url, study_name="e", protocol=PLAIN,
                                  enqueue=configs, enqueue_source="portfolio",
                                  score_test=False, progress=False)
    tune(REGRESSION, n_trials=3, **kwargs)
    trials = _study(url, "e").trials
    assert trials[0].params == configs[0]
    assert trials[1].params == {"n_estimators": 30, "num_leaves": 4, "learning_rate": 0.2}
    assert [t.user_attrs[studyinfo.SOURCE] for t in trials] == ["portfolio", "portfolio", "tpe"]
    assert len(_study(url, "e").user_attrs[ENQUEUED_ATTR]["repairs"]) == 3

    tune(REGRESSION, n_trials=4, **kwargs)  # the resume
    sources = [t.user_attrs[studyinfo.SOURCE] for t in _study(url, "e").trials]
    assert sources == ["portfolio", "portfolio", "tpe", "tpe"]


def test_an_empty_enqueue_label_is_refused():
    with pytest.raises(SllmboError, match="enqueue_source"):
        tune(REGRESSION, n_trials=1, enqueue=[{}], enqueue_source="", progress=False)


# -------------------------------------------------------------------------------- cache


def test_a_cached_configuration_is_not_refit_and_keeps_its_original_attributes(tmp_path):
    url = f"sqlite:///{tmp_path / 'c.db'}"
    cache = DictCache()
    kwargs: dict[str, Any] = dict(family="lightgbm", n_trials=3, storage=url, protocol=PLAIN,
                                  cache=cache, progress=False)
    first = tune(REGRESSION, study_name="first", **kwargs)
    assert cache.hits == 0
    second = tune(REGRESSION, study_name="second", **kwargs)  # same seed: same configurations
    assert cache.hits == 3 + 1  # three trials and the refit test scores
    assert second.best_value == first.best_value and second.test_scores == first.test_scores
    fitted, reused = _study(url, "first").trials, _study(url, "second").trials
    for a, b in zip(fitted, reused, strict=True):
        assert CACHE_HIT not in a.user_attrs and b.user_attrs[CACHE_HIT] is True
        for attr in (studyinfo.CV_STD, studyinfo.CV_FOLDS, studyinfo.FIT_SECONDS):
            assert b.user_attrs[attr] == a.user_attrs[attr]


def test_holdout_scores_go_through_the_cache():
    task, family = load_task(REGRESSION), get_family("lightgbm")
    config = {"n_estimators": 12, "num_leaves": 5, "learning_rate": 0.1}
    cache = DictCache()
    first = holdout_scores(task, family, config, EvalSettings(), cache=cache, protocol=PLAIN)
    again = holdout_scores(task, family, config, EvalSettings(), cache=cache, protocol=PLAIN)
    assert first == again and cache.hits == 1 and set(first) == {"rmse", "mae"}


def test_the_cache_key_covers_data_family_settings_and_config_but_not_threads():
    task, family = load_task(REGRESSION), get_family("lightgbm")
    config = {"n_estimators": 12, "num_leaves": 5, "learning_rate": 0.1}
    settings = EvalSettings(n_folds=2)
    key = config_key(task, family, config, settings)
    assert key == config_key(task, family, dict(reversed(config.items())), settings)
    assert key == config_key(task, family, config, EvalSettings(n_folds=2, n_jobs=4))
    others = [
        config_key(task.subsample(100), family, config, settings),
        config_key(task, get_family("xgboost"), config, settings),
        config_key(task, family, config, EvalSettings(n_folds=3)),
        config_key(task, family, config, PLAIN.resolve(settings)),
        config_key(task, family, {**config, "learning_rate": 0.1000001}, settings),
        config_key(task, family, {**config, "n_estimators": 12.0}, settings),
        config_key(task, family, config, settings, kind="holdout"),
    ]
    assert len({key, *others}) == len(others) + 1
