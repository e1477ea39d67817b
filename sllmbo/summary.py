"""What the LLM did in a study: calls, tokens, latency, fallbacks by cause, repairs, sources.

Read from the trials' and study's user attributes only, so it works on any stored study,
including one several workers wrote and one that was killed and resumed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from optuna.trial import TrialState

from sllmbo.core import studyinfo
from sllmbo.samplers import attrs


@dataclass
class LoopSummary:
    n_trials: int = 0
    states: dict[str, int] = field(default_factory=dict)
    sources: dict[str, int] = field(default_factory=dict)
    llm_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_latency_s: float = 0.0
    retries: int = 0
    repairs: int = 0
    fallbacks: dict[str, int] = field(default_factory=dict)
    initializer: dict[str, Any] | None = None
    space_changes: list[dict[str, Any]] = field(default_factory=list)
    space_adapt_failures: dict[str, int] = field(default_factory=dict)
    stop_reason: str | None = None
    per_trial: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def mean_latency_s(self) -> float:
        return self.llm_latency_s / self.llm_calls if self.llm_calls else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["mean_latency_s"] = round(self.mean_latency_s, 4)
        return data


def summarize_study(study: Any) -> LoopSummary:
    """Aggregate the sllmbo attributes of every trial of ``study``."""
    trials = study.get_trials(deepcopy=False)
    s = LoopSummary(n_trials=len(trials))
    states: Counter[str] = Counter()
    sources: Counter[str] = Counter()
    fallbacks: Counter[str] = Counter()
    for t in trials:
        ua = t.user_attrs
        states[t.state.name.lower()] += 1
        # A trial with no source never got its parameters: its worker died while the
        # sampler was still deciding (a killed run), or it is being sampled right now.
        source = ua.get(attrs.SOURCE) or (
            "sampling" if t.state == TrialState.RUNNING else "lost before sampling"
        )
        if "failed_trial" in t.system_attrs:
            # Optuna's heartbeat retry re-runs a dead worker's parameters and copies its user
            # attributes: the LLM work was done (and is counted) once, in the original trial.
            sources["retry"] += 1
            s.per_trial.append({"number": t.number, "state": t.state.name.lower(),
                                "source": "retry", "retry_of": t.system_attrs["failed_trial"],
                                "value": t.value if t.state == TrialState.COMPLETE else None})
            continue
        sources[source] += 1
        if source == "fallback":
            fallbacks[ua.get(attrs.FALLBACK_CAUSE) or "unknown"] += 1
        s.llm_calls += int(ua.get(attrs.LLM_CALLS, 0))
        s.prompt_tokens += int(ua.get(attrs.PROMPT_TOKENS, 0))
        s.completion_tokens += int(ua.get(attrs.COMPLETION_TOKENS, 0))
        s.llm_latency_s += float(ua.get(attrs.LATENCY_S, 0.0))
        s.retries += int(ua.get(attrs.RETRIES, 0))
        s.repairs += len(ua.get(attrs.REPAIRS, []))
        s.per_trial.append({
            "number": t.number,
            "state": t.state.name.lower(),
            "source": source,
            "value": t.value if t.state == TrialState.COMPLETE else None,
            "llm_latency_s": ua.get(attrs.LATENCY_S),
            "repairs": len(ua.get(attrs.REPAIRS, [])),
            "fallback_cause": ua.get(attrs.FALLBACK_CAUSE),
        })
    s.states, s.sources, s.fallbacks = dict(states), dict(sources), dict(fallbacks)
    s.llm_latency_s = round(s.llm_latency_s, 3)
    init = study.user_attrs.get(studyinfo.INIT)
    if init is not None:
        s.initializer = {k: v for k, v in init.items() if k != "space"}
        s.llm_calls += int(init.get("calls", 0))
        s.prompt_tokens += int(init.get("prompt_tokens", 0))
        s.completion_tokens += int(init.get("completion_tokens", 0))
        s.llm_latency_s = round(s.llm_latency_s + float(init.get("latency_s", 0.0)), 3)
    s.space_changes = [
        {"trial": c.get("trial"), "reason": c.get("reason")}
        for c in studyinfo.space_changes(study.user_attrs)
    ]
    s.space_adapt_failures = studyinfo.adapt_failures(study.user_attrs)
    for key, cost in study.user_attrs.items():  # each space adaptation's LLM work
        if key.startswith(studyinfo.ADAPT_COST_PREFIX) and isinstance(cost, dict):
            s.llm_calls += int(cost.get("calls", 0))
            s.prompt_tokens += int(cost.get("prompt_tokens", 0))
            s.completion_tokens += int(cost.get("completion_tokens", 0))
            s.llm_latency_s = round(s.llm_latency_s + float(cost.get("latency_s", 0.0)), 3)
    s.stop_reason = study.user_attrs.get(studyinfo.STOP_REASON)
    asked = sources.get("llm", 0) + sources.get("fallback", 0)
    if asked and not sources.get("llm"):
        causes = ", ".join(f"{k}: {v}" for k, v in sorted(fallbacks.items()))
        s.notes.append(f"the LLM produced no configuration: all {asked} LLM trials were "
                       f"sampled by the TPE fallback ({causes})")
    elif fallbacks:
        s.notes.append(f"{sum(fallbacks.values())} of {asked} LLM trials fell back to TPE")
    reason = str((init or {}).get("reason", ""))
    if reason.startswith("LLM initializer failed") or "the recommender failed" in reason:
        s.notes.append(f"initializer: {reason}")
    return s


def summary_table(s: LoopSummary) -> Any:
    """A rich ``Table`` of the summary, for ``sllmbo tune`` to print."""
    from rich.table import Table

    table = Table(title="LLM loop")
    table.add_column("")
    table.add_column("value")
    table.add_row("trials by source", ", ".join(f"{k} {v}" for k, v in sorted(s.sources.items())))
    table.add_row("LLM calls", str(s.llm_calls))
    table.add_row("tokens (prompt / completion)", f"{s.prompt_tokens} / {s.completion_tokens}")
    table.add_row("LLM latency (total / per call)",
                  f"{s.llm_latency_s:.1f} s / {s.mean_latency_s:.2f} s")
    table.add_row("retries / repairs", f"{s.retries} / {s.repairs}")
    table.add_row("fallbacks to TPE",
                  ", ".join(f"{k} {v}" for k, v in sorted(s.fallbacks.items())) or "none")
    if s.initializer is not None:
        table.add_row("initializer", f"{s.initializer.get('space_source')} space, "
                      f"{len(s.initializer.get('configs', []))} initial configurations from "
                      f"the {s.initializer.get('configs_source', 'initializer')}")
    for change in s.space_changes:
        table.add_row(f"space change (trial {change['trial']})", str(change["reason"]))
    if s.space_adapt_failures:
        table.add_row("space adaptation failures",
                      ", ".join(f"{k} {v}" for k, v in s.space_adapt_failures.items()))
    for note in s.notes:
        table.add_row("note", note)
    return table
