"""The evaluation harness: best-within-budget from one run, resume of a killed evaluation,
held-out refusal, the CLI's bad input, and the smoke suite end to end on the embedded model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.eval.harness import check_adapter_heldout, fill_regret, plan_eval, run_eval
from sllmbo.eval.metrics import TrialRow
from sllmbo.eval.runs import RunLog, library_defaults
from sllmbo.eval.suites import SUITES, Suite, parse_budgets, parse_names
from sllmbo.tune import LLMOptions

REPO = Path(__file__).resolve().parents[1]


def small_suite(**changes) -> Suite:
    base = Suite(name="test", tasks=("auto_mpg",), families=("lightgbm",),
                 methods=("defaults", "random", "tpe"), budgets=(1, 2, 3), seeds=1,
                 n_folds=2, max_rows=150)
    return base.override(**changes)


def test_records_read_the_best_configuration_within_each_budget() -> None:
    trials = [TrialRow(0, 5.0, {"a": 0}, fit_s=1.0), TrialRow(1, 3.0, {"a": 1}, fit_s=1.0),
              TrialRow(2, 4.0, {"a": 2}, fit_s=1.0, llm_s=2.0, llm_calls=1, llm_tokens=50)]
    log = RunLog("k", "t", "lightgbm", "llm", 0, "rmse", "minimize", trials,
                 test_scores={1: {"rmse": 5.5}, 2: {"rmse": 3.3}, 3: {"rmse": 3.3}})
    records = log.records([1, 2, 3, 5])
    assert [r["cv_score"] for r in records] == [5.0, 3.0, 3.0, 3.0]
    assert [r["config"] for r in records] == [{"a": 0}, {"a": 1}, {"a": 1}, {"a": 1}]
    assert [r["test_score"] for r in records][:3] == [5.5, 3.3, 3.3]
    assert [r["n_trials"] for r in records] == [1, 2, 3, 3]
    assert records[2]["wall_s"] == 5.0 and records[2]["llm_calls"] == 1
    assert records[1]["llm_s"] == 0.0 and records[2]["llm_s"] == 2.0
    assert RunLog.from_dict(json.loads(json.dumps(log.to_dict()))) == log


def test_regret_is_normalized_per_task_and_family() -> None:
    recs = [{"task": "a", "family": "f", "direction": "minimize", "test_score": s,
             "regret": None} for s in (2.0, 4.0, 3.0)]
    recs.append({"task": "b", "family": "f", "direction": "maximize", "test_score": 0.9,
                 "regret": None})
    fill_regret(recs)
    assert [r["regret"] for r in recs] == [0.0, 1.0, 0.5, 0.0]


def test_options_are_parsed_with_clear_errors() -> None:
    assert parse_budgets("5,1,2,2") == (1, 2, 5)
    for bad in ("", "0,1", "a"):
        with pytest.raises(SllmboError):
            parse_budgets(bad)
    assert parse_names("tpe,defaults", ("defaults", "tpe"), "--methods") == ("tpe", "defaults")
    with pytest.raises(SllmboError, match="unknown gpt"):
        parse_names("tpe,gpt", ("defaults", "tpe"), "--methods")


def test_library_defaults_are_read_from_the_libraries() -> None:
    from sllmbo.core.families import get_family
    from sllmbo.data import load_task

    task = load_task("auto_mpg")
    lgb = library_defaults(task, get_family("lightgbm"), None)
    assert lgb["num_leaves"] == 31 and lgb["learning_rate"] == 0.1
    assert lgb["n_estimators"] == 100 and lgb["min_child_samples"] == 20
    xgb = library_defaults(task, get_family("xgboost"), None)
    assert xgb["max_depth"] == 6 and xgb["learning_rate"] == pytest.approx(0.3)
    assert xgb["n_estimators"] == 100 and xgb["reg_lambda"] == 1.0


def test_default_suite_keeps_its_16_heldout_tasks_and_all_methods() -> None:
    from sllmbo.data.splits import HELDOUT
    from sllmbo.eval.suites import DEFAULT_SUITE_TASKS

    plan = plan_eval(SUITES["default"], None, "/tmp/unused", LLMOptions(), None, False)
    assert {t.name for t in plan.tasks} == set(DEFAULT_SUITE_TASKS) < set(HELDOUT)
    assert len(DEFAULT_SUITE_TASKS) == 16
    # Without an adapter the fine-tuned methods are left out, and said so.
    assert set(plan.skipped_methods) == {"single-shot", "llm", "llm-tpe"}
    assert "llm-tpe-base" in plan.methods and "portfolio" in plan.methods
    with pytest.raises(SllmboError, match="fine-tuned adapter"):
        plan_eval(SUITES["default"], None, "/tmp/unused", LLMOptions(), None, True)


def test_an_adapter_trained_on_an_evaluated_task_is_refused(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4}))
    with pytest.raises(SllmboError, match=r"no data_card\.json"):
        check_adapter_heldout(adapter, ["auto_mpg"])
    (adapter / "data_card.json").write_text(json.dumps(
        {"tasks": {"train": ["diabetes", "cement_strength"], "validation": []}}))
    check_adapter_heldout(adapter, ["auto_mpg", "diabetes_progression"])
    with pytest.raises(SllmboError, match="diabetes"):
        check_adapter_heldout(adapter, ["diabetes"])
    # An alias of a held-out task in the card is the held-out task.
    with pytest.raises(SllmboError, match="concrete_strength"):
        check_adapter_heldout(adapter, ["concrete_strength"])
    # The CLI stops with exit 2 before running anything.
    done = subprocess.run(
        [sys.executable, "-m", "sllmbo", "eval", "--suite", "smoke", "--adapter", str(adapter),
         "--task", "diabetes", "--out", str(tmp_path / "out"), "--quiet"],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "trained on data from diabetes" in done.stderr
    assert not (tmp_path / "out" / "studies.db").exists()


@pytest.mark.parametrize("argv, message", [
    (["--suite", "nope"], "unknown suite"),
    (["--task", "no_such_task"], "unknown task"),
    (["--budgets", "0,5"], "--budgets"),
    (["--methods", "tpe,gpt4"], "unknown gpt4"),
    (["--data", "x.csv"], "--target"),
    (["--rerun"], "--rerun needs --methods"),
    (["--rerun", "--methods", "tpe", "--report-only"], "--rerun needs --methods"),
])
def test_bad_eval_options_exit_2(argv: list[str], message: str, tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "sllmbo", "eval", *argv, "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr


def test_runs_resume_and_finished_runs_are_not_rerun(tmp_path: Path) -> None:
    suite = small_suite(methods=("defaults", "tpe", "tpe-seeded", "portfolio"))
    plan = plan_eval(suite, None, tmp_path, LLMOptions(), None, False)
    first = run_eval(plan, progress=False)
    assert len(first) == 4 * 3
    assert {r["method"] for r in first} == {"defaults", "tpe", "tpe-seeded", "portfolio"}
    for r in first:
        assert r["test_score"] is not None and 0.0 <= r["regret"] <= 1.0
    assert (tmp_path / "report.md").read_text().startswith("# Evaluation")
    for png in ("regret_vs_budget.png", "regret_by_task.png", "time_to_tpe.png"):
        assert (tmp_path / png).stat().st_size > 1000
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    seeded = optuna.load_study(study_name="eval:auto_mpg:lightgbm:tpe-seeded:s0",
                               storage=storage)
    assert seeded.trials[0].params["num_leaves"] == 31  # the library defaults go first
    before = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    again = run_eval(plan, progress=False)
    after = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    assert before == after and again == first

    # A larger plan reported before it runs: only finished runs, compared on common cells.
    wider = plan_eval(small_suite(methods=("defaults", "tpe", "tpe-seeded", "portfolio",
                                           "random")), None, tmp_path, LLMOptions(), None,
                      False)
    partial = run_eval(wider, progress=False, run=False)
    assert partial == first  # nothing ran: no `random` records
    report = (tmp_path / "report.md").read_text()
    assert "**Partial results**" in report and "`random` 0" in report
    assert optuna.get_all_study_summaries(storage).__len__() == len(before)

    # Running one more method reports it beside every method that finished before.
    one = plan_eval(small_suite(methods=("random",)), None, tmp_path, LLMOptions(), None, True,
                    report_methods=("defaults", "tpe", "tpe-seeded", "portfolio", "random"))
    records = run_eval(one, progress=False)
    assert {r["method"] for r in records} == {"defaults", "tpe", "tpe-seeded", "portfolio",
                                             "random"}
    def scores(rs):
        return sorted((r["task"], r["family"], r["method"], r["budget"], r["seed"],
                       r["test_score"]) for r in rs if r["method"] != "random")

    assert scores(records) == scores(first)  # read back, not run again
    assert "| random |" in (tmp_path / "report.md").read_text()

    # --rerun forgets a method's runs and studies, then runs them again (same seed: same
    # scores, from a new study).
    tpe_key = "eval:auto_mpg:lightgbm:tpe:s0"
    started = optuna.load_study(study_name=tpe_key, storage=storage).trials[0].datetime_start
    only_tpe = plan_eval(small_suite(methods=("tpe",)), None, tmp_path, LLMOptions(), None, True,
                         report_methods=("defaults", "tpe", "tpe-seeded", "portfolio", "random"))
    rerun = run_eval(only_tpe, progress=False, rerun=True)
    study = optuna.load_study(study_name=tpe_key, storage=storage)
    assert len(study.trials) == 3 and study.trials[0].datetime_start > started
    assert sorted(r["test_score"] for r in rerun if r["method"] == "tpe") == \
        sorted(r["test_score"] for r in first if r["method"] == "tpe")


def test_a_killed_eval_resumes_with_nothing_lost(tmp_path: Path) -> None:
    argv = [sys.executable, "-m", "sllmbo", "eval", "--suite", "smoke", "--task", "auto_mpg",
            "--methods", "tpe,random", "--budgets", "1,60", "--n-folds", "2",
            "--out", str(tmp_path), "--quiet"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            n = sum(s.n_trials for s in optuna.get_all_study_summaries(storage))
        except Exception:  # the database is still being created
            continue
        if n >= 3:
            break
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}
    assert partial and not (tmp_path / "results.json").exists()
    assert sum(partial.values()) < 120  # killed mid-way
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr
    records = json.loads((tmp_path / "results.json").read_text())
    assert {(r["method"], r["budget"]) for r in records} == {
        ("tpe", 1), ("tpe", 60), ("random", 1), ("random", 60)}
    for summary in optuna.get_all_study_summaries(storage):
        study = optuna.load_study(study_name=summary.study_name, storage=storage)
        complete = [t for t in study.trials if t.state.name == "COMPLETE"]
        assert len(complete) == 60  # resumed to the target, not restarted
        # Trials finished before the kill are kept, not re-run: the only other trial is the
        # one the kill interrupted (RUNNING until Optuna's heartbeat fails it).
        assert len(study.trials) - len(complete) <= 1


def test_smoke_suite_end_to_end_on_the_embedded_model(embedded_model: Path,
                                                      tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sllmbo", "eval", "--suite", "smoke", "--out", str(tmp_path),
         "--quiet"], capture_output=True, text=True, timeout=1500, cwd=REPO)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads((tmp_path / "results.json").read_text())
    smoke = SUITES["smoke"]
    assert len(records) == len(smoke.tasks) * len(smoke.methods) * len(smoke.budgets)
    methods = {r["method"] for r in records}
    assert methods == set(smoke.methods)
    for r in records:
        for key in ("task", "family", "method", "budget", "seed", "metric", "cv_score",
                    "test_score", "regret", "wall_s", "llm_s", "llm_calls", "llm_tokens"):
            assert key in r
    llm = [r for r in records if r["method"] in ("single-shot-base", "llm-tpe-base")]
    assert all(r["llm_calls"] >= 1 and r["llm_tokens"] > 0 and r["llm_s"] > 0 for r in llm)
    assert all(r["llm_calls"] == 0 for r in records if r["method"] in ("tpe", "random"))
    # Best-within-budget never gets worse with more budget (CV score, minimized here).
    by_run: dict[tuple, list] = {}
    for r in records:
        by_run.setdefault((r["task"], r["method"], r["seed"]), []).append(r)
    for runs in by_run.values():
        cvs = [r["cv_score"] for r in sorted(runs, key=lambda r: r["budget"])
               if r["cv_score"] is not None]
        assert cvs == sorted(cvs, reverse=runs[0]["direction"] == "minimize")
    report = (tmp_path / "report.md").read_text()
    assert "Wins / ties / losses against `tpe`" in report and "single-shot-base" in report


def test_cost_table_sums_the_wall_time_of_the_runs_at_a_budget() -> None:
    from sllmbo.eval.report import cost_table

    def record(method: str, budget: int, wall: float) -> dict:
        return {"method": method, "budget": budget, "wall_s": wall, "fit_s": wall / 2,
                "llm_s": 0.0, "llm_calls": 0, "llm_tokens": 0}

    records = [record("tpe", 30, 60.0), record("tpe", 30, 120.0), record("tpe", 30, 300.0),
               record("tpe", 5, 999.0)]
    header, _, row = cost_table(records, ["tpe"], 30)
    assert header.endswith("| runs | summed wall min |")
    assert row == "| tpe | 120.0 | 60.0 | 0.0 | 0 | 0 | 3 | 8.0 |"
