"""A learned scorer of candidates and the acquisition that picks the next trial from it.

A scorer maps (task card, the run's history, candidate pool positions) to a distribution,
per candidate, over the bins of its error ratio to the run's best so far (to the library
defaults when nothing has been tried; ``sllmbo.data.rank_targets`` defines the bins). The
formulation is OptFormer's in expected-improvement mode: score candidates, then take the
argmax of a discrete acquisition over the predicted bins. Two acquisitions:

- ``ei``, expected improvement: ``sum_b p_b * max(0, -value_b)``, a bin's improvement being
  the log error ratio it stands for (``BIN_VALUES``), so EI is in the metric's units (0.05:
  about 5% lower error expected);
- ``pi``, probability of improvement: the mass of the bins wholly below a ratio of 0.98
  (the tie bin, within 2%, counts as no improvement).

Ties go to the candidate whose distribution has the lower expected ratio (a safer pick),
then to the lower pool position.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from sllmbo.core.errors import SllmboError
from sllmbo.data.rank_targets import BIN_VALUES, N_BINS

ACQUISITIONS = ("ei", "pi")
History = Sequence[tuple[int, float | None]]
#: Pool entries a scorer's run tries before TPE takes over (the training examples'
#: histories are at most this long, and a TPE proposal has no pool position to score).
POOL_TRIALS = 10


class Scorer(Protocol):
    """What the loop asks a learned scorer: the LightGBM one (``sllmbo.samplers.gbdt_rank``)
    or the LLM (``sllmbo.samplers.llm_rank``). ``pool`` is the pool its positions index."""

    pool: Any

    def bins(self, card: Mapping[str, Any], history: History,
             candidates: Sequence[int]) -> np.ndarray:
        """(len(candidates), N_BINS) probabilities of each candidate's ratio bin."""
        ...

    def choose(self, card: Mapping[str, Any], history: History, candidates: Sequence[int],
               acquisition: str = "ei") -> int:
        """The candidate (a pool position) the acquisition picks."""
        ...


def check_bins(probs: np.ndarray, n_candidates: int) -> np.ndarray:
    """``probs`` as a float array of shape (n_candidates, N_BINS), rows summing to 1;
    ``SllmboError`` for another shape or rows that are not distributions."""
    probs = np.asarray(probs, dtype=float)
    if probs.shape != (n_candidates, N_BINS):
        raise SllmboError(f"a scorer returned bins of shape {probs.shape}, expected "
                          f"({n_candidates}, {N_BINS})")
    if (probs < -1e-9).any() or not np.allclose(probs.sum(axis=1), 1.0, atol=1e-4):
        raise SllmboError("a scorer returned bin probabilities that are not distributions")
    return np.clip(probs, 0.0, None)


def expected_improvement(probs: np.ndarray) -> np.ndarray:
    """Per candidate, the expected reduction of the log error ratio below the best so far."""
    return np.asarray(probs) @ np.maximum(0.0, -BIN_VALUES)


def probability_of_improvement(probs: np.ndarray) -> np.ndarray:
    """Per candidate, the probability that its ratio lands in a bin wholly below 0.98."""
    return np.asarray(probs)[:, BIN_VALUES < -0.02].sum(axis=1)


def expected_log_ratio(probs: np.ndarray) -> np.ndarray:
    return np.asarray(probs) @ BIN_VALUES


def acquisition_values(probs: np.ndarray, acquisition: str = "ei") -> np.ndarray:
    if acquisition == "ei":
        return expected_improvement(probs)
    if acquisition == "pi":
        return probability_of_improvement(probs)
    raise SllmboError(f"unknown acquisition '{acquisition}'",
                      hint=f"choose one of: {', '.join(ACQUISITIONS)}")


def pick(probs: np.ndarray, candidates: Sequence[int], acquisition: str = "ei") -> int:
    """The candidate (a pool position) of the highest acquisition value."""
    if not len(candidates):
        raise SllmboError("no candidate to pick from")
    return rank_candidates(probs, candidates, acquisition)[0]

def rank_candidates(probs: np.ndarray, candidates: Sequence[int],
                    acquisition: str = "ei") -> list[int]:
    """Every candidate, best acquisition value first (the same order ``pick`` uses)."""
    probs = check_bins(probs, len(candidates))
    value = np.round(acquisition_values(probs, acquisition), 12)
    mean = expected_log_ratio(probs)
    order = sorted(range(len(candidates)), key=lambda j: (-value[j], mean[j], candidates[j]))
    return [int(candidates[j]) for j in order]


class RankChooser:
    """A ``PoolSampler`` chooser: the scorer's pick among the untried entries, until
    ``pool_trials`` entries are taken (then None: TPE samples)."""

    def __init__(self, scorer: Scorer, card: Mapping[str, Any], acquisition: str = "ei",
                 pool_trials: int = POOL_TRIALS) -> None:
        if acquisition not in ACQUISITIONS:
            raise SllmboError(f"unknown acquisition '{acquisition}'",
                              hint=f"choose one of: {', '.join(ACQUISITIONS)}")
        self.scorer, self.card = scorer, dict(card)
        self.acquisition, self.pool_trials = acquisition, pool_trials

    def __call__(self, history: History, taken: set[int]) -> int | None:
        # finished pool trials, not ``taken``: that also holds entries outside a narrowed space
        if len(history) >= self.pool_trials:
            return None
        left = [i for i in range(len(self.scorer.pool)) if i not in taken]
        if not left:
            return None
        return self.scorer.choose(self.card, history, left, self.acquisition)
