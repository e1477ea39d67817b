"""The report's headline section in the metric's own units (``sllmbo.eval.ratios``), and its
plots: the critical-difference diagrams on the per-dataset mean log ratio, the error ratio
against trials, and the time-to-quality figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.data.pool_select import dataset_of
from sllmbo.eval.plots import pyplot
from sllmbo.eval.ratios import (
    HARM,
    REFERENCE,
    SUBTYPES,
    RatioSummary,
    RatioTable,
    median_reach,
    ratio_table,
    reach_budget,
    summarize,
)

#: The method whose largest-budget quality the time-to-quality figure asks the others for.
QUALITY_OF = "tpe"


def _f(value: float | None, digits: int = 3) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def ratio_tables(records: Sequence[Mapping[str, Any]], methods: Sequence[str],
                 budgets: Sequence[int]) -> dict[int, RatioTable]:
    return {b: ratio_table(records, methods, b) for b in budgets}


def summaries(tables: Mapping[int, RatioTable], methods: Sequence[str]
              ) -> dict[tuple[str, int], RatioSummary]:
    out = {}
    for b, table in tables.items():
        for m in methods:
            s = summarize(table, m)
            if s is not None:
                out[(m, b)] = s
    return out


def ratio_section(out: Path, records: Sequence[Mapping[str, Any]], methods: Sequence[str],
                  budgets: Sequence[int], ceilings: Sequence[str] = (),
                  versus: Sequence[tuple[str, Sequence[str]]] = ()) -> list[str]:
    """The markdown lines of the section, its CD diagrams (``cd_ratio_b*.png``) and the plots
    ``ratio_vs_budget.png`` and ``time_to_quality.png`` in ``out``. Empty without
    ``defaults`` results (no reference)."""
    from sllmbo.eval.methodmeta import subtype_of
    from sllmbo.eval.overdatasets import critical_difference_lines, versus_lines

    if not any(r["method"] == REFERENCE for r in records):
        return []
    tables = ratio_tables(records, methods, budgets)
    stats = summaries(tables, methods)
    shown = [m for m in methods if any((m, b) in stats for b in budgets)]
    head = ["method", *[f"b={b}" for b in budgets]]

    def row(m: str, cell: Any) -> list[str]:
        return [f"`{m}`"] + [cell(stats[(m, b)]) if (m, b) in stats else "-" for b in budgets]

    first = next(iter(tables.values()))
    kinds = {}
    for s in SUBTYPES:
        kinds[s] = len({dataset_of(t) for t, _ in first.pairs if subtype_of(t) == s})
    lines = [f"## In the metric's own units: test error as a ratio to `{REFERENCE}`", "",
             "Each method's test error (log-loss or RMSE) divided by the library defaults' on "
             "the same dataset and family, seeds averaged first; below 1 is better than the "
             "defaults (for a metric to maximize, the inverse). GMR: the geometric mean over "
             "datasets (each dataset the mean log ratio of its families) with its 95% "
             "bootstrap (BCa) interval over datasets."
             + (f" `{'`, `'.join(ceilings)}` is a ceiling, not a competitor." if ceilings
                else "") + " Statistics: `eval/README.md`.", "",
             *_table(head, [row(m, lambda s: f"{s.gmr:.3f} [{s.low:.3f}, {s.high:.3f}]")
                            for m in shown]), "",
             f"### Harm rate (share of dataset x family pairs more than {HARM:.0%} worse than "
             "the defaults) and the worst ratio", "",
             *_table(head, [row(m, lambda s: f"{s.harm:.0%} (worst {s.worst:.2f})")
                            for m in shown]), "",
             "### Against the defaults, over datasets", "",
             "Wins/ties/losses of the per-dataset mean log ratio (below 0 wins) and the "
             "two-sided Wilcoxon signed-rank p.", "",
             *_table(head, [row(m, _against) for m in shown if m != REFERENCE]), "",
             "### By subtype", "",
             "GMR over the pairs of each subtype: "
             + ", ".join(f"{s} ({kinds[s]} datasets)" for s in SUBTYPES) + ".", "",
             *_table(head, [row(m, lambda s: " / ".join(_f(s.by_subtype.get(k))
                                                        for k in SUBTYPES))
                            for m in shown]), "",
             "### Ranks over datasets on the per-dataset mean log ratio"]
    competitors = [m for m in methods if m not in ceilings]
    for b, table in tables.items():
        lines += critical_difference_lines(out, table.by_dataset(), methods, competitors, b,
                                           prefix="cd_ratio", lowest="lowest error ratio")
    lines += versus_lines({b: t.by_dataset() for b, t in tables.items()}, methods, versus,
                          "the per-dataset mean log ratio (lower wins)")
    lines += ["", *time_to_quality_lines(tables, shown, ceilings), "",
              "![error ratio against trials](ratio_vs_budget.png) "
              "![time to quality](time_to_quality.png)", ""]
    plot_ratio_vs_budget(out / "ratio_vs_budget.png", stats, shown, budgets)
    plot_time_to_quality(out / "time_to_quality.png", tables, shown)
    return lines


def _against(s: RatioSummary) -> str:
    return f"{s.wins}/{s.ties}/{s.losses}" + (
        f" p={s.p_value:.2g}" if s.p_value is not None else "")


def quality_target(tables: Mapping[int, RatioTable]) -> tuple[int, np.ndarray] | None:
    """(budget, per-dataset mean log ratio) of ``QUALITY_OF`` at its largest budget."""
    have = [b for b, t in tables.items()
            if QUALITY_OF in t.methods and np.isfinite(t.column(QUALITY_OF)).any()]
    if not have:
        return None
    top = max(have)
    t = tables[top]
    return top, t.by_dataset()[:, t.methods.index(QUALITY_OF)]


def time_to_quality(tables: Mapping[int, RatioTable], methods: Sequence[str]
                    ) -> tuple[int, dict[str, list[int | None]]] | None:
    """Per method, per dataset: the fewest trials (of the reported budgets) to reach the
    quality ``QUALITY_OF`` reaches at its largest budget; None when there is no target."""
    target = quality_target(tables)
    if target is None:
        return None
    top, values = target
    return top, {m: reach_budget(tables, m, values) for m in methods}


def time_to_quality_lines(tables: Mapping[int, RatioTable], methods: Sequence[str],
                          ceilings: Sequence[str] = ()) -> list[str]:
    found = time_to_quality(tables, methods)
    if found is None:
        return []
    top, reach = found
    rows = []
    for m, reached in reach.items():
        ran = _finite_rows(tables, m)
        med = median_reach([r for r, ok in zip(reached, ran, strict=True) if ok])
        rows.append([f"`{m}`" + (" (ceiling)" if m in ceilings else ""),
                     f"{sum(r is not None for r in reached)} of {sum(ran)}",
                     "-" if not math.isfinite(med) else f"{med:g}"])
    return [f"### Time to quality: trials to reach `{QUALITY_OF}`'s quality at {top} trials",
            "", f"Per dataset, the fewest trials (of the budgets above) after which a method's "
            f"mean log ratio is at or below `{QUALITY_OF}`'s at {top} trials; the median over "
            "the datasets it ran on, a dataset never reached counting as more trials than "
            "it ran (\"-\": half or more never reached).", "",
            *_table(["method", "datasets reaching", "median trials"], rows)]


def _finite_rows(tables: Mapping[int, RatioTable], method: str) -> list[bool]:
    """Per dataset: whether ``method`` has a result there at any budget."""
    has = None
    for t in tables.values():
        if method not in t.methods:
            continue
        col = np.isfinite(t.by_dataset()[:, t.methods.index(method)])
        has = col if has is None else has | col
    return [] if has is None else [bool(x) for x in has]


def plot_ratio_vs_budget(path: Path, stats: Mapping[tuple[str, int], RatioSummary],
                         methods: Sequence[str], budgets: Sequence[int]) -> None:
    """GMR against trials per method (log-log), the defaults' 1 as a line."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, m in enumerate(methods):  # past the 10 colours, dashed lines tell them apart
        xs = [b for b in budgets if (m, b) in stats]
        ax.plot(xs, [stats[(m, b)].gmr for b in xs], marker="o", label=m,
                ls="-" if i < 10 else "--")
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xticks(list(budgets), [str(b) for b in budgets])
    ax.set_xlabel("trials (budget)")
    ax.set_ylabel("geometric-mean test error ratio to the defaults")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_time_to_quality(path: Path, tables: Mapping[int, RatioTable],
                         methods: Sequence[str]) -> None:
    """Median trials to reach ``QUALITY_OF``'s largest-budget quality per method; the share
    of datasets that reach it above each bar (no bar: half or more never do)."""
    found = time_to_quality(tables, methods)
    if found is None:
        return
    top, reach = found
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = list(reach)
    medians = []
    for m in names:
        ran = _finite_rows(tables, m)
        med = median_reach([r for r, ok in zip(reach[m], ran, strict=True) if ok])
        medians.append(med if math.isfinite(med) else 0.0)
    bars = ax.bar(names, medians)
    for bar, m in zip(bars, names, strict=True):
        ran = _finite_rows(tables, m)
        share = sum(r is not None for r in reach[m]) / max(1, sum(ran))
        ax.annotate(f"{share:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"median trials to reach {QUALITY_OF}@{top}\n(share of datasets that do)")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
