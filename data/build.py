"""``sllmbo data build``: storages -> a ``datasets.DatasetDict`` + JSONL + a data card.

Output folder (written to a temporary sibling, then renamed, so nothing is half-written)::

    OUT/dataset/          DatasetDict.save_to_disk (train / validation, split by task; an
                          empty validation split is left out)
    OUT/train.jsonl, OUT/validation.jsonl
    OUT/data_card.json    counts per task, family and kind; sources; token lengths; skips

The data card lists every task in the data; training refuses a card that lists a held-out
task, and ``card_sha256`` (the hash of the card file) identifies the data an adapter saw.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError, check_output_folder
from sllmbo.core.storage import mask_url
from sllmbo.data.cards import load_card_rules
from sllmbo.data.instructions import (
    BuildOptions,
    dedupe,
    select_studies,
    sequential_examples,
    single_shot_examples,
    validation_tasks,
)
from sllmbo.data.logged import ReadResult
from sllmbo.data.splits import heldout_match
from sllmbo.data.trial_logs import read_trial_logs

CARD_FILE = "data_card.json"


def load_tokenizer(path: str | Path | None) -> Any:
    """The tokenizer that measures examples: ``path``, else the embedded model's."""
    from transformers import AutoTokenizer

    from sllmbo.core.home import resolve_model

    folder = Path(path) if path is not None else resolve_model(None)
    if not folder.is_dir():
        raise SllmboError(f"--tokenizer {folder} is not a folder",
                          hint="give a model or tokenizer folder (tokenizer.json and its config)")
    try:
        return AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as err:  # no tokenizer files, or ones it cannot convert
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SllmboError(f"no tokenizer loads from {folder}: {first}",
                          hint="give a model or tokenizer folder (tokenizer.json and its config)"
                          ) from None


def build_dataset(
    storages: Sequence[str],
    out: str | Path,
    *,
    cards: Sequence[str | Path] = (),
    study_filter: str | None = None,
    options: BuildOptions = BuildOptions(),
    tokenizer: Any = None,
    overwrite: bool = False,
    progress: bool = True,
    matrix: str | Path | None = None,
    matrix_options: Any = None,
) -> dict[str, Any]:
    """Build the instruction data; returns the data card (also written to ``OUT``).

    ``matrix``: also (or only) the cross-evaluated training matrix's examples
    (``sllmbo.data.matrix_examples``)."""
    import datasets
    from datasets import Dataset, DatasetDict

    if not progress:
        datasets.disable_progress_bars()

    out = Path(out)
    check_output_folder(out, "--out")
    if out.exists() and not overwrite:
        raise SllmboError(f"output folder {out} exists", hint="pass --overwrite to replace it")
    if not storages and matrix is None:
        raise SllmboError("give at least one --storage or --matrix")
    started = time.perf_counter()
    rules = [rule for path in cards for rule in load_card_rules(path)]
    read = ReadResult()
    for location in storages:
        read.extend(read_trial_logs(location, study_filter))
    selection = select_studies(read.studies, rules)
    matrix_rows: list[dict[str, Any]] = []
    if matrix is not None:
        from sllmbo.data.matrix_examples import MatrixOptions, matrix_examples

        matrix_rows = matrix_examples(matrix, matrix_options or MatrixOptions())
    if not selection.usable and not matrix_rows:  # known before the tokenizer loads
        _no_examples(read, selection, 0, options.max_tokens)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(None)

    def count_text(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    rows = single_shot_examples(selection.usable, options.top_k)
    for study in _progress(selection.usable, progress):
        rows += sequential_examples(study, options, count_text)
    rows = dedupe(rows + matrix_rows)
    if any("weight" in r for r in rows):  # one schema: an unweighted example weighs 1
        rows = [{**r, "weight": r.get("weight", 1.0)} for r in rows]
    kept, too_long = _measure(rows, tokenizer, options.max_tokens)
    if not kept:  # before anything is written: an empty dataset trains nothing
        _no_examples(read, selection, too_long, options.max_tokens)
    leaked = sorted({r["task"] for r in kept if heldout_match(r["task"])})
    if leaked:  # select_studies refuses them; this guards the guard
        raise AssertionError(f"held-out tasks reached the data: {leaked}")
    val_tasks = validation_tasks((r["task"] for r in kept), options.validation_share,
                                 options.seed)
    splits = {
        "train": [r for r in kept if r["task"] not in val_tasks],
        "validation": [r for r in kept if r["task"] in val_tasks],
    }
    if not splits["train"]:
        raise SllmboError(f"every one of the {len(val_tasks)} tasks went to validation: no "
                          "training examples", hint="lower --validation-share")
    card = data_card(splits, read, selection, storages, cards, options, too_long,
                     tokenizer.name_or_path, time.perf_counter() - started)
    if matrix is not None:
        from dataclasses import asdict

        from sllmbo.data.matrix_examples import MatrixOptions

        card["sources"].append({**_source(str(matrix)), "kind": "matrix"})
        card["matrix_options"] = asdict(matrix_options or MatrixOptions())
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        # An empty split is left out: datasets saves one it cannot load back (IndexError in
        # load_from_disk), and training reads a missing validation split as none.
        DatasetDict({k: Dataset.from_list(v) for k, v in splits.items() if v}).save_to_disk(
            str(tmp / "dataset"))
        for name, split_rows in splits.items():
            with open(tmp / f"{name}.jsonl", "w") as handle:
                for row in split_rows:
                    handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        (tmp / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    card["card_sha256"] = hashlib.sha256((out / CARD_FILE).read_bytes()).hexdigest()
    return card


def _no_examples(read: ReadResult, selection: Any, too_long: int, max_tokens: int) -> None:
    """Stop a build that would write 0 examples, saying what was read and what was skipped."""
    raise SllmboError(no_examples_message(read, selection, too_long, max_tokens),
                      hint="check --storage and --study; studies without a task card need a "
                      "--cards entry")


def no_examples_message(read: ReadResult, selection: Any, too_long: int,
                        max_tokens: int) -> str:
    """Why a build produced 0 examples: what was read and why each study was left out."""
    why = [f"{study}: {reason}" for study, reason in read.skipped + selection.skipped][:3]
    more = len(read.skipped) + len(selection.skipped) - len(why)
    parts = [f"0 instruction examples from {len(read.studies)} studies read "
             f"({len(selection.usable)} usable)"]
    if too_long:
        parts.append(f"{too_long} examples are longer than --max-tokens {max_tokens}")
    if why:
        parts.append("skipped " + "; ".join(why) + (f"; and {more} more" if more else ""))
    return ": ".join(parts[:1]) + ("; " + "; ".join(parts[1:]) if parts[1:] else "")


def _progress(items: list[Any], enabled: bool) -> Any:
    from rich.progress import track

    return track(items, description="sequential examples", disable=not enabled,
                 transient=True)


def _measure(rows: list[dict[str, Any]], tokenizer: Any,
             max_tokens: int) -> tuple[list[dict[str, Any]], int]:
    """Rows with their token count (chat template, prompt + answer) within ``max_tokens``."""
    kept, dropped = [], 0
    for row in rows:
        n = len(tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True,
                                              return_dict=True)["input_ids"])
        if n > max_tokens:
            dropped += 1
            continue
        kept.append({**row, "n_tokens": n})
    return kept, dropped


def _lengths(rows: list[dict[str, Any]]) -> dict[str, float]:
    values = sorted(r["n_tokens"] for r in rows)
    if not values:
        return {}

    def q(p: float) -> int:
        return values[min(len(values) - 1, int(p * len(values)))]

    return {"min": values[0], "median": statistics.median(values), "p90": q(0.9),
            "p99": q(0.99), "max": values[-1], "total": sum(values)}


def data_card(splits: dict[str, list[dict[str, Any]]], read: ReadResult, selection: Any,
              storages: Sequence[str], cards: Sequence[str | Path], options: BuildOptions,
              too_long: int, tokenizer_name: str, seconds: float) -> dict[str, Any]:
    """What the data holds and where it came from (JSON; ``training/`` reads ``tasks``)."""
    from dataclasses import asdict

    every = [r for rows in splits.values() for r in rows]
    return {
        "format": "sllmbo-instructions/1",
        "n_examples": {k: len(v) for k, v in splits.items()},
        "tasks": {k: sorted({r["task"] for r in v}) for k, v in splits.items()},
        "n_tasks": {k: len({r["task"] for r in v}) for k, v in splits.items()},
        "by_kind": {k: dict(Counter(r["kind"] for r in v)) for k, v in splits.items()},
        "by_family": {k: dict(Counter(r["family"] for r in v)) for k, v in splits.items()},
        "by_task": dict(sorted(Counter(r["task"] for r in every).items())),
        "by_card_source": dict(Counter(r["card_source"].split(":")[0] for r in every)),
        "token_lengths": {k: _lengths(v) for k, v in splits.items()},
        "tokenizer": tokenizer_name,
        "dropped_over_max_tokens": too_long,
        "sources": [_source(s) for s in storages],
        "cards_files": [str(c) for c in cards],
        "studies_read": len(read.studies),
        "studies_used": len(selection.usable),
        "trials_used": sum(len(s.log.complete) for s in selection.usable),
        "corrupt_trials_skipped": read.n_corrupt,
        "retry_duplicates": sum(s.n_retry_duplicates for s in read.studies),
        "heldout_studies_refused": selection.heldout_refused,
        "skipped": [{"study": s, "reason": r} for s, r in read.skipped + selection.skipped],
        "options": asdict(options),
        "seconds": round(seconds, 1),
    }


def _source(location: str) -> dict[str, Any]:
    """A source and, for a file, its SHA-256 (URLs and folders are named only)."""
    path = Path(location)
    if "://" not in location and path.is_file():
        return {"location": location, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    return {"location": mask_url(location)}


def card_lists_heldout(card_path: str | Path) -> list[str]:
    """The held-out tasks a data card lists (training refuses such data)."""
    card = json.loads(Path(card_path).read_text())
    tasks = {t for names in card.get("tasks", {}).values() for t in names}
    return sorted(t for t in tasks if heldout_match(t))

