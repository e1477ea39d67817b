"""What a task card says about each registered task, computed once and shipped as a file.

``sllmbo recommend --task NAME`` needs the card's facts (rows, features, class balance,
target spread), not the data: reading and splitting a task cost about 0.7 s of a cold
command, and pandas' import besides. ``task_facts.json`` holds the facts of every registered
task; a test recomputes them from the data, so the file cannot drift from it.

Rebuild: ``python -m sllmbo.data.facts`` (``--check`` compares without writing).
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path
from typing import Any

FACTS_FILE = Path(__file__).with_name("task_facts.json")


def task_key(name: str) -> str:
    """The registry's spelling of ``name`` (``-`` and case are forgiven)."""
    return name.strip().lower().replace("-", "_")


@cache
def _shipped() -> dict[str, dict[str, Any]]:
    if not FACTS_FILE.is_file():
        return {}
    return json.loads(FACTS_FILE.read_text())


def registered_facts(name: str) -> dict[str, Any] | None:
    """The shipped facts of the registered task ``name``; None when it has none (an unknown
    name, or a file built before the task was added): the caller loads the task instead."""
    return _shipped().get(task_key(name))


def compute_facts(name: str) -> dict[str, Any]:
    """The facts of ``name`` from its data: task type, objective metric, rows of the full
    training split, and the card's meta-features."""
    from sllmbo.data.registry import load_task

    task = load_task(name)
    return {"task_type": task.task_type, "metric": task.metric,
            "full_train_rows": task.full_train_rows, **task.meta_features()}


def all_facts() -> dict[str, dict[str, Any]]:
    from sllmbo.data.registry import task_names

    return {name: compute_facts(name) for name in task_names()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare the shipped file with the data; exit 1 if they differ")
    args = parser.parse_args(argv)
    facts = all_facts()
    if args.check:
        same = facts == _shipped()
        print(f"{FACTS_FILE}: {'up to date' if same else 'OUT OF DATE: rebuild it'}")
        return 0 if same else 1
    FACTS_FILE.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    print(f"wrote the facts of {len(facts)} tasks to {FACTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
