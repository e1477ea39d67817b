"""Adaptive search space: every ``every`` completed trials the LLM may narrow, widen or keep
each numeric range, never past the family's hard limits.

The new space is made current with ``studyinfo.set_space`` (reason and trial number go to
``sllmbo:space_change:*``, one key each); the objective and both samplers read the current space from the
study at every trial, so a change reaches every worker process. Two guards keep the LLM from
doing harm: ranges are intersected with the hard limits, and a range is stretched to keep the
best configuration so far inside it (so the study's best stays reachable).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from optuna.trial import FrozenTrial, TrialState

from sllmbo.core import history as hist
from sllmbo.core import studyinfo
from sllmbo.core.errors import SpaceError
from sllmbo.core.prompts import ADAPT_ACTIONS, adaptation_messages, adaptation_schema, fmt
from sllmbo.core.space import CategoricalParam, FloatParam, IntParam, Param, SearchSpace
from sllmbo.core.taskcard import TaskCard
from sllmbo.inference.base import Backend, SamplingParams
from sllmbo.samplers.calls import ask_json


def adaptation_point(complete: list[FrozenTrial], trial_number: int, every: int,
                     adapted_at: int) -> int | None:
    """The adaptation this worker owns after finishing ``trial_number``, if any.

    Adaptation k (a multiple of ``every``) belongs to whichever trial completed k-th (in
    completion order, ties by number). Exactly one worker finished that trial, so exactly one
    worker adapts at k, even when several finish at once and each sees k or more completed
    trials: no check-then-set on a shared attribute decides it.
    """
    order = sorted(complete, key=lambda t: (t.datetime_complete or datetime.min, t.number))
    for k in range(every * (adapted_at // every + 1), len(order) + 1, every):
        if order[k - 1].number == trial_number:
            return k
    return None


def apply_decision(
    data: Any, space: SearchSpace, limits: SearchSpace, best: Mapping[str, Any] | None = None
) -> tuple[SearchSpace, list[str]]:
    """The space after the LLM's per-parameter decision, and a line per actual change.

    Raises ``ValueError`` (shown to the model on its retry) when the answer is malformed.
    """
    if not isinstance(data, Mapping) or not isinstance(data.get("params"), Mapping):
        raise ValueError('the answer must be {"reason": .., "params": {name: {..}}}')
    decisions = data["params"]
    unknown = sorted(set(decisions) - set(space.names))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; use only {space.names}")
    new: list[Param] = []
    notes: list[str] = []
    for p in space:
        decision = decisions.get(p.name)
        if isinstance(p, CategoricalParam) or decision is None:
            continue
        if not isinstance(decision, Mapping) or decision.get("action") not in ADAPT_ACTIONS:
            raise ValueError(f"'{p.name}' needs an action in {list(ADAPT_ACTIONS)}")
        if decision["action"] == "keep":
            continue
        try:
            low, high = float(decision["low"]), float(decision["high"])
            if not (math.isfinite(low) and math.isfinite(high)):
                raise ValueError
        except (KeyError, TypeError, ValueError, OverflowError):
            raise ValueError(f"'{p.name}' needs finite numeric low and high") from None
        if isinstance(p, IntParam):
            low, high = float(round(low)), float(round(high))
        if best is not None and p.name in best:
            low, high = min(low, best[p.name]), max(high, best[p.name])
        try:
            candidate = type(p)(p.name, type(p.low)(low), type(p.high)(high), log=p.log)
        except SpaceError as err:
            raise ValueError(err.message) from None
        fitted = SearchSpace((candidate,)).restricted_to(limits)[p.name]
        assert isinstance(fitted, (FloatParam, IntParam))
        if (fitted.low, fitted.high) != (p.low, p.high):
            new.append(fitted)
            notes.append(
                f"{p.name}: [{fmt(p.low)}, {fmt(p.high)}] -> [{fmt(fitted.low)}, "
                f"{fmt(fitted.high)}] ({decision['action']})"
            )
    return space.replace(new), notes


class SpaceAdapter:
    """A ``(study, trial)`` callback that lets the LLM adapt the space every ``every`` trials.

    Args:
        backend: the LLM.
        default_space: the space when the study holds none yet.
        limits: the family's hard limits; no range ever leaves them.
        card: the task card (default: the study's).
        every: completed trials between adaptations (default 10).
    """

    def __init__(
        self,
        *,
        backend: Backend,
        default_space: SearchSpace,
        limits: SearchSpace,
        card: TaskCard | None = None,
        every: int = 10,
        max_tokens: int = 384,
        temperature: float = 0.3,
        timeout: float | None = None,
        seed: int | None = None,
    ) -> None:
        if every < 1:
            raise ValueError(f"every must be >= 1 completed trial, got {every}")
        SamplingParams(max_tokens=max_tokens, temperature=temperature)
        default_space.restricted_to(limits)  # fails fast on a space the limits do not cover
        self._backend = backend
        self._default = default_space
        self._limits = limits
        self._card = card
        self._every = every
        self._max_tokens = max_tokens
        self._temperature = temperature
        self._timeout = timeout
        self._seed = seed

    def __call__(self, study: Any, trial: FrozenTrial) -> None:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        point = adaptation_point(complete, trial.number, self._every,
                                 study.user_attrs.get(studyinfo.ADAPTED_AT, 0))
        if point is None:
            return
        study.set_user_attr(studyinfo.ADAPTED_AT, point)
        self.adapt(study, trial.number, point)

    def adapt(self, study: Any, trial_number: int | None = None,
              point: int | None = None) -> list[str]:
        """Ask once (plus one retry); apply and record the change under ``point`` (default:
        the completed-trial count). Returns the change lines."""
        space = studyinfo.get_space(study, self._default)
        card = self._card if self._card is not None else TaskCard.from_study(study)
        direction = study.direction.name.lower()
        trials = study.get_trials(deepcopy=False)
        summary = hist.summarize(trials, space.names, direction,
                                 budget_tokens=self._backend.context_length // 2,
                                 count_tokens=self._backend.count_tokens)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        best = study.best_params if complete else None
        answer = ask_json(
            self._backend,
            adaptation_messages(card, space, self._limits, summary.text),
            lambda data: (apply_decision(data, space, self._limits, best),
                          str(data.get("reason", ""))[:200]),
            schema=adaptation_schema(space, self._limits),
            sampling=SamplingParams(max_tokens=self._max_tokens,
                                    temperature=self._temperature, seed=self._seed),
            timeout=self._timeout,
        )
        point = len(complete) if point is None else point
        # One key per adaptation point: workers never read-modify-write a shared attribute.
        study.set_user_attr(f"{studyinfo.ADAPT_COST_PREFIX}{point}", {
            "calls": answer.stats.calls, "prompt_tokens": answer.stats.prompt_tokens,
            "completion_tokens": answer.stats.completion_tokens,
            "latency_s": round(answer.stats.latency_s, 3), "cause": answer.cause,
        })
        if answer.value is None:
            study.set_user_attr(f"{studyinfo.ADAPT_FAILURE_PREFIX}{point}",
                                answer.cause or "invalid")
            return []
        (new_space, notes), reason = answer.value
        if notes:
            text = f"LLM after {len(complete)} complete trials: " + "; ".join(notes)
            studyinfo.set_space(study, new_space, f"{text}. {reason}".strip(), trial_number)
        return notes
