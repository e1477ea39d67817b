"""`sllmbo tune`: results, resuming to a target of completed trials, and bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import optuna
import pytest
from optuna.trial import TrialState

from sllmbo.cli import main
from sllmbo.tune import tune

REGRESSION, CLASSIFICATION = "diabetes", "breast_cancer"
#: Completed trials asked of a run that is killed; large enough that the kill lands mid-run.
TARGET = 40


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(args)
    out, err = capsys.readouterr()
    return int(info.value.code or 0), out, err


def completed(url: str, study: str) -> int:
    loaded = optuna.load_study(study_name=study, storage=url)
    return len(loaded.get_trials(states=(TrialState.COMPLETE,)))


def test_tune_writes_card_result_and_resumes_only_the_missing_trials(tmp_path):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    out = tmp_path / "result.json"
    first = tune(REGRESSION, n_trials=3, n_folds=2, storage=url, study_name="s", progress=False)
    assert first.n_complete == 3
    assert first.test_scores["rmse"] > 0
    second = tune(
        REGRESSION, n_trials=5, n_folds=2, storage=url, study_name="s", progress=False, output=out
    )
    study = optuna.load_study(study_name="s", storage=url)
    assert len(study.trials) == 5  # two more, not five more
    assert study.user_attrs["sllmbo:task_card"]["task"] == REGRESSION
    assert study.user_attrs["sllmbo:task_card"]["n_rows"] > 0
    saved = json.loads(out.read_text())
    assert saved["n_complete"] == 5
    assert saved["best_value"] == pytest.approx(second.best_value)
    assert set(saved["best_params"]) == set(study.best_params)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "sampler"),
    # Each task type and each sampler once (a minute each): resuming reads the study, which
    # neither the task nor the sampler changes; the full grid cost the suite two more minutes.
    [(REGRESSION, "tpe"), (CLASSIFICATION, "random")],
)
def test_tune_killed_mid_run_and_restarted_ends_with_the_requested_trials(tmp_path, task, sampler):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    cmd = [
        sys.executable, "-m", "sllmbo", "tune", "--task", task, "--model", "lightgbm",
        "--sampler", sampler, "--n-trials", str(TARGET), "--n-folds", "2", "--storage", url,
        "--study", "killed", "--quiet",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(0.5)
        try:
            if completed(url, "killed") >= 2:
                break
        except KeyError:  # the study is not created yet
            continue
    proc.kill()
    proc.wait()
    done_before = completed(url, "killed")
    assert 2 <= done_before < TARGET, "the run should be killed mid-way"
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    study = optuna.load_study(study_name="killed", storage=url)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == TARGET
    assert states.count(TrialState.RUNNING) <= 1  # at most the trial that was running is lost
    assert len(states) <= TARGET + 1  # nothing finished before the kill was run again


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--task", "no_such_task"], "no_such_task"),
        (["--task", REGRESSION, "--model", "catboost"], "unknown model family 'catboost'"),
        (["--task", REGRESSION, "--sampler", "annealing"], "unknown sampler 'annealing'"),
        (["--task", REGRESSION, "--n-trials", "0"], "--n-trials must be >= 1"),
        ([], "give exactly one of --task NAME or --data PATH"),
        (["--task", REGRESSION, "--metric", "accuracy"], "is for classification"),
        (["--task", REGRESSION, "--storage", "sqlite:////no/such/dir/x.db"], "does not open"),
        (["--task", REGRESSION, "--storage", "nosuchdb://x"], "does not open"),
    ],
)
def test_bad_input_gets_one_message_and_exit_code_2(args, words, capsys):
    code, _, err = run_cli(["tune", "--n-folds", "2", "--quiet", *args], capsys)
    assert code == 2
    assert words in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ('{"learning_rate": {"type": "float", "low": 0.5, "high": 0.1}}', "low must be <= high"),
        ('{"num_leaves": {"type": "int", "low": 0, "high": 10, "log": true}}', "needs low > 0"),
        ('{"momentum": {"type": "float", "low": 0.1, "high": 0.9}}', "not a tunable parameter"),
    ],
)
def test_a_bad_space_file_is_refused_with_the_rule(tmp_path, content, words, capsys):
    path = tmp_path / "space.json"
    path.write_text(content)
    code, _, err = run_cli(["tune", "--task", REGRESSION, "--space-file", str(path)], capsys)
    assert code == 2
    assert words in err


def test_bad_data_files_are_refused(tmp_path, capsys):
    empty = tmp_path / "empty.csv"
    empty.write_text("a,b,y\n")
    code, _, err = run_cli(["tune", "--data", str(empty), "--target", "y"], capsys)
    assert code == 2 and "Traceback" not in err
    code, _, err = run_cli(["tune", "--data", str(empty)], capsys)
    assert code == 2 and "--target" in err


def test_a_study_made_for_another_task_is_refused_and_left_intact(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'runs.db'}"
    tune(REGRESSION, n_trials=2, n_folds=2, storage=url, study_name="mine", progress=False)
    code, _, err = run_cli(
        ["tune", "--task", CLASSIFICATION, "--storage", url, "--study", "mine", "--quiet"], capsys
    )
    assert code == 2
    assert "was made for task 'diabetes'" in err
    assert completed(url, "mine") == 2


def test_a_custom_space_file_is_used_for_every_trial(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(
        "learning_rate: {type: float, low: 0.05, high: 0.06, log: true}\n"
        "n_estimators: {type: int, low: 20, high: 30}\n"  # 20 is below the default space
    )
    result = tune(REGRESSION, n_trials=3, n_folds=2, space_file=path, progress=False)
    assert set(result.best_params) == {"learning_rate", "n_estimators"}
    assert 0.05 <= result.best_params["learning_rate"] <= 0.06
    assert 20 <= result.best_params["n_estimators"] <= 30


@pytest.mark.slow
def test_workers_opening_one_new_sqlite_storage_at_once_all_succeed(tmp_path):
    """Optuna creates tables and stamps the schema version on first open; simultaneous
    workers race there, and the losers must open what the winner made."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    start_at = time.time() + 3.0  # a shared instant, after every interpreter has started
    code = (
        "import sys, time\n"
        "from sllmbo.core.storage import open_storage\n"
        f"time.sleep(max(0.0, {start_at} - time.time()))\n"
        f"open_storage({url!r})\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], errors


def test_an_early_stopped_study_stays_done_until_rerun_with_more_patience(tmp_path):
    from sllmbo.tune import LLMOptions

    url = f"sqlite:///{tmp_path / 'runs.db'}"
    common = dict(n_trials=25, n_folds=2, storage=url, study_name="s", progress=False)
    first = tune(REGRESSION, llm=LLMOptions(patience=2), **common)
    assert first.stop_reason and "patience 2" in first.stop_reason
    assert first.n_complete < 25
    again = tune(REGRESSION, llm=LLMOptions(patience=2), **common)
    assert again.n_complete == first.n_complete  # same rule: nothing more to do
    assert again.stop_reason == first.stop_reason
    longer = tune(REGRESSION, llm=LLMOptions(patience=0), **common)
    assert longer.n_complete == 25
    assert longer.stop_reason is None


def test_only_the_creator_of_a_study_keeps_the_plain_seed_and_initializes(tmp_path):
    import optuna

    from sllmbo.core.storage import open_storage
    from sllmbo.core.taskcard import TaskCard
    from sllmbo.studies import initializer_owner, open_study, process_seed

    card = TaskCard(task="t", task_type="regression", model_family="lightgbm", metric="rmse",
                    direction="minimize", n_rows=10, n_features=2, n_numeric=2,
                    n_categorical=0, missing_share=0.0)
    storage = open_storage(f"sqlite:///{tmp_path / 's.db'}")
    first, second = open_study(storage, "s", card), open_study(storage, "s", card)
    assert (first.created, second.created) == (True, False)
    assert process_seed(7, first) == 7 and process_seed(7, second) != 7
    assert initializer_owner(first)
    # The creator is this live process: the other worker waits for it, then finds its result.
    first.study.set_user_attr("sllmbo:init", {"configs": []})
    assert not initializer_owner(second, wait_s=5, poll_s=0.01)
    # A creator that died before answering is taken over at once.
    dead = open_study(storage, "d", card)
    dead.study.set_user_attr("sllmbo:init_started", {"host": __import__("socket").gethostname(),
                                                     "pid": 2**22 + 12345, "time": 0})
    assert initializer_owner(open_study(storage, "d", card), wait_s=60)
    assert optuna.load_study(study_name="s", storage=storage).user_attrs["sllmbo:task_card"]


def test_a_read_only_storage_is_one_message_and_exit_2(tmp_path, capsys):
    from sllmbo.cli import main

    db = tmp_path / "ro.db"
    with pytest.raises(SystemExit):
        main(["tune", "--task", "diabetes", "--n-trials", "1", "--n-folds", "2", "--quiet",
              "--storage", f"sqlite:///{db}", "--study", "a"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--task", "diabetes", "--n-trials", "3", "--n-folds", "2", "--quiet",
              "--storage", f"sqlite:///file:{db}?mode=ro&uri=true", "--study", "a"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith("error: cannot write: the storage is read-only")
    assert "Traceback" not in err


def test_a_full_database_is_recognized_as_a_full_disk(tmp_path):
    import sqlite3

    from sllmbo.core.errors import StorageError, environment_failure

    connection = sqlite3.connect(tmp_path / "full.db")
    connection.execute("PRAGMA max_page_count = 2")  # SQLite's own SQLITE_FULL, for real
    with pytest.raises(sqlite3.OperationalError) as raised:
        connection.execute("CREATE TABLE t (x TEXT)")
        connection.executemany("INSERT INTO t VALUES (?)", [("x" * 4000,)] * 10)
    mapped = environment_failure(raised.value)
    assert isinstance(mapped, StorageError) and "disk is full" in mapped.message
    assert environment_failure(ValueError("disk is full")) is None  # only the real errors
