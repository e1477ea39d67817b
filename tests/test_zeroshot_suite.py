"""The zero-shot suite of [9/12]: FLAML offline, the pool selectors as harness methods, the
plan's per-method seeds and budgets, and the statistics over datasets."""

from __future__ import annotations

import json
import math
import socket
from pathlib import Path

import numpy as np
import pytest

from sllmbo.core.families import get_family
from sllmbo.data import load_task

pytest.importorskip("flaml")


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_flaml_zeroshot_runs_offline_and_fits_on_the_family_builder(no_network: None) -> None:
    from sllmbo.core.objective import EvalSettings, cross_validate
    from sllmbo.eval.flaml_zeroshot import flaml_configs, flaml_family

    # FLAML's nearest benchmark task for this small regression is one whose LightGBM list is
    # the library defaults alone: its empty entry.
    assert flaml_configs(load_task("professor_salaries"), get_family("lightgbm")) == [{}]
    task = load_task("penguin_species@275")
    for name in ("lightgbm", "xgboost"):
        family = get_family(name)
        configs = flaml_configs(task, family)
        assert 1 <= len(configs) <= 12 and all(isinstance(c, dict) for c in configs)
        assert not any(k in c for c in configs for k in ("n_jobs", "random_state", "verbose"))
        first = next(c for c in configs if c)  # FLAML's own tuned entry, not the defaults
        if name == "lightgbm":
            assert "max_bin" in first and "log_max_bin" not in first  # FLAML's own conversion
        else:
            assert "max_depth" in first and "max_leaves" not in first  # the depth-wise learner
        small = {**first, "n_estimators": min(first.get("n_estimators", 100), 50)}
        result = cross_validate(task, flaml_family(family), small, EvalSettings(n_folds=2))
        assert math.isfinite(result.mean)


def test_flaml_zeroshot_refuses_a_family_it_has_no_portfolio_for() -> None:
    from sllmbo.core.errors import SllmboError
    from sllmbo.eval.flaml_zeroshot import flaml_configs

    with pytest.raises(SllmboError, match="no portfolio for mlp"):
        flaml_configs(load_task("professor_salaries"), get_family("mlp"))


def _plan(tmp_path: Path, adapter: str | None = None, **changes: object):
    from sllmbo.eval.harness import plan_eval
    from sllmbo.eval.suites import get_suite
    from sllmbo.tune import LLMOptions

    suite = get_suite("zero-shot").override(**changes)
    return plan_eval(suite, None, tmp_path / "out", LLMOptions(), adapter,
                     methods_given="methods" in changes)


def test_zero_shot_plan_covers_every_heldout_dataset_at_its_real_size(tmp_path: Path) -> None:
    from sllmbo.data.splits import HELDOUT

    plan = _plan(tmp_path, methods=("defaults", "knn", "tpe", "oracle-pool"))
    datasets = {t.label.split("@")[0] for t in plan.tasks}
    assert datasets == set(HELDOUT) and len(datasets) >= 30
    assert any(t.label.endswith("@20000") for t in plan.tasks)  # the cap, not 1,000 rows
    seeds = {m: {j.seed for j in plan.jobs if j.method == m} for m in plan.methods}
    assert seeds["knn"] == {0} and seeds["tpe"] == {0, 1}  # deterministic: one seed
    assert plan.settings.for_method("knn").max_budget == 5
    assert plan.settings.for_method("tpe").max_budget == 10


def test_zero_shot_skips_the_adapter_only_where_it_trained(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    (adapter / "data_card.json").write_text(json.dumps(
        {"tasks": {"train": ["breast_cancer", "bike_sharing@1729"]}}))
    plan = _plan(tmp_path, adapter=str(adapter), methods=("portfolio", "single-shot"))
    excluded = {t for t, _ in plan.excluded}
    assert excluded == {"breast_cancer@455", "bike_sharing@6916"}
    assert not [j for j in plan.jobs if j.method == "single-shot"
                and j.task.label in excluded]
    assert {j.task.label for j in plan.jobs if j.method == "portfolio"} >= excluded


def test_a_selector_run_is_rerun_when_the_matrix_changes_its_configurations(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from sllmbo.eval.harness import run_eval
    from sllmbo.eval.methods.selectors import Knn

    picks = [[{"num_leaves": 15}], [{"num_leaves": 63}]]
    monkeypatch.setattr(Knn, "configs", lambda *a: picks[0])
    plan = _plan(tmp_path, methods=("knn",), families=("lightgbm",), budgets=(1,),
                 tasks=("hitters_salary@210",))
    first = run_eval(plan, progress=False)
    assert [r["config"] for r in first] == [{"num_leaves": 15}]
    assert [r["config"] for r in run_eval(plan, progress=False)] == [{"num_leaves": 15}]
    picks.pop(0)  # the grown matrix ranks another configuration first
    assert [r["config"] for r in run_eval(plan, progress=False)] == [{"num_leaves": 63}]


def test_statistics_over_datasets_average_variants_and_seeds_first() -> None:
    from sllmbo.eval.overdatasets import dataset_regrets, paired_test

    records = [{"task": t, "method": m, "budget": 1, "regret": r}
               for t, m, r in [("a@100", "x", 0.2), ("a@400", "x", 0.4), ("a@100", "y", 0.5),
                               ("b", "x", 0.1), ("b", "y", 0.1)]]
    datasets, table = dataset_regrets(records, ["x", "y"], 1)
    assert datasets == ["a", "b"]
    assert np.allclose(table, [[0.3, 0.5], [0.1, 0.1]])
    test = paired_test(table[:, 0], table[:, 1])
    assert (test.wins, test.ties, test.losses, test.p_value) == (1, 1, 0, None)


def test_friedman_nemenyi_matches_demsar_critical_difference() -> None:
    from sllmbo.eval.overdatasets import friedman_nemenyi

    rng = np.random.default_rng(0)
    table = rng.random((20, 4)) + np.array([0.0, 0.2, 0.4, 0.6])
    ranking = friedman_nemenyi(table, ["a", "b", "c", "d"])
    # Demsar (2006), Table 5: q_0.05 = 2.569 for 4 methods; CD = q sqrt(k(k+1)/6N).
    assert ranking.critical_difference == pytest.approx(2.569 * math.sqrt(4 * 5 / 120), 1e-3)
    assert ranking.mean_ranks[0] < ranking.mean_ranks[3]
    assert sum(ranking.mean_ranks) == pytest.approx(10.0)
    assert ranking.friedman_p is not None and ranking.friedman_p < 0.05


def test_cd_diagrams_keep_every_dataset_for_the_methods_that_ran_on_all(tmp_path) -> None:
    from sllmbo.eval.overdatasets import coverage_groups, dataset_regrets, overdatasets_section

    rng = np.random.default_rng(1)
    records = []
    for d in range(12):
        for m, shift in (("portfolio", 0.0), ("knn", 0.1), ("tpe", 0.2), ("llm-tpe", 0.3)):
            if m == "llm-tpe" and d >= 6:
                continue  # an adapter not run on the datasets it trained on
            records.append({"task": f"d{d}@100", "method": m, "budget": 1,
                            "regret": float(min(1.0, rng.random() * 0.3 + shift))})
    methods = ["portfolio", "knn", "tpe", "llm-tpe"]
    _, table = dataset_regrets(records, methods, 1)
    assert coverage_groups(table, methods) == [methods[:3], methods]
    lines = "\n".join(overdatasets_section(tmp_path, records, methods, [1],
                                           versus=[("llm-tpe", ["portfolio", "tpe", "x"])]))
    assert "over the 12 datasets every method above finished" in lines  # not cut to 6
    assert "over the 6 datasets all methods, those run on fewer datasets included" in lines
    assert (tmp_path / "cd_b1.png").exists() and (tmp_path / "cd_b1_common.png").exists()
    assert "| `llm-tpe` | `portfolio` | 0/0/6 p=0.031 (n=6) |" in lines
    assert "`x`" not in lines  # a baseline that did not run is not a row
