"""SQLite storages take the write lock when a transaction begins, so two workers cannot both
pop the same enqueued trial (Optuna's ``SELECT ... FOR UPDATE`` is a no-op on SQLite)."""

from __future__ import annotations

import sqlite3
from concurrent.futures import ProcessPoolExecutor

import optuna
import pytest

from sllmbo.core.storage import open_storage
from sllmbo.data.matrix import _storage as matrix_storage


def _locked_by_other_writer(db_path: str) -> bool:
    other = sqlite3.connect(db_path, timeout=0, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        return False
    except sqlite3.OperationalError as err:
        assert "locked" in str(err)
        return True
    finally:
        other.close()


@pytest.mark.parametrize("opener", [open_storage, matrix_storage], ids=["tune", "matrix"])
def test_a_reading_transaction_holds_the_write_lock(tmp_path, opener):
    db = tmp_path / "s.db"
    storage = opener(f"sqlite:///{db}")
    with storage.engine.connect() as conn, conn.begin():
        conn.exec_driver_sql("SELECT count(*) FROM trials").fetchall()
        # A pop reads a WAITING trial here and writes RUNNING next: nobody may slip between.
        assert _locked_by_other_writer(str(db))
    assert not _locked_by_other_writer(str(db))  # released at the end of the transaction


def _pop_all(url: str, name: str) -> list[int]:
    storage = open_storage(url)
    study = optuna.load_study(study_name=name, storage=storage)
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        if "x" not in trial.params:  # the queue is drained
            study.stop()
            raise optuna.TrialPruned()
        ran.append(trial.suggest_int("x", 0, 1000))
        return 0.0

    study.optimize(objective)
    return ran


def test_workers_popping_one_queue_run_each_enqueued_trial_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'q.db'}"
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="q", storage=open_storage(url))
    x_range = {"x": optuna.distributions.IntDistribution(0, 1000)}
    study.add_trials([optuna.trial.create_trial(state=optuna.trial.TrialState.WAITING,
                                                params={"x": x}, distributions=x_range)
                      for x in range(60)])  # as the matrix queues its cells
    with ProcessPoolExecutor(max_workers=3) as pool:
        runs = [f.result() for f in [pool.submit(_pop_all, url, "q") for _ in range(3)]]
    done = sorted(x for ran in runs for x in ran)
    assert done == list(range(60))
    states = [t.state for t in optuna.load_study(study_name="q", storage=url).trials
              if "x" in t.params]
    assert states == [optuna.trial.TrialState.COMPLETE] * 60
