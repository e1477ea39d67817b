"""The llama.cpp CPU engine: merged GGUF, constrained answers, n answers in one batch, scoring,
engine choice, and no torch on the path of ``sllmbo recommend``.

Tests that run the engine skip (with the reason) where llama-cpp-python is not built; the
engine choice and the merge's layout checks run everywhere.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sllmbo.core.errors import BackendError
from sllmbo.inference.base import ChatRequest, SamplingParams
from sllmbo.inference.llamacpp_backend import unavailable_reason

ENGINE_MISSING = unavailable_reason()
needs_engine = pytest.mark.skipif(ENGINE_MISSING is not None,
                                  reason=f"llama.cpp engine not installed: {ENGINE_MISSING}")


def recommend_prompt(task: str = "bike_sharing", family: str = "lightgbm"):
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.core.prompts import config_schema, recommend_messages
    from sllmbo.data.resolve import registered_card

    fam = get_family(family)
    card = registered_card(task, fam, EvalSettings())
    space = fam.default_space(card.task_type)
    return recommend_messages(card, space), config_schema(space), space


@pytest.fixture(scope="module")
def engine(embedded_model):
    from sllmbo.inference.cpu_threads import usable_cores
    from sllmbo.inference.llamacpp_backend import LlamaCppBackend
    from sllmbo.inference.models import shipped_adapter_path

    # Threads pinned to the cores (the count varies the last digits): the numbers checked here
    # must not depend on what else the machine runs.
    backend = LlamaCppBackend(embedded_model, adapter_path=shipped_adapter_path(),
                              kv_files=False, n_threads=len(usable_cores()))
    yield backend
    backend.close()


# -- the merge ----------------------------------------------------------------------------------

def test_permuted_hf_rows_are_the_shipped_gguf_q_and_k(embedded_model):
    """The adapter's B rows for q/k must be permuted as llama.cpp stores q/k: the embedded
    model's own HF weights, permuted, are its GGUF tensors (up to bf16 rounding)."""
    import gguf
    from gguf.quants import dequantize

    from sllmbo.inference.gguf_merge import permute_rows, read_safetensors
    from sllmbo.inference.models import base_gguf

    hf = read_safetensors(embedded_model / "model.safetensors")
    tensors = {t.name: t for t in gguf.GGUFReader(str(base_gguf(embedded_model))).tensors}
    for hf_name, gguf_name, heads in (("q_proj", "attn_q", 9), ("k_proj", "attn_k", 3)):
        ours = dequantize(tensors[f"blk.2.{gguf_name}.weight"].data,
                          tensors[f"blk.2.{gguf_name}.weight"].tensor_type)
        theirs = hf[f"model.layers.2.self_attn.{hf_name}.weight"]
        assert np.abs(permute_rows(theirs, heads) - ours).max() < 0.01
        assert np.abs(theirs - ours).max() > 0.5  # unpermuted they differ: the test bites


def test_merged_q8_gguf_keeps_the_adapter_change(embedded_model):
    """Q8_0 keeps the LoRA change (a 4-bit re-quantization would erase most of it)."""
    import gguf
    from gguf.quants import dequantize

    from sllmbo.inference import merged_cache
    from sllmbo.inference.gguf_merge import lora_deltas
    from sllmbo.inference.models import base_gguf, shipped_adapter_path

    base = base_gguf(embedded_model)
    merged = merged_cache.gguf_file(base, shipped_adapter_path(), "Q8_0")
    name = "blk.5.attn_v.weight"
    get = {t.name: t for t in gguf.GGUFReader(str(merged)).tensors}[name]
    before = {t.name: t for t in gguf.GGUFReader(str(base)).tensors}[name]
    realised = dequantize(get.data, get.tensor_type) - dequantize(before.data,
                                                                  before.tensor_type)
    intended = lora_deltas(shipped_adapter_path(), 9, 3)[name]
    kept = float((realised * intended).sum() / (intended * intended).sum())
    assert 0.9 < kept < 1.1


def test_gguf_cache_key_follows_the_adapter_and_the_type(tmp_path):
    from sllmbo.inference.merged_cache import gguf_key

    base = tmp_path / "base.gguf"
    base.write_bytes(b"x" * 10)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "adapter_model.safetensors").write_bytes(b"a")
    first = gguf_key(base, adapter, "Q8_0")
    assert gguf_key(base, adapter, "Q8_0") == first
    assert gguf_key(base, adapter, "F16") != first
    assert gguf_key(base, None, "Q8_0") != first
    (adapter / "adapter_model.safetensors").write_bytes(b"b")  # retrained
    assert gguf_key(base, adapter, "Q8_0") != first


# -- engine choice ------------------------------------------------------------------------------

@pytest.mark.parametrize(("env", "device", "four_bit", "missing", "expected"), [
    ("auto", "cpu", False, None, "llamacpp"),
    ("auto", "auto", False, None, "llamacpp"),
    ("transformers", "cpu", False, None, "transformers"),
    ("auto", "cuda", False, None, "transformers"),
    ("auto", "cpu", True, None, "transformers"),
    ("auto", "cpu", False, "llama-cpp-python is not installed", "transformers"),
])
def test_auto_picks_llamacpp_on_a_cpu_and_says_why_not_otherwise(
        embedded_model, monkeypatch, env, device, four_bit, missing, expected):
    from sllmbo.inference import factory, llamacpp_backend

    monkeypatch.setenv(factory.ENGINE_ENV, env)
    monkeypatch.setattr(factory, "_cuda_visible", lambda: False)
    monkeypatch.setattr(llamacpp_backend, "unavailable_reason", lambda: missing)
    chosen, reason = factory.local_engine(embedded_model, device=device, load_in_4bit=four_bit)
    assert chosen == expected
    assert (reason is None) == (expected == "llamacpp")
    if missing:
        assert missing in reason


def test_forcing_llamacpp_where_it_cannot_run_is_one_clear_error(embedded_model, monkeypatch):
    from sllmbo.inference import factory, llamacpp_backend

    monkeypatch.setattr(llamacpp_backend, "unavailable_reason", lambda: "llguidance is gone")
    with pytest.raises(BackendError, match="llguidance is gone"):
        factory.local_engine(embedded_model, device="cpu", prefer="llamacpp")


# -- answers ------------------------------------------------------------------------------------

@needs_engine
def test_sampled_answers_are_all_valid_and_in_range(engine):
    messages, schema, space = recommend_prompt()
    requests = [ChatRequest(messages, schema, SamplingParams(temperature=1.0, seed=i))
                for i in range(8)]
    answers = engine.complete(requests)
    assert [a.finish_reason for a in answers] == ["stop"] * 8
    for answer in answers:
        space.validate(json.loads(answer.text))  # raises on any out-of-range value
    assert len({a.text for a in answers}) > 1  # different seeds, different answers


@needs_engine
def test_numeric_bounds_are_enforced_against_the_models_preference(engine):
    """Ranges the model would never pick on its own: the grammar keeps every value inside
    (a sampled tiny float may ramble on in digits until max_tokens; the finished ones are
    checked)."""
    messages, _, _ = recommend_prompt()
    schema = {"type": "object", "properties": {
        "learning_rate": {"type": "number", "minimum": 0.5, "maximum": 0.55},
        "n_estimators": {"type": "integer", "minimum": 3000, "maximum": 3002},
        "reg_alpha": {"type": "number", "minimum": 1e-08, "maximum": 2e-08}},
        "required": ["learning_rate", "n_estimators", "reg_alpha"],
        "additionalProperties": False}
    answers = engine.complete([ChatRequest(messages, schema, SamplingParams(
        max_tokens=64, temperature=t, seed=i)) for i, t in enumerate([0.0, 0.5, 1.0, 1.0, 1.0])])
    finished = [json.loads(a.text) for a in answers if a.finish_reason == "stop"]
    assert finished
    for value in finished:
        assert 0.5 <= value["learning_rate"] <= 0.55
        assert 3000 <= value["n_estimators"] <= 3002
        assert 1e-08 <= value["reg_alpha"] <= 2e-08


@needs_engine
def test_seeded_sampling_repeats_and_cut_answers_say_length(engine):
    messages, schema, _ = recommend_prompt()
    sampled = ChatRequest(messages, schema, SamplingParams(temperature=0.8, seed=7))
    assert engine.complete([sampled])[0].text == engine.complete([sampled])[0].text
    [cut] = engine.complete([ChatRequest(messages, schema,
                                         SamplingParams(max_tokens=5, temperature=0.0))])
    assert cut.finish_reason == "length" and cut.completion_tokens == 5


@needs_engine
def test_eight_answers_share_one_prefill_and_decode_as_one_batch(engine):
    """n rows of one prompt cost about as many forward passes as one answer, not n times."""
    messages, schema, _ = recommend_prompt("concrete_strength", "xgboost")
    engine.complete([ChatRequest(messages, schema, SamplingParams(temperature=0.0))])
    one = engine.last_stats["forward_passes"]
    engine.complete([ChatRequest(messages, schema, SamplingParams(temperature=0.8, seed=i))
                     for i in range(8)])
    assert engine.last_stats["forward_passes"] <= 2 * one
    assert engine.last_stats["answer_tokens"] >= 8 * 20


@needs_engine
def test_a_timed_decode_step_leaves_the_engine_answering_as_before(engine):
    """The benchmark's step timer uses the engine's own sequences: a greedy answer after it
    is the answer before it, and bad sizes are one clear error."""
    messages, schema, _ = recommend_prompt("concrete_strength", "xgboost")
    request = ChatRequest(messages, schema, SamplingParams(temperature=0.0))
    [before] = engine.complete([request])
    assert engine.decode_step_seconds(1, repeats=2) > 0
    assert engine.decode_step_seconds(40, repeats=2) > 0  # more tokens than sequences
    [after] = engine.complete([request])
    assert after.text == before.text
    with pytest.raises(BackendError, match="n_tokens"):
        engine.decode_step_seconds(0)


@needs_engine
def test_score_ranks_continuations_once_per_prompt(engine):
    """``score`` is the log-probability of each answer; the greedy answer beats the same
    answer with a value the model would not write, and a candidate scores the same alone as
    in a pool."""
    messages, schema, _ = recommend_prompt()
    [greedy] = engine.complete([ChatRequest(messages, schema, SamplingParams(temperature=0))])
    import re

    odd = re.sub(r'"num_leaves":\d+', '"num_leaves":253', greedy.text)
    assert odd != greedy.text
    pool = engine.score(messages, [greedy.text, odd, greedy.text])
    alone = engine.score(messages, [odd])
    assert pool[0] > pool[1]
    # Rows of one batch round a little differently (llama.cpp's kernels are not
    # batch-invariant): equal to well under a percent, not to the last digit.
    assert pool[0] == pytest.approx(pool[2], rel=0.01)
    assert alone[0] == pytest.approx(pool[1], rel=0.01)
    assert all(s < 0 and math.isfinite(s) for s in pool)


def score_prompts(n: int = 5):
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.core.prompts import SCORE_ANSWERS, score_messages
    from sllmbo.data.resolve import registered_card

    fam = get_family("lightgbm")
    card = registered_card("bike_sharing", fam, EvalSettings())
    space = fam.default_space(card.task_type)
    configs = [{**{p.name: p.low for p in space}, "num_leaves": 8 + 40 * i} for i in range(n)]
    return [score_messages(card, space, c) for c in configs], list(SCORE_ANSWERS)


@needs_engine
def test_choice_logprobs_share_the_head_and_match_one_prompt_at_a_time(engine):
    """Scoring a pool: the digits' log-probabilities of every candidate's prompt, the shared
    card/space/question computed once; the same numbers (to batch rounding) as each prompt
    alone, and a distribution (the ten digits take most of the mass after training; here the
    base answer's digits are at least valid log-probabilities)."""
    prompts, digits = score_prompts()
    pooled = engine.choice_logprobs(prompts, digits)
    alone = [engine.choice_logprobs([p], digits)[0] for p in prompts[:2]]
    assert len(pooled) == len(prompts) and all(len(row) == 10 for row in pooled)
    assert all(v <= 0 and math.isfinite(v) for row in pooled for v in row)
    assert sum(math.exp(v) for v in pooled[0]) <= 1.0 + 1e-6
    for i in range(2):  # a 70-token tail in one batch rounds differently from a 1-token one
        assert np.allclose(pooled[i], alone[i], atol=0.15)  # (measured: at most 0.09)
        assert int(np.argmax(pooled[i])) == int(np.argmax(alone[i]))
    assert not np.allclose(pooled[0], pooled[-1])  # the candidate is read

    with pytest.raises(BackendError, match="not one"):
        engine.choice_logprobs(prompts[:1], ["lightgbm is"])


@needs_engine
@pytest.mark.slow
def test_choice_logprobs_match_the_transformers_path(engine, embedded_model):
    """The reference: the same digit distribution from the transformers model in fp32, where
    left padding must change nothing (Q8_0 merged here, so close, not equal)."""
    from sllmbo.inference.models import shipped_adapter_path
    from sllmbo.inference.transformers_backend import TransformersBackend

    prompts, digits = score_prompts(3)
    reference = TransformersBackend(embedded_model, adapter_path=shipped_adapter_path(),
                                    device="cpu", dtype="float32")
    try:
        theirs = reference.choice_logprobs(prompts, digits)
        single = reference.choice_logprobs(prompts[:1], digits)
    finally:
        reference.close()
    ours = engine.choice_logprobs(prompts, digits)

    def over_digits(logp: list[float]) -> np.ndarray:
        p = np.exp(logp)
        return p / p.sum()

    # In fp32 left padding changes only summation order (in bf16 the logits move in steps of
    # 1/8 to 1/4, up to 0.16 of total variation); without position ids it is 0.29.
    assert np.abs(over_digits(theirs[0]) - over_digits(single[0])).sum() < 0.01
    for a, b in zip(ours, theirs, strict=True):
        assert np.abs(over_digits(a) - over_digits(b)).sum() < 0.2  # total variation


@needs_engine
@pytest.mark.slow
def test_greedy_answers_match_the_transformers_path(engine, embedded_model):
    """The reference check. The arithmetic is not the same (llama.cpp: the exact Q4_1 base +
    LoRA at Q8_0; transformers: the bf16 base + LoRA in bf16), and greedy decoding amplifies a
    near-tie digit, so the texts rarely match exactly (0 of 10 measured); the answers are
    valid, have the same keys, and most values agree within a factor of 2 (75% measured on
    10 prompts; the tiny reg_alpha/reg_lambda differ most)."""
    from sllmbo.eval.bench_prompts import make_request, prompts
    from sllmbo.inference.models import shipped_adapter_path
    from sllmbo.inference.transformers_backend import TransformersBackend

    reference = TransformersBackend(embedded_model, adapter_path=shipped_adapter_path(),
                                    device="cpu")
    greedy = SamplingParams(max_tokens=256, temperature=0.0)
    close, total = 0, 0
    try:
        for i in range(4):
            ours = engine.complete([make_request(i, greedy)])[0]
            theirs = reference.complete([make_request(i, greedy)])[0]
            assert ours.finish_reason == "stop", ours.error
            a, b = json.loads(ours.text), json.loads(theirs.text)
            prompts()[i][1].validate(a)
            assert list(a) == list(b)
            for key, value in a.items():
                total += 1
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    close += value > 0 and b[key] > 0 and abs(math.log(value / b[key])) < math.log(2)
                else:
                    close += value == b[key]
    finally:
        reference.close()
    assert close >= 0.6 * total, f"{close} of {total} values agree"


@needs_engine
@pytest.mark.slow
def test_recommend_command_imports_no_torch_and_says_which_engine_answered(embedded_model):
    env = {**os.environ, "SLLMBO_KV_CACHE": "0"}
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "sllmbo", "recommend", "--task",
         "bike_sharing", "--model", "lightgbm", "--decode", "greedy"],
        capture_output=True, text=True, env=env, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    imported = {line.split("|")[-1].strip().split(".")[0]
                for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert not imported & {"torch", "transformers", "xgrammar", "peft"}
    assert "note: answered by llamacpp:" in proc.stderr
    json.loads(proc.stdout)


@needs_engine
def test_each_call_decodes_on_the_threads_chosen_for_it(engine):
    from sllmbo.inference.cpu_threads import ThreadChooser

    messages, schema, space = recommend_prompt()
    pinned = engine.threads
    try:
        engine.threads = ThreadChooser(fixed=1)  # as when another process takes a core
        [answer] = engine.complete([ChatRequest(messages, schema, SamplingParams(temperature=0))])
        assert engine.n_threads == 1
        space.validate(json.loads(answer.text))
    finally:
        engine.threads = pinned
        engine.complete([ChatRequest(messages, schema, SamplingParams(max_tokens=1))])
    assert engine.n_threads == pinned.choose()


def test_merge_refuses_an_adapter_it_cannot_map(tmp_path):
    from sllmbo.inference.gguf_merge import lora_deltas

    (tmp_path / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "use_dora": True}))
    with pytest.raises(BackendError, match="not a plain LoRA"):
        lora_deltas(Path(tmp_path), 9, 3)


def test_decode_floors_price_the_answers_own_passes():
    """One answer of 50 passes at 10 ms a one-token step cannot take under 0.5 s; 8 answers of
    640 tokens in 40 passes (16 a pass) at 60 ms a 16-token step, under 2.4 s."""
    from sllmbo.eval.bench_cpu_engine import decode_floors

    row = {"decode_step_s": {1: 0.010, 2: 0.020, 8: 0.032, 16: 0.060, 32: 0.130},
           "warm_answer_stats": {"forward_passes": 50, "answer_tokens": 94},
           "eight_sampled_stats": {"forward_passes": 40, "answer_tokens": 640}}
    floors = decode_floors(row)
    assert floors["one_answer_s"] == pytest.approx(0.5)
    assert floors["eight_answers_s"] == pytest.approx(2.4)
    assert floors["eight_over_one"] == pytest.approx(4.8)
    row["eight_sampled_stats"] = {"forward_passes": 40, "answer_tokens": 480}  # 12 a pass
    assert decode_floors(row)["eight_answers_s"] == pytest.approx(40 * 0.032 * 12 / 8)


@needs_engine
def test_seed_minus_one_from_python_is_the_fixed_seed_2_64_minus_1(engine):
    # Issue 38 left seed -1 to the server's validator: from Python, numpy's generator
    # refused it ("expected non-negative integer"). A negative seed is its unsigned 64-bit
    # twin for every backend (``SamplingParams``; torch, and so vLLM, read it so).
    messages, schema, _ = recommend_prompt()

    def ask(seed: int):
        return engine.complete([ChatRequest(messages, schema, SamplingParams(
            max_tokens=48, temperature=1.0, seed=seed))])[0]

    minus_one, twin = ask(-1), ask(2**64 - 1)
    assert minus_one.finish_reason in ("stop", "length"), minus_one.error
    assert minus_one.text == twin.text
