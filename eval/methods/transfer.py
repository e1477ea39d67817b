"""Transfer optimizers: each next configuration from the run's own scores and the other tasks'
(the training matrix).

- ``feedback``: the portfolio's first entries, then the pool entry the nearest training
  variants (by the run's scores so far) rank best (``sllmbo.samplers.pool``); the baseline of
  ``llm-feedback``, which asks the adapter instead (``sllmbo.eval.methods.llm``).
- ``quantile-surrogate``: syne-tune's ``QuantileBasedSurrogateSearcher`` (Copula Thompson
  sampling, Salinas et al. 2020) fitted on the training matrix's rows of the task's subtype
  (binary, multiclass, regression): every pool configuration with its error on every such
  training variant (``sllmbo.eval.methods.asktell.QuantileSurrogateSampler``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.eval.methods.base import Method, register
from sllmbo.eval.methods.selectors import pool_portfolio
from sllmbo.eval.runs import RunContext, RunLog, run_study, shared_backend


@dataclass(frozen=True, kw_only=True)
class PoolFeedback(Method):
    """A pool sampler of ``sllmbo tune`` (``feedback``, ``llm-feedback``): it starts from the
    portfolio's first ``FEEDBACK_START`` entries, the run's input from the matrix."""

    kind: str = "transfer"
    deterministic: bool = True
    sampler: str

    def run(self, ctx: RunContext) -> RunLog:
        options: dict[str, Any] = {"sampler": self.sampler}
        if self.needs_adapter:
            options["backend"] = shared_backend(ctx.settings.llm, ctx.settings.adapter)
        return run_study(ctx, **options)

    def inputs(self, ctx: RunContext) -> list[dict[str, Any]] | None:
        if not ctx.from_matrix:
            return None
        from sllmbo.data.pool_select import FEEDBACK_START

        return pool_portfolio(ctx, FEEDBACK_START)


register(PoolFeedback(name="feedback", summary="portfolio start, then the pool entry the "
                      "nearest training variants (by the run's scores) rank best",
                      sampler="feedback"))


@dataclass(frozen=True, kw_only=True)
class LearnedRanker(Method):
    """A pool sampler that ranks every untried entry with a model trained on the matrix; its
    first pick reads the card alone, so no start list is given to it."""

    kind: str = "transfer"
    sampler: str

    def run(self, ctx: RunContext) -> RunLog:
        options: dict[str, Any] = {"sampler": self.sampler}
        if self.needs_adapter:  # the LLM scorer (``llm-rank``)
            options["backend"] = shared_backend(ctx.settings.llm, ctx.settings.adapter)
        return run_study(ctx, **options)


register(LearnedRanker(name="gbdt-rank", sampler="gbdt-rank",
                       summary="untried pool entries by a LightGBM model's expected improvement "
                       "given the card and the run's scores, then TPE"))


@dataclass(frozen=True, kw_only=True)
class QuantileSurrogate(Method):
    kind: str = "transfer"

    def run(self, ctx: RunContext) -> RunLog:
        if ctx.protocol is not None:
            raise SllmboError(f"{self.name} transfers from the training matrix, which has no "
                              f"scores under the {ctx.settings.protocol} protocol")
        space = ctx.family.default_space(ctx.task.task_type)
        evaluations = matrix_evaluations(ctx, space)
        key = (ctx.family.name, str(space.to_dict()), tuple(evaluations))

        def factory(seed: int | None = None, **study: Any) -> Any:
            from sllmbo.eval.methods.asktell import QuantileSurrogateSampler

            return QuantileSurrogateSampler(space=space, evaluations=evaluations, seed=seed,
                                            cache_key=key)

        return run_study(ctx, sampler="quantile-surrogate", sampler_factory=factory)


def matrix_evaluations(ctx: RunContext, space: Any) -> dict[str, tuple[list[dict[str, Any]],
                                                                        list[float]]]:
    """Per training variant of the task's subtype (the task's own dataset left out): the
    pool's configurations, clipped into ``space``, and their log error ratio on that variant
    (a failed fit counts as the variant's worst)."""
    from sllmbo.data.pool_select import dataset_of, log_ratio_matrix, subtype_of
    from sllmbo.eval.zeroshot_baselines import load_selectors

    selectors = load_selectors()
    family = ctx.family.name
    scores = selectors.scores(family)
    subtype = subtype_of(ctx.task.meta_features())
    rows = [v for v in scores.index if v in selectors.cards
            and subtype_of(selectors.cards[v]) == subtype
            and dataset_of(v) != dataset_of(ctx.task.name)]
    pool = selectors.pools[family].configs
    configs = [space.clip(c.config)[0] for c in pool]
    table = scores.loc[rows, [c.id for c in pool]].to_numpy(dtype=float)
    losses = log_ratio_matrix(table.T).T  # variants x configurations
    return {v: (configs, [float(x) for x in losses[i]]) for i, v in enumerate(rows)}


register(QuantileSurrogate(name="quantile-surrogate", summary="syne-tune's quantile-based "
                           "surrogate searcher fitted on the training matrix (subtype rows)"))
