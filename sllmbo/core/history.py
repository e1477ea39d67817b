"""Trial history as prompt text that fits a token budget.

A prompt cannot hold fifty trials on a 2k-token model, so the history is summarised: the
best-k and the most recent trials as a compact table, plus counts (complete / failed / pruned)
and trends (the best-so-far trajectory, the improvement over the last few trials) of the rest.
``summarize`` shrinks k until the text fits ``budget_tokens`` as measured by the backend's own
tokenizer (``Backend.count_tokens``).

Inputs are plain records, so the fine-tuning data builder can render the history of a stored
study the same way the live sampler does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sllmbo.core.prompts import fmt
from sllmbo.core.studyinfo import SOURCE

STATES = ("complete", "failed", "pruned", "running", "waiting")


@dataclass(frozen=True)
class TrialRecord:
    """One trial as plain data: what the history needs, nothing Optuna-specific."""

    number: int
    params: dict[str, Any]
    value: float | None = None
    state: str = "complete"
    source: str | None = None

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r}")


def to_record(trial: Any) -> TrialRecord:
    """A ``TrialRecord`` from a FrozenTrial, a mapping with the same keys, or a record."""
    if isinstance(trial, TrialRecord):
        return trial
    if isinstance(trial, Mapping):
        return TrialRecord(
            number=int(trial["number"]),
            params=dict(trial.get("params", {})),
            value=None if trial.get("value") is None else float(trial["value"]),
            state=_state(str(trial.get("state", "complete"))),
            source=trial.get("source"),
        )
    state = trial.state.name.lower()
    value = trial.value if state == "complete" else None
    if state == "fail":
        state = "failed"
    return TrialRecord(
        number=trial.number,
        params=dict(trial.params),
        value=None if value is None else float(value),
        state=state,
        source=trial.user_attrs.get(SOURCE),
    )


def _state(name: str) -> str:
    """Optuna's state names (``FAIL``, ``COMPLETE``) or ours (``failed``) as ours."""
    name = name.lower()
    return "failed" if name == "fail" else name


def to_records(trials: Iterable[Any]) -> list[TrialRecord]:
    return sorted((to_record(t) for t in trials), key=lambda r: r.number)


@dataclass(frozen=True)
class HistorySummary:
    text: str
    k_best: int
    k_recent: int
    n_tokens: int
    fits: bool = True
    shown: tuple[int, ...] = field(default_factory=tuple)


def finite_complete(records: Sequence[TrialRecord]) -> list[TrialRecord]:
    """The completed trials with a finite value, in the given order."""
    return [
        r for r in records
        if r.state == "complete" and r.value is not None and math.isfinite(r.value)
    ]


def best_so_far(records: Sequence[TrialRecord], direction: str) -> list[tuple[int, float]]:
    """``(trial number, value)`` at each trial that improved the best value, in order."""
    better = (lambda a, b: a < b) if direction == "minimize" else (lambda a, b: a > b)
    out: list[tuple[int, float]] = []
    for r in finite_complete(records):
        assert r.value is not None
        if not out or better(r.value, out[-1][1]):
            out.append((r.number, r.value))
    return out


def relative_change(old: float, new: float) -> float:
    """``|new - old| / |old|`` (absolute change when ``old`` is 0)."""
    return abs(new - old) / abs(old) if old != 0 else abs(new - old)


def _trend_lines(records: Sequence[TrialRecord], direction: str, window: int) -> list[str]:
    complete = finite_complete(records)
    counts = {s: sum(r.state == s for r in records) for s in ("complete", "failed", "pruned")}
    goal = "lower is better" if direction == "minimize" else "higher is better"
    lines = [
        f"{len(records)} trials: {counts['complete']} complete, {counts['failed']} failed, "
        f"{counts['pruned']} pruned ({goal})."
    ]
    trajectory = best_so_far(records, direction)
    if trajectory:
        shown = trajectory[-6:]
        earlier = f" ({len(trajectory) - 6} earlier improvements)" if len(trajectory) > 6 else ""
        lines.append("Best so far: " + ", ".join(f"#{n} {fmt(v)}" for n, v in shown) + earlier)
    if len(complete) > window:
        before = best_so_far(complete[:-window], direction)[-1][1]
        after = trajectory[-1][1]
        change = relative_change(before, after)
        lines.append(
            f"Last {window} complete trials improved the best by {fmt(100 * change)}%."
            if change > 0 else f"No improvement in the last {window} complete trials."
        )
    return lines


def _table(title: str, rows: Sequence[TrialRecord], names: Sequence[str]) -> list[str]:
    if not rows:
        return []
    out = [f"{title} (# | {' | '.join(names)} | value):"]
    for r in rows:
        cells = [fmt(r.params.get(n, "-")) for n in names]
        value = fmt(r.value) if r.value is not None else r.state
        out.append(f"#{r.number} | {' | '.join(cells)} | {value}")
    return out


def render(
    records: Sequence[TrialRecord],
    names: Sequence[str],
    direction: str,
    *,
    k_best: int,
    k_recent: int,
    window: int = 5,
) -> tuple[str, tuple[int, ...]]:
    """The history text with the best ``k_best`` and latest ``k_recent`` other trials."""
    if not records:
        return "No trials yet.", ()
    complete = finite_complete(records)
    sign = 1.0 if direction == "minimize" else -1.0
    ranked = sorted(complete, key=lambda r: (sign * r.value, r.number))  # type: ignore[operator]
    best = ranked[:k_best]
    best_numbers = {r.number for r in best}
    recent = [r for r in records if r.number not in best_numbers and r.state != "running"]
    recent = recent[-k_recent:] if k_recent > 0 else []
    lines = _trend_lines(records, direction, window)
    lines += _table(f"Best {len(best)}", best, names)
    lines += _table(f"Most recent {len(recent)} others", recent, names)
    shown = tuple(r.number for r in [*best, *recent])
    return "\n".join(lines), shown


def summarize(
    trials: Iterable[Any],
    names: Sequence[str],
    direction: str,
    *,
    budget_tokens: int | None = None,
    count_tokens: Callable[[str], int] | None = None,
    k_best: int = 10,
    k_recent: int = 5,
    window: int = 5,
) -> HistorySummary:
    """Render the history, shrinking k (recent first, then best) until it fits the budget.

    ``count_tokens`` defaults to ~3 characters per token. When even the counts-and-trends
    text does not fit, that text is returned with ``fits=False``.
    """
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}")
    if k_best < 0 or k_recent < 0:
        raise ValueError(f"k_best and k_recent must be >= 0, got {k_best}, {k_recent}")
    records = to_records(trials)
    count = count_tokens or (lambda text: max(1, len(text) // 3))
    while True:
        text, shown = render(records, names, direction, k_best=k_best, k_recent=k_recent,
                             window=window)
        n_tokens = count(text)
        if budget_tokens is None or n_tokens <= budget_tokens:
            return HistorySummary(text, k_best, k_recent, n_tokens, True, shown)
        if k_best == 0 and k_recent == 0:
            return HistorySummary(text, 0, 0, n_tokens, False, shown)
        if k_recent > 0 and (k_recent >= k_best // 2 or k_best <= 1):
            k_recent -= 1
        else:
            k_best -= 1


def history_budget(context_length: int, prompt_tokens: int, max_new_tokens: int,
                   margin: int = 32) -> int:
    """Tokens left for the history once the rest of the prompt and the answer are counted."""
    return max(0, context_length - prompt_tokens - max_new_tokens - margin)
