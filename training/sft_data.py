"""The instruction data a run trains on: the data folder's card checked for held-out tasks
before anything loads, then the train and validation splits (``sllmbo data build`` writes
both).

Held-out tasks are refused twice: by the card (``check_data``) and by the rows themselves
(``load_splits``), so data whose card omits a held-out task still never reaches training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError

from .recipe import Recipe, RecipeError

#: The data folder when neither ``--data`` nor the recipe names one (``make instructions``).
DEFAULT_DATA = Path("runs/instructions")


@dataclass(frozen=True)
class TrainingData:
    """An instruction-data folder that passed the held-out check."""

    path: Path
    card: dict[str, Any]
    card_sha256: str


def check_data(path: str | Path) -> TrainingData:
    """The data folder's card, refused when it lists a held-out task (before any loading)."""
    import hashlib

    from sllmbo.data.build import CARD_FILE, card_lists_heldout
    from sllmbo.data.splits import heldout_match

    path = Path(path)
    card_path = path / CARD_FILE
    if not (path / "dataset").is_dir() or not card_path.is_file():
        raise SllmboError(f"no instruction data in {path} (needs dataset/ and {CARD_FILE})",
                          hint="build it with `sllmbo data build --storage STORAGE --out DIR` "
                          "(or `make instructions`), then pass --data DIR")
    raw = card_path.read_bytes()
    try:
        card = json.loads(raw)
        heldout = card_lists_heldout(card_path)
    except (json.JSONDecodeError, AttributeError) as err:
        raise SllmboError(f"{card_path} is not a data card: {err}",
                          hint="rebuild the data with `sllmbo data build`") from None
    if heldout:
        aliases = sorted({str(heldout_match(t)) for t in heldout} - set(heldout))
        raise SllmboError(
            f"refusing to train on {path}: its data card lists held-out tasks {heldout}"
            + (f" (aliases of {aliases})" if aliases else "")
            + "; held-out tasks are kept for evaluation only",
            hint="rebuild the data with `sllmbo data build` (it drops held-out studies)")
    return TrainingData(path, card, hashlib.sha256(raw).hexdigest())


def load_splits(data: TrainingData, recipe: Recipe) -> tuple[Any, Any | None]:
    """Train and validation ``Dataset``s (prompt/completion, and weight where examples are
    weighted); validation subsampled to
    ``eval_max_examples`` by a seeded shuffle, None when the split is empty."""
    from datasets import load_from_disk

    from sllmbo.data.splits import heldout_match

    dsd = load_from_disk(str(data.path / "dataset"))
    if "train" not in dsd or len(dsd["train"]) == 0:
        raise SllmboError(f"{data.path} has no training examples",
                          hint="build the data from a storage with completed trials")
    for split in dsd.values():  # guards the card check: the rows themselves
        if "task" in split.column_names:
            leaked = sorted({t for t in set(split["task"]) if heldout_match(t)})
            if leaked:
                raise SllmboError(f"refusing to train on {data.path}: rows of held-out tasks "
                                  f"{leaked} are in the data although its card omits them",
                                  hint="rebuild the data with `sllmbo data build`")
    keep = ["prompt", "completion"]
    if "weight" in dsd["train"].column_names:
        if not recipe.shared_prefix:
            if any(w != 1.0 for split in dsd.values() for w in split["weight"]):
                raise RecipeError(f"{data.path} has weighted examples (soft pick targets), "
                                  "which only the shared-prefix trainer weighs",
                                  hint="set shared_prefix: true in the recipe, or rebuild the "
                                  "data with --matrix-picks instead of a temperature")
        else:
            keep.append("weight")
    train = dsd["train"].select_columns(keep)
    val = dsd["validation"].select_columns(keep) if "validation" in dsd else None
    if val is not None and len(val) == 0:
        val = None
    if (val is not None and recipe.eval_max_examples and len(val) > recipe.eval_max_examples
            and not recipe.shared_prefix):  # shared-prefix packs are subsampled whole
        val = val.shuffle(seed=recipe.seed).select(range(recipe.eval_max_examples))
    return train, val
