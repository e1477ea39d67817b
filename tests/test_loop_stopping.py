"""Early stopping counts completed trials since the last real improvement."""

from __future__ import annotations

import optuna
import pytest

from sllmbo.samplers import registry
from sllmbo.stopping import EarlyStopping

optuna.logging.set_verbosity(optuna.logging.WARNING)


def play(values, direction="minimize", **options):
    study = optuna.create_study(direction=direction)
    stop = EarlyStopping(**options)
    values = iter(values)
    study.optimize(lambda t: next(values), n_trials=100, callbacks=[stop])
    return study


@pytest.mark.parametrize(
    "values, direction, patience, min_delta, n_run",
    [
        ([5, 4, 4, 4, 4] + [0] * 20, "minimize", 3, 0.0, 5),  # ties are not improvements
        ([5, 4, 3, 2, 1, 1, 1, 1] + [0] * 20, "minimize", 3, 0.0, 8),
        ([1, 2, 3, 3, 3] + [9] * 20, "maximize", 2, 0.0, 5),
        # 1% gains are below min_delta=0.05: stale from the first trial on.
        ([100, 99, 98, 97] + [0] * 20, "minimize", 3, 0.05, 4),
        ([100, 90, 89.9, 89.8, 89.7] + [0] * 20, "minimize", 3, 0.05, 5),
        ([0.0, -0.5, -0.6] + [5] * 20, "minimize", 2, 0.5, 4),  # best == 0: absolute change
    ],
)
def test_study_stops_after_patience_trials_without_improvement(
    values, direction, patience, min_delta, n_run
):
    study = play(values, direction, patience=patience, min_delta=min_delta)
    assert len(study.trials) == n_run
    assert "early stopping" in study.user_attrs["sllmbo:stop_reason"]
    assert f"patience {patience}" in study.user_attrs["sllmbo:stop_reason"]


def test_failed_and_pruned_trials_do_not_count_toward_patience():
    study = optuna.create_study()
    stop = EarlyStopping(patience=2)
    study.optimize(lambda t: 1.0, n_trials=1, callbacks=[stop])
    for _ in range(4):
        study.optimize(lambda t: (_ for _ in ()).throw(optuna.TrialPruned()), n_trials=1,
                       callbacks=[stop])
    assert "sllmbo:stop_reason" not in study.user_attrs
    assert len(study.trials) == 5


def test_a_resumed_study_keeps_counting_from_storage(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"
    study = optuna.create_study(storage=url, study_name="s")
    study.optimize(lambda t: 1.0, n_trials=3)  # 2 stale so far, no callback yet
    again = optuna.load_study(study_name="s", storage=url)
    again.optimize(lambda t: 1.0, n_trials=10, callbacks=[EarlyStopping(patience=3)])
    assert len(again.trials) == 4


def test_paper_defaults_and_bad_settings():
    defaults = {name: registry.get(name).patience for name in registry.names()}
    assert {n: p for n, p in defaults.items() if p} == {"llm": 15, "llm-tpe": 5}
    with pytest.raises(ValueError, match="patience"):
        EarlyStopping(patience=0)
    with pytest.raises(ValueError, match="min_delta"):
        EarlyStopping(patience=3, min_delta=-1)
