"""The loop on real transformers backends: a tiny random-weight Llama for the plumbing, and the
embedded SmolLM2-135M-Instruct for a short real run (slow: ~1-2 min per LLM call on 2 cores)."""

from __future__ import annotations

import optuna
import pytest
from loop_helpers import CARD, SPACE, objective

from sllmbo.core.families import get_family
from sllmbo.samplers import LLMSampler, LLMTPESampler
from sllmbo.samplers import attrs as A
from sllmbo.summary import summarize_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.mark.slow
@pytest.mark.parametrize("cls, options", [(LLMSampler, {}), (LLMTPESampler, {"p_llm": 1.0})])
def test_samplers_run_on_a_tiny_random_llama(tiny_backend, cls, options):
    sampler = cls(backend=tiny_backend, space=SPACE, card=CARD, seed=0, max_tokens=48,
                  **options)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=3)
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    summary = summarize_study(study)
    asked = summary.sources.get("llm", 0) + summary.sources.get("fallback", 0)
    assert summary.llm_calls >= asked and summary.prompt_tokens > 0
    # Constrained decoding: even random weights give configurations of the space, so at
    # least one trial is the model's own (a sampler that always falls back fails here).
    assert summary.sources.get("llm", 0) >= 1
    for t in study.trials:
        assert SPACE.contains(t.params)
        if t.user_attrs[A.SOURCE] in ("llm", "fallback"):
            assert t.user_attrs[A.LLM_CALLS] >= 1


@pytest.mark.slow
def test_short_tune_on_the_embedded_model(embedded_model, tmp_path):
    from sllmbo.tune import LLMOptions, tune

    url = f"sqlite:///{tmp_path / 'real.db'}"
    result = tune("diabetes", sampler="llm", n_trials=2, n_folds=2, storage=url,
                  study_name="real", progress=False, seed=0,
                  llm=LLMOptions(n_initial=0, patience=0, max_tokens=160))
    assert result.n_complete == 2
    assert result.llm["llm_calls"] >= 2
    assert result.llm["completion_tokens"] > 0
    study = optuna.load_study(study_name="real", storage=url)
    space = get_family("lightgbm").default_space()
    sources = [t.user_attrs[A.SOURCE] for t in study.trials]
    # Constrained decoding makes every answer parse: the model itself proposed the trials
    # (a repeat of an evaluated configuration is the one legitimate fallback).
    assert "llm" in sources
    for t in study.trials:
        assert space.contains(t.params)
        if t.user_attrs[A.SOURCE] == "fallback":
            assert t.user_attrs[A.FALLBACK_CAUSE] == "duplicate"


@pytest.mark.slow
def test_the_shipped_adapter_starts_from_its_recommendation(embedded_model, tmp_path):
    from sllmbo.core.studyinfo import INIT
    from sllmbo.tune import LLMOptions, tune

    url = f"sqlite:///{tmp_path / 'init.db'}"
    result = tune("diabetes", sampler="llm-tpe", n_trials=2, n_folds=2, storage=url,
                  study_name="init", progress=False, seed=0,
                  llm=LLMOptions(n_initial=2, patience=0))
    study = optuna.load_study(study_name="init", storage=url)
    init = study.user_attrs[INIT]
    assert init["configs_source"] == "recommender" and init["calls"] == 8  # one consensus
    assert len(init["configs"]) == 2 and result.n_complete == 2
    assert [t.user_attrs[A.SOURCE] for t in study.trials] == ["initial", "initial"]
    assert [t.params for t in study.trials] == init["configs"]
