"""Examples for a learned scorer: (card, the run's history, a candidate) -> its target.

A query is one moment of a run on one training row (variant, family): the entries tried so
far with their matrix scores, and every untried pool entry as a candidate. A candidate's
target is its **log error ratio to the run's best so far** (to the library defaults while
nothing has been tried: the single-shot case), with its standard error. Both follow from the
row's ratios to the defaults (``sllmbo.data.rank_targets``) by subtraction. An acquisition
over these targets is exactly the expected improvement over the best so far, in the
metric's units.

Histories are drawn as a run produces them: a length from 0 to ``MAX_TRIED``, then one of
three orders: the greedy portfolio's prefix (what ``portfolio`` and the first trials of
``feedback`` try), the portfolio's first ``FEEDBACK_START`` entries followed by entries a good
chooser would try (drawn with weight ``exp(-regret / 0.3)``, as a scorer that works picks),
or entries drawn at random (so that the scores, not the order, carry the signal). The empty
history is every row's first query.

Validation datasets come from the training split only: each training dataset falls in one of
``N_FOLDS`` folds by a seeded hash of its name, and fold 0 is validation. Every dataset is
checked against the held-out split, and a held-out one is refused.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from sllmbo.data.pool_select import FEEDBACK_START, greedy_portfolio, regret_matrix, task_type_of
from sllmbo.data.rank_features import Evidence, query_features
from sllmbo.data.rank_targets import FAILED_LOG_RATIO, RowTargets
from sllmbo.data.splits import refuse_heldout

#: The longest history sampled (past ~10 trials a run leaves the pool for TPE).
MAX_TRIED = 10
N_FOLDS = 5
SPLIT_SEED = 14
#: Temperature of the "good chooser" histories, on the portfolio's regret scale.
GOOD_TEMPERATURE = 0.3


def dataset_fold(dataset: str, n_folds: int = N_FOLDS, seed: int = SPLIT_SEED) -> int:
    """The fold of a training dataset (a seeded hash of its name: stable as datasets are
    added). A held-out dataset is refused."""
    refuse_heldout(dataset, "put into a scorer's training or validation folds")
    digest = hashlib.sha256(f"{seed}:{dataset}".encode()).hexdigest()
    return int(digest, 16) % n_folds


def split_rows(rows: Sequence[RowTargets], fold: int = 0, n_folds: int = N_FOLDS,
               seed: int = SPLIT_SEED) -> tuple[list[RowTargets], list[RowTargets]]:
    """(learning rows, validation rows): validation is the datasets of ``fold``."""
    learn, valid = [], []
    for row in rows:
        (valid if dataset_fold(row.dataset, n_folds, seed) == fold else learn).append(row)
    return learn, valid


def portfolios(rows: Sequence[RowTargets]) -> dict[str, list[int]]:
    """The greedy portfolio (pool positions, whole pool) of each task type on ``rows``."""
    out = {}
    for task_type in ("classification", "regression"):
        table = [_finite_ratio(r) for r in rows if task_type_of(r.card) == task_type]
        if table:
            order, _ = greedy_portfolio(regret_matrix(np.stack(table).T), len(table[0]))
            out[task_type] = order
    return out


def sample_history(row: RowTargets, folio: Sequence[int], rng: random.Random,
                   length: int, kind: str) -> list[int]:
    """``length`` pool positions tried (all but one at most), in order, as a run of
    ``kind`` ('portfolio', 'good' or 'random') would have tried them on ``row``."""
    n = len(row.log_ratio)
    length = min(length, n - 1)  # at least one candidate is left
    if kind == "portfolio":
        return list(folio[:length])
    if kind == "random":
        return rng.sample(range(n), length)
    if kind != "good":
        raise ValueError(f"unknown history kind {kind!r}")
    tried = list(folio[:min(FEEDBACK_START, length)])
    regret = regret_matrix(_finite_ratio(row)[:, None])[:, 0]
    weights = np.exp(-regret / GOOD_TEMPERATURE)
    while len(tried) < length:
        left = [i for i in range(n) if i not in tried]
        tried.append(rng.choices(left, weights=[weights[i] for i in left])[0])
    return tried


@dataclass
class Examples:
    """Rows of features ``X``, their targets (log ratio to the run's reference) and
    standard errors, and query sizes (consecutive rows of one query), with each row's
    candidate position and each query's source row."""

    X: np.ndarray
    target: np.ndarray
    target_se: np.ndarray
    groups: list[int]
    positions: np.ndarray
    query_rows: list[str]


def query_target(row: RowTargets, tried: Sequence[int], candidates: Sequence[int]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Each candidate's log ratio to the run's reference (the best finite tried entry; the
    defaults when none is) and its standard error (the candidate's and the reference's)."""
    finite = [i for i in tried if np.isfinite(row.log_ratio[i])]
    ref = min(finite, key=lambda i: row.log_ratio[i]) if finite else row.defaults
    cand = np.asarray(candidates, dtype=int)
    target = row.log_ratio[cand] - row.log_ratio[ref]
    se = np.sqrt(row.rel_se[cand] ** 2 + row.rel_se[ref] ** 2)
    return target, se


def history_of(row: RowTargets, tried: Sequence[int]) -> list[tuple[int, float | None]]:
    """(position, score or None) of the tried entries, as a run records them."""
    return [(i, float(row.scores[i]) if np.isfinite(row.scores[i]) else None) for i in tried]


def build_examples(rows: Sequence[RowTargets], evidence_rows: Sequence[RowTargets],
                   unit: np.ndarray, n_histories: int = 8, seed: int = 0,
                   candidates: int | None = None) -> Examples:
    """Queries of every row in ``rows`` (one family): the empty history, then
    ``n_histories`` sampled ones (kinds in turn); ``candidates`` untried entries drawn at
    random as its candidates (None: every untried entry). The
    evidence is ``evidence_rows`` without the query's own dataset; the histories' portfolio
    is built on ``evidence_rows``."""
    rng = random.Random(seed)
    evidence = Evidence.from_rows(evidence_rows)
    folios = portfolios(evidence_rows)
    kinds = ("portfolio", "good", "random")
    X, target, se, groups, positions, query_rows = [], [], [], [], [], []
    for row in rows:
        refuse_heldout(row.dataset, "build scorer examples from")
        folio = folios[task_type_of(row.card)]
        histories: list[list[int]] = [[]]
        for h in range(n_histories):
            tried = sample_history(row, folio, rng, rng.randint(1, MAX_TRIED),
                                   kinds[h % len(kinds)])
            if tried not in histories:
                histories.append(tried)
        for tried in histories:
            cands = [i for i in range(len(row.log_ratio)) if i not in tried]
            if candidates is not None and len(cands) > candidates:
                cands = sorted(rng.sample(cands, candidates))
            X.append(query_features(row.card, history_of(row, tried), cands, unit, evidence,
                                    exclude_dataset=row.dataset))
            t, s = query_target(row, tried, cands)
            target.append(t)
            se.append(s)
            groups.append(len(cands))
            positions.append(np.asarray(cands))
            query_rows.append(f"{row.variant}:{row.family}")
    return Examples(np.concatenate(X), np.concatenate(target), np.concatenate(se), groups,
                    np.concatenate(positions), query_rows)


def _finite_ratio(row: RowTargets) -> np.ndarray:
    """The row's log ratios with a failed fit counted as ``FAILED_LOG_RATIO``."""
    return np.where(np.isfinite(row.log_ratio), row.log_ratio, FAILED_LOG_RATIO)

