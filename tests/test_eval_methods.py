"""The evaluation methods' registry: one object per method, read by the harness, the suites,
the report and ``sllmbo eval --help``; duplicates refused."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.eval.methods import KINDS, Method, get, names, register, unregister
from sllmbo.eval.runs import RunContext, RunLog, run_defaults


@dataclass(frozen=True, kw_only=True)
class _Probe(Method):
    """A method defined outside the package, as a new baseline would be."""

    kind: str = "defaults"

    def run(self, ctx: RunContext) -> RunLog:
        return run_defaults(ctx)


@pytest.fixture
def probe():
    method = register(_Probe(name="probe-method", summary="a test's own method",
                             budget_cap=2))
    yield method
    unregister(method.name)


def test_a_duplicate_name_is_refused_with_both_definitions_named() -> None:
    with pytest.raises(SllmboError, match="'tpe' is registered twice") as info:
        register(_Probe(name="tpe", summary="another tpe"))
    assert "NamedSampler" in info.value.message and "_Probe" in info.value.message
    assert get("tpe").kind == "optimizer"  # the first one stays


def test_unknown_names_and_kinds_are_clear_errors() -> None:
    with pytest.raises(SllmboError, match="unknown evaluation method 'nope'") as info:
        get("nope")
    assert "tpe" in (info.value.hint or "")
    with pytest.raises(SllmboError, match="unknown kind 'bandit'"):
        _Probe(name="x", kind="bandit", summary="-")
    with pytest.raises(SllmboError, match="budget_cap must be >= 1"):
        _Probe(name="x", summary="-", budget_cap=0)
    with pytest.raises(SllmboError, match="no attribute"):
        names(colour="red")


def test_every_kind_has_its_module_and_the_report_reads_the_attributes() -> None:
    assert {get(n).kind for n in names()} == set(KINDS)
    assert names(ceiling=True) == ("oracle-pool",)
    assert set(names(needs_adapter=True)) == {
        "single-shot", "llm", "llm-tpe", "single-shot-score", "single-shot-pick",
        "llm-feedback", "llm-tpe-warm", "llm-rank"}
    # The LLM methods (run last, their server checked first): the adapter's and the base's.
    assert set(names(kind="llm")) == set(names(needs_adapter=True)) | {
        "single-shot-base", "llm-base", "llm-tpe-base"}


def test_suites_list_registered_methods_and_keep_their_seeds_and_budgets() -> None:
    from sllmbo.eval.suites import SUITES

    for suite in SUITES.values():
        for method in suite.methods:
            get(method)  # raises on a name the registry does not hold
    zero = SUITES["zero-shot"]
    one_seed = {"defaults", "portfolio", "knn", "flaml-zeroshot", "oracle-pool",
                "single-shot-score", "single-shot-pick", "feedback"}
    assert {m for m in zero.methods if zero.seeds_of(m) == 1} == one_seed  # as committed
    assert {m: zero.budget_of(m) for m in ("tpe", "llm-tpe", "knn", "single-shot")} == \
        {"tpe": 10, "llm-tpe": 10, "knn": 5, "single-shot": 5}
    wide = SUITES["zero-shot-30"]
    assert wide.budgets == (1, 3, 5, 10, 20, 30)
    long = {m for m in wide.methods if wide.budget_of(m) == 30}
    assert long == {"tpe", "tpe-warm", "gp", "gp-warm", "llm-tpe-warm"}
    assert all(wide.budget_of(m) == 20 for m in wide.methods if m not in long)


def test_a_methods_own_budget_cap_bounds_a_suite_that_sets_none(probe: Method) -> None:
    from sllmbo.eval.suites import SUITES

    suite = SUITES["smoke"].override(methods=("probe-method", "tpe"))
    assert suite.budget_of("probe-method") == 2 and suite.budget_of("tpe") == 4


def test_eval_help_lists_what_the_registry_holds(probe: Method, monkeypatch, capsys) -> None:
    from sllmbo.cli import evaluation, main

    text = evaluation.methods_help()  # what `register` puts into the command's help
    for name in names():
        assert name in text
    assert "probe-method" in text
    for kind in KINDS:
        assert f"{kind} (" in text

    monkeypatch.setenv("COLUMNS", "400")
    with pytest.raises(SystemExit):
        main(["eval", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert all(name in shown for name in names() if name != "probe-method"), shown


def test_the_cli_takes_any_registered_method_and_refuses_others(tmp_path, capsys) -> None:
    from cli_helpers import fails

    err = fails(["eval", "--methods", "tpe,bogus", "--out", str(tmp_path / "o")], capsys)
    assert "unknown bogus" in err and "tpe-warm" in err


def test_gbdt_rank_runs_its_tune_sampler_through_the_harness(tmp_path) -> None:
    """The example of a new method: one entry in ``transfer`` runs the registered sampler."""
    import optuna

    from sllmbo.eval.methods import get
    from sllmbo.eval.runs import RunContext, RunJob, RunSettings, TaskRef
    from sllmbo.eval.store import EvalStore
    from sllmbo.tune import LLMOptions

    method = get("gbdt-rank")
    assert (method.kind, method.uses_llm, method.needs_adapter) == ("transfer", False, False)
    settings = RunSettings(out_dir=str(tmp_path), max_budget=2, n_folds=2, max_rows=200,
                           protocol=None, llm=LLMOptions(), adapter=None)
    job = RunJob(TaskRef(name="auto_mpg"), "lightgbm", "gbdt-rank", 0)
    log = method.run(RunContext(job, settings, EvalStore(settings.store_path)))
    assert len(log.trials) == 2
    study = optuna.load_study(study_name=job.key, storage=settings.storage)
    assert {t.user_attrs.get("sllmbo:source") for t in study.trials} <= {"gbdt-rank", "pool"}


def test_defaults_first_ratio_fits_the_defaults_then_the_ratio_portfolio(tmp_path) -> None:
    """The baseline the replay ranked first from 2 trials on, added as one registered object:
    its first trial is the library defaults (the same fit as ``defaults``), then the
    log-ratio portfolio of the task's subtype, in order."""
    from sllmbo.eval.methods import get
    from sllmbo.eval.methods.selectors import ratio_portfolio
    from sllmbo.eval.runs import RunContext, RunJob, RunSettings, TaskRef
    from sllmbo.eval.store import EvalStore
    from sllmbo.tune import LLMOptions

    settings = RunSettings(out_dir=str(tmp_path), max_budget=3, n_folds=2, max_rows=200,
                           protocol=None, llm=LLMOptions(), adapter=None)
    store = EvalStore(settings.store_path)

    def run(name: str) -> RunLog:
        job = RunJob(TaskRef(name="auto_mpg"), "lightgbm", name, 0)
        return get(name).run(RunContext(job, settings, store))

    first, defaults = run("defaults-first-ratio"), run("defaults")
    assert first.trials[0].params == {}
    assert first.trials[0].cv_score == defaults.trials[0].cv_score
    ctx = RunContext(RunJob(TaskRef(name="auto_mpg"), "lightgbm", "defaults-first-ratio", 0),
                     settings, store)
    assert [t.params for t in first.trials][1:] == ratio_portfolio(ctx, 2)
