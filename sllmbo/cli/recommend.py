"""``sllmbo recommend``: configurations from one batched inference, printed as JSON."""

from __future__ import annotations

from pathlib import Path

import typer

from sllmbo.cli import options

EXAMPLES = """

Examples:

  sllmbo recommend --task diabetes --model lightgbm

  sllmbo recommend --data sales.csv --target units --model xgboost --n 5

  sllmbo recommend --task diabetes --decode greedy    # one greedy answer: fastest

  sllmbo recommend --task diabetes --decode score --n 5   # the model ranks the shipped pool

  sllmbo recommend --task diabetes --decode pick --n 5    # one forward pass names pool entries

  sllmbo recommend --task diabetes --decode rank --adapter runs/adapters/rank-bins  # the scorer

  sllmbo recommend --task diabetes --backend openai --base-url http://127.0.0.1:8000/v1

Prints one JSON object (or a list with --n > 1); notes on rejected candidates go to stderr.
The first configuration is the consensus of --samples sampled answers (per parameter their
median, or the most common choice), the others are sampled answers. With --decode score the
model writes nothing: it scores each configuration of the committed pool (one forward pass
each, their shared prompt computed once) and the list it ranks best together comes back.
With --decode pick one forward pass gives the probability it names each pool entry (an
adapter trained on matrix-pick examples knows the entries by name). With --decode rank a
rank-bins adapter (the learned scorer) predicts each pool entry's error ratio to the library
defaults, and the entries of highest expected improvement come back.
"""


def register(app: typer.Typer) -> None:
    app.command(
        "recommend", help="Recommend hyperparameters without running trials." + EXAMPLES
    )(recommend_command)


def recommend_command(
    task: str | None = options.TASK,
    data: Path | None = options.DATA,
    target: str | None = options.TARGET,
    task_type: str | None = options.TASK_TYPE,
    family: str = options.FAMILY,
    n: int = typer.Option(1, "--n", help="Number of diverse candidates."),
    seed: int = typer.Option(0, "--seed", help="Seed of the sampled candidates."),
    temperature: float = typer.Option(0.8, "--temperature",
                                      help="Sampling temperature of the sampled answers."),
    decode: str = typer.Option("consensus", "--decode",
                               help="consensus (of --samples sampled answers), greedy, score "
                               "(rank the committed pool), pick (name pool entries) or rank (the "
                               "learned scorer's expected improvement; a rank-bins adapter)."),
    samples: int = typer.Option(8, "--samples",
                                help="Sampled answers the consensus is formed from."),
    backend: str = typer.Option(
        "auto", "--backend",
        help="LLM backend: auto (llama.cpp on a CPU where installed, else transformers) | "
        "llamacpp | transformers | vllm | openai."),
    llm_path: str | None = options.LLM_PATH,
    adapter: str | None = options.ADAPTER,
    base_url: str | None = options.BASE_URL,
) -> None:
    import json

    from sllmbo.core.errors import check_seed
    from sllmbo.data.resolve import check_task_flags
    from sllmbo.recommend import recommend_task

    check_seed(seed)
    check_task_flags(task, target, task_type)

    rec = recommend_task(
        task, family, n, None, data=data, target=target, task_type=task_type, seed=seed,
        temperature=temperature, max_tokens=256, decode=decode, samples=samples,
        backend_kind=backend, llm_path=llm_path,
        adapter=adapter, base_url=base_url,
    )
    typer.echo(f"note: answered by {rec.engine}" + (
        f" (not llama.cpp: {rec.engine_note})" if rec.engine_note else ""), err=True)
    for note in rec.rejected:
        typer.echo(f"note: {note}", err=True)
    for i, repairs in enumerate(rec.repairs):
        for repair in repairs:
            typer.echo(f"note: candidate {i}: {repair}", err=True)
    if not rec.configs:
        typer.secho(f"error: none of the {rec.requests} answers was a valid configuration",
                    fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    if len(rec.configs) < n:
        typer.echo(f"note: only {len(rec.configs)} of {n} candidates were valid and distinct",
                   err=True)
    typer.echo(json.dumps(rec.configs[0] if n == 1 else rec.configs, indent=2))
