"""Trial logs -> chat instruction examples (TRL's conversational prompt/completion rows).

Two kinds, both rendered by the same functions the loop sends at inference time:

- ``single-shot``: ``recommend_messages(card, space)`` -> one of the best configurations of
  that task and family (the top ``top_k`` distinct ones over all its studies, each its own
  example, ranked by score);
- ``sequential``: ``optimizer_prompt(card, space, history)`` -> a trial's configuration that
  improved on the best so far, where the history is exactly what the sampler saw: the trials
  it recorded (``sllmbo:history_trials``) for an LLM trial, else the trials finished before
  this one started.

Held-out tasks never get here: a study whose card or name refers to one is skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sllmbo.core.optimizer_prompt import DEFAULT_PROMPT_TOKENS, PromptBudget, optimizer_prompt
from sllmbo.core.prompts import recommend_messages, render_config
from sllmbo.core.space import SearchSpace
from sllmbo.core.studyinfo import HISTORY_K, HISTORY_TRIALS
from sllmbo.core.taskcard import TaskCard
from sllmbo.data.cards import CardRule, card_for
from sllmbo.data.logged import LoggedTrial, StudyLog
from sllmbo.data.splits import heldout_match

KINDS = ("single-shot", "sequential")


@dataclass(frozen=True)
class BuildOptions:
    """How examples are made. ``max_tokens``: an example (chat template, prompt and answer)
    longer than this is dropped; the history of a sequential prompt first shrinks to fit, by
    the rule the sampler applies at inference (``DEFAULT_PROMPT_TOKENS`` on both sides)."""

    top_k: int = 5
    max_sequential_per_study: int = 10
    max_tokens: int = DEFAULT_PROMPT_TOKENS
    k_best: int = 10
    k_recent: int = 5
    validation_share: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.top_k < 1 or self.max_sequential_per_study < 0 or self.max_tokens < 64:
            raise ValueError("top_k >= 1, max_sequential_per_study >= 0, max_tokens >= 64")
        if not 0.0 <= self.validation_share < 1.0:
            raise ValueError(f"validation_share must be in [0, 1), got {self.validation_share}")


@dataclass
class UsableStudy:
    log: StudyLog
    card: TaskCard
    card_source: str


@dataclass
class Selection:
    usable: list[UsableStudy] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    heldout_refused: dict[str, int] = field(default_factory=dict)


def select_studies(studies: Iterable[StudyLog], rules: list[CardRule]) -> Selection:
    """Studies with a card and completed trials, held-out tasks refused; the rest listed with
    the reason they were skipped."""
    out = Selection()
    for log in studies:
        card, source = card_for(log.name, log.user_attrs, rules)
        heldout = heldout_match(log.name) or (heldout_match(card.task) if card else None)
        if heldout is not None:
            out.skipped.append((log.name, f"held-out task {heldout}: kept for evaluation only"))
            out.heldout_refused[heldout] = out.heldout_refused.get(heldout, 0) + 1
        elif card is None:
            out.skipped.append((log.name, source))
        elif card.direction != log.direction:
            out.skipped.append((log.name, f"its card says {card.direction} but the study "
                                          f"{log.direction}s"))
        elif not log.complete:
            out.skipped.append((log.name, "no completed trials"))
        else:
            out.usable.append(UsableStudy(log, card, source))
    return out


def trial_space(trial: LoggedTrial) -> SearchSpace:
    """The space a trial was sampled in, from its own distributions (in suggestion order)."""
    from optuna.distributions import json_to_distribution

    return SearchSpace.from_optuna(
        {k: json_to_distribution(v) for k, v in trial.distributions.items()}
    )


def study_space(study: UsableStudy) -> SearchSpace:
    """What ``recommend`` shows for this card: the family's default space when the study's
    parameters are exactly its names, else the space of the study's first completed trial."""
    from sllmbo.core.families import FAMILIES

    first = trial_space(study.log.complete[0])
    family = FAMILIES.get(study.card.model_family)
    if family is not None:
        default = family.default_space(study.card.task_type)
        if set(default.names) == set(first.names):
            return default
    return first


def ordered(config: dict[str, Any], space: SearchSpace) -> dict[str, Any]:
    return {name: config[name] for name in space.names if name in config}


def example(kind: str, messages: list[dict[str, str]], answer: str, study: UsableStudy,
            **meta: Any) -> dict[str, Any]:
    """One row: TRL's conversational prompt/completion plus where it came from."""
    return {
        "prompt": messages,
        "completion": [{"role": "assistant", "content": answer}],
        "kind": kind,
        "task": study.card.task,
        "family": study.card.model_family,
        "metric": study.card.metric,
        "study": study.log.name,
        "card_source": study.card_source,
        **meta,
    }


def single_shot_examples(studies: list[UsableStudy], top_k: int) -> list[dict[str, Any]]:
    """Per (task, family, metric): the ``top_k`` best distinct configurations over all its
    studies, each prompted exactly as ``recommend`` prompts."""
    groups: dict[tuple[str, str, str], list[UsableStudy]] = defaultdict(list)
    for s in studies:
        groups[(s.card.task, s.card.model_family, s.card.metric)].append(s)
    rows = []
    for members in groups.values():
        lead = members[0]
        space = study_space(lead)
        messages = recommend_messages(lead.card, space)
        sign = 1.0 if lead.card.direction == "minimize" else -1.0
        candidates = sorted(
            ((sign * t.value, s.log.name, t.number, s, t) for s in members for t in s.log.complete
             if set(t.params) == set(space.names)),  # type: ignore[operator]
            key=lambda c: c[:3],
        )
        seen: set[str] = set()
        for _, _, _, study, trial in candidates:
            answer = render_config(ordered(trial.params, space))
            if answer in seen:
                continue
            seen.add(answer)
            rows.append(example("single-shot", messages, answer, study, trial=trial.number,
                                value=trial.value, rank=len(seen)))
            if len(seen) >= top_k:
                break
    return rows


def history_of(log: StudyLog, trial: LoggedTrial) -> tuple[list[LoggedTrial], tuple[int, int] | None]:
    """The trials the sampler saw when it proposed ``trial``, and the table size it used.

    Recorded by the LLM samplers; for other samplers, the trials finished before ``trial``
    started (by timestamps; by number where timestamps are missing)."""
    recorded = trial.user_attrs.get(HISTORY_TRIALS)
    k = trial.user_attrs.get(HISTORY_K)
    if isinstance(recorded, list):
        numbers = set(recorded)
        size = (int(k[0]), int(k[1])) if isinstance(k, list) and len(k) == 2 else None
        return [t for t in log.trials if t.number in numbers], size
    before = []
    for other in log.trials:
        if other.number == trial.number or other.state not in ("complete", "failed", "pruned"):
            continue
        if trial.datetime_start is not None and other.datetime_complete is not None:
            if other.datetime_complete <= trial.datetime_start:
                before.append(other)
        elif other.number < trial.number:
            before.append(other)
    return before, None


def sequential_examples(
    study: UsableStudy, options: BuildOptions, count_tokens: Callable[[str], int] | None
) -> list[dict[str, Any]]:
    """Prompts of the trials that improved on the best of their history, answered with that
    trial's configuration; the latest ``max_sequential_per_study`` of them."""
    log, card = study.log, study.card
    better = (lambda a, b: a < b) if card.direction == "minimize" else (lambda a, b: a > b)
    rows = []
    for trial in log.complete:
        history, size = history_of(log, trial)
        values = [t.value for t in history if t.state == "complete" and t.value is not None]
        if not values:
            continue  # nothing to improve on: the initializer's job, not the optimizer's
        best = min(values) if card.direction == "minimize" else max(values)
        if not better(trial.value, best):
            continue
        messages = prompt_for(log, card, trial, options, count_tokens, (history, size))
        rows.append(example("sequential", messages,
                            render_config(ordered(trial.params, trial_space(trial))), study,
                            trial=trial.number, value=trial.value, rank=0))
    return rows[-options.max_sequential_per_study:] if options.max_sequential_per_study else []


def prompt_for(
    log: StudyLog,
    card: TaskCard,
    trial: LoggedTrial,
    options: BuildOptions = BuildOptions(),
    count_tokens: Callable[[str], int] | None = None,
    seen: tuple[list[LoggedTrial], tuple[int, int] | None] | None = None,
) -> list[dict[str, str]]:
    """The optimizer prompt the sampler sent (LLM trials: byte for byte, from what it
    recorded) or would have sent (other trials: the history finished before it started,
    the table shrunk to fit ``options.max_tokens``) for ``trial``."""
    history, size = seen if seen is not None else history_of(log, trial)
    if size is not None:
        budget = PromptBudget(k_best=size[0], k_recent=size[1])
    else:
        budget = PromptBudget(context_length=options.max_tokens, count_tokens=count_tokens,
                              k_best=options.k_best, k_recent=options.k_recent)
    prompt = optimizer_prompt(card, trial_space(trial), [_record(t) for t in history],
                              log.direction, budget)
    return prompt.messages


def _record(trial: LoggedTrial) -> dict[str, Any]:
    from sllmbo.core.studyinfo import SOURCE

    return {"number": trial.number, "params": trial.params, "value": trial.value,
            "state": trial.state, "source": trial.user_attrs.get(SOURCE)}


def dedupe(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Drop repeats of the same prompt and answer (keeps the first)."""
    seen: set[str] = set()
    out = []
    for row in rows:
        key = json.dumps([row["prompt"], row["completion"]], sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(row)
    return out


def validation_tasks(tasks: Iterable[str], share: float, seed: int) -> set[str]:
    """A fixed ``share`` of the datasets (at least one when there are two or more), chosen
    by a seeded hash of the name: a dataset's examples, every variant ``<name>@<rows>`` of it
    included, all land in one split."""
    names = sorted(set(tasks))
    datasets = sorted({n.split("@", 1)[0] for n in names})
    if share <= 0 or len(datasets) < 2:
        return set()
    ranked = sorted(datasets, key=lambda n: hashlib.sha256(f"{seed}:{n}".encode()).hexdigest())
    chosen = set(ranked[: max(1, round(share * len(datasets)))])
    return {n for n in names if n.split("@", 1)[0] in chosen}
