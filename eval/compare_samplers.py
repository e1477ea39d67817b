"""Best value after N trials for several samplers, tasks and seeds, and the per-trial overhead
of each sampler (``make bench-samplers``).

Every run is an Optuna study in one SQLite file (``--storage``), so an interrupted comparison
resumes where it stopped. Overhead per trial is the trial's wall time minus its
cross-validation time (the sampler's own work: for LLM samplers, mostly inference), reported
as a ratio against TPE measured in the same run.

    python -m sllmbo.eval.compare_samplers   # bike_sharing, credit_default; tpe, llm, llm-tpe;
                                             # seeds 0 1 2; 30 trials; 3-fold CV (the README table)
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState
from rich.console import Console
from rich.table import Table

from sllmbo.core import studyinfo
from sllmbo.tune import LLMOptions, tune


def trial_overheads(study: optuna.Study) -> list[float]:
    """Seconds each completed trial spent outside cross-validation."""
    out = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if t.datetime_start and t.datetime_complete and studyinfo.FIT_SECONDS in t.user_attrs:
            wall = (t.datetime_complete - t.datetime_start).total_seconds()
            out.append(max(0.0, wall - float(t.user_attrs[studyinfo.FIT_SECONDS])))
    return out


def best_curve(study: optuna.Study) -> list[float]:
    """Best-so-far objective value after each completed trial (minimization)."""
    curve: list[float] = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        value = float(t.value)  # type: ignore[arg-type]
        curve.append(value if not curve else min(curve[-1], value))
    return curve


def sources(study: optuna.Study) -> dict[str, int]:
    counts: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        source = str(t.user_attrs.get(studyinfo.SOURCE, "optuna"))
        counts[source] = counts.get(source, 0) + 1
    return counts


def llm_totals(study: optuna.Study) -> dict[str, Any]:
    """LLM calls, tokens and seconds of a study, the initializer's call included."""
    from sllmbo.summary import summarize_study

    s = summarize_study(study)
    return {
        "calls": s.llm_calls,
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "latency_s": round(s.llm_latency_s, 2),
        "retries": s.retries,
        "repairs": s.repairs,
        "fallbacks": s.fallbacks,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    Path(args.out_dir).mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{Path(args.out_dir) / 'compare_samplers.db'}"
    runs = []
    for task in args.tasks:
        for sampler in args.samplers:
            for seed in args.seeds:
                name = f"{task}-{args.model}-{sampler}-seed{seed}"
                # Early stopping off by default: every run gets the same trial budget.
                llm = LLMOptions(patience=args.patience, n_initial=args.n_initial)
                result = tune(
                    task,
                    family=args.model,
                    sampler=sampler,
                    n_trials=args.n_trials,
                    storage=storage,
                    study_name=name,
                    seed=seed,
                    n_folds=args.n_folds,
                    progress=not args.quiet,
                    llm=llm,
                )
                study = optuna.load_study(study_name=name, storage=storage)
                runs.append(
                    {
                        "task": task,
                        "sampler": sampler,
                        "seed": seed,
                        "best_value": result.best_value,
                        "test_scores": result.test_scores,
                        "n_complete": result.n_complete,
                        "stop_reason": result.stop_reason,
                        # Mean, not median: an llm-tpe run is a mix of cheap and costly trials.
                        "overhead_s": statistics.mean(trial_overheads(study) or [0.0]),
                        "llm": llm_totals(study),
                        "curve": best_curve(study),
                        "sources": sources(study),
                    }
                )
    return {"model": args.model, "n_trials": args.n_trials, "runs": runs}


def aggregate(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Mean/std of the best value and mean overhead per (task, sampler), overhead vs TPE."""
    rows = []
    keys = sorted({(r["task"], r["sampler"]) for r in report["runs"]}, key=str)
    for task, sampler in keys:
        group = [r for r in report["runs"] if (r["task"], r["sampler"]) == (task, sampler)]
        best = [r["best_value"] for r in group if r["best_value"] is not None]
        rows.append(
            {
                "task": task,
                "sampler": sampler,
                "seeds": len(group),
                "best_mean": statistics.mean(best) if best else None,
                "best_std": statistics.pstdev(best) if len(best) > 1 else 0.0,
                "overhead_s": statistics.mean(r["overhead_s"] for r in group),
                "llm_s_per_run": statistics.mean(r["llm"]["latency_s"] for r in group),
                "fallbacks": sum(sum(r["llm"]["fallbacks"].values()) for r in group),
            }
        )
    for row in rows:
        tpe = next((r for r in rows if r["task"] == row["task"] and r["sampler"] == "tpe"), None)
        if tpe and tpe["overhead_s"] > 0:
            row["overhead_vs_tpe"] = row["overhead_s"] / tpe["overhead_s"]
    return rows


def plot_curves(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({r["task"] for r in report["runs"]})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 3.6), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for sampler in sorted({r["sampler"] for r in report["runs"]}):
            curves = [r["curve"] for r in report["runs"] if (r["task"], r["sampler"]) == (task, sampler)]
            length = min(len(c) for c in curves)
            if length == 0:
                continue
            mean = [statistics.mean(c[i] for c in curves) for i in range(length)]
            ax.plot(range(1, length + 1), mean, label=sampler)
        ax.set_title(task)
        ax.set_xlabel("completed trials")
        ax.set_ylabel("best CV value (mean over seeds)")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=["bike_sharing", "credit_default"])
    parser.add_argument("--samplers", nargs="+", default=["tpe", "llm", "llm-tpe"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--model", default="lightgbm")
    parser.add_argument("--n-trials", type=int, default=30)
    parser.add_argument("--n-folds", type=int, default=3)
    parser.add_argument("--storage", default=None)
    parser.add_argument("--out-dir", default="results")
    parser.add_argument("--patience", type=int, default=0, help="0: no early stopping")
    parser.add_argument("--n-initial", type=int, default=5, help="LLM initializer configs")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    report = run(args)
    rows = aggregate(report)
    report["summary"] = rows
    out = Path(args.out_dir)
    (out / "compare_samplers.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_curves(report, out / "compare_samplers.png")

    table = Table(title=f"best CV value after {args.n_trials} trials ({args.model}, "
                  f"patience {args.patience or 'off'})")
    columns = ("task", "sampler", "seeds", "best (mean ± std)", "overhead s/trial", "x TPE",
               "LLM s/run", "fallbacks")
    for column in columns:
        table.add_column(column)
    for r in rows:
        best = "-" if r["best_mean"] is None else f"{r['best_mean']:.5g} ± {r['best_std']:.2g}"
        ratio = f"{r['overhead_vs_tpe']:.1f}" if "overhead_vs_tpe" in r else "-"
        table.add_row(r["task"], r["sampler"], str(r["seeds"]), best, f"{r['overhead_s']:.3f}",
                      ratio, f"{r['llm_s_per_run']:.0f}", str(r["fallbacks"]))
    Console().print(table)
    return report


if __name__ == "__main__":
    main()
