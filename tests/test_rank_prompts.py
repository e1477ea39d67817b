"""The LLM scorer's formulation: one pure prompt (card, history, candidate) -> one bin digit,
instruction rows built from matrix targets, and a tiny random Llama that trains two steps on
them and whose per-candidate bin distribution parses into a pick."""

from __future__ import annotations

import numpy as np
import pytest

from sllmbo.core.families import get_family
from sllmbo.core.rank_prompts import (
    RANK_BIN_TOKENS,
    bin_distribution,
    parse_bin,
    rank_completion,
    rank_messages,
    render_run,
)
from sllmbo.data.rank_instructions import card_of, rank_rows, write_rank_data
from sllmbo.data.rank_targets import BIN_RATIOS, RowTargets
from sllmbo.rank import pick

SPACE = get_family("lightgbm").default_space("classification")


def pool():
    from sllmbo.data.matrix import POOL_FILE
    from sllmbo.data.pool import Pool, read_pools

    return Pool("lightgbm", read_pools(POOL_FILE)["lightgbm"].configs[:6])


def rows(n: int = 4) -> list[RowTargets]:
    card = {"n_rows": 800, "n_features": 8, "n_numeric": 8, "n_categorical": 0,
            "missing_share": 0.0, "n_classes": 3, "minority_share": 0.2}
    rng = np.random.default_rng(0)
    out = []
    for d in range(n):
        scores = np.exp(rng.uniform(-0.3, 0.3, 6))
        scores[0] = 1.0
        out.append(RowTargets(f"made{d}@800", "lightgbm", card, scores, np.full(6, 0.01),
                              np.log(scores), 0))
    return out


def test_history_is_shown_as_ratios_to_the_best_so_far():
    assert render_run([(0, 2.0), (3, 1.0), (5, None)]) == "A=x2, D=x1, F=failed"


def test_candidates_of_one_moment_share_everything_but_their_last_line():
    card = card_of(rows(1)[0])
    configs = pool().configs
    a, b = (rank_messages(card, SPACE, "lightgbm-x", [(0, 1.2)], i, configs[i].config,
                          BIN_RATIOS)[1]["content"] for i in (2, 4))
    head_a, head_b = a.rsplit("\n", 1)[0], b.rsplit("\n", 1)[0]
    assert head_a == head_b and a != b
    assert "x0.7" in head_a and "best error so far" in head_a
    empty = rank_messages(card, SPACE, "lightgbm-x", [], 2, configs[2].config, BIN_RATIOS)
    assert "default configuration" in empty[1]["content"]


@pytest.mark.parametrize(("text", "expected"), [("3", 3), (" 0\n", 0), ("9 or so", 9)])
def test_an_answer_parses_to_its_bin(text, expected):
    assert parse_bin(text) == expected
    assert rank_completion(expected)[0]["content"] == RANK_BIN_TOKENS[expected]


@pytest.mark.parametrize("text", ["", "x", "-1"])
def test_an_answer_that_is_not_a_bin_is_refused(text):
    with pytest.raises(ValueError, match="not a bin"):
        parse_bin(text)


def test_instruction_rows_hold_one_digit_per_candidate_and_no_heldout_task(tmp_path):
    from sllmbo.data.splits import heldout_match

    data = rank_rows(rows(), {"lightgbm": pool()}, n_histories=2, candidates=3)
    assert data and all(r["completion"][0]["content"] in RANK_BIN_TOKENS for r in data)
    assert all(len(r["soft_bins"]) == len(RANK_BIN_TOKENS) for r in data)
    card = write_rank_data(data, tmp_path / "rank")
    assert not [t for names in card["tasks"].values() for t in names if heldout_match(t)]
    assert sum(card["n_examples"].values()) == len(data)


@pytest.mark.slow
def test_a_tiny_llama_trains_two_steps_and_its_bin_distribution_parses(tiny_model, tmp_path):
    from sllmbo.inference.transformers_backend import TransformersBackend
    from sllmbo.training.recipe import Recipe
    from sllmbo.training.sft import train

    data = rank_rows(rows(2), {"lightgbm": pool()}, n_histories=0, candidates=2)
    folder = tmp_path / "rank"
    write_rank_data(data, folder, validation_fold=-1)  # everything in train
    recipe = Recipe(name="rank-test", base_model=str(tiny_model), max_length=768,
                    batch_size=2, grad_accum=1, learning_rate=5e-3, warmup_ratio=0.0,
                    lora_dropout=0.0, lora_r=4, lora_alpha=8, logging_steps=1, eval_steps=0,
                    precision="fp32", max_steps=2)
    result = train(recipe, data=folder, out=tmp_path / "adapter", progress=False,
                   echo=lambda _: None)
    assert len(result.metrics["train_loss"]) == 2
    prompts = [r["prompt"] for r in data[:3]]
    backend = TransformersBackend(tiny_model, adapter_path=tmp_path / "adapter", device="cpu")
    try:
        logp = backend.choice_logprobs(prompts, RANK_BIN_TOKENS)
    finally:
        backend.close()
    probs = np.array(bin_distribution(logp))
    assert probs.shape == (3, len(RANK_BIN_TOKENS)) and np.allclose(probs.sum(axis=1), 1.0)
    assert pick(probs, [7, 8, 9]) in (7, 8, 9)
