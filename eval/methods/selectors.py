"""The library defaults and the zero-shot pool selectors: configurations chosen without fitting,
tried in order; budget b hands over the best of the first b.

- ``defaults``: the library's own defaults, one evaluation.
- ``portfolio``: the greedy portfolio. On the training matrix (the zero-shot suites) it is
  [9/12]'s, built on the normalized regret clipped at the median per coarse task type; in the
  default suite it is the committed ``eval/portfolios`` list, run as a study.
- ``knn``: the nearest training variants' best configurations, nearest first.
- ``portfolio-ratio``, ``knn-ratio``: the same two rebuilt on the unclipped log error ratio
  per subtype (binary, multiclass, regression). The old two stay: the committed zero-shot
  results and report name them.
- ``defaults-first-ratio``: the library defaults, then ``portfolio-ratio``'s list. The offline
  replay ranked it first among pool methods at every budget from 2 to 30 on the held-out
  matrix, never worse than the defaults (``eval/README.md``).
- ``flaml-zeroshot``: FLAML's own zero-shot portfolio (``sllmbo.eval.flaml_zeroshot``).
- ``oracle-pool``: the held-out dataset's best pool entry: the ceiling of any pool selector.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sllmbo.eval.methods.base import Method, register
from sllmbo.eval.runs import RunContext, RunLog, run_configs, run_defaults, run_study

if TYPE_CHECKING:
    from sllmbo.core.families import ModelFamily


@dataclass(frozen=True, kw_only=True)
class Defaults(Method):
    kind: str = "defaults"

    def run(self, ctx: RunContext) -> RunLog:
        return run_defaults(ctx)


@dataclass(frozen=True, kw_only=True)
class Selector(Method):
    """A ranked list of configurations scored by CV in order (``run_configs``)."""

    kind: str = "selector"
    deterministic: bool = True
    #: Its list comes from the training matrix (recorded, and rerun when the matrix moves).
    reads_matrix: bool = True

    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        raise NotImplementedError

    def scoring_family(self, ctx: RunContext) -> ModelFamily:
        """The family whose builder and limits score the list (default: the job's)."""
        return ctx.family

    def run(self, ctx: RunContext) -> RunLog:
        return run_configs(ctx, self.configs(ctx, ctx.settings.max_budget),
                           self.scoring_family(ctx))

    def inputs(self, ctx: RunContext) -> list[dict[str, Any]] | None:
        if not (self.reads_matrix and ctx.from_matrix):
            return None
        return self.configs(ctx, ctx.settings.max_budget)


def pool_portfolio(ctx: RunContext, size: int) -> list[dict[str, Any]]:
    """The first ``size`` entries of the portfolio the suite uses: rebuilt on the training
    matrix for the task's type, or the committed ``eval/portfolios`` list."""
    if ctx.from_matrix:
        from sllmbo.eval.zeroshot_baselines import load_selectors

        return load_selectors().portfolio(ctx.task.task_type, ctx.family.name, size)
    from sllmbo.eval.portfolio import load_portfolio

    return [dict(c) for c in load_portfolio(ctx.family.name)[:size]]


def ratio_portfolio(ctx: RunContext, size: int) -> list[dict[str, Any]]:
    """The first ``size`` entries of the log-ratio portfolio of the task's subtype."""
    from sllmbo.eval.zeroshot_baselines import load_selectors

    return load_selectors().portfolio_ratio(ctx.task, ctx.family.name, size)


@dataclass(frozen=True, kw_only=True)
class Portfolio(Selector):
    """[9/12]'s portfolio: on the matrix a selector; in the default suite the committed list,
    enqueued into a study (the runs the default suite's results hold)."""

    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        return pool_portfolio(ctx, budget)

    def run(self, ctx: RunContext) -> RunLog:
        if ctx.from_matrix:
            return super().run(ctx)
        configs = pool_portfolio(ctx, ctx.settings.max_budget)
        return run_study(ctx, sampler="tpe", n_trials=len(configs), enqueue=configs,
                         enqueue_source="portfolio")


@dataclass(frozen=True, kw_only=True)
class Knn(Selector):
    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        from sllmbo.eval.zeroshot_baselines import load_selectors

        return load_selectors().knn(ctx.task, ctx.family.name, budget)


@dataclass(frozen=True, kw_only=True)
class RatioPortfolio(Selector):
    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        return ratio_portfolio(ctx, budget)


@dataclass(frozen=True, kw_only=True)
class DefaultsFirstRatio(Selector):
    """The library's own defaults (the empty configuration, as ``defaults`` fits it) first:
    a first trial that cannot be worse than what the user has, then the log-ratio list."""

    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        return [{}, *ratio_portfolio(ctx, budget - 1)] if budget > 0 else []


@dataclass(frozen=True, kw_only=True)
class RatioKnn(Selector):
    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        from sllmbo.eval.zeroshot_baselines import load_selectors

        return load_selectors().knn_ratio(ctx.task, ctx.family.name, budget)


@dataclass(frozen=True, kw_only=True)
class FlamlZeroShot(Selector):
    reads_matrix: bool = False

    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        from sllmbo.eval.flaml_zeroshot import flaml_configs

        return flaml_configs(ctx.task, ctx.family, k=None)[:budget]

    def scoring_family(self, ctx: RunContext) -> ModelFamily:
        from sllmbo.eval.flaml_zeroshot import flaml_family

        return flaml_family(ctx.family)


@dataclass(frozen=True, kw_only=True)
class OraclePool(Selector):
    reads_matrix: bool = False
    ceiling: bool = True

    def configs(self, ctx: RunContext, budget: int) -> list[dict[str, Any]]:
        from sllmbo.eval.zeroshot_baselines import load_selectors

        return load_selectors().oracle(ctx.task, ctx.family.name)


register(Defaults(name="defaults", summary="the library's own defaults (one fit)",
                  deterministic=True))
register(Portfolio(name="portfolio", summary="greedy portfolio on clipped regret per task "
                   "type ([9/12]); the committed list in the default suite"))
register(Knn(name="knn", summary="the nearest training variants' best pool entries"))
register(FlamlZeroShot(name="flaml-zeroshot", summary="FLAML's zero-shot portfolio "
                       "(flaml.default), ranked for the task"))
register(OraclePool(name="oracle-pool", summary="the held-out dataset's best pool entry "
                    "(a ceiling, not a competitor)"))
register(RatioPortfolio(name="portfolio-ratio", summary="greedy portfolio on the unclipped "
                        "log error ratio, per subtype (binary, multiclass, regression)"))
register(RatioKnn(name="knn-ratio", summary="greedy log-ratio portfolio of the 10 nearest "
                  "training variants of the task's subtype"))
register(DefaultsFirstRatio(name="defaults-first-ratio", summary="the library defaults, then "
                            "the log-ratio portfolio of the task's subtype"))
