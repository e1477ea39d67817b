"""Merge exports of one matrix into one file, as if a single storage had held every cell.

Why: a fresh storage restores the committed export cell by cell before any worker starts,
and on shared cores that costs about 0.2 s a cell (an hour and more for the 31k training
cells). New datasets can instead be collected alone, into a file of their own, and merged
into the committed export:

    sllmbo data matrix --datasets iris_species,wine_cultivar --storage sqlite:///runs/new.db \\
        --out runs/matrix-new.csv.gz
    python -m sllmbo.data.matrix_merge runs/matrix-new.csv.gz

In a new session (``runs/`` is not committed), the new datasets' finished cells are first
taken out of the committed export, so that collection resumes instead of starting over:

    python -m sllmbo.data.matrix_merge --datasets iris_species,wine_cultivar \
        --into runs/matrix-new.csv.gz data/matrix/train.csv.gz

The result is byte for byte what ``export_matrix`` writes for the whole training spec: rows in
the spec's variant order, each variant's cells in pool order, the later file winning a cell
that two files hold. Every part must be an export of the same split and pools (``read_matrix``
refuses others); a cell of a dataset the registry no longer plans is refused, not dropped.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.data.matrix import TRAIN_MATRIX, MatrixSpec, read_matrix, training_spec, write_export


def merged_rows(spec: MatrixSpec, parts: Sequence[str | Path], select: bool = False,
                ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The cells of ``parts`` (later parts win a cell), in ``spec``'s export order, and the
    variants' cards (later parts win too). ``select``: drop the cells of variants outside
    ``spec`` (a subset of the datasets) instead of refusing them."""
    import pandas as pd

    pools = {p.family: p for p in spec.pools}
    order = {v.name: i for i, v in enumerate(spec.variants)}
    position = {(p.family, cfg.id): (f, c) for f, p in enumerate(spec.pools)
                for c, cfg in enumerate(p.configs)}
    frames, cards = [], {}
    for part in parts:
        matrix = read_matrix(part, pools=pools, split=spec.split)
        frames.append(matrix.cells)
        cards.update(matrix.header.get("cards", {}))
    cells = pd.concat(frames, ignore_index=True).drop_duplicates(
        ["variant", "family", "config_id"], keep="last")
    unknown = sorted(set(cells["variant"]) - set(order))
    if select:
        cells, unknown = cells[cells["variant"].isin(order)], []
    if unknown:
        raise SllmboError(f"{len(unknown)} variants of the parts are not planned by the "
                          f"registry: {', '.join(unknown[:3])}",
                          hint="merge exports of the current registry's datasets only")
    keys = [(order[v], *position[(f, c)]) for v, f, c
            in zip(cells["variant"], cells["family"], cells["config_id"], strict=True)]
    cells = cells.assign(_key=keys).sort_values("_key").drop(columns="_key")
    rows = [{k: (None if pd.isna(v) else v) for k, v in row.items()}
            for row in cells.to_dict("records")]
    return rows, {v.name: cards[v.name] for v in spec.variants if v.name in cards}


def merge_exports(spec: MatrixSpec, parts: Sequence[str | Path], out: str | Path,
                  select: bool = False) -> Path:
    """Write the merge of ``parts`` to ``out`` (and its header), atomically."""
    rows, cards = merged_rows(spec, parts, select)
    return write_export(spec, rows, cards, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("parts", nargs="+", type=Path,
                        help="exports to merge into --into, later ones winning a cell")
    parser.add_argument("--into", type=Path, default=TRAIN_MATRIX,
                        help=f"the export merged into and rewritten (default {TRAIN_MATRIX})")
    parser.add_argument("--datasets", help="comma-separated training datasets: write only "
                        "their variants (the start of a collection of those datasets alone)")
    args = parser.parse_args(argv)
    datasets = [d for d in (args.datasets or "").split(",") if d] or None
    try:
        spec = training_spec(datasets=datasets)
        parts = [args.into, *args.parts] if args.into.exists() else list(args.parts)
        merge_exports(spec, parts, args.into, select=datasets is not None)
    except SllmboError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    matrix = read_matrix(args.into, pools={p.family: p for p in spec.pools})
    print(f"{args.into}: {len(matrix.cells)} of {spec.n_cells} cells, "
          f"{matrix.cells['variant'].nunique()} of {len(spec.variants)} variants")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
