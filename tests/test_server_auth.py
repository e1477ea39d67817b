"""``sllmbo serve`` authentication, as vLLM does it: ``--api-key`` / ``$SLLMBO_API_KEY``
checked on every ``/v1/*`` request (``Authorization: Bearer KEY``, else 401), and no
non-loopback address without a key unless ``--allow-unauthenticated``."""

from __future__ import annotations

import pytest
from server_helpers import FINITE, MESSAGES, TickingBackend, chat_url, get, post
from typer.testing import CliRunner

from sllmbo.core.errors import BackendError
from sllmbo.inference.base import ChatRequest, SamplingParams
from sllmbo.inference.http_server import ChatServer, is_loopback
from sllmbo.inference.openai_backend import OpenAIBackend

KEY = "s3cret-key"
BODY = {"messages": MESSAGES, "max_tokens": 3}


@pytest.fixture
def keyed():
    with ChatServer(TickingBackend(tick_s=0), model_name="m", port=0, api_key=KEY) as server:
        yield server


@pytest.mark.parametrize("headers", [
    {},
    {"Authorization": "Bearer wrong"},
    {"Authorization": KEY},  # the key without the Bearer scheme
    {"Authorization": f"Bearer {KEY}x"},
    {"Authorization": "Basic czNjcmV0LWtleQ=="},
])
def test_v1_requests_without_the_key_get_401(keyed, headers):
    status, reply = post(chat_url(keyed.url), BODY, headers=headers)
    assert status == 401 and "Unauthorized" in reply["error"]["message"]
    assert get(f"{keyed.url}/models", headers=headers)[0] == 401


def test_the_bearer_key_is_served_and_health_needs_none(keyed):
    auth = {"Authorization": f"Bearer {KEY}"}
    assert post(chat_url(keyed.url), BODY, headers=auth)[0] == 200
    assert get(f"{keyed.url}/models", headers=auth)[0] == 200
    assert get(keyed.url.removesuffix("/v1") + "/health")[0] == 200  # probes carry no key


def test_sllmbo_clients_send_the_key_from_the_environment(keyed, monkeypatch):
    monkeypatch.setenv("SLLMBO_API_KEY", KEY)
    request = ChatRequest(MESSAGES, FINITE, SamplingParams(max_tokens=3))
    with OpenAIBackend(keyed.url, model="m") as client:
        assert client.complete([request])[0].ok
    monkeypatch.setenv("SLLMBO_API_KEY", "other")
    with OpenAIBackend(keyed.url, model="m") as client:
        [failed] = client.complete([request])
    assert failed.finish_reason == "error" and "401" in (failed.error or "")


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True),
    ("0.0.0.0", False), ("", False), ("::", False), ("192.168.1.5", False),
    ("example.org", False),
])
def test_is_loopback(host, loopback):
    assert is_loopback(host) is loopback


def test_a_non_loopback_address_without_a_key_is_refused_before_binding():
    with pytest.raises(BackendError, match=r"refusing to listen on 0\.0\.0\.0 without an API key"
                       ) as info:
        ChatServer(TickingBackend(), model_name="m", host="0.0.0.0", port=0)
    assert "--api-key" in (info.value.hint or "")
    assert "--allow-unauthenticated" in (info.value.hint or "")


@pytest.mark.parametrize("kwargs", [{"api_key": KEY}, {"allow_unauthenticated": True}])
def test_a_non_loopback_address_binds_with_a_key_or_when_told(kwargs):
    server = ChatServer(TickingBackend(), model_name="m", host="0.0.0.0", port=0, **kwargs)
    server.shutdown()


def _serve_cli(args, monkeypatch, env=None):
    import typer

    from sllmbo.cli import serve

    loaded = []
    monkeypatch.setattr("sllmbo.core.home.resolve_model",
                        lambda name: loaded.append(name) or pytest.fail("model resolved"))
    app = typer.Typer()
    serve.register(app)
    app.command("noop")(lambda: None)  # two commands: typer keeps "serve" as a subcommand
    result = CliRunner().invoke(app, ["serve", *args], env=env)
    return result, loaded


@pytest.mark.parametrize("engine", ["transformers", "vllm"])
def test_cli_refuses_0000_without_a_key_before_resolving_a_model(engine, monkeypatch):
    monkeypatch.delenv("SLLMBO_API_KEY", raising=False)
    result, loaded = _serve_cli(["--engine", engine, "--host", "0.0.0.0"], monkeypatch,
                                env={"SLLMBO_API_KEY": ""})
    assert isinstance(result.exception, BackendError), result.output
    assert "without an API key" in str(result.exception) and not loaded


def test_serve_vllm_hands_the_key_over_in_the_environment_not_the_command_line(monkeypatch,
                                                                                tmp_path):
    from sllmbo.inference import serve

    seen = {}

    class Popen:
        def __init__(self, cmd, env=None):
            seen["cmd"], seen["env"] = cmd, env
            raise KeyboardInterrupt  # stop before waiting for health

    monkeypatch.setattr(serve.importlib.util, "find_spec", lambda name: object())
    monkeypatch.setattr(serve.subprocess, "Popen", Popen)
    monkeypatch.setattr("sllmbo.inference.vllm_backend.default_memory_share", lambda: 0.3)
    monkeypatch.setattr(serve, "_vllm_server", lambda model: ["vllm", "serve", str(model)])
    with pytest.raises(KeyboardInterrupt):
        serve.serve_vllm(tmp_path, adapter=None, lora_name="hpo", host="0.0.0.0", port=1,
                         startup_timeout_s=1, on_ready=lambda *a: None, api_key=KEY)
    assert seen["env"]["VLLM_API_KEY"] == KEY and KEY not in " ".join(seen["cmd"])
    with pytest.raises(BackendError, match="without an API key"):
        serve.serve_vllm(tmp_path, adapter=None, lora_name="hpo", host="0.0.0.0", port=1,
                         startup_timeout_s=1, on_ready=lambda *a: None)
