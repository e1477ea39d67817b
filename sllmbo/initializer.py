"""The LLM initializer: from the task card alone, a search space and initial configurations.

Zero-shot, as in the paper's initializer: one schema-constrained request. The proposed space is
validated and intersected with the family's hard limits; any failure (backend down, invalid
answer after one retry) falls back to the family's default space with the reason recorded.
Initial configurations are clipped into the resulting space (repairs counted), duplicates and
unrepairable ones dropped (counted); ``tune`` enqueues them with ``sllmbo:source="initial"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sllmbo.errors import ConfigError, SpaceError
from sllmbo.inference.base import Backend, SamplingParams
from sllmbo.prompts import initializer_messages, initializer_schema
from sllmbo.samplers.calls import DuplicateError, ask_json
from sllmbo.samplers.llm import accept_config
from sllmbo.space import CategoricalParam, FloatParam, IntParam, Param, SearchSpace
from sllmbo.taskcard import TaskCard


@dataclass
class InitResult:
    """What the initializer decided and what it cost."""

    space: SearchSpace
    configs: list[dict[str, Any]]
    space_source: Literal["llm", "default"]
    reason: str
    repairs: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    calls: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0

    def to_user_attr(self) -> dict[str, Any]:
        data = asdict(self)
        data["space"] = self.space.to_dict()
        return data


def parse_space(data: Any, limits: SearchSpace, default: SearchSpace) -> SearchSpace:
    """The LLM's ranges as a space within ``limits``; parameters it left out keep the default.

    Raises ``ValueError`` with the problem (shown to the model on its retry).
    """
    if not isinstance(data, Mapping):
        raise ValueError('"space" must be an object of name -> range')
    unknown = sorted(set(data) - set(limits.names))
    if unknown:
        raise ValueError(f"unknown parameters {unknown}; tunable are {limits.names}")
    params: list[Param] = []
    for hard in limits:
        spec = data.get(hard.name)
        if spec is None:
            params.append(default[hard.name] if hard.name in default.names else hard)
            continue
        if not isinstance(spec, Mapping):
            raise ValueError(f"range of '{hard.name}' must be an object, got {spec!r}")
        try:
            if isinstance(hard, CategoricalParam):
                params.append(CategoricalParam(hard.name, tuple(spec["choices"])))
            elif isinstance(hard, IntParam):
                params.append(IntParam(hard.name, round(float(spec["low"])),
                                       round(float(spec["high"])), log=hard.log))
            else:
                assert isinstance(hard, FloatParam)
                params.append(FloatParam(hard.name, float(spec["low"]), float(spec["high"]),
                                         log=hard.log))
        except KeyError as missing:
            raise ValueError(f"range of '{hard.name}' lacks {missing}") from None
        except (TypeError, ValueError, OverflowError):  # 1e999 parses; a 400-digit int too
            raise ValueError(f"range of '{hard.name}' must hold finite numbers, got "
                             f"{spec!r}"[:300]) from None
        except SpaceError as err:
            raise ValueError(err.message) from None
    return SearchSpace(tuple(params)).restricted_to(limits)


def clip_configs(
    configs: Any, space: SearchSpace, n_max: int
) -> tuple[list[dict[str, Any]], list[str], list[str]]:
    """Configurations clipped into ``space``: (kept, repairs, dropped-with-reason)."""
    if not isinstance(configs, list):
        return [], [], [f'"configs" must be a list, got {type(configs).__name__}']
    kept: list[dict[str, Any]] = []
    repairs: list[str] = []
    dropped: list[str] = []
    seen: set[Any] = set()
    for i, raw in enumerate(configs):
        try:
            config, fixes = accept_config(raw, space, seen)
        except ConfigError as err:
            dropped.append(f"config {i}: {'; '.join(err.problems)}")
            continue
        except DuplicateError:
            dropped.append(f"config {i}: duplicate")
            continue
        if len(kept) >= n_max:
            dropped.append(f"config {i}: more than the {n_max} asked for")
            continue
        kept.append(config)
        repairs += [f"config {i}: {r}" for r in fixes]
    return kept, repairs, dropped


def initialize(
    *,
    backend: Backend,
    card: TaskCard | None,
    limits: SearchSpace,
    default_space: SearchSpace,
    n_configs: int = 5,
    llm_space: bool = True,
    max_tokens: int = 768,
    temperature: float = 0.3,
    seed: int | None = None,
    timeout: float | None = None,
) -> InitResult:
    """Ask the LLM once (one retry) for a space and ``n_configs`` starting configurations.

    With ``llm_space=False`` (``--space default``) the default space is kept and only the
    configurations are used, clipped into it.
    """
    if n_configs < 0:
        raise ValueError(f"n_configs must be >= 0, got {n_configs}")
    default_space = default_space.restricted_to(limits)

    def check(data: Any) -> tuple[SearchSpace, Any]:
        if not isinstance(data, Mapping) or "configs" not in data:
            raise ValueError('the answer must be {"space": {..}, "configs": [..]}')
        space = parse_space(data.get("space"), limits, default_space) if llm_space \
            else default_space
        return space, data["configs"]

    answer = ask_json(
        backend, initializer_messages(card, limits, max(1, n_configs)), check,
        schema=initializer_schema(limits, max(1, n_configs)),
        sampling=SamplingParams(max_tokens=max_tokens, temperature=temperature, seed=seed),
        timeout=timeout,
    )
    stats = dict(calls=answer.stats.calls, retries=answer.retries,
                 prompt_tokens=answer.stats.prompt_tokens,
                 completion_tokens=answer.stats.completion_tokens,
                 latency_s=round(answer.stats.latency_s, 3))
    if answer.value is None:
        return InitResult(default_space, [], "default",
                          f"LLM initializer failed ({answer.cause}): {answer.error}", **stats)
    space, raw_configs = answer.value
    configs, repairs, dropped = clip_configs(raw_configs, space, n_configs)
    if llm_space:
        reason = "search space proposed by the LLM, intersected with the hard limits"
    else:
        reason = "default search space (--space default)"
    return InitResult(space, configs, "llm" if llm_space else "default", reason,
                      repairs, dropped, **stats)
