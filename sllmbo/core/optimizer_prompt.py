"""The optimizer step's prompt, from plain records: one function for the sampler and the data.

``LLMSampler`` calls :func:`optimizer_prompt` on the live study; the instruction-data builder
calls it on a stored one. A prompt depends only on the task card, the space, the trials that
were *finished* when it was built (running trials are not history) and the table size, so a
logged study replays byte for byte: the sampler stores which trials it showed
(``sllmbo:history_trials``) and the table size it settled on (``sllmbo:history_k``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from sllmbo.core import history as hist
from sllmbo.core.prompts import Messages, optimizer_messages
from sllmbo.core.space import SearchSpace
from sllmbo.core.taskcard import TaskCard

#: Tokens an optimizer prompt may take (or the model's context, if smaller): the sampler sizes
#: its history table to this and the data builder sizes training examples to it, so a model is
#: trained on prompts shaped like the ones it is sent.
DEFAULT_PROMPT_TOKENS = 1024

#: Trial states that count as history (a running or waiting trial has no result yet).
FINISHED = ("complete", "failed", "pruned")


@dataclass(frozen=True)
class PromptBudget:
    """How much history fits: the model's context, its tokenizer, the answer's allowance.

    ``count_tokens`` None counts ~3 characters a token; ``context_length`` None: no limit.
    """

    context_length: int | None = None
    count_tokens: Callable[[str], int] | None = None
    max_new_tokens: int = 256
    k_best: int = 10
    k_recent: int = 5


@dataclass(frozen=True)
class OptimizerPrompt:
    messages: Messages
    summary: hist.HistorySummary
    #: Numbers of the trials given as history (every finished trial, shown or summarized).
    history_trials: tuple[int, ...]


def finished_records(trials: Iterable[Any]) -> list[hist.TrialRecord]:
    """The finished trials as records, by number (running and waiting ones are dropped)."""
    return [r for r in hist.to_records(trials) if r.state in FINISHED]


def optimizer_prompt(
    card: TaskCard | None,
    space: SearchSpace,
    trials: Sequence[Any],
    direction: str,
    budget: PromptBudget = PromptBudget(),
) -> OptimizerPrompt:
    """The optimizer step's messages for the finished ones among ``trials``.

    The history table shrinks (recent rows first) until the prompt fits the budget; a
    replay passes the recorded ``k_best``/``k_recent`` and no context length.
    """
    records = finished_records(trials)
    count = budget.count_tokens
    limit = None
    if budget.context_length is not None:
        skeleton = "\n".join(m["content"] for m in optimizer_messages(card, space, ""))
        used = count(skeleton) if count else max(1, len(skeleton) // 3)
        limit = hist.history_budget(budget.context_length, used, budget.max_new_tokens)
    summary = hist.summarize(
        records, space.names, direction, budget_tokens=limit, count_tokens=count,
        k_best=budget.k_best, k_recent=budget.k_recent,
    )
    return OptimizerPrompt(
        optimizer_messages(card, space, summary.text), summary,
        tuple(r.number for r in records),
    )
