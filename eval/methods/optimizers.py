"""Sequential optimizers: Optuna's samplers, unseeded or seeded with pool configurations.

[9/12]'s methods, kept as they ran for the committed results:
- ``random``, ``tpe``: Optuna's ``RandomSampler`` and ``TPESampler`` with their defaults.
- ``tpe-seeded``: the library defaults and the portfolio's first entry enqueued, then TPE.
- ``tpe-seeded-portfolio``: the portfolio's first 3 entries enqueued, then TPE.
Both seeded ones keep TPE's default ``n_startup_trials=10``, so the trials after the seeds
are random up to the 10th.

Configured as Optuna recommends (its "Specify hyperparameters manually" recipe: configurations
worth trying go in with ``Study.enqueue_trial``, and ``TPESampler.n_startup_trials`` counts
every finished trial, enqueued ones included, before TPE replaces random sampling; its
docstring reports the multivariate TPE outperforming the independent one):
- ``tpe-warm``: the log-ratio portfolio's first 3 entries for the task's subtype enqueued,
  ``TPESampler(multivariate=True, n_startup_trials=3)``: TPE from the 4th trial on.
- ``gp``: Optuna's ``GPSampler`` as it comes (10 random trials, then GP-EI).
- ``gp-warm``: ``GPSampler`` after the same 3 enqueued entries, ``n_startup_trials=3``.
- ``smac``: SMAC3's hyperparameter-optimization facade (random forest, log EI), its initial
  design the same 3 entries (``HyperparameterOptimizationFacade.get_initial_design`` with
  ``additional_configs``), one run per configuration (the objective's folds are fixed).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import SllmboError
from sllmbo.data.pool_select import WARM_START
from sllmbo.eval.methods.base import Method, register
from sllmbo.eval.methods.selectors import pool_portfolio, ratio_portfolio
from sllmbo.eval.runs import RunContext, RunLog, library_defaults, run_study

if TYPE_CHECKING:
    import optuna

#: ``tpe-seeded-portfolio``: TPE after this many of the portfolio's first configurations.
SEEDED_PORTFOLIO_SIZE = 3
#: The warm-started optimizers enqueue this many log-ratio portfolio entries.
WARM_SEEDS = WARM_START


@dataclass(frozen=True, kw_only=True)
class NamedSampler(Method):
    """A sampler ``sllmbo tune --sampler`` knows by name, run as it comes."""

    kind: str = "optimizer"
    sampler: str

    def run(self, ctx: RunContext) -> RunLog:
        return run_study(ctx, sampler=self.sampler)


def seeded_configs(ctx: RunContext) -> list[dict[str, Any]]:
    """``tpe-seeded``'s seeds: the library defaults (as values of the tuned space) and the
    portfolio's first configuration (none under a protocol with its own space)."""
    configs = [library_defaults(ctx.task, ctx.family, ctx.protocol)]
    if ctx.protocol is None:  # the portfolio lives in the family's default space
        configs += pool_portfolio(ctx, 1)
    return configs


@dataclass(frozen=True, kw_only=True)
class SeededTPE(Method):
    """[9/12]'s seeded TPEs: configurations enqueued, then TPE with its defaults."""

    kind: str = "optimizer"
    #: Enqueue the portfolio's first ``SEEDED_PORTFOLIO_SIZE`` entries (else: defaults and
    #: the portfolio's first).
    portfolio_seeds: bool = False

    def seeds(self, ctx: RunContext) -> list[dict[str, Any]]:
        if self.portfolio_seeds:
            return pool_portfolio(ctx, SEEDED_PORTFOLIO_SIZE)
        return seeded_configs(ctx)

    def run(self, ctx: RunContext) -> RunLog:
        return run_study(ctx, sampler="tpe", enqueue=self.seeds(ctx),
                         enqueue_source="portfolio" if self.portfolio_seeds else "seeded")

    def inputs(self, ctx: RunContext) -> list[dict[str, Any]] | None:
        return self.seeds(ctx) if ctx.from_matrix else None


@dataclass(frozen=True, kw_only=True)
class ConfiguredSampler(Method):
    """An Optuna sampler built here with its options, after ``n_seeds`` log-ratio portfolio
    entries enqueued (0: unseeded); a seeded sampler's random start is the seeds."""

    kind: str = "optimizer"
    #: The trials' source label and the run config's sampler name.
    label: str
    n_seeds: int = 0

    def build(self, seed: int | None, n_enqueued: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def seeds(self, ctx: RunContext) -> list[dict[str, Any]]:
        if not self.n_seeds:
            return []
        if ctx.protocol is not None:
            raise SllmboError(f"{self.name} seeds from the pool, which has no configurations "
                              f"for the {ctx.settings.protocol} protocol",
                              hint=f"run the unseeded twin of {self.name} there")
        return ratio_portfolio(ctx, self.n_seeds)

    def run(self, ctx: RunContext) -> RunLog:
        seeds = self.seeds(ctx)

        def factory(seed: int | None = None, **study: Any) -> optuna.samplers.BaseSampler:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", category=_experimental_warning())
                return self.build(seed, len(seeds))

        options: dict[str, Any] = {}
        if seeds:
            options.update(enqueue=seeds, enqueue_source="portfolio")
        return run_study(ctx, sampler=self.label, sampler_factory=factory, **options)

    def inputs(self, ctx: RunContext) -> list[dict[str, Any]] | None:
        return self.seeds(ctx) if ctx.from_matrix and self.n_seeds else None


def _experimental_warning() -> type[Warning]:
    import optuna

    return optuna.exceptions.ExperimentalWarning


@dataclass(frozen=True, kw_only=True)
class WarmTPE(ConfiguredSampler):
    label: str = "tpe"

    def build(self, seed: int | None, n_enqueued: int) -> optuna.samplers.BaseSampler:
        from optuna.samplers import TPESampler

        return TPESampler(seed=seed, **tpe_startup_options(n_enqueued))


@dataclass(frozen=True, kw_only=True)
class GP(ConfiguredSampler):
    label: str = "gp"

    def build(self, seed: int | None, n_enqueued: int) -> optuna.samplers.BaseSampler:
        from optuna.samplers import GPSampler

        if self.n_seeds:
            return GPSampler(seed=seed, n_startup_trials=n_enqueued)
        return GPSampler(seed=seed)


@dataclass(frozen=True, kw_only=True)
class SMAC(Method):
    """SMAC3's hyperparameter-optimization facade (a random forest surrogate, log EI, local
    search), its initial design the log-ratio portfolio's first entries, driven ask/tell
    (``sllmbo.eval.methods.asktell.SMACSampler``)."""

    kind: str = "optimizer"
    n_seeds: int = WARM_SEEDS

    def seeds(self, ctx: RunContext) -> list[dict[str, Any]]:
        if ctx.protocol is not None:
            raise SllmboError(f"{self.name} starts from the pool, which has no configurations "
                              f"for the {ctx.settings.protocol} protocol")
        return ratio_portfolio(ctx, self.n_seeds)

    def run(self, ctx: RunContext) -> RunLog:
        space = ctx.family.default_space(ctx.task.task_type)
        design = self.seeds(ctx)
        budget = ctx.settings.max_budget

        def factory(seed: int | None = None, **study: Any) -> optuna.samplers.BaseSampler:
            from sllmbo.eval.methods.asktell import SMACSampler

            return SMACSampler(space=space, initial_design=design, n_trials=budget, seed=seed)

        return run_study(ctx, sampler="smac", sampler_factory=factory)

    def inputs(self, ctx: RunContext) -> list[dict[str, Any]] | None:
        return self.seeds(ctx) if ctx.from_matrix else None


def tpe_startup_options(n_enqueued: int) -> dict[str, Any]:
    """A warm TPE's options: multivariate, random sampling only until the enqueued
    configurations are in (at least 1: TPE needs one finished trial to fit)."""
    return {"multivariate": True, "n_startup_trials": max(1, n_enqueued)}


register(NamedSampler(name="random", summary="Optuna's RandomSampler", sampler="random"))
register(NamedSampler(name="tpe", summary="Optuna's TPESampler, its defaults", sampler="tpe"))
register(SeededTPE(name="tpe-seeded", summary="TPE (defaults) after the library defaults and "
                   "the portfolio's first entry"))
register(SeededTPE(name="tpe-seeded-portfolio", summary="TPE (defaults) after the portfolio's "
                   "first 3 entries", portfolio_seeds=True))
register(WarmTPE(name="tpe-warm", summary="multivariate TPE after the log-ratio portfolio's "
                 "first 3 entries, n_startup_trials=3", n_seeds=WARM_SEEDS))
register(GP(name="gp", summary="Optuna's GPSampler, its defaults (10 random trials)"))
register(GP(name="gp-warm", summary="GPSampler after the log-ratio portfolio's first 3 "
            "entries, n_startup_trials=3", n_seeds=WARM_SEEDS))
register(SMAC(name="smac", summary="SMAC3's HPO facade, its initial design the log-ratio "
              "portfolio's first 3 entries"))
