"""Recommend by scoring ([10/12]'s scoring formulation): the pool ranked by predicted deciles,
lists chosen to be good together, and the real engines behind it."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sllmbo.cli import main
from sllmbo.inference.base import Backend
from sllmbo.inference.llamacpp_backend import unavailable_reason
from sllmbo.scoring import (
    complementary_order,
    expected_best_decile,
    expected_decile,
    pool_candidates,
    score_recommend,
)


def at(decile: int) -> np.ndarray:
    row = np.zeros(10)
    row[decile] = 1.0
    return row


def test_expected_best_decile_is_the_mean_minimum_of_independent_draws():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=3)
    brute = sum(min(ds) * probs[0, ds[0]] * probs[1, ds[1]] * probs[2, ds[2]]
                for ds in itertools.product(range(10), repeat=3))
    assert expected_best_decile(probs) == pytest.approx(brute)
    assert expected_best_decile(at(4)[None]) == pytest.approx(4.0)
    assert expected_decile(np.stack([at(2), at(7)])).tolist() == [2.0, 7.0]


def test_a_list_takes_the_gamble_that_covers_the_first_pick_not_its_copy():
    safe = at(2)
    gamble = (at(0) + at(9)) / 2  # expected 4.5: ranked last alone
    probs = np.stack([safe, safe.copy(), gamble])
    assert complementary_order(probs, 1) == [0]
    # Best of two: {safe, gamble} has E[min] = 1, {safe, safe} has 2.
    assert complementary_order(probs, 2) == [0, 2]
    assert complementary_order(probs, 5) == [0, 2, 1]


class DigitBackend(Backend):
    """Scores by a rule of the rendered candidate: the smaller its first value, the better."""

    name = "digits"

    def complete(self, requests):  # pragma: no cover - scoring decodes nothing
        raise AssertionError("scoring must not decode")

    def choice_logprobs(self, prompts, choices):
        out = []
        for messages in prompts:
            first = float(messages[-1]["content"].rsplit(": ", 1)[1].split(",")[0])
            decile = min(9, int(first * 30))
            out.append([0.0 if i == decile else -30.0 for i in range(len(choices))])
        return out


def test_score_recommend_returns_the_pool_entries_ranked_best():
    from sllmbo.core.families import get_family

    space = get_family("lightgbm").default_space("regression")
    pool = pool_candidates("lightgbm", space)
    rec = score_recommend(DigitBackend(), None, space, 3, pool)
    best = min(pool, key=lambda c: min(9, int(c["learning_rate"] * 30)))
    assert rec.configs[0]["learning_rate"] == pytest.approx(best["learning_rate"])
    assert len(rec.configs) == 3 and all(c in pool for c in rec.configs)
    assert rec.requests == len(pool) and rec.scores[0] == min(rec.scores)


def test_a_backend_that_cannot_score_is_one_message_and_exit_2(capsys, monkeypatch):
    from llm_scripts import ScriptedBackend

    import sllmbo.inference.factory as factory

    monkeypatch.setattr(factory, "create_backend", lambda *a, **k: ScriptedBackend())
    with pytest.raises(SystemExit) as info:
        main(["recommend", "--task", "diabetes", "--decode", "score"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "cannot score" in err and "Traceback" not in err


@pytest.mark.skipif(unavailable_reason() is not None, reason="llama.cpp engine not installed")
@pytest.mark.slow
def test_the_embedded_model_scores_the_pool_on_the_fast_engine(embedded_model, capsys):
    import json

    with pytest.raises(SystemExit) as info:
        main(["recommend", "--task", "diabetes", "--decode", "score", "--n", "3",
              "--backend", "llamacpp"])
    assert info.value.code == 0
    out = capsys.readouterr()
    configs = json.loads(out.out)
    from sllmbo.core.families import get_family

    space = get_family("lightgbm").default_space("regression")
    pool = pool_candidates("lightgbm", space)
    assert len(configs) == 3 and all(c in pool for c in configs)
    assert len({json.dumps(c, sort_keys=True) for c in configs}) == 3
    assert "answered by llamacpp" in out.err


@pytest.mark.skipif(unavailable_reason() is not None, reason="llama.cpp engine not installed")
@pytest.mark.slow
def test_eval_runs_single_shot_score_with_the_shipped_adapter(embedded_model, tmp_path):
    """Both methods end to end: the adapter scores (or names) the pool on a held-out task,
    its best two are fitted, and the records carry the LLM's cost."""
    import json

    argv = ["eval", "--task", "auto_mpg", "--families", "lightgbm", "--methods",
            "single-shot-score,single-shot-pick", "--budgets", "1,2", "--seeds", "1",
            "--n-folds", "2",
            "--max-rows", "300", "--backend", "llamacpp", "--adapter", "default",
            "--out", str(tmp_path / "eval"), "--quiet"]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code in (0, None)
    records = json.loads((tmp_path / "eval" / "results.json").read_text())
    for method in ("single-shot-score", "single-shot-pick"):
        mine = [r for r in records if r["method"] == method]
        assert [r["budget"] for r in mine] == [1, 2]
        assert all(r["llm_calls"] > 0 for r in mine)
        assert mine[1]["cv_score"] <= mine[0]["cv_score"]  # RMSE: best of two
    pick = [r for r in records if r["method"] == "single-shot-pick"]
    assert pick[0]["llm_calls"] == 1  # one forward pass for the whole pool
