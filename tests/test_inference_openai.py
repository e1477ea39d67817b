"""OpenAIBackend against the real http_server (serving a tiny model) on a loopback port."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from inference_fixtures import SCHEMAS, free_port

from sllmbo.core.errors import BackendError
from sllmbo.inference import ChatRequest, SamplingParams, create_backend
from sllmbo.inference.http_server import ChatServer, RequestError, parse_chat_request
from sllmbo.inference.openai_backend import OpenAIBackend

MESSAGES = [{"role": "user", "content": "Suggest hyperparameters as JSON."}]


def req(schema=None, **sampling) -> ChatRequest:
    sampling.setdefault("temperature", 0.0)
    return ChatRequest(MESSAGES, schema, SamplingParams(**sampling))


@pytest.fixture(scope="module")
def server(tiny_backend):
    with ChatServer(tiny_backend, model_name="tiny", port=0) as srv:
        yield srv


def test_schema_request_through_http_parses_and_model_name_is_discovered(server):
    with OpenAIBackend(server.url, timeout_s=30) as backend:
        outs = backend.complete([req(SCHEMAS["finite"], max_tokens=64),
                                 req(SCHEMAS["finite"], max_tokens=64, temperature=1.0, seed=3)])
        assert backend.model == "tiny"
    for c in outs:
        assert c.finish_reason == "stop", c
        assert set(c.parse_json()) == {"kernel", "shrinking"}
        assert c.prompt_tokens > 0 and c.completion_tokens > 0


def test_length_finish_is_reported_as_length(server):
    [c] = create_backend("openai", base_url=server.url, llm="tiny").complete(
        [req(max_tokens=4)])
    assert (c.finish_reason, c.completion_tokens) == ("length", 4)


def test_unknown_model_is_a_per_request_error_with_the_servers_message(server):
    [c] = OpenAIBackend(server.url, model="nope").complete([req(max_tokens=4)])
    assert c.finish_reason == "error" and "does not exist" in c.error


def test_schema_the_decoder_cannot_compile_comes_back_as_http_400(server):
    bad = {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}
    [c] = OpenAIBackend(server.url, model="tiny").complete([req(bad, max_tokens=4)])
    assert c.finish_reason == "error" and "HTTP 400" in c.error and "cannot compile" in c.error


def test_server_down_is_a_clear_backend_error():
    backend = OpenAIBackend(f"http://127.0.0.1:{free_port()}/v1", model="m", timeout_s=2,
                            max_retries=0)
    with pytest.raises(BackendError, match="cannot reach the model server") as info:
        backend.complete([req(max_tokens=4)])
    assert "sllmbo serve" in (info.value.hint or "")


class _CannedHandler(BaseHTTPRequestHandler):
    """A misbehaving server: answers every POST with ``self.server.body`` and status 200."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        data = self.server.body.encode()  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def _answer(content: str, finish_reason: str = "stop") -> str:
    return json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                       "choices": [{"index": 0, "finish_reason": finish_reason,
                                    "message": {"role": "assistant", "content": content}}]})


@pytest.mark.parametrize(("body", "match"), [
    (_answer('{"kernel": "poly", "shrinking": true}'), "does not match the schema"),
    (_answer("sure! here you go"), "not valid JSON"),
    (_answer('{"kernel": "rbf"}', finish_reason="content_filter"), "finished with 'content_filter'"),
    (json.dumps({"id": "x", "object": "chat.completion", "choices": []}), "no choices"),
], ids=["ignores-schema", "prose", "odd-finish", "no-choices"])
def test_answers_that_break_the_schema_or_the_protocol_are_errors(body, match):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _CannedHandler)
    httpd.body = body  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        [c] = OpenAIBackend(url, model="m", max_retries=0).complete(
            [req(SCHEMAS["finite"], max_tokens=8)])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert c.finish_reason == "error" and match in c.error


@pytest.mark.parametrize(("body", "match"), [
    ({"messages": []}, "non-empty list"),
    ({"messages": [{"role": "user"}]}, "non-empty list"),
    ({"model": "other", "messages": MESSAGES}, "does not exist"),
    ({"messages": MESSAGES, "n": 2}, "n=1"),
    ({"messages": MESSAGES, "temperature": -1}, "temperature must be >= 0"),
    ({"messages": MESSAGES, "response_format": {"type": "yaml"}}, "unknown response_format"),
    ({"messages": MESSAGES, "response_format": {"type": "json_schema"}}, "schema must be"),
])
def test_bad_chat_requests_are_rejected_with_the_rule(body, match):
    with pytest.raises(RequestError, match=match):
        parse_chat_request(body, {"tiny"})


def test_response_format_json_schema_becomes_the_requests_schema():
    body = {"model": "tiny", "messages": MESSAGES, "max_tokens": 9, "seed": 4,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "a", "schema": SCHEMAS["finite"]}}}
    request = parse_chat_request(body, {"tiny"})
    assert request.json_schema == SCHEMAS["finite"]
    assert (request.sampling.max_tokens, request.sampling.seed) == (9, 4)


def test_health_and_models_routes(server):
    import urllib.request

    root = server.url.removesuffix("/v1")
    with urllib.request.urlopen(f"{root}/health") as resp:
        assert json.load(resp) == {"status": "ok"}
    with urllib.request.urlopen(f"{server.url}/models") as resp:
        assert [m["id"] for m in json.load(resp)["data"]] == ["tiny"]


def test_openai_backend_needs_a_base_url_and_no_adapter():
    with pytest.raises(BackendError, match="needs a base_url"):
        create_backend("openai")
    with pytest.raises(BackendError, match="takes no adapter"):
        create_backend("openai", base_url="http://127.0.0.1:1/v1", adapter="x")
    with pytest.raises(BackendError, match="must start with http"):
        create_backend("openai", base_url="127.0.0.1:8000")


def test_context_length_is_asked_of_the_server_once_unless_given(server, tiny_backend):
    backend = OpenAIBackend(server.url, timeout_s=30)
    assert backend.context_length == tiny_backend.context_length  # max_model_len of /v1/models
    assert OpenAIBackend(server.url, model="tiny", context_length=512).context_length == 512


def test_a_server_that_does_not_report_its_window_gets_the_assumed_one(monkeypatch, server):
    from sllmbo.inference import openai_backend

    backend = OpenAIBackend(server.url, model="tiny", timeout_s=30)
    monkeypatch.setattr(backend, "_served_models", lambda: {"tiny": None})
    assert backend.context_length == openai_backend.ASSUMED_CONTEXT
