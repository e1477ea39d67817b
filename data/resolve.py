"""What a tuning run is about: the task (registered, a user's file, or loaded), the search
space (a family's default, a protocol's, or a user's file) and the task card the LLM reads.

``tune``, ``recommend``, the evaluation and the benchmarks all resolve through here, so they
describe a task to the LLM in the same words.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sllmbo.core.errors import SllmboError, SpaceError
from sllmbo.core.families import ModelFamily
from sllmbo.core.objective import METRICS, EvalSettings, objective_metric
from sllmbo.core.space import SearchSpace
from sllmbo.core.taskcard import TaskCard, load_yaml

if TYPE_CHECKING:
    from sllmbo.core.protocol import EvalProtocol
    from sllmbo.data import Task


def resolve_task(
    task: str | Task | None, data: str | Path | None, target: str | None, task_type: str | None
) -> Task:
    """A registered task by name, the user's CSV/Parquet file with a target column, or a
    ``Task`` already loaded (the evaluation harness builds its own)."""
    from sllmbo.data import Task, load_file_task, load_task

    if isinstance(task, Task):
        if data is not None:
            raise SllmboError("give a Task or --data, not both")
        return task

    if (task is None) == (data is None):
        raise SllmboError(
            "give exactly one of --task NAME or --data PATH",
            hint="`sllmbo tasks` lists the built-in tasks",
        )
    if data is not None:
        if not target:
            raise SllmboError("--data needs --target COLUMN (the column to predict)")
        return load_file_task(data, target=target, task_type=task_type)
    check_task_flags(task, target, task_type)
    return load_task(task)  # type: ignore[arg-type]


def check_task_flags(task: str | None, target: str | None, task_type: str | None) -> None:
    """A built-in task fixes its target and type: refuse --target/--task-type beside --task
    (ignoring them would hide the user's intent)."""
    given = [flag for flag, value in (("--target", target), ("--task-type", task_type)) if value]
    if task is not None and given:
        raise SllmboError(
            f"{' and '.join(given)} only appl{'y' if len(given) > 1 else 'ies'} to --data; "
            f"built-in task '{task}' has its own",
            hint="leave them out, or pass your file with --data PATH --target COLUMN",
        )


def load_space_file(path: str | Path) -> SearchSpace:
    """A search space from a JSON or YAML file in ``SearchSpace.to_dict`` form:
    ``{"learning_rate": {"type": "float", "low": 0.01, "high": 0.3, "log": true}, ...}``."""
    import json

    import yaml

    path = Path(path)
    if not path.is_file():
        raise SpaceError(f"space file not found: {path}")
    text = path.read_text()
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else load_yaml(text)
    except json.JSONDecodeError as err:
        raise SpaceError(f"space file {path} is not valid JSON: {err}") from None
    except yaml.YAMLError as err:
        raise SpaceError(f"space file {path} is not valid YAML: {err}") from None
    return SearchSpace.from_dict(data)


def build_card(task: Task, family: ModelFamily, settings: EvalSettings,
               protocol: EvalProtocol | None = None) -> TaskCard:
    """What the LLM reads about this tuning task (metric: the protocol's, if one is given)."""
    metric = objective_metric(task, settings, protocol)
    return TaskCard(
        task=task.name,
        task_type=task.task_type,
        model_family=family.name,
        metric=metric,
        direction=METRICS[metric],  # type: ignore[arg-type]
        full_train_rows=task.full_train_rows,
        **task.meta_features(),
    )


def registered_card(name: str, family: ModelFamily,
                    settings: EvalSettings) -> TaskCard | None:
    """The card of the registered task ``name`` from its shipped facts, without reading the
    data (``sllmbo.data.facts``); None when the name has no facts (then load the task)."""
    from sllmbo.data.facts import registered_facts, task_key

    facts = registered_facts(name)
    if facts is None:
        return None
    facts = dict(facts)
    metric = settings.metric or facts["metric"]
    del facts["metric"]
    return TaskCard(task=task_key(name), model_family=family.name, metric=metric,
                    direction=METRICS[metric], **facts)  # type: ignore[arg-type]


def task_spaces(task: Task, family: ModelFamily,
            protocol: EvalProtocol | None) -> tuple[SearchSpace, SearchSpace]:
    """(the space tuning starts from, the widest an adapted space may reach). A protocol's
    space is authoritative: for a plain estimator it is its own limit; in family mode it was
    checked to lie inside the family's hard limits."""
    limits = family.hard_limits(task.task_type)
    if protocol is None or protocol.space is None:
        return family.default_space(task.task_type), limits
    return protocol.space, protocol.space if protocol.estimator == "plain" else limits
