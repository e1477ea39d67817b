"""The LLM scorer's prompt and answer: one candidate, given the card and the run so far.

Formulation (a) of [14/16]: the model reads the task card, the run's history and one
candidate pool entry, and answers with one digit, the bin of the candidate's error ratio to
the run's best so far (to the library defaults before any trial). Its next-token
distribution over the ten digits is the candidate's bin distribution, which an acquisition
(``sllmbo.rank``) turns into a pick. One pure function renders the prompt for the training
data (``sllmbo.data.rank_instructions``) and for inference, so the two cannot drift.

Everything that differs between a run's candidates comes last (the candidate's name and
values), so an engine computes the shared head (card, history, question) once per trial.
History scores are shown as ratios to the run's best so far (``x1.07``): scale-free, and
unlike a min-max scale they keep how far apart the scores are.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from sllmbo.core.prompts import PICK_NAMES, Messages, render_card, render_values
from sllmbo.core.space import SearchSpace
from sllmbo.core.taskcard import TaskCard

#: The answers, one per ratio bin: "0" = the largest gain ... "9" = the worst or a failure.
RANK_BIN_TOKENS: tuple[str, ...] = tuple(str(d) for d in range(10))
SYSTEM = ("You are an expert in hyperparameter optimization of machine-learning models. "
          "You answer with one digit only.")


def render_run(history: Sequence[tuple[int, float | None]]) -> str:
    """``B=x1, K=x1.07, D=failed``: each tried pool entry (by name) with its score as a
    ratio to the run's best so far, in trial order."""
    finite = [s for _, s in history if s is not None and math.isfinite(s)]
    best = min(finite) if finite else None
    parts = []
    for i, score in history:
        if score is None or not math.isfinite(score) or best is None:
            parts.append(f"{PICK_NAMES[i]}=failed")
        else:
            parts.append(f"{PICK_NAMES[i]}=x{max(score, 1e-12) / max(best, 1e-12):.3g}")
    return ", ".join(parts)


def render_bins(bin_ratios: Sequence[float]) -> str:
    """``0: below x0.7, 1: x0.7-0.85, ..., 9: x1.6 or worse, or a failed fit``."""
    if len(bin_ratios) != len(RANK_BIN_TOKENS) - 1:
        raise ValueError(f"{len(RANK_BIN_TOKENS)} bins need {len(RANK_BIN_TOKENS) - 1} edges, "
                         f"got {len(bin_ratios)}")
    edges = [f"{r:g}" for r in bin_ratios]
    parts = [f"0: below x{edges[0]}"]
    parts += [f"{b}: x{edges[b - 1]}-{edges[b]}" for b in range(1, len(edges))]
    parts.append(f"{len(edges)}: x{edges[-1]} or worse, or a failed fit")
    return ", ".join(parts)


def rank_messages(card: TaskCard | None, space: SearchSpace, pool_name: str,
                  history: Sequence[tuple[int, float | None]], candidate: int,
                  config: Mapping[str, Any], bin_ratios: Sequence[float]) -> Messages:
    """The scorer's question about pool entry ``candidate`` (its ``config``) given the run's
    ``history`` ((pool position, score to minimize or None), in trial order). The bins are
    stated by their edges ``bin_ratios`` (error ratios; ``sllmbo.data.rank_targets``)."""
    if not 0 <= candidate < len(PICK_NAMES) or any(not 0 <= i < len(PICK_NAMES)
                                                    for i, _ in history):
        raise ValueError(f"pool positions must lie in 0..{len(PICK_NAMES) - 1}")
    if history:
        run = (f"Tried so far on this task (error as a ratio to the best so far): "
               f"{render_run(history)}.")
        reference = "the best error so far"
    else:
        run = "No trials have been run."
        reference = "the error of the library's default configuration"
    user = (
        f"{render_card(card)}\n\n"
        f"Hyperparameters: {_space_names(space)}\n"
        f"Configurations come from the candidate pool {pool_name}. {run}\n"
        f"Estimate the candidate's error as a ratio to {reference}. Answer with one digit "
        f"({render_bins(bin_ratios)}).\n\n"
        f"Candidate {PICK_NAMES[candidate]} (values in the order of the search space): "
        f"{render_values(config, space)}"
    )
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


def _space_names(space: SearchSpace) -> str:
    return ", ".join(p.name for p in space)


def rank_completion(bin_index: int) -> Messages:
    """The target: the bin's digit as the assistant's whole answer."""
    if not 0 <= bin_index < len(RANK_BIN_TOKENS):
        raise ValueError(f"a bin lies in 0..{len(RANK_BIN_TOKENS) - 1}, got {bin_index}")
    return [{"role": "assistant", "content": RANK_BIN_TOKENS[bin_index]}]


def parse_bin(text: str) -> int:
    """The bin an answer names (its first non-space character must be a bin digit)."""
    stripped = text.strip()
    if not stripped or stripped[0] not in RANK_BIN_TOKENS:
        raise ValueError(f"not a bin answer: {text[:40]!r} (expected one digit 0-9)")
    return RANK_BIN_TOKENS.index(stripped[0])


def bin_distribution(logprobs: Sequence[Sequence[float]]) -> list[list[float]]:
    """Per candidate, the softmax over the bin tokens' log-probabilities (what the model
    puts on other tokens is not an answer)."""
    out = []
    for row in logprobs:
        if len(row) != len(RANK_BIN_TOKENS) or not all(math.isfinite(x) for x in row):
            raise ValueError(f"expected {len(RANK_BIN_TOKENS)} finite log-probabilities per "
                             f"candidate, got {list(row)[:12]}")
        top = max(row)
        weights = [math.exp(x - top) for x in row]
        total = sum(weights)
        out.append([w / total for w in weights])
    return out
