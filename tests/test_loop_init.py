"""Where a study starts: the paper's initializer or the recommender (``--init``), chosen by
whether the backend is fine-tuned; failures leave a study that still runs."""

from __future__ import annotations

import json
import random

import pytest
from llm_scripts import VALID, ScriptedBackend, valid_answer
from test_loop_tune import lgbm_space_answer

from sllmbo.core.errors import BackendError
from sllmbo.core.families import get_family
from sllmbo.core.prompts import config_schema
from sllmbo.initializer import InitResult, init_source, recommended_start, start

FAMILY = get_family("lightgbm")
LIMITS = FAMILY.hard_limits()
SPACE = FAMILY.default_space("regression")


def space_then_valid(request) -> str:
    """The initializer's question gets a narrow space; every other a fresh valid answer."""
    if "configs" in (request.json_schema or {}).get("properties", {}):
        return lgbm_space_answer(request)
    return json.dumps(valid_answer(request.json_schema or {}, RNG))


RNG = random.Random(0)


def scripted(steps, *, fine_tuned: bool) -> ScriptedBackend:
    backend = ScriptedBackend(steps)
    backend.fine_tuned = fine_tuned
    return backend


def begin(backend, *, mode: str = "auto", llm_space: bool = False, n: int = 5):
    return start(mode=mode, backend=backend, card=None, limits=LIMITS, default_space=SPACE,
                 n_configs=n, llm_space=llm_space, seed=3, timeout=None)


def test_auto_starts_a_fine_tuned_model_from_its_recommendation():
    backend = scripted([VALID], fine_tuned=True)
    init = begin(backend)
    assert init.configs_source == "recommender" and len(init.configs) == 5
    # one batch on the recommend prompt: the consensus of 8 sampled answers, seeds 3..10
    assert [r.json_schema for r in backend.requests] == [config_schema(SPACE)] * 8
    assert [r.sampling.seed for r in backend.requests] == list(range(3, 11))
    assert init.calls == 8 and init.space_source == "default" and init.space == SPACE
    assert all(SPACE.contains(c) for c in init.configs)
    assert "consensus of 8 sampled answers" in init.reason


def test_auto_starts_the_base_model_from_the_papers_initializer():
    backend = scripted([lgbm_space_answer], fine_tuned=False)
    init = begin(backend, llm_space=True, n=3)
    assert init.configs_source == "initializer" and init.calls == 1
    assert "configs" in backend.requests[0].json_schema["properties"]
    assert len(init.configs) == 2 and init.space_source == "llm"


def test_the_recommender_fills_the_space_the_initializer_proposed():
    backend = scripted([space_then_valid], fine_tuned=True)
    init = begin(backend, mode="recommender", llm_space=True)
    space = init.space
    assert init.space_source == "llm" and (space["learning_rate"].low,
                                           space["learning_rate"].high) == (0.02, 0.2)
    assert init.configs_source == "recommender" and len(init.configs) == 5
    assert all(space.contains(c) for c in init.configs)
    assert init.calls == 1 + 8 and init.dropped == []  # the initializer's configs go unused


def test_the_recommender_drops_the_repairs_of_the_configurations_it_replaces():
    base = InitResult(SPACE, [{"num_leaves": 31}], "default", "kept",
                      repairs=["config 0: clipped"], dropped=["config 1: duplicate"])
    init = recommended_start(base, backend=scripted([VALID], fine_tuned=True), card=None,
                             n_configs=3, seed=0, timeout=None)
    assert len(init.configs) == 3 and init.repairs == [] and init.dropped == []
    failed = recommended_start(base, backend=scripted([BackendError("down")], fine_tuned=True),
                               card=None, n_configs=3, seed=0, timeout=None)
    assert (failed.configs, failed.repairs, failed.dropped) == ([], [], [])


def test_the_initializer_can_be_forced_on_a_fine_tuned_model():
    backend = scripted([lgbm_space_answer], fine_tuned=True)
    assert begin(backend, mode="initializer", n=2).configs_source == "initializer"
    assert len(backend.requests) == 1


def test_a_failed_recommender_leaves_the_default_space_and_no_configs():
    backend = scripted([BackendError("connection refused")], fine_tuned=True)
    init = begin(backend)
    assert init.configs == [] and init.space == SPACE
    assert "the recommender failed (connection refused)" in init.reason


@pytest.mark.slow
def test_tune_summary_says_where_the_start_came_from_and_why_it_failed():
    from sllmbo.tune import LLMOptions, tune

    backend = scripted([BackendError("connection refused")], fine_tuned=True)
    result = tune("diabetes", sampler="llm-tpe", n_trials=2, n_folds=2, progress=False,
                  backend=backend, llm=LLMOptions(patience=0, n_initial=3))
    assert result.n_complete == 2 and result.llm["initializer"]["configs_source"] == \
        "recommender"
    assert any("the recommender failed" in n for n in result.llm["notes"])


class Unreachable(ScriptedBackend):
    @property
    def fine_tuned(self) -> bool:
        raise BackendError("cannot reach the model server")


def test_auto_falls_back_to_the_initializer_when_the_server_cannot_say():
    assert init_source("auto", Unreachable()) == "initializer"
    with pytest.raises(ValueError, match="init must be one of"):
        init_source("warm", ScriptedBackend())


def test_a_served_adapter_is_listed_with_its_parent_and_read_as_fine_tuned():
    from sllmbo.inference.http_server import ChatServer
    from sllmbo.inference.openai_backend import OpenAIBackend

    for fine_tuned in (True, False):
        served = scripted([json.dumps({"x": 1})], fine_tuned=fine_tuned)
        with ChatServer(served, model_name="hpo", port=0) as server:
            client = OpenAIBackend(server.url)
            listing, asked = client._client.models.list, []
            client._client.models.list = lambda listing=listing, asked=asked: (
                asked.append(1) or listing())
            assert client.model == "hpo" and client.fine_tuned is fine_tuned
            assert client.fine_tuned is fine_tuned and client.context_length > 0
            assert asked == [1]  # /v1/models is asked once, whatever the answer
