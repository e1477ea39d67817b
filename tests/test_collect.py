"""Corpus collection: planning, held-out refusal, real studies that resume."""

from __future__ import annotations

import optuna
import pytest

from sllmbo.cli import main
from sllmbo.core.errors import SllmboError, TaskError
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.collect import CollectJob, completed_counts, plan_jobs


def test_jobs_are_sampler_major_so_a_cut_short_collection_is_even():
    jobs = plan_jobs(["diabetes", "cpu_tdp"], ["lightgbm", "mlp"], {"tpe": 3, "random": 2})
    assert [j.sampler for j in jobs] == ["tpe"] * 4 + ["random"] * 4
    assert jobs[0] == CollectJob("diabetes", "lightgbm", "tpe", 0, 3)
    assert jobs[0].study_name == "corpus:diabetes:lightgbm:tpe:s0"


@pytest.mark.parametrize("tasks, families, per, error", [
    (["concrete_strength"], ["lightgbm"], {"tpe": 2}, TaskError),
    (["no_such_task"], ["lightgbm"], {"tpe": 2}, SllmboError),
    (["diabetes"], ["catboost"], {"tpe": 2}, SllmboError),
    (["diabetes"], ["lightgbm"], {"cmaes": 2}, SllmboError),
    (["diabetes"], ["lightgbm"], {"tpe": 0}, SllmboError),
])
def test_bad_plans_are_refused_before_anything_runs(tasks, families, per, error):
    with pytest.raises(error):
        plan_jobs(tasks, families, per)


@pytest.mark.slow
def test_collect_runs_capped_studies_with_cards_and_resumes(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'corpus.db'}"
    args = ["data", "collect", "--storage", url, "--tasks", "diabetes", "--families",
            "lightgbm", "--tpe-trials", "3", "--random-trials", "2", "--max-rows", "200",
            "--workers", "1", "--quiet", "--export", str(tmp_path / "corpus.jsonl.gz")]
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 0
    assert completed_counts(url) == {"corpus:diabetes:lightgbm:tpe:s0": 3,
                                     "corpus:diabetes:lightgbm:random:s0": 2}
    study = optuna.load_study(study_name="corpus:diabetes:lightgbm:tpe:s0", storage=url)
    card = TaskCard.from_study(study)
    assert card is not None and card.n_rows == 200 and card.full_train_rows == 353
    assert all(t.user_attrs["sllmbo:source"] == "tpe" for t in study.trials)
    from sllmbo.data.export import read_export

    exported = read_export(tmp_path / "corpus.jsonl.gz").studies
    assert sorted(len(s.complete) for s in exported) == [2, 3]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(args)  # a second run finds everything done
    assert "2 studies (2 already complete)" in capsys.readouterr().out


def test_each_study_gets_its_own_sampler_seed() -> None:
    """One seed everywhere made random startup configurations identical across tasks."""
    from sllmbo.data.collect import CollectJob

    jobs = [CollectJob(t, f, s, 0, 10) for t in ("diabetes", "wine_quality")
            for f in ("lightgbm", "xgboost") for s in ("tpe", "random")]
    seeds = [j.sampler_seed for j in jobs]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)
    assert CollectJob("diabetes", "lightgbm", "tpe", 0, 10).sampler_seed == seeds[0]  # stable
    assert CollectJob("diabetes", "lightgbm", "tpe", 1, 10).sampler_seed != seeds[0]
