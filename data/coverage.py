"""Coverage of the training split: what kinds of task a learner trained on it can see.

A kind missing from training cannot be learned, whatever the model, so the matrix's datasets
are described per subtype (binary, multiclass, regression), training beside held-out: the
spread (min / median / max over datasets) of training rows, features, classes and the library
defaults' CV score. Statistics are over **datasets**: a dataset's variants share its split, so
its top rung (its whole training split, capped) stands for it.

Multiclass training datasets are split into *separable* and *noisy* by what the defaults
achieve: the defaults' skill is ``1 - log-loss / prior entropy`` (the share of the
class-frequency guess's log-loss that the defaults remove; 0 is the guess, 1 is perfect).
A dataset whose LightGBM defaults remove at least ``SEPARABLE_SKILL`` of it is separable.

The held-out side shows meta-features only (the shipped task facts). Its defaults' scores
live in the evaluation's own matrix, which nothing under ``data/`` reads (a test enforces it),
so the score columns and the separable/noisy split are training-only.

Run: ``python -m sllmbo.data.coverage`` (writes ``data/matrix/coverage.md``).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

#: The defaults are separable on a dataset when they remove at least this share of the
#: prior log-loss (half; on the brand, mode and vote choice data they remove a third at most).
SEPARABLE_SKILL = 0.5
#: At least this many features makes a dataset wide.
WIDE_FEATURES = 100
COVERAGE_FILE = Path(__file__).parent / "matrix" / "coverage.md"
FAMILIES = ("lightgbm", "xgboost")
#: Whose defaults decide separability (LightGBM's, the family the issue's numbers are in).
SKILL_FAMILY = "lightgbm"


@dataclass(frozen=True)
class DatasetCoverage:
    """One dataset as the coverage table sees it. ``scores``: each family's defaults' CV
    score at the dataset's top rung (log-loss; regression: RMSE / target sd), None when the
    split has no score here or the cell has not run yet."""

    name: str
    split: str
    task_type: str
    rows: int
    features: int
    classes: int | None
    scores: Mapping[str, float | None]
    skill: float | None = None
    #: The greedy portfolio's first classification entry's score over the defaults' (LightGBM)
    first_ratio: float | None = None

    @property
    def subtype(self) -> str:
        if self.task_type == "regression":
            return "regression"
        return "binary" if (self.classes or 0) <= 2 else "multiclass"

    @property
    def separability(self) -> str | None:
        """'separable' / 'noisy' for a scored multiclass dataset, else None."""
        if self.subtype != "multiclass" or self.skill is None:
            return None
        return "separable" if self.skill >= SEPARABLE_SKILL else "noisy"


def prior_entropy(labels: Sequence[Any]) -> float:
    """The log-loss (nats) of predicting the class frequencies of ``labels`` for every row."""
    from collections import Counter

    counts = Counter(labels).values()
    total = sum(counts)
    return -sum(c / total * math.log(c / total) for c in counts)


def defaults_skill(log_loss: float, entropy: float) -> float:
    """The share of the prior log-loss the defaults remove (negative: worse than the prior)."""
    return 1.0 - log_loss / entropy if entropy > 0 else 0.0


def spread(values: Sequence[float | int | None], digits: int = 3) -> str:
    """``min / median / max`` of the values that are present, '—' when none is."""
    import statistics

    present = sorted(v for v in values if v is not None)
    if not present:
        return "—"

    def fmt(v: float) -> str:
        if float(v).is_integer():
            return f"{int(v):,}"
        return f"{v:.{digits}g}"

    return " / ".join(fmt(v) for v in (present[0], statistics.median(present), present[-1]))


# ------------------------------------------------------------------------ gathering

def top_rung_scores(cells: Any, variant: str, ids: Mapping[str, str],
                    facts: Mapping[str, Any]) -> dict[str, float | None]:
    """The defaults' finished CV scores on ``variant`` (regression: divided by the target
    sd, so datasets in different units compare)."""
    out: dict[str, float | None] = {}
    for family, config_id in ids.items():
        hit = cells[(cells["variant"] == variant) & (cells["config_id"] == config_id)
                    & (cells["status"] == "ok")]
        score = float(hit["score"].iloc[0]) if len(hit) else None
        if score is not None and facts.get("task_type") == "regression":
            sd = facts.get("target_std") or 0.0
            score = score / sd if sd > 0 else None
        out[family] = score
    return out


def gather(facts: Mapping[str, Mapping[str, Any]], splits: Mapping[str, str], cells: Any,
           ids: Mapping[str, str], entropy_of: Callable[[str], float],
           first_entry: str | None = None) -> list[DatasetCoverage]:
    """One :class:`DatasetCoverage` per dataset in ``splits`` (name -> split). Scores are read
    from ``cells`` (the training matrix) for training datasets only; ``entropy_of(name)``
    gives a scored multiclass training dataset's prior entropy (it reads the data).
    ``first_entry``: a LightGBM config id whose ratio to the defaults multiclass rows show."""
    from sllmbo.data.variants import VARIANT_CAP, variant_name

    out = []
    for name, split in splits.items():
        fact = facts[name]
        scores: dict[str, float | None] = dict.fromkeys(ids)
        if split == "train":
            top = variant_name(name, min(int(fact["n_rows"]), VARIANT_CAP))
            scores = top_rung_scores(cells, top, ids, fact)
        row = DatasetCoverage(name, split, fact["task_type"], int(fact["n_rows"]),
                              int(fact["n_features"]), fact.get("n_classes"), scores)
        reference = scores.get(SKILL_FAMILY)
        if row.subtype == "multiclass" and reference is not None:
            first = (top_rung_scores(cells, top, {SKILL_FAMILY: first_entry}, fact)[SKILL_FAMILY]
                     if first_entry else None)
            row = replace(row, skill=defaults_skill(reference, entropy_of(name)),
                          first_ratio=None if first is None else first / reference)
        out.append(row)
    return out


def registry_coverage(matrix: Any = None) -> list[DatasetCoverage]:
    """Every registered dataset, from the shipped facts and the committed training matrix
    (``matrix``: one already read, for tests)."""
    from sllmbo.data.facts import registered_facts
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.matrix_targets import defaults_ids
    from sllmbo.data.pool import read_pools
    from sllmbo.data.pool_select import portfolio, whole_rows
    from sllmbo.data.registry import list_tasks, load_task

    matrix = matrix if matrix is not None else read_matrix()
    ids = {f: i for f, i in defaults_ids(read_pools(POOL_FILE)).items() if f in FAMILIES}
    splits = {info.name: info.split for info in list_tasks()}
    facts = {name: registered_facts(name) or {} for name in splits}

    def entropy_of(name: str) -> float:
        return prior_entropy(list(load_task(name).y_train))

    pool = read_pools(POOL_FILE)[SKILL_FAMILY]
    folio = portfolio(matrix.header.get("cards", {}), whole_rows(matrix, pool),
                      "classification", 1)
    return gather(facts, splits, matrix.cells, ids, entropy_of, folio[0] if folio else None)


# ------------------------------------------------------------------------ the report

_GROUPS: tuple[tuple[str, Callable[[DatasetCoverage], bool]], ...] = (
    ("binary", lambda d: d.subtype == "binary"),
    ("multiclass", lambda d: d.subtype == "multiclass"),
    ("multiclass, separable", lambda d: d.separability == "separable"),
    ("multiclass, noisy", lambda d: d.separability == "noisy"),
    ("regression", lambda d: d.subtype == "regression"),
)


def coverage_table(datasets: Sequence[DatasetCoverage]) -> str:
    """The markdown table: one row per subtype and split (training first)."""
    head = ("| subtype | split | datasets | training rows | features | classes | "
            "defaults' CV score, LightGBM | XGBoost |")
    lines = [head, "| --- | --- | ---: | --- | --- | --- | --- | --- |"]
    for label, keep in _GROUPS:
        for split in ("train", "heldout"):
            group = [d for d in datasets if d.split == split and keep(d)]
            if split == "heldout" and "," in label:
                lines.append(f"| {label} | held-out | n/a | (needs the held-out defaults' "
                             "scores, which data/ does not read) | | | | |")
                continue
            scored = [d for d in group if d.scores.get("lightgbm") is not None]
            classes = [d.classes for d in group] if label != "regression" else []
            note = "" if len(scored) == len(group) or split != "train" else f" ({len(scored)} scored)"
            lines.append(
                f"| {label} | {'training' if split == 'train' else 'held-out'} | "
                f"{len(group)}{note} | {spread([d.rows for d in group])} | "
                f"{spread([d.features for d in group])} | {spread(classes) if classes else '—'} | "
                + " | ".join(spread([d.scores.get(f) for d in group]) for f in FAMILIES) + " |")
    return "\n".join(lines)


def kinds_table(datasets: Sequence[DatasetCoverage]) -> str:
    """Counts of the kinds DESIGN.md asks both splits to cover (wide, small, large)."""
    kinds: tuple[tuple[str, Callable[[DatasetCoverage], bool]], ...] = (
        (f"wide (>= {WIDE_FEATURES} features)", lambda d: d.features >= WIDE_FEATURES),
        ("small (< 1,000 training rows)", lambda d: d.rows < 1_000),
        ("large (>= 10,000 training rows)", lambda d: d.rows >= 10_000),
        ("multiclass with >= 6 classes", lambda d: (d.classes or 0) >= 6),
    )
    lines = ["| kind | training | held-out |", "| --- | ---: | ---: |"]
    for label, keep in kinds:
        counts = [sum(keep(d) for d in datasets if d.split == s) for s in ("train", "heldout")]
        lines.append(f"| {label} | {counts[0]} | {counts[1]} |")
    return "\n".join(lines)


def multiclass_listing(datasets: Sequence[DatasetCoverage]) -> str:
    """The training multiclass datasets, most separable first, with their skill."""
    rows = sorted((d for d in datasets if d.split == "train" and d.subtype == "multiclass"),
                  key=lambda d: -(d.skill if d.skill is not None else -math.inf))
    lines = ["| dataset | classes | training rows | features | LightGBM defaults' log-loss | "
             "skill | kind | portfolio's first entry / defaults |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |"]
    for d in rows:
        score = d.scores.get("lightgbm")
        lines.append(f"| {d.name} | {d.classes} | {d.rows:,} | {d.features} | "
                     f"{'—' if score is None else f'{score:.3f}'} | "
                     f"{'—' if d.skill is None else f'{d.skill:.2f}'} | "
                     f"{d.separability or 'not scored yet'} | "
                     f"{'—' if d.first_ratio is None else f'{d.first_ratio:.2f}x'} |")
    return "\n".join(lines)


def report(datasets: Sequence[DatasetCoverage]) -> str:
    return "\n\n".join([
        "# Coverage of the training split",
        "Written by `python -m sllmbo.data.coverage` from `data/task_facts.json` and "
        "`data/matrix/train.csv.gz`. Spreads are min / median / max over datasets (each at "
        "its top rung). Scores are the library defaults' repeated-CV score on the training "
        "rows: log-loss for classification, RMSE / target sd for regression. A multiclass "
        f"dataset is *separable* when its LightGBM defaults remove at least "
        f"{SEPARABLE_SKILL:.0%} of the prior log-loss (skill = 1 - log-loss / class "
        "entropy). Held-out rows show meta-features only: their scores are the evaluation's "
        "and data/ never reads them.",
        coverage_table(datasets), "## Kinds", kinds_table(datasets),
        "## Training multiclass datasets",
        "The last column is the LightGBM log-loss of the greedy portfolio's first "
        "classification entry (`pool_select.portfolio` over the matrix's whole rows) over the "
        "defaults', at the dataset's top rung: above 1 the portfolio's single answer is worse "
        "than the library defaults.",
        multiclass_listing(datasets)]) + "\n"


def main(argv: list[str] | None = None) -> int:
    import sys

    from sllmbo.core.errors import SllmboError

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=COVERAGE_FILE,
                        help=f"the markdown report (default {COVERAGE_FILE})")
    args = parser.parse_args(argv)
    try:
        text = report(registry_coverage())
        args.out.write_text(text)
    except SllmboError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except OSError as err:
        print(f"error: cannot write the coverage report {args.out}: {err.strerror}\n"
              "  hint: pass --out with a writable path", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
