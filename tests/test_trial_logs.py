"""Reading trial logs from any Optuna storage: states, damaged rows, retries, bad sources."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from sllmbo.cli import main
from sllmbo.core.errors import StorageError
from sllmbo.data.export import import_export, read_export, write_export
from sllmbo.data.trial_logs import read_trial_logs

optuna.logging.set_verbosity(optuna.logging.WARNING)
DISTS = {"lr": FloatDistribution(1e-4, 1.0, log=True), "depth": IntDistribution(1, 12),
         "kind": CategoricalDistribution(("gbdt", "dart"))}


def fill(storage, name="mixed", card=True):
    """A study with every trial state, a dynamic space, log and categorical params, and a
    heartbeat-retried trial (FAIL #5 retried as #6, which completed)."""
    study = optuna.create_study(storage=storage, study_name=name)
    if card:
        study.set_user_attr("sllmbo:task_card", {"task": "toy"})
    params = {"lr": 0.01, "depth": 3, "kind": "gbdt"}
    study.add_trial(create_trial(params=params, distributions=DISTS, value=1.5))
    study.add_trial(create_trial(params={"lr": 0.1}, distributions={"lr": DISTS["lr"]},
                                 value=1.2))  # a dynamic space: a subset of the params
    study.add_trial(create_trial(params=params, distributions=DISTS, state=TrialState.FAIL))
    study.add_trial(create_trial(params=params, distributions=DISTS, state=TrialState.PRUNED,
                                 intermediate_values={0: 2.0}))
    study.enqueue_trial({"lr": 0.5})  # WAITING
    study.add_trial(create_trial(params={"lr": 0.3, "depth": 5, "kind": "dart"},
                                 distributions=DISTS, state=TrialState.FAIL))
    retry = create_trial(params={"lr": 0.3, "depth": 5, "kind": "dart"}, distributions=DISTS,
                         value=0.9, system_attrs={"failed_trial": 5, "retry_history": [5]})
    study.add_trial(retry)
    study.add_trial(create_trial(params={"lr": 0.3, "depth": 5, "kind": "dart"},
                                 distributions=DISTS, value=0.95,
                                 system_attrs={"failed_trial": 5, "retry_history": [5]}))
    return study


def test_sqlite_reader_keeps_every_state_and_counts_a_retried_trial_once(tmp_path):
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    fill(url)
    (log,) = read_trial_logs(url).studies
    states = [t.state for t in log.trials]
    assert states.count("pruned") == 1 and states.count("waiting") == 1
    assert [t.number for t in log.complete] == [0, 1, 6]  # #7 repeats the retry of #5
    assert log.n_retry_duplicates == 1
    assert log.trials[1].params == {"lr": 0.1} and set(log.trials[1].distributions) == {"lr"}
    assert json.loads(log.trials[0].distributions["kind"])["name"] == "CategoricalDistribution"
    assert log.user_attrs["sllmbo:task_card"] == {"task": "toy"}
    assert all(t.value is None for t in log.trials if t.state != "complete")


def test_a_damaged_row_is_skipped_and_counted_not_fatal(tmp_path):
    path = tmp_path / "logs.db"
    fill(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:  # break one trial's distribution JSON
        db.execute("UPDATE trial_params SET distribution_json = '{broken' "
                   "WHERE param_id = (SELECT MIN(param_id) FROM trial_params)")
    (log,) = read_trial_logs(path).studies
    assert log.n_corrupt == 1
    assert [t.number for t in log.complete] == [1, 6]


def test_a_value_outside_its_distribution_is_a_foreign_row(tmp_path):
    path = tmp_path / "logs.db"
    fill(f"sqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.execute("UPDATE trial_params SET param_value = 99 WHERE param_name = 'depth' "
                   "AND trial_id = 1")
    (log,) = read_trial_logs(path).studies
    assert log.n_corrupt == 1 and 0 not in [t.number for t in log.complete]


def test_reading_never_writes_to_the_storage(tmp_path):
    path = tmp_path / "logs.db"
    fill(f"sqlite:///{path}")
    before = path.read_bytes()
    path.chmod(0o444)
    assert len(read_trial_logs(f"sqlite:///{path}").studies) == 1
    assert path.read_bytes() == before


def test_journal_file_and_name_filter(tmp_path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = tmp_path / "logs.journal"
    storage = JournalStorage(JournalFileBackend(str(path)))
    fill(storage, "alpha")
    fill(storage, "beta", card=False)
    result = read_trial_logs(path, study_filter="al*")
    assert [s.name for s in result.studies] == ["alpha"]
    assert len(result.studies[0].complete) == 3


def test_a_truncated_journal_gives_one_clear_error(tmp_path):
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = tmp_path / "logs.journal"
    fill(JournalStorage(JournalFileBackend(str(path))))
    text = path.read_text()
    path.write_text(text[: len(text) // 2])  # cut mid-line
    try:
        result = read_trial_logs(path)
    except StorageError as err:
        assert str(path) in err.message
    else:  # Optuna may read the intact head: then what it read must be consistent
        assert all(t.state in ("complete", "failed", "pruned", "waiting", "running")
                   for s in result.studies for t in s.trials)


@pytest.mark.parametrize("source", ["sqlite:///{tmp}/missing.db", "{tmp}/nothing-here",
                                    "postgresql://nobody@127.0.0.1:1/none"])
def test_a_storage_that_does_not_open_is_a_clear_error(tmp_path, source, capsys):
    url = source.format(tmp=tmp_path)
    with pytest.raises(StorageError):
        read_trial_logs(url)
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "export", "--storage", url, "--out", str(tmp_path / "x.jsonl.gz")])
    assert exit_info.value.code == 2
    assert "Traceback" not in capsys.readouterr().err


def test_a_folder_reads_every_storage_file_in_it(tmp_path):
    fill(f"sqlite:///{tmp_path / 'a.db'}", "a")
    fill(f"sqlite:///{tmp_path / 'b.db'}", "b")
    (tmp_path / "notes.txt").write_text("not a storage")
    assert sorted(s.name for s in read_trial_logs(tmp_path).studies) == ["a", "b"]


def test_export_round_trip_keeps_order_timestamps_and_imports_back(tmp_path):
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    fill(url)
    (log,) = read_trial_logs(url).studies
    export = tmp_path / "logs.jsonl.gz"
    write_export([log], export)
    first = export.read_bytes()
    write_export([log], export)
    assert export.read_bytes() == first  # deterministic bytes
    (back,) = read_export(export).studies
    assert back.trials == log.trials
    assert list(back.trials[0].params) == ["lr", "depth", "kind"]  # space order survives
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    assert import_export(export, target) == (1, 0)
    assert import_export(export, target) == (0, 1)  # idempotent
    (copy,) = read_trial_logs(target).studies
    assert [(t.number, t.value, t.datetime_start) for t in copy.complete] == [  # numbers kept
        (t.number, t.value, t.datetime_start) for t in log.complete]


def test_a_damaged_export_line_is_skipped_and_reported(tmp_path):
    import gzip

    url = f"sqlite:///{tmp_path / 'logs.db'}"
    fill(url, "a")
    fill(url, "b")
    export = tmp_path / "logs.jsonl.gz"
    write_export(read_trial_logs(url).studies, export)
    lines = gzip.decompress(export.read_bytes()).splitlines()
    export.write_bytes(gzip.compress(lines[0] + b"\n" + lines[1][:50] + b"\n"))
    result = read_export(export)
    assert [s.name for s in result.studies] == ["a"]
    assert "damaged export line" in result.skipped[0][1]


@pytest.mark.postgres
def test_postgresql_storage_reads_like_sqlite(postgres_url):
    fill(postgres_url, "pg")
    (log,) = read_trial_logs(postgres_url, "pg").studies
    assert [t.number for t in log.complete] == [0, 1, 6]


def test_paper_fixture_storages_read_without_migration():
    fixtures = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sllmbo-results"
    if not fixtures.is_dir():
        pytest.skip(f"the SLLMBO paper's studies are not at {fixtures}")
    result = read_trial_logs(fixtures / "optuna_energy_lightgbm.db")
    (log,) = result.studies
    assert log.direction == "minimize" and len(log.complete) >= 40
