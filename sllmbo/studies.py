"""Opening a study safely, and what the workers sharing it must agree on.

``open_study`` refuses a study made for another task, model or metric, and tells its caller
whether this process created the study: the creator alone runs the LLM initializer and keeps
the plain ``seed``, decided by the storage's own unique study name, not by a check-then-set
that two workers starting together would both pass.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sllmbo.core import studyinfo
from sllmbo.core.errors import SllmboError
from sllmbo.core.space import SearchSpace
from sllmbo.core.taskcard import TaskCard

if TYPE_CHECKING:
    import optuna


@dataclass(frozen=True)
class OpenedStudy:
    study: optuna.Study
    #: True when this process created the study (its first worker).
    created: bool


def open_study(storage: Any, name: str, card: TaskCard) -> OpenedStudy:
    """Create the study or load it; refuse a study that was made for another task or model."""
    import optuna
    from optuna.study import StudyDirection

    direction = card.direction
    try:  # what optuna.create_study(load_if_exists=True) does, keeping who won the creation
        storage.create_new_study([StudyDirection[direction.upper()]], name)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        created = False
    study = optuna.load_study(study_name=name, storage=storage)
    if created:  # stamped at once: a worker arriving while this one loads its model waits
        study.set_user_attr(studyinfo.INIT_STARTED, {
            "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()})
    if study.direction.name.lower() != direction:
        raise SllmboError(
            f"study '{name}' exists with direction {study.direction.name.lower()}, "
            f"this run needs {direction}",
            hint="choose another --study name",
        )
    stored = TaskCard.from_study(study)
    if stored is None:
        if study.trials:
            raise SllmboError(
                f"study '{name}' already holds {len(study.trials)} trials that sllmbo did not "
                "write (no task card)",
                hint="choose another --study name; foreign studies are read by the data stage",
            )
        study.set_user_attr(studyinfo.TASK_CARD, card.to_user_attr())
    elif (stored.task, stored.model_family, stored.metric) != (
        card.task,
        card.model_family,
        card.metric,
    ):
        raise SllmboError(
            f"study '{name}' was made for task '{stored.task}', model '{stored.model_family}', "
            f"metric '{stored.metric}'; this run is '{card.task}', '{card.model_family}', "
            f"'{card.metric}'",
            hint="choose another --study name",
        )
    return OpenedStudy(study, created)


def count_states(study: optuna.Study) -> dict[str, int]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    return {state.name.lower(): sum(t.state == state for t in trials) for state in TrialState}


def process_seed(seed: int, opened: OpenedStudy) -> int:
    """The sampler seed of this process: ``seed`` for the process that created the study
    (a single-worker run is reproducible); for any other (a resume, or a second worker, even
    one that started at the same instant) mixed with the trial count and PID, so that no two
    workers draw the same configurations."""
    if opened.created:
        return seed
    n = len(opened.study.get_trials(deepcopy=False))
    return (seed * 1_000_003 + n * 7_919 + os.getpid()) % (2**31)


def enqueue_configs(study: optuna.Study, configs: Sequence[Mapping[str, Any]],
                    space: SearchSpace, source: str) -> list[str]:
    """Enqueue ``configs`` in order with ``sllmbo:source`` = ``source``, each clipped into
    ``space`` first (``SearchSpace.clip``: unknown keys dropped, numbers clipped and rounded);
    a parameter a configuration leaves out is left to the sampler. Returns the repairs."""
    repairs: list[str] = []
    for i, config in enumerate(configs):
        given = SearchSpace(tuple(p for p in space if p.name in config))
        clipped, notes = given.clip(config)
        repairs += [f"config {i}: {note}" for note in notes]
        study.enqueue_trial(clipped, user_attrs={studyinfo.SOURCE: source}, skip_if_exists=True)
    return repairs


def initializer_owner(opened: OpenedStudy, wait_s: float = 300.0, poll_s: float = 1.0) -> bool:
    """Whether this process should run the LLM initializer on the study.

    The creator does (``open_study`` stamped it with host, PID and time). Another worker that opens a
    study with no initializer result yet waits for the creator's (so its first trial is one of
    the initial configurations, not a plain sampler's), and takes over only when the creator is
    gone: its process no longer exists on this host, no stamp was left, or ``wait_s`` passed.
    """
    study = opened.study
    if studyinfo.INIT in study.user_attrs:
        return False
    if opened.created:
        return True
    deadline = time.monotonic() + wait_s
    while True:
        attrs = study.user_attrs  # read from storage on every access
        if studyinfo.INIT in attrs:
            return False
        stamp = attrs.get(studyinfo.INIT_STARTED)
        if not isinstance(stamp, Mapping) or not _alive(stamp) or time.monotonic() >= deadline:
            # Trials ran without it: too late to warm-start this study.
            return not study.get_trials(deepcopy=False)
        time.sleep(poll_s)


def _alive(stamp: Mapping[str, Any]) -> bool:
    """Whether the process of ``stamp`` may still be running: for sure only on this host."""
    if stamp.get("host") != socket.gethostname():
        return True
    try:
        os.kill(int(stamp.get("pid", -1)), 0)
    except (ProcessLookupError, ValueError, OverflowError):
        return False
    except PermissionError:
        return True
    return True
