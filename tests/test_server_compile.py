"""A JSON Schema that is slow to compile (issue 38: four ``pattern``s of ``^[a-z]{20000}$``
held the model for 79 s) is compiled off the model, within its request's deadline and the
compile bound, and stopped when its client hangs up; its cost is counted. Runs the real
transformers engine (xgrammar) on the tiny random-weight Llama."""

from __future__ import annotations

import threading
import time

import pytest
from server_helpers import (
    FINITE,
    MESSAGES,
    chat_url,
    hang_up,
    open_request,
    post,
    slow_schema,
    timed,
    wait_until,
)

from sllmbo.inference.http_server import ChatServer, ServerLimits

COMPILE_S = 3.0


def with_schema(schema: dict, max_tokens: int = 8) -> dict:
    return {"messages": MESSAGES, "max_tokens": max_tokens, "temperature": 0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "x", "schema": schema}}}


def fresh(i: int) -> dict:
    return {"type": "object", "properties": {"pick": {"enum": [f"c{i}-{k}" for k in range(4)]}},
            "required": ["pick"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server(tiny_backend):
    from sllmbo.inference.base import ChatRequest, SamplingParams

    # One answer first, so the deadlines below time the server, not torch's first call.
    tiny_backend.complete([ChatRequest(MESSAGES, FINITE, SamplingParams(max_tokens=4))])
    limits = ServerLimits(request_timeout_s=30.0, compile_timeout_s=COMPILE_S)
    with ChatServer(tiny_backend, model_name="tiny", port=0, limits=limits) as srv:
        yield srv


@pytest.fixture
def ready(server):
    """The server with its compile child ready (a stopped compile's child is replaced by a
    fresh fork)."""
    assert server.compiler.wait_ready(180)
    return server


@pytest.mark.slow
def test_a_slow_schema_neither_holds_the_model_nor_outlives_its_deadline(ready):
    assert post(chat_url(ready.url), with_schema(FINITE), timeout=30)[0] == 200
    slow: dict = {}

    def send_slow() -> None:  # its client's own deadline, 2 s, comes before the bound
        slow["reply"], slow["took"] = timed(lambda: post(
            chat_url(ready.url), with_schema(slow_schema()), timeout=60,
            headers={"X-Stainless-Read-Timeout": "2"}))

    client = threading.Thread(target=send_slow)
    client.start()
    time.sleep(0.5)
    (status, reply), took = timed(lambda: post(chat_url(ready.url), with_schema(FINITE),
                                               timeout=60))
    assert status == 200 and took < 2, f"a cached schema waited {took:.1f} s: {reply}"
    client.join(60)
    status, reply = slow["reply"]
    assert status == 504 and "deadline passed while compiling" in reply["error"]["message"]
    assert slow["took"] < 4, f"the slow schema was answered after {slow['took']:.1f} s"


@pytest.mark.slow
def test_a_schema_past_the_compile_bound_is_400_and_its_cost_is_counted(ready):
    stats = ready.compiler.stats
    compiled, seconds, stopped = stats.compiled, stats.seconds, stats.stopped
    assert post(chat_url(ready.url), with_schema(fresh(0)), timeout=60)[0] == 200
    assert stats.compiled == compiled + 1 and stats.seconds > seconds
    (status, reply), took = timed(lambda: post(chat_url(ready.url), with_schema(slow_schema(1)),
                                               timeout=60))
    assert status == 400, reply
    assert f"did not compile within {COMPILE_S:g} s" in reply["error"]["message"]
    assert took < COMPILE_S + 2 and stats.stopped == stopped + 1


@pytest.mark.slow
def test_a_client_that_hangs_up_during_the_compile_stops_it(ready):
    stopped = ready.compiler.stats.stopped
    sock = open_request(chat_url(ready.url), with_schema(slow_schema(2)))
    time.sleep(1.0)
    hang_up(sock)
    assert wait_until(lambda: ready.compiler.stats.stopped == stopped + 1, timeout_s=1.5)
    # A fresh child is forked at once; the stopped compile would have taken minutes.
    (status, _), took = timed(lambda: post(chat_url(ready.url), with_schema(fresh(3)),
                                           timeout=60))
    assert status == 200 and took < 5, f"the next new schema waited {took:.1f} s"


@pytest.mark.slow
def test_a_slow_schema_does_not_hold_up_another_new_schema(ready):
    slow: dict = {}

    def send_slow() -> None:
        slow["status"] = post(chat_url(ready.url), with_schema(slow_schema(4)), timeout=60,
                              headers={"X-Stainless-Read-Timeout": "4"})[0]

    client = threading.Thread(target=send_slow)
    client.start()
    time.sleep(0.5)
    (status, reply), took = timed(lambda: post(chat_url(ready.url), with_schema(fresh(5)),
                                               timeout=60))
    assert status == 200 and took < 3, f"a new schema waited {took:.1f} s: {reply}"
    client.join(60)
    assert slow["status"] in (400, 504)  # the compile bound (3 s) or its deadline (4 s)
