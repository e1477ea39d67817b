"""``tune()``: the Python API behind ``sllmbo tune``.

``n_trials`` is the study's target of *completed* trials: run again with the same storage and
study name and only the missing trials run, so a killed run loses at most its running trial
(stale running trials are failed by Optuna's heartbeat and their parameters retried).
Several processes pointed at one RDB storage share the study.
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllmbo import studyinfo
from sllmbo.errors import SllmboError, SllmboNote, check_output_file, check_seed
from sllmbo.families import ModelFamily, get_family
from sllmbo.objective import (
    EvalSettings,
    ScoreCache,
    check_metric,
    holdout_scores,
    make_objective,
)
from sllmbo.resolve import build_card, load_space_file, resolve_task, task_spaces
from sllmbo.space import SearchSpace
from sllmbo.storage import mask_url, open_storage
from sllmbo.studies import (
    OpenedStudy,
    count_states,
    enqueue_configs,
    initializer_owner,
    open_study,
    process_seed,
)
from sllmbo.taskcard import TaskCard

if TYPE_CHECKING:
    import optuna

    from sllmbo.data import Task
    from sllmbo.inference.base import Backend
    from sllmbo.protocol import EvalProtocol

LLM_SAMPLERS = ("llm", "llm-tpe")
#: Samplers that label their own trials' sources (the LLM ones and the pool ones).
SELF_LABELLING = (*LLM_SAMPLERS, "feedback", "llm-feedback")
SPACE_MODES = ("default", "llm")


@dataclass
class TuneResult:
    """What a tuning run produced; ``to_json`` is the file ``--output`` writes."""

    task: str
    model: str
    sampler: str
    study: str
    storage: str | None
    metric: str
    direction: str
    n_trials_target: int
    n_complete: int
    n_failed: int
    best_value: float | None
    best_params: dict[str, Any] | None
    best_trial: int | None
    test_scores: dict[str, float] = field(default_factory=dict)
    stop_reason: str | None = None
    #: Why trials failed (the most common fit error), when any did.
    failures: str | None = None
    seconds: float = 0.0
    task_card: dict[str, Any] = field(default_factory=dict)
    #: The LLM loop's accounting (``sllmbo.summary.LoopSummary.to_dict``); None without LLM.
    llm: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=False)


@dataclass(frozen=True)
class LLMOptions:
    """How the LLM part of the loop runs (ignored by tpe/random unless ``space == "llm"``).

    ``patience``: completed trials without improvement before stopping; None picks the
    paper's default for the LLM samplers (15 llm, 5 llm-tpe) and no stopping for tpe/random;
    0 turns stopping off. ``adapt_every``: completed trials between LLM space adaptations
    (0: off). ``n_initial``: initial configurations enqueued on a fresh study; ``init``
    where they come from (``sllmbo.initializer.init_source``: auto picks the recommender for
    a fine-tuned backend, the paper's initializer otherwise).
    """

    backend: str = "auto"
    model_path: str | None = None
    adapter: str | None = "default"  # the shipped adapter (embedded model); None: base model
    base_url: str | None = None
    space: str = "default"
    n_initial: int = 5
    init: str = "auto"
    patience: int | None = None
    min_delta: float = 0.0
    adapt_every: int = 0
    p_llm: float = 0.5
    adaptive_p: bool = False
    timeout: float | None = None
    temperature: float = 0.7
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.space not in SPACE_MODES:
            raise SllmboError(f"--space must be one of {SPACE_MODES}, got '{self.space}'")
        from sllmbo.initializer import INIT_MODES

        if self.init not in INIT_MODES:
            raise SllmboError(f"--init must be one of {', '.join(INIT_MODES)}, got "
                              f"'{self.init}'")
        for name in ("n_initial", "adapt_every"):
            if getattr(self, name) < 0:
                raise SllmboError(f"--{name.replace('_', '-')} must be >= 0, "
                                  f"got {getattr(self, name)}")
        if self.patience is not None and self.patience < 0:
            raise SllmboError(f"--patience must be >= 0, got {self.patience}")
        if not 0 <= self.p_llm <= 1:
            raise SllmboError(f"--p-llm must be in [0, 1], got {self.p_llm}")
        if self.adaptive_p and not 0 < self.p_llm < 1:
            raise SllmboError(f"--adaptive-p needs 0 < --p-llm < 1 (a share it can move), "
                              f"got {self.p_llm}")
        if not (self.min_delta >= 0 and math.isfinite(self.min_delta)):
            raise SllmboError(f"--min-delta must be a finite number >= 0, got {self.min_delta}")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise SllmboError(f"--llm-timeout must be > 0 seconds, got {self.timeout}",
                              hint="leave it out to wait as long as the backend does")
        if self.max_tokens < 1:
            raise SllmboError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise SllmboError(f"--temperature must be >= 0, got {self.temperature}")


def _needs_backend(sampler: str, options: LLMOptions) -> bool:
    return (sampler in (*LLM_SAMPLERS, "llm-feedback") or options.space == "llm"
            or options.adapt_every > 0)


def _open_backend(options: LLMOptions) -> Backend:
    from sllmbo.inference.factory import create_backend

    return create_backend(options.backend, model=options.model_path, adapter=options.adapter,
                          base_url=options.base_url)


def _check_backend_answers(backend: Backend) -> None:
    """Stop before any trial when the LLM cannot answer at all (README: a server that is
    down is one message and exit 2, not a run that silently turns into TPE). Reading
    ``fine_tuned`` makes a server backend list its models once (the answer is kept); an
    in-process backend loaded already."""
    from sllmbo.errors import BackendError

    try:
        backend.fine_tuned  # noqa: B018 - the property asks the server
    except BackendError as err:
        raise BackendError(f"the LLM cannot answer, so no trial ran: {err.message}",
                           hint=err.hint or "check --backend and --base-url") from None


def _initialize(opened: OpenedStudy, backend: Backend, card: TaskCard, limits: SearchSpace,
                default_space: SearchSpace, sampler: str, options: LLMOptions, seed: int,
                n_trials: int) -> None:
    """On a fresh study: the LLM initializer's space and enqueued configurations, asked by one
    worker only (``studies.initializer_owner``). No more configurations than ``n_trials``:
    the rest would cost LLM time and never run."""
    from sllmbo.initializer import start

    study = opened.study
    n_configs = min(options.n_initial, n_trials) if sampler in LLM_SAMPLERS else 0
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


def _callbacks(sampler: str, backend: Backend | None, card: TaskCard, limits: SearchSpace,
               default_space: SearchSpace, options: LLMOptions, seed: int) -> list[Any]:
    from sllmbo.stopping import PATIENCE, EarlyStopping

    callbacks: list[Any] = []
    patience = options.patience if options.patience is not None else PATIENCE.get(sampler, 0)
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
                 sampler: str) -> Callable[[optuna.Trial], float]:
    """Label trials of the plain samplers; the LLM and pool samplers label their own."""
    if sampler in SELF_LABELLING:
        return objective

    def labelled(trial: optuna.Trial) -> float:
        if studyinfo.SOURCE not in trial.user_attrs:
            trial.set_user_attr(studyinfo.SOURCE, sampler)
        return objective(trial)

    return labelled


def optimize_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    target: int,
    callbacks: Sequence[Callable[[optuna.Study, Any], None]] = (),
    max_failures: int | None = None,
) -> None:
    """Run trials until the study holds ``target`` completed trials (counted in storage, so
    other workers' trials count too), a callback stops the study, or too many trials fail."""
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    max_failures = max_failures if max_failures is not None else max(10, target)
    stop_at_target = MaxTrialsCallback(target, states=(TrialState.COMPLETE,))
    failures_at_start = count_states(study)["fail"]
    first_trial = len(study.get_trials(deepcopy=False))
    while True:
        counts = count_states(study)
        remaining = target - counts["complete"]
        if remaining <= 0 or study.user_attrs.get(studyinfo.STOP_REASON):
            return
        if counts["fail"] - failures_at_start >= max_failures:
            failed = counts["fail"] - failures_at_start
            raise SllmboError(f"{failed} trials failed in this run; stopping. "
                              f"{failure_causes(study, first_trial)}",
                              hint="fix the cause above (the data or the options) and run "
                              "the same command again")
        study.optimize(
            objective,
            n_trials=remaining,
            callbacks=[stop_at_target, *callbacks],
            gc_after_trial=False,
        )


def check_folds(task: Task, settings: EvalSettings) -> None:
    """Split once before any trial: a fold count the data cannot fill (more folds than rows,
    or than the largest class has members) would otherwise fail every trial."""
    from sllmbo.objective import splitter

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


def failure_causes(study: optuna.Study, first_trial: int = 0) -> str:
    """The most common cause of the failed trials from ``first_trial`` on (their
    ``sllmbo:fit_error``), for the message that stops a run: an in-memory study is gone
    by the time a user could read its attributes."""
    from collections import Counter

    from optuna.trial import TrialState

    causes = Counter(
        str(t.user_attrs.get(studyinfo.FIT_ERROR) or "the objective returned no value")
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        if t.number >= first_trial)
    if not causes:
        return "No cause was recorded."
    (cause, n), *others = causes.most_common()
    return f"Cause of {n}: {cause}" + (f" (and {len(others)} other causes)" if others else "")


def tune(
    task: str | Task | None = None,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    task_type: str | None = None,
    model: str = "lightgbm",
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
) -> TuneResult:
    """Tune ``model`` on a task and refit the best configuration on the test split.

    ``max_rows`` caps the training split to a fixed subsample (seed 0, stated in the card's
    ``full_train_rows``): corpus collection uses it to keep a trial near a second.
    ``sampler`` "llm" / "llm-tpe" run the SLLMBO loop with ``backend`` (default: built from
    ``llm``, i.e. the embedded model in-process); ``llm`` also sets the initializer, early
    stopping and space adaptation.
    ``task`` is a registered task's name or an already loaded ``Task``.
    ``enqueue``: configurations tried first, on a fresh study only (Optuna's
    ``enqueue_trial``; values clipped into the space, labelled ``enqueue_source``): the
    evaluation's portfolio and seeded TPE. ``cache``: scores of configurations seen before
    (``sllmbo.objective.ScoreCache``) are reused instead of refitted.
    ``protocol`` (``sllmbo.protocol.EvalProtocol``): how configurations are scored (split,
    folds, metric, estimator, space) where it says so; it wins over ``n_folds`` and, when it
    sets one, over ``seed`` for the folds; ``seed`` still seeds the sampler. Recorded in the
    study's run config.

    >>> result = tune("diabetes", model="lightgbm", sampler="tpe", n_trials=20)  # doctest: +SKIP
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
    from sllmbo.samplers import build_sampler, check_kind

    check_kind(sampler)  # before any data is loaded
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
    family = get_family(model)
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
    name = study_name or f"{loaded.name}-{family.name}-{sampler}-seed{seed}"

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    _quiet_interrupts()
    default_space, limits = task_spaces(loaded, family, protocol)
    if space_file is not None:
        default_space, notes = load_space_file(space_file).fitted_within(limits)
        for note in notes:
            warnings.warn(f"--space-file {space_file}: {note}", SllmboNote, stacklevel=2)
    opened_storage = open_storage(storage)
    owned = backend is None and _needs_backend(sampler, options)
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
            _initialize(opened, backend, card, limits, default_space, sampler, options, seed,
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
        llm_kwargs: dict[str, Any] = {}
        if sampler in LLM_SAMPLERS:
            llm_kwargs = dict(space=default_space, card=card, backend=backend,
                              timeout=options.timeout, temperature=options.temperature,
                              max_tokens=options.max_tokens)
            if sampler == "llm-tpe":
                llm_kwargs.update(p_llm=options.p_llm, adaptive=options.adaptive_p)
        elif sampler in ("feedback", "llm-feedback"):
            llm_kwargs = dict(space=studyinfo.get_space(study, default_space), card=card,
                              backend=backend if sampler == "llm-feedback" else None)
        study.sampler = build_sampler(sampler, seed=worker_seed, **llm_kwargs)
        objective = _with_source(
            make_objective(loaded, family, default_space, settings, cache=cache), sampler)
        callbacks = _callbacks(sampler, backend, card, limits, default_space, options,
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
    if backend is not None or sampler in (*LLM_SAMPLERS, "llm-feedback"):
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


def summarize(
    study: optuna.Study,
    task: Task,
    family: ModelFamily,
    settings: EvalSettings,
    sampler: str,
    storage: str | None,
    n_trials: int,
    card: TaskCard,
    score_test: bool = True,
    cache: ScoreCache | None = None,
) -> TuneResult:
    """Best trial of the study and (``score_test``) its refit test scores."""
    counts = count_states(study)
    best = None
    if counts["complete"]:
        best = study.best_trial
    return TuneResult(
        task=task.name,
        model=family.name,
        sampler=sampler,
        study=study.study_name,
        storage=mask_url(storage),
        metric=card.metric,
        direction=card.direction,
        n_trials_target=n_trials,
        n_complete=counts["complete"],
        n_failed=counts["fail"],
        best_value=None if best is None else float(best.value),  # type: ignore[arg-type]
        best_params=None if best is None else dict(best.params),
        best_trial=None if best is None else best.number,
        test_scores=(
            holdout_scores(task, family, best.params, settings, cache=cache)
            if best is not None and score_test else {}
        ),
        stop_reason=study.user_attrs.get(studyinfo.STOP_REASON),
        failures=failure_causes(study) if counts["fail"] else None,
        task_card=card.to_user_attr(),
    )
