"""TransformersBackend on tiny random-weight Llamas: loading, batching, limits, errors, adapters."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from inference_fixtures import SCHEMAS, build_lora_adapter, build_tiny_llama, copy_tokenizer

from sllmbo.core.errors import BackendError, ModelNotFoundError
from sllmbo.inference import ChatRequest, SamplingParams
from sllmbo.inference.transformers_backend import TransformersBackend

MESSAGES = [{"role": "user", "content": "Suggest hyperparameters as JSON."}]


def req(schema=None, **sampling) -> ChatRequest:
    sampling.setdefault("temperature", 0.0)
    return ChatRequest(MESSAGES, schema, SamplingParams(**sampling))


def test_backend_reports_tokens_context_and_name(tiny_backend, tiny_model):
    assert tiny_backend.context_length == 512
    assert tiny_backend.count_tokens("hello world") == 2
    assert tiny_backend.name == f"transformers:{tiny_model.name}"


def test_unconstrained_generation_is_cut_at_max_tokens_and_says_length(tiny_backend):
    [c] = tiny_backend.complete([req(max_tokens=5)])
    assert c.finish_reason == "length"
    assert c.completion_tokens == 5
    assert c.prompt_tokens == tiny_backend.count_tokens(
        tiny_backend.tokenizer.apply_chat_template(MESSAGES, tokenize=False,
                                                   add_generation_prompt=True))
    with pytest.raises(ValueError, match="cut off"):
        c.parse_json()


def test_finite_schema_finishes_and_parses_even_with_random_weights(tiny_backend):
    outs = tiny_backend.complete([req(SCHEMAS["finite"], max_tokens=64, temperature=t, seed=i)
                                  for i, t in enumerate([0.0, 1.0, 1.0, 0.7])])
    for c in outs:
        assert c.finish_reason == "stop", c
        value = c.parse_json()
        assert value["kernel"] in ("rbf", "linear") and isinstance(value["shrinking"], bool)


def test_greedy_is_deterministic_and_seeded_sampling_repeats(tiny_backend):
    a, b = tiny_backend.complete([req(max_tokens=8), req(max_tokens=8)])
    assert a.text == b.text
    s1 = tiny_backend.complete([req(max_tokens=8, temperature=1.0, seed=7)])[0]
    s2 = tiny_backend.complete([req(max_tokens=8, temperature=1.0, seed=7)])[0]
    assert s1.text == s2.text


def test_batch_answers_in_order_across_sampling_groups_and_schemas(tiny_backend):
    requests = [req(SCHEMAS["finite"], max_tokens=64), req(max_tokens=3),
                req(SCHEMAS["finite"], max_tokens=64, temperature=1.0, seed=1), req(max_tokens=4)]
    outs = tiny_backend.complete(requests)
    assert [c.finish_reason for c in outs] == ["stop", "length", "stop", "length"]
    assert [c.completion_tokens for c in outs][1::2] == [3, 4]
    # batched with a free row, the constrained row gives what it gives alone
    assert outs[0].text == tiny_backend.complete([requests[0]])[0].text


@pytest.mark.parametrize(("schema", "match"), [
    ({"type": "foo"}, "invalid JSON Schema"),
    ({"type": "object", "properties": {"a": {"$ref": "#/nope"}}}, "cannot compile"),
])
def test_bad_schema_is_a_backend_error_naming_the_problem(tiny_backend, schema, match):
    with pytest.raises(BackendError, match=match):
        tiny_backend.complete([req(schema, max_tokens=4)])


def test_missing_model_folder_is_model_not_found(tmp_path):
    with pytest.raises(ModelNotFoundError, match=r"no config\.json"):
        TransformersBackend(tmp_path / "nothing", device="cpu")


def test_folder_that_is_not_a_causal_lm_is_rejected(tmp_path, embedded_model):
    from transformers import T5Config

    T5Config(vocab_size=49152, d_model=16, d_ff=32, num_layers=1, num_heads=2).save_pretrained(
        tmp_path)
    copy_tokenizer(embedded_model, tmp_path)
    with pytest.raises(BackendError, match="not a causal language model"):
        TransformersBackend(tmp_path, device="cpu")


def test_load_in_4bit_on_cpu_is_refused_with_a_hint(tiny_model):
    with pytest.raises(BackendError, match="needs a CUDA GPU"):
        TransformersBackend(tiny_model, device="cpu", load_in_4bit=True)


def test_adapter_loads_and_changes_the_output(tiny_model, tiny_backend, tmp_path):
    adapter = build_lora_adapter(tiny_model, tmp_path / "lora", scale=2.0)
    with TransformersBackend(tiny_model, adapter_path=adapter, device="cpu") as tuned:
        assert tuned.name.endswith("+lora")
        base_text = tiny_backend.complete([req(max_tokens=8)])[0].text
        assert tuned.complete([req(max_tokens=8)])[0].text != base_text
        [c] = tuned.complete([req(SCHEMAS["finite"], max_tokens=64)])
        assert c.finish_reason == "stop" and "kernel" in c.parse_json()


def test_merged_weights_are_cached_and_answer_like_a_fresh_merge(tiny_model, tmp_path,
                                                                 monkeypatch):
    import sys

    monkeypatch.setenv("SLLMBO_HOME", str(tmp_path / "home"))
    adapter = build_lora_adapter(tiny_model, tmp_path / "lora", scale=2.0)
    ask = [req(SCHEMAS["finite"], max_tokens=64), req(max_tokens=12)]
    with TransformersBackend(tiny_model, adapter_path=adapter, device="cpu") as first:
        fresh = [c.text for c in first.complete(ask)]
    [entry] = (tmp_path / "home" / "cache" / "merged").iterdir()
    assert (entry / "config.json").is_file()
    monkeypatch.setitem(sys.modules, "peft", None)  # a cached load must not need peft
    with TransformersBackend(tiny_model, adapter_path=adapter, device="cpu") as second:
        assert [c.text for c in second.complete(ask)] == fresh
    # A changed adapter is a new entry, not the stale one.
    monkeypatch.delitem(sys.modules, "peft")
    other = build_lora_adapter(tiny_model, tmp_path / "lora2", seed=1, scale=2.0)
    with TransformersBackend(tiny_model, adapter_path=other, device="cpu"):
        pass
    assert len(list((tmp_path / "home" / "cache" / "merged").iterdir())) == 2


@pytest.mark.parametrize("record_base", [True, False],
                         ids=["base-path-recorded", "base-path-unknown"])
def test_adapter_from_another_base_is_a_clear_error(tiny_model, embedded_model, tmp_path,
                                                    record_base):
    other = build_tiny_llama(tmp_path / "other", embedded_model, hidden_size=32)
    adapter = build_lora_adapter(other, tmp_path / "lora")
    if not record_base:
        cfg_path = adapter / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = "someone/elses-model"
        cfg_path.write_text(json.dumps(cfg))
    match = "hidden_size" if record_base else "does not fit base model"
    with pytest.raises(BackendError, match=match):
        TransformersBackend(tiny_model, adapter_path=adapter, device="cpu")


def test_adapter_folder_without_config_is_model_not_found(tmp_path):
    from sllmbo.inference.models import resolve_adapter

    with pytest.raises(ModelNotFoundError, match=r"no adapter_config\.json"):
        resolve_adapter(str(tmp_path))


def test_model_without_chat_template_is_refused(tiny_model, tmp_path):
    import shutil

    folder = Path(shutil.copytree(tiny_model, tmp_path / "no-template"))
    (folder / "chat_template.jinja").unlink()
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    with pytest.raises(BackendError, match="no chat template"):
        TransformersBackend(folder, device="cpu")
