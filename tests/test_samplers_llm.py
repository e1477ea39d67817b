"""LLMSampler against scripted backends: every failure mode is a counted fallback."""

from __future__ import annotations

import json

import numpy as np
import optuna
import pytest
from llm_scripts import VALID, ErrorCompletionBackend, ScriptedBackend
from loop_helpers import CARD, SPACE, objective

from sllmbo.core.errors import BackendError
from sllmbo.samplers import LLMSampler
from sllmbo.samplers import attrs as A

optuna.logging.set_verbosity(optuna.logging.WARNING)

GOOD = json.dumps({"x": 3.0, "n": 20, "kind": "a"})


def run(backend, n_trials=1, **options):
    sampler = LLMSampler(backend=backend, space=SPACE, card=CARD, seed=0, **options)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return study


def test_valid_answer_is_used_as_is_and_accounted():
    backend = ScriptedBackend([GOOD])
    study = run(backend)
    trial = study.trials[0]
    assert trial.params == {"x": 3.0, "n": 20, "kind": "a"}
    ua = trial.user_attrs
    assert ua[A.SOURCE] == "llm"
    assert (ua[A.LLM_CALLS], ua[A.RETRIES], ua[A.REPAIRS]) == (1, 0, [])
    assert ua[A.PROMPT_TOKENS] == 100 and ua[A.COMPLETION_TOKENS] == 20
    assert backend.requests[0].json_schema == SPACE.to_json_schema()


def test_invalid_json_is_retried_once_with_the_error_then_tpe():
    backend = ScriptedBackend(["not json", "{still not"])
    study = run(backend)
    ua = study.trials[0].user_attrs
    assert ua[A.SOURCE] == "fallback" and ua[A.FALLBACK_CAUSE] == "invalid"
    assert (ua[A.LLM_CALLS], ua[A.RETRIES]) == (2, 1)
    assert "not valid JSON" in ua[A.VALIDATION_ERROR]
    retry = backend.requests[1].messages
    assert retry[-2] == {"role": "assistant", "content": "not json"}
    assert "rejected" in retry[-1]["content"] and "not valid JSON" in retry[-1]["content"]
    assert SPACE.contains(study.trials[0].params)


def test_invalid_then_valid_answer_counts_the_retry():
    study = run(ScriptedBackend(['{"x": 1}', GOOD]))
    ua = study.trials[0].user_attrs
    assert ua[A.SOURCE] == "llm" and ua[A.RETRIES] == 1
    assert "missing parameter 'n'" in ua[A.VALIDATION_ERROR]


@pytest.mark.parametrize(
    "answer, expected, n_repairs",
    [
        ({"x": 12.5, "n": 20, "kind": "a"}, {"x": 10.0, "n": 20, "kind": "a"}, 1),
        ({"x": -1, "n": 5000, "kind": "a"}, {"x": 0.0, "n": 100, "kind": "a"}, 2),
        ({"x": "2.5", "n": 7.6, "kind": "B"}, {"x": 2.5, "n": 8, "kind": "b"}, 3),
        ({"x": 2.0, "n": 3, "kind": "a", "extra": 1}, {"x": 2.0, "n": 3, "kind": "a"}, 1),
    ],
)
def test_llm_answer_out_of_range_is_clipped_and_counted(answer, expected, n_repairs):
    study = run(ScriptedBackend([json.dumps(answer)]))
    trial = study.trials[0]
    assert trial.params == expected
    assert trial.user_attrs[A.SOURCE] == "llm"
    assert len(trial.user_attrs[A.REPAIRS]) == n_repairs
    assert type(trial.params["n"]) is int and type(trial.params["x"]) is float


def test_duplicate_proposal_is_retried_then_replaced_by_tpe():
    backend = ScriptedBackend([GOOD])  # always the same configuration
    study = run(backend, n_trials=3)
    sources = [t.user_attrs[A.SOURCE] for t in study.trials]
    assert sources == ["llm", "fallback", "fallback"]
    assert {t.user_attrs.get(A.FALLBACK_CAUSE) for t in study.trials[1:]} == {"duplicate"}
    configs = {json.dumps(t.params, sort_keys=True) for t in study.trials}
    assert len(configs) == 3
    assert backend.requests[2].messages[-1]["content"].count("already evaluated") == 1


def test_duplicate_then_new_answer_is_accepted():
    other = json.dumps({"x": 4.0, "n": 21, "kind": "b"})
    study = run(ScriptedBackend([GOOD, GOOD, other]), n_trials=2)
    assert [t.user_attrs[A.SOURCE] for t in study.trials] == ["llm", "llm"]
    assert study.trials[1].user_attrs[A.RETRIES] == 1


@pytest.mark.parametrize(
    "backend, cause",
    [
        (ScriptedBackend([BackendError("server down")]), "backend_error"),
        (ErrorCompletionBackend(), "backend_error"),
    ],
)
def test_backend_failure_falls_back_to_tpe_and_the_study_completes(backend, cause):
    study = run(backend, n_trials=4)
    assert len(study.trials) == 4
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    assert {t.user_attrs[A.FALLBACK_CAUSE] for t in study.trials} == {cause}
    assert all(t.user_attrs[A.RETRIES] == 0 for t in study.trials)  # not retried


def test_timeout_falls_back_to_tpe():
    backend = ScriptedBackend([lambda request: __import__("time").sleep(1.5) or GOOD])
    study = run(backend, n_trials=1, timeout=0.2)
    ua = study.trials[0].user_attrs
    assert ua[A.SOURCE] == "fallback" and ua[A.FALLBACK_CAUSE] == "timeout"
    assert "0.2" in ua[A.VALIDATION_ERROR]


def test_values_are_plain_python_numbers():
    study = run(ScriptedBackend([VALID]), n_trials=5)
    for t in study.trials:
        assert type(t.params["x"]) is float and type(t.params["n"]) is int
        assert not isinstance(t.params["x"], np.generic)


def test_prompt_holds_card_space_and_history():
    backend = ScriptedBackend([VALID])
    run(backend, n_trials=3)
    first, third = (r.messages[-1]["content"] for r in (backend.requests[0], backend.requests[2]))
    assert "Task: toy (regression)" in first and "x: float in [0, 10]" in first
    assert "No trials yet." in first
    assert "2 trials: 2 complete" in third and "#0 |" in third


def test_running_trials_are_not_history_and_the_shown_trials_are_recorded():
    backend = ScriptedBackend([VALID])
    study = run(backend, n_trials=2)
    study.enqueue_trial({"x": 5.0, "n": 3, "kind": "a"})
    waiting = study.ask()  # RUNNING while the next trial's prompt is built
    study.optimize(objective, n_trials=1)
    study.tell(waiting, 1.0)
    last = study.trials[-2] if study.trials[-1].number == waiting.number else study.trials[-1]
    prompt = backend.requests[-1].messages[-1]["content"]
    assert "2 trials: 2 complete" in prompt and f"#{waiting.number} |" not in prompt
    assert last.user_attrs[A.HISTORY_TRIALS] == [0, 1]


def test_history_shrinks_to_fit_a_small_context():
    backend = ScriptedBackend([VALID], context_length=700)
    study = run(backend, n_trials=14, k_best=10, k_recent=5)
    k_best, k_recent = study.trials[-1].user_attrs[A.HISTORY_K]
    assert k_best + k_recent < 15
    prompt = "\n".join(m["content"] for m in backend.requests[-1].messages)
    assert backend.count_tokens(prompt) + 256 <= 700


def test_enqueued_trials_keep_their_values_and_skip_the_llm():
    backend = ScriptedBackend([VALID])
    study = optuna.create_study(sampler=LLMSampler(backend=backend, space=SPACE, seed=0))
    study.enqueue_trial({"x": 1.0, "n": 2, "kind": "b"}, user_attrs={A.SOURCE: "initial"})
    study.optimize(objective, n_trials=1)
    assert study.trials[0].params == {"x": 1.0, "n": 2, "kind": "b"}
    assert study.trials[0].user_attrs[A.SOURCE] == "initial"
    assert backend.requests == []


@pytest.mark.parametrize(
    "options, message",
    [
        ({"temperature": -1}, "temperature"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"timeout": 0}, "timeout"),
        ({"k_best": -1}, "k_best"),
    ],
)
def test_constructor_fails_fast_on_bad_settings(options, message):
    with pytest.raises(ValueError, match=message):
        LLMSampler(backend=ScriptedBackend(), **options)


def test_constructor_rejects_a_non_backend():
    with pytest.raises(TypeError, match="Backend"):
        LLMSampler(backend="openai")  # type: ignore[arg-type]


def test_seeded_runs_ask_the_same_questions():
    a, b = ScriptedBackend([VALID]), ScriptedBackend([VALID])
    run(a, n_trials=3)
    run(b, n_trials=3)
    assert [r.sampling.seed for r in a.requests] == [r.sampling.seed for r in b.requests]
    assert [r.messages for r in a.requests] == [r.messages for r in b.requests]
