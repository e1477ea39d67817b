"""Instruction data: prompt parity with the loop, held-out refusal, split by task, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
from inference_fixtures import WordTokenizer
from optuna.trial import create_trial

from sllmbo.cli import main
from sllmbo.core.errors import SllmboError, TaskError
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.build import build_dataset, card_lists_heldout
from sllmbo.data.cards import load_card_rules
from sllmbo.data.instructions import (
    BuildOptions,
    history_of,
    prompt_for,
    select_studies,
    validation_tasks,
)
from sllmbo.data.trial_logs import read_trial_logs

optuna.logging.set_verbosity(optuna.logging.WARNING)
FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sllmbo-results"
PAPER_CARDS = Path(__file__).resolve().parents[1] / "data" / "cards" / "sllmbo_paper.yaml"


def card_attrs(task: str, family: str = "lightgbm") -> dict:
    return TaskCard(task=task, task_type="regression", model_family=family, metric="rmse",
                    direction="minimize", n_rows=500, n_features=4, n_numeric=4,
                    n_categorical=0, missing_share=0.0, target_mean=1.0).to_user_attr()


def toy_study(storage: str, name: str, task: str, n: int = 12, card: bool = True) -> None:
    from sllmbo.core.families import get_family

    space = get_family("lightgbm").default_space()
    study = optuna.create_study(storage=storage, study_name=name)
    if card:
        study.set_user_attr("sllmbo:task_card", card_attrs(task))
    sampler = optuna.samplers.RandomSampler(seed=len(name))
    for i in range(n):
        params = {p.name: sampler.sample_independent(study, None, p.name, d)  # type: ignore[arg-type]
                  for p, d in zip(space, space.to_optuna().values(), strict=True)}
        study.add_trial(create_trial(params=params, distributions=space.to_optuna(),
                                     value=10.0 - i * (i % 3 == 0) + 0.01 * i))


def test_llm_study_prompts_are_reproduced_byte_for_byte(tmp_path):
    """Every optimizer prompt that `sllmbo tune --sampler llm` sent is what the builder makes."""
    from llm_scripts import VALID, ScriptedBackend

    from sllmbo.tune import LLMOptions, tune

    url = f"sqlite:///{tmp_path / 'llm.db'}"
    backend = ScriptedBackend([VALID], context_length=900)  # small: the table must shrink
    tune("diabetes", family="lightgbm", sampler="llm", n_trials=14, storage=url, study_name="s",
         n_folds=2, progress=False, backend=backend, llm=LLMOptions(n_initial=2, patience=0))
    optimizer_requests = [r.messages for r in backend.requests
                          if "Suggest the next configuration" in r.messages[-1]["content"]]
    (log,) = read_trial_logs(url).studies
    card = TaskCard.from_mapping(log.user_attrs["sllmbo:task_card"])
    llm_trials = [t for t in log.trials if t.user_attrs.get("sllmbo:source") == "llm"]
    assert len(llm_trials) == len(optimizer_requests) >= 10
    replayed = [prompt_for(log, card, t) for t in llm_trials]
    assert replayed == optimizer_requests
    assert any(t.user_attrs["sllmbo:history_k"] != [10, 5] for t in llm_trials)


def test_history_is_what_finished_before_the_trial_started():
    from datetime import datetime, timedelta

    from sllmbo.data.logged import LoggedTrial, StudyLog

    t0 = datetime(2026, 1, 1)

    def trial(n, start, end, state="complete"):
        return LoggedTrial(n, state, {"x": 1.0}, {}, 1.0 if state == "complete" else None,
                           t0 + timedelta(seconds=start), t0 + timedelta(seconds=end), {})

    log = StudyLog("s", "mem", "minimize", {}, [
        trial(0, 0, 5), trial(1, 0, 9), trial(2, 6, 8, "failed"), trial(3, 8, 10)])
    history, size = history_of(log, log.trials[3])
    assert [t.number for t in history] == [0, 2] and size is None  # #1 was still running


def test_build_splits_by_task_and_refuses_heldout_studies(tmp_path):
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    for task in ("task_a", "task_b", "task_c", "task_d", "concrete_strength"):
        toy_study(url, f"corpus:{task}", task)
    toy_study(url, "optuna_cement_strength_lightgbm", "anything")  # held out by its name
    toy_study(url, "foreign", "x", card=False)
    card = build_dataset([url], tmp_path / "out",
                         options=BuildOptions(validation_share=0.25, top_k=3),
                         tokenizer=WordTokenizer(), progress=False)
    train, val = set(card["tasks"]["train"]), set(card["tasks"]["validation"])
    assert train | val == {"task_a", "task_b", "task_c", "task_d"} and not train & val
    assert len(val) == 1
    assert card["heldout_studies_refused"] == {"concrete_strength": 2}
    reasons = {s["study"]: s["reason"] for s in card["skipped"]}
    assert "no task card" in reasons["foreign"]
    assert "held-out task concrete_strength" in reasons["optuna_cement_strength_lightgbm"]
    rows = [json.loads(line) for split in ("train", "validation")
            for line in (tmp_path / "out" / f"{split}.jsonl").read_text().splitlines()]
    assert {r["kind"] for r in rows} == {"single-shot", "sequential"}
    assert all(r["completion"][0]["role"] == "assistant" for r in rows)
    assert card_lists_heldout(tmp_path / "out" / "data_card.json") == []
    from datasets import load_from_disk

    data = load_from_disk(str(tmp_path / "out" / "dataset"))
    assert set(data) == {"train", "validation"} and len(data["train"]) == card["n_examples"]["train"]
    single = [r for r in rows if r["kind"] == "single-shot" and r["task"] == "task_a"]
    assert [r["rank"] for r in single] == [1, 2, 3]
    assert single[0]["value"] <= single[1]["value"] <= single[2]["value"]


def test_sequential_answers_improve_on_their_history(tmp_path):
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    toy_study(url, "s", "task_a", n=12)
    (log,) = read_trial_logs(url).studies
    (usable,) = select_studies([log], []).usable
    from sllmbo.data.instructions import sequential_examples

    rows = sequential_examples(usable, BuildOptions(), None)
    assert [r["trial"] for r in rows] == [3, 6, 9]  # value 10 - i at every third trial
    assert all("Trials so far:" in r["prompt"][-1]["content"] for r in rows)


def test_examples_over_the_token_budget_are_dropped_and_counted(tmp_path):
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    toy_study(url, "s", "task_a")
    toy_study(url, "t", "task_b")
    full = build_dataset([url], tmp_path / "full", tokenizer=WordTokenizer(), progress=False)
    longest = max(v["max"] for v in full["token_lengths"].values() if v)
    shortest = min(v["min"] for v in full["token_lengths"].values() if v)
    budget = (longest + shortest) // 2
    card = build_dataset([url], tmp_path / "out", options=BuildOptions(max_tokens=budget),
                         tokenizer=WordTokenizer(), progress=False)
    lengths = [v for v in card["token_lengths"].values() if v]
    assert lengths and max(v["max"] for v in lengths) <= budget
    assert card["dropped_over_max_tokens"] + sum(card["n_examples"].values()) == sum(
        full["n_examples"].values())


def test_existing_output_is_refused_unless_overwrite(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'logs.db'}"
    toy_study(url, "s", "task_a")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        main(["data", "build", "--storage", url, "--out", str(out)])
    assert exit_info.value.code == 2 and (out / "keep.txt").read_text() == "mine"
    assert "--overwrite" in capsys.readouterr().err


@pytest.mark.parametrize("entry, problem", [
    ({"model_family": "catboost"}, "unknown model family"),
    ({"metric": "brier"}, "unknown metric"),
    ({"metric": "accuracy"}, "optimized in direction"),
    ({"n_rows": -1}, "not a valid task card"),
    ({"colour": "red"}, "not a valid task card"),
])
def test_bad_cards_yaml_is_one_clear_error(tmp_path, entry, problem):
    import yaml

    fields = {"match": "x*", **{k: v for k, v in card_attrs("x").items() if v is not None},
              **entry}
    path = tmp_path / "cards.yaml"
    path.write_text(yaml.safe_dump({"cards": [fields]}))
    with pytest.raises(TaskError, match=problem):
        load_card_rules(path)


def test_validation_tasks_are_a_fixed_share():
    names = [f"t{i}" for i in range(40)]
    chosen = validation_tasks(names, 0.1, seed=0)
    assert len(chosen) == 4 and chosen == validation_tasks(reversed(names), 0.1, seed=0)
    assert validation_tasks(["only"], 0.1, 0) == set()


def test_paper_studies_build_with_yaml_cards_and_cement_strength_is_refused(tmp_path):
    if not FIXTURES.is_dir():
        pytest.skip(f"the SLLMBO paper's studies are not at {FIXTURES}")
    if not PAPER_CARDS.is_file():
        pytest.skip("data/cards/sllmbo_paper.yaml is not written yet")
    card = build_dataset([str(FIXTURES)], tmp_path / "paper", cards=[PAPER_CARDS],
                         tokenizer=WordTokenizer(), progress=False)
    reasons = [s["reason"] for s in card["skipped"]]
    assert card["heldout_studies_refused"]["concrete_strength"] == 12
    assert sum("held-out" in r for r in reasons) == sum(card["heldout_studies_refused"].values())
    assert card["studies_used"] + len(reasons) == card["studies_read"] == 86
    assert card["by_card_source"] == {"yaml": sum(card["n_examples"].values())}
    assert not any("cement" in t or "concrete" in t for v in card["tasks"].values() for t in v)


def test_unknown_split_is_refused():
    from sllmbo.data import list_tasks

    with pytest.raises(SllmboError, match="split must be one of"):
        list_tasks("test")
