"""``tune()``: the Python API behind ``sllmbo tune``.

``n_trials`` is the study's target of *completed* trials: run again with the same storage and
study name and only the missing trials run, so a killed run loses at most its running trial
(stale running trials are failed by Optuna's heartbeat and their parameters retried).
Several processes pointed at one RDB storage share the study.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllmbo.core import studyinfo
from sllmbo.core.errors import SllmboError, SllmboNote, check_output_file, check_seed
from sllmbo.core.families import get_family
from sllmbo.core.objective import (
    EvalSettings,
    ScoreCache,
    check_metric,
    make_objective,
)
from sllmbo.core.renamed import renamed_kwargs
from sllmbo.core.space import SearchSpace
from sllmbo.core.storage import GRACE_S, open_storage
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.resolve import build_card, load_space_file, resolve_task, task_spaces
from sllmbo.llm_options import LLMOptions
from sllmbo.samplers import registry
from sllmbo.samplers.registry import SamplerSpec
from sllmbo.studies import (
    OpenedStudy,
    count_states,
    enqueue_configs,
    initializer_owner,
    open_study,
    process_seed,
)
from sllmbo.tune_result import TuneResult, failure_causes, summarize

if TYPE_CHECKING:
    import optuna

    from sllmbo.core.protocol import EvalProtocol
    from sllmbo.data import Task
    from sllmbo.inference.base import Backend

def _needs_backend(spec: SamplerSpec, options: LLMOptions) -> bool:
    return (spec.needs_backend or options.space == "llm"
            or options.adapt_every > 0)


def _open_backend(options: LLMOptions) -> Backend:
    from sllmbo.inference.factory import create_backend

    return create_backend(options.backend, llm=options.model_path, adapter=options.adapter,
                          base_url=options.base_url)


def _check_backend_answers(backend: Backend) -> None:
    """Stop before any trial when the LLM cannot answer at all (README: a server that is
    down is one message and exit 2, not a run that silently turns into TPE). Reading
    ``fine_tuned`` makes a server backend list its models once (the answer is kept); an
    in-process backend loaded already."""
    from sllmbo.core.errors import BackendError

    try:
        backend.fine_tuned  # noqa: B018 - the property asks the server
    except BackendError as err:
        raise BackendError(f"the LLM cannot answer, so no trial ran: {err.message}",
                           hint=err.hint or "check --backend and --base-url") from None


def _initialize(opened: OpenedStudy, backend: Backend, card: TaskCard, limits: SearchSpace,
                default_space: SearchSpace, spec: SamplerSpec, options: LLMOptions, seed: int,
                n_trials: int) -> None:
    """On a fresh study: the LLM initializer's space and enqueued configurations, asked by one
    worker only (``studies.initializer_owner``). No more configurations than ``n_trials``:
    the rest would cost LLM time and never run."""
    from sllmbo.initializer import start

    study = opened.study
    n_configs = min(options.n_initial, n_trials) if spec.runs_initializer else 0
    if options.space != "llm" and n_configs == 0:
        return
    if not initializer_owner(opened, wait_s=max(300.0, 4 * (options.timeout or 0.0))):
        return
    init = start(mode=options.init, backend=backend, card=card, limits=limits,
                 default_space=default_space, n_configs=n_configs,
                 llm_space=options.space == "llm", seed=seed, timeout=options.timeout)
    if studyinfo.INIT in study.user_attrs:
        return  # a worker that took over from a creator presumed dead got there first
    for config in init.configs:  # before INIT: a worker waiting on it finds them enqueued
        study.enqueue_trial(config, user_attrs={studyinfo.SOURCE: "initial"})
    studyinfo.set_space(study, init.space, f"initial: {init.reason}", None)
    study.set_user_attr(studyinfo.INIT, init.to_user_attr())


def _callbacks(spec: SamplerSpec, backend: Backend | None, card: TaskCard, limits: SearchSpace,
               default_space: SearchSpace, options: LLMOptions, seed: int) -> list[Any]:
    from sllmbo.stopping import EarlyStopping

    callbacks: list[Any] = []
    patience = (options.patience if options.patience is not None
                else spec.patience)
    if patience:
        callbacks.append(EarlyStopping(patience=patience, min_delta=options.min_delta))
    if options.adapt_every and backend is not None:
        from sllmbo.adaptive import SpaceAdapter

        callbacks.append(SpaceAdapter(
            backend=backend, default_space=default_space,
            limits=limits, card=card, every=options.adapt_every,
            timeout=options.timeout, seed=seed,
        ))
    return callbacks


def _reconsider_stop(study: optuna.Study, callbacks: Sequence[Any]) -> None:
    """A stored early stop holds only while this run's stopping rule would stop too: rerun
    with the same options, a stopped study stays done (idempotent); with a larger
    ``--patience`` (or 0: off) it goes on."""
    from sllmbo.stopping import EarlyStopping

    if not study.user_attrs.get(studyinfo.STOP_REASON):
        return
    for stopper in (c for c in callbacks if isinstance(c, EarlyStopping)):
        if stopper.stale_trials(study)[0] >= stopper.patience:
            return
    study.set_user_attr(studyinfo.STOP_REASON, None)


def _with_source(objective: Callable[[optuna.Trial], float],
                 spec: SamplerSpec) -> Callable[[optuna.Trial], float]:
    """Label trials of the plain samplers; the LLM and pool samplers label their own."""
    if spec.labels_own_trials:
        return objective

    def labelled(trial: optuna.Trial) -> float:
        if studyinfo.SOURCE not in trial.user_attrs:
            trial.set_user_attr(studyinfo.SOURCE, spec.name)
        return objective(trial)

    return labelled


def optimize_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    callbacks: Sequence[Callable[[optuna.Study, Any], None]] = (),
    max_failures: int | None = None,
    poll_s: float = 1.0,
) -> None:
    """Run trials until the study holds ``target`` completed trials (counted in storage, so
    other workers' trials count too), a callback stops the study, or too many trials fail.

    Running trials count too (``MaxTrialsCallback`` on COMPLETE and RUNNING): counting only
    completed ones, two workers each start the one trial missing (``--n-trials 4`` ended
    with 5). Pruned and failed trials do not count. While others' running trials would reach
    the target this worker waits; a dead worker's trial is failed by its heartbeat and rerun.
    Two workers can still pass the callback's check at the same instant; of their two new
    trials, the later-numbered one finds the target held by the trials before it and is
    pruned unrun (``_surplus``)."""
    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import fail_stale_trials
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    max_failures = max_failures if max_failures is not None else max(10, target)
    stop_at_target = MaxTrialsCallback(target, states=(TrialState.COMPLETE, TrialState.RUNNING))
    failures_at_start = count_states(study)["fail"]
    first_trial = len(study.get_trials(deepcopy=False))
    waited = False
    while True:
        counts = count_states(study)
        if counts["complete"] >= target or study.user_attrs.get(studyinfo.STOP_REASON):
            return
        remaining = target - counts["complete"] - counts["running"]
        if remaining <= 0:  # the last trials run elsewhere: wait, then count again
            if not waited:
                n = counts["running"]
                warnings.warn(f"waiting for {n} trial{'s' * (n != 1)} running in another "
                              "worker (a dead worker's trial is run here once its heartbeat "
                              f"is {GRACE_S} s old)", SllmboNote, stacklevel=2)
                waited = True
            time.sleep(poll_s)
            with warnings.catch_warnings():  # Optuna marks the heartbeat API experimental
                warnings.simplefilter("ignore", ExperimentalWarning)
                fail_stale_trials(study)
            continue
        if counts["fail"] - failures_at_start >= max_failures:
            failed = counts["fail"] - failures_at_start
            raise SllmboError(f"{failed} trials failed in this run; stopping. "
                              f"{failure_causes(study, first_trial)}",
                              hint="fix the cause above (the data or the options) and run "
                              "the same command again")
        study.optimize(
            _unless_surplus(objective, target),
            n_trials=remaining,
            callbacks=[stop_at_target, *callbacks],
            gc_after_trial=False,
        )


def _unless_surplus(objective: Callable[[optuna.Trial], float],
                    target: int) -> Callable[[optuna.Trial], float]:
    """``objective``, except for a trial numbered after ``target`` completed or running
    trials: that one stops this worker and is pruned before it runs."""
    import optuna
    from optuna.trial import TrialState

    def guarded(trial: optuna.Trial) -> float:
        ahead = trial.study.get_trials(deepcopy=False,
                                       states=(TrialState.COMPLETE, TrialState.RUNNING))
        if sum(t.number < trial.number for t in ahead) >= target:
            trial.study.stop()
            raise optuna.TrialPruned(f"the {target} trials before it reach the target")
        return objective(trial)

    return guarded


def check_folds(task: Task, settings: EvalSettings) -> None:
    """Split once before any trial: a fold count the data cannot fill (more folds than rows,
    or than the largest class has members) would otherwise fail every trial."""
    from sllmbo.core.objective import splitter

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # a class rarer than n_folds: it runs
            for _ in splitter(task, settings).split(task.X_train, task.y_train):
                pass
    except ValueError as err:
        raise SllmboError(
            f"{settings.n_folds}-fold cross-validation cannot split the {len(task.y_train)} "
            f"training rows of task '{task.name}': {err}",
            hint="pass a smaller --n-folds, or use more rows",
        ) from None


@renamed_kwargs(model="family")
def tune(
    task: str | Task | None = None,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    task_type: str | None = None,
    family: str = "lightgbm",
    sampler: str = "tpe",
    n_trials: int = 30,
    storage: str | None = None,
    study_name: str | None = None,
    seed: int = 0,
    n_folds: int = 5,
    n_jobs: int = 1,
    metric: str | None = None,
    max_rows: int | None = None,
    score_test: bool = True,
    output: str | Path | None = None,
    progress: bool = True,
    space_file: str | Path | None = None,
    llm: LLMOptions | None = None,
    backend: Backend | None = None,
    enqueue: Sequence[Mapping[str, Any]] = (),
    enqueue_source: str = "enqueued",
    cache: ScoreCache | None = None,
    protocol: EvalProtocol | None = None,
    sampler_factory: Callable[..., optuna.samplers.BaseSampler] | None = None,
) -> TuneResult:
    """Tune the ML model ``family`` (``sllmbo.core.families``: lightgbm, xgboost, ...) on a
    task and refit the best configuration on the test split. (``family`` was ``model=``, still
    taken with a ``FutureWarning``.)

    ``max_rows`` caps the training split to a fixed subsample (seed 0, stated in the card's
    ``full_train_rows``): corpus collection uses it to keep a trial near a second.
    ``sampler`` "llm" / "llm-tpe" run the SLLMBO loop with ``backend`` (default: built from
    ``llm``, i.e. the embedded model in-process); ``llm`` also sets the initializer, early
    stopping and space adaptation.
    ``task`` is a registered task's name or an already loaded ``Task``.
    ``enqueue``: configurations tried first, on a fresh study only (Optuna's
    ``enqueue_trial``; values clipped into the space, labelled ``enqueue_source``): the
    evaluation's portfolio and seeded TPE. ``cache``: scores of configurations seen before
    (``sllmbo.core.objective.ScoreCache``) are reused instead of refitted.
    ``protocol`` (``sllmbo.core.protocol.EvalProtocol``): how configurations are scored (split,
    folds, metric, estimator, space) where it says so; it wins over ``n_folds`` and, when it
    sets one, over ``seed`` for the folds; ``seed`` still seeds the sampler. Recorded in the
    study's run config.

    ``sampler_factory``: builds the study's sampler in place of ``build_sampler`` (the
    evaluation's configured baselines: a TPE whose random start ends with the enqueued
    configurations, Optuna's GP, SMAC), called with ``build_sampler``'s keywords (``seed``,
    ``space``, ``card``, ``backend`` and the options the sampler's registry entry takes);
    ``sampler`` still names it in the run config and labels its trials. A name the sampler
    registry does not hold has a plain sampler's facts (no LLM, no initializer, no early stop).

    >>> result = tune("diabetes", family="lightgbm", sampler="tpe", n_trials=20)  # doctest: +SKIP
    """
    import optuna

    if n_trials < 1:
        raise SllmboError(f"--n-trials must be >= 1, got {n_trials}")
    if output is not None:
        check_output_file(output, "--output")
    check_seed(seed)
    if n_folds < 2:
        raise SllmboError(f"--n-folds must be >= 2, got {n_folds}")
    if n_jobs < 1 and n_jobs != -1:
        raise SllmboError(f"--n-jobs must be >= 1 (or -1: every core), got {n_jobs}")
    from sllmbo.samplers import build_sampler

    # An unknown name stops here, before any data is loaded; a caller's own sampler
    # (``sampler_factory``) under a name of its own has a plain sampler's facts.
    spec = (registry.get(sampler) if sampler_factory is None or sampler in registry.SAMPLERS
            else SamplerSpec(name=sampler, help="the caller's sampler", builder=""))
    options = llm or LLMOptions()
    started = time.perf_counter()
    if max_rows is not None and max_rows < 20:
        raise SllmboError(f"--max-rows must be >= 20, got {max_rows}")
    if not isinstance(enqueue_source, str) or not enqueue_source.strip():
        raise SllmboError(f"enqueue_source must be a non-empty label, got {enqueue_source!r}")
    if protocol is not None and metric is not None and protocol.metric not in (None, metric):
        raise SllmboError(
            f"--metric {metric} contradicts protocol '{protocol.name}' (metric "
            f"{protocol.metric})",
            hint="leave --metric out: the protocol sets it",
        )
    loaded = resolve_task(task, data, target, task_type)
    if protocol is not None:
        loaded = protocol.apply(loaded)
    if max_rows is not None:
        loaded = loaded.subsample(max_rows)
    family = get_family(family)
    try:
        settings = EvalSettings(n_folds=n_folds, seed=seed, n_jobs=n_jobs, metric=metric)
    except ValueError as err:
        raise SllmboError(str(err)) from None
    if protocol is not None:
        protocol.check(loaded, family)
        settings = protocol.resolve(settings)
    if settings.metric is not None:
        check_metric(settings.metric, loaded.task_type)
    check_folds(loaded, settings)
    card = build_card(loaded, family, settings)
    if not enqueue and spec.warm_start:
        enqueue, enqueue_source = spec.warm_configs(family.name, card), "portfolio"
    name = study_name or f"{loaded.name}-{family.name}-{sampler}-seed{seed}"

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_interrupts()
    default_space, limits = task_spaces(loaded, family, protocol)
    if space_file is not None:
        default_space, notes = load_space_file(space_file).fitted_within(limits)
        for note in notes:
            warnings.warn(f"--space-file {space_file}: {note}", SllmboNote, stacklevel=2)
    opened_storage = open_storage(storage)
    owned = backend is None and _needs_backend(spec, options)
    if owned:
        backend = _open_backend(options)
    try:
        if owned:
            _check_backend_answers(backend)  # type: ignore[arg-type]
        opened = open_study(opened_storage, name, card)  # the first write of the run
        study = opened.study
        run_config: dict[str, Any] = {
            "sampler": sampler, "n_trials": n_trials, "seed": seed,
            "n_folds": settings.n_folds, "space": options.space,
            "backend": options.backend if backend is None else backend.name,
        }
        if protocol is not None:
            run_config["protocol"] = protocol.to_dict()
        if enqueue:
            run_config["enqueue"] = {"n": len(enqueue), "source": enqueue_source}
        study.set_user_attr(studyinfo.RUN_CONFIG, run_config)
        worker_seed = process_seed(seed, opened)
        if backend is not None:
            _initialize(opened, backend, card, limits, default_space, spec, options, seed,
                        n_trials)
        # Once: by the creator, or on a resume of a study killed before it enqueued them
        # (a second worker racing the creator is absorbed by skip_if_exists).
        if enqueue and studyinfo.ENQUEUED not in study.user_attrs and (
                opened.created or not study.get_trials(deepcopy=False)):
            study.set_user_attr(studyinfo.ENQUEUED, {"n": len(enqueue), "source": enqueue_source})
            repairs = enqueue_configs(study, enqueue, studyinfo.get_space(study, default_space),
                                      enqueue_source)
            study.set_user_attr(studyinfo.ENQUEUED, {"n": len(enqueue), "source": enqueue_source,
                                                     "repairs": repairs})
        sampler_kwargs = dict(
            seed=worker_seed, card=card,
            space=studyinfo.get_space(study, default_space) if spec.uses_study_space
            else default_space,
            backend=backend if spec.needs_backend else None, **spec.options_from(options))
        study.sampler = (sampler_factory(**sampler_kwargs) if sampler_factory is not None
                         else build_sampler(sampler, **sampler_kwargs))
        objective = _with_source(
            make_objective(loaded, family, default_space, settings, cache=cache), spec)
        callbacks = _callbacks(spec, backend, card, limits, default_space, options,
                               worker_seed)
        _reconsider_stop(study, callbacks)

        from sllmbo.progress import TrialProgress

        with TrialProgress(study, target=n_trials, enabled=progress) as bar:
            optimize_until(study, objective, n_trials, callbacks=[bar.callback, *callbacks])
    finally:
        if owned and backend is not None:
            backend.close()

    result = summarize(study, loaded, family, settings, sampler, storage, n_trials, card,
                       score_test=score_test, cache=cache)
    if backend is not None or spec.needs_backend:
        from sllmbo.summary import summarize_study

        result.llm = summarize_study(study).to_dict()
    result.seconds = round(time.perf_counter() - started, 2)
    if output is not None:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(result.to_json() + "\n")
    return result


#: Optuna's two warnings for a trial whose objective returned NaN: ours does that after
#: recording the fit error, which the result (or the message that stops the run) names.
_NAN_TRIAL_WARNINGS = ("failed with value nan", "The value nan is not acceptable")


class _NoInterruptTraceback(logging.Filter):
    """Drop Optuna's 'Trial N failed ... KeyboardInterrupt' warning and its traceback: Ctrl-C
    is how a user stops a run, and the CLI says how to resume it. Drop the two lines per
    failed fit too: the cause is reported once, not two parameter dumps per trial."""

    def filter(self, record: logging.LogRecord) -> bool:
        info = record.exc_info
        if info and info[0] is KeyboardInterrupt:
            return False
        message = record.getMessage()
        return "KeyboardInterrupt" not in message and not any(
            words in message for words in _NAN_TRIAL_WARNINGS)


def _quiet_interrupts() -> None:
    import optuna

    # Handler filters see the records of Optuna's child loggers too (logger filters do not).
    for handler in optuna.logging.get_logger("optuna").handlers:
        if not any(isinstance(f, _NoInterruptTraceback) for f in handler.filters):
            handler.addFilter(_NoInterruptTraceback())
