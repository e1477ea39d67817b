"""The pick formulation: the model names an entry of the committed pool, and one forward pass
ranks the whole pool (prompts, matrix-pick examples, ``recommend --decode pick``, training)."""

from __future__ import annotations

import json
import math

import pytest

from sllmbo.cli import main
from sllmbo.core.prompts import PICK_NAMES, pick_messages
from sllmbo.inference.base import Backend


class NamingBackend(Backend):
    """Puts its probability on the names it was given, in that order."""

    name = "naming"

    def __init__(self, favourites: str) -> None:
        self.favourites = favourites
        self.prompts: list = []

    def complete(self, requests):  # pragma: no cover - picking decodes nothing
        raise AssertionError("picking must not decode")

    def choice_logprobs(self, prompts, choices):
        self.prompts += list(prompts)
        return [[-1.0 - self.favourites.index(c) if c in self.favourites else -40.0
                 for c in choices] for _ in prompts]


def test_pick_names_are_one_token_each_and_the_prompt_is_short(embedded_model):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(embedded_model))
    ids = [tokenizer.encode(n, add_special_tokens=False) for n in PICK_NAMES]
    assert all(len(i) == 1 for i in ids) and len({i[0] for i in ids}) == len(PICK_NAMES)
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card

    card = build_card(load_task("diabetes"), get_family("lightgbm"), EvalSettings())
    prompt = tokenizer.apply_chat_template(pick_messages(card, "lightgbm-abc", 60),
                                           tokenize=True, add_generation_prompt=True)
    assert len(prompt["input_ids"] if hasattr(prompt, "keys") else prompt) < 260
    with pytest.raises(ValueError):
        pick_messages(card, "x", len(PICK_NAMES) + 1)


def test_decode_pick_returns_the_favourite_then_what_complements_it(monkeypatch, capsys):
    import sllmbo.inference.factory as factory
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools
    from sllmbo.data.pool_select import portfolio, whole_rows

    backend = NamingBackend("cAz")
    monkeypatch.setattr(factory, "create_backend", lambda *a, **k: backend)
    with pytest.raises(SystemExit) as info:
        main(["recommend", "--task", "diabetes", "--model", "lightgbm", "--decode", "pick",
              "--n", "3"])
    assert info.value.code == 0
    configs = json.loads(capsys.readouterr().out)
    pools = read_pools(POOL_FILE)
    pool = pools["lightgbm"].configs
    favourite = pool[PICK_NAMES.index("c")]
    assert configs[0] == favourite.config
    # The rest is the validated pick-complement list: the greedy portfolio of the training
    # regression variants continued from the favourite, not the model's next names.
    matrix = read_matrix(pools=pools)
    ids = portfolio(matrix.header["cards"], whole_rows(matrix, pools["lightgbm"]),
                    "regression", 3, start=[favourite.id])
    by_id = {c.id: c.config for c in pool}
    assert configs == [by_id[i] for i in ids]
    assert configs[1:] != [pool[PICK_NAMES.index(n)].config for n in "Az"]
    assert len(backend.prompts) == 1  # one forward pass for the whole pool
    assert f"lightgbm-{read_pools(POOL_FILE)['lightgbm'].hash}" in \
        backend.prompts[0][-1]["content"]


def test_matrix_pick_examples_name_the_variants_best_entries():
    from sllmbo.data.matrix_examples import MatrixOptions, matrix_examples
    from sllmbo.eval.zeroshot_baselines import load_selectors

    scores = load_selectors().scores("xgboost")
    variant = sorted(scores.index)[0]
    rows = [r for r in matrix_examples(options=MatrixOptions(top_k=0, score_per_variant=0,
                                                             pick_top_k=3),
                                       variants=[variant])
            if r["family"] == "xgboost"]
    assert [r["kind"] for r in rows] == ["matrix-pick"] * 3
    best = scores.loc[variant].sort_values().index[:3].tolist()
    ids = [c.id for c in load_selectors().pools["xgboost"].configs]
    assert [r["completion"][0]["content"] for r in rows] == [PICK_NAMES[ids.index(b)]
                                                             for b in best]
    assert all(r["prompt"] == rows[0]["prompt"] for r in rows)


@pytest.mark.slow
def test_the_pick_formulation_trains_two_steps_and_its_picks_parse(tiny_model, tmp_path):
    from test_training import recipe, write_data

    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.matrix_examples import MatrixOptions, matrix_examples
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.inference.transformers_backend import TransformersBackend
    from sllmbo.scoring import pick_recommend
    from sllmbo.training.sft import train

    rows = matrix_examples(options=MatrixOptions(top_k=0, score_per_variant=0, pick_top_k=5))
    variants = sorted({r["task"] for r in rows})[:3]
    chosen = [{"prompt": r["prompt"], "completion": r["completion"], "kind": r["kind"],
               "task": r["task"]} for r in rows if r["task"] in variants]
    data = write_data(tmp_path / "data", chosen[5:], chosen[:5])
    out = tmp_path / "adapter"
    result = train(recipe(tiny_model, max_steps=2, shared_prefix=True, max_length=512,
                          batch_size=1), data=data, out=out, progress=False,
                   echo=lambda _: None)
    assert result.metrics["steps"] == 2
    family = get_family("lightgbm")
    space = family.default_space("regression")
    card = build_card(load_task("diabetes"), family, EvalSettings())
    backend = TransformersBackend(tiny_model, adapter_path=out, device="cpu", dtype="float32")
    try:
        rec = pick_recommend(backend, card, space, 4, "lightgbm")
    finally:
        backend.close()
    assert len(rec.configs) == 4 and rec.requests == 1
    assert len({json.dumps(c, sort_keys=True) for c in rec.configs}) == 4
    assert rec.scores[0] == max(rec.scores) and 0 < sum(rec.scores) <= 1


def test_soft_pick_targets_weigh_every_entry_by_its_regret_best_first():
    from sllmbo.data.matrix_examples import soft_pick_targets

    scores = {"a": 3.0, "b": 1.0, "c": 2.0, "d": None, "e": 9.0}
    warm = soft_pick_targets(scores, 1.0)
    assert [i for i, _ in warm] == ["b", "c", "a", "d", "e"]  # ties by id
    weights = dict(warm)
    assert sum(weights.values()) == pytest.approx(len(scores), abs=1e-4)
    # regret: b 0; c 1/1.5 (the finite median 2.5 is 1.5 above the best); a, e and the
    # failed d at the cap, 1
    assert weights["b"] > weights["c"] > weights["a"] == weights["d"] == weights["e"]
    assert weights["b"] / weights["c"] == pytest.approx(math.exp(1 / 1.5), rel=1e-4)
    cold = dict(soft_pick_targets(scores, 0.1))
    assert cold["b"] > weights["b"] and cold["e"] < weights["e"]


def test_a_pick_temperature_makes_every_pool_entry_a_weighted_example():
    from sllmbo.data.matrix_examples import MatrixOptions, matrix_examples
    from sllmbo.eval.zeroshot_baselines import load_selectors

    selectors = load_selectors()
    scores = selectors.scores("lightgbm")
    variant = sorted(scores.index)[0]
    rows = [r for r in matrix_examples(options=MatrixOptions(top_k=0, score_per_variant=0,
                                                             pick_temperature=0.5),
                                       variants=[variant]) if r["family"] == "lightgbm"]
    ids = [c.id for c in selectors.pools["lightgbm"].configs]
    assert len(rows) == len(ids) and {r["kind"] for r in rows} == {"matrix-pick"}
    assert sum(r["weight"] for r in rows) == pytest.approx(len(ids), abs=1e-3)
    best = scores.loc[variant].idxmin()
    assert rows[0]["completion"][0]["content"] == PICK_NAMES[ids.index(best)]
    assert rows[0]["weight"] == max(r["weight"] for r in rows)
    assert len({r["completion"][0]["content"] for r in rows}) == len(ids)


@pytest.mark.parametrize("options", [{"pick_temperature": 0.0}, {"pick_temperature": -1.0},
                                     {"pick_temperature": float("nan")},
                                     {"pick_temperature": 1.0, "pick_top_k": 3}])
def test_bad_pick_targets_are_refused(options):
    from sllmbo.data.matrix_examples import MatrixOptions

    with pytest.raises(ValueError, match="pick_t"):
        MatrixOptions(**options)


def test_weighted_examples_train_only_on_the_shared_prefix_path(tmp_path):
    from test_training import chat_row, recipe, write_data

    from sllmbo.training.recipe import RecipeError
    from sllmbo.training.sft import check_data, load_splits

    rows = [{**chat_row("task_a", "Pick one.", name), "weight": w}
            for name, w in (("A", 1.5), ("B", 0.5))]
    data = check_data(write_data(tmp_path / "data", rows, rows[:1]))
    with pytest.raises(RecipeError, match="weighted examples"):
        load_splits(data, recipe(tmp_path))
    train, _ = load_splits(data, recipe(tmp_path, shared_prefix=True))
    assert train["weight"] == [1.5, 0.5]
