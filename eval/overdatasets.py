"""Statistics over datasets, the unit the zero-shot suite generalizes over.

A dataset is one observation: its seeds, families and variants are averaged first (variants
of one dataset share its split and are not independent tasks). Over datasets the report gives
mean normalized regret with a bootstrap confidence interval, wins/ties/losses against a
baseline with a two-sided Wilcoxon signed-rank test, and average ranks with Friedman's test
and the Nemenyi critical difference (Demšar, JMLR 2006), drawn as a critical-difference
diagram. Every test is scipy's.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.data.pool_select import dataset_of

#: Regrets closer than this are a tie (regret is normalized to [0, 1]).
TIE = 1e-6


def dataset_regrets(records: Sequence[dict[str, Any]], methods: Sequence[str],
                    budget: int) -> tuple[list[str], np.ndarray]:
    """(datasets, datasets x methods mean regret at ``budget``); NaN where a method has no
    result on a dataset."""
    cells: dict[tuple[str, str], list[float]] = defaultdict(list)
    for r in records:
        if r["budget"] == budget and r["method"] in methods and r.get("regret") is not None:
            cells[(dataset_of(r["task"]), r["method"])].append(float(r["regret"]))
    datasets = sorted({d for d, _ in cells})
    table = np.full((len(datasets), len(methods)), np.nan)
    for i, d in enumerate(datasets):
        for j, m in enumerate(methods):
            if cells.get((d, m)):
                table[i, j] = float(np.mean(cells[(d, m)]))
    return datasets, table


def bootstrap_ci(values: np.ndarray, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """The bootstrap (BCa) confidence interval of the mean over datasets."""
    from scipy.stats import bootstrap

    values = values[np.isfinite(values)]
    if len(values) < 3 or np.ptp(values) == 0:
        mean = float(values.mean()) if len(values) else math.nan
        return mean, mean
    result = bootstrap((values,), np.mean, confidence_level=confidence, n_resamples=5000,
                       method="BCa", random_state=np.random.default_rng(seed))
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


@dataclass(frozen=True)
class Paired:
    wins: int
    ties: int
    losses: int
    p_value: float | None
    n: int


def paired_test(method: np.ndarray, baseline: np.ndarray) -> Paired:
    """Wins/ties/losses of ``method`` over ``baseline`` (lower regret wins) on the datasets
    both have, and the two-sided Wilcoxon signed-rank p-value (None: too few differences)."""
    from scipy.stats import wilcoxon

    both = np.isfinite(method) & np.isfinite(baseline)
    diff = method[both] - baseline[both]
    wins, losses = int((diff < -TIE).sum()), int((diff > TIE).sum())
    ties = int(len(diff) - wins - losses)
    nonzero = diff[np.abs(diff) > TIE]
    p = float(wilcoxon(nonzero).pvalue) if len(nonzero) >= 5 else None
    return Paired(wins, ties, losses, p, len(diff))


@dataclass(frozen=True)
class Ranking:
    methods: tuple[str, ...]
    mean_ranks: tuple[float, ...]
    n_datasets: int
    friedman_p: float | None
    critical_difference: float


def friedman_nemenyi(table: np.ndarray, methods: Sequence[str],
                     alpha: float = 0.05) -> Ranking:
    """Average ranks (1 = lowest regret; ties share) over the datasets where every method
    has a result, Friedman's p-value, and the Nemenyi critical difference at ``alpha``:
    q_alpha * sqrt(k (k + 1) / (6 N)), q_alpha the studentized range quantile / sqrt(2)."""
    from scipy.stats import friedmanchisquare, rankdata, studentized_range

    complete = table[np.isfinite(table).all(axis=1)]
    k, n = len(methods), len(complete)
    if n == 0 or k < 2:
        return Ranking(tuple(methods), tuple([math.nan] * k), n, None, math.nan)
    ranks = rankdata(complete, axis=1).mean(axis=0)
    p = None
    if k >= 3 and n >= 2 and np.ptp(complete, axis=1).any():
        p = float(friedmanchisquare(*complete.T).pvalue)
    q = float(studentized_range.ppf(1 - alpha, k, np.inf)) / math.sqrt(2)
    return Ranking(tuple(methods), tuple(float(r) for r in ranks), n, p,
                   q * math.sqrt(k * (k + 1) / (6 * n)))


def plot_critical_difference(path: Path, ranking: Ranking, title: str,
                             lowest: str = "lowest regret") -> None:
    """The critical-difference diagram: methods on the average-rank axis, the CD as a bar,
    and a thick line joining methods whose ranks differ by less than the CD. ``lowest``
    names what rank 1 has the lowest of."""
    from sllmbo.eval.plots import pyplot

    plt = pyplot()
    order = np.argsort(ranking.mean_ranks)
    names = [ranking.methods[i] for i in order]
    ranks = [ranking.mean_ranks[i] for i in order]
    k = len(names)
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.32 * k))
    ax.set_xlim(0.8, k + 0.2)
    ax.set_ylim(-k - 1.5, 1.5)
    ax.invert_xaxis()
    ax.axhline(0, color="black", lw=1)
    ax.set_yticks([])
    for side in ("left", "right", "bottom"):
        ax.spines[side].set_visible(False)
    ax.xaxis.set_ticks_position("top")
    ax.set_xlabel(f"average rank (1 = {lowest})")
    ax.xaxis.set_label_position("top")
    for i, (name, rank) in enumerate(zip(names, ranks, strict=True)):
        y = -(i + 1)
        ax.plot([rank, rank], [0, y], color="gray", lw=0.8)
        ax.text(rank, y, f" {name} ({rank:.2f}) ", va="center",
                ha="right" if i < k / 2 else "left", fontsize=8)
    cd = ranking.critical_difference
    if math.isfinite(cd):
        ax.plot([k + 0.1, k + 0.1 - cd], [1, 1], color="black", lw=2)
        ax.text(k + 0.1 - cd / 2, 1.2, f"CD {cd:.2f}", ha="center", fontsize=8)
        level, reach = 0.4, 0
        for i, j in _groups(ranks, cd):  # maximal runs not significantly different
            if j > i and j > reach:
                ax.plot([ranks[i], ranks[j]], [-level, -level], color="black", lw=3)
                level, reach = level + 0.25, j
    ax.set_title(title + f" ({ranking.n_datasets} datasets"
                 + (f", Friedman p = {ranking.friedman_p:.2g}" if ranking.friedman_p else "")
                 + ")", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def _groups(ranks: Sequence[float], cd: float) -> list[tuple[int, int]]:
    """For each method (ranks sorted), the last one within the CD of it."""
    out = []
    for i in range(len(ranks)):
        j = max(j for j in range(i, len(ranks)) if ranks[j] - ranks[i] < cd)
        out.append((i, j))
    return out


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def coverage_groups(table: np.ndarray, methods: Sequence[str]) -> list[list[str]]:
    """The method sets a critical-difference diagram is drawn for: those with a result on
    every dataset of ``table`` (all datasets count), then, where some methods cover fewer (an
    adapter not run on the datasets it trained on), every method on the datasets all share."""
    has = np.isfinite(table)
    present = [m for j, m in enumerate(methods) if has[:, j].any()]
    complete = [m for j, m in enumerate(methods) if has[:, j].all()]
    if len(complete) == len(present) or len(complete) < 2:
        return [present]
    return [complete, present]


def _paired_text(test: Paired) -> str:
    return f"{test.wins}/{test.ties}/{test.losses}" + (
        f" p={test.p_value:.2g}" if test.p_value is not None else "")


def _versus_cell(values: np.ndarray, base: np.ndarray) -> str:
    if not (np.isfinite(values) & np.isfinite(base)).any():
        return "-"
    test = paired_test(values, base)
    return f"{_paired_text(test)} (n={test.n})"


def overdatasets_section(out: Path, records: Sequence[dict[str, Any]],
                         methods: Sequence[str], budgets: Sequence[int],
                         baseline: str = "portfolio", ceilings: Sequence[str] = (),
                         versus: Sequence[tuple[str, Sequence[str]]] = ()) -> list[str]:
    """The report's over-datasets section (markdown lines) and its CD diagrams. ``versus``:
    (method, baselines) pairs tested over datasets at every budget both reach."""
    lines = ["## Over datasets (seeds, families and variants averaged within a dataset)", "",
             "Mean normalized regret with its 95% bootstrap (BCa) interval; wins/ties/losses "
             f"against `{baseline}` over datasets and the two-sided Wilcoxon p-value. "
             + (f"`{'`, `'.join(ceilings)}` is a ceiling, not a competitor. " if ceilings
                else ""), ""]
    header = ["method", *[f"b={b}" for b in budgets]]
    rows = []
    tables = {b: dataset_regrets(records, methods, b) for b in budgets}
    for j, m in enumerate(methods):
        row = [f"`{m}`"]
        for b in budgets:
            _, table = tables[b]
            values = table[:, j]
            if not np.isfinite(values).any():
                row.append("-")
                continue
            low, high = bootstrap_ci(values)
            cell = f"{np.nanmean(values):.3f} [{_fmt(low)}, {_fmt(high)}]"
            base = table[:, list(methods).index(baseline)] if baseline in methods else None
            if base is not None and m != baseline and np.isfinite(base).any():
                cell += " " + _paired_text(paired_test(values, base))
            row.append(cell)
        rows.append(row)
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    competitors = [m for m in methods if m not in ceilings]
    for b in budgets:
        lines += critical_difference_lines(out, tables[b][1], methods, competitors, b)
    lines += versus_lines({b: tables[b][1] for b in budgets}, methods, versus,
                          "the dataset-mean regret (lower wins)")
    return [*lines, ""]


def critical_difference_lines(out: Path, table: np.ndarray, methods: Sequence[str],
                              competitors: Sequence[str], budget: int, prefix: str = "cd",
                              lowest: str = "lowest regret") -> list[str]:
    """Average ranks, Friedman's p and the Nemenyi CD of ``competitors`` over the datasets
    (rows of ``table``, columns ``methods``; lower is better) at ``budget``: the markdown
    lines, and the diagrams ``{prefix}_b{budget}.png`` (and ``..._common.png``) in ``out``."""
    lines: list[str] = []
    b = budget
    sub_all = table[:, [list(methods).index(m) for m in competitors]]
    for k, group in enumerate(coverage_groups(sub_all, competitors)):
        if len(group) < 2:
            continue
        sub = table[:, [list(methods).index(m) for m in group]]
        ranking = friedman_nemenyi(sub, group)
        if ranking.n_datasets == 0:
            continue
        name = f"{prefix}_b{b}.png" if k == 0 else f"{prefix}_b{b}_common.png"
        which = ("every method above finished" if k == 0 else
                 "all methods, those run on fewer datasets included, finished")
        plot_critical_difference(out / name, ranking, f"budget {b}"
                                 + ("" if k == 0 else ", the datasets all methods finished"),
                                 lowest=lowest)
        lines += ["", f"Budget {b}: average ranks over the {ranking.n_datasets} datasets "
                  f"{which}: " + ", ".join(
                      f"`{m}` {r:.2f}" for r, m in sorted(zip(ranking.mean_ranks, group,
                                                               strict=True)))
                  + f"; Nemenyi CD {_fmt(ranking.critical_difference, 2)}"
                  + (f", Friedman p = {ranking.friedman_p:.2g}" if ranking.friedman_p
                     is not None else "") + f". ![critical difference, budget {b}]({name})"]
    return lines


def versus_lines(tables: dict[int, np.ndarray], methods: Sequence[str],
                 versus: Sequence[tuple[str, Sequence[str]]], measure: str) -> list[str]:
    """Each (method, baselines) pair over datasets at every budget of ``tables`` (datasets x
    ``methods``, lower is better): wins/ties/losses of ``measure``, Wilcoxon p, n."""
    budgets = list(tables)
    pairs = [(m, [b for b in against if b in methods and b != m]) for m, against in versus
             if m in methods]
    pairs = [(m, against) for m, against in pairs if against]
    if not pairs:
        return []
    lines = ["", "### Each LLM method against each baseline, over datasets", "",
             f"Wins/ties/losses of {measure} on the datasets "
             "both finished, two-sided Wilcoxon p, and the number of datasets.", "",
             "| method | baseline | " + " | ".join(f"b={b}" for b in budgets) + " |",
             "|" + "---|" * (2 + len(budgets))]
    for m, against in pairs:
        for base_name in against:
            cells = [_versus_cell(tables[b][:, list(methods).index(m)],
                                  tables[b][:, list(methods).index(base_name)])
                     for b in budgets]
            lines.append(f"| `{m}` | `{base_name}` | " + " | ".join(cells) + " |")
    return lines
