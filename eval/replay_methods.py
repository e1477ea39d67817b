"""Pool-restricted methods for the offline replay (``sllmbo.eval.replay``), one small function
each, in a registry another module can add to.

A method is ``policy(ctx, history) -> config id | None``: given what the run may know (the
task's meta-features, the training matrix with the task's own dataset left out, the pool) and
the history so far, ``[(config id, score to minimize or None for a failed fit), ...]``, the
next pool entry to try (None: nothing left to propose; the run stops there). Policies are
pure; anything worth computing once per training view (a portfolio) goes in ``ctx.memo``,
which the replay shares between runs that see the same training rows.

Each policy reuses the rule the real sampler runs (``sllmbo.data.pool_select``,
``sllmbo.samplers.pool.NeighbourChooser``), so the replay tries what the suite tries.

    from sllmbo.eval.replay_methods import register

    @register("worst-first")
    def worst_first(ctx, history):
        ...
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sllmbo.data.pool_select import (
    FEEDBACK_START,
    error_level,
    knn,
    log_ratio_matrix,
    portfolio,
    ratio_knn,
    ratio_portfolio,
    regret_matrix,
    subtype_of,
    task_type_of,
)
from sllmbo.data.pool_select import ratio_order as ratio_positions

History = Sequence[tuple[str, float | None]]


@dataclass
class Context:
    """What a replayed run may read. ``train_scores``: training variants (whole rows, the
    task's own dataset left out) x ``pool_ids``, minimized; ``own_scores`` is read by the
    ``oracle-pool`` ceiling only (it peeks, by definition)."""

    task: str
    family: str
    card: Mapping[str, Any]
    pool_ids: tuple[str, ...]
    defaults_id: str
    train_scores: Any
    train_cards: Mapping[str, Mapping[str, Any]]
    seed: int = 0
    own_scores: Mapping[str, float] = field(default_factory=dict)
    #: Shared by the runs that see the same training rows (keys name what they hold).
    memo: dict[Any, Any] = field(default_factory=dict)

    @property
    def task_type(self) -> str:
        return task_type_of(self.card)

    def cached(self, key: Any, make: Callable[[], Any]) -> Any:
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]


Policy = Callable[[Context, History], "str | None"]


@dataclass(frozen=True)
class ReplayMethod:
    """A registered method: its policy, how many seeds it needs (1: deterministic), and
    whether it replays on the held-out bench only (a model trained on every training row
    cannot be judged leaving one of them out)."""

    name: str
    policy: Policy
    seeds: int = 1
    heldout_only: bool = False
    #: Budgets past this are not the method's own (its real sampler goes on with another).
    budget_cap: int | None = None


REPLAY_METHODS: dict[str, ReplayMethod] = {}


def register(name: str, seeds: int = 1, heldout_only: bool = False,
             budget_cap: int | None = None) -> Callable[[Policy], Policy]:
    """Register ``policy`` as method ``name`` (``seeds`` > 1 for a stochastic one)."""
    def wrap(policy: Policy) -> Policy:
        if name in REPLAY_METHODS:
            raise ValueError(f"replay method '{name}' is registered twice")
        REPLAY_METHODS[name] = ReplayMethod(name, policy, seeds, heldout_only, budget_cap)
        return policy
    return wrap


def _untried(order: Sequence[str], history: History) -> str | None:
    tried = {c for c, _ in history}
    return next((c for c in order if c not in tried), None)


def portfolio_order(ctx: Context) -> list[str]:
    """The greedy portfolio of the task's type on the training rows, the whole pool long."""
    return ctx.cached(("portfolio", ctx.task_type), lambda: portfolio(
        ctx.train_cards, ctx.train_scores, ctx.task_type, len(ctx.pool_ids)))


@register("defaults")
def defaults(ctx: Context, history: History) -> str | None:
    """The library defaults only (the reference of every ratio)."""
    return None if history else ctx.defaults_id


@register("defaults-first")
def defaults_first(ctx: Context, history: History) -> str | None:
    """The library defaults, then the portfolio's entries."""
    return _untried([ctx.defaults_id, *portfolio_order(ctx)], history)


@register("portfolio")
def portfolio_policy(ctx: Context, history: History) -> str | None:
    return _untried(portfolio_order(ctx), history)


@register("knn")
def knn_policy(ctx: Context, history: History) -> str | None:
    """The nearest training variants' best entries, nearest first (distinct)."""
    return _untried(_neighbour_order(ctx, "knn", knn), history)


def _neighbour_order(ctx: Context, name: str, build: Callable[..., list[str]]) -> list[str]:
    """``build``'s whole-pool list for the task from the training variants, its own
    dataset's left out, once per task."""
    from sllmbo.data.pool_select import dataset_of

    return ctx.cached((name, ctx.task), lambda: build(
        ctx.card, ctx.train_cards, ctx.train_scores, len(ctx.pool_ids),
        exclude_dataset=dataset_of(ctx.task)))


@register("feedback")
def feedback(ctx: Context, history: History) -> str | None:
    """The portfolio's first ``FEEDBACK_START`` entries, then ``NeighbourChooser``'s pick
    from the run's own scores (the ``feedback`` sampler's rule)."""
    from sllmbo.samplers.pool import FEEDBACK_NEIGHBOURS, NeighbourChooser

    folio = portfolio_order(ctx)
    start = _untried(folio[:FEEDBACK_START], history)
    if start is not None:
        return start
    ids = list(ctx.pool_ids)

    def make() -> NeighbourChooser:
        rows = [task_type_of(ctx.train_cards[v]) == ctx.task_type
                for v in ctx.train_scores.index]
        table = ctx.train_scores.loc[rows, ids].to_numpy(float)
        return NeighbourChooser(table, regret_matrix(table.T).T, [ids.index(c) for c in folio],
                                FEEDBACK_NEIGHBOURS)

    chooser = ctx.cached(("feedback", ctx.task_type), make)
    positions = [(ids.index(c), v) for c, v in history]
    index = chooser(positions, {i for i, _ in positions})
    return None if index is None else ids[index]


def ratio_order(ctx: Context) -> list[str]:
    """The log-ratio portfolio of the task's subtype on the training rows, the whole pool long
    (``portfolio-ratio``'s list)."""
    subtype = subtype_of(ctx.card)
    return ctx.cached(("portfolio-ratio", subtype), lambda: ratio_portfolio(
        ctx.train_cards, ctx.train_scores, subtype, len(ctx.pool_ids)))


@register("portfolio-ratio")
def portfolio_ratio(ctx: Context, history: History) -> str | None:
    """The greedy portfolio on the unclipped log error ratio, per subtype."""
    return _untried(ratio_order(ctx), history)


@register("defaults-first-ratio")
def defaults_first_ratio(ctx: Context, history: History) -> str | None:
    """The library defaults, then the log-ratio portfolio's entries."""
    return _untried([ctx.defaults_id, *ratio_order(ctx)], history)


@register("knn-ratio")
def knn_ratio(ctx: Context, history: History) -> str | None:
    """The log-ratio portfolio of the 10 training variants nearest by meta-features."""
    return _untried(_neighbour_order(ctx, "knn-ratio", ratio_knn), history)


@register("feedback-ratio")
def feedback_ratio(ctx: Context, history: History) -> str | None:
    """The log-ratio portfolio's first ``FEEDBACK_START`` entries; then, among the training
    rows of the task's subtype whose scores on the tried entries (min-max scaled) are nearest
    to this run's, the untried entry that most lowers their mean best log error ratio so far
    (the greedy portfolio's step, conditioned on the run's own scores)."""
    from sllmbo.samplers.pool import FEEDBACK_NEIGHBOURS, min_max

    folio = ratio_order(ctx)
    start = _untried(folio[:FEEDBACK_START], history)
    if start is not None:
        return start
    ids = list(ctx.pool_ids)

    def make() -> tuple[np.ndarray, np.ndarray]:
        subtype = subtype_of(ctx.card)
        rows = [subtype_of(ctx.train_cards[v]) == subtype for v in ctx.train_scores.index]
        table = ctx.train_scores.loc[rows, ids].to_numpy(float)
        return table, log_ratio_matrix(table.T).T

    table, ratio = ctx.cached(("feedback-ratio", subtype_of(ctx.card)), make)
    tried = [ids.index(c) for c, _ in history]
    left = [i for i in range(len(ids)) if i not in set(tried)]
    if not left:
        return None
    seen = np.array([np.nan if v is None else v for _, v in history], dtype=float)
    if not np.isfinite(seen).all():
        return _untried(folio, history)
    scaled = np.array([min_max(r) for r in table[:, tried]])
    distance = np.nanmean(np.abs(scaled - min_max(seen)), axis=1)
    near = np.argsort(np.where(np.isfinite(distance), distance, np.inf),
                      kind="stable")[:FEEDBACK_NEIGHBOURS]
    best = ratio[np.ix_(near, tried)].min(axis=1, keepdims=True)
    after = np.minimum(best, ratio[np.ix_(near, left)]).mean(axis=0)
    return ids[left[int(np.argmin(after))]]


#: Training rows whose portfolio ``defaults-first-level`` follows.
LEVEL_NEIGHBOURS = 10


@register("defaults-first-level")
def defaults_first_level(ctx: Context, history: History) -> str | None:
    """The library defaults; then the log-ratio portfolio of the ``LEVEL_NEIGHBOURS`` training
    rows of the subtype whose defaults' error, over the prior error, is nearest to the run's.
    The card hides how noisy a task is (a separable multiclass task and a brand-choice one
    look alike); the first score shows it, and ratios within a run cannot."""
    seen = dict(history)
    if ctx.defaults_id not in seen:
        return ctx.defaults_id
    level = error_level(seen[ctx.defaults_id], ctx.card)
    if not math.isfinite(level):
        return _untried(ratio_order(ctx), history)
    ids = list(ctx.pool_ids)

    def levels() -> tuple[list[str], np.ndarray]:
        subtype = subtype_of(ctx.card)
        rows = [v for v in ctx.train_scores.index if subtype_of(ctx.train_cards[v]) == subtype]
        return rows, np.array([error_level(ctx.train_scores.loc[v, ctx.defaults_id],
                                           ctx.train_cards[v]) for v in rows])

    rows, row_levels = ctx.cached(("level", subtype_of(ctx.card)), levels)
    distance = np.abs(row_levels - level)
    near = [rows[i] for i in np.argsort(np.where(np.isfinite(distance), distance, np.inf),
                                        kind="stable")[:LEVEL_NEIGHBOURS]]
    order = ctx.cached(("level-portfolio", tuple(near)), lambda: [
        ids[i] for i in ratio_positions(ctx.train_scores.loc[near, ids].to_numpy(float),
                                        len(ids))])
    return _untried(order, history)


@register("gbdt-rank", heldout_only=True, budget_cap=10)  # the sampler's POOL_TRIALS
def gbdt_rank(ctx: Context, history: History) -> str | None:
    """The shipped LightGBM scorer (``sllmbo.samplers.gbdt_rank``) through expected
    improvement, over its ``POOL_TRIALS`` pool trials (then TPE takes over in the real
    sampler: the replay stops there). It trained on every training row, so it replays on
    the held-out bench only: a training dataset is refused."""
    from sllmbo.core.errors import SllmboError
    from sllmbo.data.pool_select import dataset_of
    from sllmbo.rank import RankChooser
    from sllmbo.samplers.gbdt_rank import load_scorer

    scorer = load_scorer(ctx.family)
    if scorer.evidence is not None and dataset_of(ctx.task) in scorer.evidence.datasets:
        raise SllmboError(f"gbdt-rank's shipped scorer trained on {dataset_of(ctx.task)}",
                          hint="replay it on the heldout bench only (--benches heldout)")
    ids = [c.id for c in scorer.pool.configs]
    positions = [(ids.index(c), v) for c, v in history]
    index = RankChooser(scorer, ctx.card)(positions, {p for p, _ in positions})
    return None if index is None else ids[index]


@register("oracle-pool")
def oracle_pool(ctx: Context, history: History) -> str | None:
    """The ceiling: the task's own best entry (it reads ``own_scores``), once."""
    finite = {c: s for c, s in ctx.own_scores.items() if np.isfinite(s)}
    return None if history or not finite else min(finite, key=finite.__getitem__)


@register("random-over-pool", seeds=10)
def random_over_pool(ctx: Context, history: History) -> str | None:
    """The pool in a random order (``ctx.seed``): the floor of any pool method."""
    order = ctx.cached(("random", ctx.task, ctx.seed), lambda: list(
        np.random.default_rng(ctx.seed).permutation(list(ctx.pool_ids))))
    return _untried([str(c) for c in order], history)
