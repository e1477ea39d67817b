"""SearchSpace: definitions, conversions, and the checks applied to every LLM answer."""

from __future__ import annotations

import json

import jsonschema
import numpy as np
import optuna
import pytest

from sllmbo.core.errors import ConfigError, SpaceError
from sllmbo.core.families import FAMILIES, get_family
from sllmbo.core.space import CategoricalParam, FloatParam, IntParam, SearchSpace

SPACE = SearchSpace(
    (
        FloatParam("learning_rate", 1e-3, 0.3, log=True),
        IntParam("num_leaves", 8, 256, log=True),
        FloatParam("subsample", 0.5, 1.0),
        CategoricalParam("boosting", ("gbdt", "dart")),
        CategoricalParam("bootstrap", (True, False)),
    )
)
VALID = {
    "learning_rate": 0.05,
    "num_leaves": 31,
    "subsample": 0.8,
    "boosting": "gbdt",
    "bootstrap": True,
}


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: FloatParam("lr", 0.5, 0.1), "low must be <= high for 'lr', got low=0.5, high=0.1"),
        (lambda: FloatParam("lr", 0.0, 1.0, log=True), "log-scale range needs low > 0 for 'lr'"),
        (lambda: IntParam("n", -1, 10, log=True), "log-scale range needs low > 0 for 'n'"),
        (lambda: IntParam("n", 1.5, 10), "must be a whole number"),
        (lambda: FloatParam("lr", float("nan"), 1.0), "must be finite"),
        (lambda: FloatParam("lr", "a", 1.0), "must be numbers"),
        (lambda: CategoricalParam("c", ()), "needs at least one choice"),
        (lambda: CategoricalParam("c", ("a", "a")), "repeat a value"),
        (lambda: CategoricalParam("c", ([1],)), "must be JSON scalars"),
        (lambda: SearchSpace((IntParam("n", 1, 2), IntParam("n", 1, 3))), "unique"),
    ],
)
def test_bad_definitions_raise_space_error_with_the_rule(make, words):
    with pytest.raises(SpaceError, match=None) as info:
        make()
    assert words in str(info.value)


def test_optuna_round_trip_keeps_every_range_and_scale():
    distributions = SPACE.to_optuna()
    assert isinstance(distributions["learning_rate"], optuna.distributions.FloatDistribution)
    assert distributions["learning_rate"].log
    assert distributions["num_leaves"].low == 8
    assert SearchSpace.from_optuna(distributions) == SPACE


def test_dict_round_trip_is_json_safe():
    data = json.loads(json.dumps(SPACE.to_dict()))
    assert SearchSpace.from_dict(data) == SPACE


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ({"x": {"type": "float", "low": 2, "high": 1}}, "low must be <= high for 'x'"),
        ({"x": {"type": "int", "low": 1}}, "lacks the key 'high'"),
        ({"x": {"type": "vector"}}, "must be float, int or categorical"),
        ({"x": 3}, "must be a mapping"),
    ],
)
def test_from_dict_names_the_bad_entry(data, words):
    with pytest.raises(SpaceError) as info:
        SearchSpace.from_dict(data)
    assert words in str(info.value)


def test_json_schema_accepts_valid_and_rejects_each_kind_of_invalid():
    schema = SPACE.to_json_schema()
    jsonschema.validate(VALID, schema)
    for bad in (
        {**VALID, "num_leaves": 2.5},
        {**VALID, "boosting": "goss"},
        {**VALID, "extra": 1},
        {k: v for k, v in VALID.items() if k != "subsample"},
        {**VALID, "learning_rate": 3.0},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, schema)


def test_validate_returns_plain_python_values():
    config = {**VALID, "num_leaves": np.int64(31), "subsample": np.float32(0.75)}
    # numpy scalars are not JSON numbers: validate refuses them, clip coerces them.
    with pytest.raises(ConfigError):
        SPACE.validate(config)
    fixed, _ = SPACE.clip(config)
    assert type(fixed["num_leaves"]) is int
    assert type(fixed["subsample"]) is float
    assert type(SPACE.validate(VALID)["learning_rate"]) is float


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"num_leaves": 1000}, "'num_leaves' must be in [8, 256], got 1000"),
        ({"num_leaves": 31.5}, "'num_leaves' must be an integer, got 31.5"),
        ({"learning_rate": "fast"}, "'learning_rate' must be a finite number"),
        ({"boosting": "goss"}, "'boosting' must be one of ['gbdt', 'dart'], got 'goss'"),
        ({"bootstrap": 1}, "'bootstrap' must be one of [True, False], got 1"),
        ({"extra": 3}, "unknown parameter 'extra'"),
    ],
)
def test_validate_lists_precise_problems(change, problem):
    with pytest.raises(ConfigError) as info:
        SPACE.validate({**VALID, **change})
    assert any(problem in p for p in info.value.problems), info.value.problems


def test_validate_reports_missing_parameters_all_at_once():
    with pytest.raises(ConfigError) as info:
        SPACE.validate({"learning_rate": 0.1})
    assert len(info.value.problems) == 4


@pytest.mark.parametrize(
    ("change", "expected", "repair"),
    [
        ({"num_leaves": 10000}, {"num_leaves": 256}, "clipped 'num_leaves' from 10000 to 256"),
        ({"num_leaves": 30.6}, {"num_leaves": 31}, "clipped 'num_leaves'"),
        ({"learning_rate": "0.01"}, {"learning_rate": 0.01}, "clipped 'learning_rate'"),
        ({"subsample": -3}, {"subsample": 0.5}, "clipped 'subsample'"),
        ({"boosting": " GBDT"}, {"boosting": "gbdt"}, "snapped 'boosting'"),
        ({"bootstrap": "true"}, {"bootstrap": True}, "snapped 'bootstrap'"),
        ({"extra": 1}, {}, "dropped unknown parameter 'extra'"),
    ],
)
def test_llm_answer_out_of_range_is_clipped_and_each_repair_listed(change, expected, repair):
    fixed, repairs = SPACE.clip({**VALID, **change})
    assert SPACE.contains(fixed)
    for key, value in expected.items():
        assert fixed[key] == value
    assert any(repair in r for r in repairs), repairs


def test_clip_of_a_valid_answer_changes_nothing():
    fixed, repairs = SPACE.clip(VALID)
    assert fixed == VALID
    assert repairs == []


@pytest.mark.parametrize(
    "change",
    [{"boosting": "goss"}, {"learning_rate": None}, {"num_leaves": float("inf")}, {"subsample": [1]}],
)
def test_clip_refuses_what_it_cannot_repair(change):
    with pytest.raises(ConfigError):
        SPACE.clip({**VALID, **change})


def test_restricted_to_never_leaves_hard_limits():
    limits = get_family("lightgbm").hard_limits()
    wide = SearchSpace(
        (
            FloatParam("learning_rate", 1e-9, 50.0, log=True),
            IntParam("num_leaves", 100_000, 200_000),  # wholly outside: replaced by the limit
        )
    )
    narrowed = wide.restricted_to(limits)
    assert narrowed["learning_rate"].low == limits["learning_rate"].low
    assert narrowed["learning_rate"].high == limits["learning_rate"].high
    assert narrowed["num_leaves"] == limits["num_leaves"]
    with pytest.raises(SpaceError, match="not a tunable parameter"):
        SearchSpace((FloatParam("momentum", 0.1, 0.9),)).restricted_to(limits)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_default_space_lies_inside_its_hard_limits(name):
    family = FAMILIES[name]
    default = family.default_space("regression")
    assert default.restricted_to(family.hard_limits()) == default
    jsonschema.Draft202012Validator.check_schema(default.to_json_schema())


def test_unknown_family_names_the_choices():
    with pytest.raises(Exception) as info:
        get_family("catboost")
    assert "lightgbm" in str(info.value)
    assert get_family("RF").name == "random_forest"


def test_a_user_space_keeps_its_log_flag_and_says_what_was_clipped():
    from sllmbo.core.families import get_family

    limits = get_family("lightgbm").hard_limits()
    mine = SearchSpace((FloatParam("learning_rate", 1e-5, 0.1, log=False),
                        IntParam("num_leaves", 8, 64, log=True)))
    fitted, notes = mine.fitted_within(limits)
    assert fitted["learning_rate"].log is False and fitted["learning_rate"].low == 1e-4
    assert fitted["num_leaves"] == mine["num_leaves"]
    assert notes == ["'learning_rate': [1e-05, 0.1] clipped to the hard limit: [0.0001, 0.1]"]


def test_a_user_range_wholly_outside_its_limit_is_an_error_not_replaced():
    from sllmbo.core.families import get_family

    limits = get_family("lightgbm").hard_limits()
    with pytest.raises(SpaceError, match="lies outside its hard limit"):
        SearchSpace((IntParam("num_leaves", 5000, 9000),)).fitted_within(limits)
