"""Adaptive search space: LLM decisions applied within hard limits; samplers keep working."""

from __future__ import annotations

import json

import optuna
import pytest
from llm_scripts import VALID, ScriptedBackend
from loop_helpers import CARD, LIMITS, SPACE, objective

from sllmbo.adaptive import ADAPT_FAILURES, SpaceAdapter, apply_decision
from sllmbo.errors import BackendError
from sllmbo.samplers import LLMSampler, LLMTPESampler
from sllmbo.studyinfo import SPACE_CHANGES, get_space

optuna.logging.set_verbosity(optuna.logging.WARNING)


def decision(**params):
    return {"reason": "test", "params": params}


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"x": {"action": "narrow", "low": 2, "high": 4}}, {"x": (2.0, 4.0)}),
        ({"x": {"action": "widen", "low": -999, "high": 999}}, {"x": (-50.0, 50.0)}),
        ({"n": {"action": "widen", "low": 1, "high": 5000.4}}, {"n": (1, 1000)}),
        ({"n": {"action": "narrow", "low": 10.6, "high": 30}}, {"n": (11, 30)}),
        ({"x": {"action": "keep", "low": 0, "high": 1}}, {}),
    ],
)
def test_decisions_are_applied_within_the_hard_limits(params, expected):
    new, notes = apply_decision(decision(**params), SPACE, LIMITS)
    assert len(notes) == len(expected)
    for name, (low, high) in expected.items():
        assert (new[name].low, new[name].high) == (low, high)
    for p in new:
        if hasattr(p, "low"):
            assert LIMITS[p.name].low <= p.low <= p.high <= LIMITS[p.name].high


def test_a_narrowed_range_is_stretched_to_keep_the_best_configuration():
    new, _ = apply_decision(decision(x={"action": "narrow", "low": 5, "high": 6}), SPACE, LIMITS,
                            best={"x": 3.0, "n": 20, "kind": "a"})
    assert (new["x"].low, new["x"].high) == (3.0, 6.0)


@pytest.mark.parametrize(
    "data, message",
    [
        ([], "params"),
        (decision(zz={"action": "keep", "low": 0, "high": 1}), "unknown parameters"),
        (decision(x={"action": "explode", "low": 0, "high": 1}), "action"),
        (decision(x={"action": "narrow", "low": "a", "high": 1}), "numeric"),
        (decision(x={"action": "narrow", "low": 5, "high": 1}), "low must be <= high"),
        (decision(n={"action": "narrow", "low": 0, "high": 9}), "log-scale"),
    ],
)
def test_malformed_decisions_are_rejected_with_a_reason(data, message):
    with pytest.raises(ValueError, match=message):
        apply_decision(data, SPACE, LIMITS)


def narrow_then_widen(request):
    text = request.messages[-1]["content"]
    if "x: float in [0, 10]" in text:
        return json.dumps(decision(x={"action": "narrow", "low": 2, "high": 4}))
    return json.dumps(decision(x={"action": "widen", "low": -80, "high": 9},
                               n={"action": "narrow", "low": 5, "high": 40}))


@pytest.mark.parametrize("kind", ["tpe", "llm", "llm-tpe"])
def test_samplers_keep_working_across_space_changes(kind):
    adapter_backend = ScriptedBackend([narrow_then_widen])
    adapter = SpaceAdapter(backend=adapter_backend, default_space=SPACE, limits=LIMITS,
                           card=CARD, every=8)
    if kind == "tpe":
        sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=3)
    elif kind == "llm":
        sampler = LLMSampler(backend=ScriptedBackend([VALID]), space=SPACE, seed=0)
    else:
        sampler = LLMTPESampler(backend=ScriptedBackend([VALID]), space=SPACE, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=24, callbacks=[adapter])
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    changes = study.user_attrs[SPACE_CHANGES]
    assert [c["trial"] for c in changes] == [7, 15]
    # [2, 4] asked; stretched only as far as needed to keep the best x inside.
    assert "x: [0, 10] -> [2" in changes[0]["reason"] and "(narrow)" in changes[0]["reason"]
    narrowed = changes[0]["space"]["x"]
    assert narrowed["low"] <= 2.0 and 4.0 <= narrowed["high"] < 10.0
    space = get_space(study, SPACE)
    assert space["x"].low == -50.0  # widened, but only to the hard limit
    for t in study.trials[8:16]:
        assert narrowed["low"] <= t.params["x"] <= narrowed["high"]
    for t in study.trials[16:]:
        assert -50.0 <= t.params["x"] <= 9.0 and 5 <= t.params["n"] <= 40


def test_a_failing_adaptation_is_counted_and_the_space_is_kept():
    adapter = SpaceAdapter(backend=ScriptedBackend([BackendError("down")]),
                           default_space=SPACE, limits=LIMITS, every=2)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=6, callbacks=[adapter])
    assert study.user_attrs[ADAPT_FAILURES] == {"backend_error": 3}
    assert SPACE_CHANGES not in study.user_attrs


def test_adapter_fails_fast():
    with pytest.raises(ValueError, match="every"):
        SpaceAdapter(backend=ScriptedBackend(), default_space=SPACE, limits=LIMITS, every=0)


def test_adaptation_calls_and_tokens_are_in_the_loop_summary():
    from sllmbo.summary import summarize_study

    adapter = SpaceAdapter(backend=ScriptedBackend([narrow_then_widen]), default_space=SPACE,
                           limits=LIMITS, card=CARD, every=4)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    study.optimize(objective, n_trials=8, callbacks=[adapter])
    summary = summarize_study(study)
    assert summary.llm_calls == 2  # two adaptations, no LLM sampler
    assert summary.prompt_tokens == 200 and summary.completion_tokens == 40
