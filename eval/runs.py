"""One run of the harness: a (task, family, method, seed) taken once to the largest budget.

What a run does is its method's (``sllmbo.eval.methods``); this module holds what every
method shares: the job and its settings, the run's log, and the three ways a method runs.

- ``run_defaults``: one evaluation of the library defaults.
- ``run_study``: an Optuna study in the evaluation's storage, written by ``sllmbo.tune.tune``,
  so a killed run resumes with its finished trials kept. Methods that do not sample enqueue
  their configurations and let the study run them.
- ``run_configs``: a selector's ranked configurations scored in order, no study.

Each smaller budget then reads the best configuration within the run's first ``b`` trials.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllmbo.eval.metrics import TrialRow, best_within_budget, cumulative
from sllmbo.eval.store import EvalStore

if TYPE_CHECKING:
    import optuna

    from sllmbo.core.families import ModelFamily
    from sllmbo.data import Task
    from sllmbo.inference.base import Backend
    from sllmbo.tune import LLMOptions


@dataclass(frozen=True)
class TaskRef:
    """A task by registry name, or a user's file with its target column."""

    name: str | None = None
    data: str | None = None
    target: str | None = None
    task_type: str | None = None

    @property
    def label(self) -> str:
        return self.name if self.name is not None else Path(str(self.data)).stem


@dataclass(frozen=True)
class RunJob:
    task: TaskRef
    family: str
    method: str
    seed: int

    @property
    def key(self) -> str:
        """The run's name: its study name and its row in the store."""
        return f"eval:{self.task.label}:{self.family}:{self.method}:s{self.seed}"


@dataclass(frozen=True)
class RunSettings:
    """What every run of one evaluation shares (picklable: it goes to worker processes)."""

    out_dir: str
    max_budget: int
    n_folds: int
    max_rows: int | None
    protocol: str | None
    llm: LLMOptions
    #: The fine-tuned adapter for the adapter methods; None: those methods are not run.
    adapter: str | None = None
    #: Where ``portfolio`` (and the seeded TPEs' portfolio seeds) come from: "committed"
    #: (``eval/portfolios``, the default suite's) or "matrix" (rebuilt greedily on the
    #: cross-evaluated training matrix, the zero-shot suite's).
    portfolio_source: str = "committed"
    #: (method, largest budget) where a method stops below ``max_budget``.
    budget_caps: tuple[tuple[str, int], ...] = ()

    def for_method(self, method: str) -> RunSettings:
        """These settings with ``max_budget`` at ``method``'s cap."""
        from dataclasses import replace

        cap = dict(self.budget_caps).get(method, self.max_budget)
        return replace(self, max_budget=min(cap, self.max_budget))

    @property
    def storage(self) -> str:
        return f"sqlite:///{Path(self.out_dir) / 'studies.db'}"

    @property
    def store_path(self) -> Path:
        return Path(self.out_dir) / "eval.sqlite"


@dataclass
class RunLog:
    """A finished run: its trials in order and, per budget, the configuration handed over."""

    key: str
    task: str
    family: str
    method: str
    seed: int
    metric: str
    direction: str
    trials: list[TrialRow]
    #: Budget -> test scores of the best configuration within that budget.
    test_scores: dict[int, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    #: The configurations the run was given from the matrix (a selector's list, a seeded
    #: TPE's seeds); a stored run whose inputs the grown matrix changes runs again.
    inputs: list[dict[str, Any]] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["test_scores"] = {str(b): s for b, s in self.test_scores.items()}
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunLog:
        fields = dict(data)
        fields["trials"] = [TrialRow(**t) for t in data["trials"]]
        fields["test_scores"] = {int(b): s for b, s in data["test_scores"].items()}
        return cls(**fields)

    def records(self, budgets: Sequence[int]) -> list[dict[str, Any]]:
        """One result record per budget (regret is filled in once every run is in)."""
        out = []
        for budget in budgets:
            best = best_within_budget(self.trials, budget, self.direction)
            costs = cumulative(self.trials, budget)
            # Fewer trials than the budget (defaults, few candidates): the last one counts.
            scores = self.test_scores.get(min(budget, len(self.trials)), {})
            out.append({
                "task": self.task, "family": self.family, "method": self.method,
                "budget": budget, "seed": self.seed, "metric": self.metric,
                "direction": self.direction,
                "cv_score": None if best is None else best.cv_score,
                "test_score": scores.get(self.metric),
                "test_scores": scores,
                "regret": None,
                "n_trials": min(budget, len(self.trials)),
                "wall_s": round(costs["wall_s"], 3), "fit_s": round(costs["fit_s"], 3),
                "llm_s": round(costs["llm_s"], 3), "llm_calls": int(costs["llm_calls"]),
                "llm_tokens": int(costs["llm_tokens"]),
                "config": None if best is None else dict(best.params),
            })
        return out


# ---------------------------------------------------------------- loading tasks and backends


@functools.lru_cache(maxsize=8)
def load_eval_task(ref: TaskRef, max_rows: int | None, protocol: str | None) -> Task:
    """The task as this evaluation scores it (row cap or a named protocol applied)."""
    from sllmbo.data.resolve import resolve_task

    if protocol == "sllmbo-paper":
        from sllmbo.eval.paper import paper_task

        return paper_task()
    task = resolve_task(ref.name, ref.data, ref.target, ref.task_type)
    return task.subsample(max_rows) if max_rows is not None else task


_BACKENDS: dict[tuple[Any, ...], Backend] = {}


def shared_backend(options: LLMOptions, adapter: str | None) -> Backend:
    """One backend per process and model (loading the model is the expensive part)."""
    from sllmbo.inference.factory import create_backend

    key = (options.backend, options.model_path, adapter, options.base_url)
    if key not in _BACKENDS:
        _BACKENDS[key] = create_backend(options.backend, llm=options.model_path,
                                        adapter=adapter, base_url=options.base_url)
    return _BACKENDS[key]


def close_backends() -> None:
    while _BACKENDS:
        _BACKENDS.popitem()[1].close()


# ----------------------------------------------------------------------------- one run


@dataclass
class RunContext:
    """What a method's run reads: the job, the settings at the method's budget, the store, and
    the task, family and protocol they name (loaded once, when first read)."""

    job: RunJob
    settings: RunSettings
    store: EvalStore

    @functools.cached_property
    def task(self) -> Task:
        return load_eval_task(self.job.task, self.settings.max_rows, self.settings.protocol)

    @functools.cached_property
    def family(self) -> ModelFamily:
        from sllmbo.core.families import get_family

        return get_family(self.job.family)

    @functools.cached_property
    def protocol(self) -> Any:
        """The named scoring protocol's per-family settings (``sllmbo-paper``), else None."""
        if self.settings.protocol == "sllmbo-paper":
            from sllmbo.eval.paper import paper_protocol

            return paper_protocol(self.family.name)
        return None

    @property
    def from_matrix(self) -> bool:
        """Whether pool configurations come from the cross-evaluated training matrix (the
        zero-shot suites) rather than the committed portfolios (the default suite)."""
        return self.settings.portfolio_source == "matrix"

    def eval_settings(self) -> Any:
        from sllmbo.core.objective import EvalSettings

        return EvalSettings(n_folds=self.settings.n_folds, seed=self.job.seed)

    def log(self, metric: str, direction: str, trials: list[TrialRow],
            notes: Sequence[str] = ()) -> RunLog:
        job = self.job
        return RunLog(job.key, job.task.label, self.family.name, job.method, job.seed, metric,
                      direction, trials, notes=list(notes))


def run_defaults(ctx: RunContext) -> RunLog:
    """The library's own defaults: one evaluation of the empty configuration."""
    from sllmbo.core.objective import METRICS, cross_validate, holdout_scores, objective_metric

    task, family, protocol, settings = ctx.task, ctx.family, ctx.protocol, ctx.eval_settings()
    cv = cross_validate(task, family, {}, settings, cache=ctx.store, protocol=protocol)
    metric = objective_metric(task, settings, protocol=protocol)
    log = ctx.log(metric, METRICS[metric],
                  [TrialRow(number=0, cv_score=cv.mean, params={}, fit_s=round(cv.seconds, 3))])
    log.test_scores = {1: holdout_scores(task, family, {}, settings, cache=ctx.store,
                                         protocol=protocol)}
    return log


def run_study(ctx: RunContext, *, notes: Sequence[str] = (),
              first_trial_cost: Mapping[str, Any] | None = None, **options: Any) -> RunLog:
    """An Optuna study written by ``sllmbo.tune.tune`` to the method's budget (``options``
    are ``tune``'s keywords: the sampler, enqueued configurations, a backend ...), then the
    test scores of the best configuration within each budget. ``first_trial_cost``: LLM work
    done before the study (a single-shot answer), charged to its first trial."""
    import optuna

    from sllmbo.core.objective import holdout_scores
    from sllmbo.core.storage import open_storage
    from sllmbo.tune import tune

    job, settings = ctx.job, ctx.settings
    kwargs: dict[str, Any] = dict(
        family=ctx.family.name, n_trials=settings.max_budget, storage=settings.storage,
        study_name=job.key, seed=job.seed, n_folds=settings.n_folds, score_test=False,
        progress=False, cache=ctx.store, llm=settings.llm, protocol=ctx.protocol,
    )
    kwargs.update(options)
    result = tune(ctx.task, **kwargs)
    study = optuna.load_study(study_name=job.key, storage=open_storage(settings.storage))
    trials = trial_rows(study)
    if first_trial_cost is not None and trials:
        trials[0] = _with_llm_cost(trials[0], first_trial_cost)
    elif result.llm is not None and trials:
        trials[0] = _with_llm_cost(trials[0], setup_cost(study))
    log = ctx.log(result.metric, result.direction, trials, notes)
    if result.llm is not None:  # e.g. every LLM trial fell back to TPE: said in the report
        log.notes.extend(result.llm.get("notes", []))
    eval_settings = ctx.eval_settings()
    for budget in range(1, settings.max_budget + 1):
        best = best_within_budget(trials, budget, result.direction)
        if best is not None:
            log.test_scores[budget] = holdout_scores(ctx.task, ctx.family, best.params,
                                                     eval_settings, cache=ctx.store,
                                                     protocol=ctx.protocol)
    return log


def empty_log(ctx: RunContext, notes: Sequence[str]) -> RunLog:
    """A run that holds no configuration (e.g. no valid LLM candidate), with why."""
    from sllmbo.core.objective import METRICS, objective_metric

    metric = objective_metric(ctx.task, ctx.eval_settings(), protocol=ctx.protocol)
    return ctx.log(metric, METRICS[metric], [], notes)


def run_configs(ctx: RunContext, configs: Sequence[Mapping[str, Any]],
                family: ModelFamily | None = None) -> RunLog:
    """A zero-shot selector's run: its ranked configurations scored by CV in order (cached
    fits are not repeated, across methods too), then the test score of the best within
    each budget. No study: nothing is sampled, and the score cache makes a rerun cheap.
    ``family``: the family with the limits the configurations need (default: the job's)."""
    from sllmbo.core.objective import (
        METRICS,
        _fit_errors,
        cross_validate,
        holdout_scores,
        objective_metric,
    )

    if ctx.settings.protocol is not None:
        from sllmbo.core.errors import SllmboError

        raise SllmboError(f"{ctx.job.method} selects from this project's pool and space; it "
                          f"has no configurations for the {ctx.settings.protocol} protocol")
    family = family or ctx.family
    eval_settings = ctx.eval_settings()
    metric = objective_metric(ctx.task, eval_settings)
    log = ctx.log(metric, METRICS[metric], [])
    budget = ctx.settings.max_budget
    if len(configs) < budget:
        log.notes.append(f"{len(configs)} configurations of {budget}: the selector's whole list")
    for number, config in enumerate(configs):
        try:
            cv = cross_validate(ctx.task, family, dict(config), eval_settings, cache=ctx.store)
        except _fit_errors() as err:
            log.notes.append(f"configuration {number} failed: {type(err).__name__}: {err}"[:300])
            continue
        log.trials.append(TrialRow(number=number, cv_score=cv.mean, params=dict(config),
                                   fit_s=round(cv.seconds, 3)))
    for b in range(1, len(log.trials) + 1):
        best = best_within_budget(log.trials, b, log.direction)
        if best is not None:
            log.test_scores[b] = holdout_scores(ctx.task, family, best.params, eval_settings,
                                                cache=ctx.store)
    return log


def library_defaults(task: Task, family: ModelFamily, protocol: Any) -> dict[str, Any]:
    """The library's defaults of every parameter tuned for ``task`` (the protocol's space if
    it has one); ``sllmbo.core.families.library_defaults`` reads them."""
    from sllmbo.core.families import library_defaults as read_defaults

    space = protocol.space if protocol is not None and protocol.space is not None \
        else family.default_space(task.task_type)
    return read_defaults(family, space)


def setup_cost(study: optuna.Study) -> dict[str, Any]:
    """LLM work done outside trials: the initializer and space adaptations."""
    from sllmbo.core import studyinfo

    parts = [study.user_attrs.get(studyinfo.INIT) or {}]
    parts += [v for k, v in study.user_attrs.items()
              if k.startswith(studyinfo.ADAPT_COST_PREFIX) and isinstance(v, dict)]
    return {
        "llm_s": sum(float(p.get("latency_s", 0.0)) for p in parts),
        "llm_calls": sum(int(p.get("calls", 0)) for p in parts),
        "llm_tokens": sum(int(p.get("prompt_tokens", 0)) + int(p.get("completion_tokens", 0))
                          for p in parts),
    }


def _with_llm_cost(trial: TrialRow, cost: Mapping[str, Any]) -> TrialRow:
    from dataclasses import replace

    return replace(trial, llm_s=trial.llm_s + float(cost.get("llm_s", 0.0)),
                   llm_calls=trial.llm_calls + int(cost.get("llm_calls", 0)),
                   llm_tokens=trial.llm_tokens + int(cost.get("llm_tokens", 0)))


def _lost_trial_numbers(trials: Sequence[optuna.trial.FrozenTrial]) -> set[int]:
    """Trials whose worker died: Optuna's heartbeat retried them, and each retry lists the
    trials it stands for in its retry history."""
    import warnings

    import optuna
    from optuna.storages import RetryFailedTrialCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return {n for t in trials for n in RetryFailedTrialCallback.retry_history(t)}


def trial_rows(study: optuna.Study) -> list[TrialRow]:
    """Completed trials in order, each carrying the time of failed trials before it.

    A trial whose worker died (killed, or the session ended) is failed by Optuna's heartbeat
    when the run resumes, and its span then covers the time nothing ran, hours perhaps: only
    the LLM time it recorded is carried.
    """
    from optuna.trial import TrialState

    from sllmbo.core import studyinfo
    from sllmbo.core.studyinfo import CACHE_HIT
    from sllmbo.samplers import attrs

    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    lost = _lost_trial_numbers(trials)
    rows: list[TrialRow] = []
    carried = 0.0
    for t in trials:
        ua = t.user_attrs
        duration = 0.0
        if t.datetime_start is not None and t.datetime_complete is not None:
            duration = (t.datetime_complete - t.datetime_start).total_seconds()
        fit_s = float(ua.get(studyinfo.FIT_SECONDS, 0.0))
        llm_s = float(ua.get(attrs.LATENCY_S, 0.0))
        fitted_now = 0.0 if ua.get(CACHE_HIT) else fit_s
        other = max(0.0, duration - fitted_now - llm_s)
        if t.state != TrialState.COMPLETE or t.value is None or not math.isfinite(t.value):
            carried += llm_s if t.number in lost else duration
            continue
        rows.append(TrialRow(
            number=t.number, cv_score=float(t.value), params=dict(t.params),
            fit_s=round(fit_s, 4), llm_s=round(llm_s, 4), other_s=round(other + carried, 4),
            llm_calls=int(ua.get(attrs.LLM_CALLS, 0)),
            llm_tokens=int(ua.get(attrs.PROMPT_TOKENS, 0))
            + int(ua.get(attrs.COMPLETION_TOKENS, 0)),
        ))
        carried = 0.0
    return rows
