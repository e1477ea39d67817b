"""create_backend, model resolution, the CLI groups, and the GPU paths (skipped on CPU)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from sllmbo.core.errors import BackendError, ModelNotFoundError
from sllmbo.core.home import resolve_model
from sllmbo.inference import create_backend
from sllmbo.inference.models import list_models
from sllmbo.inference.serve import vllm_serve_command


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def test_importing_the_package_loads_no_heavy_library():
    code = ("import sys, sllmbo.inference; "
            "print(sorted(m for m in ('torch', 'transformers', 'openai', 'vllm') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_default_model_missing_says_how_to_pull(tmp_path, monkeypatch):
    monkeypatch.setenv("SLLMBO_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="no model at") as info:
        create_backend("transformers")
    assert "sllmbo models pull" in info.value.hint


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"kind": "tensorrt"}, "unknown backend kind"),
    ({"kind": "transformers", "base_url": "http://x"}, "only for the openai backend"),
    ({"kind": "transformers", "llm": "/no/such/folder"}, "no model at /no/such/folder"),
])
def test_bad_factory_arguments_fail_fast(kwargs, match):
    with pytest.raises(BackendError, match=match):
        create_backend(**kwargs)


def test_list_models_shows_default_models_and_adapters(tmp_path):
    (tmp_path / "models" / "codellama").mkdir(parents=True)
    (tmp_path / "models" / "codellama" / "config.json").write_text("{}")
    (tmp_path / "adapters" / "hpo").mkdir(parents=True)
    (tmp_path / "adapters" / "hpo" / "adapter_config.json").write_text(
        '{"base_model_name_or_path": "codellama"}')
    rows = {(e.name, e.kind, e.ready, e.base) for e in list_models(tmp_path)}
    assert rows == {("smollm2-135m-instruct", "model", False, None),
                    ("codellama", "model", True, None), ("hpo", "adapter", True, "codellama")}
    assert resolve_model("codellama", tmp_path) == tmp_path / "models" / "codellama"


def test_vllm_serve_command_serves_the_adapter_under_its_lora_name():
    cmd = vllm_serve_command(Path("/m/base"), host="127.0.0.1", port=8123, served_name="base",
                             adapter=Path("/a/hpo"), lora_name="hpo")
    assert cmd[cmd.index("serve") + 1] == "/m/base"
    joined = " ".join(cmd)
    assert "--host 127.0.0.1 --port 8123" in joined
    assert "--enable-lora --lora-modules hpo=/a/hpo" in joined


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vLLM is installed")
def test_vllm_backend_without_vllm_says_how_to_install(embedded_model):
    with pytest.raises(BackendError, match="needs vLLM") as info:
        create_backend("vllm", llm=str(embedded_model))
    assert "sllmbo[gpu]" in info.value.hint


def _cli() -> typer.Typer:
    from sllmbo.cli import models, serve

    app = typer.Typer()
    models.register(app)
    serve.register(app)
    return app


def test_models_list_cli_prints_a_table(tmp_path, monkeypatch):
    monkeypatch.setenv("SLLMBO_HOME", str(tmp_path))
    result = CliRunner().invoke(_cli(), ["models", "list"])
    assert result.exit_code == 0 and "smollm2" in result.output


def test_serve_cli_rejects_an_unknown_engine(embedded_model):
    result = CliRunner().invoke(_cli(), ["serve", "--engine", "tgi",
                                         "--model", str(embedded_model)])
    assert isinstance(result.exception, BackendError) and "unknown engine" in str(result.exception)


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None or not _cuda(),
                    reason="needs vLLM and a CUDA GPU")
def test_vllm_constrained_batch_parses(embedded_model):
    import jsonschema
    from inference_fixtures import SCHEMAS

    from sllmbo.inference import ChatRequest, SamplingParams

    with create_backend("vllm", llm=str(embedded_model)) as backend:
        requests = [ChatRequest([{"role": "user", "content": f"LightGBM params, task {i}"}],
                                SCHEMAS["lightgbm"], SamplingParams(max_tokens=96, seed=i))
                    for i in range(32)]
        outs = backend.complete(requests)
    ok = [c for c in outs if c.finish_reason == "stop"]
    assert len(ok) >= 30
    for c in ok:
        jsonschema.validate(c.parse_json(), SCHEMAS["lightgbm"])


@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is None or not _cuda(),
                    reason="needs bitsandbytes and a CUDA GPU")
def test_load_in_4bit_generates_constrained_json(tiny_model):
    from inference_fixtures import SCHEMAS

    from sllmbo.inference import ChatRequest, SamplingParams

    with create_backend("transformers", llm=str(tiny_model), load_in_4bit=True) as backend:
        [c] = backend.complete([ChatRequest([{"role": "user", "content": "go"}],
                                            SCHEMAS["finite"], SamplingParams(max_tokens=64))])
    assert c.finish_reason == "stop" and "kernel" in c.parse_json()


def test_the_default_adapter_ships_and_applies_only_to_the_embedded_model(embedded_model,
                                                                          tiny_model):
    from sllmbo.inference.adapters import check_adapter_fits
    from sllmbo.inference.models import resolve_adapter, shipped_adapter_path

    shipped = shipped_adapter_path()
    assert (shipped / "adapter_config.json").is_file(), "inference/default_adapter is missing"
    assert (shipped / "data_card.json").is_file()  # eval checks it never saw a held-out task
    assert resolve_adapter("default") == shipped
    assert resolve_adapter("default", model_path=embedded_model) == shipped
    assert resolve_adapter("default", model_path=tiny_model) is None  # trained on another base
    assert resolve_adapter("none") is None and resolve_adapter(None) is None
    import json

    base_config = json.loads((embedded_model / "config.json").read_text())
    check_adapter_fits(shipped, embedded_model, base_config)


def test_openai_backend_takes_the_default_adapter_setting_but_no_folder():
    for adapter in ("default", "none", None):
        create_backend("openai", base_url="http://127.0.0.1:9/v1", adapter=adapter)
    with pytest.raises(BackendError, match="takes no adapter folder"):
        create_backend("openai", base_url="http://127.0.0.1:9/v1", adapter="/some/lora")
