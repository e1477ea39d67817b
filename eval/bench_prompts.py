"""The prompts the inference benchmarks send: ``sllmbo recommend``'s, for real tasks x families.

Why a module of its own: every benchmark (and the engine tests) measures the same 20 prompts,
``prompts.recommend_messages`` and ``config_schema`` for five real tasks' cards and the four
families' default spaces, so their numbers compare. The vLLM environment has no pandas or
scikit-learn to load tasks with: ``write_prompts`` saves them for it, ``PROMPTS_FILE`` reads
them back.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from sllmbo.core.prompts import Messages, config_schema, recommend_messages
from sllmbo.core.space import SearchSpace
from sllmbo.inference import ChatRequest, Completion, SamplingParams

#: Real tasks x the four model families: 20 distinct prompts, exactly as ``recommend`` sends.
TASKS = ("bike_sharing", "concrete_strength", "cps_income", "credit_default", "image_segments")


#: Set by ``--prompts FILE``: the prompts as another environment wrote them (the vLLM one has
#: no pandas or scikit-learn to load tasks with).
PROMPTS_FILE: Path | None = None


def write_prompts(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([{"messages": m, "space": s.to_dict()} for m, s in prompts()]))


@functools.cache
def prompts() -> list[tuple[Messages, SearchSpace]]:
    """``recommend``'s messages and search space for every (task, family) pair."""
    if PROMPTS_FILE is not None:
        return [(p["messages"], SearchSpace.from_dict(p["space"]))
                for p in json.loads(PROMPTS_FILE.read_text())]
    from sllmbo.core.families import FAMILIES
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data import load_task
    from sllmbo.data.resolve import build_card

    out = []
    for name in TASKS:
        task = load_task(name)
        for family in FAMILIES.values():
            space = family.default_space(task.task_type)
            card = build_card(task, family, EvalSettings())
            out.append((recommend_messages(card, space), space))
    return out


def make_request(i: int, sampling: SamplingParams) -> ChatRequest:
    """The i-th prompt, cycling over the (task, family) pairs."""
    messages, space = prompts()[i % len(prompts())]
    return ChatRequest(messages, config_schema(space), sampling)


def tokens_per_s(outs: list[Completion], wall: float) -> float:
    """Answer tokens per second of wall time."""
    return sum(c.completion_tokens for c in outs) / wall if wall > 0 else 0.0

