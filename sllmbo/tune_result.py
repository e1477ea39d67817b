"""What ``tune()`` returns: the study's best trial, its refit test scores, and why trials
failed, as the JSON ``--output`` writes."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from sllmbo.core import studyinfo
from sllmbo.core.families import ModelFamily
from sllmbo.core.objective import EvalSettings, ScoreCache, holdout_scores
from sllmbo.core.storage import mask_url
from sllmbo.core.taskcard import TaskCard
from sllmbo.studies import count_states

if TYPE_CHECKING:
    import optuna

    from sllmbo.core.task import Task


@dataclass
class TuneResult:
    """What a tuning run produced; ``to_json`` is the file ``--output`` writes."""

    task: str
    model: str
    sampler: str
    study: str
    storage: str | None
    metric: str
    direction: str
    n_trials_target: int
    n_complete: int
    n_failed: int
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None
    test_scores: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None
    #: Why trials failed (the most common fit error), when any did.
    failures: str | None = None
    seconds: float = 0.0
    task_card: dict[str, Any] = field(default_factory=dict)
    #: The LLM loop's accounting (``sllmbo.summary.LoopSummary.to_dict``); None without LLM.
    llm: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


def failure_causes(study: optuna.Study, first_trial: int = 0) -> str:
    """The most common cause of the failed trials from ``first_trial`` on (their
    ``sllmbo:fit_error``), for the message that stops a run: an in-memory study is gone
    by the time a user could read its attributes."""
    from collections import Counter

    from optuna.trial import TrialState

    causes = Counter(
        str(t.user_attrs.get(studyinfo.FIT_ERROR) or "the objective returned no value")
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.number >= first_trial)
    if not causes:
        return "No cause was recorded."
    (cause, n), *others = causes.most_common()
    return f"Cause of {n}: {cause}" + (f" (and {len(others)} other causes)" if others else "")


def summarize(
    study: optuna.Study,
    task: Task,
    family: ModelFamily,
    settings: EvalSettings,
    sampler: str,
    storage: str | None,
    n_trials: int,
    card: TaskCard,
    score_test: bool = True,
    cache: ScoreCache | None = None,
) -> TuneResult:
    """Best trial of the study and (``score_test``) its refit test scores."""
    counts = count_states(study)
    best = None
    if counts["complete"]:
        best = study.best_trial
    return TuneResult(
        task=task.name,
        model=family.name,
        sampler=sampler,
        study=study.study_name,
        storage=mask_url(storage),
        metric=card.metric,
        direction=card.direction,
        n_trials_target=n_trials,
        n_complete=counts["complete"],
        n_failed=counts["fail"],
        best_value=None if best is None else float(best.value),  # type: ignore[arg-type]
        best_params=None if best is None else dict(best.params),
        best_trial=None if best is None else best.number,
        test_scores=(
            holdout_scores(task, family, best.params, settings, cache=cache)
            if best is not None and score_test else {}
        ),
        stop_reason=study.user_attrs.get(studyinfo.STOP_REASON),
        failures=failure_causes(study) if counts["fail"] else None,
        task_card=card.to_user_attr(),
    )
