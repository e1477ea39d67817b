"""Recommend by scoring: rank a pool of candidate configurations with the model, no decoding.

The scoring formulation of [10/12] (and, at the end, the pick formulation: the model names a
pool entry, and one forward pass ranks the whole pool). For each candidate the model reads
``score_messages(card, space, config)`` and its next-token distribution over the ten digits
``SCORE_ANSWERS`` is the predicted rank decile of that configuration on this task (0: among the
best tenth of the pool). One forward pass per candidate and no decoding: the backend's
``choice_logprobs`` computes the prompts' shared head (card, space, question) once.

A list for budget ``n`` is chosen to be good *together*, since the evaluation scores the best of
the first ``n``: candidates are added greedily to minimize the expected best decile of the list,
``E[min D] = sum_{d>=1} prod_c P(D_c >= d)``, with the deciles of different candidates taken as
independent. The first pick is the lowest expected decile; later picks favour a candidate that
is likely best where the list so far is likely not, over a near-copy of the first.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from sllmbo.core.errors import ConfigError, SllmboError
from sllmbo.core.prompts import SCORE_ANSWERS, score_messages
from sllmbo.core.space import SearchSpace
from sllmbo.core.taskcard import TaskCard
from sllmbo.recommendation import Recommendation

if TYPE_CHECKING:
    from sllmbo.data.pool import Pool
    from sllmbo.inference.base import Backend


def decile_probabilities(backend: Backend, card: TaskCard | None, space: SearchSpace,
                         candidates: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """(candidates x 10) predicted rank-decile distributions, each row normalized over the
    ten digits (the mass the model puts elsewhere is not an answer)."""
    prompts = [score_messages(card, space, c) for c in candidates]
    logp = np.asarray(backend.choice_logprobs(prompts, SCORE_ANSWERS), dtype=float)
    if logp.shape != (len(candidates), len(SCORE_ANSWERS)) or not np.isfinite(logp).all():
        raise SllmboError(f"the {backend.name} backend returned {logp.shape} scores for "
                          f"{len(candidates)} candidates", hint="report this as a bug")
    p = np.exp(logp - logp.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


def expected_decile(probs: np.ndarray) -> np.ndarray:
    """Each candidate's expected predicted decile (0 best, 9 worst)."""
    return probs @ np.arange(probs.shape[1])


def expected_best_decile(probs: np.ndarray) -> float:
    """E[min decile] of a list of candidates with independent decile distributions (rows)."""
    at_least = 1.0 - np.cumsum(probs, axis=1)[:, :-1]  # P(D >= d) for d = 1..9
    return float(np.prod(at_least, axis=0).sum())


def complementary_order(probs: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` candidates chosen greedily to minimize the list's expected best
    decile (ties: the earlier candidate, so the pool's order breaks them)."""
    chosen: list[int] = []
    left = list(range(len(probs)))
    while left and len(chosen) < n:
        values = [expected_best_decile(probs[[*chosen, i]]) for i in left]
        best = left[int(np.argmin(values))]
        chosen.append(best)
        left.remove(best)
    return chosen


def committed_pool(family: str) -> Pool:
    """The committed pool of ``family`` (``data/matrix/pool.json``), read once per call."""
    from sllmbo.data.matrix import POOL_FILE
    from sllmbo.data.pool import read_pools

    pools = read_pools(POOL_FILE)
    if family not in pools:
        raise SllmboError(f"the committed pool has no {family} configurations",
                          hint=f"use one of {', '.join(sorted(pools))}, or "
                          "--decode consensus")
    return pools[family]


def entries_in_space(pool: Pool, space: SearchSpace) -> dict[int, dict[str, Any]]:
    """The entries of ``pool`` that lie in ``space`` (all of them in the family's default
    space), by pool position; one clear error when none does."""
    inside: dict[int, dict[str, Any]] = {}
    for i, entry in enumerate(pool.configs):
        try:
            inside[i] = space.validate(entry.config)
        except ConfigError:
            continue
    if not inside:
        raise SllmboError(f"no {pool.family} pool configuration lies in this search space",
                          hint="use the family's default space, or --decode consensus")
    return inside


def pool_candidates(family: str, space: SearchSpace) -> list[dict[str, Any]]:
    """The committed pool of ``family`` (``data/matrix/pool.json``), the entries that lie in
    ``space`` (all of them in the family's default space)."""
    return list(entries_in_space(committed_pool(family), space).values())


def pick_probabilities(backend: Backend, card: TaskCard | None, pool: Pool,
                       tried: Sequence[tuple[int, float | None]] = ()) -> np.ndarray:
    """The model's probability of each entry of ``pool`` (pool order), read off one forward
    pass of ``pick_messages``: the pick formulation. With ``tried`` (pool position, score)
    the few-shot pick: the tried entries get probability 0 and the rest are renormalized."""
    from sllmbo.core.prompts import PICK_NAMES, pick_messages
    from sllmbo.data.matrix_examples import pick_pool_name

    names = PICK_NAMES[:len(pool)]
    (logp,) = np.asarray(backend.choice_logprobs(
        [pick_messages(card, pick_pool_name(pool), len(pool), tried)], names), dtype=float)
    if logp.shape != (len(pool),) or not np.isfinite(logp).all():
        raise SllmboError(f"the {backend.name} backend returned {logp.shape} scores for a "
                          f"pool of {len(pool)}", hint="report this as a bug")
    logp = logp.copy()
    logp[[i for i, _ in tried]] = -np.inf
    p = np.exp(logp - logp.max())
    return p / p.sum()


def feedback_pick(backend: Backend, card: TaskCard | None, pool: Pool,
                  tried: Sequence[tuple[int, float | None]]) -> int:
    """The pool position of the untried entry the model names most probably, given how the
    ``tried`` ones scored on this task (the few-shot pick)."""
    if len(tried) >= len(pool):
        raise SllmboError("every pool entry has been tried: nothing left to pick")
    return int(np.argmax(pick_probabilities(backend, card, pool, tried)))


def pick_recommend(backend: Backend, card: TaskCard, space: SearchSpace, n: int,
                   family: str) -> Recommendation:
    """The pool entry the model names most probably (of those that lie in ``space``), then
    the entries that best complement it on the training matrix's rows of the card's task type.

    A budget of ``n`` scores the best of the first ``n``, so the list must be good together:
    the model's own next most probable entries are near-copies of its first (on validation
    they lost to the portfolio at 5 trials, where this list, ``validate_adapter``'s
    ``pick-complement``, did not lose). ``scores`` are the model's probabilities."""
    from sllmbo.data.pool_select import complement, training_table

    start = time.perf_counter()
    pool = committed_pool(family)
    probs = pick_probabilities(backend, card, pool)
    valid = entries_in_space(pool, space)
    first = max(valid, key=lambda i: (probs[i], -i))
    order = [first]
    if n > 1:
        table = training_table(pool, card.task_type)
        order += [i for i in complement(table, [first], len(pool))[1:] if i in valid][:n - 1]
    return Recommendation(configs=[valid[i] for i in order], repairs=[[] for _ in order],
                          requests=1, latency_s=time.perf_counter() - start,
                          scores=[float(probs[i]) for i in order])


def score_recommend(backend: Backend, card: TaskCard | None, space: SearchSpace, n: int,
                    candidates: Sequence[Mapping[str, Any]]) -> Recommendation:
    """The ``n`` candidates the model ranks best together (see the module docstring)."""

    if not candidates:
        raise SllmboError("nothing to score: no candidate configurations")
    start = time.perf_counter()
    probs = decile_probabilities(backend, card, space, candidates)
    order = complementary_order(probs, n)
    expected = expected_decile(probs)
    return Recommendation(
        configs=[dict(candidates[i]) for i in order], repairs=[[] for _ in order],
        requests=len(candidates), latency_s=time.perf_counter() - start,
        scores=[float(expected[i]) for i in order])
