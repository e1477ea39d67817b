"""Rebuild ``task_facts.json`` from the registered tasks' data: the writer beside the reader
(:mod:`sllmbo.data.facts`), which the registry imports and which so imports nothing back.

``python -m sllmbo.data.facts_build`` (``--check`` compares without writing).
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from sllmbo.data.facts import FACTS_FILE, shipped_facts
from sllmbo.data.registry import load_task, task_names


def compute_facts(name: str) -> dict[str, Any]:
    """The facts of ``name`` from its data: task type, objective metric, rows of the full
    training split, and the card's meta-features."""
    task = load_task(name)
    return {"task_type": task.task_type, "metric": task.metric,
            "full_train_rows": task.full_train_rows, **task.meta_features()}


def all_facts() -> dict[str, dict[str, Any]]:
    return {name: compute_facts(name) for name in task_names()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="compare the shipped file with the data; exit 1 if they differ")
    args = parser.parse_args(argv)
    facts = all_facts()
    if args.check:
        same = facts == shipped_facts()
        print(f"{FACTS_FILE}: {'up to date' if same else 'OUT OF DATE: rebuild it'}")
        return 0 if same else 1
    FACTS_FILE.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    print(f"wrote the facts of {len(facts)} tasks to {FACTS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
