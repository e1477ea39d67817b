"""Values that used to crash the server's handler (an empty reply and a traceback on stderr)
now get 400 or 413 with the reason, and the server keeps serving."""

from __future__ import annotations

import json

import pytest
from server_helpers import FINITE, MESSAGES, TickingBackend, chat_url, get, post

from sllmbo.core import families, prompts
from sllmbo.inference.http_request import BodyLimits, check_schema_size, nesting_depth
from sllmbo.inference.http_server import ChatServer, ServerLimits

MSG = json.dumps(MESSAGES)


def nested_schema(levels: int) -> dict:
    schema: dict = {"type": "integer"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


def with_schema(schema: dict) -> dict:
    return {"messages": MESSAGES, "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}


@pytest.fixture(scope="module")
def backend():
    return TickingBackend(tick_s=0.0, context_length=2048)


@pytest.fixture(scope="module")
def server(backend):
    with ChatServer(backend, model_name="m", port=0) as srv:
        yield srv


# (why, raw body, status, words the reason holds)
RAW_CASES = [
    ("max_tokens 1e400", f'{{"messages":{MSG},"max_tokens":1e400}}', 400,
     "max_tokens must be an integer >= 1; got inf"),
    ("seed 2**70", f'{{"messages":{MSG},"seed":{2**70}}}', 400, "seed must be an integer"),
    ("seed -2**70", f'{{"messages":{MSG},"seed":{-(2**70)}}}', 400, "seed must be an integer"),
    ('temperature "nan"', f'{{"messages":{MSG},"temperature":"nan"}}', 400,
     'temperature must be >= 0, a finite JSON number; got "nan"'),
    ("temperature NaN literal", f'{{"messages":{MSG},"temperature":NaN}}', 400,
     "NaN, which is not a JSON number"),
    ("top_p Infinity", f'{{"messages":{MSG},"top_p":Infinity}}', 400, "Infinity"),
    ("temperature 1e400", f'{{"messages":{MSG},"temperature":1e400}}', 400,
     "temperature must be >= 0"),
    ("max_tokens 0", f'{{"messages":{MSG},"max_tokens":0}}', 400,
     "max_tokens must be an integer >= 1; got 0"),
    ("max_completion_tokens 0", f'{{"messages":{MSG},"max_completion_tokens":0}}', 400,
     "max_completion_tokens must be an integer >= 1"),
    ("max_tokens -3", f'{{"messages":{MSG},"max_tokens":-3}}', 400, "max_tokens must be"),
    ('max_tokens "5"', f'{{"messages":{MSG},"max_tokens":"5"}}', 400, "max_tokens must be"),
    ("max_tokens true", f'{{"messages":{MSG},"max_tokens":true}}', 400, "max_tokens must be"),
    ("max_tokens 2.5", f'{{"messages":{MSG},"max_tokens":2.5}}', 400, "max_tokens must be"),
    ("top_p 0", f'{{"messages":{MSG},"top_p":0}}', 400, "top_p must be in (0, 1]"),
    ("top_p 1.5", f'{{"messages":{MSG},"top_p":1.5}}', 400, "top_p must be in (0, 1]"),
    ("body nested 100k deep", f'{{"messages":{MSG},"x":{"[" * 100_000}{"]" * 100_000}}}', 400,
     "nested deeper than"),
    ("body nested 500 deep", f'{{"messages":{MSG},"x":{"[" * 500}{"]" * 500}}}', 400,
     "the body is nested 501 levels deep; the limit is 32"),
    ("not JSON", '{"messages": [', 400, "not JSON"),
    ("a 1 MB model name", f'{{"messages":{MSG},"model":"{"m" * 1_000_000}"}}', 404,
     'mmmmm... does not exist'),
    ("not an object", "[1, 2]", 400, "must be a JSON object"),
    # issue 38: these gave 500, or were taken as n=1
    ("a 5,000-digit integer", f'{{"messages":{MSG},"seed":{"9" * 5000}}}', 400,
     "an integer of 5000 digits; the limit is 100"),
    ("a 5,000-digit negative integer", f'{{"messages":{MSG},"x":[-{"1" * 5000}]}}', 400,
     "an integer of 5000 digits"),
    ("n 1.0", f'{{"messages":{MSG},"n":1.0}}', 400, "only n=1 is supported (a JSON integer); "
     "got 1.0"),
    ("n true", f'{{"messages":{MSG},"n":true}}', 400, "got true"),
    ("n 2", f'{{"messages":{MSG},"n":2}}', 400, "only n=1"),
]


@pytest.mark.parametrize(("why", "raw", "status", "reason"), RAW_CASES,
                         ids=[c[0] for c in RAW_CASES])
def test_a_bad_value_is_answered_with_the_reason(server, capfd, why, raw, status, reason):
    got, reply = post(chat_url(server.url), None, raw=raw.encode())
    assert (got, reason in reply["error"]["message"]) == (status, True), reply
    assert "Traceback" not in capfd.readouterr().err
    assert post(chat_url(server.url), {"messages": MESSAGES, "max_tokens": 2})[0] == 200


SCHEMA_CASES = [
    ("schema nested 100 deep", with_schema(nested_schema(100)), 400, "nested"),
    ("schema nested 12 deep", with_schema(nested_schema(12)), 400,
     "the JSON Schema is nested 25 levels deep; the limit is 16"),
    ("100k-value enum (1.5 MB)",
     with_schema({"enum": [f"value-{i:06d}" for i in range(100_000)]}), 413,
     "bytes; the limit is 65536"),
    ("2000-value enum", with_schema({"enum": list(range(2000))}), 400,
     "lists 2000 enum values; the limit is 1024"),
    ("enums spread over properties", with_schema({"type": "object", "properties": {
        f"p{i}": {"enum": list(range(100))} for i in range(11)}}), 400, "1100 enum values"),
]


@pytest.mark.parametrize(("why", "body", "status", "reason"), SCHEMA_CASES,
                         ids=[c[0] for c in SCHEMA_CASES])
def test_a_schema_too_large_to_decode_with_is_rejected_before_the_model(
        server, backend, capfd, why, body, status, reason):
    calls = len(backend.calls)
    got, reply = post(chat_url(server.url), body)
    assert (got, reason in reply["error"]["message"]) == (status, True), reply
    assert len(backend.calls) == calls  # the model never saw it
    assert "Traceback" not in capfd.readouterr().err


def test_a_body_over_the_limit_is_413_without_being_read(backend):
    limits = ServerLimits(body=BodyLimits(max_body_bytes=1000))
    with ChatServer(backend, model_name="m", port=0, limits=limits) as small:
        got, reply = post(chat_url(small.url), {"messages": MESSAGES, "pad": "x" * 2000})
    assert got == 413 and "the limit is 1000" in reply["error"]["message"]


@pytest.mark.parametrize("headers", [{"Transfer-Encoding": "chunked"}])
def test_a_body_without_a_length_is_411(server, headers):
    import http.client

    from server_helpers import split

    host, port, path = split(chat_url(server.url))
    conn = http.client.HTTPConnection(host, port, timeout=10)
    conn.request("POST", path, body=iter([json.dumps({"messages": MESSAGES}).encode()]),
                 headers=headers, encode_chunked=True)
    resp = conn.getresponse()
    assert resp.status == 411 and b"Content-Length" in resp.read()
    conn.close()


def test_a_prompt_longer_than_the_context_is_prompt_too_long(server, backend):
    calls = len(backend.calls)
    for content in ("x" * 1_000_000, "word " * 1400):  # 1 MB; ~2300 estimated tokens
        got, reply = post(chat_url(server.url),
                          {"messages": [{"role": "user", "content": content}]})
        assert got == 400 and reply["error"]["message"].startswith("prompt too long"), reply
        assert "context holds 2048" in reply["error"]["message"]
    assert len(backend.calls) == calls


def test_max_tokens_that_do_not_fit_beside_the_prompt_are_400_and_unset_ones_are_cut(
        server, backend):
    long = [{"role": "user", "content": "y" * 5400}]  # ~1800 tokens: ~240 left
    got, reply = post(chat_url(server.url), {"messages": long, "max_tokens": 1000})
    assert got == 400 and "max_tokens is too large" in reply["error"]["message"]
    got, reply = post(chat_url(server.url), {"messages": long})
    assert got == 200 and backend.calls[-1]["tokens"] < 256


def test_a_prompt_too_long_for_a_real_tokenizer_is_counted_with_its_chat_template(tiny_backend):
    with ChatServer(tiny_backend, model_name="tiny", port=0) as srv:  # 512-token context
        got, reply = post(chat_url(srv.url), {"messages": [
            {"role": "user", "content": "hyperparameter " * 600}], "max_tokens": 4})
        assert got == 400 and "prompt too long" in reply["error"]["message"]
        got, reply = post(chat_url(srv.url), {"seed": 2**64 - 1, "max_tokens": 4,
                                              **with_schema(FINITE)})
        assert got == 200, reply  # the largest seed torch takes works end to end


def test_every_schema_sllmbo_sends_fits_the_limits():
    limits = BodyLimits()
    for family in families.FAMILIES.values():
        space = family.default_space()
        for schema in (prompts.config_schema(space), prompts.initializer_schema(space, 10),
                       prompts.adaptation_schema(space, space)):
            check_schema_size(schema, limits)
            assert nesting_depth(with_schema(schema)) <= limits.max_depth


def test_max_tokens_unset_is_256_and_explicit_values_are_honoured(server, backend):
    assert post(chat_url(server.url), {"messages": MESSAGES})[0] == 200
    assert backend.calls[-1]["tokens"] == 256
    assert post(chat_url(server.url), {"messages": MESSAGES, "max_tokens": 7})[0] == 200
    assert backend.calls[-1]["tokens"] == 7
    assert get(server.url.removesuffix("/v1") + "/health")[0] == 200


def test_a_negative_seed_is_read_as_its_unsigned_64_bit_twin():
    from sllmbo.inference.http_request import sampling_of

    assert sampling_of({"seed": -1}).seed == 2**64 - 1
    assert sampling_of({"seed": -(2**63)}).seed == 2**63
    assert sampling_of({"seed": 7}).seed == 7


@pytest.mark.slow
def test_seed_minus_one_is_answered_by_the_llamacpp_engine(embedded_model):
    # issue 38: the validator let -1 through and llama.cpp's generator refused it (500).
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from sllmbo.inference.factory import local_backend

    backend = local_backend(embedded_model, None, device="cpu", engine="llamacpp")
    try:
        with ChatServer(backend, model_name="m", port=0) as srv:
            for seed in (-1, -(2**63)):
                got, reply = post(chat_url(srv.url), {"seed": seed, "max_tokens": 4,
                                                      **with_schema(FINITE)})
                assert got == 200, reply
    finally:
        backend.close()
