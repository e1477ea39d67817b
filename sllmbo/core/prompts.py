"""Every prompt the SLLMBO loop sends, rendered by pure functions.

The same renderers build the fine-tuning data later (from stored trial logs), so they take
only plain inputs: a ``TaskCard`` (or None for a study without one), a ``SearchSpace`` and
already rendered history text (see :mod:`sllmbo.core.history`). No live study, no backend.

Text is compact and deterministic: numbers carry ~4 significant digits (:func:`fmt`), keys
keep the space's order, and answers are asked for as one JSON object matching a schema that
is also handed to the backend for constrained decoding.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from sllmbo.core.space import CategoricalParam, FloatParam, IntParam, Param, SearchSpace
from sllmbo.core.taskcard import TaskCard

Messages = list[dict[str, str]]

SYSTEM = (
    "You are an expert in hyperparameter optimization of machine-learning models. "
    "You answer with one JSON object only, no prose."
)

ADAPT_ACTIONS = ("keep", "narrow", "widen")


# -- numbers and small pieces ---------------------------------------------------------------
def fmt(value: Any) -> str:
    """A value as short text: ints as ints, floats with 4 significant digits, JSON else."""
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return f"{value:.4g}"
    if isinstance(value, str):
        return value
    return json.dumps(value)


def round_sig(value: float, digits: int = 4) -> float:
    """``value`` rounded to ``digits`` significant digits (for JSON shown to the model)."""
    if value == 0 or not math.isfinite(value):
        return value
    return float(f"{value:.{digits}g}")


def _shown(value: Any) -> Any:
    """A value as prompts show it: floats to a few significant digits."""
    return round_sig(value) if isinstance(value, float) and not isinstance(value, bool) else value


def render_config(config: Mapping[str, Any]) -> str:
    """A configuration as compact JSON with short numbers (also the fine-tuning target)."""
    shown = {k: _shown(v) for k, v in config.items()}
    # The same compact form the constrained decoder emits (inference/constrained.py).
    return json.dumps(shown, separators=(",", ":"))


def render_param(param: Param) -> str:
    if isinstance(param, CategoricalParam):
        return f"{param.name}: one of {json.dumps(list(param.choices))}"
    kind = "int" if isinstance(param, IntParam) else "float"
    scale = ", log scale" if param.log else ""
    return f"{param.name}: {kind} in [{fmt(param.low)}, {fmt(param.high)}]{scale}"


def render_space(space: SearchSpace) -> str:
    """One line per parameter: ``name: float in [low, high], log scale``."""
    return "\n".join(f"- {render_param(p)}" for p in space)


def render_card(card: TaskCard | None) -> str:
    """The task card as a few ``key: value`` lines; fields that are unset are left out."""
    if card is None:
        return "Task: unknown (no task card); optimize the objective below."
    goal = "lower is better" if card.direction == "minimize" else "higher is better"
    lines = [
        f"Task: {card.task} ({card.task_type}), model: {card.model_family}",
        f"Metric: {card.metric} ({card.direction}, {goal})",
        f"Data: {card.n_rows} rows, {card.n_features} features "
        f"({card.n_numeric} numeric, {card.n_categorical} categorical), "
        f"missing share {fmt(card.missing_share)}",
    ]
    if card.task_type == "classification" and card.n_classes is not None:
        extra = f", minority share {fmt(card.minority_share)}" if card.minority_share else ""
        lines.append(f"Classes: {card.n_classes}{extra}")
    if card.task_type == "regression" and card.target_mean is not None:
        parts = [f"mean {fmt(card.target_mean)}"]
        if card.target_std is not None:
            parts.append(f"std {fmt(card.target_std)}")
        if card.target_skew is not None:
            parts.append(f"skew {fmt(card.target_skew)}")
        lines.append("Target: " + ", ".join(parts))
    if card.description:
        lines.append(f"About: {card.description}")
    return "\n".join(lines)


def _messages(user: str) -> Messages:
    return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]


# -- (a) initializer --------------------------------------------------------------------------
def initializer_messages(card: TaskCard | None, limits: SearchSpace, n_configs: int) -> Messages:
    """Ask for a starting search space (inside ``limits``) and ``n_configs`` configurations."""
    user = (
        f"{render_card(card)}\n\n"
        f"Tunable hyperparameters and the widest allowed ranges:\n{render_space(limits)}\n\n"
        "Propose a promising search space for this task (a sub-range of each allowed range; "
        "a subset of the choices for categorical ones) and "
        f"{n_configs} diverse initial configurations inside it.\n"
        'Answer as one JSON object {"space": {name: {"low": .., "high": ..} or {"choices": [..]}}, '
        '"configs": [{name: value, ...}, ...]}.'
    )
    return _messages(user)


def initializer_schema(limits: SearchSpace, n_configs: int) -> dict[str, Any]:
    ranges: dict[str, Any] = {}
    for p in limits:
        if isinstance(p, CategoricalParam):
            ranges[p.name] = {
                "type": "object",
                "properties": {
                    "choices": {"type": "array", "items": {"enum": list(p.choices)}, "minItems": 1}
                },
                "required": ["choices"],
                "additionalProperties": False,
            }
        else:
            bound = {"type": "integer" if isinstance(p, IntParam) else "number",
                     "minimum": p.low, "maximum": p.high}
            ranges[p.name] = {
                "type": "object",
                "properties": {"low": bound, "high": bound},
                "required": ["low", "high"],
                "additionalProperties": False,
            }
    return {
        "type": "object",
        "properties": {
            "space": {"type": "object", "properties": ranges, "required": limits.names,
                      "additionalProperties": False},
            "configs": {"type": "array", "items": limits.to_json_schema(),
                        "minItems": 1, "maxItems": max(1, n_configs)},
        },
        "required": ["space", "configs"],
        "additionalProperties": False,
    }


# -- (b) optimizer step -----------------------------------------------------------------------
def optimizer_messages(card: TaskCard | None, space: SearchSpace, history: str) -> Messages:
    """Ask for the next configuration given the rendered trial history."""
    user = (
        f"{render_card(card)}\n\n"
        f"Search space:\n{render_space(space)}\n\n"
        f"Trials so far:\n{history}\n\n"
        "Suggest the next configuration to evaluate: one that is likely to beat the best so "
        "far and is not a repeat of an evaluated one. Every value must lie in its range.\n"
        "Answer as one JSON object {name: value} with every hyperparameter."
    )
    return _messages(user)


def retry_messages(messages: Messages, answer: str, problem: str) -> Messages:
    """The conversation extended by the rejected answer and what was wrong with it."""
    return [
        *messages,
        {"role": "assistant", "content": answer[:2000]},
        {"role": "user", "content": f"That answer was rejected: {problem}. "
                                    "Answer again with one valid JSON object."},
    ]


# -- (c) space adaptation ---------------------------------------------------------------------
def adaptation_messages(
    card: TaskCard | None, space: SearchSpace, limits: SearchSpace, history: str
) -> Messages:
    """Ask, per numeric parameter, whether to narrow, widen or keep its range."""
    numeric = [p for p in space if not isinstance(p, CategoricalParam)]
    limit_lines = "\n".join(f"- {render_param(limits[p.name])}" for p in numeric)
    user = (
        f"{render_card(card)}\n\n"
        f"Current search space:\n{render_space(space)}\n\n"
        f"Hard limits (never go past them):\n{limit_lines}\n\n"
        f"Trials so far:\n{history}\n\n"
        "For each numeric hyperparameter decide: narrow (focus on where good trials are), "
        "widen (the best values sit at an edge) or keep. Give the new low and high.\n"
        'Answer as one JSON object {"reason": "..", "params": {name: {"action": "keep|narrow|widen", '
        '"low": .., "high": ..}}}.'
    )
    return _messages(user)


def adaptation_schema(space: SearchSpace, limits: SearchSpace) -> dict[str, Any]:
    props: dict[str, Any] = {}
    for p in space:
        if isinstance(p, CategoricalParam):
            continue
        hard = limits[p.name]
        assert isinstance(hard, (FloatParam, IntParam))
        bound = {"type": "integer" if isinstance(p, IntParam) else "number",
                 "minimum": hard.low, "maximum": hard.high}
        props[p.name] = {
            "type": "object",
            "properties": {"action": {"enum": list(ADAPT_ACTIONS)}, "low": bound, "high": bound},
            "required": ["action", "low", "high"],
            "additionalProperties": False,
        }
    return {
        "type": "object",
        "properties": {
            "reason": {"type": "string", "maxLength": 200},
            "params": {"type": "object", "properties": props, "required": sorted(props),
                       "additionalProperties": False},
        },
        "required": ["reason", "params"],
        "additionalProperties": False,
    }


# -- (d) single-shot recommendation -----------------------------------------------------------
def recommend_messages(card: TaskCard | None, space: SearchSpace) -> Messages:
    """Ask for one good configuration with no trials run (one request per candidate)."""
    user = (
        f"{render_card(card)}\n\n"
        f"Search space:\n{render_space(space)}\n\n"
        "No trials have been run. Recommend the single configuration you expect to score "
        "best on this task. Every value must lie in its range.\n"
        "Answer as one JSON object {name: value} with every hyperparameter."
    )
    return _messages(user)


# -- (e) scoring a candidate ------------------------------------------------------------------
def render_values(config: Mapping[str, Any], space: SearchSpace) -> str:
    """A configuration's values only, in the order ``render_space`` lists the parameters:
    what a scored candidate costs is its own tokens, and the names are half of them."""
    return ", ".join(json.dumps(_shown(config[p.name])) for p in space)


def score_messages(card: TaskCard | None, space: SearchSpace,
                   config: Mapping[str, Any]) -> Messages:
    """Ask where one candidate ranks on the task, with no trials run: the scoring
    formulation (rank candidates by the answer, then try the best). The candidate comes
    last, as its bare values, so that the prompts of a pool's candidates share everything
    before it: an engine computes that prefix once and each candidate costs only its own
    ~40 tokens (~75 as JSON)."""
    user = (
        f"{render_card(card)}\n\n"
        f"Search space:\n{render_space(space)}\n\n"
        "No trials have been run. Estimate how the candidate configuration below ranks among "
        "a pool of good, varied configurations of this model on this task. Answer with one "
        "digit: 0 = among the best tenth, 9 = among the worst tenth.\n\n"
        "Candidate (values in the order of the search space): "
        f"{render_values(config, space)}"
    )
    return _messages(user)


#: The answers of ``score_messages``: one digit, 0 (best tenth) to 9.
SCORE_ANSWERS: tuple[str, ...] = tuple(str(d) for d in range(10))


# -- (f) picking from the pool by name -------------------------------------------------------
#: The names of a pool's entries in ``pick_messages``, in pool order: one token each in the
#: embedded tokenizer (and in Llama's), so one forward pass scores every entry.
PICK_NAMES: tuple[str, ...] = tuple("ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                    "abcdefghijklmnopqrstuvwxyz0123456789")


def pick_messages(card: TaskCard | None, pool_name: str, n_entries: int,
                  tried: Sequence[tuple[int, float | None]] = ()) -> Messages:
    """Ask which entry of a fixed, named pool suits the task: the pick formulation. The
    entries are not shown (the model learned them in training, by name), so the prompt is
    the card alone and one forward pass ranks the whole pool (~220 prompt tokens, one answer
    token). ``pool_name`` carries the pool's hash: a model trained on another pool reads
    another question.

    ``tried`` (pool position, score) in trial order makes it the few-shot pick: which untried
    entry is best given how the tried ones scored on this task. Scores are shown min-max
    scaled among the tried ones (0 = the best of them, 1 = the worst; lower scores are
    better), so the question does not depend on the metric's units (``render_tried``)."""
    if not 0 < n_entries <= len(PICK_NAMES):
        raise ValueError(f"a pick pool holds 1 to {len(PICK_NAMES)} entries, not {n_entries}")
    if any(not 0 <= i < n_entries for i, _ in tried):
        raise ValueError(f"a tried entry lies outside the pool of {n_entries}")
    head = (
        f"{render_card(card)}\n\n"
        f"The candidate pool {pool_name} holds {n_entries} fixed configurations of this "
        f"model, named {PICK_NAMES[0]} to {PICK_NAMES[n_entries - 1]} (capitals, then small "
        "letters, then digits). "
    )
    if not tried:
        return _messages(head + "No trials have been run. Which one will score best on this "
                         "task? Answer with its name only.")
    return _messages(
        head + f"Tried on this task so far (0 = the best of these, 1 = the worst): "
        f"{render_tried(tried)}. Which untried one will score best? Answer with its name only.")


def render_tried(tried: Sequence[tuple[int, float | None]]) -> str:
    """``A=0.0, K=1.0, D=0.4``: each tried entry's score min-max scaled among the tried
    ones, one decimal, in trial order; a failed fit is ``failed``."""
    finite = [s for _, s in tried if s is not None and math.isfinite(s)]
    low, high = (min(finite), max(finite)) if finite else (0.0, 0.0)
    parts = []
    for i, score in tried:
        if score is None or not math.isfinite(score):
            parts.append(f"{PICK_NAMES[i]}=failed")
        else:
            scaled = (score - low) / (high - low) if high > low else 0.0
            parts.append(f"{PICK_NAMES[i]}={scaled:.1f}")
    return ", ".join(parts)


def config_schema(space: SearchSpace) -> dict[str, Any]:
    """The JSON Schema of one configuration (constrained decoding for (b) and (d))."""
    return space.to_json_schema()

