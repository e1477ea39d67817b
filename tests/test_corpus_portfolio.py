"""Building the corpus portfolio (``sllmbo.data.corpus_*``): greedy selection and regret, the
stratified order, candidates from the corpus, held-out refusal, the cache, the command line."""

from __future__ import annotations

import json
import shlex
from datetime import datetime

import numpy as np
import pytest

from sllmbo.core.errors import TaskError
from sllmbo.core.families import FAMILIES
from sllmbo.core.studyinfo import TASK_CARD
from sllmbo.core.taskcard import TaskCard
from sllmbo.data import corpus_candidates as cc
from sllmbo.data import corpus_crosseval as cx
from sllmbo.data import corpus_portfolio as cp
from sllmbo.data import list_tasks
from sllmbo.data.export import write_export
from sllmbo.data.logged import LoggedTrial, StudyLog
from sllmbo.data.pool_select import greedy_portfolio, regret_matrix
from sllmbo.eval.portfolio import load_portfolio

T0 = datetime(2026, 1, 1)
CHEAP = {"learning_rate": 0.1, "n_estimators": 50, "num_leaves": 8, "subsample": 1.0,
         "colsample_bytree": 1.0, "reg_alpha": 1e-8, "reg_lambda": 1e-8, "min_child_samples": 5}


def card(task: str, task_type: str = "regression", family: str = "lightgbm") -> dict:
    metric = "rmse" if task_type == "regression" else "log_loss"
    return TaskCard(task=task, task_type=task_type, model_family=family, metric=metric,
                    direction="minimize", n_rows=100, n_features=3, n_numeric=3,
                    n_categorical=0, missing_share=0.0).to_user_attr()


def trial(number: int, params: dict, value: float | None, state: str = "complete") -> LoggedTrial:
    return LoggedTrial(number=number, state=state, params=params, distributions={},
                       value=value, datetime_start=T0, datetime_complete=T0, user_attrs={})


def study(task: str, trials: list[LoggedTrial], task_type: str = "regression",
          family: str = "lightgbm", name: str | None = None) -> StudyLog:
    return StudyLog(name=name or f"corpus:{task}:{family}:tpe:s0", source="test",
                    direction="minimize", user_attrs={TASK_CARD: card(task, task_type, family)},
                    trials=trials)


def corpus_studies() -> list[StudyLog]:
    better = {**CHEAP, "learning_rate": 0.05, "n_estimators": 60}
    return [
        study("diabetes", [trial(0, CHEAP, 60.0), trial(1, better, 55.0),
                           trial(2, {**CHEAP, "num_leaves": 1000}, 1.0),  # outside the space
                           trial(3, CHEAP, None, state="failed")]),
        study("cpu_tdp", [trial(0, better, 9.0), trial(1, CHEAP, 10.0)]),  # shares a best
        study("email_spam", [trial(0, {**CHEAP, "num_leaves": 16}, 0.2)], "classification"),
        study("email_spam", [trial(0, {**CHEAP, "num_leaves": 12}, 0.1)], "classification",
              name="corpus:email_spam:lightgbm:random:s0"),
        # held out by its name, and by its card under an innocent name
        study("bike_sharing", [trial(0, CHEAP, 1.0)]),
        study("concrete_strength", [trial(0, CHEAP, 1.0)], name="someone:mix:lightgbm"),
        study("diabetes", [trial(0, {"n_estimators": 100, "max_depth": 5, "min_samples_split": 2,
                                     "min_samples_leaf": 1, "max_features": 0.5,
                                     "bootstrap": True}, 50.0)], family="random_forest"),
    ]


# -- greedy selection and regret ----------------------------------------------------------


def test_greedy_order_on_a_hand_made_matrix() -> None:
    regret = np.array([
        [0.0, 1.0, 0.5],  # c0: mean 0.500
        [0.6, 0.0, 0.6],  # c1: mean 0.400
        [0.2, 0.3, 0.2],  # c2: mean 0.233 -> first
        [1.0, 1.0, 0.0],  # c3: mean 0.667
    ])
    # step 2 from (.2, .3, .2): c0 -> (0, .3, .2) .167; c1 -> (.2, 0, .2) .133; c3 -> .167
    # step 3 from (.2, 0, .2): c0 -> (0, 0, .2) and c3 -> (.2, 0, 0) tie at .067; c0 has the
    # lower mean regret alone (0.5 < 0.667), so c0; then c3 brings every task to 0.
    order, curve = greedy_portfolio(regret, size=10)
    assert order == [2, 1, 0, 3]
    assert curve == pytest.approx([0.7 / 3, 0.4 / 3, 0.2 / 3, 0.0])
    assert greedy_portfolio(regret, size=2)[0] == [2, 1]


def test_greedy_continues_from_a_given_start() -> None:
    regret = np.array([
        [0.0, 1.0, 0.5],
        [0.6, 0.0, 0.6],
        [0.2, 0.3, 0.2],
        [1.0, 1.0, 0.0],
    ])
    # from c3 (1, 1, 0): c0 -> .333, c1 -> .2, c2 -> (.2, .3, 0) .167, so c2; then c1
    # (.2, 0, 0) .067 beats c0 (0, .3, 0) .1; c0 last.
    order, curve = greedy_portfolio(regret, size=4, start=[3])
    assert order == [3, 2, 1, 0]
    assert curve[0] == pytest.approx(2 / 3)
    assert greedy_portfolio(regret, size=1, start=[3, 0])[0] == [3]


def test_greedy_ties_go_to_the_earlier_candidate() -> None:
    order, _ = greedy_portfolio(np.array([[0.5, 0.5], [0.5, 0.5], [0.0, 1.0]]), size=3)
    assert order == [0, 2, 1]


def test_regret_is_scaled_by_the_median_and_clipped() -> None:
    scores = np.array([
        [1.0, 5.0, 2.0],
        [2.0, 5.0, 2.0],
        [3.0, 5.0, 2.0],
        [np.nan, 6.0, np.nan],
    ])
    regret = regret_matrix(scores)
    # column 0: best 1, median 2 -> 0, 1, (3-1)/1 clipped to 1; a failed fit is 1
    assert regret[:, 0].tolist() == [0.0, 1.0, 1.0, 1.0]
    # column 1: the median equals the best, so the range scales: 5 -> 0, 6 -> 1
    assert regret[:, 1].tolist() == [0.0, 0.0, 0.0, 1.0]
    # column 2: no spread at all
    assert regret[:, 2].tolist() == [0.0, 0.0, 0.0, 1.0]
    # best 0, median 0.75: 1 and 2 clip to 1, 0.5 is 0.5 / 0.75
    assert regret_matrix(np.array([[0.0], [1.0], [2.0], [0.5]]))[:, 0] == pytest.approx(
        [0.0, 1.0, 1.0, 2 / 3])


def test_stratified_sample_keeps_type_shares_and_is_seeded() -> None:
    types = {f"r{i}": "regression" for i in range(6)} | {f"c{i}": "classification"
                                                          for i in range(4)}
    picked = cc.stratified_sample(types, 5, seed=3)
    assert len(picked) == 5 and picked == sorted(picked)
    assert sum(p.startswith("r") for p in picked) == 3
    order = cc.stratified_order(types, seed=3)
    assert sorted(order) == sorted(types) and order[0].startswith("r")
    assert order[:5] != cc.stratified_order(types, seed=4)[:5]
    assert picked == cc.stratified_sample(types, 5, seed=3)
    assert cc.stratified_sample(types, 50, seed=3) == sorted(types)


# -- candidates and held-out refusal ---------------------------------------------------------


def test_candidates_are_the_best_default_space_configs_of_training_tasks() -> None:
    pool = cc.corpus_candidates(corpus_studies(), "lightgbm")
    assert sorted(pool.by_task) == ["cpu_tdp", "diabetes", "email_spam"]
    assert pool.heldout_refused == {"bike_sharing": 1, "concrete_strength": 1}
    assert pool.n_outside_space == 1
    (best,) = pool.by_task["diabetes"]
    assert best.value == 55.0 and best.config["learning_rate"] == 0.05
    (bc,) = pool.by_task["email_spam"]  # the best over both of its studies
    assert bc.config["num_leaves"] == 12 and bc.study.endswith(":random:s0")
    two = cc.corpus_candidates(corpus_studies(), "lgbm", top_k=2).by_task["diabetes"]
    assert [c.value for c in two] == [55.0, 60.0]
    for cands in pool.by_task.values():
        FAMILIES["lightgbm"].default_space().validate(cands[0].config)
    rf = cc.corpus_candidates(corpus_studies(), "random_forest")
    assert list(rf.by_task) == ["diabetes"]


def test_a_configuration_shared_by_tasks_is_one_candidate() -> None:
    pool = cc.corpus_candidates(corpus_studies(), "lightgbm")
    chosen, sources = cc.select_candidates(pool, 10, seed=0)
    assert len(chosen) == 2
    assert sorted(len(s) for s in sources.values()) == [1, 2]
    assert ["cpu_tdp", "diabetes"] in sources.values()
    assert len(cc.select_candidates(pool, 1, seed=0)[0]) == 1
    # top-k 2 adds CHEAP, the second best of both regression tasks: once
    chosen, sources = cc.select_candidates(cc.corpus_candidates(corpus_studies(), "lightgbm",
                                                                top_k=2), 10, seed=0)
    assert len(chosen) == 4 and len({cc.config_key(c.config) for c in chosen}) == 4


def test_heldout_evaluation_tasks_are_refused() -> None:
    studies = corpus_studies()
    snapshot = cc.Corpus("test", "", studies)
    for name in ("bike_sharing", "concrete", "cement_strength_lgbm"):
        with pytest.raises(TaskError, match="held-out"):
            cp.build_portfolio(snapshot, "lightgbm", tasks=["diabetes", name], cache_dir=None)
    with pytest.raises(TaskError, match="held-out"):
        cx.evaluate_cell("auto_mpg", "lightgbm", CHEAP, 100, 2, 0)


def test_default_evaluation_tasks_are_training_tasks_apart_from_the_sources(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []

    def fake(task: str, family: str, config: dict, *_: object) -> dict:
        calls.append(task)
        return {"score": float(len(task) + config["num_leaves"]), "seconds": 0.0, "error": None}

    monkeypatch.setattr(cx, "evaluate_cell", fake)
    settings = cx.PortfolioSettings(candidates=5, max_tasks=7, size=5)
    record = cp.build_portfolio(cc.Corpus("test", "", corpus_studies()), "lightgbm",
                                settings=settings, cache_dir=None)
    prov = record["provenance"]
    training = {t.name for t in list_tasks("train")}
    assert len(prov["evaluation_tasks"]) == 7 and set(prov["evaluation_tasks"]) <= training
    assert not set(prov["evaluation_tasks"]) & set(prov["candidate_tasks"])
    assert sorted(set(calls)) == prov["evaluation_tasks"]
    assert prov["heldout_studies_refused"] == {"bike_sharing": 1, "concrete_strength": 1}
    assert [e["rank"] for e in record["portfolio"]] == [1, 2]
    assert cx.PortfolioSettings().for_family("mlp").max_tasks == cx.DEFAULT_MAX_TASKS["mlp"]


# -- a real build, its cache, loading ------------------------------------------------------


def test_build_write_load_and_resume(tmp_path) -> None:
    corpus = tmp_path / "trials.jsonl.gz"
    write_export(corpus_studies(), corpus)
    settings = cx.PortfolioSettings(candidates=5, size=5, max_rows=60, n_folds=2)
    tasks = ["galton_child_height", "pima_diabetes_test"]
    cache = tmp_path / "cache"
    record = cp.build_portfolio(corpus, "lightgbm", settings=settings, tasks=tasks,
                                cache_dir=cache, command="test")
    prov = record["provenance"]
    assert prov["evaluated_now"] == 4 and prov["from_cache"] == 0 and prov["failed_fits"] == 0
    assert prov["corpus_trials"] == 10 and prov["evaluation_tasks"] == tasks
    assert len(prov["corpus_sha256"]) == 64 and prov["command"] == "test"
    assert all(len(e["cv_scores"]) == 2 for e in record["portfolio"])
    path = cp.write_portfolio(record, tmp_path / "out")
    assert path.name == "lightgbm.json"
    configs = load_portfolio("lgbm", tmp_path / "out")
    assert len(configs) == 2
    assert {c["num_leaves"] for c in configs} == {8, 12}
    again = cp.build_portfolio(corpus, "lightgbm", settings=settings, tasks=tasks,
                               cache_dir=cache)
    assert again["provenance"]["evaluated_now"] == 0
    assert again["provenance"]["from_cache"] == 4
    assert again["portfolio"] == record["portfolio"]
    # a line cut off by a kill is ignored, the rest is still used
    with open(cache / "lightgbm.jsonl", "a") as handle:
        handle.write('{"key": "abc", "sco')
    assert len(cx.ScoreCache(cache, "lightgbm").entries) == 4


def test_cli_reports_bad_input(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cp.main(["--corpus", str(tmp_path / "missing.jsonl.gz")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cp.main(["--families", "svm"]) == 2
    assert "unknown model family" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl.gz"
    write_export([], empty)
    assert cp.main(["--corpus", str(empty), "--out", str(tmp_path), "--no-progress"]) == 2
    assert "no usable lightgbm study" in capsys.readouterr().err




def test_cli_builds_a_portfolio_and_records_its_command(tmp_path) -> None:
    corpus = tmp_path / "trials.jsonl.gz"
    write_export(corpus_studies(), corpus)
    out = tmp_path / "out"
    argv = ["--corpus", str(corpus), "--out", str(out), "--families", "lightgbm",
            "--max-tasks", "2", "--max-rows", "60", "--n-folds", "2",
            "--cache", str(tmp_path / "cache"), "--no-progress"]
    assert cp.main(argv) == 0
    record = json.loads((out / "lightgbm.json").read_text())
    assert record["format"] == cp.FORMAT
    assert record["provenance"]["command"] == shlex.join([*cp.PROG.split(), *argv])
    assert len(record["provenance"]["evaluation_tasks"]) == 2
    assert load_portfolio("lightgbm", out) == [e["config"] for e in record["portfolio"]]
