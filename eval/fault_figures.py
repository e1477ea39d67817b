"""Fault figures: what a user's run does when it is killed, its model server dies, its storage
is read-only or its disk is full, when it is given bad options, and what ``sllmbo serve``
does with hostile clients (a slow drip, a slow-compiling schema, a disconnect during compile;
``server_faults``).

    python -m sllmbo.eval.fault_figures [--kills 10] [--out eval/results/fault_figures.json]

Every case runs the real ``sllmbo`` command in a subprocess with the embedded model (and its
default adapter) in-process or behind ``sllmbo serve``; nothing is simulated. A case that
needs what the machine lacks (a tmpfs mount for the full disk needs root) says so in its
row instead of passing. Prints the markdown table the closing note of [7/8] carries.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from sllmbo.eval import server_faults

SLLMBO = [sys.executable, "-m", "sllmbo"]
TASK = ["--task", "diabetes", "--model", "lightgbm", "--n-folds", "2", "--quiet"]


def completed_numbers(db: Path, study: str) -> set[int]:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        loaded = optuna.load_study(study_name=study, storage=f"sqlite:///{db}")
    except KeyError:
        return set()
    return {t.number for t in loaded.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))}


def kill_and_resume(workdir: Path, kills: int, target: int, seed: int) -> dict[str, Any]:
    """``kills`` runs of an llm-tpe study killed with SIGKILL, each resumed by the next, then
    one run to the target. Each kill lands mid-work: after the run has completed 1-3 new
    trials (so it is past loading and the initializer), plus a random 0-3 s into the next
    trial. Lost: trials complete before a kill and not complete after it."""
    db = workdir / "killed.db"
    cmd = [*SLLMBO, "tune", *TASK, "--sampler", "llm-tpe", "--n-trials", str(target),
           "--storage", f"sqlite:///{db}", "--study", "killed", "--patience", "0"]
    rng = random.Random(seed)
    lost = 0
    moments = []
    for _ in range(kills):
        before = completed_numbers(db, "killed")
        wanted = len(before) + rng.randint(1, 3)
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.monotonic()
        while proc.poll() is None and len(completed_numbers(db, "killed")) < wanted:
            time.sleep(0.2)
        extra = round(rng.uniform(0.0, 3.0), 2)
        time.sleep(extra)
        at = round(time.monotonic() - started, 1)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        at_kill = completed_numbers(db, "killed")
        lost += len(before - at_kill)
        moments.append({"killed_at_s": at, "after_new_trial_s": extra,
                        "complete_before_run": len(before), "complete_at_kill": len(at_kill)})
    before_final = completed_numbers(db, "killed")
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    done = completed_numbers(db, "killed")
    lost += len(before_final - done)
    gained = sum(m["complete_at_kill"] - m["complete_before_run"] for m in moments)
    return {"case": f"kill -9 mid-study at {kills} random moments, each resumed",
            "kills": moments, "finished_trials_lost": lost, "final_exit": final.returncode,
            "final_complete": len(done), "target": target,
            "outcome": f"{lost} finished trials lost; the killed runs completed {gained} "
                       f"trials between them; resumed to {len(done)}/{target} complete "
                       f"(exit {final.returncode})"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_ready(url: str, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


def server_killed(workdir: Path, target: int, kill_after: int) -> dict[str, Any]:
    """An llm-tpe study against ``sllmbo serve``; the server is killed once ``kill_after``
    trials are complete. The study must finish on TPE with every fallback counted."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    server = subprocess.Popen([*SLLMBO, "serve", "--engine", "transformers", "--port",
                               str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_ready(url, 300):
        server.kill()
        return {"case": "model server killed mid-study", "outcome": "not run: server did "
                "not start in 300 s"}
    db, out = workdir / "server.db", workdir / "server.json"
    tune = subprocess.Popen([*SLLMBO, "tune", *TASK, "--sampler", "llm-tpe", "--p-llm", "0.9",
                             "--n-trials", str(target), "--patience", "0", "--backend",
                             "openai", "--base-url", url, "--storage", f"sqlite:///{db}",
                             "--study", "server", "--output", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while tune.poll() is None and len(completed_numbers(db, "server")) < kill_after:
        time.sleep(0.5)
    at = len(completed_numbers(db, "server"))
    server.send_signal(signal.SIGKILL)
    server.wait()
    _, err = tune.communicate(timeout=1800)
    if tune.returncode != 0 or not out.exists():
        return {"case": "model server killed mid-study", "exit": tune.returncode,
                "outcome": f"FAILED: exit {tune.returncode}: {err.strip()[-300:]}"}
    llm = json.loads(out.read_text())["llm"]
    sources = llm.get("sources", {})
    causes = llm.get("fallbacks", {})
    return {"case": "model server killed mid-study", "killed_after_complete": at,
            "exit": tune.returncode, "n_complete": json.loads(out.read_text())["n_complete"],
            "sources": sources, "fallback_causes": causes,
            "outcome": f"completed {target}/{target} (exit 0); killed after {at}; "
                       f"sources {sources}; fallbacks by cause {causes}"}


def one_message(case: str, cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    started = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                         env={**os.environ, **(env or {})})
    err = run.stderr.strip()
    lines = [line for line in err.splitlines() if line.strip()]
    ok = run.returncode == 2 and "Traceback" not in err and lines[:1] and \
        lines[0].startswith("error:")
    return {"case": case, "exit": run.returncode, "seconds": round(time.perf_counter() -
                                                                      started, 1),
            "message": lines[0] if lines else "", "one_clear_message": bool(ok),
            "outcome": f"exit {run.returncode} in {time.perf_counter() - started:.1f} s: "
                       f"{lines[0] if lines else '(nothing on stderr)'}"}


def read_only(workdir: Path) -> dict[str, Any]:
    db = workdir / "ro.db"
    subprocess.run([*SLLMBO, "tune", *TASK, "--n-trials", "1", "--storage", f"sqlite:///{db}",
                    "--study", "ro"], capture_output=True, timeout=600, check=True)
    return one_message("read-only storage file", [
        *SLLMBO, "tune", *TASK, "--n-trials", "3", "--study", "ro",
        "--storage", f"sqlite:///file:{db}?mode=ro&uri=true"])


def full_disk(workdir: Path) -> dict[str, Any]:
    """A study on a 2 MiB tmpfs filled to the last byte (needs root to mount)."""
    mount = workdir / "tiny"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        return {"case": "full disk", "outcome": "not run: mounting a tmpfs needs root "
                f"({made.stderr.strip()[:80]})"}
    try:
        db = mount / "full.db"
        subprocess.run([*SLLMBO, "tune", *TASK, "--n-trials", "1", "--storage",
                        f"sqlite:///{db}", "--study", "full"], capture_output=True,
                       timeout=600, check=True)
        with open(mount / "filler", "wb") as filler:
            try:
                while True:
                    filler.write(b"\0" * 65536)
                    filler.flush()
            except OSError:
                pass
        return one_message("full disk", [*SLLMBO, "tune", *TASK, "--n-trials", "40",
                                         "--storage", f"sqlite:///{db}", "--study", "full"])
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


BAD_OPTIONS = [
    ("--llm-timeout 0", ["--sampler", "llm", "--llm-timeout", "0"]),
    ("--min-delta -1", ["--sampler", "llm", "--min-delta", "-1"]),
    ("--adaptive-p --p-llm 1", ["--sampler", "llm-tpe", "--adaptive-p", "--p-llm", "1"]),
    ("--n-trials 0", ["--n-trials", "0"]),
    ("--temperature nan", ["--sampler", "llm", "--temperature", "nan"]),
    ("--sampler bogus", ["--sampler", "bogus"]),
]


def bad_options() -> list[dict[str, Any]]:
    rows = [one_message(f"bad option: {label}", [*SLLMBO, "tune", *TASK, *extra])
            for label, extra in BAD_OPTIONS]
    rows.append(one_message("bad option: --task no_such_task",
                            [*SLLMBO, "tune", "--task", "no_such_task", "--quiet"]))
    return rows


CASES = ("bad-options", "read-only", "full-disk", "server", "kills", "drip", "slow-schema",
         "compile-disconnect")


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| fault or input | what happened |", "|---|---|"]
    lines += [f"| {r['case']} | {r['outcome'].replace('|', '/')} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--target", type=int, default=40, help="trials of the killed study")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("eval/results/fault_figures.json"))
    parser.add_argument("--cases", default=",".join(CASES),
                        help=f"comma-separated subset of {', '.join(CASES)}; rows of the "
                        "others are kept from --out")
    args = parser.parse_args(argv)
    chosen = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CASES]
    if unknown:
        parser.error(f"unknown cases {unknown}; choose from {', '.join(CASES)}")
    old = json.loads(args.out.read_text()).get("cases", {}) if args.out.is_file() else {}
    with tempfile.TemporaryDirectory(prefix="sllmbo-faults-") as tmp:
        work = Path(tmp)
        runs = {
            "bad-options": lambda: bad_options(),
            "read-only": lambda: [read_only(work)],
            "full-disk": lambda: [full_disk(work)],
            "server": lambda: [server_killed(work, target=12, kill_after=4)],
            "kills": lambda: [kill_and_resume(work, args.kills, args.target, args.seed)],
            "drip": lambda: [server_faults.slow_drip()],
            "slow-schema": lambda: [server_faults.slow_schema()],
            "compile-disconnect": lambda: [server_faults.slow_schema(hang_up_after_s=1.0)],
        }
        cases = {name: runs[name]() if name in chosen else old.get(name, []) for name in CASES}
    rows = [row for name in CASES for row in cases[name]]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"cases": cases, "rows": rows,
                                    "machine": {"cpus": os.cpu_count()}}, indent=1) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
