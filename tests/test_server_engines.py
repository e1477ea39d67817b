"""``sllmbo serve --engine NAME`` runs the engine it names (issue 38: ``--engine
transformers`` served llama.cpp on a CPU, and ``--engine llamacpp`` was unknown)."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from sllmbo.core.errors import BackendError
from sllmbo.inference import serve as serve_module


def test_engine_transformers_loads_transformers_even_where_llamacpp_could_run(embedded_model):
    # The embedded model ships GGUF weights, so the old "auto" choice took llama.cpp here.
    from sllmbo.inference.transformers_backend import TransformersBackend

    backend = serve_module.load_backend("transformers", embedded_model, None, device="cpu")
    try:
        assert isinstance(backend, TransformersBackend)
        assert backend.name.startswith("transformers:")
    finally:
        backend.close()


def test_engine_llamacpp_loads_llamacpp(embedded_model):
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    from sllmbo.inference.llamacpp_backend import LlamaCppBackend

    backend = serve_module.load_backend("llamacpp", embedded_model, None, device="cpu")
    try:
        assert isinstance(backend, LlamaCppBackend)
    finally:
        backend.close()


def _cli(args, monkeypatch):
    from sllmbo.cli import serve

    seen = {}

    def serve_local(engine, model, **kwargs):
        seen["engine"] = engine
        return 0

    monkeypatch.setattr(serve_module, "serve_local", serve_local)
    monkeypatch.setattr("sllmbo.core.home.resolve_model", lambda name: "model-folder")
    monkeypatch.setattr("sllmbo.inference.models.resolve_adapter", lambda name, **k: None)
    app = typer.Typer()
    serve.register(app)
    app.command("noop")(lambda: None)  # two commands: typer keeps "serve" as a subcommand
    return CliRunner().invoke(app, ["serve", *args], env={"COLUMNS": "400"}), seen


@pytest.mark.parametrize("engine", ["transformers", "llamacpp"])
def test_the_cli_hands_the_named_engine_to_the_server(engine, monkeypatch):
    result, seen = _cli(["--engine", engine, "--port", "0"], monkeypatch)
    assert result.exit_code == 0, result.output
    assert seen["engine"] == engine


def test_an_unknown_engine_lists_the_three(monkeypatch):
    result, seen = _cli(["--engine", "llama"], monkeypatch)
    assert isinstance(result.exception, BackendError) and not seen
    assert "vllm, transformers, llamacpp" in (result.exception.hint or "")


def test_the_help_names_each_engine_for_what_runs(monkeypatch):
    result, _ = _cli(["--help"], monkeypatch)
    text = " ".join(result.output.split())
    assert "llamacpp (in-process llama.cpp, CPU)" in text
    assert "transformers (in-process, CPU or GPU)" in text


def test_serve_local_refuses_an_engine_it_does_not_run(tmp_path):
    with pytest.raises(BackendError, match="unknown in-process engine 'vllm'"):
        serve_module.serve_local("vllm", tmp_path, adapter=None, lora_name=None,
                                 host="127.0.0.1", port=0, device="cpu",
                                 on_ready=lambda *a: None)


def _cli_limits(args, monkeypatch):
    """``sllmbo serve ARGS`` through ``main`` (one message, exit 2 on bad values); the
    ``ServerLimits`` it hands the server, or None when it stopped first."""
    from sllmbo.cli import main

    seen = {}

    def serve_local(engine, model, **kwargs):
        seen["limits"] = kwargs["limits"]
        return 0

    monkeypatch.setattr(serve_module, "serve_local", serve_local)
    monkeypatch.setattr("sllmbo.core.home.resolve_model", lambda name: "model-folder")
    monkeypatch.setattr("sllmbo.inference.models.resolve_adapter", lambda name, **k: None)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--engine", "transformers", "--port", "0", *args])
    return exit_info.value.code, seen.get("limits")


def test_the_read_and_compile_timeouts_reach_the_server(monkeypatch):
    code, limits = _cli_limits(["--read-timeout", "2.5", "--compile-timeout", "30",
                                "--request-timeout", "60"], monkeypatch)
    assert code == 0
    assert (limits.read_timeout_s, limits.compile_timeout_s, limits.request_timeout_s) == (
        2.5, 30.0, 60.0)
    code, limits = _cli_limits([], monkeypatch)
    assert (limits.read_timeout_s, limits.compile_timeout_s) == (10.0, 10.0)  # the defaults


@pytest.mark.parametrize("flag", ["--read-timeout", "--compile-timeout", "--request-timeout"])
@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_a_bad_timeout_is_one_message_and_exit_2(flag, value, monkeypatch, capsys):
    code, limits = _cli_limits([flag, value], monkeypatch)
    err = capsys.readouterr().err
    assert code == 2 and limits is None
    assert "Traceback" not in err
    if flag != "--request-timeout" or value == "inf":  # click checks its minimum (1 s)
        assert f"{flag} must be a finite number of seconds > 0, got {value}" in err


def test_the_help_shows_the_timeouts(monkeypatch):
    result, _ = _cli(["--help"], monkeypatch)
    text = " ".join(result.output.split())
    assert "--read-timeout" in text and "--compile-timeout" in text
    assert "(408 past it" in text and "(400 past it" in text
