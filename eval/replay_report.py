"""``python -m sllmbo.eval.replay_report``: the replay's command: run the benches, compare the held-out bench's
ranking with the real zero-shot suite's, write ``replay.json`` and ``replay.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.eval.replay import (
    MAX_BUDGET,
    SHOWN_BUDGETS,
    Agreement,
    Bench,
    Row,
    load_benches,
    rank_agreement,
    replay_records,
    reproduce,
    stored_runs,
    suite_gmr,
    summary_rows,
)
from sllmbo.eval.replay_methods import REPLAY_METHODS

SUITE_RESULTS = Path(__file__).parent / "results" / "zero-shot-30" / "results.json"
#: The store whose runs the trace check repeats: zero-shot-30's, whose runs read today's
#: training matrix (the zero-shot suite's ran before the coverage datasets joined it).
TRACE_STORE = Path(__file__).parent / "results" / "zero-shot-30" / "eval.sqlite"
#: The budgets at which the held-out bench's ranking is checked against the suite's.
CHECK_BUDGETS: tuple[int, ...] = (1, 2, 3, 5, 10, 20)


def gmr_table(rows: list[Row], methods: list[str], budgets: tuple[int, ...]) -> list[str]:
    cell = {(r.method, r.budget): r for r in rows}
    lines = ["| method | " + " | ".join(f"b={b}" for b in budgets) + " |",
             "|" + "---|" * (1 + len(budgets))]
    for m in methods:
        cells = [f"{cell[(m, b)].gmr:.3f} ({cell[(m, b)].harm:.0%})" if (m, b) in cell
                 else "-" for b in budgets]
        lines.append(f"| `{m}` | " + " | ".join(cells) + " |")
    return lines


def agreement_lines(checks: list[Agreement]) -> list[str]:
    lines = ["| budget | methods | suite GMR | replay GMR | Kendall tau (p) | ordered "
             "differently |", "|---|---|---|---|---|---|"]
    for a in checks:
        lines.append(
            f"| {a.budget} | {', '.join(f'`{m}`' for m in a.methods)} | "
            + ", ".join(f"{v:.3f}" for v in a.suite) + " | "
            + ", ".join(f"{v:.3f}" for v in a.replay) + f" | {a.tau:.2f} ({a.p_value:.2g}) | "
            + (", ".join(f"`{x}`/`{y}`" for x, y in a.discordant) or "none") + " |")
    return lines


def trace_check(bench: Bench, store: Path) -> dict[str, Any]:
    """How many of the suite's stored runs of the replayable methods the replay repeats
    entry for entry when it sees the CV scores that run saw (``replay.reproduce``)."""
    from sllmbo.data.matrix import POOL_FILE
    from sllmbo.data.pool import read_pools

    configs = {c.id: c.config for pool in read_pools(POOL_FILE).values() for c in pool.configs}
    # gbdt-rank's real runs go on with TPE past its pool trials, which the replay does not
    runs = stored_runs(store, [m for m in REPLAY_METHODS if m not in ("defaults", "gbdt-rank")])
    same = []
    for run in runs:
        real, replayed = reproduce(bench, run, configs)
        if real == replayed:
            same.append(run["key"])
    return {"runs": len(runs), "same": len(same), "store": "/".join(store.parts[-3:]),
            "methods": sorted({r["method"] for r in runs}),
            "different": sorted({r["key"] for r in runs} - set(same))}


def run(benches: list[str], methods: list[str], suite_results: Path | None,
        out_dir: Path | None = None, trace_store: Path | None = None) -> dict[str, Any]:
    """Every bench's summary rows (budgets 1..30), run counts and seconds, the ranking
    checks against the suite, and the trace check; plots into ``out_dir``."""
    out: dict[str, Any] = {"methods": methods, "benches": {}, "checks": []}
    for bench in load_benches(benches):
        started = time.perf_counter()
        records = replay_records(bench, methods)
        runs = len({(r["task"], r["family"], r["method"], r["seed"]) for r in records})
        rows = summary_rows(records, methods, range(1, MAX_BUDGET + 1))
        if out_dir is not None:
            plot_gmr(out_dir / f"replay_{bench.name}.png", rows, methods, bench.name)
        out["benches"][bench.name] = {
            "runs": runs, "seconds": round(time.perf_counter() - started, 1),
            "datasets": len({r["task"].split("@")[0] for r in records}),
            "rows": [asdict(r) for r in rows]}
        if bench.name == "heldout" and suite_results is not None:
            results = json.loads(suite_results.read_text())
            suite_methods = sorted({r["method"] for r in results} & set(methods))
            for b in CHECK_BUDGETS:
                suite = suite_gmr(results, suite_methods, b)
                if len(suite) < 2:  # the suite did not score this budget
                    continue
                replayed = {r.method: r.gmr for r in summary_rows(records, suite_methods, [b])}
                out["checks"].append(asdict(rank_agreement(suite, replayed, b)))
        if bench.name == "heldout" and trace_store is not None and trace_store.is_file():
            out["trace"] = trace_check(bench, trace_store)
    return out


def plot_gmr(path: Path, rows: list[Row], methods: list[str], bench: str) -> None:
    """GMR against trials per method on one bench (log-log), the defaults' 1 dashed."""
    from sllmbo.eval.plots import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in methods:
        mine = [r for r in rows if r.method == m]
        ax.plot([r.budget for r in mine], [r.gmr for r in mine], marker=".", label=m)
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_xticks(list(SHOWN_BUDGETS), [str(b) for b in SHOWN_BUDGETS])
    ax.set_xlabel("trials (budget)")
    ax.set_ylabel("geometric-mean test error ratio to the defaults")
    ax.set_title(f"replay, bench {bench}", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown(result: dict[str, Any], command: str) -> str:
    methods = result["methods"]
    lines = ["# Offline replay of pool-restricted methods", "",
             f"Written by `{command}` (`sllmbo.eval.replay`: what the benches are and what "
             "they read). Each cell: the geometric-mean ratio of test error to the defaults' "
             "over datasets (below 1 is better) and, in brackets, the harm rate (share of "
             "dataset x family pairs more than 5% worse than the defaults).", ""]
    for name, bench in result["benches"].items():
        rows = [Row(**r) for r in bench["rows"]]
        lines += [f"## Bench `{name}`: {bench['runs']} runs on {bench['datasets']} datasets "
                  f"in {bench['seconds']:.0f} s", "",
                  *gmr_table(rows, methods, SHOWN_BUDGETS), "",
                  f"Every budget 1..{MAX_BUDGET}: `replay.json`, `replay_{name}.png`.", ""]
    if result["checks"]:
        lines += ["## The held-out bench's ranking against the real zero-shot suite's", "",
                  "GMR of the methods both have, per budget, and Kendall's tau between the "
                  "two orders (scipy).", "",
                  *agreement_lines([Agreement(**{**c, "methods": tuple(c["methods"]),
                                                 "suite": tuple(c["suite"]),
                                                 "replay": tuple(c["replay"]),
                                                 "discordant": tuple(map(tuple,
                                                                         c["discordant"]))})
                                    for c in result["checks"]]), ""]
    trace = result.get("trace")
    if trace:
        lines += ["## Does the replay try what the suite tried?", "",
                  f"Each stored run of {', '.join(f'`{m}`' for m in trace['methods'])} in the "
                  f"`{trace.get('store', 'eval.sqlite')}`, replayed seeing the CV scores that run saw: "
                  f"{trace['same']} of {trace['runs']} try the same pool entries in the same "
                  "order" + (f"; different: {', '.join(trace['different'])}"
                             if trace["different"] else "") + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sllmbo.eval.replay",
        description="Replay pool-restricted methods on the cross-evaluated matrices "
        f"(budgets 1..{MAX_BUDGET}); example: python -m sllmbo.eval.replay_report --out "
        "eval/results/replay")
    parser.add_argument("--benches", default="heldout,train-loo",
                        help="comma-separated: heldout, train-loo")
    parser.add_argument("--methods", default=",".join(REPLAY_METHODS),
                        help=f"comma-separated, of: {', '.join(REPLAY_METHODS)}")
    parser.add_argument("--suite-results", type=Path, default=SUITE_RESULTS,
                        help="the real suite's results.json to check the ranking against")
    parser.add_argument("--trace-store", type=Path, default=TRACE_STORE,
                        help="the suite store whose runs the replay must repeat entry for entry")
    parser.add_argument("--out", type=Path, default=Path("eval/results/replay"))
    args = parser.parse_args(argv)
    try:
        benches = _names(args.benches, ("heldout", "train-loo"), "--benches")
        methods = _names(args.methods, tuple(REPLAY_METHODS), "--methods")
        if "defaults" not in methods:
            raise SllmboError("--methods must include defaults: every ratio is to its error",
                              hint=f"--methods defaults,{','.join(methods)}")
        suite = args.suite_results if args.suite_results.is_file() else None
        args.out.mkdir(parents=True, exist_ok=True)
        result = run(benches, methods, suite, args.out, args.trace_store)
    except SllmboError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    (args.out / "replay.json").write_text(json.dumps(result, indent=1) + "\n")
    command = "python -m sllmbo.eval.replay_report" + (f" {' '.join(argv)}" if argv else "")
    (args.out / "replay.md").write_text(markdown(result, command))
    print((args.out / "replay.md").read_text())
    return 0


def _names(text: str, allowed: tuple[str, ...], flag: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in allowed]
    if unknown or not names:
        raise SllmboError(f"{flag}: unknown {', '.join(unknown) or '(empty)'}",
                          hint=f"choose from: {', '.join(allowed)}")
    return list(dict.fromkeys(names))


if __name__ == "__main__":
    sys.exit(main())
