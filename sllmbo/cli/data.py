"""``sllmbo data``: collect the trial-log corpus and build instruction data from any storage."""

from __future__ import annotations

from pathlib import Path

import typer

COLLECT_EXAMPLES = """

Examples:

  sllmbo data collect --storage sqlite:///runs/corpus.db --workers 2

  sllmbo data collect --storage sqlite:///runs/corpus.db --tasks diabetes,fifa_value \\
      --families lightgbm --tpe-trials 30 --random-trials 0

Run the same command again to resume: finished studies are skipped, partial ones completed.
Held-out tasks (`sllmbo tasks --split heldout`) are refused.
"""

MATRIX_EXAMPLES = """

Examples:

  sllmbo data matrix --storage sqlite:///runs/matrix-train.db --workers 2

  sllmbo data matrix --storage postgresql://host/matrix --workers 2   # on every machine

Run the same command again to resume; cells that finished are kept.
"""


def register(app: typer.Typer) -> None:
    group = typer.Typer(
        help="Trial-log corpus and instruction data.", no_args_is_help=True,
        pretty_exceptions_enable=False,
    )
    group.command("collect", help="Run TPE and random-search studies over the training "
                  "tasks x model families into one storage; resumable." + COLLECT_EXAMPLES)(
        collect_command
    )
    group.command("matrix", help="Cross-evaluate the candidate pool on every training "
                  "variant into one storage; resumable, parallel, several machines may share "
                  "one PostgreSQL storage." + MATRIX_EXAMPLES)(matrix_command)
    group.command("pool", help="Rebuild the candidate pool (data/matrix/pool.json) from the "
                  "corpus: defaults, space-filling study bests and Sobol points.")(pool_command)
    from sllmbo.cli import data_build

    data_build.register(group)
    app.add_typer(group, name="data")


def _split_list(value: str | None) -> list[str] | None:
    return None if value is None else [v.strip() for v in value.split(",") if v.strip()]


def collect_command(
    storage: str = typer.Option(..., "--storage", help="Optuna storage URL of the corpus."),
    tasks: str | None = typer.Option(
        None, "--tasks", help="Comma-separated training tasks (default: every training task)."
    ),
    families: str = typer.Option(
        "lightgbm,xgboost,random_forest,mlp", "--families", help="Comma-separated families."
    ),
    tpe_trials: int = typer.Option(20, "--tpe-trials", help="Completed trials per TPE study (0: none)."),
    random_trials: int = typer.Option(
        12, "--random-trials", help="Completed trials per random-search study (0: none)."
    ),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds (one study each)."),
    max_rows: int = typer.Option(
        2000, "--max-rows", help="Cap on training rows (a fixed subsample, stated in the card; "
        "0: no cap)."
    ),
    n_folds: int = typer.Option(3, "--n-folds", help="Cross-validation folds per trial."),
    workers: int = typer.Option(2, "--workers", help="Worker processes."),
    export: Path | None = typer.Option(
        None, "--export", help="Also write the corpus studies to this .jsonl.gz export, every "
        "--export-every minutes and at the end (a checkpoint to commit)."
    ),
    export_every: float = typer.Option(10.0, "--export-every", help="Minutes between exports."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    from sllmbo.core.errors import SllmboError
    from sllmbo.data import task_names
    from sllmbo.data.collect import collect, plan_jobs

    try:
        seed_list = [int(s) for s in _split_list(seeds) or []]
    except ValueError:
        raise SllmboError(f"--seeds must be comma-separated integers, got '{seeds}'") from None
    if max_rows < 0 or 0 < max_rows < 20:
        raise SllmboError(f"--max-rows must be 0 (no cap) or >= 20, got {max_rows}")
    if n_folds < 2:
        raise SllmboError(f"--n-folds must be >= 2, got {n_folds}")
    per_sampler = {s: n for s, n in (("tpe", tpe_trials), ("random", random_trials)) if n}
    if not per_sampler:
        raise SllmboError("nothing to collect: --tpe-trials and --random-trials are both 0")
    jobs = plan_jobs(
        _split_list(tasks) or task_names("train"), _split_list(families) or [], per_sampler,
        seed_list or [0],
    )
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    if export is not None and not export.name.endswith(".jsonl.gz"):
        raise SllmboError(f"--export must end with .jsonl.gz, got {export.name}")
    if export_every <= 0:
        raise SllmboError(f"--export-every must be > 0 minutes, got {export_every}")
    report = collect(jobs, storage, workers=workers, max_rows=max_rows or None,
                     n_folds=n_folds, progress=not quiet, export=export,
                     export_every_s=60 * export_every)
    typer.echo(
        f"{report.n_jobs} studies ({report.n_skipped} already complete); completed trials "
        f"{report.n_trials_before} -> {report.n_trials_after} in {report.seconds:.0f} s"
    )
    for study, error in report.errors.items():
        typer.echo(f"failed: {study}: {error}", err=True)
    if report.errors:
        raise typer.Exit(1)


def matrix_command(
    storage: str = typer.Option("sqlite:///runs/matrix-train.db", "--storage",
                                help="Optuna storage URL shared by the workers."),
    out: Path = typer.Option(Path("data/matrix/train.csv.gz"), "--out",
                             help="The matrix export (.csv.gz), rewritten as cells finish."),
    datasets: str | None = typer.Option(None, "--datasets", help="Comma-separated training "
                                        "datasets (default: all of the training split)."),
    families: str | None = typer.Option(None, "--families", help="Comma-separated families "
                                        "of the pool (default: every family in it)."),
    workers: int = typer.Option(2, "--workers", help="Worker processes on this machine."),
    export_every: float = typer.Option(10.0, "--export-every", help="Minutes between exports."),
) -> None:
    from sllmbo.core.errors import SllmboError
    from sllmbo.data.matrix import collect_matrix, training_spec

    if workers < 1:
        raise SllmboError(f"--workers must be >= 1, got {workers}")
    if export_every <= 0:
        raise SllmboError(f"--export-every must be > 0 minutes, got {export_every}")
    if not out.name.endswith(".csv.gz") or out.is_dir():
        raise SllmboError(f"--out must be a .csv.gz file, got {out}")
    spec = training_spec(_split_list(families), _split_list(datasets))
    if storage.startswith("sqlite:///"):
        Path(storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    typer.echo(f"{spec.study_name}: {len(spec.variants)} variants x "
               f"{sum(len(p) for p in spec.pools)} configurations = {spec.n_cells} cells")
    state = collect_matrix(spec, storage, out, workers=workers,
                           export_every_s=60 * export_every)
    typer.echo(f"cells by state: {state}; wrote {out}")


def pool_command(
    corpus: Path = typer.Option(Path("data/corpus/trials.jsonl.gz"), "--corpus",
                                help="The trial-log export the study bests come from."),
    out: Path = typer.Option(Path("data/matrix/pool.json"), "--out", help="The pool file."),
) -> None:
    from sllmbo.core.errors import check_output_file
    from sllmbo.data.export import read_export
    from sllmbo.data.pool import POOL_FAMILIES, build_pool, write_pools

    check_output_file(out, "--out")  # before the corpus is read: a folder there is refused
    studies = read_export(corpus).studies
    pools = [build_pool(f, studies) for f in POOL_FAMILIES]
    write_pools(pools, out)
    typer.echo(f"wrote {out}: " + ", ".join(f"{p.family} {len(p)} ({p.hash})" for p in pools))
