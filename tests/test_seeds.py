"""One meaning of a seed for every backend, checked in one place (``SamplingParams``).

A negative seed is a fixed seed, its unsigned 64-bit twin (``-1`` is ``2**64 - 1``), as torch
reads it and so vLLM (a per-request ``torch.Generator().manual_seed(seed)``; its OpenAI server
takes -2**63 to 2**63 - 1). It is not llama.cpp's "-1: pick one at random"; random sampling
is ``seed=None``. Issue 38 left it to the server's validator, so ``seed=-1`` from Python
raised numpy's error on the llama.cpp engine (``tests/test_llamacpp_backend.py`` runs it)."""

from __future__ import annotations

import dataclasses
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from sllmbo.inference.base import ChatRequest, SamplingParams, signed_seed, unsigned_seed

MESSAGES = [{"role": "user", "content": "go"}]


@pytest.mark.parametrize(("given", "kept"), [
    (-1, 2**64 - 1), (-(2**63), 2**63), (0, 0), (7, 7), (2**64 - 1, 2**64 - 1),
    (np.int64(-1), 2**64 - 1), (np.uint64(2**64 - 1), 2**64 - 1)])
def test_a_seed_is_kept_as_its_unsigned_64_bit_number(given, kept):
    sampling = SamplingParams(seed=given)
    assert sampling.seed == kept and type(sampling.seed) is int
    assert dataclasses.replace(sampling, temperature=0.1).seed == kept  # checked again: same
    assert SamplingParams().seed is None  # random


@pytest.mark.parametrize(("given", "message"), [
    (2**64, "seed must be a 64-bit integer"), (-(2**63) - 1, "seed must be a 64-bit integer"),
    (1.5, "seed must be an integer or None"), ("7", "seed must be an integer or None"),
    (True, "seed must be an integer or None")])
def test_a_seed_outside_64_bits_or_not_an_integer_is_refused(given, message):
    with pytest.raises(ValueError, match=message):
        SamplingParams(seed=given)


def test_the_signed_and_unsigned_forms_are_one_seed():
    for seed in (-1, -(2**63), 0, 5, 2**63 - 1, 2**63, 2**64 - 1):
        assert unsigned_seed(signed_seed(seed)) == unsigned_seed(seed)
        assert -(2**63) <= signed_seed(seed) < 2**63
    assert signed_seed(2**64 - 1) == -1 and signed_seed(5) == 5


class _Recorder(BaseHTTPRequestHandler):
    """Notes each request body and answers a valid chat completion."""

    def do_POST(self) -> None:
        self.server.bodies.append(json.loads(self.rfile.read(  # type: ignore[attr-defined]
            int(self.headers["Content-Length"]))))
        data = json.dumps({"id": "x", "object": "chat.completion", "created": 0, "model": "m",
                           "choices": [{"index": 0, "finish_reason": "stop", "message": {
                               "role": "assistant", "content": "{}"}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_the_openai_backend_sends_the_signed_form_a_vllm_server_takes():
    # vLLM's server refuses seeds above 2**63 - 1 (its field is a signed 64-bit integer):
    # 2**64 - 1, which -1 now is, goes out as -1, which torch reads as the same seed.
    from sllmbo.inference.openai_backend import OpenAIBackend

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.bodies = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
        backend = OpenAIBackend(url, model="m", max_retries=0)
        for seed in (-1, 2**64 - 1, 2**63, 5):
            backend.complete([ChatRequest(MESSAGES, sampling=SamplingParams(
                max_tokens=4, seed=seed))])
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert [b["seed"] for b in httpd.bodies] == [-1, -1, -(2**63), 5]  # type: ignore[attr-defined]


def test_the_transformers_engine_reads_minus_one_as_2_64_minus_1(tiny_backend):
    def ask(seed: int) -> str:
        return tiny_backend.complete([ChatRequest(MESSAGES, sampling=SamplingParams(
            max_tokens=8, temperature=1.0, seed=seed))])[0].text

    assert ask(-1) == ask(2**64 - 1)
