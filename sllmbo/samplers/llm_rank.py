"""``llm-rank``: the LLM as a learned scorer of candidates, in the loop and in ``recommend``.

Formulation (a) of [14/16]. Each trial, every untried entry of the committed pool is a
candidate; the adapter reads the task card, the run's history (tried entries with their
errors as ratios to the best so far) and one candidate, and its next-token distribution over
the ten bin digits (``sllmbo.core.rank_prompts``) is that candidate's predicted error-ratio
bin. The acquisition (``sllmbo.rank``: expected improvement by default) picks the trial. One
forward pass per candidate and no decoding; the backend's ``choice_logprobs`` computes the
prompts' shared head (card, history, question) once per trial.

The empty history is the single-shot case: ``rank_recommend`` is ``recommend --decode rank``,
and it is also the loop's first trial. Past ``POOL_TRIALS`` pool trials the trials are TPE's
(the ``PoolSampler``'s): the prompts name candidates by pool position, which a TPE proposal
does not have, and the training histories are no longer than that.

The prompts are rendered exactly as the training data renders them
(``sllmbo.data.rank_instructions``): the family's default space, the pool's name, and a card
reduced to the fields the matrix's cards carry (``rank_card``), so a description or a
user's metric name cannot shift what the adapter sees.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import get_family
from sllmbo.core.rank_prompts import RANK_BIN_TOKENS, bin_distribution, rank_messages
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.matrix_examples import pick_pool_name
from sllmbo.data.rank_targets import BIN_RATIOS
from sllmbo.rank import (
    ACQUISITIONS,
    POOL_TRIALS,
    History,
    RankChooser,
    acquisition_values,
    check_bins,
    pick,
    rank_candidates,
)
from sllmbo.recommendation import Recommendation
from sllmbo.samplers.pool import PoolSampler

if TYPE_CHECKING:
    from sllmbo.core.space import SearchSpace
    from sllmbo.data.pool import Pool
    from sllmbo.inference.base import Backend


def rank_card(card: TaskCard | Mapping[str, Any]) -> TaskCard:
    """``card`` as the scorer's training data shows one: an error metric by task type
    (log loss or rmse, minimized), no description, no row-cap note."""
    card = card if isinstance(card, TaskCard) else TaskCard.model_validate(dict(card))
    metric = "log_loss" if card.task_type == "classification" else "rmse"
    return card.model_copy(update={"metric": metric, "direction": "minimize",
                                   "description": "", "full_train_rows": None})


class LLMRankScorer:
    """The adapter as a ``sllmbo.rank.Scorer`` over ``pool``: ``bins`` per candidate and the
    acquisition's ``choose``. ``calls`` and ``seconds`` count its forward batches."""

    def __init__(self, backend: Backend, pool: Pool) -> None:
        self.backend, self.pool = backend, pool
        self.space = get_family(pool.family).default  # the space the training prompts show
        self.pool_name = pick_pool_name(pool)
        self.calls, self.seconds = 0, 0.0

    def bins(self, card: TaskCard | Mapping[str, Any], history: History,
             candidates: Sequence[int]) -> np.ndarray:
        shown = rank_card(card)
        prompts = [rank_messages(shown, self.space, self.pool_name, history, i,
                                 self.pool.configs[i].config, BIN_RATIOS) for i in candidates]
        start = time.perf_counter()
        logp = self.backend.choice_logprobs(prompts, RANK_BIN_TOKENS)
        self.calls, self.seconds = self.calls + 1, self.seconds + time.perf_counter() - start
        try:
            probs = np.asarray(bin_distribution(logp), dtype=float)
        except ValueError as err:
            raise SllmboError(f"the {self.backend.name} backend returned unusable bin scores: "
                              f"{err}", hint="report this as a bug") from None
        return check_bins(probs, len(candidates))

    def choose(self, card: TaskCard | Mapping[str, Any], history: History,
               candidates: Sequence[int], acquisition: str = "ei") -> int:
        if not len(candidates):  # before the backend is asked for nothing
            raise SllmboError("no candidate to pick from")
        return pick(self.bins(card, history, candidates), candidates, acquisition)


def build_llm_rank(*, card: TaskCard | None = None, space: SearchSpace | None = None,
                   seed: int | None = None, backend: Backend | None = None,
                   acquisition: str = "ei", pool_trials: int = POOL_TRIALS,
                   **options: Any) -> PoolSampler:
    """``llm-rank`` by name (``sllmbo.samplers.registry``)."""
    from sllmbo.scoring import committed_pool

    if options:
        raise SllmboError(f"sampler 'llm-rank' takes no options, got {sorted(options)}")
    if card is None or space is None or backend is None:
        raise SllmboError("sampler 'llm-rank' needs the task card, the search space and an "
                          "LLM backend")
    if card.direction != "minimize":
        raise SllmboError(f"llm-rank scores error metrics (minimized), not {card.metric} "
                          "(maximized)", hint="tune rmse or log_loss, or use another sampler")
    if acquisition not in ACQUISITIONS:
        raise SllmboError(f"unknown acquisition '{acquisition}'",
                          hint=f"choose one of: {', '.join(ACQUISITIONS)}")
    scorer = LLMRankScorer(backend, committed_pool(card.model_family))
    chooser = RankChooser(scorer, card.model_dump(), acquisition, pool_trials)
    return PoolSampler(configs=[c.config for c in scorer.pool.configs], space=space,
                       choose=chooser, seed=seed)


def rank_recommend(backend: Backend, card: TaskCard, space: SearchSpace, n: int,
                   acquisition: str = "ei") -> Recommendation:
    """The ``n`` pool entries (of those inside ``space``) of highest acquisition for the card
    alone: each entry's predicted bin of its error ratio to the library defaults. ``scores``
    are the acquisition's values (expected improvement: the expected log-error reduction)."""
    from sllmbo.scoring import committed_pool, entries_in_space

    start = time.perf_counter()
    pool = committed_pool(card.model_family)
    inside = entries_in_space(pool, space)
    if n > len(inside):
        raise SllmboError(f"--decode rank chooses from the {len(inside)} pool entries in this "
                          f"space; got --n {n}", hint=f"use --n {len(inside)} or less")
    scorer = LLMRankScorer(backend, pool)
    candidates = sorted(inside)
    probs = scorer.bins(card, (), candidates)
    value = dict(zip(candidates, acquisition_values(probs, acquisition), strict=True))
    order = rank_candidates(probs, candidates, acquisition)[:n]
    return Recommendation(configs=[inside[i] for i in order], repairs=[[] for _ in order],
                          requests=len(candidates), latency_s=time.perf_counter() - start,
                          scores=[float(value[i]) for i in order])
