"""Real worker processes sharing one study (SQLite, PostgreSQL) and a killed run resumed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sllmbo.samplers import attrs as A

WORKER = str(Path(__file__).parent / "loop_worker.py")


def workers(url: str, study: str, n_trials: int, sampler: str, n: int) -> None:
    procs = [subprocess.Popen([sys.executable, WORKER, url, study, str(n_trials), sampler],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for _ in range(n)]
    for proc in procs:
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err[-2000:]


def check_shared_study(url: str, study_name: str, target: int) -> None:
    study = optuna.load_study(study_name=study_name, storage=url)
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == target  # a trial started in a tie is pruned unrun
    assert states[TrialState.FAIL] == 0
    sources = Counter(t.user_attrs.get(A.SOURCE) for t in study.trials
                      if t.state != TrialState.PRUNED)
    # One initializer, not one each: its configurations (2 asked; the scripted answer, seeded
    # per process, can clip two into one) are enqueued once.
    n_init = len(study.user_attrs["sllmbo:init"]["configs"])
    assert None not in sources and sources["initial"] == n_init and 1 <= n_init <= 2
    assert sources["llm"] + sources["tpe"] >= target - sources["initial"] - 1
    assert study.user_attrs["sllmbo:task_card"]["task"] == "diabetes"


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers(url, "shared", 10, "llm-tpe", 2)
    check_shared_study(url, "shared", 10)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_worker_processes_share_one_postgresql_study(postgres_url):
    workers(postgres_url, "shared", 10, "llm", 2)
    check_shared_study(postgres_url, "shared", 10)


@pytest.mark.slow
def test_workers_started_together_draw_different_configurations(tmp_path):
    url = f"sqlite:///{tmp_path / 'seeds.db'}"
    workers(url, "seeds", 8, "random", 2)
    study = optuna.load_study(study_name="seeds", storage=url)
    drawn = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(drawn) >= 8 and len(set(drawn)) == len(drawn)


def completed(url: str, name: str) -> int:
    try:
        study = optuna.load_study(study_name=name, storage=url)
    except KeyError:
        return 0
    return len(study.get_trials(states=(TrialState.COMPLETE,)))


@pytest.mark.slow
def test_llm_run_killed_mid_way_resumes_to_the_target(tmp_path):
    url = f"sqlite:///{tmp_path / 'killed.db'}"
    cmd = [sys.executable, WORKER, url, "killed", "12", "llm"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and completed(url, "killed") < 4:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = completed(url, "killed")
    assert 4 <= before < 12, "the run should be killed mid-way"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    study = optuna.load_study(study_name="killed", storage=url)
    states = Counter(t.state for t in study.trials)
    assert states[TrialState.COMPLETE] == 12
    assert states[TrialState.RUNNING] <= 1
    sources = Counter(t.user_attrs.get(A.SOURCE) for t in study.trials
                      if t.state == TrialState.COMPLETE)
    # The resume did not initialize again: the initial trials are the initializer's
    # configurations, enqueued once (2 asked; the scripted answer, seeded per process by
    # hash(), can clip two into one, as check_shared_study says).
    n_init = len(study.user_attrs["sllmbo:init"]["configs"])
    assert 1 <= n_init <= 2 and sources["initial"] == n_init
    assert sources["llm"] >= 8
