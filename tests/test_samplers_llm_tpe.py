"""LLMTPESampler: the LLM share follows p; adaptive p follows the improving source."""

from __future__ import annotations

import optuna
import pytest
from llm_scripts import VALID, ScriptedBackend
from loop_helpers import SPACE, objective

from sllmbo.core.errors import SllmboError
from sllmbo.samplers import LLMSampler, LLMTPESampler, build_sampler
from sllmbo.samplers import attrs as A
from sllmbo.samplers.llm_tpe import adapted_p

optuna.logging.set_verbosity(optuna.logging.WARNING)


def run(n_trials=40, **options):
    backend = ScriptedBackend([VALID])
    sampler = LLMTPESampler(backend=backend, space=SPACE, seed=1, **options)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=n_trials)
    return study, backend


@pytest.mark.parametrize("p, low, high", [(0.0, 0, 0), (1.0, 40, 40), (0.5, 12, 28)])
def test_share_of_llm_trials_follows_p(p, low, high):
    study, backend = run(p_llm=p)
    sources = [t.user_attrs[A.SOURCE] for t in study.trials]
    assert low <= sources.count("llm") <= high
    assert sources.count("llm") + sources.count("tpe") == 40
    assert len(backend.requests) == sources.count("llm")
    assert {t.user_attrs[A.P_LLM] for t in study.trials} == {p}


def test_same_seed_same_sources():
    a, _ = run(n_trials=15)
    b, _ = run(n_trials=15)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]


def trial(number, value, source):
    return optuna.trial.FrozenTrial(
        number=number, state=optuna.trial.TrialState.COMPLETE, value=value,
        datetime_start=None, datetime_complete=None, params={}, distributions={},
        user_attrs={A.SOURCE: source}, system_attrs={}, intermediate_values={}, trial_id=number,
    )


def make(sources_values):
    return [trial(i, v, s) for i, (s, v) in enumerate(sources_values)]


RULE = dict(p0=0.5, p_min=0.1, p_max=0.9, window=30)


def test_no_evidence_keeps_the_prior():
    assert adapted_p([], "minimize", **RULE) == 0.5
    assert adapted_p([], "minimize", **{**RULE, "p0": 0.3}) == pytest.approx(0.3)


def test_p_moves_toward_the_source_that_improves_the_best():
    llm_wins = make([("llm", 10 - i) if i % 2 == 0 else ("tpe", 50) for i in range(20)])
    tpe_wins = make([("tpe", 10 - i) if i % 2 == 0 else ("llm", 50) for i in range(20)])
    assert adapted_p(llm_wins, "minimize", **RULE) > 0.8
    assert adapted_p(tpe_wins, "minimize", **RULE) < 0.2
    # Read as "maximize", rising TPE values are the improvements.
    rising_tpe = make([("llm", 10 - i) if i % 2 == 0 else ("tpe", 50 + i) for i in range(20)])
    assert adapted_p(rising_tpe, "maximize", **RULE) < 0.2


def test_p_is_clamped_and_fallback_counts_as_tpe():
    fallback_wins = make([("fallback", 100 - i) if i % 2 else ("llm", 500) for i in range(60)])
    assert adapted_p(fallback_wins, "minimize", **RULE) == pytest.approx(0.1)
    llm_wins = make([("llm", 100 - i) if i % 2 else ("tpe", 500) for i in range(60)])
    assert adapted_p(llm_wins, "minimize", **RULE) == pytest.approx(0.9)
    # One source alone is weak evidence: its rate is compared with the uniform prior.
    streak = make([("llm", 100 - i) for i in range(60)])
    assert 0.5 < adapted_p(streak, "minimize", **RULE) < 0.9


def test_adaptive_run_uses_and_records_the_adapted_p():
    """Each trial's p is the rule applied to the trials completed before it (so a sampler that
    ignored ``adaptive`` and kept 0.5 fails here), and p does move during the run."""
    study, _ = run(n_trials=20, adaptive=True)
    complete = optuna.trial.TrialState.COMPLETE
    for t in study.trials:
        before = [u for u in study.trials if u.number < t.number and u.state == complete]
        assert t.user_attrs[A.P_LLM] == round(adapted_p(before, "minimize", **RULE), 4)
    assert len({t.user_attrs[A.P_LLM] for t in study.trials}) > 1


@pytest.mark.parametrize(
    "options, message",
    [({"p_llm": 1.5}, "p_llm"), ({"p_min": 0.0}, "p_min"), ({"p_min": 0.8, "p_max": 0.2}, "p_min"),
     ({"adaptive": True, "p_llm": 1.0}, "adaptive"), ({"window": 0}, "window")],
)
def test_constructor_fails_fast(options, message):
    with pytest.raises(ValueError, match=message):
        LLMTPESampler(backend=ScriptedBackend(), **options)


def test_build_sampler_by_name():
    backend = ScriptedBackend()
    assert isinstance(build_sampler("tpe", seed=0), optuna.samplers.TPESampler)
    assert isinstance(build_sampler("random", seed=0), optuna.samplers.RandomSampler)
    assert isinstance(build_sampler("llm", backend=backend, space=SPACE), LLMSampler)
    hybrid = build_sampler("llm-tpe", backend=backend, adaptive=True, p_llm=0.3)
    assert isinstance(hybrid, LLMTPESampler)
    with pytest.raises(SllmboError, match="needs an LLM backend"):
        build_sampler("llm")
    with pytest.raises(SllmboError, match="unknown sampler"):
        build_sampler("cmaes")
    with pytest.raises(SllmboError, match="llm-tpe"):
        build_sampler("llm", backend=backend, p_llm=0.3)
