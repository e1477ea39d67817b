"""Where sllmbo keeps its state inside an Optuna study.

Everything a worker needs lives in the study's storage (user attributes), never in process
memory, so several processes can share one study and a killed run resumes from storage alone.
"""

from __future__ import annotations

from typing import Any

from sllmbo.core.space import SearchSpace

# Every user-attribute key sllmbo writes is defined here and nowhere else.

# -- study user attributes --------------------------------------------------------------------
#: The ``TaskCard`` of the study (``sllmbo.core.taskcard``): what the LLM reads about the task.
TASK_CARD = "sllmbo:task_card"
#: The current search space (``SearchSpace.to_dict``); absent: the family's default.
SPACE = "sllmbo:space"
#: ``sllmbo:space_change:<index>`` -> one change of the space, its reason and trial. One key
#: per change: workers that change the space at once never overwrite each other's entry.
SPACE_CHANGE_PREFIX = "sllmbo:space_change:"
#: Why the study stopped early (``sllmbo.stopping``); None or absent: it did not.
STOP_REASON = "sllmbo:stop_reason"
#: The options of the latest run on the study (sampler, n_trials, seed, protocol, ...).
RUN_CONFIG = "sllmbo:run"
#: Set when ``tune(enqueue=...)`` enqueued its configurations (so a resume or a second
#: worker does not enqueue them again): count, source label, repairs.
ENQUEUED = "sllmbo:enqueued"
#: The LLM initializer's ``InitResult`` (without the space).
INIT = "sllmbo:init"
#: Host, PID and time of the process that created the study (and so runs the initializer).
INIT_STARTED = "sllmbo:init_started"
#: Completed-trial count at which the space was last adapted.
ADAPTED_AT = "sllmbo:space_adapted_at"
#: ``sllmbo:space_adapt_failure:<complete trials>`` -> the cause of that failed adaptation.
ADAPT_FAILURE_PREFIX = "sllmbo:space_adapt_failure:"
#: ``sllmbo:adapt_cost:<complete trials>`` -> the LLM calls and tokens of that adaptation.
ADAPT_COST_PREFIX = "sllmbo:adapt_cost:"

# -- trial user attributes --------------------------------------------------------------------
#: Where a trial's configuration came from (``SOURCES`` in ``sllmbo.samplers.attrs``).
SOURCE = "sllmbo:source"
CV_STD = "sllmbo:cv_std"
CV_FOLDS = "sllmbo:cv_folds"
FIT_SECONDS = "sllmbo:fit_seconds"
#: Why the model fit of a failed trial failed.
FIT_ERROR = "sllmbo:fit_error"
#: True when the trial's CV scores came from a ``ScoreCache`` (fit seconds: the original's).
CACHE_HIT = "sllmbo:cache_hit"
LLM_CALLS = "sllmbo:llm_calls"
LATENCY_S = "sllmbo:llm_latency_s"
PROMPT_TOKENS = "sllmbo:prompt_tokens"
COMPLETION_TOKENS = "sllmbo:completion_tokens"
RETRIES = "sllmbo:retries"
#: List of repairs (clips, snaps) applied to the LLM's answer, one string each.
REPAIRS = "sllmbo:repairs"
#: Why the last rejected answer was rejected (parse/validation error text).
VALIDATION_ERROR = "sllmbo:validation_error"
#: Why a trial fell back to the plain sampler (``FALLBACK_CAUSES``) when source is fallback.
FALLBACK_CAUSE = "sllmbo:fallback_cause"
#: The LLM probability the LLM-TPE sampler used for this trial.
P_LLM = "sllmbo:p_llm"
#: History table size the prompt settled on: [k_best, k_recent].
HISTORY_K = "sllmbo:history_k"
#: Numbers of the finished trials the prompt was built from (running trials are not history).
HISTORY_TRIALS = "sllmbo:history_trials"


def get_space(study: Any, default: SearchSpace) -> SearchSpace:
    """The study's current search space (it may have been adapted), else ``default``."""
    data = study.user_attrs.get(SPACE)
    return default if data is None else SearchSpace.from_dict(data)


def set_space(study: Any, space: SearchSpace, reason: str, trial_number: int | None = None) -> None:
    """Make ``space`` current and log the change (with its reason) under a key of its own, so
    that two workers changing the space at once both keep their entry."""
    import time
    import uuid

    index = f"{time.time():017.6f}:{uuid.uuid4().hex[:8]}"  # sorts by time; unique
    study.set_user_attr(SPACE_CHANGE_PREFIX + index,
                        {"trial": trial_number, "reason": reason, "space": space.to_dict()})
    study.set_user_attr(SPACE, space.to_dict())


def space_changes(user_attrs: dict[str, Any]) -> list[dict[str, Any]]:
    """Every logged change of the space, oldest first."""
    return [user_attrs[k] for k in sorted(user_attrs) if k.startswith(SPACE_CHANGE_PREFIX)]


def adapt_failures(user_attrs: dict[str, Any]) -> dict[str, int]:
    """Failed space adaptations by cause."""
    counts: dict[str, int] = {}
    for key, cause in user_attrs.items():
        if key.startswith(ADAPT_FAILURE_PREFIX):
            counts[str(cause)] = counts.get(str(cause), 0) + 1
    return counts
