"""[13/16]'s baselines as their authors run them: the log-ratio portfolio and knn per subtype,
TPE and GP whose random start ends with the enqueued configurations, the hybrid's TPE half
configured the same way, and each new method run end to end by the harness."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

from sllmbo.data.pool_select import (
    log_ratio_matrix,
    portfolio,
    ratio_knn,
    ratio_portfolio,
    subtype_of,
)

# -- the log-ratio portfolio and knn -------------------------------------------------------


def _card(n_classes: int | None, n_rows: int = 500) -> dict:
    return {"n_rows": n_rows, "n_features": 10, "n_numeric": 10, "n_classes": n_classes}


def disaster_matrix() -> tuple[dict, pd.DataFrame]:
    """Six binary rows where ``fast`` is a little better than ``safe``, two multiclass rows
    where ``fast``'s log-loss is five times ``safe``'s, and ``meh`` a little worse everywhere."""
    cards, rows = {}, {}
    for i in range(6):
        cards[f"bin{i}@500"] = _card(2)
        rows[f"bin{i}@500"] = {"fast": 0.30, "safe": 0.33, "meh": 0.34}
    for i in range(2):
        cards[f"multi{i}@500"] = _card(7)
        rows[f"multi{i}@500"] = {"fast": 2.50, "safe": 0.50, "meh": 0.52}
    return cards, pd.DataFrame.from_dict(rows, orient="index")


def test_a_configuration_ruinous_on_multiclass_is_not_the_multiclass_portfolios_first() -> None:
    cards, scores = disaster_matrix()
    assert ratio_portfolio(cards, scores, "multiclass", 2)[0] == "safe"
    assert ratio_portfolio(cards, scores, "binary", 1) == ["fast"]
    # [9/12]'s portfolio (clipped regret, one list for all classification) puts it first.
    assert portfolio(cards, scores, "classification", 1) == ["fast"]


def test_the_log_ratio_is_unclipped_and_a_failed_fit_is_the_columns_worst() -> None:
    loss = log_ratio_matrix(np.array([[1.0, 2.0], [5.0, np.nan], [2.0, 4.0]]))
    assert loss[:, 0] == pytest.approx([0.0, math.log(5), math.log(2)])
    assert loss[:, 1] == pytest.approx([0.0, math.log(2), math.log(2)])  # NaN: the worst
    assert (log_ratio_matrix(np.array([[np.nan], [np.nan]])) == 0).all()


@pytest.mark.parametrize("n_classes, subtype", [(None, "regression"), (0, "regression"),
                                                (2, "binary"), (3, "multiclass")])
def test_subtypes_from_the_class_count(n_classes: int | None, subtype: str) -> None:
    assert subtype_of({"n_classes": n_classes}) == subtype


def test_ratio_knn_reads_the_nearest_variants_of_the_query_subtype_only() -> None:
    cards, scores = disaster_matrix()
    cards["query@500"] = _card(7)  # the query's own dataset is in the matrix: skipped
    scores.loc["query@500"] = {"fast": 0.1, "safe": 9.0, "meh": 9.0}
    assert ratio_knn(_card(7), cards, scores, 1, exclude_dataset="query")[0] == "safe"
    assert ratio_knn(_card(2), cards, scores, 1, exclude_dataset="query") == ["fast"]
    assert ratio_knn(_card(None), cards, scores, 3) == []  # no regression rows


# -- warm-started samplers -----------------------------------------------------------------

def _objective(trial: optuna.Trial) -> float:
    x = trial.suggest_float("x", -5.0, 5.0)
    y = trial.suggest_float("y", 1e-3, 10.0, log=True)
    return (x - 1.0) ** 2 + math.log(y) ** 2


def _run(sampler: optuna.samplers.BaseSampler, n_trials: int) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=sampler)
    for config in ({"x": 0.0, "y": 1.0}, {"x": 2.0, "y": 0.5}, {"x": -1.0, "y": 3.0}):
        study.enqueue_trial(config)
    study.optimize(_objective, n_trials=n_trials)
    return study


def _model_based(trial: optuna.trial.FrozenTrial, prefix: str) -> bool:
    """Whether the sampler's model proposed ``trial`` jointly: Optuna's TPE and GP record
    their relative (model-based) proposal in the trial's system attributes; a random
    startup trial has none."""
    return any(key.startswith(f"{prefix}:relative_params") for key in trial.system_attrs)


def test_a_warm_tpes_first_trial_after_the_enqueued_ones_is_a_tpe_suggestion() -> None:
    from sllmbo.eval.methods import get

    warm = _run(get("tpe-warm").build(seed=0, n_enqueued=3), 5)
    assert not any(_model_based(t, "tpe") for t in warm.trials[:3])  # the enqueued ones
    assert _model_based(warm.trials[3], "tpe") and _model_based(warm.trials[4], "tpe")
    # Optuna's default TPE samples at random up to its 10th trial, seeds or not.
    plain = _run(optuna.samplers.TPESampler(seed=0), 5)
    assert not _model_based(plain.trials[3], "tpe")


def test_a_warm_gps_first_trial_after_the_enqueued_ones_is_a_gp_suggestion() -> None:
    pytest.importorskip("torch")
    from sllmbo.eval.methods import get

    warm = _run(get("gp-warm").build(seed=0, n_enqueued=3), 4)
    assert _model_based(warm.trials[3], "gp")
    cold = _run(get("gp").build(seed=0, n_enqueued=0), 4)
    assert not _model_based(cold.trials[3], "gp")


def test_the_hybrids_warm_tpe_half_suggests_jointly_after_the_enqueued_ones() -> None:
    from llm_scripts import ScriptedBackend

    from sllmbo.core.space import FloatParam, SearchSpace
    from sllmbo.eval.methods.optimizers import tpe_startup_options
    from sllmbo.samplers import LLMTPESampler

    space = SearchSpace((FloatParam("x", -5.0, 5.0), FloatParam("y", 1e-3, 10.0, log=True)))
    backend = ScriptedBackend()

    def hybrid(**tpe: object) -> optuna.Study:  # p_llm=0: every sampled trial is TPE's
        return _run(LLMTPESampler(backend=backend, space=space, seed=0, p_llm=0.0,
                                  tpe_options=tpe or None), 4)

    warm = hybrid(**tpe_startup_options(3))
    assert warm.trials[3].user_attrs["sllmbo:source"] == "tpe"
    assert _model_based(warm.trials[3], "tpe")
    assert not _model_based(hybrid().trials[3], "tpe")  # the paper's half: random, per param
    assert backend.requests == []
    assert tpe_startup_options(0)["n_startup_trials"] == 1  # TPE needs one finished trial


# -- the new methods through the harness ---------------------------------------------------

@pytest.mark.slow
def test_each_new_baseline_runs_end_to_end_and_records_its_inputs(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from sllmbo.eval.harness import plan_eval, run_eval
    from sllmbo.eval.store import EvalStore
    from sllmbo.eval.suites import Suite
    from sllmbo.tune import LLMOptions

    methods = ("portfolio-ratio", "knn-ratio", "tpe-warm", "gp-warm")
    suite = Suite(name="test", tasks=("auto_mpg",), families=("lightgbm",), methods=methods,
                  budgets=(1, 4), seeds=1, n_folds=2, max_rows=150,
                  portfolio_source="matrix", budget_caps={"portfolio-ratio": 1})
    plan = plan_eval(suite, None, tmp_path, LLMOptions(), None, False)
    records = run_eval(plan, progress=False)
    got = {(r["method"], r["budget"]) for r in records if r["test_score"] is not None}
    assert got == {("portfolio-ratio", 1), ("knn-ratio", 1), ("knn-ratio", 4),
                   ("tpe-warm", 1), ("tpe-warm", 4), ("gp-warm", 1), ("gp-warm", 4)}
    store = EvalStore(tmp_path / "eval.sqlite")
    warm = store.run("eval:auto_mpg:lightgbm:tpe-warm:s0")
    assert len(warm["inputs"]) == 3 and warm["trials"][0]["params"] == warm["inputs"][0]
    assert len(store.run("eval:auto_mpg:lightgbm:knn-ratio:s0")["inputs"]) == 4
    assert len(store.run("eval:auto_mpg:lightgbm:portfolio-ratio:s0")["inputs"]) == 1
    study = optuna.load_study(study_name="eval:auto_mpg:lightgbm:gp-warm:s0",
                              storage=f"sqlite:///{tmp_path / 'studies.db'}")
    assert _model_based(study.trials[3], "gp")


# -- other libraries' optimizers, ask/tell ------------------------------------------------

def test_smac_asks_its_initial_design_first_then_its_own_model() -> None:
    pytest.importorskip("smac")
    from sllmbo.core.space import FloatParam, IntParam, SearchSpace
    from sllmbo.eval.methods.asktell import SMACSampler

    space = SearchSpace((FloatParam("x", -5.0, 5.0), FloatParam("y", 1e-3, 10.0, log=True),
                         IntParam("n", 10, 1000, log=True)))
    design = [{"x": 0.5, "y": 2.0, "n": 100}, {"x": -2.0, "y": 0.1, "n": 20}]
    sampler = SMACSampler(space=space, initial_design=design, n_trials=5, seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: _objective(t) + 0 * t.suggest_int("n", 10, 1000, log=True), 5)
    assert [t.params for t in study.trials[:2]] == design
    assert all(t.user_attrs["sllmbo:source"] == "smac" for t in study.trials)
    assert len({tuple(t.params.values()) for t in study.trials}) == 5
    assert all(isinstance(t.params["n"], int) for t in study.trials)


@pytest.mark.slow
def test_the_quantile_surrogate_transfers_from_other_tasks_and_is_seeded() -> None:
    pytest.importorskip("syne_tune")
    from sllmbo.core.space import FloatParam, SearchSpace
    from sllmbo.eval.methods.asktell import QuantileSurrogateSampler

    space = SearchSpace((FloatParam("x", -5.0, 5.0), FloatParam("y", 1e-3, 10.0, log=True)))
    grid = [{"x": x, "y": y} for x in np.linspace(-5, 5, 11) for y in (0.01, 0.1, 1.0, 10.0)]
    # Every training task is best near x = 3: the surrogate's draws go there.
    tasks = {f"t{i}": (grid, [abs(c["x"] - 3.0) + 0.1 * i for c in grid]) for i in range(4)}

    def first_x(seed: int) -> list[float]:
        sampler = QuantileSurrogateSampler(space=space, evaluations=tasks, seed=seed,
                                           cache_key="test")
        return [sampler.ask()["x"] for _ in range(5)]

    xs = first_x(0)
    assert np.median(xs) == pytest.approx(3.0, abs=1.5)
    assert first_x(0) == xs  # a cached fit, copied: the same draws for the same seed


@pytest.mark.slow
def test_the_warm_hybrid_ties_tpes_start_to_the_initializers_configurations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``llm-tpe-warm`` through its method: the initializer enqueues 3 configurations (a
    scripted model answers), TPE (p_llm = 0) proposes jointly from the 4th trial on."""
    from llm_scripts import VALID, ScriptedBackend

    from sllmbo.eval.methods import get
    from sllmbo.eval.methods import llm as llm_methods
    from sllmbo.eval.runs import RunContext, RunJob, RunSettings, TaskRef
    from sllmbo.eval.store import EvalStore
    from sllmbo.tune import LLMOptions

    monkeypatch.setattr(llm_methods, "shared_backend", lambda *a: ScriptedBackend([VALID]))
    options = LLMOptions(n_initial=3, init="initializer", p_llm=0.0, patience=0)
    settings = RunSettings(out_dir=str(tmp_path), max_budget=5, n_folds=2, max_rows=150,
                           protocol=None, llm=options, adapter="unused")
    job = RunJob(TaskRef(name="auto_mpg"), "lightgbm", "llm-tpe-warm", 0)
    log = get("llm-tpe-warm").run(RunContext(job, settings, EvalStore(settings.store_path)))
    assert len(log.trials) == 5
    study = optuna.load_study(study_name=job.key, storage=settings.storage)
    first = [t for t in study.trials if "fixed_params" in t.system_attrs]
    assert len(first) == 3 and study.trials[3].user_attrs["sllmbo:source"] == "tpe"
    assert _model_based(study.trials[3], "tpe")
