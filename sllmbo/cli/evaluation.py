"""``sllmbo eval``: methods x tasks x budgets x seeds, resumable; results, report and plots."""

from __future__ import annotations

from pathlib import Path

import typer

from sllmbo.cli import options
from sllmbo.eval.suites import SUITES

#: Most repeats ``--seeds`` may ask for: the suites use 1-5, and each seed is a full set of
#: runs (a value mistaken for a count would plan billions of them).
MAX_SEEDS = 100

EXAMPLES = """

Examples:

  sllmbo eval --suite smoke

  sllmbo eval --suite default --workers 2 --out runs/eval/default

  sllmbo eval --suite sllmbo-paper --out runs/eval/paper

  sllmbo eval --task auto_mpg --task german_credit --families lightgbm \\
      --methods defaults,tpe,llm-tpe-base --budgets 1,5,10 --seeds 2

  sllmbo eval --suite default --methods defaults,tpe,llm-tpe-base --backend openai \\
      --base-url http://127.0.0.1:8000/v1 --model-path smollm2-135m-instruct

With --backend openai the -base methods ask the served model (`sllmbo serve --adapter none`
serves the base model); the fine-tuned methods run in process (--backend llamacpp or
transformers, --adapter DIR), where the adapter's data card is checked for held-out tasks.

Run the same command again to resume: finished runs are kept, unfinished ones go on.
"""


def register(app: typer.Typer) -> None:
    app.command("eval", help="Compare the LLM methods with TPE, random search, library "
                "defaults and a learned portfolio on held-out tasks." + EXAMPLES
                + methods_help())(eval_command)


def methods_help() -> str:
    """The registry's methods by kind (``sllmbo.eval.methods``), for ``--help``."""
    from sllmbo.eval.methods import KINDS, names

    lines = ["\n\nMethods (--methods), by kind:"]
    for kind, what in KINDS.items():
        lines.append(f"\n\n  {kind} ({what}): {', '.join(names(kind=kind))}")
    return "".join(lines)


def eval_command(
    suite: str = typer.Option("default", "--suite",
                              help=" | ".join(SUITES)),
    task: list[str] = typer.Option([], "--task", help="A task to run (repeatable); "
                                   "replaces the suite's tasks."),
    data: list[Path] = typer.Option([], "--data", help="Your CSV/Parquet file (repeatable, "
                                    "each with a --target)."),
    target: list[str] = typer.Option([], "--target", help="Target column of each --data."),
    families: str | None = typer.Option(None, "--families",
                                        help="Comma-separated model families, or all."),
    methods: str | None = typer.Option(None, "--methods",
                                       help="Comma-separated methods (listed below), or all."),
    budgets: str | None = typer.Option(None, "--budgets", help="e.g. 1,2,5,10,20,30"),
    seeds: int | None = typer.Option(
        None, "--seeds", help="How many seeds each run is repeated with (a count: seeds "
        f"0..N-1, at most {MAX_SEEDS})."),
    n_folds: int | None = typer.Option(None, "--n-folds", help="Cross-validation folds."),
    max_rows: int | None = typer.Option(None, "--max-rows",
                                        help="Cap on training rows (a fixed subsample)."),
    out: Path | None = typer.Option(None, "--out",
                                    help="Output folder (default: runs/eval/SUITE)."),
    workers: int = typer.Option(1, "--workers", help="Runs in parallel (processes)."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    report_only: bool = typer.Option(False, "--report-only",
                                     help="Run nothing: write results.json and the report "
                                     "from the runs finished so far."),
    rerun: bool = typer.Option(False, "--rerun",
                               help="Forget the finished runs of the given --methods (their "
                               "studies and stored answers) and run them again: after "
                               "changing how a method runs."),
    backend: str | None = typer.Option(None, "--backend",
                                       help="LLM backend: auto | llamacpp | transformers | "
                                       "vllm | openai (default: the suite's)."),
    llm_path: str | None = options.LLM_PATH,
    adapter: str | None = options.ADAPTER,
    base_url: str | None = options.BASE_URL,
    n_initial: int = options.N_INITIAL,
    init: str | None = typer.Option(
        None, "--init", help="Initial configurations of the LLM methods: initializer | "
        "recommender | auto (default: the suite's; auto but for sllmbo-paper's initializer)."),
    p_llm: float = options.P_LLM,
    llm_timeout: float | None = options.LLM_TIMEOUT,
    temperature: float = options.TEMPERATURE,
    max_tokens: int | None = typer.Option(None, "--max-tokens",
                                          help="Longest LLM answer (default: the suite's)."),
    patience: int = typer.Option(
        0, "--patience", help="Early stopping of the LLM methods (default 0: off, so every "
        "method gets the same budget)."),
) -> None:
    from sllmbo.core.errors import SllmboError, check_output_folder
    from sllmbo.eval.harness import plan_eval, run_eval
    from sllmbo.eval.methods import names as method_names
    from sllmbo.eval.runs import TaskRef
    from sllmbo.eval.suites import ALL_FAMILIES, get_suite, parse_budgets, parse_names
    from sllmbo.tune import LLMOptions

    chosen = get_suite(suite)
    if len(data) != len(target):
        raise SllmboError("give one --target for each --data")
    if workers < 1:
        raise SllmboError(f"--workers must be >= 1, got {workers}")
    if rerun and (methods is None or report_only):
        raise SllmboError("--rerun needs --methods (the runs to forget) and no --report-only")
    if seeds is not None and not 1 <= seeds <= MAX_SEEDS:
        raise SllmboError(
            f"--seeds is how many seeds each run is repeated with (seeds 0..N-1), from 1 to "
            f"{MAX_SEEDS}; got {seeds}",
            hint="to give one run a seed value, use `sllmbo tune --seed VALUE`")
    if n_folds is not None and n_folds < 2:
        raise SllmboError(f"--n-folds must be >= 2, got {n_folds}")
    if max_rows is not None and max_rows < 20:
        raise SllmboError(f"--max-rows must be >= 20, got {max_rows}")
    if (backend or chosen.backend) == "openai" and adapter not in (None, "default", "none"):
        raise SllmboError(
            f"--adapter {adapter} cannot be used with --backend openai: a served adapter's "
            "data card cannot be checked for held-out tasks, and the server is asked for "
            "--model-path, not an adapter",
            hint="evaluate the adapter in process (--backend llamacpp or transformers "
            "--adapter DIR), or drop --adapter to run the -base methods on the served model")
    out = out or Path("runs/eval") / chosen.name
    check_output_folder(out, "--out")
    refs = [TaskRef(name=_known_task(name)) for name in task]
    refs += [TaskRef(data=str(d), target=t) for d, t in zip(data, target, strict=True)]
    chosen = chosen.override(
        families=parse_names(families, ALL_FAMILIES, "--families") if families else None,
        methods=parse_names(methods, method_names(), "--methods") if methods else None,
        budgets=parse_budgets(budgets) if budgets else None,
        seeds=seeds, n_folds=n_folds, max_rows=max_rows, backend=backend,
        model_path=llm_path,
    )
    llm = LLMOptions(
        backend=chosen.backend, model_path=chosen.model_path, base_url=base_url,
        n_initial=n_initial, init=init or str(chosen.llm.get("init", "auto")),
        patience=patience, p_llm=p_llm, timeout=llm_timeout,
        temperature=temperature,
        max_tokens=max_tokens or int(chosen.llm.get("max_tokens", 256)),
    )
    plan = plan_eval(chosen, refs or None, out, llm,
                     adapter, methods_given=methods is not None,
                     # The suite's methods with whatever runs of them are in, and the
                     # methods asked for, also when the suite has not got them.
                     report_methods=tuple(dict.fromkeys(get_suite(suite).methods
                                                        + chosen.methods)) if methods else ())
    for method in plan.skipped_methods:
        typer.echo(f"note: {method} not run: it needs --adapter (the fine-tuned model)",
                   err=True)
    run_eval(plan, workers=workers, progress=not quiet, run=not report_only, rerun=rerun)
    typer.echo(f"results: {plan.settings.out_dir}/results.json, report.md, *.png")


def _known_task(name: str) -> str:
    """The registered task ``name``; a clear error before any run starts."""
    from sllmbo.data import task_names
    from sllmbo.data.variants import parse_variant

    key = name.lower().replace("-", "_")
    dataset = parse_variant(key)[0] if parse_variant(key) else key  # a variant: <task>@<rows>
    if dataset not in task_names():
        from sllmbo.core.errors import SllmboError

        raise SllmboError(f"unknown task '{name}'", hint="`sllmbo tasks` lists them")
    return key
