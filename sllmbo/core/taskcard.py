"""Task cards: what the LLM reads about a task.

A card is written into ``study.user_attrs["sllmbo:task_card"]`` by every study this project runs,
so a trial log carries its own context and can become fine-tuning data later. Foreign studies
get a card from a small YAML file the user writes (``TaskCard.from_yaml``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from sllmbo.core.errors import TaskError
from sllmbo.core.studyinfo import TASK_CARD


class TaskCard(BaseModel):
    """Model family, metric and dataset meta-features of one tuning task."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task: str = Field(description="task name, e.g. 'bike_sharing' or a file name")
    task_type: Literal["regression", "classification"]
    model_family: str = Field(description="e.g. 'lightgbm', 'xgboost', 'random_forest', 'mlp'")
    metric: str = Field(description="objective metric, e.g. 'rmse', 'log_loss', 'accuracy'")
    direction: Literal["minimize", "maximize"]
    n_rows: int = Field(ge=0, description="rows in the training split")
    n_features: int = Field(ge=0)
    n_numeric: int = Field(ge=0)
    n_categorical: int = Field(ge=0)
    missing_share: float = Field(ge=0.0, le=1.0, description="share of missing feature cells")
    n_classes: int | None = Field(default=None, description="classification only")
    minority_share: float | None = Field(
        default=None, description="share of the rarest class (classification only)"
    )
    target_mean: float | None = Field(default=None, description="regression only")
    target_std: float | None = Field(default=None, description="regression only")
    target_skew: float | None = Field(default=None, description="regression only")
    description: str = Field(default="", description="one line about the data, optional")
    full_train_rows: int | None = Field(
        default=None,
        description="rows of the whole training split when the trials ran on a row-capped "
        "subsample of n_rows rows (corpus collection), else None",
    )

    def to_user_attr(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "task card") -> TaskCard:
        try:
            return cls.model_validate(dict(data))
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or '(card)'}: {e['msg']}" for e in err.errors()
            )
            raise TaskError(
                f"{source} is not a valid task card: {problems}",
                hint="see `sllmbo tasks --help` for the fields a card needs",
            ) from None

    @classmethod
    def from_study(cls, study: Any) -> TaskCard | None:
        """The card a study carries, or None for a foreign study without one."""
        data = study.user_attrs.get(TASK_CARD)
        return None if data is None else cls.from_mapping(data, f"study '{study.study_name}'")

    @classmethod
    def from_yaml(cls, path: str | Path) -> TaskCard:
        return cls.from_mapping(read_yaml_mapping(path, "task card"), str(path))


def read_yaml_mapping(path: str | Path, what: str) -> Mapping[str, Any]:
    """The YAML file at ``path`` as a mapping; ``TaskError`` naming ``what`` it should hold
    when the file is missing, not YAML, or not a mapping."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise TaskError(f"{what} file not found: {path}")
    try:
        data = load_yaml(path.read_text())
    except yaml.YAMLError as err:
        raise TaskError(f"{what} file {path} is not valid YAML: {err}") from None
    if not isinstance(data, Mapping):
        raise TaskError(f"{what} file {path} must be a mapping of fields, got {data!r}"[:300])
    return data


def load_yaml(text: str) -> Any:
    """``text`` parsed safely, numbers read as YAML 1.2 (and JSON) read them: every file and
    value a user writes (space files, task cards, cards files, recipes, ``--set``) goes
    through here. PyYAML follows YAML 1.1, where ``1e-8`` or ``2e6`` (no dot) is a string, so
    a learning rate bound would be text and ``token_budget: 2e6`` would not be an integer.
    Raises ``yaml.YAMLError`` for text that is not YAML."""
    import yaml

    return yaml.load(text, Loader=_yaml12_loader())  # a SafeLoader subclass: no objects


@functools.cache
def _yaml12_loader() -> type:
    import yaml

    class Yaml12Loader(yaml.SafeLoader):
        pass

    Yaml12Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
        list("-+0123456789."),
    )
    return Yaml12Loader
