"""The one-request fast path (jump-forward, prompt cache, merged adapter) against ``generate``.

Exactness is checked in fp32: in bf16 a several-token forward pass rounds differently from a
one-token one, which can flip a near tie (the benchmark reports the bf16 agreement rate).
"""

from __future__ import annotations

import json

import pytest
from inference_fixtures import SCHEMAS, build_lora_adapter

from sllmbo.inference import ChatRequest, SamplingParams
from sllmbo.inference.transformers_backend import TransformersBackend


def ask(backend: TransformersBackend, request: ChatRequest, *, fast: bool):
    """One completion through the fast path or through ``generate``."""
    decoder = backend.fast_decoder
    if not fast:
        backend.fast_decoder = None
    try:
        [completion] = backend.complete([request])
    finally:
        backend.fast_decoder = decoder
    return completion


def request(content: str, schema=None, **sampling) -> ChatRequest:
    sampling.setdefault("temperature", 0.0)
    sampling.setdefault("max_tokens", 48)
    return ChatRequest([{"role": "system", "content": "Answer with JSON only."},
                        {"role": "user", "content": content}], schema, SamplingParams(**sampling))


@pytest.fixture(scope="module")
def tiny_fp32(tiny_model):
    backend = TransformersBackend(tiny_model, device="cpu", dtype="float32")
    assert backend.fast_decoder is not None
    yield backend
    backend.close()


@pytest.mark.parametrize("family", ["lightgbm", "finite", None])
def test_fast_greedy_equals_generate_on_a_random_model(tiny_fp32, family):
    schema = SCHEMAS[family] if family else None
    for i in range(3):
        req = request(f"dataset {i}: suggest hyperparameters", schema)
        slow, fast = ask(tiny_fp32, req, fast=False), ask(tiny_fp32, req, fast=True)
        assert (fast.text, fast.finish_reason) == (slow.text, slow.finish_reason)
        assert fast.completion_tokens == slow.completion_tokens
        assert fast.prompt_tokens == slow.prompt_tokens


def test_prompt_cache_prefills_only_the_new_tail_and_changes_nothing(tiny_fp32):
    decoder = tiny_fp32.fast_decoder
    head = "a long shared head that a study repeats on every trial " * 4
    first = ask(tiny_fp32, request(head + "trial 1", SCHEMAS["finite"]), fast=True)
    cached_ids = decoder.prompt_cache.ids
    assert cached_ids  # the prompt and the fed answer tokens stay cached
    second_req = request(head + "trial 2 and more history", SCHEMAS["finite"])
    tokens = tiny_fp32.tokenizer.encode(tiny_fp32._render(second_req.messages),
                                        add_special_tokens=False)
    shared = next(i for i, (a, b) in enumerate(zip(cached_ids, tokens, strict=False)) if a != b)
    result = decoder.decode(tokens, tiny_fp32._grammars.get(SCHEMAS["finite"]),
                            max_tokens=48, temperature=0.0, top_p=1.0, seed=None,
                            max_time_s=None)
    assert result.prefilled == len(tokens) - shared < len(tokens) // 2
    decoder.prompt_cache.clear()
    fresh = decoder.decode(tokens, tiny_fp32._grammars.get(SCHEMAS["finite"]), max_tokens=48,
                           temperature=0.0, top_p=1.0, seed=None, max_time_s=None)
    assert fresh.prefilled == len(tokens)
    assert fresh.tokens == result.tokens
    assert first.finish_reason == "stop"


def test_fast_seeded_sampling_repeats_and_stays_valid(tiny_fp32):
    req = request("sample one", SCHEMAS["lightgbm"], temperature=0.9, top_p=0.9, seed=7,
                  max_tokens=128)
    a, b = ask(tiny_fp32, req, fast=True), ask(tiny_fp32, req, fast=True)
    assert a.text == b.text
    if a.finish_reason == "stop":
        json.loads(a.text)


def test_fast_path_cuts_at_max_tokens_and_says_length(tiny_fp32):
    out = ask(tiny_fp32, request("ramble", None, max_tokens=5), fast=True)
    assert out.finish_reason == "length"
    assert out.completion_tokens == 5


def test_fast_path_stops_at_max_time_with_an_error(tiny_fp32):
    out = ask(tiny_fp32, request("ramble", None, max_tokens=400, max_time_s=0.001), fast=True)
    assert out.finish_reason == "error"
    assert "max_time_s" in (out.error or "")


def test_merged_adapter_answers_like_the_peft_wrapped_one(tiny_model, tmp_path):
    adapter = build_lora_adapter(tiny_model, tmp_path / "lora", scale=0.5)
    merged = TransformersBackend(tiny_model, adapter_path=adapter, device="cpu",
                                 dtype="float32")
    wrapped = TransformersBackend(tiny_model, adapter_path=adapter, device="cpu",
                                  dtype="float32", merge_adapter=False, fast_decode=False)
    assert not hasattr(merged.model, "peft_config")  # folded into the base weights
    assert hasattr(wrapped.model, "peft_config")
    for i in range(3):
        req = request(f"adapter {i}", SCHEMAS["lightgbm"], max_tokens=64)
        assert ask(merged, req, fast=True).text == wrapped.complete([req])[0].text


@pytest.mark.slow
def test_fast_greedy_equals_generate_on_real_recommend_prompts(embedded_model):
    """The embedded model on what ``sllmbo recommend`` sends, in fp32: the same answers, and
    the fast path reaches them in fewer forward passes than tokens."""
    from sllmbo.eval.bench_prompts import make_request

    backend = TransformersBackend(embedded_model, device="cpu", dtype="float32")
    greedy = SamplingParams(max_tokens=128, temperature=0.0)
    for i in range(3):
        req = make_request(i, greedy)
        slow, fast = ask(backend, req, fast=False), ask(backend, req, fast=True)
        assert fast.text == slow.text and fast.finish_reason == "stop"
    backend.close()


def test_ngram_lookup_drafts_what_followed_the_latest_occurrence():
    from sllmbo.inference.fast_decode import NgramLookup

    lookup = NgramLookup([5, 6, 7, 8, 9, 1, 5, 6, 7, 2, 3])
    assert lookup.propose([5, 6, 7], 2) == [2, 3]  # the latest "5 6 7" was followed by 2 3
    assert lookup.propose([], 4) == []  # the tail "7 2 3" never occurred before
    tail = NgramLookup([1, 2, 3, 4, 5, 1])
    assert tail.propose([2, 3], 2) == [4, 5]  # the pending draft completes the tail "1 2 3"
