"""``sllmbo train``: a LoRA / QLoRA adapter from instruction data and a recipe."""

from __future__ import annotations

from pathlib import Path

import typer

HELP = (
    "Fine-tune a LoRA (or QLoRA) adapter on instruction data with TRL's SFT trainer (with "
    "shared_prefix: true, transformers' Trainer on shared-prefix packs).\n\n"
    "The loss is on the completion only, in the base model's chat template. The recipe (YAML) "
    "sets the base model, LoRA rank/alpha/dropout/targets, 4-bit NF4 (quantization: nf4), the "
    "schedule and precision; --set overrides any of its keys. Checkpoints go to "
    "OUT/checkpoints; a killed run continues with the same command plus --resume. OUT ends up "
    "holding the PEFT adapter (for --adapter OUT and vllm serve --lora-modules) with "
    "recipe.json, metrics.json, loss_curve.png, base_config.json, training.json and the data "
    "card beside it. Data whose card lists a held-out task is refused.\n\n"
    "Shipped recipes: training/recipes/*.yaml (pass a name or a path). Default --out: "
    "$SLLMBO_HOME/adapters/<recipe name>, so --adapter <name> finds it."
    """

Examples:

  sllmbo train --recipe training/recipes/smollm2-135m-lora.yaml

  sllmbo train --recipe smollm2-135m-lora --data runs/instructions --out /tmp/smoke \\
      --max-steps 20

  sllmbo train --recipe codellama-7b-instruct-qlora \\
      --base-model ~/models/CodeLlama-7b-Instruct-hf --merge

  accelerate launch -m sllmbo train --recipe codellama-7b-instruct-qlora  # several GPUs
"""
)


def register(app: typer.Typer) -> None:
    app.command("train", help=HELP)(train_command)


def train_command(
    recipe: str = typer.Option(..., "--recipe", help="Recipe YAML file, or a shipped "
                               "recipe's name."),
    data: Path | None = typer.Option(None, "--data", help="Instruction-data folder from "
                                     "`sllmbo data build` (default: the recipe's, else "
                                     "runs/instructions)."),
    out: Path | None = typer.Option(None, "--out", help="Adapter folder to write (default: "
                                    "$SLLMBO_HOME/adapters/<recipe name>)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from OUT's last checkpoint."),
    merge: bool = typer.Option(False, "--merge", help="Also write base + adapter merged into "
                               "OUT/merged."),
    base_model: str | None = typer.Option(None, "--base-model", help="Base model folder or "
                                          "name (overrides the recipe's base_model)."),
    max_steps: int | None = typer.Option(None, "--max-steps", help="Stop after this many "
                                         "optimizer steps (overrides the recipe)."),
    overrides: list[str] = typer.Option([], "--set", help="Override a recipe key: KEY=VALUE "
                                        "(repeatable; VALUE read as YAML)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
) -> None:
    from sllmbo.core.errors import check_output_folder
    from sllmbo.core.home import adapters_dir
    from sllmbo.training.recipe import load_recipe, parse_overrides

    if out is not None:
        check_output_folder(out, "--out")
    changes = parse_overrides(overrides)
    if base_model is not None:
        changes["base_model"] = base_model
    if max_steps is not None:
        changes["max_steps"] = max_steps
    spec = load_recipe(recipe, changes)  # validated before torch is imported
    if out is None:  # the default folder, named after the recipe
        check_output_folder(adapters_dir() / spec.name, "--out")

    from sllmbo.training.sft import train

    try:
        result = train(spec, data=data, out=out, resume=resume, merge=merge,
                       progress=not quiet, echo=lambda line: typer.echo(line, err=True))
    except KeyboardInterrupt:
        typer.echo("interrupted: the last checkpoint is kept; run the same command with "
                   "--resume to continue from it", err=True)
        raise typer.Exit(130) from None
    m = result.metrics
    if not m:  # not the main process under accelerate launch
        return
    evals = m["eval_loss"]
    first_eval = f"{evals[0][1]:.4f} -> " if len(evals) > 1 else ""
    typer.echo(f"wrote {result.out}: {m['steps']} steps in {m['train_seconds']:.0f} s "
               f"({m['tokens_per_s']} tokens/s, peak {m['peak_memory_gib']} GiB); "
               f"train loss {m['final_train_loss']}, validation loss "
               f"{first_eval}{m['final_eval_loss']}")
    if result.merged is not None:
        typer.echo(f"merged model: {result.merged}")
