"""The validation of [10/12]'s formulations (eval/validate_adapter.py): exact regret from the
training matrix, baselines that never see the validation datasets, held-out datasets refused."""

from __future__ import annotations

import json

import numpy as np
import pytest

from sllmbo.data.pool_select import regret_matrix
from sllmbo.eval.validate_adapter import main, row_regret, validate
from sllmbo.inference.base import Backend


def test_row_regret_is_the_portfolio_scale():
    row = {"a": 1.0, "b": 2.0, "c": 3.0, "d": float("nan"), "e": 9.0}
    column = np.array([[v] for v in row.values()])
    expected = regret_matrix(column)[:, 0]
    for value, want in zip(row.values(), expected, strict=True):
        assert row_regret(row, value) == pytest.approx(want)
    assert row_regret(row, 0.5) == 0.0 and row_regret(row, float("nan")) == 1.0


class OracleBackend(Backend):
    """Predicts "0" for the variant's best pool entry and each other entry's true rank decile
    (at least 1) from the matrix: a scorer that knows the answer must reach regret 0 at
    budget 1."""

    name = "oracle"

    def __init__(self, deciles_by_prompt: dict[str, int]) -> None:
        self.deciles = deciles_by_prompt

    def complete(self, requests):  # pragma: no cover - scoring decodes nothing
        raise AssertionError("scoring must not decode")

    def choice_logprobs(self, prompts, choices):
        return [[0.0 if i == self.deciles[m[-1]["content"]] else -50.0
                 for i in range(len(choices))] for m in prompts]


def oracle_for(datasets: list[str], family_name: str) -> OracleBackend:
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.core.prompts import score_messages
    from sllmbo.data.matrix_examples import rank_deciles
    from sllmbo.data.pool_select import dataset_of
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card
    from sllmbo.eval.zeroshot_baselines import load_selectors

    selectors = load_selectors()
    scores = selectors.scores(family_name)
    family = get_family(family_name)
    table: dict[str, int] = {}
    for variant in [v for v in scores.index if dataset_of(v) in datasets]:
        task = load_task(variant)
        space = family.default_space(task.task_type)
        card = build_card(task, family, EvalSettings())
        row = {k: float(v) for k, v in scores.loc[variant].items()}
        best = min((v, k) for k, v in row.items() if np.isfinite(v))[1]
        deciles = {k: 0 if k == best else max(1, d) for k, d in rank_deciles(row).items()}
        for entry in selectors.pools[family_name].configs:
            config = {k: entry.config[k] for k in space.names if k in entry.config}
            table[score_messages(card, space, config)[-1]["content"]] = deciles[entry.id]
    return OracleBackend(table)


def some_training_datasets(n: int) -> list[str]:
    from sllmbo.data.pool_select import dataset_of
    from sllmbo.eval.zeroshot_baselines import load_selectors

    scores = load_selectors().scores("lightgbm")
    small = sorted({dataset_of(v) for v in scores.index
                    if load_selectors().cards[v]["n_rows"] < 600})
    return small[:n]


def test_a_scorer_that_knows_the_ranks_has_zero_regret_and_baselines_do_not_see_it():
    datasets = some_training_datasets(2)
    result = validate(oracle_for(datasets, "lightgbm"), datasets, families=["lightgbm"],
                      echo=lambda _: None)
    summary = result["families"]["lightgbm"]
    assert summary["n_datasets"] == 2
    assert summary["mean_regret"]["score@1"] == 0.0
    for method in ("defaults", "portfolio", "knn", "size-portfolio"):
        assert f"{method}@5" in summary["mean_regret"]
    assert summary["versus_portfolio"]["score@1"]["losses"] == 0


def test_baselines_are_learned_without_the_validation_datasets(monkeypatch):
    import sllmbo.eval.validate_adapter as module
    from sllmbo.data.pool_select import dataset_of

    datasets = some_training_datasets(2)
    seen: list[set[str]] = []
    original = module.baseline_picks

    def spy(selectors, family, train_scores, card, size, observed):
        seen.append({dataset_of(v) for v in train_scores.index})
        return original(selectors, family, train_scores, card, size, observed)

    monkeypatch.setattr(module, "baseline_picks", spy)
    validate(None, datasets, families=["lightgbm"], echo=lambda _: None)
    assert seen and all(not (s & set(datasets)) for s in seen)


def test_heldout_datasets_are_refused_with_exit_2(capsys):
    from sllmbo.data.splits import HELDOUT

    held = sorted(HELDOUT)[0]
    assert main(["--datasets", held]) == 2
    assert "held out" in capsys.readouterr().err


def test_the_baselines_alone_write_json(tmp_path):
    out = tmp_path / "v.json"
    assert main(["--datasets", ",".join(some_training_datasets(1)), "--families", "xgboost",
                 "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "portfolio@1" in data["families"]["xgboost"]["mean_regret"]


def test_generated_answers_are_fitted_and_put_on_the_row_scale():
    from llm_scripts import ScriptedBackend

    from sllmbo.eval.validate_adapter import generate_regrets
    from sllmbo.eval.zeroshot_baselines import load_selectors

    selectors = load_selectors()
    scores = selectors.scores("lightgbm")
    variant = next(v for v in scores.index if v.split("@")[0] in some_training_datasets(1))
    row = {k: float(v) for k, v in scores.loc[variant].items()}
    best = min(v for v in row.values() if np.isfinite(v))
    fitted = []

    def scorer(task, family, config):
        fitted.append(config)
        if len(fitted) == 2:
            raise MemoryError("a fit that runs out of memory")
        return {"score": best if len(fitted) == 1 else best + 1e9}

    regrets = generate_regrets(ScriptedBackend(), variant, "lightgbm", row, 3, "greedy",
                               scorer=scorer)
    assert regrets == [0.0, 1.0, 1.0] and len(fitted) == 3
