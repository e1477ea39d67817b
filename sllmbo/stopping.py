"""Early stopping: end a study after ``patience`` completed trials without real improvement.

A plain ``(study, trial)`` callback (``optuna.terminator`` is deprecated) that reads the trials
from storage each time, so it holds no state: several workers agree, a resumed run continues
counting where the killed one left off. Defaults follow the paper (SLLMBO, arXiv 2410.20302):
patience 15 for the LLM sampler, 5 for LLM-TPE (each sampler's default is in
``sllmbo.samplers.registry``).
"""

from __future__ import annotations

import math
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sllmbo.core.history import relative_change
from sllmbo.core.studyinfo import STOP_REASON


class EarlyStopping:
    """Call ``study.stop()`` once ``patience`` completed trials in a row brought no relative
    improvement of at least ``min_delta`` over the best value before them.

    An improvement counts when it is strict and ``|new - best| / |best| >= min_delta``
    (absolute change when ``best == 0``). The reason is stored in
    ``study.user_attrs["sllmbo:stop_reason"]`` so ``tune`` stops resuming too.
    """

    def __init__(self, *, patience: int, min_delta: float = 0.0) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1 completed trial, got {patience}")
        if not (min_delta >= 0 and math.isfinite(min_delta)):
            raise ValueError(f"min_delta must be a finite number >= 0, got {min_delta}")
        self.patience = patience
        self.min_delta = min_delta

    def stale_trials(self, study: Any) -> tuple[int, int | None]:
        """Completed trials since the last improvement, and that improving trial's number."""
        minimize = study.direction.name.lower() == "minimize"
        trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        best: float | None = None
        best_number: int | None = None
        stale = 0
        for t in sorted(trials, key=lambda t: t.number):
            if t.value is None or not math.isfinite(t.value):
                stale += 1
                continue
            if best is None or self._improves(t.value, best, minimize):
                best, best_number, stale = t.value, t.number, 0
            else:
                stale += 1
        return stale, best_number

    def _improves(self, value: float, best: float, minimize: bool) -> bool:
        gain = best - value if minimize else value - best
        return gain > 0 and relative_change(best, value) >= self.min_delta

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        stale, best_number = self.stale_trials(study)
        if stale >= self.patience:
            study.set_user_attr(
                STOP_REASON,
                f"early stopping: {stale} completed trials without a relative improvement "
                f">= {self.min_delta:g} since trial {best_number} (patience {self.patience})",
            )
            study.stop()
