"""Hostile replies from an OpenAI-compatible server, generated: the backend returns a failed or
parsed ``Completion`` or raises ``BackendError``, and never anything else.

The real ``openai`` client talks to an ``httpx.MockTransport`` that answers
``/v1/chat/completions`` and ``/v1/models`` with generated bodies: wrong types where the
schema wants strings and integers, huge and negative numbers, missing fields, non-JSON text,
truncated JSON and error statuses. Every completion then goes through ``recommend``'s parser,
as a real answer would.
"""

from __future__ import annotations

import json

import openai
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sllmbo.core.errors import BackendError

try:  # the HTTP library of the installed openai client (httpx2 from openai 3 on)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai
    import httpx

from sllmbo.core.families import get_family
from sllmbo.core.prompts import config_schema
from sllmbo.inference.base import ChatRequest, Completion, SamplingParams
from sllmbo.inference.openai_backend import OpenAIBackend
from sllmbo.recommend import collect

SPACE = get_family("lightgbm").default_space()
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck),
                derandomize=True)

junk = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(min_value=10**30),
                 st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                 st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5),
                                                                      st.integers(), max_size=3))
good_answer = st.fixed_dictionaries({n: st.floats(0.001, 0.5) for n in SPACE.names}).map(
    json.dumps)
content = st.one_of(good_answer, good_answer.map(lambda t: t[: len(t) // 2]), junk)
message = st.one_of(junk, st.fixed_dictionaries(
    {"role": st.one_of(st.just("assistant"), junk)}, optional={"content": content}))
choice = st.one_of(junk, st.fixed_dictionaries(
    {"index": st.one_of(st.just(0), junk)},
    optional={"message": message,
              "finish_reason": st.one_of(st.sampled_from(["stop", "length", "tool_calls"]),
                                         junk)}))
usage = st.one_of(junk, st.fixed_dictionaries({}, optional={
    "prompt_tokens": st.one_of(st.integers(min_value=0, max_value=4096), junk),
    "completion_tokens": st.one_of(st.integers(min_value=0, max_value=4096), junk)}))
completion_body = st.one_of(junk, st.fixed_dictionaries(
    {"id": st.one_of(st.just("c"), junk), "object": st.just("chat.completion"),
     "created": st.one_of(st.just(0), junk), "model": st.one_of(st.just("m"), junk)},
    optional={"choices": st.one_of(junk, st.lists(choice, max_size=3)), "usage": usage}))
models_body = st.one_of(junk, st.fixed_dictionaries({"object": st.just("list")}, optional={
    "data": st.one_of(junk, st.lists(st.one_of(junk, st.fixed_dictionaries(
        {"id": st.one_of(st.sampled_from(["base", "adapter"]), junk)},
        optional={"max_model_len": junk, "parent": junk})), max_size=3))}))


def as_reply(body_strategy):
    """A status and raw bytes: the body as JSON, truncated, or not JSON at all."""
    return st.tuples(
        st.sampled_from([200, 200, 200, 400, 404, 429, 500]),
        body_strategy.map(lambda b: json.dumps(b, default=str)).flatmap(
            lambda t: st.sampled_from([t, t[: len(t) // 2], "not json", ""])))


def backend_for(chat_reply, models_reply, model: str | None) -> OpenAIBackend:
    def handler(request: httpx.Request) -> httpx.Response:
        status, text = models_reply if request.url.path.endswith("/models") else chat_reply
        return httpx.Response(status, content=text.encode(),
                              headers={"content-type": "application/json"})

    backend = OpenAIBackend("http://fuzz.invalid/v1", model=model, max_retries=0)
    backend._client = openai.OpenAI(base_url=backend.base_url, api_key="x", max_retries=0,
                                    http_client=httpx.Client(transport=httpx.MockTransport(handler)))
    return backend


REQUEST = ChatRequest([{"role": "user", "content": "a configuration"}], config_schema(SPACE),
                      SamplingParams(max_tokens=64, temperature=0.0, seed=0))


@FUZZ
@given(as_reply(completion_body), as_reply(models_body), st.sampled_from([None, "base"]))
def test_any_reply_is_a_completion_or_a_backend_error(chat_reply, models_reply, model):
    backend = backend_for(chat_reply, models_reply, model)
    try:
        completions = backend.complete([REQUEST, REQUEST])
        length = backend.context_length
    except BackendError:
        return
    assert isinstance(length, int) and length > 0
    for c in completions:
        assert isinstance(c, Completion) and isinstance(c.text, str)
        assert isinstance(c.prompt_tokens, int) and c.prompt_tokens >= 0
        assert isinstance(c.completion_tokens, int) and c.completion_tokens >= 0
        assert c.error is None or isinstance(c.error, str)
    rec = collect(completions, SPACE, 2)  # recommend's parser on what came back
    assert len(rec.configs) + len(rec.rejected) == len(completions)
    for config in rec.configs:
        assert SPACE.contains(config)
