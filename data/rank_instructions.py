"""Instruction data for the LLM scorer: prompt/completion rows for TRL from the matrix.

Each row is one candidate of one query (a training row and a sampled history, drawn as
``sllmbo.data.rank_examples`` draws them for ``gbdt-rank``, so both learn from the same
moments of a run): the prompt is ``rank_messages`` (card, history, candidate), the completion
the digit of the candidate's ratio bin to the run's best so far. ``candidates`` of the untried
entries are kept per query, spread over the bins (the rare large gains are the answers that
matter). Each row also carries its soft bin label (``soft_bins``: the mass a normal of the
target's mean and standard error puts in each bin) for a trainer that weighs them.

The folder is what ``sllmbo train`` reads: ``dataset/`` (a ``DatasetDict``, train and
validation split by dataset fold) and ``data_card.json`` listing the tasks; held-out datasets
are refused before anything is written.

    python -m sllmbo.data.rank_instructions --out ~/.sllmbo/data/rank-bins
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sllmbo.core.rank_prompts import rank_completion, rank_messages
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.build import CARD_FILE
from sllmbo.data.pool import Pool
from sllmbo.data.pool_select import task_type_of
from sllmbo.data.rank_examples import (
    MAX_TRIED,
    dataset_fold,
    history_of,
    portfolios,
    query_target,
    sample_history,
)
from sllmbo.data.rank_targets import BIN_RATIOS, RowTargets, bin_of, soft_bins
from sllmbo.data.splits import refuse_heldout

RANK_KIND = "rank-bins"
DATA_FORMAT = "sllmbo-instructions/1"


def card_of(row: RowTargets) -> TaskCard:
    """The task card a run on ``row``'s variant shows (the matrix's meta-features; the
    objective is the task's own: rmse or log loss, minimized)."""
    task_type = task_type_of(row.card)
    fields = {k: v for k, v in row.card.items() if k in TaskCard.model_fields}
    return TaskCard(task=row.variant, task_type=task_type, model_family=row.family,
                    metric="log_loss" if task_type == "classification" else "rmse",
                    direction="minimize", **fields)


def rank_rows(rows: Sequence[RowTargets], pools: Mapping[str, Pool], n_histories: int = 8,
              candidates: int = 8, seed: int = 0) -> list[dict[str, Any]]:
    """Instruction rows of every training row: the empty history and ``n_histories``
    sampled ones, ``candidates`` untried entries each, spread over the bins."""
    from sllmbo.core.families import get_family
    from sllmbo.data.matrix_examples import pick_pool_name

    rng = random.Random(seed)
    kinds = ("portfolio", "good", "random")
    out: list[dict[str, Any]] = []
    for family in sorted({r.family for r in rows}):
        family_rows = [r for r in rows if r.family == family]
        folios = portfolios(family_rows)
        pool = pools[family]
        space = get_family(family).default
        for row in family_rows:
            refuse_heldout(row.dataset, "build scorer instructions from")
            card = card_of(row)
            histories: list[list[int]] = [[]]
            for h in range(n_histories):
                tried = sample_history(row, folios[task_type_of(row.card)], rng,
                                       rng.randint(1, MAX_TRIED), kinds[h % len(kinds)])
                if tried not in histories:
                    histories.append(tried)
            for tried in histories:
                untried = [i for i in range(len(pool)) if i not in tried]
                target, se = query_target(row, tried, untried)
                bins = bin_of(target)
                chosen = _spread(untried, list(bins), candidates, rng)
                soft = soft_bins(target, se)
                history = history_of(row, tried)
                for j in chosen:
                    position = untried[j]
                    config = pool.configs[position].config
                    out.append({
                        "prompt": rank_messages(card, space, pick_pool_name(pool), history,
                                                position, config, BIN_RATIOS),
                        "completion": rank_completion(int(bins[j])),
                        "kind": RANK_KIND, "task": row.variant, "family": family,
                        "config_id": pool.configs[position].id, "n_tried": len(tried),
                        "bin": int(bins[j]), "target": float(min(target[j], 10.0)),
                        "soft_bins": [round(float(p), 4) for p in soft[j]]})
    return out


def _spread(items: list[int], bins: list[int], n: int, rng: random.Random) -> list[int]:
    """Indices of ``n`` of ``items``, taken round-robin over their bins (shuffled within)."""
    by_bin: dict[int, list[int]] = {}
    for j, b in enumerate(bins):
        by_bin.setdefault(b, []).append(j)
    for members in by_bin.values():
        rng.shuffle(members)
    chosen: list[int] = []
    while len(chosen) < min(n, len(items)):
        for b in sorted(by_bin):
            if by_bin[b] and len(chosen) < n:
                chosen.append(by_bin[b].pop())
    return sorted(chosen)


def write_rank_data(rows: Sequence[dict[str, Any]], out: str | Path,
                    validation_fold: int = 0) -> dict[str, Any]:
    """Write ``rows`` as an instruction-data folder (train: every dataset outside
    ``validation_fold``; validation: its datasets) and return its card."""
    from datasets import Dataset, DatasetDict

    out = Path(out)
    splits: dict[str, list[dict[str, Any]]] = {"train": [], "validation": []}
    for row in rows:
        dataset = row["task"].split("@", 1)[0]
        splits["validation" if dataset_fold(dataset) == validation_fold else "train"].append(row)
    DatasetDict({k: Dataset.from_list(v) for k, v in splits.items() if v}).save_to_disk(
        str(out / "dataset"))
    card = {"format": DATA_FORMAT, "kinds": [RANK_KIND],
            "n_examples": {k: len(v) for k, v in splits.items()},
            "tasks": {k: sorted({r["task"] for r in v}) for k, v in splits.items()},
            "bins": list(BIN_RATIOS)}
    (out / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    return card


def main(argv: Sequence[str] | None = None) -> int:
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools
    from sllmbo.data.rank_targets import matrix_targets

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--histories", type=int, default=8)
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    pools = read_pools(POOL_FILE)
    rows = matrix_targets(read_matrix(pools=pools), pools)
    examples = rank_rows(rows, pools, args.histories, args.candidates, args.seed)
    card = write_rank_data(examples, args.out)
    print(f"wrote {card['n_examples']} rank-bins examples to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
