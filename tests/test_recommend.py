"""`recommend`: one batched inference, validated, clipped, deduplicated candidates."""

from __future__ import annotations

import json

import pytest
from llm_scripts import VALID, ScriptedBackend
from loop_helpers import CARD, SPACE

from sllmbo.cli import main
from sllmbo.inference.base import Backend, Completion
from sllmbo.recommend import consensus_config, n_requests, recommend, recommend_with

GOOD = {"x": 3.0, "n": 20, "kind": "a"}


class CountingBackend(ScriptedBackend):
    def __init__(self, steps):
        super().__init__(steps)
        self.batches = 0

    def complete(self, requests):
        self.batches += 1
        return super().complete(requests)


def test_greedy_decode_is_one_greedy_request():
    backend = CountingBackend([json.dumps(GOOD)])
    rec = recommend_with(backend, CARD, SPACE, 1, decode="greedy")
    assert rec.configs == [GOOD] and backend.batches == 1 and len(backend.requests) == 1
    assert backend.requests[0].sampling.temperature == 0.0
    assert backend.requests[0].json_schema == SPACE.to_json_schema()
    assert rec.consensus_of == 0


def test_k_candidates_come_from_one_batch_with_distinct_seeds():
    backend = CountingBackend([VALID])
    rec = recommend_with(backend, CARD, SPACE, 4, seed=7, decode="greedy")
    assert backend.batches == 1 and len(backend.requests) == n_requests(4) == 5
    assert [r.sampling.seed for r in backend.requests] == list(range(7, 12))
    assert len(rec.configs) == 4
    assert len({json.dumps(c, sort_keys=True) for c in rec.configs}) == 4
    assert all(SPACE.contains(c) for c in rec.configs)


def test_a_shortfall_is_asked_again_with_new_seeds():
    # 30 candidates: a first batch of 33, of which 9 repeat an earlier answer.
    distinct = [_answer(float(i % 10) + 1.0, 1 + i, "a") for i in range(60)]
    steps = distinct[:24] + [distinct[0]] * 9 + distinct[24:]
    backend = CountingBackend(steps)
    rec = recommend_with(backend, CARD, SPACE, 30, seed=5, decode="greedy")
    assert n_requests(30) == 33 and backend.batches == 2 and len(rec.configs) == 30
    assert [r.sampling.seed for r in backend.requests] == list(range(5, 5 + 33 + 6 + 3))
    assert sum("duplicate" in r for r in rec.rejected) == 9


def test_top_ups_end_when_the_backend_keeps_failing():
    backend = CountingBackend(["junk"])
    rec = recommend_with(backend, CARD, SPACE, 4, decode="greedy")
    assert rec.configs == [] and backend.batches == 1 + 2  # TOP_UP_ROUNDS
    assert len(rec.rejected) == len(backend.requests)


def _answer(x: float, n: int, kind: str) -> str:
    return json.dumps({"x": x, "n": n, "kind": kind})


def test_the_default_answer_is_the_consensus_of_sampled_answers():
    # x: median 4.0; n (log scale): geometric median of 1..100 -> 10; kind: most common "b".
    steps = [_answer(1.0, 1, "a"), _answer(4.0, 100, "b"), _answer(9.0, 10, "b"),
             _answer(2.0, 10, "b"), _answer(6.0, 100, "a")]
    backend = CountingBackend(steps)
    rec = recommend_with(backend, CARD, SPACE, 1, samples=5, seed=3)
    assert backend.batches == 1 and len(backend.requests) == n_requests(1, "consensus", 5) == 5
    assert all(r.sampling.temperature > 0 for r in backend.requests)
    assert [r.sampling.seed for r in backend.requests] == list(range(3, 8))
    assert rec.configs == [{"x": 4.0, "n": 10, "kind": "b"}] and rec.consensus_of == 5


def test_consensus_comes_first_then_the_sampled_answers_without_repeating_it():
    steps = [_answer(1.0, 10, "a"), _answer(3.0, 10, "a"), _answer(5.0, 10, "a"), "junk"]
    rec = recommend_with(ScriptedBackend(steps), CARD, SPACE, 3, samples=3)
    # the consensus (3.0, 10, "a") is also the second answer: it is not listed twice
    assert rec.configs == [{"x": 3.0, "n": 10, "kind": "a"}, {"x": 1.0, "n": 10, "kind": "a"},
                           {"x": 5.0, "n": 10, "kind": "a"}]
    assert rec.consensus_of == 3 and any("not valid JSON" in r for r in rec.rejected)


def test_consensus_of_what_is_valid_when_few_answers_are():
    rec = recommend_with(ScriptedBackend([_answer(7.0, 5, "b"), "junk"]), CARD, SPACE, 1)
    assert rec.configs == [{"x": 7.0, "n": 5, "kind": "b"}] and rec.consensus_of == 1


def test_consensus_config_rounds_integers_and_keeps_four_digits():
    configs = [{"x": 1.0, "n": 2, "kind": "a"}, {"x": 2.0, "n": 3, "kind": "b"}]
    assert consensus_config(configs, SPACE) == {"x": 1.5, "n": 2, "kind": "a"}  # tie: first
    third = [{"x": 1 / 3, "n": 7, "kind": "a"}]
    assert consensus_config(third, SPACE)["x"] == 0.3333


def test_consensus_needs_sampling():
    from sllmbo.core.errors import SllmboError

    with pytest.raises(SllmboError, match="consensus needs"):
        recommend_with(ScriptedBackend(), CARD, SPACE, 1, temperature=0.0)
    with pytest.raises(SllmboError, match="unknown decode"):
        recommend_with(ScriptedBackend(), CARD, SPACE, 1, decode="beam")


def test_bad_candidates_are_reported_never_returned():
    steps = [json.dumps(GOOD), json.dumps(GOOD), "not json", json.dumps({"x": 1.0}),
             json.dumps({"x": 99, "n": 0, "kind": "B"}), json.dumps({**GOOD, "kind": "zzz"})]
    rec = recommend_with(ScriptedBackend(steps), CARD, SPACE, 4, decode="greedy")
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
    configs = recommend("diabetes", family="lightgbm", backend=FixedBackend())
    assert configs[0]["min_child_samples"] == 5  # clipped into the default space


def test_n_must_be_positive():
    from sllmbo.core.errors import SllmboError

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


@pytest.mark.parametrize(("argv", "message"), [
    (["--decode", "beam"], "unknown decode 'beam'"),
    (["--samples", "0"], "a consensus needs --samples >= 1"),
    (["--temperature", "0"], "a consensus needs --samples >= 1 and --temperature > 0"),
])
def test_bad_decode_options_exit_2_before_a_model_loads(argv, message, capsys, monkeypatch):
    import sllmbo.inference.factory as factory

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(factory, "create_backend", no_model)
    with pytest.raises(SystemExit) as info:
        main(["recommend", "--task", "diabetes", *argv])
    assert info.value.code == 2 and message in capsys.readouterr().err
