"""Where sllmbo keeps its state inside an Optuna study.

Everything a worker needs lives in the study's storage (user attributes), never in process
memory, so several processes can share one study and a killed run resumes from storage alone.
"""

from __future__ import annotations

from typing import Any

from sllmbo.space import SearchSpace

TASK_CARD = "sllmbo:task_card"
SPACE = "sllmbo:space"
SPACE_CHANGES = "sllmbo:space_changes"
STOP_REASON = "sllmbo:stop_reason"
RUN_CONFIG = "sllmbo:run"
#: Per-trial user attributes.
SOURCE = "sllmbo:source"
CV_STD = "sllmbo:cv_std"
CV_FOLDS = "sllmbo:cv_folds"
FIT_SECONDS = "sllmbo:fit_seconds"


def get_space(study: Any, default: SearchSpace) -> SearchSpace:
    """The study's current search space (it may have been adapted), else ``default``."""
    data = study.user_attrs.get(SPACE)
    return default if data is None else SearchSpace.from_dict(data)


def set_space(study: Any, space: SearchSpace, reason: str, trial_number: int | None = None) -> None:
    """Make ``space`` current and append the change (with its reason) to the study's log."""
    changes = list(study.user_attrs.get(SPACE_CHANGES, []))
    changes.append({"trial": trial_number, "reason": reason, "space": space.to_dict()})
    study.set_user_attr(SPACE, space.to_dict())
    study.set_user_attr(SPACE_CHANGES, changes)
