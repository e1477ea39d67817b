"""``gbdt-rank``: a LightGBM scorer trained on a hand-made matrix ranks the entry it was taught
first, and the sampler tries pool entries by the shipped scorer, then hands over to TPE."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import get_family
from sllmbo.core.objective import suggest
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.matrix import POOL_FILE
from sllmbo.data.pool import Pool, read_pools
from sllmbo.data.rank_targets import RowTargets
from sllmbo.samplers import registry
from sllmbo.samplers.gbdt_rank import GbdtScorer, build_gbdt_rank
from sllmbo.samplers.pool import POOL_INDEX
from sllmbo.training.gbdt_rank import FitOptions, train_family

optuna.logging.set_verbosity(optuna.logging.WARNING)
CARD = {"n_rows": 800, "n_features": 8, "n_numeric": 8, "n_categorical": 0,
        "missing_share": 0.0, "n_classes": 3, "minority_share": 0.2}
BEST = 3


def small_pool() -> Pool:
    """The committed LightGBM pool's first six entries (the defaults first)."""
    return Pool("lightgbm", read_pools(POOL_FILE)["lightgbm"].configs[:6])


def taught_rows(n: int = 16) -> list[RowTargets]:
    """Rows on which entry ``BEST`` is always 30-40% better than the defaults and the others
    are within 10% of them, either way."""
    rng = np.random.default_rng(0)
    rows = []
    for d in range(n):
        ratio = rng.uniform(-0.1, 0.1, 6)
        ratio[0] = 0.0
        ratio[BEST] = np.log(rng.uniform(0.6, 0.7))
        scores = np.exp(ratio)
        rows.append(RowTargets(f"made{d}@800", "lightgbm", dict(CARD), scores,
                               np.full(6, 0.01), np.log(scores), 0))
    return rows


@pytest.mark.parametrize("kind", ["bins", "regress", "rank"])
def test_a_scorer_taught_to_prefer_one_entry_picks_it_first(kind):
    pool, rows = small_pool(), taught_rows()
    options = FitOptions(kind=kind, n_rounds=30, min_data_in_leaf=3, threads=1,
                         n_histories=4, candidates=None)
    scorer = GbdtScorer(train_family(rows, "lightgbm", pool, options), pool, rows)
    assert scorer.choose(CARD, [], list(range(6))) == BEST  # single-shot: empty history
    history = [(0, 1.0), (1, 1.05)]
    assert scorer.choose(CARD, history, [2, 3, 4, 5]) == BEST
    if kind != "rank":
        bins = scorer.bins(CARD, history, [2, 3, 4, 5])
        assert bins.shape == (4, 10) and np.allclose(bins.sum(axis=1), 1.0)


def test_a_model_of_another_pool_is_refused():
    pool, rows = small_pool(), taught_rows(4)
    entry = train_family(rows, "lightgbm", pool, FitOptions(n_rounds=2, min_data_in_leaf=3,
                                                            threads=1, n_histories=1))
    other = Pool("lightgbm", pool.configs[:5])
    with pytest.raises(SllmboError, match="another pool"):
        GbdtScorer(entry, other, rows)


def card(direction: str = "minimize") -> TaskCard:
    return TaskCard(task="made", task_type="classification", model_family="lightgbm",
                    metric="log_loss" if direction == "minimize" else "accuracy",
                    direction=direction, **CARD)


def test_the_sampler_tries_distinct_pool_entries_then_tpe_and_resumes():
    space = get_family("lightgbm").default_space("classification")
    spec = registry.get("gbdt-rank")

    def objective(trial: optuna.Trial) -> float:
        return float(suggest(trial, space)["learning_rate"])

    study = optuna.create_study()
    study.sampler = spec.build(card=card(), space=space, seed=0, backend=None, pool_trials=3)
    study.optimize(objective, n_trials=2)
    study.sampler = spec.build(card=card(), space=space, seed=0, backend=None, pool_trials=3)
    study.optimize(objective, n_trials=2)  # a new process: the history is the study's
    sources = [t.user_attrs["sllmbo:source"] for t in study.trials]
    assert sources == ["pool", "pool", "pool", "tpe"]
    indices = [t.user_attrs[POOL_INDEX] for t in study.trials[:3]]
    assert len(set(indices)) == 3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"card": card("maximize")}, "error metrics"),
    ({"card": card(), "temperature": 0.5}, "takes no options"),
    ({"card": card(), "acquisition": "ucb"}, "unknown acquisition")])
def test_bad_settings_are_one_clear_error(kwargs, match):
    space = get_family("lightgbm").default_space("classification")
    with pytest.raises(SllmboError, match=match):
        build_gbdt_rank(space=space, **kwargs)


def test_the_regressors_target_keeps_a_disaster_worse_than_a_bad_entry():
    from sllmbo.training.gbdt_rank import clipped_target

    target = np.log(np.array([0.5, 2.0, 5.0, 50.0, np.nan, 0.01]))
    y = clipped_target(target, cap=10.0)
    assert y[2] > y[1] + 0.9  # 5x stays 5x, not 2x
    assert y[3] == y[4] == pytest.approx(np.log(10.0))  # beyond the cap, and a failed fit
    assert y[5] == pytest.approx(np.log(0.3)) and y[0] == pytest.approx(np.log(0.5))
    with pytest.raises(ValueError, match="above 1"):
        FitOptions(target_cap=1.0)


def test_validation_holds_the_suites_ratio_portfolio_per_subtype():
    from sllmbo.eval.rank_validation import baseline_methods, replay

    binary = {**CARD, "n_classes": 2}
    rows = []
    for d in range(6):  # entry 1: 20% better on binary rows, 5x worse on multiclass ones
        for card_, one in ((binary, 0.8), (CARD, 5.0)):
            scores = np.array([1.0, one, 0.95, 0.97, 1.02, 1.05])
            rows.append(RowTargets(f"made{d}-{card_['n_classes']}@800", "lightgbm", dict(card_),
                                   scores, np.full(6, 0.01), np.log(scores), 0))
    methods = baseline_methods(rows, "lightgbm")
    multiclass, two_class = rows[1], rows[0]
    assert replay(two_class, methods["portfolio-ratio"](two_class), 1) == [1]
    assert replay(multiclass, methods["portfolio-ratio"](multiclass), 1) == [2]
    assert replay(multiclass, methods["defaults-first-ratio"](multiclass), 2) == [0, 2]
