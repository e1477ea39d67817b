"""`tune()` with the LLM samplers (scripted backends): initializer, sources, fallbacks, summary."""

from __future__ import annotations

import json

import optuna
import pytest
from llm_scripts import VALID, ScriptedBackend

from sllmbo.core.errors import BackendError
from sllmbo.core.families import get_family
from sllmbo.core.space import SearchSpace
from sllmbo.core.studyinfo import INIT as INIT_ATTR
from sllmbo.samplers import attrs as A
from sllmbo.summary import summarize_study, summary_table
from sllmbo.tune import LLMOptions, tune

TASK = "diabetes"
LIMITS = get_family("lightgbm").hard_limits()


def lgbm_space_answer(request):
    """The initializer gets a narrow LLM space and 2 configs; other questions valid answers."""
    schema = request.json_schema or {}
    if "configs" in schema.get("properties", {}):
        return json.dumps({
            "space": {"learning_rate": {"low": 0.02, "high": 0.2},
                      "n_estimators": {"low": 30, "high": 200},
                      "num_leaves": {"low": 4, "high": 9999}},
            "configs": [
                {"learning_rate": 0.1, "n_estimators": 100, "num_leaves": 15, "subsample": 0.8,
                 "colsample_bytree": 0.8, "reg_alpha": 1e-3, "reg_lambda": 1e-3,
                 "min_child_samples": 20},
                {"learning_rate": 5.0, "n_estimators": 60, "num_leaves": 31, "subsample": 1.0,
                 "colsample_bytree": 1.0, "reg_alpha": 1e-3, "reg_lambda": 1.0,
                 "min_child_samples": 10},
                {"learning_rate": "fast"},
            ],
        })
    import random

    from llm_scripts import valid_answer
    return json.dumps(valid_answer(schema, random.Random(len(request.messages[-1]["content"]))))


@pytest.mark.slow
def test_llm_tune_with_llm_space_enqueues_initial_configs_and_accounts(tmp_path):
    url = f"sqlite:///{tmp_path / 'r.db'}"
    backend = ScriptedBackend([lgbm_space_answer])
    result = tune(TASK, sampler="llm", n_trials=5, n_folds=2, storage=url, study_name="s",
                  progress=False, backend=backend, llm=LLMOptions(space="llm", n_initial=3))
    study = optuna.load_study(study_name="s", storage=url)
    sources = [t.user_attrs[A.SOURCE] for t in study.trials]
    assert sources[:2] == ["initial", "initial"] and set(sources[2:]) <= {"llm", "fallback"}
    init = study.user_attrs[INIT_ATTR]
    assert init["space_source"] == "llm" and len(init["configs"]) == 2
    assert any("learning_rate" in r for r in init["repairs"])  # 5.0 clipped to 0.2
    assert any("config 2" in d for d in init["dropped"])  # "fast" cannot be repaired
    space = SearchSpace.from_dict(study.user_attrs["sllmbo:space"])
    assert (space["num_leaves"].low, space["num_leaves"].high) == (4, 4096)  # hard limit
    for t in study.trials:
        assert space.contains(t.params)
    assert study.trials[1].params["learning_rate"] == 0.2
    assert result.llm is not None and result.llm["sources"]["initial"] == 2
    assert result.llm["llm_calls"] == 1 + 3  # initializer + three optimizer steps
    assert summary_table(summarize_study(study)).row_count >= 6


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["llm", "llm-tpe"])
def test_a_backend_failing_every_call_still_completes_the_study_from_tpe(sampler):
    backend = ScriptedBackend([BackendError("connection refused")])
    result = tune(TASK, sampler=sampler, n_trials=4, n_folds=2, progress=False,
                  backend=backend, llm=LLMOptions(space="llm", patience=0))
    assert result.n_complete == 4
    summary = result.llm
    assert summary["sources"].get("llm", 0) == 0
    assert summary["initializer"]["space_source"] == "default"
    if sampler == "llm":
        assert summary["fallbacks"] == {"backend_error": 4}
        assert "the LLM produced no configuration: all 4 LLM trials" in summary["notes"][0]
    assert any("initializer failed (backend_error)" in n for n in summary["notes"])


@pytest.mark.slow
def test_plain_samplers_label_their_trials():
    result = tune(TASK, sampler="random", n_trials=2, n_folds=2, progress=False)
    assert result.llm is None
    study_result = tune(TASK, sampler="tpe", n_trials=2, n_folds=2, progress=False,
                        backend=ScriptedBackend([VALID]), llm=LLMOptions(space="llm"))
    assert study_result.llm["sources"] == {"tpe": 2}
    assert study_result.llm["initializer"]["space_source"] == "llm"


@pytest.mark.parametrize(
    "options, message",
    [({"space": "auto"}, "--space"), ({"patience": -1}, "--patience"),
     ({"p_llm": 2.0}, "--p-llm"), ({"adapt_every": -2}, "--adapt-every"),
     ({"init": "zero-shot"}, "--init must be one of auto, initializer, recommender")],
)
def test_bad_llm_options_are_refused(options, message):
    from sllmbo.core.errors import SllmboError

    with pytest.raises(SllmboError, match=message):
        LLMOptions(**options)


def test_a_heartbeat_retry_does_not_recount_the_original_llm_calls():
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState, create_trial

    from sllmbo.samplers import attrs as A
    from sllmbo.summary import summarize_study

    study = optuna.create_study()
    llm = {A.SOURCE: "llm", A.LLM_CALLS: 1, A.PROMPT_TOKENS: 300, A.COMPLETION_TOKENS: 40}
    dist = {"x": FloatDistribution(0, 1)}
    study.add_trial(create_trial(params={"x": 0.5}, distributions=dist, user_attrs=llm,
                                 state=TrialState.FAIL))
    study.add_trial(create_trial(params={"x": 0.5}, distributions=dist, user_attrs=llm,
                                 value=1.0, system_attrs={"failed_trial": 0}))
    summary = summarize_study(study)
    assert (summary.llm_calls, summary.prompt_tokens) == (1, 300)
    assert summary.sources == {"llm": 1, "retry": 1}
