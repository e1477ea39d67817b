"""Real worker processes sharing one study (SQLite, PostgreSQL) and a killed run resumed."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
    assert target <= states[TrialState.COMPLETE] <= target + 1  # each worker may overshoot once
    assert states[TrialState.FAIL] == 0
    sources = Counter(t.user_attrs.get(A.SOURCE) for t in study.trials)
    assert None not in sources and sources["initial"] in (2, 4)  # 4: both workers initialized
    assert sources["llm"] + sources["tpe"] >= target - sources["initial"] - 1
    assert study.user_attrs["sllmbo:task_card"]["task"] == "diabetes"


@pytest.mark.slow
def test_two_worker_processes_share_one_sqlite_study(tmp_path):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    workers(url, "shared", 10, "llm-tpe", 2)
    check_shared_study(url, "shared", 10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@pytest.fixture
def postgres_url():
    """A throw-away PostgreSQL server on a free loopback port (skips when none can start)."""
    pytest.importorskip("psycopg2", reason="psycopg2-binary is not installed")
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    # Not under pytest's tmp dir: that one is private to root, and the server runs as postgres.
    root = Path(tempfile.mkdtemp(prefix="sllmbo-pg-"))
    data, port = root / "data", _free_port()
    prefix: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        runuser = shutil.which("runuser")
        if runuser is None or subprocess.run(["id", "postgres"], capture_output=True).returncode:
            pytest.skip("running as root and no 'postgres' user/runuser to start a server")
        shutil.chown(root, "postgres")
        root.chmod(0o755)
        prefix = [runuser, "-u", "postgres", "--"]
    init = subprocess.run([*prefix, initdb, "-D", str(data), "-U", "sllmbo", "--auth=trust"],
                          capture_output=True, text=True)
    if init.returncode:
        pytest.skip(f"initdb failed: {init.stderr.strip()[-300:]}")
    start = subprocess.run(
        [*prefix, pg_ctl, "-D", str(data), "-l", str(root / "log"), "-w", "-t", "30", "-o",
         f"-p {port} -k {root} -c listen_addresses=127.0.0.1", "start"],
        capture_output=True, text=True)
    if start.returncode:
        pytest.skip(f"PostgreSQL did not start: {start.stderr.strip()[-300:]}")
    try:
        yield f"postgresql+psycopg2://sllmbo@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, pg_ctl, "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.postgres
def test_two_worker_processes_share_one_postgresql_study(postgres_url):
    workers(postgres_url, "shared", 10, "llm", 2)
    check_shared_study(postgres_url, "shared", 10)


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
    assert sources["initial"] == 2  # the resume did not initialize again
    assert sources["llm"] >= 8
