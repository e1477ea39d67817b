"""Task cards for studies that carry none: a YAML file of ``match`` patterns -> cards.

A study written by ``sllmbo tune`` holds its own card (``sllmbo:task_card``). Any other study
(another team's, the SLLMBO paper's) gets one from a file like ``data/cards/sllmbo_paper.yaml``::

    cards:
      - match: "optuna_bike_sharing_lightgbm*"   # fnmatch pattern on the study name
        task: sllmbo_bike_sharing
        task_type: regression
        model_family: lightgbm
        metric: mae
        direction: minimize
        n_rows: 13903
        ...                                       # the other TaskCard fields

The first matching entry wins. Families and metrics are checked against what the project
knows, so a typo fails when the file is read, not silently in the data.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllmbo.core.errors import TaskError
from sllmbo.core.studyinfo import TASK_CARD
from sllmbo.core.taskcard import TaskCard, read_yaml_mapping

#: Metrics a foreign card may name, with the direction each is optimized in.
KNOWN_METRICS: dict[str, str] = {
    "rmse": "minimize", "mae": "minimize", "mse": "minimize", "mape": "minimize",
    "log_loss": "minimize", "accuracy": "maximize", "f1": "maximize",
    "f1_weighted": "maximize", "f1_macro": "maximize", "roc_auc": "maximize", "r2": "maximize",
}


@dataclass(frozen=True)
class CardRule:
    match: str
    card: TaskCard


def check_card(card: TaskCard, where: str) -> TaskCard:
    """``card`` if its family and metric are known and the direction fits the metric."""
    from sllmbo.core.families import FAMILIES

    if card.model_family not in FAMILIES:
        raise TaskError(f"{where}: unknown model family '{card.model_family}'",
                        hint=f"use one of: {', '.join(FAMILIES)}")
    if card.metric not in KNOWN_METRICS:
        raise TaskError(f"{where}: unknown metric '{card.metric}'",
                        hint=f"use one of: {', '.join(KNOWN_METRICS)}")
    if KNOWN_METRICS[card.metric] != card.direction:
        raise TaskError(f"{where}: metric '{card.metric}' is optimized in direction "
                        f"'{KNOWN_METRICS[card.metric]}', the card says '{card.direction}'")
    return card


def load_card_rules(path: str | Path) -> list[CardRule]:
    """The rules of one cards YAML file; ``TaskError`` for anything malformed."""
    path = Path(path)
    data = read_yaml_mapping(path, "cards")
    if not isinstance(data.get("cards"), list):
        raise TaskError(f"cards file {path} must hold a 'cards:' list",
                        hint="see data/cards/sllmbo_paper.yaml for the format")
    rules = []
    for i, entry in enumerate(data["cards"]):
        where = f"{path}: card {i + 1}"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("match"), str):
            raise TaskError(f"{where} needs a 'match' pattern (the study names it applies to)")
        fields = {k: v for k, v in entry.items() if k != "match"}
        rules.append(CardRule(entry["match"], check_card(TaskCard.from_mapping(fields, where),
                                                         where)))
    return rules


def card_for(study_name: str, user_attrs: Mapping[str, Any],
             rules: list[CardRule]) -> tuple[TaskCard | None, str]:
    """The study's own card, else the first rule matching its name; with where it came from
    (``study``, ``yaml:<pattern>``) or why there is none."""
    own = user_attrs.get(TASK_CARD)
    if own is not None:
        try:
            return TaskCard.from_mapping(own, f"study '{study_name}'"), "study"
        except TaskError as err:
            return None, f"its stored task card is invalid: {err.message}"
    for rule in rules:
        if fnmatch.fnmatchcase(study_name, rule.match):
            return rule.card, f"yaml:{rule.match}"
    return None, "no task card in the study and no --cards entry matches its name"
