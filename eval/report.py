"""``report.md`` and the PNG plots of an evaluation, from its result records and run logs.

Tables: mean normalized regret by method and budget, the RMSE of the gap to the best, mean
test scores per task, wins/ties/losses against TPE and seeded TPE with a paired Wilcoxon
test, costs (model fitting and LLM time, calls, tokens), time to reach TPE's largest-budget
score; for the ``sllmbo-paper`` suite, our best CV MAE beside the paper's published studies.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllmbo.eval.metrics import gap_rmse, time_to_reach, wins_ties_losses
from sllmbo.eval.plots import pyplot

if TYPE_CHECKING:
    from sllmbo.eval.plan import EvalPlan
    from sllmbo.eval.runs import RunLog

BASELINES = ("tpe", "tpe-seeded")
#: What a fine-tuned LLM method must beat besides its base model: no-LLM zero-shot answers.
RECOMMENDER_BASELINES = ("defaults", "portfolio")


def _mean(values: Iterable[float]) -> float:
    finite = [v for v in values if v is not None and math.isfinite(v)]
    return statistics.fmean(finite) if finite else math.nan


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def regret_table(records: Sequence[dict[str, Any]], methods: Sequence[str],
                 budgets: Sequence[int]) -> list[str]:
    """Mean normalized regret (tasks x families x seeds) per method and budget."""
    cells: dict[tuple[str, int], list[float]] = defaultdict(list)
    for r in records:
        if r["regret"] is not None:
            cells[(r["method"], r["budget"])].append(r["regret"])
    rows = [[m] + [_fmt(_mean(cells[(m, b)])) for b in budgets] for m in methods]
    return _table(["method"] + [f"{b} trials" for b in budgets], rows)


def gap_rmse_table(records: Sequence[dict[str, Any]], methods: Sequence[str],
                   budgets: Sequence[int]) -> list[str]:
    """RMSE over (task, family) of the seed-averaged normalized regret."""
    per: dict[tuple[str, int, str, str], list[float]] = defaultdict(list)
    for r in records:
        if r["regret"] is not None:
            per[(r["method"], r["budget"], r["task"], r["family"])].append(r["regret"])
    rows = []
    for m in methods:
        row = [m]
        for b in budgets:
            regrets = [_mean(v) for (mm, bb, _, _), v in per.items() if mm == m and bb == b]
            row.append(_fmt(gap_rmse(regrets)))
        rows.append(row)
    return _table(["method"] + [f"{b} trials" for b in budgets], rows)


def score_table(records: Sequence[dict[str, Any]], methods: Sequence[str],
                budget: int) -> list[str]:
    """Mean test score over seeds per task and family at ``budget``."""
    cells: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    metric: dict[tuple[str, str], str] = {}
    for r in records:
        if r["budget"] == budget and r["test_score"] is not None:
            cells[(r["task"], r["family"], r["method"])].append(r["test_score"])
            metric[(r["task"], r["family"])] = r["metric"]
    rows = []
    for task, family in sorted(metric):
        rows.append([task, family, metric[(task, family)]]
                    + [_fmt(_mean(cells[(task, family, m)]), 4) for m in methods])
    return _table(["task", "family", "metric", *methods], rows)


def paired(records: Sequence[dict[str, Any]], method: str, baseline: str,
           budget: int) -> tuple[list[float], list[float], str]:
    """Test scores of ``method`` and ``baseline`` paired by (task, family, seed)."""
    index = {(r["task"], r["family"], r["seed"], r["method"]): r for r in records
             if r["budget"] == budget and r["test_score"] is not None}
    a, b, direction = [], [], "minimize"
    for (task, family, seed, m), r in sorted(index.items()):
        if m != method or (task, family, seed, baseline) not in index:
            continue
        a.append(r["test_score"])
        b.append(index[(task, family, seed, baseline)]["test_score"])
        direction = r["direction"]
    return a, b, direction


def comparison_table(records: Sequence[dict[str, Any]], methods: Sequence[str],
                     budgets: Sequence[int], baseline: str) -> list[str]:
    """Wins/ties/losses (Wilcoxon p) of each method against ``baseline`` at equal budget."""
    rows = []
    for m in methods:
        if m == baseline:
            continue
        row = [m]
        for b in budgets:
            a, base, direction = paired(records, m, baseline, b)
            if not a:
                row.append("–")
                continue
            c = wins_ties_losses(a, base, direction)
            p = "–" if c.p_value is None else f"{c.p_value:.3g}"
            row.append(f"{c.wins}/{c.ties}/{c.losses} (p {p})")
        rows.append(row)
    return _table([f"vs {baseline}"] + [f"{b} trials" for b in budgets], rows)


def cost_table(records: Sequence[dict[str, Any]], methods: Sequence[str],
               budget: int) -> list[str]:
    """Median seconds (wall, model fitting, LLM), LLM calls and tokens per run at ``budget``,
    and the wall minutes of all those runs summed: the compute the method took in the suite
    (elapsed time is about that over ``--workers``)."""
    rows = []
    for m in methods:
        rs = [r for r in records if r["method"] == m and r["budget"] == budget]
        if not rs:
            continue
        def med(key: str, rs: list[dict[str, Any]] = rs) -> float:
            return float(statistics.median(r[key] for r in rs))

        rows.append([m, _fmt(med("wall_s"), 1), _fmt(med("fit_s"), 1), _fmt(med("llm_s"), 1),
                     _fmt(med("llm_calls"), 0), _fmt(med("llm_tokens"), 0), str(len(rs)),
                     _fmt(sum(r["wall_s"] for r in rs) / 60, 1)])
    return _table(["method", "wall s", "fit s", "LLM s", "LLM calls", "LLM tokens", "runs",
                   "summed wall min"], rows)


def time_to_tpe(logs: Sequence[RunLog], methods: Sequence[str],
                budget: int) -> dict[str, list[float | None]]:
    """Per method: wall seconds each run took to reach the best CV score TPE had after
    ``budget`` trials on the same task, family and seed (None: never within its trials)."""
    from sllmbo.eval.metrics import best_within_budget

    targets = {}
    for log in logs:
        if log.method == "tpe":
            best = best_within_budget(log.trials, budget, log.direction)
            if best is not None:
                targets[(log.task, log.family, log.seed)] = (best.cv_score, log.direction)
    out: dict[str, list[float | None]] = {m: [] for m in methods}
    for log in logs:
        target = targets.get((log.task, log.family, log.seed))
        if target is None or log.method not in out:
            continue
        out[log.method].append(time_to_reach(log.trials[:budget], target[0], target[1]))
    return out


def time_table(reach: dict[str, list[float | None]], budget: int) -> list[str]:
    rows = []
    for m, times in reach.items():
        got = [t for t in times if t is not None]
        rows.append([m, f"{len(got)} of {len(times)}",
                     _fmt(statistics.median(got) if got else None, 1)])
    return _table(["method", f"runs reaching TPE@{budget}", "median s to reach"], rows)


def paper_table(records: Sequence[dict[str, Any]], logs: Sequence[RunLog],
                budget: int) -> list[str]:
    """Our best 5-fold CV MAE at ``budget`` (mean ± sd over seeds) beside the paper's."""
    from sllmbo.eval.metrics import best_within_budget
    from sllmbo.eval.paper import default_fixtures_dir, published_results

    lines: list[str] = []
    ours: dict[tuple[str, str], list[float]] = defaultdict(list)
    for log in logs:
        best = best_within_budget(log.trials, budget, log.direction)
        if best is not None:
            ours[(log.method, log.family)].append(best.cv_score)
    families = sorted({f for _, f in ours})
    rows = []
    for method, family_ in sorted(ours):
        if family_ != families[0]:
            continue
        cells = []
        for family in families:
            v = ours.get((method, family), [])
            sd = statistics.stdev(v) if len(v) > 1 else 0.0
            cells.append(f"{_fmt(_mean(v))} ± {_fmt(sd)} (n={len(v)})" if v else "–")
        rows.append([f"sllmbo {method}", *cells])
    folder = default_fixtures_dir()
    if not folder.is_dir():
        lines.append("_The paper's studies (`../shared/fixtures/sllmbo-results`) are not on "
                     "this machine: its column is missing._")
    else:
        published = published_results(folder)
        for method in sorted({m for m, _ in published}):
            rows.append([f"paper {method} (1 seed)"]
                        + [_fmt(published.get((method, f))) for f in families])
    lines += _table(["best 5-fold CV MAE at " f"{budget} trials", *families], rows)
    return lines


def write_report(out: Path, plan: EvalPlan, records: Sequence[dict[str, Any]],
                 logs: Sequence[RunLog]) -> None:
    suite = plan.suite
    methods = [m for m in plan.reported_methods if any(r["method"] == m for r in records)]
    budgets = list(suite.budgets)
    top = max(budgets)
    tasks = sorted({r["task"] for r in records})
    lines = [f"# Evaluation: suite `{suite.name}`", "",
             f"{len(tasks)} tasks ({', '.join(tasks) or 'no run finished'}) x "
             f"{', '.join(suite.families)} x "
             f"{suite.seeds} seeds; budgets {', '.join(map(str, budgets))}; "
             f"{suite.n_folds}-fold CV" + (f", rows capped at {suite.max_rows}"
                                           if suite.max_rows else "")
             + (f", protocol `{suite.protocol}`" if suite.protocol else "") + ".",
             f"LLM backend `{plan.settings.llm.backend}`"
             + (f", adapter `{_shown_path(plan.settings.adapter)}`" if plan.settings.adapter else
                ", no adapter (fine-tuned methods not run)") + ".", ""]
    if plan.skipped_methods:
        lines += [f"Not run: {', '.join(plan.skipped_methods)} (no adapter given).", ""]
    if plan.excluded:
        skipped = sorted({t for t, _ in plan.excluded})
        lines += [f"The adapter trained on {len(skipped)} of these datasets (held out after it "
                  f"was built): its methods are not run on {', '.join(skipped)}.", ""]
    planned = {m: len({(j.task.label, j.family, j.seed) for j in plan.report_jobs
                       if j.method == m}) for m in plan.reported_methods}
    done = {m: len({(r["task"], r["family"], r["seed"]) for r in records if r["method"] == m})
            for m in plan.reported_methods}
    overdatasets: list[str] = []
    ratio_lines: list[str] = []
    if suite.heldout_variants:  # before the partial-results filter: every finished dataset
        from sllmbo.eval.methodmeta import ceilings, llm_versus
        from sllmbo.eval.overdatasets import overdatasets_section
        from sllmbo.eval.ratio_report import ratio_section

        ratio_lines = ratio_section(out, records, methods, budgets, ceilings=ceilings(methods),
                                    versus=llm_versus(methods))
        overdatasets = ratio_lines + overdatasets_section(out, records, methods, budgets,
                                             ceilings=ceilings(methods),
                                             versus=llm_versus(methods))
    if any(done[m] < planned[m] for m in done):
        records, methods, coverage = common_cells(records, methods, done)
        if not records:
            methods = []
        lines += ["**Partial results**: the evaluation is still under way. Finished runs per "
                  "method (of those planned): "
                  + ", ".join(f"`{m}` {n}/{planned[m]}" for m, n in done.items()) + ". "
                  + coverage, ""]
    lines += overdatasets
    lines += ["## Normalized regret (mean; 0 = best test score any method found on the task "
              "and family, 1 = worst)", "", *regret_table(records, methods, budgets), "",
              "## RMSE across tasks of the gap to the best (seed-averaged regret)", "",
              *gap_rmse_table(records, methods, budgets), ""]
    for baseline in BASELINES:
        if baseline in methods:
            lines += [f"## Wins / ties / losses against `{baseline}` at equal budget "
                      "(test score, paired over tasks x families x seeds; two-sided Wilcoxon)",
                      "", *comparison_table(records, methods, budgets, baseline), ""]
    for tuned in ("single-shot", "llm", "llm-tpe"):
        against = [b for b in (f"{tuned}-base", *RECOMMENDER_BASELINES) if b in methods]
        if tuned in methods and against:
            lines += [f"## The fine-tuned model: `{tuned}` against "
                      + ", ".join(f"`{b}`" for b in against)
                      + " at equal budget (wins/ties/losses of the test score; Wilcoxon)", ""]
            for baseline in against:
                lines += [*comparison_table(records, [tuned], budgets, baseline), ""]
    lines += [f"## Cost per run at {top} trials (median)", "",
              *cost_table(records, methods, top), ""]
    if "tpe" in methods:
        reach = time_to_tpe(logs, methods, top)
        lines += [f"## Time to reach TPE's best CV score after {top} trials", "",
                  *time_table(reach, top), ""]
        plot_time_to_tpe(out / "time_to_tpe.png", reach, top)
    if suite.protocol == "sllmbo-paper":
        lines += ["## The SLLMBO paper's concrete task", "", *paper_table(records, logs, top),
                  ""]
    for budget in sorted({budgets[0], top}):
        lines += [f"## Mean test score per task at {budget} trials", "",
                  *score_table(records, methods, budget), ""]
    notes = [f"- `{log.key}`: {note}" for log in logs for note in log.notes]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    lines += ["Plots: "
              + ("`ratio_vs_budget.png`, `time_to_quality.png`, " if ratio_lines else "")
              + "`regret_vs_budget.png`, `regret_by_task.png`"
              + (", `time_to_tpe.png`" if "tpe" in methods else "") + ".", ""]
    (out / "report.md").write_text("\n".join(lines))
    plot_regret(out / "regret_vs_budget.png", records, methods, budgets)
    plot_regret_by_task(out / "regret_by_task.png", records, methods, budgets)


def _shown_path(path: str) -> str:
    """``path`` relative to the checkout when it lies inside it (the packaged adapter), so a
    report regenerated in another checkout reads the same."""
    root = Path(__file__).resolve().parents[1]
    try:
        return str(Path(path).resolve().relative_to(root))
    except ValueError:
        return path


def common_cells(records: Sequence[dict[str, Any]], methods: Sequence[str],
                 done: dict[str, int]) -> tuple[list[dict[str, Any]], list[str], str]:
    """Records of the (task, family, seed) cells every compared method finished, so partial
    results compare like with like; methods with under half the best coverage wait."""
    most = max(done.values())
    kept = [m for m in methods if done[m] * 2 >= most]
    waiting = [m for m in methods if m not in kept]
    cells = None
    for m in kept:
        have = {(r["task"], r["family"], r["seed"]) for r in records if r["method"] == m}
        cells = have if cells is None else cells & have
    cells = cells or set()
    chosen = [r for r in records if r["method"] in kept
              and (r["task"], r["family"], r["seed"]) in cells]
    text = (f"The tables compare {', '.join(f'`{m}`' for m in kept)} on the {len(cells)} "
            "(task, family, seed) cells all of them finished"
            + (f"; {', '.join(f'`{m}`' for m in waiting)} have too few runs yet"
               if waiting else "") + ".")
    return chosen, kept, text


def plot_regret(path: Path, records: Sequence[dict[str, Any]], methods: Sequence[str],
                budgets: Sequence[int]) -> None:
    if not methods:
        return
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        ys = [_mean(r["regret"] for r in records
                    if r["method"] == m and r["budget"] == b and r["regret"] is not None)
              for b in budgets]
        ax.plot(budgets, ys, marker="o", label=m)
    ax.set_xscale("log")
    ax.set_xticks(budgets, [str(b) for b in budgets])
    ax.set_xlabel("trials (budget)")
    ax.set_ylabel("mean normalized regret")
    ax.legend(fontsize=7, ncol=2)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_regret_by_task(path: Path, records: Sequence[dict[str, Any]], methods: Sequence[str],
                        budgets: Sequence[int]) -> None:
    panels = sorted({(r["task"], r["family"]) for r in records})
    if not methods or not panels:  # a partial run with no common cells yet: nothing to draw
        return
    plt = pyplot()
    cols = min(4, len(panels)) or 1
    rows = math.ceil(len(panels) / cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.4 * rows), squeeze=False)
    for ax, (task, family) in zip(axes.flat, panels, strict=False):
        for m in methods:
            ys = [_mean(r["regret"] for r in records
                        if (r["task"], r["family"], r["method"], r["budget"])
                        == (task, family, m, b) and r["regret"] is not None) for b in budgets]
            ax.plot(budgets, ys, marker=".", label=m)
        ax.set_xscale("log")
        ax.set_title(f"{task} / {family}", fontsize=8)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(6, len(methods)), fontsize=7)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_time_to_tpe(path: Path, reach: dict[str, list[float | None]], budget: int) -> None:
    plt = pyplot()
    methods = list(reach)
    medians = [statistics.median([t for t in reach[m] if t is not None])
               if any(t is not None for t in reach[m]) else 0.0 for m in methods]
    shares = [sum(t is not None for t in reach[m]) / max(1, len(reach[m])) for m in methods]
    fig, ax = plt.subplots(figsize=(7, 4))
    bars = ax.bar(methods, medians)
    for bar, share in zip(bars, shares, strict=True):
        ax.annotate(f"{share:.0%}", (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                    ha="center", va="bottom", fontsize=7)
    ax.set_ylabel(f"median seconds to reach TPE@{budget} (share of runs that did)")
    ax.tick_params(axis="x", rotation=45, labelsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
