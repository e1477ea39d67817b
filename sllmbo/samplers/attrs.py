"""Per-trial user attributes written by the LLM samplers, and how to write them.

Everything is stored in the trial (through the study's storage), never in sampler memory, so
counters survive a killed run and add up across worker processes sharing one study.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sllmbo.studyinfo import SOURCE

#: Where a trial's configuration came from.
SOURCES = ("llm", "tpe", "initial", "fallback", "random")
LLM_CALLS = "sllmbo:llm_calls"
LATENCY_S = "sllmbo:llm_latency_s"
PROMPT_TOKENS = "sllmbo:prompt_tokens"
COMPLETION_TOKENS = "sllmbo:completion_tokens"
RETRIES = "sllmbo:retries"
#: List of repairs (clips, snaps) applied to the LLM's answer, one string each.
REPAIRS = "sllmbo:repairs"
#: Why the last rejected answer was rejected (parse/validation error text).
VALIDATION_ERROR = "sllmbo:validation_error"
#: One of FALLBACK_CAUSES when source == "fallback".
FALLBACK_CAUSE = "sllmbo:fallback_cause"
FALLBACK_CAUSES = ("backend_error", "timeout", "invalid", "duplicate")
#: The LLM probability the LLM-TPE sampler used for this trial.
P_LLM = "sllmbo:p_llm"
#: History table size the prompt settled on: [k_best, k_recent].
HISTORY_K = "sllmbo:history_k"
#: Numbers of the finished trials the prompt was built from (running trials are not history).
HISTORY_TRIALS = "sllmbo:history_trials"

__all__ = ["SOURCE", "SOURCES", "set_trial_attrs"]


def set_trial_attrs(study: Any, trial: Any, attrs: Mapping[str, Any]) -> None:
    """Write ``attrs`` into ``trial``'s user attributes through the study's storage.

    Samplers only see a ``FrozenTrial``; its ``_trial_id`` addresses the live trial.
    """
    for key, value in attrs.items():
        study._storage.set_trial_user_attr(trial._trial_id, key, value)
