"""The cross-evaluated matrix: every pool configuration scored on every task variant.

The scheduler is Optuna's own storage: one study per variant holds one enqueued trial per cell
(``family`` and ``config`` indices as fixed parameters), and workers take the variants in
:func:`run_order`, which spans the sizes early. Workers in any number of
processes, on any number of machines sharing one RDB storage (PostgreSQL), pop waiting trials
with ``study.optimize``; a worker killed mid-cell leaves a running trial whose heartbeat stops,
and Optuna's ``RetryHeartbeatStaleTrialCallback`` enqueues it again. The same command resumes.

Training variants are scored by repeated K-fold CV on their training rows (3 x 3-fold below
``REPEAT_BELOW_ROWS`` rows, 1 x 3-fold above), so that a small dataset's ranking is not one
noisy split. Held-out variants are scored by the evaluation stage (refit on the
whole training split, scored on the test split) into a file under ``eval/`` that nothing in
``data/`` or ``training/`` reads: :func:`read_matrix` refuses it here.
"""

from __future__ import annotations

import gzip
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.data.pool import Pool, read_pools
from sllmbo.data.registry import plan_variants
from sllmbo.data.variants import Variant

MATRIX_FORMAT = "sllmbo-matrix/1"
POOL_FILE = Path(__file__).parent / "matrix" / "pool.json"
TRAIN_MATRIX = Path(__file__).parent / "matrix" / "train.csv.gz"
N_FOLDS = 3
REPEAT_BELOW_ROWS = 2_000
N_REPEATS_SMALL = 3
#: Columns of a matrix file, one row per cell that ran.
COLUMNS = ("variant", "family", "config_id", "status", "score", "score_std", "n_fits",
           "fit_seconds", "error")

Scorer = Callable[[Any, Any, dict[str, Any]], dict[str, Any]]


@dataclass(frozen=True)
class MatrixSpec:
    """What one matrix holds: its split, its variants (rows) and the pools (columns)."""

    split: str
    variants: tuple[Variant, ...]
    pools: tuple[Pool, ...]

    @property
    def study_name(self) -> str:
        """The prefix of its studies' names (one study per variant)."""
        return f"matrix:{self.split}:" + "+".join(f"{p.family}-{p.hash}" for p in self.pools)

    @property
    def n_cells(self) -> int:
        return len(self.variants) * sum(len(p) for p in self.pools)

    def header(self) -> dict[str, Any]:
        return {"format": MATRIX_FORMAT, "split": self.split,
                "pools": {p.family: p.hash for p in self.pools},
                "variants": [v.name for v in self.variants]}


def training_spec(families: Sequence[str] | None = None, datasets: Sequence[str] | None = None,
                  pool_file: str | Path = POOL_FILE) -> MatrixSpec:
    """The training matrix: every variant of the training split (or of ``datasets``, which
    must all be training datasets) x the committed pools."""
    from sllmbo.core.families import get_family
    from sllmbo.data.registry import task_names
    from sllmbo.data.splits import refuse_heldout

    known = task_names("train")
    for name in datasets or ():
        refuse_heldout(name, "cross-evaluate")
        if name not in known:
            raise SllmboError(f"unknown training dataset '{name}'",
                              hint="`sllmbo tasks --split train` lists them")
    pools = read_pools(pool_file)
    names = [get_family(f).name for f in families] if families else list(pools)
    missing = [f for f in names if f not in pools]
    if missing:
        raise SllmboError(f"the pool has no configurations of {', '.join(missing)}",
                          hint=f"its families: {', '.join(pools)}")
    return MatrixSpec("train", tuple(plan_variants("train", list(datasets) if datasets else None)),
                      tuple(pools[f] for f in names))


def cv_scorer(task: Any, family: Any, config: dict[str, Any]) -> dict[str, Any]:
    """Repeated 3-fold CV on the variant's training rows (3 repeats below 2,000 rows)."""
    from sllmbo.core.objective import EvalSettings, cross_validate

    repeats = N_REPEATS_SMALL if len(task.X_train) < REPEAT_BELOW_ROWS else 1
    scores, seconds = [], 0.0
    for seed in range(repeats):
        result = cross_validate(task, family, config, EvalSettings(n_folds=N_FOLDS, seed=seed))
        scores += result.fold_scores
        seconds += result.seconds
    mean = sum(scores) / len(scores)
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / len(scores))
    return {"score": mean, "score_std": std, "n_fits": len(scores), "fit_seconds": seconds}


# ------------------------------------------------------------------------ the queue

def _storage(url: str) -> Any:
    """The storage every matrix process opens: ``data collect``'s opener (one set of checks
    and messages), with a slower heartbeat, since a cell on a large variant runs for
    minutes; a lost cell is retried twice. SQLite transactions take the write lock when they
    begin, so two workers never pop the same cell."""
    from sllmbo.core.storage import open_storage

    return open_storage(url, heartbeat_s=60, grace_s=180, max_retry=2)


def run_order(variants: Sequence[Variant]) -> list[Variant]:
    """The order workers take variants in: round-robin over size bands (x4 apart, from 250
    rows), smallest first within a band, so that a collection cut short holds every band,
    not only the small variants it would reach first in size order."""
    bands: dict[int, list[Variant]] = {}
    for v in sorted(variants, key=lambda v: (v.rows, v.dataset)):
        bands.setdefault(int(math.log(max(v.rows, 250) / 250, 4)), []).append(v)
    queues = [bands[b] for b in sorted(bands)]
    out: list[Variant] = []
    while any(queues):
        for queue in queues:
            if queue:
                out.append(queue.pop(0))
    return out


def variant_study_name(spec: MatrixSpec, variant: Variant) -> str:
    return f"{spec.study_name}:{variant.name}"


def _cells_of_variant(spec: MatrixSpec) -> list[tuple[int, int]]:
    """(family, config) indices of one variant's cells, in run order."""
    return [(f, c) for f, pool in enumerate(spec.pools) for c in range(len(pool))]


def prepare_studies(spec: MatrixSpec, storage_url: str,
                    finished: str | Path | None = None) -> int:
    """One study per variant, each holding its cells as enqueued trials (created once; later
    calls only check the plan and add cells that are missing). Returns the cells restored.

    ``finished`` is an earlier export of this matrix (the committed file): its cells enter a
    new storage as finished trials, not as work, so a collection resumes from the last commit
    when its database is gone (another machine, a new session).

    One small queue per variant, not one queue of every cell: Optuna pops a waiting trial by
    reading every waiting trial of the study, which took ~13 s a cell on a 31k-cell study.
    """
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(storage_url)
    dists = _distributions(spec)
    header = spec.header()
    done = _finished_cells(spec, finished)
    restored = 0
    existing = {s.study_name for s in optuna.get_all_study_summaries(storage)}
    for variant in spec.variants:
        name = variant_study_name(spec, variant)
        study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
        if name in existing:
            if study.user_attrs.get("sllmbo:matrix") not in (None, header):
                raise SllmboError(f"study {name} in this storage was planned with other "
                                  "variants", hint="use another --storage")
            present = {(t.params["family"], t.params["config"])
                       for t in study.get_trials(deepcopy=False) if "config" in t.params}
        else:
            present = set()
        study.set_user_attr("sllmbo:matrix", header)
        card = done.get((variant.name, None))
        if card is not None and "card" not in study.user_attrs:
            study.set_user_attr("card", card)
        trials = []
        for f, c in _cells_of_variant(spec):
            if (f, c) in present:
                continue
            row = done.get((variant.name, (f, c)))
            if row is None:
                trials.append(create_trial(state=TrialState.WAITING, distributions=dists,
                                           params={"family": f, "config": c}))
                continue
            ok = row["status"] == "ok"
            attrs = {key: row[key] for key in ("score_std", "n_fits", "fit_seconds", "error")
                     if row[key] is not None}
            trials.append(create_trial(
                state=TrialState.COMPLETE if ok else TrialState.FAIL,
                value=float(row["score"]) if ok else None, distributions=dists,
                params={"family": f, "config": c}, user_attrs={**attrs, "restored": True}))
            restored += 1
        study.add_trials(trials)
    return restored


def _finished_cells(spec: MatrixSpec, path: str | Path | None) -> dict[tuple[str, Any], Any]:
    """The cells of an earlier export of ``spec``, keyed by (variant, (family, config)
    indices), and each variant's card under (variant, None). Nothing when ``path`` is None
    or absent; an export of another split or pool is refused, never merged."""
    if path is None or not Path(path).exists():
        return {}
    import pandas as pd

    matrix = read_matrix(path, pools={p.family: p for p in spec.pools}, split=spec.split)
    index = {(p.family, cfg.id): (f, c) for f, p in enumerate(spec.pools)
             for c, cfg in enumerate(p.configs)}
    wanted = {v.name for v in spec.variants}
    out: dict[tuple[str, Any], Any] = {(name, None): card for name, card
                                       in matrix.header.get("cards", {}).items()}
    for row in matrix.cells.to_dict("records"):
        cell = index.get((row["family"], row["config_id"]))
        if cell is None or row["variant"] not in wanted:
            continue
        out[(row["variant"], cell)] = {k: (None if pd.isna(v) else v) for k, v in row.items()}
    return out


def _distributions(spec: MatrixSpec) -> dict[str, Any]:
    from optuna.distributions import IntDistribution

    return {"family": IntDistribution(0, len(spec.pools) - 1),
            "config": IntDistribution(0, max(len(p) for p in spec.pools) - 1)}


def run_worker(spec: MatrixSpec, storage_url: str, scorer: Scorer = cv_scorer) -> int:
    """Score the waiting cells of each variant's study in turn until none is left; returns
    the cells this worker ran. Workers elsewhere on the same storage share the queues."""
    import optuna

    from sllmbo.core.families import get_family
    from sllmbo.core.objective import _fit_errors
    from sllmbo.data.registry import load_task

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = _storage(storage_url)
    fit_errors = (*_fit_errors(), MemoryError)
    dists = _distributions(spec)
    ran = 0
    for variant in run_order(spec.variants):
        study = optuna.load_study(study_name=variant_study_name(spec, variant), storage=storage,
                                  sampler=optuna.samplers.RandomSampler())
        waiting = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.WAITING,))
        if not waiting:
            continue
        task = load_task(variant.name)
        if "card" not in study.user_attrs:
            study.set_user_attr("card", task.meta_features())

        def objective(trial: optuna.Trial, study: Any = study, task: Any = task) -> float:
            nonlocal ran
            if "config" not in trial.params:  # not a cell popped from the queue: it is drained
                study.stop()
                raise optuna.TrialPruned("this variant's queue is drained")
            f, c = (trial.suggest_int(name, dists[name].low, dists[name].high)
                    for name in ("family", "config"))
            pool = spec.pools[f]
            trial.set_user_attr("cell", [task.name, pool.family, pool.configs[c].id])
            ran += 1
            try:
                result = scorer(task, get_family(pool.family), pool.configs[c].config)
            except fit_errors as err:
                trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:300])
                return float("nan")
            for key in ("score_std", "n_fits", "fit_seconds"):
                trial.set_user_attr(key, result[key])
            return float(result["score"])

        study.optimize(objective, gc_after_trial=False)
    return ran


# ------------------------------------------------------------------------ progress, export

def _variant_studies(spec: MatrixSpec, storage_url: str) -> list[tuple[Variant, Any]]:
    import optuna

    storage = _storage(storage_url)
    return [(v, optuna.load_study(study_name=variant_study_name(spec, v), storage=storage))
            for v in spec.variants]


def count_cells(spec: MatrixSpec, storage_url: str) -> dict[str, int]:
    """Trials by state over every variant's study (a pruned trial ends a worker's turn)."""
    from collections import Counter

    total: Counter[str] = Counter()
    for _, study in _variant_studies(spec, storage_url):
        total.update(t.state.name.lower() for t in study.get_trials(deepcopy=False))
    return dict(total)


def cell_rows(spec: MatrixSpec, storage_url: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One row per cell that finished (complete, or failed with a fit error; the first
    complete trial of a cell wins), and each variant's card."""
    rows, cards = [], {}
    for variant, study in _variant_studies(spec, storage_url):
        if "card" in study.user_attrs:
            cards[variant.name] = study.user_attrs["card"]
        best: dict[tuple[int, int], dict[str, Any]] = {}
        for t in study.get_trials(deepcopy=False):
            if "config" not in t.params or t.state.name not in ("COMPLETE", "FAIL"):
                continue
            if t.state.name == "FAIL" and "error" not in t.user_attrs:
                continue  # a lost worker's trial: retried, not a result
            cell = (t.params["family"], t.params["config"])
            if cell in best and best[cell]["status"] == "ok":
                continue
            pool = spec.pools[cell[0]]
            if cell[1] >= len(pool):
                continue
            ok = t.state.name == "COMPLETE"
            best[cell] = {"variant": variant.name, "family": pool.family,
                          "config_id": pool.configs[cell[1]].id,
                          "status": "ok" if ok else "failed",
                          "score": t.value if ok else None,
                          "score_std": t.user_attrs.get("score_std"),
                          "n_fits": t.user_attrs.get("n_fits"),
                          "fit_seconds": t.user_attrs.get("fit_seconds"),
                          "error": t.user_attrs.get("error")}
        rows += [best[c] for c in sorted(best)]
    return rows, cards


def export_matrix(spec: MatrixSpec, storage_url: str, out: str | Path) -> Path:
    """Write the finished cells to ``out`` (gzip CSV) and the header beside it
    (``<name>.json``: format, split, pool hashes, variants and their cards), atomically."""
    rows, cards = cell_rows(spec, storage_url)
    return write_export(spec, rows, cards, out)


def write_export(spec: MatrixSpec, rows: Sequence[dict[str, Any]], cards: dict[str, Any],
                 out: str | Path) -> Path:
    """Write ``rows`` (one dict of ``COLUMNS`` per cell, in the spec's order) and the
    variants' ``cards`` as ``spec``'s export, atomically."""
    import pandas as pd

    out = Path(out)
    frame = pd.DataFrame(list(rows), columns=list(COLUMNS))
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz:
        gz.write(frame.to_csv(index=False, float_format="%.6g").encode())
    header = {**spec.header(), "n_rows": len(frame), "n_cells": spec.n_cells, "cards": cards}
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, data in ((out, buffer.getvalue()),
                       (_header_path(out), (json.dumps(header, indent=1) + "\n").encode())):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return out


def _header_path(out: Path) -> Path:
    return out.with_name(out.name.removesuffix(".csv.gz") + ".json")


@dataclass(frozen=True)
class Matrix:
    """A matrix read back: its header and a long table of cells (pandas)."""

    header: dict[str, Any]
    cells: Any

    def scores(self, family: str) -> Any:
        """variants x config ids of ``family``'s scores (NaN: not run or failed)."""
        sub = self.cells[self.cells["family"] == family]
        return sub.pivot(index="variant", columns="config_id", values="score")


def read_matrix(path: str | Path = TRAIN_MATRIX, pools: dict[str, Pool] | None = None,
                split: str = "train") -> Matrix:
    """Read a matrix file, refusing a truncated file, one built from another pool than
    ``pools`` (default: the committed pools), and one of another split than ``split``."""
    import pandas as pd

    path = Path(path)
    try:
        header = json.loads(_header_path(path).read_text())
        cells = pd.read_csv(path)
    except (OSError, ValueError, EOFError, gzip.BadGzipFile) as err:
        raise SllmboError(f"cannot read the matrix {path}: {err}",
                          hint="rebuild or resume it: make matrix") from None
    if header.get("format") != MATRIX_FORMAT:
        raise SllmboError(f"{path} is not a matrix file (format {MATRIX_FORMAT})")
    if header.get("split") != split:
        raise SllmboError(f"{path} holds the {header.get('split')} matrix, not the {split} one")
    if len(cells) != header.get("n_rows") or list(cells.columns) != list(COLUMNS):
        raise SllmboError(f"{path} is truncated or altered: {len(cells)} rows, its header "
                          f"says {header.get('n_rows')}", hint="re-export it: make matrix")
    pools = pools if pools is not None else read_pools(POOL_FILE)
    foreign = {f: h for f, h in header["pools"].items() if f not in pools or pools[f].hash != h}
    if foreign:
        raise SllmboError(f"{path} was built from another pool ({foreign}) than "
                          f"{POOL_FILE.name}'s", hint="rebuild the matrix for this pool")
    return Matrix(header, cells)


# ------------------------------------------------------------------------ the command

def collect_matrix(spec: MatrixSpec, storage_url: str, out: str | Path, workers: int = 2,
                   export_every_s: float = 600.0, scorer: Scorer = cv_scorer,
                   poll_s: float = 60.0) -> dict[str, int]:
    """Enqueue the spec's cells, score them in ``workers`` processes with a progress bar and
    ETA, and export the finished cells every ``export_every_s`` seconds and at the end."""
    from concurrent.futures import ProcessPoolExecutor, wait

    from tqdm import tqdm

    restored = prepare_studies(spec, storage_url, finished=out)
    if restored:
        print(f"restored {restored} finished cells from {out}", flush=True)

    def done() -> int:
        now = count_cells(spec, storage_url)
        return min(now.get("complete", 0) + now.get("fail", 0), spec.n_cells)

    bar = tqdm(total=spec.n_cells, initial=done(), unit="cell", desc=f"matrix {spec.split}",
               smoothing=0.05, mininterval=poll_s)
    last_export = time.monotonic()
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = [pool.submit(run_worker, spec, storage_url, scorer) for _ in range(workers)]
        while True:
            finished, _ = wait(futures, timeout=poll_s)
            bar.update(max(0, done() - bar.n))
            if time.monotonic() - last_export >= export_every_s:
                export_matrix(spec, storage_url, out)
                last_export = time.monotonic()
            if len(finished) == len(futures):
                break
        for future in futures:
            future.result()
    bar.close()
    export_matrix(spec, storage_url, out)
    return count_cells(spec, storage_url)
