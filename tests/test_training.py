"""Fine-tuning on tiny random-weight Llamas (the embedded model's tokenizer and chat template):
training steps, completion-only masking on real instruction examples, the adapter folder,
resume, merge, and a real 4-bit QLoRA step on CPU."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.training.recipe import Recipe

optuna.logging.set_verbosity(optuna.logging.WARNING)
pytestmark = pytest.mark.slow  # each test builds a trainer: 5-20 s on 2 cores

#: Small, fast settings: no warm-up (the first step must move), no dropout (repeatable).
FAST = {"max_length": 256, "batch_size": 2, "grad_accum": 1, "learning_rate": 5e-3,
        "warmup_ratio": 0.0, "lora_dropout": 0.0, "lora_r": 4, "lora_alpha": 8,
        "logging_steps": 1, "eval_steps": 1, "eval_max_examples": 2, "precision": "fp32"}


def recipe(base: Path, **changes) -> Recipe:
    return Recipe(name="test-adapter", base_model=str(base), **{**FAST, **changes})


def chat_row(task: str, question: str, answer: str) -> dict:
    return {"prompt": [{"role": "system", "content": "Answer with one JSON object."},
                       {"role": "user", "content": question}],
            "completion": [{"role": "assistant", "content": answer}],
            "kind": "single-shot", "task": task}


def write_data(root: Path, train: list[dict], validation: list[dict]) -> Path:
    """An instruction-data folder like ``sllmbo data build`` writes (dataset + card)."""
    from datasets import Dataset, DatasetDict

    DatasetDict({"train": Dataset.from_list(train),
                 "validation": Dataset.from_list(validation)}).save_to_disk(str(root / "dataset"))
    card = {"format": "sllmbo-instructions/1",
            "n_examples": {"train": len(train), "validation": len(validation)},
            "tasks": {"train": sorted({r["task"] for r in train}),
                      "validation": sorted({r["task"] for r in validation})}}
    (root / "data_card.json").write_text(json.dumps(card))
    return root


@pytest.fixture(scope="module")
def repeated_data(tmp_path_factory) -> Path:
    """One short example repeated: the loss on it must fall step after step."""
    row = chat_row("task_a", "Recommend lightgbm settings for task_a.",
                   '{"learning_rate":0.05,"num_leaves":31}')
    val = chat_row("task_b", "Recommend lightgbm settings for task_b.", '{"num_leaves":64}')
    return write_data(tmp_path_factory.mktemp("repeated"), [row] * 8, [val] * 2)


def base_logits(model_dir: Path, adapter: Path | None = None):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    if adapter is not None:
        model = PeftModel.from_pretrained(model, str(adapter))
    ids = torch.tensor([[1, 520, 2048, 77, 9001, 42, 3]])
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_two_steps_lower_the_loss_and_write_a_loadable_adapter(tiny_model, repeated_data,
                                                                 tmp_path):
    import torch

    from sllmbo.training.sft import train

    out = tmp_path / "adapter"
    result = train(recipe(tiny_model, max_steps=2), data=repeated_data, out=out,
                   progress=False, echo=lambda _: None)
    losses = [loss for _, loss in result.metrics["train_loss"]]
    assert len(losses) == 2 and losses[1] < losses[0]
    assert [s for s, _ in result.metrics["eval_loss"]] == [1, 2]
    assert result.metrics["final_eval_loss"] is not None and result.metrics["tokens_per_s"] > 0

    files = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "recipe.json", "metrics.json",
            "base_config.json", "training.json", "data_card.json", "loss_curve.png"} <= files
    assert "checkpoints" not in files  # removed once the adapter is written
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["base_model_name_or_path"] == str(tiny_model.resolve())
    linear = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {name.rsplit(".", 1)[-1] for name in config["target_modules"]} == linear
    info = json.loads((out / "training.json").read_text())
    card_bytes = (repeated_data / "data_card.json").read_bytes()
    import hashlib

    assert info["data"]["card_sha256"] == hashlib.sha256(card_bytes).hexdigest()
    assert info["base_model"]["model_type"] == "llama"
    resolved = json.loads((out / "recipe.json").read_text())
    assert resolved["precision"] == "fp32" and resolved["schedule"]["max_steps"] == 2
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    model_card = (out / "README.md").read_text()
    assert "## Data" in model_card and "2 steps" in model_card  # ours, not PEFT's template

    # peft loads it back and it changes the model's outputs
    assert not torch.allclose(base_logits(tiny_model), base_logits(tiny_model, out), atol=1e-6)


def test_the_adapter_loads_in_the_transformers_backend(tiny_model, repeated_data, tmp_path):
    from sllmbo.inference.transformers_backend import TransformersBackend
    from sllmbo.training.sft import train

    out = tmp_path / "adapter"
    train(recipe(tiny_model, max_steps=1, eval_steps=0), data=repeated_data, out=out,
          progress=False, echo=lambda _: None)
    backend = TransformersBackend(tiny_model, adapter_path=out, device="cpu")
    wrapped = TransformersBackend(tiny_model, adapter_path=out, device="cpu",
                                  merge_adapter=False)
    try:
        assert backend.name.endswith("+adapter")
        assert type(backend.model).__name__ == "LlamaForCausalLM"  # merged at load
        assert type(wrapped.model).__name__ == "PeftModelForCausalLM"
    finally:
        backend.close()
        wrapped.close()


def test_merge_writes_a_model_equal_to_base_plus_adapter(tiny_model, repeated_data, tmp_path):
    import torch

    from sllmbo.training.sft import train

    out = tmp_path / "adapter"
    result = train(recipe(tiny_model, max_steps=1, eval_steps=0), data=repeated_data, out=out,
                   merge=True, progress=False, echo=lambda _: None)
    assert result.merged == out / "merged"
    assert (out / "merged" / "tokenizer.json").is_file()
    assert torch.allclose(base_logits(out / "merged"), base_logits(tiny_model, out), atol=1e-4)


@pytest.fixture(scope="module")
def instruction_data(embedded_model, tmp_path_factory) -> Path:
    """Real examples from the instruction builder (toy studies, the embedded tokenizer)."""
    from optuna.trial import create_trial

    from sllmbo.core.families import get_family
    from sllmbo.core.taskcard import TaskCard
    from sllmbo.data.build import build_dataset, load_tokenizer
    from sllmbo.data.instructions import BuildOptions

    root = tmp_path_factory.mktemp("instructions")
    url = f"sqlite:///{root / 'logs.db'}"
    space = get_family("lightgbm").default_space()
    for task in ("task_a", "task_b"):
        study = optuna.create_study(storage=url, study_name=f"corpus:{task}")
        study.set_user_attr("sllmbo:task_card", TaskCard(
            task=task, task_type="regression", model_family="lightgbm", metric="rmse",
            direction="minimize", n_rows=500, n_features=4, n_numeric=4, n_categorical=0,
            missing_share=0.0, target_mean=1.0).to_user_attr())
        sampler = optuna.samplers.RandomSampler(seed=len(task))
        for i in range(6):
            params = {p.name: sampler.sample_independent(study, None, p.name, d)  # type: ignore[arg-type]
                      for p, d in zip(space, space.to_optuna().values(), strict=True)}
            study.add_trial(create_trial(params=params, distributions=space.to_optuna(),
                                         value=10.0 - i))
    build_dataset([url], root / "data", options=BuildOptions(validation_share=0.5, top_k=2),
                  tokenizer=load_tokenizer(embedded_model), progress=False)
    return root / "data"


def test_prompt_tokens_carry_no_loss_on_real_instruction_examples(tiny_model, instruction_data,
                                                                   tmp_path):
    from transformers import AutoTokenizer

    from sllmbo.training.sft_data import check_data, load_splits
    from sllmbo.training.sft_trainer import build_trainer

    rec = recipe(tiny_model, max_length=1024)
    train_rows, val_rows = load_splits(check_data(instruction_data), rec)
    kinds = {r["kind"] for r in json.loads(
        "[" + ",".join((instruction_data / "train.jsonl").read_text().splitlines()) + "]")}
    assert kinds == {"single-shot", "sequential"}
    trainer = build_trainer(rec, tiny_model, train_rows, val_rows, tmp_path, progress=False)
    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(len(train_rows))])
    for row, ids, labels in zip(train_rows, batch["input_ids"], batch["labels"], strict=True):
        ids, labels = ids.tolist(), labels.tolist()
        scored = [i for i, label in enumerate(labels) if label != -100]
        assert scored, "every example has completion tokens"
        start = scored[0]
        assert scored == list(range(start, scored[-1] + 1))  # one contiguous completion
        prompt_text = tokenizer.apply_chat_template(row["prompt"], tokenize=False,
                                                    add_generation_prompt=True)
        assert tokenizer.decode(ids[:start]) == prompt_text  # all of the prompt is unscored
        answer = tokenizer.decode(ids[start:scored[-1] + 1])
        assert answer.startswith(row["completion"][0]["content"])
        assert answer.removeprefix(row["completion"][0]["content"]).strip() == "<|im_end|>"


def test_resume_continues_from_the_last_checkpoint(tiny_model, repeated_data, tmp_path):
    from transformers import TrainerCallback

    from sllmbo.training.sft import train

    class Crash(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == 2:
                raise KeyboardInterrupt

    out = tmp_path / "adapter"
    run = recipe(tiny_model, max_steps=3, save_steps=1, eval_steps=0)
    with pytest.raises(KeyboardInterrupt):
        train(run, data=repeated_data, out=out, progress=False, echo=lambda _: None,
              callbacks=[Crash()])
    assert (out / "checkpoints" / "checkpoint-2").is_dir()
    assert not (out / "adapter_config.json").exists()
    with pytest.raises(SllmboError, match="already holds checkpoints"):
        train(run, data=repeated_data, out=out, progress=False, echo=lambda _: None)
    with pytest.raises(SllmboError, match=r"different recipe or data \(lora_r: 4 -> 8\)"):
        train(run.overridden({"lora_r": 8}), data=repeated_data, out=out, resume=True,
              progress=False, echo=lambda _: None)

    result = train(run, data=repeated_data, out=out, resume=True, progress=False,
                   echo=lambda _: None)
    assert result.metrics["resumed_from"] == "checkpoint-2"
    assert result.metrics["steps"] == 3
    assert [s for s, _ in result.metrics["train_loss"]] == [1, 2, 3]  # history kept


def test_a_real_4bit_qlora_step_on_cpu(tiny_model, repeated_data, tmp_path):
    pytest.importorskip("bitsandbytes", reason="bitsandbytes is in the dev extra")
    import torch
    from bitsandbytes.nn import Linear4bit

    from sllmbo.training.sft_data import check_data, load_splits
    from sllmbo.training.sft_trainer import build_trainer

    rec = recipe(tiny_model, quantization="nf4", max_steps=1, eval_steps=0, precision="auto")
    train_rows, _ = load_splits(check_data(repeated_data), rec)
    trainer = build_trainer(rec, tiny_model, train_rows, None, tmp_path, progress=False)
    layers = [m for m in trainer.model.modules() if isinstance(m, Linear4bit)]
    assert len(layers) == 2 * 7  # every linear layer of both blocks is NF4
    assert layers[0].weight.quant_state.quant_type == "nf4"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if p.requires_grad}
    output = trainer.train()
    assert torch.isfinite(torch.tensor(output.training_loss))
    changed = [n for n, p in trainer.model.named_parameters()
               if p.requires_grad and not torch.equal(p.detach(), before[n])]
    assert changed and all("lora_" in n for n in changed)


def test_cpu_lm_head_scores_only_completion_positions_with_the_same_loss(
        tiny_model, repeated_data, tmp_path, monkeypatch):
    import torch
    import trl.kernels.chunked_logprob as kernels
    import trl.trainer.utils as trl_utils

    from sllmbo.training.sft_data import check_data, load_splits
    from sllmbo.training.sft_trainer import build_trainer, score_completions_only_on_cpu

    monkeypatch.setattr(trl_utils, "_use_triton", kernels._use_triton)  # TRL's own, restored
    scored: list[int] = []
    real = trl_utils._ChunkedLogProbFunction

    class Spy:
        @staticmethod
        def apply(hidden, *args):
            scored.append(hidden.shape[0])
            return real.apply(hidden, *args)

    monkeypatch.setattr(trl_utils, "_ChunkedLogProbFunction", Spy)
    rec = recipe(tiny_model, max_steps=1, eval_steps=0)
    rows, _ = load_splits(check_data(repeated_data), rec)
    trainer = build_trainer(rec, tiny_model, rows, None, tmp_path, progress=False,
                            compact_head=False)
    batch = trainer.data_collator([trainer.train_dataset[0], trainer.train_dataset[1]])
    with torch.no_grad():
        every = trainer.model(**batch, fused_lm_head=True).loss
        assert score_completions_only_on_cpu()
        compact = trainer.model(**batch, fused_lm_head=True).loss
    n_labelled = int((batch["labels"][:, 1:] != -100).sum())
    assert scored == [batch["input_ids"].shape[0] * (batch["input_ids"].shape[1] - 1),
                      n_labelled]
    assert 0 < n_labelled < scored[0]
    assert torch.allclose(every, compact, atol=1e-6)
