"""The candidate pool of the meta-dataset: one fixed list of configurations per model family.

Every pool configuration is scored on every training variant (:mod:`sllmbo.data.matrix`), so a
task's ranking of the pool is measured, not guessed from one noisy study. Three sources, as
auto-sklearn's and FLAML's portfolios are seeded, deduplicated after rounding:

- the library's defaults (what a user gets without tuning);
- good configurations from real studies: the best trial of each training study of the corpus
  whose sampler seed was its own (the random-search studies) or whose best trial TPE proposed
  after its startup (TPE trial number >= 10; the startup points were shared across tasks),
  thinned to a space-filling subset by farthest-point selection;
- space-filling points of the family's default space (a scrambled Sobol sequence,
  ``scipy.stats.qmc``), so the pool also covers regions no study liked at 1,000 rows.

Numbers are rounded to three significant digits: the pool is also what a recommender reads and
writes, and short numbers keep prompts compact. The pool file carries a hash of its content;
a matrix built from another pool is refused.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.core.errors import ConfigError, SllmboError
from sllmbo.core.families import get_family, library_defaults
from sllmbo.core.space import CategoricalParam, FloatParam, IntParam, SearchSpace

POOL_FORMAT = "sllmbo-pool/1"
#: Families the pool and the matrix cover. Random forest and MLP are left out for compute:
#: the matrix of two boosting families already fills the 24 core-hour budget.
POOL_FAMILIES: tuple[str, ...] = ("lightgbm", "xgboost")
#: Configurations per family from each source (the defaults are one more).
N_FROM_STUDIES = 29
N_SOBOL = 30
#: TPE's first trials are its random startup; in the corpus they were the same on every task.
TPE_STARTUP_TRIALS = 10


@dataclass(frozen=True)
class PoolConfig:
    """One configuration of the pool: ``id`` (``lightgbm-007``), where it came from, values."""

    id: str
    source: str
    config: dict[str, Any]


@dataclass(frozen=True)
class Pool:
    """The pool of one family, in its fixed order (indices are the matrix's columns)."""

    family: str
    configs: tuple[PoolConfig, ...]

    @property
    def hash(self) -> str:
        return pool_hash(self.family, [c.config for c in self.configs])

    def __len__(self) -> int:
        return len(self.configs)


def pool_hash(family: str, configs: Sequence[Mapping[str, Any]]) -> str:
    text = json.dumps({"family": family, "configs": list(configs)}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def round_config(config: Mapping[str, Any], space: SearchSpace) -> dict[str, Any]:
    """``config`` with floats at three significant digits, clipped back into ``space``."""
    out: dict[str, Any] = {}
    for p in space:
        value = config[p.name]
        if isinstance(p, FloatParam):
            value = float(f"{float(value):.3g}")
            value = min(max(value, p.low), p.high)
        elif isinstance(p, IntParam):
            value = int(min(max(round(value), p.low), p.high))
        out[p.name] = value
    return out


def to_unit(config: Mapping[str, Any], space: SearchSpace) -> np.ndarray:
    """``config`` as a point of the unit cube (log scale where the parameter is)."""
    point = []
    for p in space:
        value = config[p.name]
        if isinstance(p, CategoricalParam):
            point.append((p.choices.index(value) + 0.5) / len(p.choices))
        elif p.log:
            point.append((math.log(value) - math.log(p.low)) / (math.log(p.high) - math.log(p.low)))
        else:
            point.append((value - p.low) / (p.high - p.low))
    return np.clip(np.array(point, dtype=float), 0.0, 1.0)


def from_unit(u: Sequence[float], space: SearchSpace) -> dict[str, Any]:
    """The configuration at unit-cube point ``u`` (the inverse of ``to_unit``)."""
    out: dict[str, Any] = {}
    for p, x in zip(space, u, strict=True):
        if isinstance(p, CategoricalParam):
            out[p.name] = p.choices[min(int(x * len(p.choices)), len(p.choices) - 1)]
        elif p.log:
            out[p.name] = math.exp(math.log(p.low) + x * (math.log(p.high) - math.log(p.low)))
        else:
            out[p.name] = p.low + x * (p.high - p.low)
    return out


def sobol_configs(space: SearchSpace, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` scrambled Sobol points of ``space`` (``n`` a power of two is best balanced; the
    first ``n`` of a longer sequence are used otherwise)."""
    from scipy.stats import qmc

    sampler = qmc.Sobol(d=len(space), scramble=True, seed=seed)
    points = sampler.random(2 ** math.ceil(math.log2(max(n, 1))))[:n]
    return [round_config(from_unit(u, space), space) for u in points]


def farthest_points(points: np.ndarray, n: int) -> list[int]:
    """Indices of ``n`` rows of ``points`` chosen greedily, each farthest from those already
    chosen (the first: the row nearest the centroid); deterministic."""
    if len(points) <= n:
        return list(range(len(points)))
    chosen = [int(np.argmin(((points - points.mean(axis=0)) ** 2).sum(axis=1)))]
    dist = ((points - points[chosen[0]]) ** 2).sum(axis=1)
    while len(chosen) < n:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((points - points[nxt]) ** 2).sum(axis=1))
    return chosen


def study_bests(studies: Sequence[Any], family: str) -> list[tuple[str, dict[str, Any]]]:
    """(study name, best configuration) of each usable training study of ``family``: random
    search (a seed of its own per study) or a TPE best proposed after the shared startup."""
    from sllmbo.data.instructions import select_studies
    from sllmbo.data.splits import heldout_match

    space = get_family(family).default
    out = []
    for usable in select_studies(studies, rules=[]).usable:
        card, log = usable.card, usable.log
        if card.model_family != family or heldout_match(card.task) or heldout_match(log.name):
            continue
        trials = [t for t in log.complete if space.contains(t.params) and t.value is not None]
        if not trials:
            continue
        sign = 1.0 if log.direction == "minimize" else -1.0
        best = min(trials, key=lambda t: sign * t.value)
        sampler = (log.user_attrs.get("sllmbo:run") or {}).get("sampler")
        if sampler == "tpe" and best.number < TPE_STARTUP_TRIALS:
            continue
        out.append((log.name, dict(best.params)))
    return sorted(out)


def build_pool(family: str, studies: Sequence[Any]) -> Pool:
    """The pool of ``family``: defaults, then space-filling study bests, then Sobol points,
    deduplicated after rounding."""
    fam = get_family(family)
    space = fam.default
    defaults, _ = space.clip({**{p.name: _middle(p) for p in space}, **library_defaults(fam)})
    entries: list[tuple[str, dict[str, Any]]] = [("defaults", round_config(defaults, space))]
    bests = [(name, round_config(c, space)) for name, c in study_bests(studies, fam.name)]
    if bests:
        points = np.stack([to_unit(c, space) for _, c in bests])
        entries += [(f"study:{bests[i][0]}", bests[i][1])
                    for i in farthest_points(points, N_FROM_STUDIES)]
    entries += [("sobol", c) for c in sobol_configs(space, N_SOBOL, seed=0)]
    seen: set[str] = set()
    configs = []
    for source, config in entries:
        key = json.dumps(config, sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        configs.append(PoolConfig(f"{fam.name}-{len(configs):03d}", source, config))
    return Pool(fam.name, tuple(configs))


def _middle(p: Any) -> Any:
    """A placeholder for a parameter the library leaves open (clip keeps it in range)."""
    if isinstance(p, CategoricalParam):
        return p.choices[0]
    return math.sqrt(p.low * p.high) if p.log else (p.low + p.high) / 2


# ------------------------------------------------------------------------------ files

def write_pools(pools: Sequence[Pool], path: str | Path) -> Path:
    path = Path(path)
    record = {
        "format": POOL_FORMAT,
        "families": {
            p.family: {
                "hash": p.hash,
                "space": get_family(p.family).default.to_dict(),
                "configs": [{"id": c.id, "source": c.source, "config": c.config}
                            for c in p.configs],
            }
            for p in pools
        },
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # a refused replace leaves no half-written pool behind
    return path


def read_pools(path: str | Path) -> dict[str, Pool]:
    """The pools in ``path``; ``SllmboError`` for a file that is not a pool file, whose hash
    does not match its configurations, or whose configurations leave their family's limits."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise SllmboError(f"cannot read the pool file {path}: {err}",
                          hint="rebuild it: sllmbo data pool") from None
    if not isinstance(record, dict) or record.get("format") != POOL_FORMAT:
        raise SllmboError(f"{path} is not a pool file (format {POOL_FORMAT})")
    pools = {}
    for family, entry in record["families"].items():
        fam = get_family(family)
        configs = tuple(PoolConfig(c["id"], c["source"], dict(c["config"]))
                        for c in entry["configs"])
        for c in configs:
            try:
                fam.hard_limits().validate(c.config)
            except ConfigError as err:
                raise SllmboError(f"pool configuration {c.id} in {path} is outside the "
                                  f"{family} space: {err}") from None
        pool = Pool(fam.name, configs)
        if pool.hash != entry["hash"]:
            raise SllmboError(f"the {family} pool in {path} does not match its hash "
                              f"(edited by hand?)", hint="rebuild it: sllmbo data pool")
        pools[fam.name] = pool
    return pools
