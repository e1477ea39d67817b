"""``gbdt-rank``: pool entries picked by a LightGBM scorer through the acquisition.

Each trial, the untried pool entries are the candidates; the scorer shipped in
``data/matrix/gbdt_rank.json.gz`` (``sllmbo.training.gbdt_rank``) reads the card, the run's
history and each candidate, and the acquisition (``sllmbo.rank``, expected improvement by
default) picks one. The empty history is the single-shot case: the first trial is the
scorer's pick for the card alone (a ``recommend`` path can call ``GbdtScorer.choose`` with
no history).

Past the pool's reach (``pool_trials`` entries, 10 by default: the examples' histories
are at most that long) the trials are **TPE's own**: the ``PoolSampler``'s TPE, which by
then has ``pool_trials`` finished trials and is past its random start-up. Re-ranking TPE's
proposals by this scorer is not possible: its features name pool positions, and a TPE
proposal is none of them.

The history is the study's (``PoolSampler.history``), so a killed run resumes as it was.
The scorer is trained on error metrics (rmse, log loss: positive, minimized); a maximized
study is refused.
"""

from __future__ import annotations

import functools
import gzip
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sllmbo.core.errors import SllmboError
from sllmbo.data.rank_features import Evidence, query_features
from sllmbo.data.rank_targets import N_BINS, RowTargets, soft_bins
from sllmbo.rank import (
    ACQUISITIONS,
    POOL_TRIALS,
    History,
    RankChooser,
    acquisition_values,
    check_bins,
    rank_candidates,
)
from sllmbo.samplers.pool import PoolSampler
from sllmbo.training.gbdt_rank import ARTIFACT, ARTIFACT_FORMAT, unit_matrix

if TYPE_CHECKING:
    from sllmbo.core.space import SearchSpace
    from sllmbo.core.taskcard import TaskCard
    from sllmbo.data.pool import Pool
    from sllmbo.inference.base import Backend

class GbdtScorer:
    """The scorer of one family: ``bins`` per candidate (the ``Scorer`` protocol) and the
    acquisition's pick. ``entry`` is the artifact's entry of the family; ``evidence`` the
    training rows its retrieval features read."""

    def __init__(self, entry: Mapping[str, Any], pool: Pool,
                 evidence: Sequence[RowTargets] | Evidence | None) -> None:
        import lightgbm as lgb

        if entry.get("pool_hash") != pool.hash:
            raise SllmboError(f"the gbdt-rank model of {pool.family} was trained on another "
                              "pool", hint="retrain it: python -m sllmbo.training.gbdt_rank")
        self.kind = str(entry["kind"])
        self.residual_sd = float(entry.get("residual_sd", 0.0))
        self.pool = pool
        self.unit = unit_matrix(pool.family, pool)
        self.booster = lgb.Booster(model_str=entry["model"])
        if isinstance(evidence, Evidence) or evidence is None:
            self.evidence = evidence
        else:
            self.evidence = Evidence.from_rows([r for r in evidence if r.family == pool.family])

    def raw(self, card: Mapping[str, Any], history: History,
            candidates: Sequence[int]) -> np.ndarray:
        X = query_features(card, history, candidates, self.unit, self.evidence)
        return np.asarray(self.booster.predict(X))

    def bins(self, card: Mapping[str, Any], history: History,
             candidates: Sequence[int]) -> np.ndarray:
        if self.kind == "rank":
            raise SllmboError("a lambdarank gbdt-rank model orders candidates but has no bin "
                              "distribution", hint="use a model of kind 'bins' or 'regress'")
        out = self.raw(card, history, candidates)
        if self.kind == "regress":
            out = soft_bins(out, np.full(len(out), self.residual_sd))
        return check_bins(out.reshape(len(candidates), N_BINS), len(candidates))

    def utility(self, card: Mapping[str, Any], history: History, candidates: Sequence[int],
                acquisition: str = "ei") -> np.ndarray:
        """Per candidate, what the pick maximizes (a ranker's raw score)."""
        if self.kind == "rank":
            return self.raw(card, history, candidates)
        return acquisition_values(self.bins(card, history, candidates), acquisition)

    def choose(self, card: Mapping[str, Any], history: History, candidates: Sequence[int],
               acquisition: str = "ei") -> int:
        if not len(candidates):
            raise SllmboError("no candidate to pick from")
        if self.kind == "rank":
            score = self.raw(card, history, candidates)
            return int(candidates[int(np.argmax(score))])
        return rank_candidates(self.bins(card, history, candidates), candidates,
                               acquisition)[0]


def read_artifact(path: str | Path = ARTIFACT) -> dict[str, Any]:
    try:
        with gzip.open(path, "rt") as fh:
            record = json.load(fh)
    except (OSError, ValueError, EOFError) as err:
        raise SllmboError(f"cannot read the gbdt-rank model {path}: {err}",
                          hint="rebuild it: python -m sllmbo.training.gbdt_rank") from None
    if record.get("format") != ARTIFACT_FORMAT:
        raise SllmboError(f"{path} is not a gbdt-rank model (format {ARTIFACT_FORMAT})")
    return record


@functools.lru_cache(maxsize=4)
def load_scorer(family: str, path: str = str(ARTIFACT)) -> GbdtScorer:
    """The shipped scorer of ``family``, its evidence the whole committed training matrix."""
    from sllmbo.data.matrix import POOL_FILE, read_matrix
    from sllmbo.data.pool import read_pools
    from sllmbo.data.rank_targets import matrix_targets

    record = read_artifact(path)
    if family not in record["families"]:
        raise SllmboError(f"the gbdt-rank model has no {family} scorer",
                          hint=f"use one of: {', '.join(sorted(record['families']))}")
    pools = read_pools(POOL_FILE)
    rows = matrix_targets(read_matrix(pools=pools), {family: pools[family]})
    return GbdtScorer(record["families"][family], pools[family], rows)


def build_gbdt_rank(*, card: TaskCard | None = None, space: SearchSpace | None = None,
                    seed: int | None = None, backend: Backend | None = None,
                    acquisition: str = "ei", pool_trials: int = POOL_TRIALS,
                    **options: Any) -> PoolSampler:
    """``gbdt-rank`` by name (``sllmbo.samplers.registry``)."""
    if options:
        raise SllmboError(f"sampler 'gbdt-rank' takes no options, got {sorted(options)}")
    if card is None or space is None:
        raise SllmboError("sampler 'gbdt-rank' needs the task card and the search space")
    if card.direction != "minimize":
        raise SllmboError(f"gbdt-rank scores error metrics (minimized), not {card.metric} "
                          "(maximized)", hint="tune rmse or log_loss, or use another sampler")
    if acquisition not in ACQUISITIONS:  # before the model loads: fail fast
        raise SllmboError(f"unknown acquisition '{acquisition}'",
                          hint=f"choose one of: {', '.join(ACQUISITIONS)}")
    scorer = load_scorer(card.model_family)
    chooser = RankChooser(scorer, card.model_dump(), acquisition, pool_trials)
    return PoolSampler(configs=[c.config for c in scorer.pool.configs], space=space,
                       choose=chooser, seed=seed)
