"""``recommend()``: configurations from ONE batched inference, no trials run.

For ``n`` candidates the backend gets one batch of requests (the first greedy, the others
sampled with distinct seeds; a few extra to survive duplicates and bad answers). Every answer
is parsed, clipped into the space (repairs reported) and validated; duplicates are dropped.
An answer that is still invalid after clipping is reported, never returned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllmbo.errors import ConfigError, SllmboError
from sllmbo.inference.base import ChatRequest, Completion, SamplingParams
from sllmbo.prompts import config_schema, recommend_messages
from sllmbo.samplers.calls import DuplicateError
from sllmbo.samplers.llm import accept_config
from sllmbo.space import SearchSpace
from sllmbo.taskcard import TaskCard

if TYPE_CHECKING:
    from sllmbo.inference.base import Backend


@dataclass
class Recommendation:
    configs: list[dict[str, Any]]
    repairs: list[list[str]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0


def n_requests(n: int) -> int:
    """Requests in the batch for ``n`` candidates: a margin of about half, at least one."""
    return 1 if n == 1 else n + max(1, n // 2)


def build_requests(card: TaskCard | None, space: SearchSpace, n: int, *, seed: int,
                   temperature: float, max_tokens: int) -> list[ChatRequest]:
    messages = recommend_messages(card, space)
    schema = config_schema(space)
    return [
        ChatRequest(messages, schema, SamplingParams(
            max_tokens=max_tokens, temperature=0.0 if i == 0 else temperature, seed=seed + i))
        for i in range(n_requests(n))
    ]


def collect(completions: Sequence[Completion], space: SearchSpace, n: int) -> Recommendation:
    """Parse, clip, validate and deduplicate answers, keeping the first ``n`` good ones."""
    rec = Recommendation(configs=[], requests=len(completions))
    seen: set[Any] = set()
    for i, completion in enumerate(completions):
        rec.prompt_tokens += completion.prompt_tokens
        rec.completion_tokens += completion.completion_tokens
        rec.latency_s = max(rec.latency_s, completion.latency_s)  # one batch: the slowest
        try:
            config, repairs = accept_config(completion.parse_json(), space, seen)
        except DuplicateError:  # before ValueError: it is one
            rec.rejected.append(f"candidate {i}: duplicate of an earlier candidate")
            continue
        except ValueError as err:
            rec.rejected.append(f"candidate {i}: {err}")
            continue
        except ConfigError as err:
            rec.rejected.append(f"candidate {i}: invalid after clipping: "
                                f"{'; '.join(err.problems)}")
            continue
        if len(rec.configs) < n:
            rec.configs.append(config)
            rec.repairs.append(repairs)
    return rec


def recommend_with(backend: Backend, card: TaskCard | None, space: SearchSpace, n: int = 1,
                   *, seed: int = 0, temperature: float = 0.8,
                   max_tokens: int = 256) -> Recommendation:
    """``n`` configurations of ``space`` for the task of ``card`` from one backend batch."""
    if n < 1:
        raise SllmboError(f"--n must be >= 1, got {n}")
    requests = build_requests(card, space, n, seed=seed, temperature=temperature,
                              max_tokens=max_tokens)
    return collect(backend.complete(requests), space, n)


def recommend(
    task: str | None = None,
    model: str = "lightgbm",
    n: int = 1,
    backend: Backend | None = None,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    task_type: str | None = None,
    seed: int = 0,
    temperature: float = 0.8,
    max_tokens: int = 256,
    backend_kind: str = "transformers",
    model_path: str | None = None,
    adapter: str | None = "default",
    base_url: str | None = None,
) -> list[dict[str, Any]]:
    """Recommended configurations of ``model`` for a task, best guess first.

    >>> recommend("diabetes", model="lightgbm", n=3)  # doctest: +SKIP
    """
    return recommend_task(task, model, n, backend, data=data, target=target,
                          task_type=task_type, seed=seed, temperature=temperature,
                          max_tokens=max_tokens, backend_kind=backend_kind,
                          model_path=model_path, adapter=adapter, base_url=base_url).configs


def recommend_task(task: str | None, model: str, n: int, backend: Backend | None,
                   **options: Any) -> Recommendation:
    """``recommend`` with the details (repairs, rejected candidates, tokens)."""
    from sllmbo.families import get_family
    from sllmbo.objective import EvalSettings
    from sllmbo.resolve import build_card, resolve_task

    loaded = resolve_task(task, options.pop("data", None), options.pop("target", None),
                          options.pop("task_type", None))
    family = get_family(model)
    card = build_card(loaded, family, EvalSettings(seed=options.get("seed", 0)))
    space = family.default_space(loaded.task_type)
    kind, model_path = options.pop("backend_kind", "transformers"), options.pop("model_path", None)
    adapter, base_url = options.pop("adapter", "default"), options.pop("base_url", None)
    owned = backend is None
    if backend is None:
        from sllmbo.inference.factory import create_backend

        backend = create_backend(kind, model=model_path, adapter=adapter, base_url=base_url)
    try:
        return recommend_with(backend, card, space, n, **options)
    finally:
        if owned:
            backend.close()
