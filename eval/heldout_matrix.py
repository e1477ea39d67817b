"""The held-out matrix: every pool configuration refit on each held-out dataset's training
split (its real size, capped as the variants are) and scored on its test split.

It gives the ``oracle-pool`` ceiling and the exact test regret of any pool selector cheaply.
It lives under ``eval/`` and only the evaluation reads it: ``sllmbo.data.matrix.read_matrix``
refuses a held-out matrix unless asked for that split, and a test checks that no code under
``data/`` or ``training/`` names this file.

    python -m sllmbo.eval.heldout_matrix --storage sqlite:///runs/matrix-heldout.db --workers 2
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sllmbo.data.matrix import POOL_FILE, MatrixSpec, collect_matrix, read_matrix
from sllmbo.data.pool import read_pools
from sllmbo.data.registry import plan_variants

HELDOUT_MATRIX = Path(__file__).parent / "matrix" / "heldout.csv.gz"


def heldout_spec(families: list[str] | None = None) -> MatrixSpec:
    """Every held-out dataset at its top rung x the committed pools."""
    pools = read_pools(POOL_FILE)
    variants = tuple(v for v in plan_variants("heldout") if v.is_full)
    return MatrixSpec("heldout", variants, tuple(pools[f] for f in (families or pools)))


def refit_test_scorer(task: Any, family: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Refit on the whole training split; the objective metric on the test split."""
    import time

    from sllmbo.core.objective import EvalSettings, holdout_scores

    started = time.perf_counter()
    scores = holdout_scores(task, family, config, EvalSettings(n_folds=3, seed=0))
    return {"score": scores[task.metric], "score_std": None, "n_fits": 1,
            "fit_seconds": time.perf_counter() - started}


def read_heldout_matrix(path: str | Path = HELDOUT_MATRIX) -> Any:
    return read_matrix(path, split="heldout")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--storage", default="sqlite:///runs/matrix-heldout.db")
    parser.add_argument("--out", type=Path, default=HELDOUT_MATRIX)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--export-every", type=float, default=10.0, help="minutes")
    args = parser.parse_args(argv)
    spec = heldout_spec()
    if args.storage.startswith("sqlite:///"):
        Path(args.storage.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    print(f"{spec.study_name}: {len(spec.variants)} variants, {spec.n_cells} cells", flush=True)
    state = collect_matrix(spec, args.storage, args.out, workers=args.workers,
                           export_every_s=60 * args.export_every, scorer=refit_test_scorer)
    print(f"cells by state: {state}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
