"""``llm-rank``: the LLM as a learned scorer. A tiny Llama taught that one pool entry is the big
gain ranks it first, from the empty history (``recommend --decode rank``) and mid-run; the
sampler tries distinct pool entries, then TPE, and resumes from the study after a kill."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import get_family
from sllmbo.core.objective import suggest
from sllmbo.core.rank_prompts import rank_messages
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.matrix import POOL_FILE
from sllmbo.data.pool import Pool, read_pools
from sllmbo.data.rank_instructions import rank_rows, write_rank_data
from sllmbo.data.rank_targets import BIN_RATIOS, RowTargets
from sllmbo.recommend import recommend_with
from sllmbo.samplers import registry
from sllmbo.samplers.llm_rank import LLMRankScorer, build_llm_rank, rank_card
from sllmbo.samplers.pool import POOL_INDEX

optuna.logging.set_verbosity(optuna.logging.WARNING)
CARD = {"n_rows": 800, "n_features": 8, "n_numeric": 8, "n_categorical": 0,
        "missing_share": 0.0, "n_classes": 3, "minority_share": 0.2}
BEST = 3
SPACE = get_family("lightgbm").default_space("classification")


def small_pool() -> Pool:
    return Pool("lightgbm", read_pools(POOL_FILE)["lightgbm"].configs[:6])


def card(direction: str = "minimize", **extra) -> TaskCard:
    return TaskCard(task="made@800", task_type="classification", model_family="lightgbm",
                    metric="log_loss" if direction == "minimize" else "accuracy",
                    direction=direction, **CARD, **extra)


def taught_rows(n: int = 8) -> list[RowTargets]:
    """Rows on which entry ``BEST`` is 35-40% better than the defaults; the others within 5%."""
    rng = np.random.default_rng(0)
    rows = []
    for d in range(n):
        ratio = rng.uniform(-0.05, 0.05, 6)
        ratio[0] = 0.0
        ratio[BEST] = np.log(rng.uniform(0.6, 0.65))
        scores = np.exp(ratio)
        rows.append(RowTargets(f"made{d}@800", "lightgbm", dict(CARD), scores,
                               np.full(6, 0.01), np.log(scores), 0))
    return rows


def test_the_card_is_shown_as_the_training_data_shows_it():
    shown = rank_card(card(description="sales of a shop", full_train_rows=90_000))
    assert shown.description == "" and shown.full_train_rows is None
    assert (shown.metric, shown.direction) == ("log_loss", "minimize")
    assert rank_card(shown.model_dump()) == shown  # a mapping (the chooser's copy) too


def test_bins_from_a_real_model_are_distributions_and_the_pick_is_a_candidate(tiny_backend):
    scorer = LLMRankScorer(tiny_backend, small_pool())
    bins = scorer.bins(card(), [(0, 0.5), (1, 0.55)], [2, 3, 4])
    assert bins.shape == (3, 10) and np.allclose(bins.sum(axis=1), 1.0)
    assert scorer.choose(card(), [(0, 0.5)], [2, 4]) in (2, 4)
    assert scorer.calls == 2 and scorer.seconds > 0


def test_the_shared_head_is_computed_once_and_changes_no_score(tiny_backend, monkeypatch):
    """Scoring candidates on a cached head gives what each full prompt gives alone."""
    from sllmbo.core.rank_prompts import RANK_BIN_TOKENS
    from sllmbo.inference import choice_scoring

    scorer = LLMRankScorer(tiny_backend, small_pool())
    prompts = [rank_messages(rank_card(card()), scorer.space, scorer.pool_name, [(0, 0.5)], i,
                             small_pool().configs[i].config, BIN_RATIOS) for i in (1, 2, 3, 4)]
    heads = []
    real = choice_scoring.head_cached_logprobs
    monkeypatch.setattr(choice_scoring, "head_cached_logprobs",
                        lambda *a, **k: heads.append(a[-1]) or real(*a, **k))
    pooled = np.array(tiny_backend.choice_logprobs(prompts, RANK_BIN_TOKENS))
    alone = np.array([tiny_backend.choice_logprobs([p], RANK_BIN_TOKENS)[0] for p in prompts])
    assert len(heads) == 1 and heads[0] > 300  # the card, history and question: once
    np.testing.assert_allclose(pooled, alone, atol=1e-4)


@pytest.fixture(scope="module")
def taught_backend(embedded_model, tmp_path_factory):
    """A tiny Llama after a LoRA taught it, on rank-bins rows, that entry ``BEST`` is the big
    gain and every other entry a tie. Its init std is 0.3: at the default 0.02 a tiny tied head
    cannot fit any answer (``test_shared_prefix.trainable_tiny``)."""
    from inference_fixtures import build_tiny_llama
    from test_training import recipe

    from sllmbo.inference.transformers_backend import TransformersBackend
    from sllmbo.training.sft import train

    tmp = tmp_path_factory.mktemp("llm-rank")
    tiny = build_tiny_llama(tmp / "tiny", embedded_model, initializer_range=0.3)
    data = rank_rows(taught_rows(2), {"lightgbm": small_pool()}, n_histories=1, candidates=6)
    write_rank_data(data, tmp / "rank", validation_fold=-1)
    train(recipe(tiny, max_steps=50, epochs=100, shared_prefix=True, max_length=1024,
                 batch_size=1, learning_rate=1e-2, lora_r=8, lora_alpha=16, eval_steps=0),
          data=tmp / "rank", out=tmp / "adapter", progress=False, echo=lambda _: None)
    backend = TransformersBackend(tiny, adapter_path=tmp / "adapter", device="cpu",
                                  dtype="float32")
    yield backend
    backend.close()


@pytest.mark.slow
def test_a_model_taught_to_prefer_one_entry_ranks_it_first(taught_backend):
    from sllmbo.rank import expected_improvement

    scorer = LLMRankScorer(taught_backend, small_pool())
    gain = expected_improvement(scorer.bins(card(), [], list(range(6))))
    assert gain[BEST] > 2 * np.delete(gain, BEST).max()  # by a margin, not by a tie-break
    assert scorer.choose(card(), [], list(range(6))) == BEST  # single-shot: empty history
    assert scorer.choose(card(), [(0, 1.0), (1, 1.02)], [2, 3, 4, 5]) == BEST


@pytest.mark.slow
def test_recommend_decode_rank_gives_n_distinct_valid_pool_configs(taught_backend, monkeypatch):
    import sllmbo.scoring

    monkeypatch.setattr(sllmbo.scoring, "committed_pool", lambda family: small_pool())
    rec = recommend_with(taught_backend, card(), SPACE, 4, decode="rank")
    assert len(rec.configs) == 4 and rec.configs[0] == small_pool().configs[BEST].config
    assert len({tuple(sorted(c.items())) for c in rec.configs}) == 4
    assert all(SPACE.validate(c) == c for c in rec.configs)
    assert rec.scores == sorted(rec.scores, reverse=True)  # expected improvement, best first
    with pytest.raises(SllmboError, match="--n 6 or less"):
        recommend_with(taught_backend, card(), SPACE, 7, decode="rank")


def test_the_sampler_tries_distinct_pool_entries_then_tpe_and_resumes(tiny_backend):
    spec = registry.get("llm-rank")
    assert spec.needs_backend

    def objective(trial: optuna.Trial) -> float:
        return float(suggest(trial, SPACE)["learning_rate"])

    study = optuna.create_study()
    study.sampler = spec.build(card=card(), space=SPACE, seed=0, backend=tiny_backend,
                               pool_trials=3)
    study.optimize(objective, n_trials=2)
    study.sampler = spec.build(card=card(), space=SPACE, seed=0, backend=tiny_backend,
                               pool_trials=3)
    study.optimize(objective, n_trials=2)  # a new process: the history is the study's
    sources = [t.user_attrs["sllmbo:source"] for t in study.trials]
    assert sources == ["pool", "pool", "pool", "tpe"]
    assert len({t.user_attrs[POOL_INDEX] for t in study.trials[:3]}) == 3


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"card": card(), "backend": None}, "LLM backend"),
    ({"card": card("maximize"), "backend": object()}, "error metrics"),
    ({"card": card(), "backend": object(), "temperature": 0.5}, "takes no options"),
    ({"card": card(), "backend": object(), "acquisition": "ucb"}, "unknown acquisition")])
def test_bad_settings_are_one_clear_error(kwargs, match):
    with pytest.raises(SllmboError, match=match):
        build_llm_rank(space=SPACE, **kwargs)
