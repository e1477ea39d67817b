"""Small shared pieces of the loop tests: a space, a card, an objective over the space."""

from __future__ import annotations

from typing import Any

import optuna

from sllmbo.core.space import CategoricalParam, FloatParam, IntParam, SearchSpace
from sllmbo.core.studyinfo import get_space
from sllmbo.core.taskcard import TaskCard

SPACE = SearchSpace(
    (
        FloatParam("x", 0.0, 10.0),
        IntParam("n", 1, 100, log=True),
        CategoricalParam("kind", ("a", "b")),
    )
)
LIMITS = SearchSpace(
    (
        FloatParam("x", -50.0, 50.0),
        IntParam("n", 1, 1000, log=True),
        CategoricalParam("kind", ("a", "b")),
    )
)
CARD = TaskCard(
    task="toy", task_type="regression", model_family="toy", metric="rmse",
    direction="minimize", n_rows=100, n_features=3, n_numeric=2, n_categorical=1,
    missing_share=0.0, target_mean=1.5, target_std=0.25, target_skew=0.1,
)


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Suggest every parameter of ``space`` (what the real CV objective does)."""
    out: dict[str, Any] = {}
    for p in space:
        if isinstance(p, FloatParam):
            out[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif isinstance(p, IntParam):
            out[p.name] = trial.suggest_int(p.name, p.low, p.high, log=p.log)
        else:
            out[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return out


def toy_value(params: dict[str, Any]) -> float:
    return (params["x"] - 3.0) ** 2 + abs(params["n"] - 20) / 10 + (params["kind"] == "b")


def objective(trial: optuna.Trial) -> float:
    """Reads the study's current space, as sllmbo's CV objective does."""
    space = get_space(trial.study, SPACE)
    return toy_value(suggest(trial, space))
