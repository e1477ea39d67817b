"""``flaml-zeroshot``: FLAML's own zero-shot configurations (``flaml.default``), offline.

FLAML's wheel ships, per learner and task kind, a small portfolio mined on its benchmark and a
nearest-neighbour table over four meta-features (rows, features, classes, numeric share):
``flaml.default.suggest_config`` returns the portfolio ranked for the nearest benchmark task.
That ranked list, budget b taking its first b, is the baseline. Nothing is downloaded: the
portfolios are JSON files inside the wheel.

LightGBM maps to FLAML's ``lgbm`` learner. XGBoost maps to ``xgb_limitdepth``, FLAML's
depth-wise XGBoost, because this project's XGBoost family grows trees depth-wise (FLAML's
``xgboost`` learner grows them leaf-wise, a different model). FLAML's estimator classes turn
each configuration into library arguments (``log_max_bin`` -> ``max_bin``, ...), and the
configuration is fitted by the family's own builder (the same categorical handling, seed and
threads as every other method) within limits widened to what FLAML's portfolios hold: their
tree counts reach 32,767 and FLAML tunes ``max_bin`` and ``colsample_bylevel``, which the
family's space does not. FLAML is an optional dependency of the evaluation, not of the core.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import SllmboError
from sllmbo.core.space import FloatParam, IntParam, SearchSpace

if TYPE_CHECKING:
    from sllmbo.core.families import ModelFamily
    from sllmbo.data import Task

#: This project's family -> FLAML's learner of the same model.
FLAML_LEARNERS = {"lightgbm": "lgbm", "xgboost": "xgb_limitdepth"}
#: Arguments FLAML's estimators add that the family's builder sets itself.
_BUILDER_OWNED = frozenset({"n_jobs", "verbose", "verbosity", "random_state", "seed"})
#: What FLAML's portfolios hold beyond the family's hard limits.
_WIDER = {
    "n_estimators": IntParam("n_estimators", 1, 65_535, log=True),
    "reg_alpha": FloatParam("reg_alpha", 1e-12, 1e4, log=True),
    "reg_lambda": FloatParam("reg_lambda", 1e-12, 1e4, log=True),
    "min_child_weight": FloatParam("min_child_weight", 1e-6, 1e4, log=True),
    "learning_rate": FloatParam("learning_rate", 1e-6, 1.0, log=True),
}
_EXTRA = {
    "lightgbm": (IntParam("max_bin", 3, 2047, log=True),),
    "xgboost": (FloatParam("colsample_bylevel", 0.01, 1.0),),
}


def require_flaml() -> Any:
    try:
        import flaml.default as flaml_default
    except ImportError:
        raise SllmboError("the flaml-zeroshot baseline needs FLAML",
                          hint="pip install 'flaml>=2.3' (an evaluation-only dependency)") from None
    return flaml_default


def flaml_configs(task: Task, family: ModelFamily, k: int | None = None) -> list[dict[str, Any]]:
    """FLAML's ranked zero-shot configurations for ``task`` as ``family`` arguments (first
    ``k``; an empty dict is FLAML's "library defaults" entry)."""
    if family.name not in FLAML_LEARNERS:
        raise SllmboError(f"flaml-zeroshot has no portfolio for {family.name}",
                          hint=f"families with one: {', '.join(FLAML_LEARNERS)}")
    require_flaml()
    from flaml.automl.task.factory import task_factory
    from flaml.default.suggest import suggest_config

    kind = task.task_type
    suggested = suggest_config(kind, task.X_train, task.y_train, FLAML_LEARNERS[family.name],
                               k=k)
    flaml_task = task_factory(kind if kind == "regression" else
                              ("binary" if len(task.class_names or ()) == 2 else "multiclass"))
    out: list[dict[str, Any]] = []
    for entry in suggested:
        hyperparameters = entry.get("hyperparameters") or {}
        if not hyperparameters:
            config: dict[str, Any] = {}
        else:
            estimator = flaml_task.estimator_class_from_str(entry["class"])
            params = estimator(task=flaml_task.name, **hyperparameters).params
            config = {name: _plain(value) for name, value in sorted(params.items())
                      if name not in _BUILDER_OWNED}
        if config not in out:
            out.append(config)
    return out


def flaml_family(family: ModelFamily) -> ModelFamily:
    """``family`` with hard limits wide enough for FLAML's configurations (same builder and
    name: a configuration's cache key is the same whichever method proposes it)."""
    limits = [_WIDER.get(p.name, p) for p in family.hard_limits()]
    return replace(family, limits=SearchSpace((*limits, *_EXTRA.get(family.name, ()))))


def _plain(value: Any) -> Any:
    """numpy scalars as Python numbers (cache keys are JSON)."""
    return value.item() if hasattr(value, "item") else value
