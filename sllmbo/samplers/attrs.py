"""Per-trial user attributes written by the LLM samplers, and how to write them.

Everything is stored in the trial (through the study's storage), never in sampler memory, so
counters survive a killed run and add up across worker processes sharing one study.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sllmbo.core.studyinfo import (  # the keys are defined in studyinfo, with the others
    COMPLETION_TOKENS,
    FALLBACK_CAUSE,
    HISTORY_K,
    HISTORY_TRIALS,
    LATENCY_S,
    LLM_CALLS,
    P_LLM,
    PROMPT_TOKENS,
    REPAIRS,
    RETRIES,
    SOURCE,
    VALIDATION_ERROR,
)

#: Where a trial's configuration came from.
SOURCES = ("llm", "tpe", "initial", "fallback", "random", "pool")
#: Why a trial fell back to the plain sampler.
FALLBACK_CAUSES = ("backend_error", "timeout", "invalid", "duplicate")

__all__ = [
    "COMPLETION_TOKENS", "FALLBACK_CAUSE", "FALLBACK_CAUSES", "HISTORY_K", "HISTORY_TRIALS",
    "LATENCY_S", "LLM_CALLS", "PROMPT_TOKENS", "P_LLM", "REPAIRS", "RETRIES", "SOURCE",
    "SOURCES", "VALIDATION_ERROR", "set_trial_attrs",
]


def set_trial_attrs(study: Any, trial: Any, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` into ``trial``'s user attributes through the study's storage.

    Samplers only see a ``FrozenTrial``; its ``_trial_id`` addresses the live trial.
    """
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
