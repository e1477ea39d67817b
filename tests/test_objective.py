"""The CV objective and the model families on real tasks."""

from __future__ import annotations

import math

import optuna
import pytest

from sllmbo.core.families import FAMILIES, get_family
from sllmbo.core.objective import EvalSettings, cross_validate, holdout_scores, make_objective
from sllmbo.core.space import FloatParam, IntParam, SearchSpace
from sllmbo.core.studyinfo import set_space, space_changes
from sllmbo.data import load_task

REGRESSION, CLASSIFICATION = "diabetes", "breast_cancer"
FAST = EvalSettings(n_folds=3, seed=0)


def _cheap_config(name: str) -> dict:
    """The default space's lower corner: the quickest fit of each family."""
    space = FAMILIES[name].default_space()
    return {p.name: (p.choices[0] if hasattr(p, "choices") else p.low) for p in space}


@pytest.mark.parametrize("task_name", [REGRESSION, CLASSIFICATION])
@pytest.mark.parametrize("family_name", sorted(FAMILIES))
def test_every_family_fits_both_task_types_and_scores_finite(family_name, task_name):
    task = load_task(task_name)
    family = get_family(family_name)
    result = cross_validate(task, family, _cheap_config(family_name), FAST)
    assert len(result.fold_scores) == 3
    assert math.isfinite(result.mean) and result.mean > 0
    scores = holdout_scores(task, family, _cheap_config(family_name), FAST)
    expected = {"rmse"} if task.task_type == "regression" else {"log_loss", "accuracy"}
    assert set(scores) == expected
    if "accuracy" in scores:
        assert 0.5 < scores["accuracy"] <= 1.0


def test_cross_validation_is_deterministic_under_a_seed():
    task = load_task(REGRESSION)
    family = get_family("lightgbm")
    config = _cheap_config("lightgbm")
    first = cross_validate(task, family, config, FAST)
    again = cross_validate(task, family, config, FAST)
    other_seed = cross_validate(task, family, config, EvalSettings(n_folds=3, seed=1))
    assert first.fold_scores == again.fold_scores
    assert first.fold_scores != other_seed.fold_scores


def test_a_better_configuration_scores_better():
    """A sanity check that the objective measures something: 1 tree vs a tuned-ish booster."""
    task = load_task(REGRESSION)
    family = get_family("lightgbm")
    weak = {**_cheap_config("lightgbm"), "n_estimators": 50, "learning_rate": 0.005}
    good = {**weak, "learning_rate": 0.05, "num_leaves": 8, "min_child_samples": 20}
    assert cross_validate(task, family, good, FAST).mean < cross_validate(task, family, weak, FAST).mean


def test_objective_reads_the_current_space_from_the_study():
    task = load_task(REGRESSION)
    family = get_family("lightgbm")
    default = family.default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    narrow = default.replace(
        [FloatParam("learning_rate", 0.1, 0.11, log=True), IntParam("n_estimators", 50, 60)]
    )
    set_space(study, narrow, reason="test")
    study.optimize(make_objective(task, family, default, FAST), n_trials=3)
    for trial in study.trials:
        assert 0.1 <= trial.params["learning_rate"] <= 0.11
        assert trial.user_attrs["sllmbo:fit_seconds"] >= 0
        assert len(trial.user_attrs["sllmbo:cv_folds"]) == 3
    assert len(space_changes(study.user_attrs)) == 1
    assert SearchSpace.from_dict(study.user_attrs["sllmbo:space"]) == narrow
