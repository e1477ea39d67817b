"""`tune --sampler tpe-warm`: the log-ratio portfolio's first entries for the task's subtype,
then multivariate TPE; the same warm start the zero-shot-30 suite judged."""

from __future__ import annotations

import optuna
import pytest
from optuna.samplers import TPESampler

from sllmbo.cli import main
from sllmbo.core.studyinfo import ENQUEUED, SOURCE, TASK_CARD
from sllmbo.data.pool_select import WARM_START, warm_start
from sllmbo.tune import tune


def test_tune_tries_the_subtypes_portfolio_first_then_multivariate_tpe(tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    result = tune("breast_cancer", family="lightgbm", sampler="tpe-warm", n_trials=5,
                  n_folds=2, max_rows=200, storage=url, progress=False, score_test=False)
    study = optuna.load_study(study_name=result.study, storage=url)
    trials = sorted(study.trials, key=lambda t: t.number)
    assert [t.user_attrs[SOURCE] for t in trials] == ["portfolio"] * WARM_START + ["tpe-warm"] * 2
    expected = warm_start("lightgbm", study.user_attrs[TASK_CARD])
    assert expected == warm_start("lightgbm", {"n_classes": 2})  # binary's
    for trial, config in zip(trials[:WARM_START], expected, strict=True):
        assert trial.params == pytest.approx(config)
    assert not study.user_attrs[ENQUEUED]["repairs"]  # pool entries lie in the space
    # Resuming asks no warm start again: the study already holds it.
    tune("breast_cancer", family="lightgbm", sampler="tpe-warm", n_trials=6, n_folds=2,
         max_rows=200, storage=url, progress=False, score_test=False)
    again = optuna.load_study(study_name=result.study, storage=url)
    assert [t.user_attrs[SOURCE] for t in again.trials].count("portfolio") == WARM_START


def test_the_sampler_is_multivariate_tpe_whose_random_start_is_the_warm_start():
    from sllmbo.samplers import build_sampler

    sampler = build_sampler("tpe-warm", seed=3)
    assert isinstance(sampler, TPESampler)
    assert sampler._multivariate and sampler._n_startup_trials == WARM_START


@pytest.mark.parametrize(("task", "family"), [("penguin_species", "lightgbm"),
                                              ("bike_sharing", "xgboost"),
                                              ("breast_cancer", "xgboost")])
def test_the_warm_start_is_the_one_the_suite_judged(task, family):
    from sllmbo.data.registry import load_task
    from sllmbo.eval.zeroshot_baselines import load_selectors

    loaded = load_task(task)
    judged = load_selectors().portfolio_ratio(loaded, family, WARM_START)
    assert warm_start(family, loaded.meta_features()) == judged
    assert len(judged) == WARM_START


def test_each_subtype_has_its_own_warm_start():
    starts = [warm_start("lightgbm", {"n_classes": k}) for k in (2, 7, None)]
    assert starts[0] != starts[1] and starts[0] != starts[2]


def test_a_family_without_a_pool_is_one_message_and_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        main(["tune", "--task", "diabetes", "--model", "mlp", "--sampler", "tpe-warm",
              "--n-trials", "2", "--n-folds", "2", "--quiet"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "no mlp configurations to warm-start from" in err
    assert "Traceback" not in err
