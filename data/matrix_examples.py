"""The cross-evaluated training matrix -> instruction examples ([9/12] targets for [10/12]).

Two kinds, each prompted exactly as inference prompts (the card is ``build_card`` of the loaded
variant, the space the family's default space, in which every pool configuration lies):

- ``matrix-single-shot``: ``recommend_messages(card, space)`` -> one of the variant's ``top_k``
  best pool configurations by its matrix score (repeated CV), each its own example with its
  rank. Unlike a study's best trial, the ranking is over the same 60 configurations on every
  task, so what differs between tasks is what the task changes.
- ``matrix-score``: ``score_messages(card, space, config)`` -> the configuration's rank decile
  on that variant ("0": among the best tenth of the pool, "9": the worst tenth; a failed fit
  is "9"), the scoring formulation: a model that ranks candidates for a card, then picks.
- ``matrix-pick``: ``pick_messages(card, pool name, size)`` -> the name (``PICK_NAMES``, by
  pool position) of one of the variant's ``pick_top_k`` best pool entries, each its own
  example: the pick formulation, a classifier over the named pool read off one forward pass.
  With ``pick_temperature`` every entry is an example, weighted ``exp(-regret / T)`` (the
  portfolio's regret scale; weights average 1 per variant): a soft target. Top-k targets
  teach how often an entry is among the best, whose most frequent answer need not be the
  one of least mean regret; ``sllmbo.eval.pool_headroom``'s ``pick_target_ceiling`` measures
  what a perfect learner of each target reaches (on 90 LightGBM variants: top-5 0.46 and
  soft T = 1 0.42 against the portfolio's 0.41).
- ``matrix-pick-feedback``: the few-shot pick. ``pick_messages(card, pool name, size, tried)``
  where ``tried`` is a history of pool entries with this variant's own scores -> every
  untried entry, weighted ``exp(-regret / T)`` (averaging 1 per history). Histories start,
  as a run does, with the portfolio's first ``FEEDBACK_START`` entries (its task type's, on
  this matrix), then random entries; some are wholly random, so that the model reads the
  scores and not the names alone. ``sllmbo.eval.pool_headroom``'s ``feedback`` probe found
  that a run's first scores carry signal a card does not.

Only the training matrix is read: ``read_matrix`` refuses another split, and every variant is
checked against the held-out split again here.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sllmbo.core.prompts import (
    PICK_NAMES,
    pick_messages,
    recommend_messages,
    render_config,
    score_messages,
)
from sllmbo.data.matrix import POOL_FILE, TRAIN_MATRIX, Matrix, read_matrix
from sllmbo.data.pool import Pool, read_pools
from sllmbo.data.pool_select import FEEDBACK_START, portfolio, regret_matrix, whole_rows
from sllmbo.data.splits import heldout_match

MATRIX_KINDS = ("matrix-single-shot", "matrix-score", "matrix-pick", "matrix-pick-feedback")
N_DECILES = 10
#: The most entries a few-shot history holds (a run asks at budgets up to 5: 4 tried).
FEEDBACK_MAX_TRIED = 4


@dataclass(frozen=True)
class MatrixOptions:
    """``top_k`` best configurations per variant and family as single-shot examples;
    ``score_per_variant`` pool configurations per variant and family as scoring examples
    (None: all of them; sampled with ``seed`` otherwise, stratified over deciles);
    ``pick_top_k`` best pool entries per variant and family as pick examples, or, with
    ``pick_temperature``, every entry weighted by ``exp(-regret / pick_temperature)``;
    ``feedback_histories`` few-shot pick histories per variant and family, their untried
    entries weighted by ``exp(-regret / feedback_temperature)``."""

    top_k: int = 5
    score_per_variant: int | None = 20
    seed: int = 0
    pick_top_k: int = 0
    pick_temperature: float | None = None
    feedback_histories: int = 0
    feedback_temperature: float = 0.5

    def __post_init__(self) -> None:
        if self.feedback_histories < 0:
            raise ValueError("feedback_histories must be >= 0")
        if not (math.isfinite(self.feedback_temperature) and self.feedback_temperature > 0):
            raise ValueError("feedback_temperature must be a positive number")
        if self.top_k < 0 or (self.score_per_variant is not None and self.score_per_variant < 0):
            raise ValueError("top_k and score_per_variant must be >= 0")
        if self.pick_top_k < 0:
            raise ValueError("pick_top_k must be >= 0")
        if self.pick_temperature is not None:
            if not (math.isfinite(self.pick_temperature) and self.pick_temperature > 0):
                raise ValueError("pick_temperature must be a positive number")
            if self.pick_top_k:
                raise ValueError("pick_top_k and pick_temperature are two pick targets: "
                                 "give one")


def rank_deciles(scores: dict[str, float | None]) -> dict[str, int]:
    """Each configuration's rank decile within its variant's row (lower score is better;
    ties share the better rank; a failed fit is the last decile)."""
    finite = sorted(v for v in scores.values() if v is not None and math.isfinite(v))
    n = len(scores)
    out = {}
    for config_id, value in scores.items():
        if value is None or not math.isfinite(value):
            out[config_id] = N_DECILES - 1
            continue
        rank = finite.index(value)  # 0-based, first of its ties
        out[config_id] = min(N_DECILES - 1, rank * N_DECILES // n)
    return out


def matrix_examples(matrix: Matrix | str | Path = TRAIN_MATRIX,
                    options: MatrixOptions = MatrixOptions(),
                    variants: Iterable[str] | None = None,
                    pools: dict[str, Pool] | None = None) -> list[dict[str, Any]]:
    """Single-shot and scoring examples of every variant whose whole row (per family) is in
    the matrix; rows still being collected are left out. ``pools``: the committed ones."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.registry import load_task
    from sllmbo.data.resolve import build_card

    pools = pools if pools is not None else read_pools(POOL_FILE)
    if not isinstance(matrix, Matrix):
        matrix = read_matrix(matrix, pools=pools, split="train")
    wanted = None if variants is None else set(variants)
    rows: list[dict[str, Any]] = []
    rng = random.Random(options.seed)
    folios = _portfolios(matrix, pools) if options.feedback_histories else {}
    cells = matrix.cells
    for (variant, family_name), group in cells.groupby(["variant", "family"], sort=True):
        if wanted is not None and variant not in wanted:
            continue
        if heldout_match(variant):  # read_matrix refuses a held-out matrix; this guards it
            raise AssertionError(f"held-out variant {variant} in the training matrix")
        pool = pools[family_name]
        if len(group) != len(pool):
            continue
        task = load_task(variant)
        family = get_family(family_name)
        card = build_card(task, family, EvalSettings())
        space = family.default_space(task.task_type)
        configs = {c.id: c.config for c in pool.configs}
        scores = {r["config_id"]: (r["score"] if r["status"] == "ok" else None)
                  for r in group.to_dict("records")}
        deciles = rank_deciles(scores)
        meta = {"task": variant, "family": family_name, "metric": card.metric,
                "study": f"matrix:{variant}", "card_source": "matrix"}
        ranked = sorted((v, i) for i, v in scores.items() if v is not None and math.isfinite(v))
        messages = recommend_messages(card, space)
        for rank, (value, config_id) in enumerate(ranked[: options.top_k], start=1):
            rows.append({"prompt": messages, "completion": [
                {"role": "assistant", "content": render_config(_ordered(configs[config_id],
                                                                        space))}],
                "kind": "matrix-single-shot", **meta, "config_id": config_id,
                "value": value, "rank": rank})
        if options.pick_top_k or options.pick_temperature:
            position = {c.id: i for i, c in enumerate(pool.configs)}
            pick = pick_messages(card, pick_pool_name(pool), len(pool))
            if options.pick_temperature:
                targets = soft_pick_targets(scores, options.pick_temperature)
            else:
                targets = [(config_id, 1.0) for _, config_id in ranked[: options.pick_top_k]]
            for rank, (config_id, weight) in enumerate(targets, start=1):
                row = {"prompt": pick, "completion": [
                    {"role": "assistant", "content": PICK_NAMES[position[config_id]]}],
                    "kind": "matrix-pick", **meta, "config_id": config_id,
                    "value": scores[config_id], "rank": rank}
                if options.pick_temperature:
                    row["weight"] = weight
                rows.append(row)
        if options.feedback_histories:
            folio = folios[family_name, task.task_type]
            position = {c.id: i for i, c in enumerate(pool.configs)}
            for tried in feedback_histories(folio, sorted(scores), options.feedback_histories,
                                            rng):
                prompt = pick_messages(card, pick_pool_name(pool), len(pool),
                                       [(position[c], scores[c]) for c in tried])
                targets = soft_pick_targets({c: v for c, v in scores.items()
                                             if c not in tried}, options.feedback_temperature,
                                            row=scores)
                for rank, (config_id, weight) in enumerate(targets, start=1):
                    rows.append({"prompt": prompt, "completion": [
                        {"role": "assistant", "content": PICK_NAMES[position[config_id]]}],
                        "kind": "matrix-pick-feedback", **meta, "config_id": config_id,
                        "value": scores[config_id], "rank": rank, "weight": weight})
        chosen = _stratified(sorted(scores), deciles, options.score_per_variant, rng)
        for config_id in chosen:
            config = _ordered(configs[config_id], space)
            rows.append({"prompt": score_messages(card, space, config), "completion": [
                {"role": "assistant", "content": str(deciles[config_id])}],
                "kind": "matrix-score", **meta, "config_id": config_id,
                "value": scores[config_id], "rank": deciles[config_id]})
    return rows


def soft_pick_targets(scores: dict[str, float | None], temperature: float,
                      row: dict[str, float | None] | None = None) -> list[tuple[str, float]]:
    """Every configuration of ``scores`` with the weight ``exp(-regret / T)``, scaled to
    average 1, best first. Regret is the portfolio's on the variant's whole ``row`` (default:
    ``scores`` itself; 0: the row's best, 1: its median or worse, a failed fit 1), so a
    perfect learner's most probable entry tends, as T grows, to the one of least mean regret
    among the cards it cannot tell apart."""
    import numpy as np

    row = scores if row is None else row
    everything = sorted(row)
    column = np.array([[np.nan if row[i] is None else row[i]] for i in everything], dtype=float)
    regret = dict(zip(everything, regret_matrix(column)[:, 0], strict=True))
    ids = sorted(scores)
    weights = np.exp(-np.array([regret[i] for i in ids]) / temperature)
    weights *= len(ids) / weights.sum()
    order = sorted(range(len(ids)), key=lambda i: (-weights[i], ids[i]))
    return [(ids[i], round(float(weights[i]), 6)) for i in order]


def feedback_histories(folio: list[str], ids: list[str], n: int,
                       rng: random.Random) -> list[list[str]]:
    """``n`` histories of tried config ids for few-shot pick examples: the first is the
    portfolio's first ``FEEDBACK_START`` entries; later ones alternate between that start
    with 1 to ``FEEDBACK_MAX_TRIED - FEEDBACK_START`` random entries after it, and
    ``FEEDBACK_START`` to ``FEEDBACK_MAX_TRIED`` wholly random entries."""
    start = folio[:FEEDBACK_START]
    out: list[list[str]] = []
    for k in range(n):
        if k == 0 and len(start) == FEEDBACK_START:
            out.append(list(start))
        elif k % 2 == 1 and len(start) == FEEDBACK_START:
            rest = [c for c in ids if c not in start]
            out.append(start + rng.sample(rest, rng.randint(1, FEEDBACK_MAX_TRIED
                                                           - FEEDBACK_START)))
        else:
            out.append(rng.sample(ids, rng.randint(FEEDBACK_START, FEEDBACK_MAX_TRIED)))
    return out


def _portfolios(matrix: Matrix, pools: dict[str, Pool]) -> dict[tuple[str, str], list[str]]:
    """The greedy portfolio (config ids) of each family and task type on ``matrix``'s whole
    rows: what a few-shot run tries first."""
    cards = matrix.header.get("cards", {})
    return {(family, task_type): portfolio(cards, whole_rows(matrix, pools[family]),
                                           task_type, FEEDBACK_MAX_TRIED)
            for family in pools if family in set(matrix.cells["family"])
            for task_type in ("classification", "regression")}


def pick_pool_name(pool: Pool) -> str:
    """How ``pick_messages`` names a pool: its family and hash."""
    return f"{pool.family}-{pool.hash}"


def _ordered(config: dict[str, Any], space: Any) -> dict[str, Any]:
    return {name: config[name] for name in space.names if name in config}


def _stratified(ids: list[str], deciles: dict[str, int], n: int | None,
                rng: random.Random) -> list[str]:
    """``n`` of ``ids`` spread evenly over the deciles (all of them when n is None)."""
    if n is None or n >= len(ids):
        return ids
    by_decile: dict[int, list[str]] = {}
    for config_id in ids:
        by_decile.setdefault(deciles[config_id], []).append(config_id)
    for members in by_decile.values():
        rng.shuffle(members)
    chosen: list[str] = []
    while len(chosen) < n:
        for decile in sorted(by_decile):
            if by_decile[decile] and len(chosen) < n:
                chosen.append(by_decile[decile].pop())
    return sorted(chosen)
