"""Malformed LLM answers, generated: every parser rejects, repairs or falls back; none crashes.

Each parser of LLM output (the sampler's configuration, the initializer's space and
configurations, the space adaptation, recommend's candidates) gets the same hostile answers:
huge and non-finite numbers, wrong types, deep nesting, unicode, truncated JSON. An answer may
be accepted (then it must fit its space) or refused with the parser's own error type; any
other exception is a crash.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sllmbo.core.errors import ConfigError
from sllmbo.core.families import get_family
from sllmbo.inference.base import Completion, parse_answer
from sllmbo.samplers.calls import DuplicateError

SPACE = get_family("lightgbm").default_space()
LIMITS = get_family("lightgbm").hard_limits()
RF = get_family("random_forest").default_space()  # categorical (bool) parameters too
FUZZ = settings(max_examples=250, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=True)

numbers = st.one_of(
    st.integers(), st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.decimals(allow_nan=False).map(str),
)
scalars = st.one_of(numbers, st.booleans(), st.none(), st.text(max_size=20),
                    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e999", "０.５", "١٢"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=12)
names = st.sampled_from([*SPACE.names, *RF.names, "choices", "low", "high", "action", "configs",
                         "space", "params", "reason", "", "💥"])


def configs(space):
    """Mostly-right configurations with hostile values, keys and types mixed in."""
    return st.dictionaries(st.one_of(st.sampled_from(space.names), names), values, max_size=10)


def as_texts(data):
    """The data as the backend would send it: JSON, JSON with bare NaN/Infinity, truncated,
    nested beyond any parser's depth, or not JSON at all."""
    text = json.dumps(data, default=str)
    return st.sampled_from([
        text, text.replace('"NaN"', "NaN").replace('"Infinity"', "Infinity"),
        text[: max(1, len(text) // 2)], "[" * 50_000 + "]" * 50_000, "", "{}", "null", "\u0000",
    ])


def parsed(text: str):
    try:
        return parse_answer(text), None
    except ValueError as err:
        return None, err


answers = st.one_of(configs(SPACE), configs(RF), values).flatmap(as_texts)


@FUZZ
@given(answers)
def test_sampler_coerce_accepts_only_configurations_in_the_space(text):
    from sllmbo.samplers.llm import coerce

    data, error = parsed(text)
    if error is not None:
        return
    for space in (SPACE, RF):
        try:
            params, _ = coerce(data, space, space.to_optuna())
        except ConfigError:
            continue
        assert space.contains(params)


@FUZZ
@given(answers)
def test_recommend_collect_rejects_and_reports_never_raises(text):
    from sllmbo.recommend import collect

    for finish in ("stop", "length"):
        rec = collect([Completion(text=text, finish_reason=finish)], SPACE, 1)
        assert len(rec.configs) + len(rec.rejected) == 1
        assert all(SPACE.contains(c) for c in rec.configs)


@FUZZ
@given(st.one_of(st.dictionaries(st.sampled_from(LIMITS.names), st.one_of(
    values, st.fixed_dictionaries({"low": numbers, "high": numbers}),
    st.fixed_dictionaries({"choices": values}))), values).flatmap(as_texts))
def test_initializer_space_is_within_limits_or_refused(text):
    from sllmbo.initializer import clip_configs, parse_space

    data, error = parsed(text)
    if error is not None:
        return
    try:
        space = parse_space(data, LIMITS, SPACE)
    except ValueError:
        space = SPACE
    for p in space:
        hard = LIMITS[p.name]
        if hasattr(p, "low"):
            assert hard.low <= p.low <= p.high <= hard.high  # type: ignore[attr-defined]
    kept, _, _ = clip_configs(data if isinstance(data, list) else [data], space, 5)
    assert all(space.contains(c) for c in kept)


@FUZZ
@given(st.one_of(st.fixed_dictionaries({"reason": values, "params": st.dictionaries(
    st.sampled_from(SPACE.names), st.one_of(values, st.fixed_dictionaries(
        {"action": st.sampled_from(["keep", "narrow", "widen", "explode"]), "low": numbers,
         "high": numbers})))}), values).flatmap(as_texts))
def test_adaptation_keeps_the_space_within_limits_or_refuses(text):
    from sllmbo.adaptive import apply_decision

    data, error = parsed(text)
    if error is not None:
        return
    try:
        space, _ = apply_decision(data, SPACE, LIMITS)
    except ValueError:
        return
    for p in space:
        if hasattr(p, "low"):
            hard = LIMITS[p.name]
            assert hard.low <= p.low <= p.high <= hard.high  # type: ignore[attr-defined]


def test_bare_non_finite_constants_and_deep_nesting_are_refused():
    for text in ('{"x": NaN}', '{"x": Infinity}', '[-Infinity]', "[" * 100_000 + "]" * 100_000):
        data, error = parsed(text)
        assert data is None and isinstance(error, ValueError)


def test_a_400_digit_integer_is_a_problem_not_a_crash():
    huge = {**{p.name: 1 for p in SPACE}, "n_estimators": 10**400}
    assert not SPACE.contains(huge)
    try:
        SPACE.clip(huge)
    except ConfigError as err:
        assert "'n_estimators' must be a finite number" in err.problems[0]
    else:
        raise AssertionError("a 400-digit n_estimators was accepted")


def test_duplicates_are_their_own_error():
    from sllmbo.samplers.llm import accept_config

    seen: set = set()
    config = {p.name: getattr(p, "low", None) for p in RF}
    config["bootstrap"] = True
    accept_config(config, RF, seen)
    try:
        accept_config(config, RF, seen)
    except DuplicateError:
        pass
    else:
        raise AssertionError("a repeat was accepted")
