"""The corpus portfolio's candidates: the best configurations of the training tasks' corpus
studies, and a seeded, type-stratified order to walk tasks in.

Steps 1 and 2 of the build (:mod:`sllmbo.data.corpus_portfolio`): a snapshot of the trial
logs, the ``top_k`` best distinct default-space configurations per training task and family,
and the distinct ones taken in a stratified order until enough are in hand. Studies of
held-out tasks (by study name or by their card) are refused and counted, as the
instruction-data builder does; a candidate from a held-out task cannot exist.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import FAMILIES, get_family
from sllmbo.data.logged import StudyLog
from sllmbo.data.splits import heldout_match
from sllmbo.data.trial_logs import read_trial_logs


@dataclass(frozen=True)
class Candidate:
    """A corpus configuration: the best (or k-th best) of one training task and family."""

    config: dict[str, Any]
    task: str
    task_type: str
    study: str
    trial: int
    value: float


@dataclass
class Corpus:
    """One snapshot of the trial logs (the corpus is rewritten while it is collected)."""

    path: str
    sha256: str
    studies: list[StudyLog]


@dataclass
class CandidatePool:
    #: source task -> its candidates, best first
    by_task: dict[str, list[Candidate]] = field(default_factory=dict)
    #: held-out task -> studies refused
    heldout_refused: dict[str, int] = field(default_factory=dict)
    n_studies: int = 0
    n_trials: int = 0
    n_outside_space: int = 0


# -- reading the corpus -------------------------------------------------------------------


def read_corpus(path: str | Path) -> Corpus:
    """Read a snapshot of ``path`` (any storage ``read_trial_logs`` reads). An export file is
    copied first, so its hash and its studies are the same bytes even while it is rewritten."""
    path = Path(path)
    if path.is_file():
        data = path.read_bytes()
        with tempfile.TemporaryDirectory() as tmp:
            copy = Path(tmp) / path.name
            copy.write_bytes(data)
            studies = read_trial_logs(copy).studies
        return Corpus(str(path), hashlib.sha256(data).hexdigest(), studies)
    return Corpus(str(path), "", read_trial_logs(str(path)).studies)


def config_key(config: Mapping[str, Any]) -> str:
    return json.dumps(config, sort_keys=True, default=str)


def corpus_candidates(studies: Iterable[StudyLog], family: str, top_k: int = 1) -> CandidatePool:
    """The ``top_k`` best distinct default-space configurations of ``family`` per training task.

    Studies of held-out tasks are refused (counted in ``heldout_refused``), as are studies
    without a task card or without completed trials (``select_studies`` decides)."""
    from sllmbo.data.instructions import select_studies

    name = get_family(family).name
    selection = select_studies(studies, rules=[])
    pool = CandidatePool(heldout_refused=dict(selection.heldout_refused))
    ranked: dict[str, list[tuple[float, str, int, dict[str, Any], str]]] = defaultdict(list)
    for usable in selection.usable:
        card, log = usable.card, usable.log
        try:
            if get_family(card.model_family).name != name:
                continue
        except SllmboError:  # a family this project does not know
            continue
        if heldout_match(card.task) or heldout_match(log.name):  # guards the guard
            raise AssertionError(f"held-out study {log.name} reached the portfolio")
        space = FAMILIES[name].default_space(card.task_type)
        sign = 1.0 if log.direction == "minimize" else -1.0
        pool.n_studies += 1
        for trial in log.complete:
            pool.n_trials += 1
            if not space.contains(trial.params):
                pool.n_outside_space += 1
                continue
            config = space.validate(trial.params)
            ranked[card.task].append((sign * float(trial.value), log.name, trial.number,
                                      config, card.task_type))
    for task in sorted(ranked):
        seen: set[str] = set()
        chosen: list[Candidate] = []
        for key, study, number, config, task_type in sorted(ranked[task],
                                                             key=lambda r: r[:3]):
            if config_key(config) in seen:
                continue
            seen.add(config_key(config))
            chosen.append(Candidate(config, task, task_type, study, number, key))
            if len(chosen) == top_k:
                break
        pool.by_task[task] = chosen
    return pool


# -- stratified order and the candidates taken ---------------------------------------------


def stratified_order(types: Mapping[str, str], seed: int) -> list[str]:
    """Every name in ``types`` (name -> task type) in a seeded order whose every prefix holds
    the types in about their overall shares: each type is shuffled, its i-th member of n
    placed at (i + 1/2) / n, and the places are merged."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name in sorted(types):
        groups[types[name]].append(name)
    rng = random.Random(seed)
    placed: list[tuple[float, str, str]] = []
    for kind in sorted(groups):
        members = rng.sample(groups[kind], len(groups[kind]))
        placed += [((i + 0.5) / len(members), kind, name) for i, name in enumerate(members)]
    return [name for _, _, name in sorted(placed)]


def stratified_sample(types: Mapping[str, str], n: int, seed: int) -> list[str]:
    """The first ``n`` of ``stratified_order``, sorted (all names if ``n`` covers them)."""
    return sorted(stratified_order(types, seed)[:n])


def select_candidates(pool: CandidatePool, n: int, seed: int) -> tuple[list[Candidate],
                                                                       dict[str, list[str]]]:
    """Up to ``n`` distinct configurations, walking the source tasks in ``stratified_order``.

    Several tasks often share their best configuration (TPE's first trials are random draws
    under one seed, the same on every task), so a configuration is taken once; the second
    value maps each chosen configuration to every task it is a candidate of."""
    types = {task: cands[0].task_type for task, cands in pool.by_task.items()}
    chosen: list[Candidate] = []
    keys: set[str] = set()
    for task in stratified_order(types, seed):
        for cand in pool.by_task[task]:
            key = config_key(cand.config)
            if key not in keys and len(chosen) < n:
                keys.add(key)
                chosen.append(cand)
    sources: dict[str, list[str]] = {config_key(c.config): [] for c in chosen}
    for task in sorted(pool.by_task):
        for cand in pool.by_task[task]:
            key = config_key(cand.config)
            if key in sources and task not in sources[key]:
                sources[key].append(task)
    return chosen, sources
