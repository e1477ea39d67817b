"""Model families: default search spaces, hard limits, and estimator builders.

The default space is where tuning starts; the hard limits are the widest ranges the LLM may
move a space to (the adaptive space never leaves them). Preprocessing follows each family's
strengths: LightGBM and XGBoost take pandas ``category`` columns and NaN natively; the random
forest gets median imputation and ordinal codes; the MLP gets imputation, scaling and one-hot
codes, and a standardised target for regression.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.core.registry import Registry
from sllmbo.core.space import CategoricalParam, FloatParam, IntParam, SearchSpace

TaskType = str  # "regression" | "classification"


@dataclass(frozen=True)
class BuildContext:
    """What an estimator builder needs besides the configuration."""

    task_type: TaskType
    categorical_columns: tuple[str, ...]
    numeric_columns: tuple[str, ...]
    n_classes: int | None
    seed: int
    n_jobs: int = 1


@dataclass(frozen=True)
class ModelFamily:
    name: str
    description: str
    default: SearchSpace
    limits: SearchSpace
    builder: Callable[[Mapping[str, Any], BuildContext], Any]

    def default_space(self, task_type: TaskType | None = None) -> SearchSpace:
        """The space tuning starts from (the same for both task types here)."""
        return self.default

    def hard_limits(self, task_type: TaskType | None = None) -> SearchSpace:
        """The widest ranges any adapted space may reach."""
        return self.limits

    def build(self, config: Mapping[str, Any], context: BuildContext) -> Any:
        """An unfitted scikit-learn-compatible estimator for ``config``.

        ``config`` may tune a subset of the family's parameters (a user's own space); the
        rest keep the library's defaults. Every given value must lie within the hard limits.
        """
        tuned = SearchSpace(tuple(p for p in self.limits if p.name in config))
        unknown = [k for k in config if k not in self.limits]
        if unknown:
            raise SllmboError(
                f"{self.name} has no tunable parameter {unknown}",
                hint=f"tunable: {', '.join(self.limits.names)}",
            )
        return self.builder(tuned.validate(config), context)


def _lightgbm(config: Mapping[str, Any], ctx: BuildContext) -> Any:
    import lightgbm as lgb

    params = dict(
        config,
        subsample_freq=1,
        random_state=ctx.seed,
        n_jobs=ctx.n_jobs,
        deterministic=True,
        force_row_wise=True,
        verbosity=-1,
    )
    if ctx.task_type == "regression":
        return lgb.LGBMRegressor(**params)
    return lgb.LGBMClassifier(**params)


def _xgboost(config: Mapping[str, Any], ctx: BuildContext) -> Any:
    import xgboost as xgb

    params = dict(
        config,
        tree_method="hist",
        enable_categorical=True,
        max_cat_to_onehot=8,
        random_state=ctx.seed,
        n_jobs=ctx.n_jobs,
        verbosity=0,
    )
    if ctx.task_type == "regression":
        return xgb.XGBRegressor(**params)
    return xgb.XGBClassifier(**params)


def _random_forest(config: Mapping[str, Any], ctx: BuildContext) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OrdinalEncoder

    prep = ColumnTransformer(
        [
            ("num", SimpleImputer(strategy="median"), list(ctx.numeric_columns)),
            (
                "cat",
                OrdinalEncoder(
                    handle_unknown="use_encoded_value", unknown_value=-1, encoded_missing_value=-1
                ),
                list(ctx.categorical_columns),
            ),
        ]
    )
    model_cls = RandomForestRegressor if ctx.task_type == "regression" else RandomForestClassifier
    model = model_cls(**config, random_state=ctx.seed, n_jobs=ctx.n_jobs)
    return make_pipeline(prep, model)


def _mlp(config: Mapping[str, Any], ctx: BuildContext) -> Any:
    from sklearn.compose import ColumnTransformer, TransformedTargetRegressor
    from sklearn.impute import SimpleImputer
    from sklearn.neural_network import MLPClassifier, MLPRegressor
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [
            (
                "num",
                make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
                list(ctx.numeric_columns),
            ),
            (
                "cat",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"),
                    OneHotEncoder(handle_unknown="ignore", max_categories=32),
                ),
                list(ctx.categorical_columns),
            ),
        ]
    )
    settings = dict(config)
    width, depth = settings.pop("hidden_layer_size", 100), settings.pop("n_layers", 1)
    common = dict(
        settings,
        hidden_layer_sizes=(width,) * depth,
        early_stopping=True,
        max_iter=200,
        n_iter_no_change=10,
        random_state=ctx.seed,
    )
    if ctx.task_type == "regression":
        model = TransformedTargetRegressor(MLPRegressor(**common), transformer=StandardScaler())
    else:
        model = MLPClassifier(**common)
    return make_pipeline(prep, model)


def _boosting_space(
    *, leaves_or_depth: list[Any], extra: list[Any]
) -> tuple[SearchSpace, SearchSpace]:
    """Default and hard-limit spaces sharing the parameters every booster has."""
    default = [
        FloatParam("learning_rate", 0.005, 0.3, log=True),
        IntParam("n_estimators", 50, 1000, log=True),
        leaves_or_depth[0],
        FloatParam("subsample", 0.5, 1.0),
        FloatParam("colsample_bytree", 0.4, 1.0),
        FloatParam("reg_alpha", 1e-8, 10.0, log=True),
        FloatParam("reg_lambda", 1e-8, 10.0, log=True),
        extra[0],
    ]
    limits = [
        FloatParam("learning_rate", 1e-4, 1.0, log=True),
        IntParam("n_estimators", 10, 5000, log=True),
        leaves_or_depth[1],
        FloatParam("subsample", 0.1, 1.0),
        FloatParam("colsample_bytree", 0.1, 1.0),
        FloatParam("reg_alpha", 1e-10, 100.0, log=True),
        FloatParam("reg_lambda", 1e-10, 100.0, log=True),
        extra[1],
    ]
    return SearchSpace(tuple(default)), SearchSpace(tuple(limits))


_LGB_DEFAULT, _LGB_LIMITS = _boosting_space(
    leaves_or_depth=[IntParam("num_leaves", 8, 256, log=True), IntParam("num_leaves", 2, 4096, log=True)],
    extra=[
        IntParam("min_child_samples", 5, 100, log=True),
        IntParam("min_child_samples", 1, 1000, log=True),
    ],
)
_XGB_DEFAULT, _XGB_LIMITS = _boosting_space(
    leaves_or_depth=[IntParam("max_depth", 2, 12), IntParam("max_depth", 1, 20)],
    extra=[
        FloatParam("min_child_weight", 0.01, 20.0, log=True),
        FloatParam("min_child_weight", 1e-3, 100.0, log=True),
    ],
)

#: Every model family by name, in registration order: the one list the CLI, the evaluation
#: and the matrix read (``register_family`` adds one and refuses a taken name).
FAMILIES: Registry[ModelFamily] = Registry("model family")


def register_family(family: ModelFamily) -> ModelFamily:
    """Add ``family`` to ``FAMILIES``; a second family under a taken name is refused."""
    return FAMILIES.register(family.name, family)


register_family(ModelFamily(
    "lightgbm",
    "LightGBM gradient-boosted trees (leaf-wise growth)",
    _LGB_DEFAULT,
    _LGB_LIMITS,
    _lightgbm,
))

register_family(ModelFamily(
    "xgboost",
    "XGBoost gradient-boosted trees (hist, depth-wise growth)",
    _XGB_DEFAULT,
    _XGB_LIMITS,
    _xgboost,
))

register_family(ModelFamily(
    "random_forest",
    "scikit-learn random forest",
    SearchSpace(
        (
            IntParam("n_estimators", 50, 500, log=True),
            IntParam("max_depth", 3, 40, log=True),
            IntParam("min_samples_split", 2, 20),
            IntParam("min_samples_leaf", 1, 20, log=True),
            FloatParam("max_features", 0.1, 1.0),
            CategoricalParam("bootstrap", (True, False)),
        )
    ),
    SearchSpace(
        (
            IntParam("n_estimators", 10, 2000, log=True),
            IntParam("max_depth", 1, 100, log=True),
            IntParam("min_samples_split", 2, 100),
            IntParam("min_samples_leaf", 1, 100, log=True),
            FloatParam("max_features", 0.01, 1.0),
            CategoricalParam("bootstrap", (True, False)),
        )
    ),
    _random_forest,
))

register_family(ModelFamily(
    "mlp",
    "scikit-learn multi-layer perceptron (Adam, early stopping)",
    SearchSpace(
        (
            IntParam("hidden_layer_size", 16, 256, log=True),
            IntParam("n_layers", 1, 3),
            FloatParam("alpha", 1e-6, 1e-1, log=True),
            FloatParam("learning_rate_init", 1e-4, 1e-2, log=True),
            CategoricalParam("batch_size", (32, 64, 128, 256)),
            CategoricalParam("activation", ("relu", "tanh")),
        )
    ),
    SearchSpace(
        (
            IntParam("hidden_layer_size", 4, 1024, log=True),
            IntParam("n_layers", 1, 5),
            FloatParam("alpha", 1e-8, 10.0, log=True),
            FloatParam("learning_rate_init", 1e-5, 1e-1, log=True),
            CategoricalParam("batch_size", (32, 64, 128, 256)),
            CategoricalParam("activation", ("relu", "tanh")),
        )
    ),
    _mlp,
))

def _plain_class(family: str, task_type: TaskType) -> Any:
    """The library estimator class behind ``family`` for ``task_type``."""
    regression = task_type == "regression"
    if family == "lightgbm":
        import lightgbm as lgb

        return lgb.LGBMRegressor if regression else lgb.LGBMClassifier
    if family == "xgboost":
        import xgboost as xgb

        return xgb.XGBRegressor if regression else xgb.XGBClassifier
    if family == "random_forest":
        from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

        return RandomForestRegressor if regression else RandomForestClassifier
    from sklearn.neural_network import MLPClassifier, MLPRegressor

    return MLPRegressor if regression else MLPClassifier


def plain_arguments(family: ModelFamily, task_type: TaskType) -> frozenset[str]:
    """The constructor arguments of ``family``'s library estimator (``get_params`` keys)."""
    return _plain_arguments(family.name, task_type)


@functools.cache
def _plain_arguments(family: str, task_type: TaskType) -> frozenset[str]:
    return frozenset(_plain_class(family, task_type)().get_params(deep=False))


def plain_estimator(family: ModelFamily, task_type: TaskType, params: Mapping[str, Any]) -> Any:
    """The bare library estimator (``LGBMRegressor(**params)``, ...): none of the builder's
    preprocessing or fixed extras, as published protocols score it. ``params`` must be the
    library's own argument names (the MLP family's width/depth pair is not)."""
    import inspect

    cls = _plain_class(family.name, task_type)
    open_ended = any(  # LightGBM passes any of its native parameters on through **kwargs
        p.kind is inspect.Parameter.VAR_KEYWORD
        for p in inspect.signature(cls.__init__).parameters.values()
    )
    unknown = sorted(set(params) - plain_arguments(family, task_type))
    if unknown and not open_ended:
        raise SllmboError(
            f"the plain {family.name} estimator takes no argument {unknown}",
            hint="name the library's own constructor arguments in the space and fixed args",
        )
    return cls(**params)


ALIASES = {"lgbm": "lightgbm", "xgb": "xgboost", "rf": "random_forest", "randomforest": "random_forest"}


def get_family(name: str) -> ModelFamily:
    """The family called ``name`` (aliases: lgbm, xgb, rf); ``SllmboError`` if unknown."""
    key = ALIASES.get(name.lower().replace("-", "_"), name.lower().replace("-", "_"))
    if key not in FAMILIES:
        raise SllmboError(
            f"unknown model family '{name}'",
            hint=f"choose one of: {', '.join(FAMILIES)}",
        )
    return FAMILIES[key]


def library_defaults(family: ModelFamily, space: SearchSpace | None = None) -> dict[str, Any]:
    """The estimator's own default value of every parameter of ``space`` (the family's default
    space), read from the library (``get_params``; XGBoost leaves them None there, so they come
    from a fitted booster's config), never typed in. Values the library leaves open (None,
    LightGBM's -1, "sqrt") are left out; a caller clips the rest into its space."""
    space = space or family.default
    ctx = BuildContext(task_type="regression", categorical_columns=(), numeric_columns=(),
                       n_classes=None, seed=0)
    estimator = family.build({}, ctx)
    params = {k.rsplit("__", 1)[-1]: v for k, v in estimator.get_params(deep=True).items()}
    if family.name == "xgboost":
        params.update({k: v for k, v in _xgboost_defaults().items() if params.get(k) is None})
    if family.name == "mlp":  # the family tunes (width, depth) for hidden_layer_sizes
        sizes = params.get("hidden_layer_sizes") or (100,)
        params.update(hidden_layer_size=sizes[0], n_layers=len(sizes))
    out: dict[str, Any] = {}
    for p in space:
        value = params.get(p.name)
        if isinstance(p, CategoricalParam):
            if value in p.choices:
                out[p.name] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
            out[p.name] = value
    return out


@functools.cache
def _xgboost_defaults() -> dict[str, float]:
    """XGBoost's effective defaults: the training parameters of a booster fitted on a few
    random rows with nothing set, and its number of boosting rounds."""
    import json

    import numpy as np
    import xgboost as xgb

    rng = np.random.default_rng(0)
    model = xgb.XGBRegressor(n_jobs=1).fit(rng.random((32, 2)), rng.random(32))
    booster = model.get_booster()
    config = json.loads(booster.save_config())["learner"]["gradient_booster"]
    out: dict[str, float] = {"n_estimators": booster.num_boosted_rounds()}
    for name, value in config["tree_train_param"].items():
        try:
            out[name] = float(value)
        except ValueError:
            continue
    if "max_depth" in out:
        out["max_depth"] = int(out["max_depth"])
    return out
