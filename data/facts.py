"""What a task card says about each registered task, computed once and shipped as a file.

``sllmbo recommend --task NAME`` needs the card's facts (rows, features, class balance,
target spread), not the data: reading and splitting a task cost about 0.7 s of a cold
command, and pandas' import besides. ``task_facts.json`` holds the facts of every registered
task; a test recomputes them from the data, so the file cannot drift from it.

Rebuild: ``python -m sllmbo.data.facts_build`` (``--check`` compares without writing).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

FACTS_FILE = Path(__file__).with_name("task_facts.json")


def task_key(name: str) -> str:
    """The registry's spelling of ``name`` (``-`` and case are forgiven)."""
    return name.strip().lower().replace("-", "_")


@cache
def shipped_facts() -> dict[str, dict[str, Any]]:
    """The committed facts of every registered task, read once (empty before the first build)."""
    if not FACTS_FILE.is_file():
        return {}
    return json.loads(FACTS_FILE.read_text())


def registered_facts(name: str) -> dict[str, Any] | None:
    """The shipped facts of the registered task ``name``; None when it has none (an unknown
    name, or a file built before the task was added): the caller loads the task instead."""
    return shipped_facts().get(task_key(name))
