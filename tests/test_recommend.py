"""`recommend`: one batched inference, validated, clipped, deduplicated candidates."""

from __future__ import annotations

import json

import pytest
from llm_scripts import VALID, ScriptedBackend
from loop_helpers import CARD, SPACE

from sllmbo.cli import main
from sllmbo.inference.base import Backend, Completion
from sllmbo.recommend import n_requests, recommend, recommend_with

GOOD = {"x": 3.0, "n": 20, "kind": "a"}


class CountingBackend(ScriptedBackend):
    def __init__(self, steps):
        super().__init__(steps)
        self.batches = 0

    def complete(self, requests):
        self.batches += 1
        return super().complete(requests)


def test_one_candidate_is_one_greedy_request():
    backend = CountingBackend([json.dumps(GOOD)])
    rec = recommend_with(backend, CARD, SPACE, 1)
    assert rec.configs == [GOOD] and backend.batches == 1 and len(backend.requests) == 1
    assert backend.requests[0].sampling.temperature == 0.0
    assert backend.requests[0].json_schema == SPACE.to_json_schema()


def test_k_candidates_come_from_one_batch_with_distinct_seeds():
    backend = CountingBackend([VALID])
    rec = recommend_with(backend, CARD, SPACE, 4, seed=7)
    assert backend.batches == 1 and len(backend.requests) == n_requests(4) == 6
    assert [r.sampling.seed for r in backend.requests] == list(range(7, 13))
    assert len(rec.configs) == 4
    assert len({json.dumps(c, sort_keys=True) for c in rec.configs}) == 4
    assert all(SPACE.contains(c) for c in rec.configs)


def test_bad_candidates_are_reported_never_returned():
    steps = [json.dumps(GOOD), json.dumps(GOOD), "not json", json.dumps({"x": 1.0}),
             json.dumps({"x": 99, "n": 0, "kind": "B"}), json.dumps({**GOOD, "kind": "zzz"})]
    rec = recommend_with(ScriptedBackend(steps), CARD, SPACE, 4)
    assert rec.configs == [GOOD, {"x": 10.0, "n": 1, "kind": "b"}]
    assert rec.repairs[1] and len(rec.repairs[1]) == 3
    reasons = "\n".join(rec.rejected)
    assert "duplicate" in reasons and "not valid JSON" in reasons
    assert "missing parameter 'n'" in reasons and "'kind' must be one of" in reasons


class FixedBackend(Backend):
    def complete(self, requests):
        return [Completion(json.dumps({"learning_rate": 0.05, "n_estimators": 300,
                                       "num_leaves": 31, "subsample": 0.8,
                                       "colsample_bytree": 0.8, "reg_alpha": 1e-3,
                                       "reg_lambda": 1e-3, "min_child_samples": 2}), "stop")
                for _ in requests]


def test_python_api_on_a_task():
    configs = recommend("diabetes", model="lightgbm", backend=FixedBackend())
    assert configs[0]["min_child_samples"] == 5  # clipped into the default space


def test_n_must_be_positive():
    from sllmbo.errors import SllmboError

    with pytest.raises(SllmboError, match="--n must be >= 1"):
        recommend_with(ScriptedBackend(), CARD, SPACE, 0)


def test_cli_refuses_bad_input_with_one_message(capsys):
    with pytest.raises(SystemExit) as info:
        main(["recommend", "--task", "no_such_task"])
    assert info.value.code == 2
    assert "no_such_task" in capsys.readouterr().err


def test_recommend_task_takes_only_the_options_it_is_given():
    from llm_scripts import VALID, ScriptedBackend

    from sllmbo.recommend import recommend_task

    rec = recommend_task("diabetes", "lightgbm", 2, ScriptedBackend([VALID]))
    assert len(rec.configs) == 2
