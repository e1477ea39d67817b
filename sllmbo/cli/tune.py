"""``sllmbo tune``: tune a model family on a task with an Optuna study that resumes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sllmbo.cli import options
from sllmbo.samplers import registry

if TYPE_CHECKING:
    from sllmbo.tune import TuneResult

EXAMPLES = """

Examples:

  sllmbo tune --task bike_sharing --model lightgbm --sampler tpe \\
      --n-trials 30 --storage sqlite:///runs.db --study bike-lgbm --seed 0

  sllmbo tune --data sales.csv --target units --model xgboost --n-trials 50 \\
      --storage sqlite:///runs.db --output result.json

  sllmbo tune --task diabetes --model lightgbm --sampler llm-tpe --space llm \\
      --n-trials 20 --adapt-every 10 --storage sqlite:///runs.db

  sllmbo tune --task diabetes --sampler llm --backend openai \\
      --base-url http://127.0.0.1:8000/v1 --n-trials 20

  sllmbo tune --task diabetes --model xgboost --sampler feedback --n-trials 5

Run the same command again to resume: only the missing completed trials run.
"""


def register(app: typer.Typer) -> None:
    app.command("tune", help="Tune hyperparameters on a task; resumable." + EXAMPLES)(tune_command)


def tune_command(
    task: str | None = options.TASK,
    data: Path | None = options.DATA,
    target: str | None = options.TARGET,
    task_type: str | None = options.TASK_TYPE,
    family: str = options.FAMILY,
    sampler: str = typer.Option(
        "tpe", "--sampler", help="; ".join(f"{spec.name}: {spec.help}" for spec in
                                           map(registry.get, registry.names()))),
    n_trials: int = typer.Option(30, "--n-trials", help="Target number of completed trials."),
    storage: str | None = typer.Option(
        None, "--storage", help="Optuna storage URL, e.g. sqlite:///runs.db (default: in memory)."
    ),
    study: str | None = typer.Option(None, "--study", help="Study name (default: derived)."),
    seed: int = typer.Option(0, "--seed", help="Seed of folds, models and sampler."),
    n_folds: int = typer.Option(5, "--n-folds", help="Cross-validation folds."),
    n_jobs: int = typer.Option(1, "--n-jobs", help="Threads per model fit."),
    metric: str | None = typer.Option(
        None, "--metric", help="rmse (regression) | log_loss | accuracy (classification)."
    ),
    output: Path | None = typer.Option(None, "--output", help="Write the result as JSON here."),
    space_file: Path | None = typer.Option(
        None,
        "--space-file",
        help="Your own search space (JSON/YAML, name -> {type, low, high, log} or "
        "{type: categorical, choices}); kept within the family's hard limits.",
    ),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    backend: str = options.BACKEND,
    llm_path: str | None = options.LLM_PATH,
    adapter: str | None = options.ADAPTER,
    base_url: str | None = options.BASE_URL,
    space: str = typer.Option(
        "default", "--space",
        help="default: the family's space | llm: the LLM initializer proposes it (within the "
        "hard limits).",
    ),
    n_initial: int = options.N_INITIAL,
    init: str = options.INIT,
    patience: int | None = typer.Option(
        None, "--patience",
        help="Stop after this many completed trials without improvement (default: 15 for "
        "llm, 5 for llm-tpe, off for tpe/random; 0: off).",
    ),
    min_delta: float = typer.Option(
        0.0, "--min-delta", help="Smallest relative improvement that resets the patience."
    ),
    adapt_every: int = typer.Option(
        0, "--adapt-every", help="Let the LLM narrow/widen the space every N trials (0: off)."
    ),
    p_llm: float = options.P_LLM,
    adaptive_p: bool = typer.Option(
        False, "--adaptive-p", help="llm-tpe: move the LLM share toward the improving source."
    ),
    llm_timeout: float | None = options.LLM_TIMEOUT,
    temperature: float = options.TEMPERATURE,
    max_tokens: int = options.MAX_TOKENS,
) -> None:
    from sllmbo.tune import LLMOptions, tune

    llm = LLMOptions(
        backend=backend, model_path=llm_path, adapter=adapter, base_url=base_url,
        space=space, n_initial=n_initial, init=init, patience=patience, min_delta=min_delta,
        adapt_every=adapt_every, p_llm=p_llm, adaptive_p=adaptive_p, timeout=llm_timeout,
        temperature=temperature, max_tokens=max_tokens,
    )

    result = tune(
        task,
        data=data,
        target=target,
        task_type=task_type,
        family=family,
        sampler=sampler,
        n_trials=n_trials,
        storage=storage,
        study_name=study,
        seed=seed,
        n_folds=n_folds,
        n_jobs=n_jobs,
        metric=metric,
        output=output,
        progress=not quiet,
        space_file=space_file,
        llm=llm,
    )
    print_result(result)


def print_result(r: TuneResult) -> None:
    import json

    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"{r.task} / {r.model} / {r.sampler}  (study {r.study})")
    table.add_column("")
    table.add_column("value")
    table.add_row("completed trials", f"{r.n_complete} of {r.n_trials_target} (failed {r.n_failed})")
    if r.best_value is not None:
        table.add_row(f"best CV {r.metric}", f"{r.best_value:.6g} (trial {r.best_trial})")
        for name, value in r.test_scores.items():
            table.add_row(f"test {name}", f"{value:.6g}")
    if r.stop_reason:
        table.add_row("stopped", r.stop_reason)
    if r.failures:
        table.add_row("failed trials", r.failures)
    table.add_row("seconds", f"{r.seconds:.1f}")
    console.print(table)
    if r.llm is not None:
        from sllmbo.summary import LoopSummary, summary_table

        fields = {k: v for k, v in r.llm.items() if k != "mean_latency_s"}
        console.print(summary_table(LoopSummary(**fields)))
        for note in r.llm.get("notes", []):  # on stderr too: a run that was mostly TPE
            typer.echo(f"warning: {note}", err=True)
    if r.best_params is not None:
        console.print("best configuration:")
        console.print_json(json.dumps(r.best_params))
