"""Time per trial of each model family on one task (``make bench-families``).

A trial is one K-fold cross-validation of a configuration drawn at random from the family's
default space (the same draws for every run of this script). Reported as the median seconds
per trial and as a ratio against LightGBM measured in the same run.

    python -m sllmbo.eval.bench_families --task bike_sharing --n-configs 5
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import optuna
from rich.console import Console
from rich.table import Table
from tqdm import tqdm

from sllmbo.core.families import FAMILIES
from sllmbo.core.objective import EvalSettings, cross_validate
from sllmbo.data import load_task


def random_configs(space_name: str, n: int, seed: int) -> list[dict]:
    """``n`` configurations from the family's default space, drawn by Optuna's RandomSampler."""
    space = FAMILIES[space_name].default_space()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    configs = []
    for _ in range(n):
        trial = study.ask(space.to_optuna())
        configs.append(dict(trial.params))
        study.tell(trial, 0.0)
    return configs


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="bike_sharing")
    parser.add_argument("--n-configs", type=int, default=5)
    parser.add_argument("--n-folds", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="results/bench_families.json")
    args = parser.parse_args(argv)

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    task = load_task(args.task)
    settings = EvalSettings(n_folds=args.n_folds, seed=args.seed, n_jobs=args.n_jobs)
    rows = {}
    for name, family in tqdm(FAMILIES.items(), desc="families"):
        seconds = [
            cross_validate(task, family, config, settings).seconds
            for config in random_configs(name, args.n_configs, args.seed)
        ]
        rows[name] = {"median_s": statistics.median(seconds), "all_s": seconds}
    baseline = rows["lightgbm"]["median_s"]
    for row in rows.values():
        row["ratio_vs_lightgbm"] = row["median_s"] / baseline

    table = Table(
        title=f"seconds per trial ({args.n_folds}-fold CV) on {task.name}: "
        f"{len(task.X_train)} train rows x {task.X_train.shape[1]} features, n_jobs={args.n_jobs}"
    )
    for column in ("family", "median s/trial", "min", "max", "x LightGBM"):
        table.add_column(column)
    for name, row in rows.items():
        table.add_row(
            name,
            f"{row['median_s']:.2f}",
            f"{min(row['all_s']):.2f}",
            f"{max(row['all_s']):.2f}",
            f"{row['ratio_vs_lightgbm']:.2f}",
        )
    Console().print(table)
    report = {"task": task.name, "train_rows": len(task.X_train), **vars(args), "families": rows}
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
