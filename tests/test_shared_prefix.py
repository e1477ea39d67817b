"""Shared-prefix packing (training/shared_prefix.py): the packs' layout, the mask, that a packed
completion sees exactly its own context (logits equal to training it alone), and that the
scoring formulation trains on a tiny random-weight Llama and then ranks what it was taught."""

from __future__ import annotations

from pathlib import Path

import pytest

from sllmbo.training.shared_prefix import (
    Tokenized,
    attention_mask,
    pack_shared_prefix,
    tokenize,
)


def test_examples_with_one_head_share_it_and_keep_every_completion():
    a = Tokenized((1, 2, 3, 4, 5, 10, 11), 5)
    b = Tokenized((1, 2, 3, 4, 6, 12), 5)
    c = Tokenized((9, 9, 9, 13), 3)
    first, second = pack_shared_prefix([c, b, a], max_length=100, min_shared=3)
    assert first.input_ids == [1, 2, 3, 4, 5, 10, 11, 6, 12]
    assert first.labels == [-100] * 5 + [10, 11, -100, 12]
    assert first.position_ids == [0, 1, 2, 3, 4, 5, 6, 4, 5]
    assert first.segments == [0, 0, 0, 0, 1, 1, 1, 2, 2]
    assert second.input_ids == [9, 9, 9, 13] and second.labels == [-100] * 3 + [13]


def test_one_whole_prompt_leaves_each_tail_the_token_that_predicts_its_answer():
    same_prompt = [Tokenized((1, 2, 3, 7, 8), 3), Tokenized((1, 2, 3, 7, 9), 3)]
    (pack,) = pack_shared_prefix(same_prompt, max_length=100, min_shared=2)
    assert pack.input_ids == [1, 2, 3, 7, 8, 3, 7, 9]
    assert pack.labels == [-100] * 3 + [7, 8, -100, 7, 9]
    assert pack.position_ids == [0, 1, 2, 3, 4, 2, 3, 4]
    assert pack.segments == [0, 0, 1, 1, 1, 2, 2, 2]


def test_a_tails_answer_tokens_carry_its_weight_and_nothing_else_does():
    same_prompt = [Tokenized((1, 2, 3, 7, 8), 3, 2.0), Tokenized((1, 2, 3, 9, 8), 3, 0.5)]
    (pack,) = pack_shared_prefix(same_prompt, max_length=100, min_shared=2)
    assert pack.weights == [0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.5, 0.5]
    (alone,) = pack_shared_prefix([Tokenized((1, 2, 7), 2, 3.0)], max_length=100)
    assert alone.weights == [0.0, 0.0, 3.0]


def test_packs_stay_within_max_length_and_short_heads_do_not_pack():
    group = [Tokenized((1, 2, 3, 4, 20 + i, 30 + i), 5) for i in range(5)]
    packs = pack_shared_prefix(group, max_length=10, min_shared=3)
    assert all(len(p.input_ids) <= 10 for p in packs)
    assert sum(p.labels.count(-100) < len(p.labels) for p in packs) == len(packs)
    assert sorted(t for p in packs for t in p.labels if t >= 30) == [30, 31, 32, 33, 34]
    apart = pack_shared_prefix(group, max_length=100, min_shared=5)
    assert len(apart) == 5  # 4 shared tokens < min_shared


def test_a_tail_sees_the_head_and_itself_never_another_tail():
    import torch

    mask = attention_mask(torch.tensor([[0, 0, 1, 1, 2, 2, -1]]))[0, 0]
    assert mask[3].tolist() == [True, True, True, True, False, False, False]
    assert mask[5].tolist() == [True, True, False, False, True, True, False]
    assert mask[1].tolist() == [True, True, False, False, False, False, False]
    assert mask[6].tolist() == [False] * 6 + [True]  # padding: itself only


def score_rows(task_name: str, deciles: dict[int, int]) -> list[dict]:
    """Scoring examples of a real card and the LightGBM pool: candidate i -> its decile."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.core.prompts import score_messages
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.scoring import pool_candidates

    task = load_task(task_name)
    family = get_family("lightgbm")
    space = family.default_space(task.task_type)
    card = build_card(task, family, EvalSettings())
    pool = pool_candidates("lightgbm", space)
    return [{"prompt": score_messages(card, space, pool[i]),
             "completion": [{"role": "assistant", "content": str(d)}],
             "kind": "matrix-score", "task": task_name} for i, d in deciles.items()]


def pick_rows(task_name: str, names: list[str]) -> list[dict]:
    """Pick examples of a real card: one whole prompt, a different pool entry's name each."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.core.prompts import pick_messages
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card

    card = build_card(load_task(task_name), get_family("lightgbm"), EvalSettings())
    prompt = pick_messages(card, "lightgbm-test", 60)
    return [{"prompt": prompt, "completion": [{"role": "assistant", "content": name}],
             "kind": "matrix-pick", "task": task_name} for name in names]


PACKED_ROWS = {"score": lambda: score_rows("diabetes", {0: 3, 7: 0, 12: 9}),
               "pick": lambda: pick_rows("diabetes", ["C", "q", "7"])}


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("kind", sorted(PACKED_ROWS))
def test_a_packed_completion_has_the_logits_it_has_alone(tiny_model, attention, kind):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sllmbo.training.shared_prefix import SharedPrefixCollator, label_positions

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model))
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model), dtype=torch.float32,
                                                 attn_implementation=attention).eval()
    rows = PACKED_ROWS[kind]()
    examples = [tokenize(tokenizer, r["prompt"], r["completion"]) for r in rows]
    (pack,) = pack_shared_prefix(examples, max_length=2048, min_shared=32)
    head = pack.segments.count(0)
    assert head > 150 and len(pack.input_ids) < sum(len(e.ids) for e in examples) - 2 * head + 50

    batch = SharedPrefixCollator(tokenizer.pad_token_id)([pack.as_row()])
    mask = batch["attention_mask"]
    if attention == "eager":
        mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"],
                       attention_mask=mask).logits[0]
        alone = [model(input_ids=torch.tensor([e.ids])).logits[0] for e in examples]
    keep = label_positions(batch["labels"])[0]
    got = packed[keep]
    want = torch.cat([a[e.n_prompt - 1:len(e.ids) - 1] for a, e in
                      sorted(zip(alone, examples, strict=True),
                             key=lambda p: p[1].ids[:p[1].n_prompt])])  # the packer's order
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def write_score_data(root: Path, train: list[dict], validation: list[dict]) -> Path:
    from test_training import write_data

    return write_data(root, train, validation)


@pytest.mark.slow
def test_the_scoring_formulation_trains_two_steps_and_its_scores_parse(tiny_model, tmp_path):
    from test_training import recipe

    from sllmbo.core.families import get_family
    from sllmbo.inference.transformers_backend import TransformersBackend
    from sllmbo.scoring import decile_probabilities, pool_candidates
    from sllmbo.training.sft import train

    rows = score_rows("diabetes", {i: i % 10 for i in range(12)})
    data = write_score_data(tmp_path / "data", rows[:10], rows[10:])
    out = tmp_path / "adapter"
    result = train(recipe(tiny_model, max_steps=2, shared_prefix=True, max_length=512,
                          batch_size=1), data=data, out=out, progress=False,
                   echo=lambda _: None)
    losses = [loss for _, loss in result.metrics["train_loss"]]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
    assert result.metrics["final_eval_loss"] is not None and result.metrics["steps"] == 2

    backend = TransformersBackend(tiny_model, adapter_path=out, device="cpu", dtype="float32")
    try:
        space = get_family("lightgbm").default_space("regression")
        from sllmbo.core.objective import EvalSettings
        from sllmbo.data.registry import load_task
        from sllmbo.data.resolve import build_card

        card = build_card(load_task("diabetes"), get_family("lightgbm"), EvalSettings())
        probs = decile_probabilities(backend, card, space, pool_candidates("lightgbm", space)[:4])
    finally:
        backend.close()
    assert probs.shape == (4, 10) and abs(float(probs.sum()) - 4.0) < 1e-6


@pytest.fixture(scope="module")
def trainable_tiny(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama that can fit an answer: at the default init (std 0.02) its tied output
    head caps every logit gap near 2.5, so no training gets any answer's loss far below
    log(vocab); std 0.3 lets 120 steps teach it one."""
    from inference_fixtures import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("trainable") / "tiny", embedded_model,
                            initializer_range=0.3)


@pytest.mark.slow
@pytest.mark.parametrize("favourite", [4, 7])
def test_a_scorer_taught_a_favourite_ranks_it_first(trainable_tiny, tmp_path, favourite):
    from test_training import recipe

    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.inference.transformers_backend import TransformersBackend
    from sllmbo.scoring import pool_candidates, score_recommend
    from sllmbo.training.sft import train

    taught = {i: (0 if i == favourite else 9) for i in range(10)}
    rows = score_rows("diabetes", taught)
    data = write_score_data(tmp_path / "data", rows * 3, rows[:2])
    out = tmp_path / "adapter"
    train(recipe(trainable_tiny, max_steps=120, epochs=100, shared_prefix=True,
                 max_length=1024, batch_size=1, learning_rate=1e-2, lora_r=8, lora_alpha=16,
                 eval_steps=0), data=data, out=out, progress=False, echo=lambda _: None)

    family = get_family("lightgbm")
    space = family.default_space("regression")
    card = build_card(load_task("diabetes"), family, EvalSettings())
    candidates = pool_candidates("lightgbm", space)[:10]
    backend = TransformersBackend(trainable_tiny, adapter_path=out, device="cpu",
                                  dtype="float32")
    try:
        rec = score_recommend(backend, card, space, 3, candidates)
    finally:
        backend.close()
    assert rec.configs[0] == candidates[favourite]
    assert rec.scores[0] < 1 and min(rec.scores[1:]) > 8  # taught "0" for it, "9" for the rest


def test_validation_keeps_whole_packs_within_the_example_budget():
    from datasets import Dataset

    from sllmbo.training.shared_prefix import subsample_packs

    packs = Dataset.from_list([{"segments": [0, 0] + [k for k in range(1, n + 1)]}
                               for n in (5, 3, 4, 1)])
    chosen = subsample_packs(packs, 8, seed=0)
    sizes = [len(set(r["segments"]) - {0}) for r in chosen]
    assert 0 < sum(sizes) <= 8 and set(sizes) <= {5, 3, 4, 1}
    assert len(subsample_packs(packs, None, seed=0)) == 4
    assert len(subsample_packs(packs, 2, seed=0)) == 1  # one pack even when it is bigger


@pytest.mark.slow
@pytest.mark.parametrize("heavy", ["C", "q"])
def test_soft_pick_targets_teach_the_heavier_name_more_probability(trainable_tiny, tmp_path,
                                                                    heavy):
    """Two names for one card, weighted 1.7 and 0.3: soft cross-entropy's optimum gives the
    heavier 85% of their mass; unweighted, both would get half. Either name may be heavy, so
    a loss that ignores the weights fails one of the two cases."""
    import math

    from test_training import recipe

    from sllmbo.inference.transformers_backend import TransformersBackend
    from sllmbo.training.sft import train

    rows = pick_rows("diabetes", ["C", "q"])
    for row in rows:
        row["weight"] = 1.7 if row["completion"][0]["content"] == heavy else 0.3
    data = write_score_data(tmp_path / "data", rows * 3, rows)
    out = tmp_path / "adapter"
    train(recipe(trainable_tiny, max_steps=60, epochs=100, shared_prefix=True,
                 max_length=1024, batch_size=1, learning_rate=1e-2, lora_r=8, lora_alpha=16,
                 eval_steps=0), data=data, out=out, progress=False, echo=lambda _: None)
    backend = TransformersBackend(trainable_tiny, adapter_path=out, device="cpu",
                                  dtype="float32")
    try:
        (logprobs,) = backend.choice_logprobs([rows[0]["prompt"]], ["C", "q"])
    finally:
        backend.close()
    mass = dict(zip(["C", "q"], (math.exp(v) for v in logprobs), strict=True))
    light = "q" if heavy == "C" else "C"
    # Weighted: ~0.6 against ~0.002 after 60 steps (a random 2-layer model pulls one hidden
    # state toward the heavier name); weights ignored: 0.13 against 0.07 either way.
    assert mass[heavy] > 0.3
    assert mass[heavy] > 2.5 * mass[light]  # 1.7 / 0.3 = 5.7 at the optimum
