"""``sllmbo data build | export | import``: trial logs in any Optuna storage -> instruction data."""

from __future__ import annotations

from pathlib import Path

import typer

BUILD_EXAMPLES = """

Examples:

  sllmbo data build --storage data/corpus/trials.jsonl.gz --out runs/instructions

  sllmbo data build --storage ../shared/fixtures/sllmbo-results \\
      --cards data/cards/sllmbo_paper.yaml --out runs/paper-instructions

  sllmbo data build --storage data/corpus/trials.jsonl.gz --matrix data/matrix/train.csv.gz \\
      --out runs/matrix-instructions

  sllmbo data build --storage postgresql://user:pass@host/optuna --study 'team-*' \\
      --cards our_cards.yaml --out runs/team --overwrite

--storage takes an RDB URL, a SQLite or journal file, an export (*.jsonl.gz) or a folder of
them; repeat it to combine sources. Studies without a task card need a --cards YAML entry;
held-out tasks are refused. Skipped studies are listed with the reason.
"""


def register(group: typer.Typer) -> None:
    group.command("build", help="Build chat instruction data (a DatasetDict + JSONL + data "
                  "card) from trial logs." + BUILD_EXAMPLES)(build_command)
    group.command("export", help="Write trial logs from any storage as a compact .jsonl.gz "
                  "export (what the repository commits).")(export_command)
    group.command("import", help="Write an export's studies into an Optuna storage, e.g. to "
                  "continue a collection in a new session.")(import_command)


def build_command(
    storage: list[str] = typer.Option([], "--storage", help="Source of trial logs (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Output folder (must not exist)."),
    matrix: Path | None = typer.Option(
        None, "--matrix", help="Also build examples from a cross-evaluated training matrix "
        "(data/matrix/train.csv.gz): its variants' top configurations and scoring rows."),
    matrix_top_k: int = typer.Option(5, "--matrix-top-k", help="Single-shot examples per "
                                     "matrix variant and family (its best pool configurations)."),
    matrix_picks: int = typer.Option(0, "--matrix-picks", help="Pick examples per matrix "
                                     "variant and family (its best pool entries, by name)."),
    matrix_pick_temperature: float | None = typer.Option(
        None, "--matrix-pick-temperature", help="Soft pick targets instead of --matrix-picks: "
        "every pool entry of a variant, weighted exp(-regret / T) (trains with shared_prefix)."),
    matrix_feedback: int = typer.Option(
        0, "--matrix-feedback", help="Few-shot pick histories per matrix variant and family: "
        "tried entries with the variant's scores -> every untried entry, weighted exp(-regret "
        "/ T) (trains with shared_prefix)."),
    matrix_feedback_temperature: float = typer.Option(
        0.5, "--matrix-feedback-temperature", help="T of the few-shot pick targets."),
    matrix_scores: int = typer.Option(20, "--matrix-scores", help="Scoring examples per matrix "
                                      "variant and family (0: none; -1: every configuration)."),
    cards: list[Path] = typer.Option([], "--cards", help="Task cards YAML for foreign studies "
                                     "(repeatable)."),
    study: str | None = typer.Option(None, "--study", help="Only studies matching this "
                                     "fnmatch pattern."),
    top_k: int = typer.Option(5, "--top-k", help="Single-shot examples per task and family."),
    max_sequential: int = typer.Option(10, "--max-sequential",
                                       help="Sequential examples per study (0: none)."),
    max_tokens: int = typer.Option(1024, "--max-tokens", help="Token budget of one example."),
    validation_share: float = typer.Option(0.1, "--validation-share",
                                           help="Share of tasks held for validation loss."),
    tokenizer: Path | None = typer.Option(None, "--tokenizer", help="Tokenizer folder that "
                                          "measures examples (default: the embedded model)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the validation task choice."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
) -> None:
    from sllmbo.core.errors import SllmboError, check_output_folder
    from sllmbo.data.build import build_dataset, load_tokenizer
    from sllmbo.data.instructions import BuildOptions

    try:
        options = BuildOptions(top_k=top_k, max_sequential_per_study=max_sequential,
                               max_tokens=max_tokens, validation_share=validation_share,
                               seed=seed)
        from sllmbo.data.matrix_examples import MatrixOptions

        matrix_options = MatrixOptions(top_k=matrix_top_k, seed=seed, pick_top_k=matrix_picks,
                                       pick_temperature=matrix_pick_temperature,
                                       feedback_histories=matrix_feedback,
                                       feedback_temperature=matrix_feedback_temperature,
                                       score_per_variant=None if matrix_scores == -1
                                       else matrix_scores)
    except ValueError as err:
        raise SllmboError(f"bad build option: {err}") from None
    if matrix is not None and not matrix.is_file():
        raise SllmboError(f"--matrix {matrix} is not a file",
                          hint="the committed one is data/matrix/train.csv.gz (make matrix)")
    check_output_folder(out, "--out")
    if out.exists() and not overwrite:
        raise SllmboError(f"output folder {out} exists", hint="pass --overwrite to replace it")
    # The embedded tokenizer loads only once the trial logs are read (a bad --storage fails
    # fast); a --tokenizer folder is checked first.
    card = build_dataset(storage, out, cards=cards, study_filter=study, options=options,
                         tokenizer=None if tokenizer is None else load_tokenizer(tokenizer),
                         overwrite=overwrite, progress=not quiet, matrix=matrix,
                         matrix_options=matrix_options)
    n, kinds = card["n_examples"], card["by_kind"]
    typer.echo(f"wrote {out}: {n['train']} train / {n['validation']} validation examples "
               f"from {card['n_tasks']['train']} + {card['n_tasks']['validation']} tasks "
               f"({card['studies_used']} of {card['studies_read']} studies, "
               f"{card['trials_used']} completed trials)")
    typer.echo(f"  kinds (train): {kinds['train']}; tokens (train): "
               f"{card['token_lengths'].get('train', {})}")
    if card["corrupt_trials_skipped"]:
        typer.echo(f"  skipped {card['corrupt_trials_skipped']} damaged trial rows")
    reasons: dict[str, list[str]] = {}
    for item in card["skipped"]:
        reasons.setdefault(item["reason"], []).append(item["study"])
    for reason, studies in reasons.items():
        shown = ", ".join(studies[:4]) + (f" and {len(studies) - 4} more" if len(studies) > 4
                                          else "")
        typer.echo(f"  skipped {len(studies)} studies: {reason}: {shown}")


def export_command(
    storage: list[str] = typer.Option(..., "--storage", help="Source of trial logs (repeatable)."),
    out: Path = typer.Option(..., "--out", help="Export file (*.jsonl.gz)."),
    study: str | None = typer.Option(None, "--study", help="Only studies matching this "
                                     "fnmatch pattern."),
) -> None:
    from sllmbo.core.errors import SllmboError, check_output_file
    from sllmbo.data.export import write_export
    from sllmbo.data.logged import ReadResult
    from sllmbo.data.trial_logs import read_trial_logs

    if not out.name.endswith(".jsonl.gz"):
        raise SllmboError(f"--out must end with .jsonl.gz, got {out.name}")
    check_output_file(out, "--out")
    read = ReadResult()
    for location in storage:
        read.extend(read_trial_logs(location, study))
    if not read.studies:  # an empty export would only hide the mistake until `data build`
        shown = "; ".join(f"{s}: {r}" for s, r in read.skipped[:3])
        raise SllmboError("no study to export" + (f" (skipped {shown})" if shown else ""),
                          hint="check --storage and --study")
    n = write_export(read.studies, out)
    trials = sum(len(s.complete) for s in read.studies)
    size = out.stat().st_size / 1e6
    typer.echo(f"wrote {out}: {n} studies, {trials} completed trials, {size:.1f} MB")


def import_command(
    export: Path = typer.Argument(..., help="An export written by `sllmbo data export`."),
    storage: str = typer.Option(..., "--storage", help="Optuna storage URL to write into."),
) -> None:
    from sllmbo.core.storage import mask_url
    from sllmbo.data.export import import_export

    imported, present = import_export(export, storage)
    typer.echo(f"imported {imported} studies into {mask_url(storage)} ({present} were there "
               "already)")
