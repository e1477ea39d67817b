"""Adaptive search space: LLM decisions applied within hard limits; samplers keep working."""

from __future__ import annotations

import json

import optuna
import pytest
from llm_scripts import VALID, ScriptedBackend
from loop_helpers import CARD, LIMITS, SPACE, objective

from sllmbo.adaptive import SpaceAdapter, adaptation_point, apply_decision
from sllmbo.core.errors import BackendError
from sllmbo.core.studyinfo import adapt_failures, get_space, space_changes
from sllmbo.samplers import LLMSampler, LLMTPESampler

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
    changes = space_changes(study.user_attrs)
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
    assert adapt_failures(study.user_attrs) == {"backend_error": 3}
    assert space_changes(study.user_attrs) == []


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


def _finished(number: int, second: int) -> optuna.trial.FrozenTrial:
    from datetime import datetime

    return optuna.trial.FrozenTrial(
        number=number, state=optuna.trial.TrialState.COMPLETE, value=0.0,
        datetime_start=datetime(2026, 1, 1), datetime_complete=datetime(2026, 1, 1, 0, 0, second),
        params={}, distributions={}, user_attrs={}, system_attrs={}, intermediate_values={},
        trial_id=number)


def test_each_adaptation_point_has_exactly_one_owner_when_workers_finish_together():
    # Trials 0-9 completed in the order 0..7, 9, 8 (trial 9 finished before trial 8).
    order = [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]
    complete = [_finished(n, second) for second, n in enumerate(order)]
    # Both workers' callbacks run after both trials completed: each sees 10 completed trials.
    owners = [n for n in range(10) if adaptation_point(complete, n, 5, adapted_at=5) == 10]
    assert owners == [8]  # the 10th to complete, not the highest number nor both
    assert adaptation_point(complete, 9, 5, adapted_at=5) is None
    # Once point 10 is recorded, nobody adapts there again.
    assert adaptation_point(complete, 8, 5, adapted_at=10) is None
    # A worker that missed point 5 (its callback ran late) still owns it if it is not done.
    assert adaptation_point(complete, 4, 5, adapted_at=0) == 5


def test_space_changes_from_two_workers_at_once_are_both_kept():
    from sllmbo.core.studyinfo import set_space

    storage = optuna.storages.InMemoryStorage()
    one = optuna.create_study(storage=storage, study_name="s")
    two = optuna.load_study(storage=storage, study_name="s")
    set_space(one, SPACE, "worker one", 3)
    set_space(two, LIMITS, "worker two", 4)
    assert sorted(c["reason"] for c in space_changes(one.user_attrs)) == ["worker one",
                                                                          "worker two"]
