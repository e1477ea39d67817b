"""Inputs and storage (issue [16/16], items 5-11): every bad input is one message and exit 2,
nothing is left behind, and what a user reads says what happened."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import optuna
import pytest
from cli_helpers import fails, runs

PAGE = 4096


def _optuna_db(path: Path, n_trials: int = 30) -> bytes:
    """A real Optuna SQLite storage with one study of ``n_trials`` completed trials."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="s")
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_int("n", 1, 9),
                   n_trials=n_trials)
    return path.read_bytes()


def _page_of(data: bytes, table: str) -> int:
    """The first page (0-based) of ``table``'s b-tree in a SQLite image."""
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        copy = Path(folder) / "copy.db"
        copy.write_bytes(data)
        with sqlite3.connect(copy) as db:
            (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = ?",
                                 (table,)).fetchone()
    return root - 1


def _garble(data: bytes, page: int) -> bytes:
    out = bytearray(data)
    out[page * PAGE:(page + 1) * PAGE] = b"\x5a" * PAGE
    return bytes(out)


def _truncated(path: Path) -> None:
    data = _optuna_db(path)
    path.write_bytes(data[:len(data) // 3])


def _zeroed(path: Path) -> None:
    path.write_bytes(b"\0" * len(_optuna_db(path)))


def _garbled_studies(path: Path) -> None:
    data = _optuna_db(path)
    path.write_bytes(_garble(data, _page_of(data, "studies")))


def _garbled_trials(path: Path) -> None:
    data = _optuna_db(path)
    path.write_bytes(_garble(data, _page_of(data, "trial_params")))


def _journal_as_sqlite(path: Path) -> None:
    path.write_text('{"op_code": 0, "worker_id": "w", "study_name": "s"}\n' * 3)


def _not_optuna(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE inventory (item TEXT, count INTEGER)")
        db.execute("INSERT INTO inventory VALUES ('apples', 3)")


BAD_SQLITE = [
    ("truncated", _truncated, "does not open: database disk image is malformed"),
    ("zeroed", _zeroed, "does not open: file is not a database"),
    ("garbled studies page", _garbled_studies, "damaged"),
    ("garbled trials page", _garbled_trials, "damaged"),
    ("journal file", _journal_as_sqlite, "does not open: file is not a database"),
    ("not Optuna's", _not_optuna, "not an Optuna storage (its tables: inventory)"),
]

COLLECT = ["data", "collect", "--tasks", "diabetes", "--families", "lightgbm",
           "--tpe-trials", "1", "--random-trials", "0", "--quiet"]


def _matrix(tmp_path: Path) -> list[str]:
    return ["data", "matrix", "--datasets", "diabetes", "--families", "lightgbm",
            "--out", str(tmp_path / "m.csv.gz"), "--workers", "1"]


@pytest.mark.parametrize("command", ["collect", "matrix"])
@pytest.mark.parametrize("name, write, words", BAD_SQLITE, ids=[c[0] for c in BAD_SQLITE])
def test_data_collect_and_matrix_refuse_a_bad_sqlite_file_alike(command, name, write, words,
                                                                tmp_path, capsys):
    db = tmp_path / "store.db"
    write(db)
    before = db.read_bytes()
    argv = COLLECT if command == "collect" else _matrix(tmp_path)
    err = fails([*argv, "--storage", f"sqlite:///{db}"], capsys)
    assert words in err
    assert db.read_bytes() == before  # no Optuna tables added to someone else's database
    assert not (tmp_path / "m.csv.gz").exists()


@pytest.mark.parametrize("url, words", [
    ("notaurl", "does not open: Could not parse SQLAlchemy URL"),
    ("postgresql+psycopg://u:secret@127.0.0.1/db", "does not open: Failed to import DB access module"),
])
@pytest.mark.parametrize("command", ["collect", "matrix"])
def test_data_collect_and_matrix_refuse_a_url_that_does_not_open(command, url, words, tmp_path,
                                                                 capsys):
    argv = COLLECT if command == "collect" else _matrix(tmp_path)
    err = fails([*argv, "--storage", url], capsys)
    assert words in err and "secret" not in err


def test_a_url_without_its_driver_says_to_install_it(capsys):
    err = fails([*COLLECT, "--storage", "postgresql+psycopg://u@127.0.0.1/db"], capsys)
    assert "install the database driver" in err


@pytest.mark.parametrize("flag, value, words", [
    ("--families", "catboost", "unknown model family 'catboost'"),
    ("--datasets", "nosuch", "unknown training dataset 'nosuch'"),
    ("--datasets", "concrete_strength", "held-out tasks are kept for evaluation only"),
])
def test_data_matrix_refuses_unknown_families_and_datasets(flag, value, words, tmp_path,
                                                           capsys):
    argv = ["data", "matrix", "--storage", f"sqlite:///{tmp_path / 'm.db'}",
            "--out", str(tmp_path / "m.csv.gz"), flag, value]
    err = fails(argv, capsys)
    assert words in err and "rebuild" not in err
    assert not (tmp_path / "m.db").exists()


# ----------------------------------------------------------------- 6: data build / export

@pytest.mark.parametrize("command", ["build", "export"])
def test_a_garbled_trials_page_is_one_message_for_data_build_and_export(command, tmp_path,
                                                                       capsys, monkeypatch):
    import sllmbo.data.build as build

    monkeypatch.setattr(build, "load_tokenizer", lambda path=None: pytest.fail("tokenizer"))
    db = tmp_path / "store.db"
    _garbled_trials(db)
    out = tmp_path / ("out" if command == "build" else "out.jsonl.gz")
    err = fails(["data", command, "--storage", str(db), "--out", str(out)]
                + (["--quiet"] if command == "build" else []), capsys)
    assert "is damaged" in err and "malformed" in err
    assert not out.exists()


# ----------------------------------------------------------------- 7: eval --seeds is a count

def test_eval_seeds_beyond_the_bound_is_refused_at_once_as_a_count(tmp_path):
    """In a subprocess with a deadline: unbounded, the plan grew past 11 GB in 4 minutes."""
    import subprocess
    import sys

    out = tmp_path / "eval"
    done = subprocess.run([sys.executable, "-m", "sllmbo", "eval", "--seeds", "99999999999",
                           "--methods", "tpe", "--out", str(out), "--quiet"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert "--seeds is how many seeds each run is repeated with" in done.stderr
    assert "got 99999999999" in done.stderr and "sllmbo tune --seed VALUE" in done.stderr
    assert not out.exists()


def test_an_eval_plan_makes_its_runs_one_at_a_time(tmp_path):
    """A plan of 10**11 seeds (the Python API has no CLI bound) answers questions about its
    first runs without building the others."""
    import itertools

    from sllmbo.eval.harness import plan_eval
    from sllmbo.eval.runs import TaskRef
    from sllmbo.eval.suites import get_suite
    from sllmbo.tune import LLMOptions

    suite = get_suite("smoke").override(methods=("tpe",), seeds=10**11)
    plan = plan_eval(suite, [TaskRef(name="diabetes")], tmp_path, LLMOptions(), None,
                     methods_given=True)
    first = list(itertools.islice(plan.iter_jobs(), 3))
    assert [(j.method, j.seed) for j in first] == [("tpe", 0), ("tpe", 1), ("tpe", 2)]


def test_the_lazy_plan_keeps_the_order_of_the_built_one(tmp_path):
    from sllmbo.eval.harness import plan_eval
    from sllmbo.eval.methods import get
    from sllmbo.eval.runs import TaskRef
    from sllmbo.eval.suites import get_suite
    from sllmbo.tune import LLMOptions

    suite = get_suite("smoke").override(methods=("llm-tpe-base", "tpe", "defaults"), seeds=2)
    plan = plan_eval(suite, [TaskRef(name="diabetes"), TaskRef(name="auto_mpg")], tmp_path,
                     LLMOptions(), None, methods_given=True)
    order = {m: i for i, m in enumerate(plan.methods)}
    expected = sorted(plan.report_jobs, key=lambda j: (get(j.method).uses_llm, order[j.method]))
    assert plan.jobs == expected and len(expected) == 2 * len(suite.families) * sum(
        suite.seeds_of(m) for m in suite.methods)
    assert [j.method for j in plan.jobs][-1] == "llm-tpe-base"  # cheapest methods first


# ----------------------------------------------------------------- 9: data pool --out DIR

def test_data_pool_refuses_a_folder_as_out_and_leaves_nothing_behind(tmp_path, capsys):
    folder = tmp_path / "pools"
    folder.mkdir()
    err = fails(["data", "pool", "--out", str(folder)], capsys)
    assert f"--out {folder} is a folder; it must be a file path" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pools"]
    assert list(folder.iterdir()) == []


def test_a_pool_write_that_fails_leaves_no_temporary_file(tmp_path):
    from sllmbo.data.matrix import POOL_FILE
    from sllmbo.data.pool import read_pools, write_pools

    folder = tmp_path / "pool"
    folder.mkdir()
    with pytest.raises(IsADirectoryError):
        write_pools(list(read_pools(POOL_FILE).values()), folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]


# ----------------------------------------------------------------- 8: recommend's caps

@pytest.fixture
def no_model(monkeypatch):
    """Options are checked before any model loads: loading one fails the test."""
    import sllmbo.inference.factory as factory

    def forbidden(*args, **kwargs):
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(factory, "create_backend", forbidden)


@pytest.mark.parametrize("extra, words", [
    (["--n", "1000"], "--n must be at most 64 with --decode consensus (each candidate is one "
                      "more generated answer), got 1000"),
    (["--n", "65", "--decode", "greedy"], "--n must be at most 64 with --decode greedy"),
    (["--samples", "100000"], "--samples must be at most 64"),
    (["--decode", "pick", "--n", "1000"], "--decode pick chooses from the committed pool, "
                                          "which has 60 lightgbm entries; got --n 1000"),
    (["--decode", "score", "--n", "61"], "which has 60 lightgbm entries; got --n 61"),
])
def test_recommend_caps_its_work_before_loading_a_model(extra, words, capsys, no_model):
    err = fails(["recommend", "--task", "diabetes", "--model", "lightgbm", *extra], capsys)
    assert words in err


def test_recommend_pick_of_the_whole_pool_is_allowed(capsys, no_model):
    """The cap is the pool's size, not one less: --n 60 reaches the model."""
    with pytest.raises(AssertionError, match="a model was loaded"):
        runs(["recommend", "--task", "diabetes", "--decode", "pick", "--n", "60"])


# ----------------------------------------------------------------- 10: workers stop at the target

def test_a_trial_running_elsewhere_counts_towards_the_target():
    """Another worker holds one running trial and finishes it late: this worker runs only
    what is missing with it, waits for it, and the study ends with the target exactly."""
    import threading

    from sllmbo.core.errors import SllmboNote
    from sllmbo.tune import optimize_until

    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(storage=storage, study_name="shared")
    elsewhere = optuna.load_study(study_name="shared", storage=storage)
    held = elsewhere.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    finisher = threading.Timer(1.0, lambda: elsewhere.tell(held, 0.5))
    finisher.start()
    try:
        with pytest.warns(SllmboNote, match="waiting for 1 trial running in another worker"):
            optimize_until(study, lambda t: t.suggest_float("x", 0, 1), target=3)
    finally:
        finisher.join()
    states = [t.state for t in study.get_trials()]
    assert states.count(optuna.trial.TrialState.COMPLETE) == 3 and len(states) == 3


@pytest.mark.slow
def test_two_tune_workers_on_one_sqlite_study_end_at_the_target(tmp_path):
    import subprocess
    import sys

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    argv = [sys.executable, "-m", "sllmbo", "tune", "--task", "diabetes", "--sampler", "tpe",
            "--n-trials", "4", "--n-folds", "2", "--storage", url, "--study", "s", "--quiet"]
    procs = [subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
    states = [t.state.name for t in optuna.load_study(study_name="s", storage=url).trials]
    assert states.count("COMPLETE") == 4
    assert set(states) <= {"COMPLETE", "PRUNED"}  # a trial started in a tie is pruned unrun


def test_of_two_trials_started_in_a_tie_the_later_is_pruned_unrun():
    """Both workers passed the count at once: the trial numbered after the target's last
    one stops its worker and is pruned before the objective runs."""
    from sllmbo.tune import _unless_surplus

    study = optuna.create_study()
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=2)
    elsewhere = study.ask()  # trial 2: the other worker's, running
    ran: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        ran.append(trial.number)
        return trial.suggest_float("x", 0, 1)

    study.optimize(_unless_surplus(objective, target=3), n_trials=5)
    assert ran == [] and study.trials[3].state == optuna.trial.TrialState.PRUNED
    assert len(study.trials) == 4  # the worker stopped at the pruned trial
    study.tell(elsewhere, 0.5)


# ----------------------------------------------------------------- 11: small things a user sees

def test_an_empty_report_names_no_empty_task_list(tmp_path):
    out = tmp_path / "zs"
    runs(["eval", "--suite", "zero-shot", "--report-only", "--out", str(out), "--quiet"])
    header = (out / "report.md").read_text().splitlines()[2]
    assert header.startswith("0 tasks (no run finished) x ") and "()" not in header


def test_the_base_model_alone_is_converted_not_merged(embedded_model, tmp_path):
    """``--adapter none`` on llama.cpp: the note says what happens (no adapter is merged)."""
    from sllmbo.inference.merged_cache import gguf_file
    from sllmbo.inference.models import base_gguf

    notes: list[str] = []
    gguf_file(base_gguf(embedded_model), None, home=tmp_path, on_note=notes.append)
    assert len(notes) == 1 and notes[0].startswith("converting the model to a Q8_0 GGUF")
    assert "adapter" not in notes[0]


def test_evals_openai_help_example_stops_only_for_want_of_a_server(tmp_path, capsys):
    import shlex

    from inference_fixtures import free_port

    from sllmbo.cli.evaluation import EXAMPLES

    example = next(b for b in EXAMPLES.split("\n\n") if "--backend openai" in b)
    argv = shlex.split(example.replace("\\\n", " "))
    assert argv[:2] == ["sllmbo", "eval"]
    argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{free_port()}") for a in argv[1:]]
    err = fails([*argv, "--out", str(tmp_path / "eval")], capsys)
    assert "the LLM server cannot answer" in err and "data_card" not in err


def test_eval_refuses_an_adapter_with_the_openai_backend_in_words(tmp_path, capsys):
    err = fails(["eval", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                 "--adapter", "sllmbo-lora", "--out", str(tmp_path / "eval")], capsys)
    assert "--adapter sllmbo-lora cannot be used with --backend openai" in err
    assert "data_card" not in err and not (tmp_path / "eval").exists()


def test_loading_an_adapter_drops_only_the_kernel_trust_note(tiny_model, tmp_path, monkeypatch,
                                                             caplog):
    """bitsandbytes (imported by peft) logs, through the ``kernels`` package, that it skips
    a publisher trust check (CPUs with AVX512-BF16, offline): noise under --backend
    transformers. After an adapter load that one line is gone; the logger's others stay."""
    import logging

    hf_hub = pytest.importorskip("kernels._internals.hf_hub")
    from inference_fixtures import build_lora_adapter

    from sllmbo.inference.transformers_backend import TransformersBackend

    monkeypatch.setenv("SLLMBO_MERGED_CACHE", "0")
    adapter = build_lora_adapter(tiny_model, tmp_path / "lora")
    TransformersBackend(tiny_model, adapter_path=adapter, device="cpu").close()
    with caplog.at_level(logging.WARNING, logger="kernels._internals.hf_hub"):
        hf_hub._check_trust_remote_code("kernels-community/quantization-bitsandbytes",
                                        local_files_only=True, trust_remote_code=False)
        logging.getLogger("kernels._internals.hf_hub").warning("another kernels warning")
    assert [r.getMessage() for r in caplog.records] == ["another kernels warning"]
