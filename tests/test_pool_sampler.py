"""``PoolSampler``: the committed pool's entries one per trial, each next one chosen from the
run's own scores (``feedback``: the nearest training rows; ``llm-feedback``: the adapter)."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from test_pick import NamingBackend

from sllmbo.core.errors import SllmboError
from sllmbo.core.prompts import PICK_NAMES
from sllmbo.core.space import FloatParam, SearchSpace
from sllmbo.samplers.pool import POOL_INDEX, NeighbourChooser, PoolSampler

SPACE = SearchSpace(params=[FloatParam(name="x", low=0.0, high=10.0)])
CONFIGS = [{"x": float(i)} for i in range(6)]


def run(sampler: PoolSampler, n: int, direction: str = "minimize",
        objective=lambda t: (t.suggest_float("x", 0.0, 10.0) - 3.2) ** 2,
        study: optuna.Study | None = None) -> optuna.Study:
    study = study or optuna.create_study(direction=direction)
    study.sampler = sampler
    study.optimize(objective, n_trials=n)
    return study


class Recorder:
    """Chooses the lowest free position, and records what it was shown."""

    def __init__(self) -> None:
        self.calls: list[tuple[list, set]] = []

    def __call__(self, history, taken):
        self.calls.append((list(history), set(taken)))
        return min(set(range(len(CONFIGS))) - taken)


def test_the_start_is_tried_first_then_the_chooser_sees_each_score():
    chooser = Recorder()
    study = run(PoolSampler(configs=CONFIGS, space=SPACE, choose=chooser, start=[4, 2]), 4)
    assert [t.user_attrs[POOL_INDEX] for t in study.trials] == [4, 2, 0, 1]
    assert {t.user_attrs["sllmbo:source"] for t in study.trials} == {"pool"}
    history, taken = chooser.calls[0]
    assert history == [(4, pytest.approx(0.64)), (2, pytest.approx(1.44))]
    assert taken == {4, 2}


def test_a_maximized_study_hands_the_chooser_values_to_minimize():
    chooser = Recorder()
    run(PoolSampler(configs=CONFIGS, space=SPACE, choose=chooser, start=[1]), 2,
        direction="maximize", objective=lambda t: t.suggest_float("x", 0.0, 10.0))
    assert chooser.calls[0][0] == [(1, -1.0)]


def test_a_resumed_run_continues_from_the_stored_trials():
    study = run(PoolSampler(configs=CONFIGS, space=SPACE, choose=Recorder(), start=[5]), 2)
    fresh = Recorder()  # a new process: nothing in memory
    run(PoolSampler(configs=CONFIGS, space=SPACE, choose=fresh, start=[5]), 2, study=study)
    assert [t.user_attrs[POOL_INDEX] for t in study.trials] == [5, 0, 1, 2]
    assert fresh.calls[0][1] == {5, 0}


def test_entries_outside_the_space_are_never_tried_and_tpe_takes_over_when_spent():
    narrow = SearchSpace(params=[FloatParam(name="x", low=0.0, high=2.5)])
    study = run(PoolSampler(configs=CONFIGS, space=narrow, choose=Recorder(), start=[]), 5,
                objective=lambda t: t.suggest_float("x", 0.0, 2.5))
    assert [t.user_attrs.get(POOL_INDEX) for t in study.trials] == [0, 1, 2, None, None]
    assert [t.user_attrs["sllmbo:source"] for t in study.trials][3:] == ["tpe", "tpe"]
    with pytest.raises(SllmboError, match="no pool configuration"):
        PoolSampler(configs=[{"x": 9.0}], space=narrow, choose=Recorder())


def test_a_failing_chooser_leaves_the_trial_to_tpe():
    def broken(history, taken):
        raise SllmboError("the backend is down")

    study = run(PoolSampler(configs=CONFIGS, space=SPACE, choose=broken, start=[3]), 2)
    assert [t.user_attrs["sllmbo:source"] for t in study.trials] == ["pool", "tpe"]


def test_the_neighbour_chooser_takes_the_nearest_rows_best_untried_entry():
    # Row 0 ranks entries 0 < 1 and likes entry 2; row 1 ranks 1 < 0 and likes entry 3.
    scores = np.array([[1.0, 2.0, 0.5, 3.0], [2.0, 1.0, 3.0, 0.5]])
    regret = np.array([[0.5, 1.0, 0.0, 1.0], [1.0, 0.5, 1.0, 0.0]])
    choose = NeighbourChooser(scores, regret, fallback=[1, 0, 2, 3], neighbours=1)
    assert choose([(0, 10.0), (1, 20.0)], {0, 1}) == 2
    assert choose([(0, 20.0), (1, 10.0)], {0, 1}) == 3
    assert choose([(0, None), (1, 10.0)], {0, 1}) == 2  # a failed fit: the fallback order
    assert choose([(0, 1.0)], {0, 1, 2, 3}) is None


def test_feedback_starts_from_the_portfolio_and_reads_only_the_training_matrix():
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.pool_select import FEEDBACK_START, training_rows
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.samplers import build_sampler

    family = get_family("lightgbm")
    card = build_card(load_task("diabetes"), family, EvalSettings())
    space = family.default_space("regression")
    pool, scores, regret, folio = training_rows("lightgbm", "regression")
    assert scores.shape == regret.shape and scores.shape[1] == len(pool)
    assert np.nanmin(regret) == 0 and np.nanmax(regret) <= 1
    backend = NamingBackend("cAz")
    sampler = build_sampler("llm-feedback", card=card, space=space, backend=backend)
    study = optuna.create_study()
    study.sampler = sampler
    for _ in range(FEEDBACK_START + 2):
        trial = study.ask(space.to_optuna())
        study.tell(trial, float(trial.number))
    tried = [t.user_attrs[POOL_INDEX] for t in study.trials]
    free = [PICK_NAMES.index(n) for n in "cAz" if PICK_NAMES.index(n) not in folio[:2]]
    assert tried == folio[:FEEDBACK_START] + free[:2]
    assert "=0.0" in backend.prompts[0][-1]["content"]  # the history reached the prompt
    with pytest.raises(SllmboError, match="needs an LLM backend"):
        build_sampler("llm-feedback", card=card, space=space)


def test_tune_runs_the_feedback_sampler_end_to_end(tmp_path):
    from sllmbo.tune import tune

    result = tune("diabetes", family="xgboost", sampler="feedback", n_trials=3, n_folds=2,
                  max_rows=200, storage=f"sqlite:///{tmp_path}/s.db", progress=False,
                  score_test=False)
    study = optuna.load_study(study_name=result.study, storage=f"sqlite:///{tmp_path}/s.db")
    assert [t.user_attrs["sllmbo:source"] for t in study.trials] == ["pool"] * 3
    assert len({t.user_attrs[POOL_INDEX] for t in study.trials}) == 3
