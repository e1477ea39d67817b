"""One run of the harness: a (task, family, method, seed) taken once to the largest budget.

Every method except ``defaults`` is an Optuna study in the evaluation's storage, written by
``sllmbo.tune.tune``, so a killed run resumes with its finished trials kept. Methods that do
not sample (portfolio, single-shot) enqueue their configurations and let the study run them;
the seeded TPE enqueues the library defaults and the portfolio's first configuration. Each
smaller budget then reads the best configuration within the run's first ``b`` trials.
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

    from sllmbo.data import Task
    from sllmbo.families import ModelFamily
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
    from sllmbo.resolve import resolve_task

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
        _BACKENDS[key] = create_backend(options.backend, model=options.model_path,
                                        adapter=adapter, base_url=options.base_url)
    return _BACKENDS[key]


def close_backends() -> None:
    while _BACKENDS:
        _BACKENDS.popitem()[1].close()


# ----------------------------------------------------------------------------- one run


def execute(job: RunJob, settings: RunSettings) -> RunLog:
    """Run ``job`` to ``settings.max_budget`` trials (resuming what a killed run left) and
    score the best configuration of each budget on the test split. Stored when done."""
    settings = settings.for_method(job.method)
    store = EvalStore(settings.store_path)
    done = store.run(job.key)
    if done is not None:
        return RunLog.from_dict(done)
    task = load_eval_task(job.task, settings.max_rows, settings.protocol)
    from sllmbo.families import get_family

    family = get_family(job.family)
    inputs = matrix_inputs(job, settings)
    if job.method == "defaults":
        log = _run_defaults(job, task, family, settings, store)
    elif job.method in POOL_METHODS or (job.method == "portfolio"
                                        and settings.portfolio_source == "matrix"):
        log = _run_configs(job, task, family, settings, store)
    else:
        log = _run_study(job, task, family, settings, store)
    log.inputs = inputs
    store.put_run(job.key, log.to_dict())
    return log


#: Methods whose configurations come from the training matrix in the zero-shot suite.
MATRIX_METHODS: tuple[str, ...] = ("knn", "portfolio", "tpe-seeded", "tpe-seeded-portfolio",
                                   "feedback", "llm-feedback")


def matrix_inputs(job: RunJob, settings: RunSettings) -> list[dict[str, Any]] | None:
    """What ``job`` takes from the training matrix (None: nothing): its selector's list or
    its TPE seeds, as this matrix gives them now."""
    if settings.portfolio_source != "matrix" or job.method not in MATRIX_METHODS:
        return None
    from sllmbo.families import get_family

    task = load_eval_task(job.task, settings.max_rows, settings.protocol)
    family = get_family(job.family)
    if job.method == "tpe-seeded":
        return seeded_configs(task, family, None, "matrix")
    if job.method == "tpe-seeded-portfolio":
        return _portfolio(task, family, settings, SEEDED_PORTFOLIO_SIZE)
    if job.method in ("feedback", "llm-feedback"):  # their start; the neighbours follow it
        from sllmbo.data.pool_select import FEEDBACK_START

        return _portfolio(task, family, settings, FEEDBACK_START)
    return ranked_configs(job, task, family, settings.max_budget)


def is_stale(job: RunJob, settings: RunSettings, stored: Mapping[str, Any]) -> bool:
    """Whether a stored run was given other configurations than the matrix gives now."""
    if settings.portfolio_source != "matrix" or job.method not in MATRIX_METHODS:
        return False
    return stored.get("inputs") != matrix_inputs(job, settings)


def _protocol(settings: RunSettings, family: str) -> Any:
    if settings.protocol == "sllmbo-paper":
        from sllmbo.eval.paper import paper_protocol

        return paper_protocol(family)
    return None


def _eval_settings(settings: RunSettings, seed: int) -> Any:
    from sllmbo.objective import EvalSettings

    return EvalSettings(n_folds=settings.n_folds, seed=seed)


def _run_defaults(job: RunJob, task: Task, family: ModelFamily, settings: RunSettings,
                  store: EvalStore) -> RunLog:
    """The library's own defaults: one evaluation of the empty configuration."""
    from sllmbo.objective import METRICS, cross_validate, holdout_scores, objective_metric

    protocol = _protocol(settings, family.name)
    eval_settings = _eval_settings(settings, job.seed)
    cv = cross_validate(task, family, {}, eval_settings, cache=store, protocol=protocol)
    metric = objective_metric(task, eval_settings, protocol=protocol)
    trial = TrialRow(number=0, cv_score=cv.mean, params={}, fit_s=round(cv.seconds, 3))
    log = RunLog(job.key, job.task.label, family.name, job.method, job.seed, metric,
                 METRICS[metric], [trial])
    scores = holdout_scores(task, family, {}, eval_settings, cache=store,
                            protocol=protocol)
    log.test_scores = {1: scores}
    return log


def _run_study(job: RunJob, task: Task, family: ModelFamily, settings: RunSettings,
               store: EvalStore) -> RunLog:
    from sllmbo.objective import holdout_scores
    from sllmbo.storage import open_storage
    from sllmbo.tune import tune

    protocol = _protocol(settings, family.name)
    kwargs: dict[str, Any] = dict(
        model=family.name, n_trials=settings.max_budget, storage=settings.storage,
        study_name=job.key, seed=job.seed, n_folds=settings.n_folds, score_test=False,
        progress=False, cache=store, llm=settings.llm, protocol=protocol,
    )
    notes: list[str] = []
    method = job.method
    if method in ("random", "tpe", "feedback"):
        kwargs["sampler"] = method
    elif method == "llm-feedback":
        kwargs.update(sampler=method, backend=shared_backend(settings.llm, settings.adapter))
    elif method == "tpe-seeded":
        kwargs.update(sampler="tpe", enqueue=seeded_configs(task, family, protocol,
                                                            settings.portfolio_source),
                      enqueue_source="seeded")
    elif method == "tpe-seeded-portfolio":
        seeds = _portfolio(task, family, settings, SEEDED_PORTFOLIO_SIZE)
        kwargs.update(sampler="tpe", enqueue=seeds, enqueue_source="portfolio")
    elif method == "portfolio":
        from sllmbo.eval.portfolio import load_portfolio

        configs = load_portfolio(family.name)[: settings.max_budget]
        kwargs.update(sampler="tpe", n_trials=len(configs), enqueue=configs,
                      enqueue_source="portfolio")
    elif method.startswith("single-shot"):
        configs, cost = _single_shot(job, task, family, settings, store, protocol)
        if len(configs) < settings.max_budget:
            notes.append(f"{len(configs)} valid distinct candidates of {settings.max_budget} "
                         "asked for")
        kwargs.update(sampler="tpe", n_trials=max(1, len(configs)), enqueue=configs,
                      enqueue_source="single-shot")
        if not configs:
            notes.append("no valid candidate: the run holds no configuration")
            return _empty_log(job, task, family, settings, protocol, notes)
    else:  # llm, llm-tpe and their -base twins
        base = method.endswith("-base")
        kwargs["sampler"] = method.removesuffix("-base")
        adapter = None if base else settings.adapter
        kwargs["backend"] = shared_backend(settings.llm, adapter)

    result = tune(task, **kwargs)
    import optuna

    study = optuna.load_study(study_name=job.key, storage=open_storage(settings.storage))
    trials = trial_rows(study)
    if method.startswith("single-shot") and trials:
        trials[0] = _with_llm_cost(trials[0], cost)
    elif result.llm is not None and trials:
        trials[0] = _with_llm_cost(trials[0], setup_cost(study))
    if result.llm is not None:  # e.g. every LLM trial fell back to TPE: said in the report
        notes.extend(result.llm.get("notes", []))
    log = RunLog(job.key, job.task.label, family.name, method, job.seed, result.metric,
                 result.direction, trials, notes=notes)
    eval_settings = _eval_settings(settings, job.seed)
    for budget in range(1, settings.max_budget + 1):
        best = best_within_budget(trials, budget, result.direction)
        if best is not None:
            log.test_scores[budget] = holdout_scores(task, family, best.params, eval_settings,
                                                     cache=store, protocol=protocol)
    return log


def _empty_log(job: RunJob, task: Task, family: ModelFamily, settings: RunSettings,
               protocol: Any, notes: list[str]) -> RunLog:
    from sllmbo.objective import METRICS, objective_metric

    metric = objective_metric(task, _eval_settings(settings, job.seed),
                              protocol=protocol)
    return RunLog(job.key, job.task.label, family.name, job.method, job.seed, metric,
                  METRICS[metric], [], notes=notes)


def seeded_configs(task: Task, family: ModelFamily, protocol: Any,
                   portfolio_source: str = "committed") -> list[dict[str, Any]]:
    """TPE's seeds: the library defaults (as values of the tuned space) and the portfolio's
    first configuration."""
    configs = [library_defaults(task, family, protocol)]
    if protocol is None:  # the portfolio lives in the family's default space
        configs += _portfolio_from(portfolio_source, task, family, 1)
    return configs


#: Methods that try a ranked list of configurations chosen without fitting (the zero-shot
#: selectors): each is scored by CV, and budget b hands over the best of the first b.
POOL_METHODS: tuple[str, ...] = ("knn", "flaml-zeroshot", "oracle-pool")
#: ``tpe-seeded-portfolio``: TPE after this many of the portfolio's first configurations.
SEEDED_PORTFOLIO_SIZE = 3


def _portfolio(task: Task, family: ModelFamily, settings: RunSettings,
               size: int) -> list[dict[str, Any]]:
    return _portfolio_from(settings.portfolio_source, task, family, size)


def _portfolio_from(source: str, task: Task, family: ModelFamily,
                    size: int) -> list[dict[str, Any]]:
    if source == "matrix":
        from sllmbo.eval.zeroshot_baselines import load_selectors

        return load_selectors().portfolio(task.task_type, family.name, size)
    from sllmbo.eval.portfolio import load_portfolio

    return [dict(c) for c in load_portfolio(family.name)[:size]]


def ranked_configs(job: RunJob, task: Task, family: ModelFamily,
                   budget: int) -> list[dict[str, Any]]:
    """The configurations a zero-shot selector tries on ``task``, first ``budget``."""
    from sllmbo.eval.zeroshot_baselines import load_selectors

    if job.method == "flaml-zeroshot":
        from sllmbo.eval.flaml_zeroshot import flaml_configs

        return flaml_configs(task, family, k=None)[:budget]
    if job.method == "oracle-pool":
        return load_selectors().oracle(task, family.name)
    if job.method == "knn":
        return load_selectors().knn(task, family.name, budget)
    return _portfolio_from("matrix", task, family, budget)


def _run_configs(job: RunJob, task: Task, family: ModelFamily, settings: RunSettings,
                 store: EvalStore) -> RunLog:
    """A zero-shot selector's run: its ranked configurations scored by CV in order (cached
    fits are not repeated, across methods too), then the test score of the best within
    each budget. No study: nothing is sampled, and the score cache makes a rerun cheap."""
    from sllmbo.objective import METRICS, cross_validate, holdout_scores, objective_metric

    if settings.protocol is not None:
        from sllmbo.errors import SllmboError

        raise SllmboError(f"{job.method} selects from this project's pool and space; it has "
                          f"no configurations for the {settings.protocol} protocol")
    if job.method == "flaml-zeroshot":
        from sllmbo.eval.flaml_zeroshot import flaml_family

        family = flaml_family(family)
    eval_settings = _eval_settings(settings, job.seed)
    configs = ranked_configs(job, task, family, settings.max_budget)
    metric = objective_metric(task, eval_settings)
    log = RunLog(job.key, job.task.label, family.name, job.method, job.seed, metric,
                 METRICS[metric], [])
    if len(configs) < settings.max_budget:
        log.notes.append(f"{len(configs)} configurations of {settings.max_budget}: the "
                         "selector's whole list")
    from sllmbo.objective import _fit_errors

    for number, config in enumerate(configs):
        try:
            cv = cross_validate(task, family, config, eval_settings, cache=store)
        except _fit_errors() as err:
            log.notes.append(f"configuration {number} failed: {type(err).__name__}: {err}"[:300])
            continue
        log.trials.append(TrialRow(number=number, cv_score=cv.mean, params=config,
                                   fit_s=round(cv.seconds, 3)))
    for budget in range(1, len(log.trials) + 1):
        best = best_within_budget(log.trials, budget, log.direction)
        if best is not None:
            log.test_scores[budget] = holdout_scores(task, family, best.params, eval_settings,
                                                     cache=store)
    return log


def library_defaults(task: Task, family: ModelFamily, protocol: Any) -> dict[str, Any]:
    """The library's defaults of every parameter tuned for ``task`` (the protocol's space if
    it has one); ``sllmbo.families.library_defaults`` reads them."""
    from sllmbo.families import library_defaults as read_defaults

    space = protocol.space if protocol is not None and protocol.space is not None \
        else family.default_space(task.task_type)
    return read_defaults(family, space)


def _single_shot(job: RunJob, task: Task, family: ModelFamily, settings: RunSettings,
                 store: EvalStore, protocol: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """One batched inference for ``max_budget`` candidates; its answer is stored, so a
    resumed run asks nothing again."""
    from sllmbo.recommend import DECODES, recommend_with

    key = f"{job.key}:answers"
    stored = store.run(key)
    method = job.method.removesuffix("-base")
    scoring = method == "single-shot-score"
    decode = {"single-shot-score": "score", "single-shot-pick": "pick"}.get(method, DECODES[0])
    # Answers stored before the consensus decode (greedy first) are asked again.
    if stored is not None and stored.get("decode") == decode:
        return stored["configs"], stored["cost"]
    from sllmbo.resolve import build_card

    eval_settings = _eval_settings(settings, job.seed)
    card = build_card(task, family, eval_settings, protocol=protocol)
    space = protocol.space if protocol is not None and protocol.space is not None \
        else family.default_space(task.task_type)
    adapter = None if job.method.endswith("-base") else settings.adapter
    backend = shared_backend(settings.llm, adapter)
    candidates = None
    if scoring:
        from sllmbo.scoring import pool_candidates

        candidates = pool_candidates(family.name, space)
    rec = recommend_with(backend, card, space, settings.max_budget, seed=job.seed,
                         temperature=settings.llm.temperature,
                         max_tokens=settings.llm.max_tokens, decode=decode,
                         candidates=candidates)
    cost = {"llm_s": rec.latency_s, "llm_calls": rec.requests,
            "llm_tokens": rec.prompt_tokens + rec.completion_tokens,
            "rejected": rec.rejected, "consensus_of": rec.consensus_of}
    store.put_run(key, {"configs": rec.configs, "cost": cost, "decode": decode})
    return rec.configs, cost


def setup_cost(study: optuna.Study) -> dict[str, Any]:
    """LLM work done outside trials: the initializer and space adaptations."""
    from sllmbo import studyinfo

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

    from sllmbo import studyinfo
    from sllmbo.samplers import attrs
    from sllmbo.studyinfo import CACHE_HIT

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
