"""The LLM initializer: from the task card alone, a search space and initial configurations.

Zero-shot, as in the paper's initializer: one schema-constrained request. The proposed space is
validated and intersected with the family's hard limits; any failure (backend down, invalid
answer after one retry) falls back to the family's default space with the reason recorded.
Initial configurations are clipped into the resulting space (repairs counted), duplicates and
unrepairable ones dropped (counted); ``tune`` enqueues them with ``sllmbo:source="initial"``.

``start`` picks where the initial configurations come from (``init_source``): this prompt, or
``sllmbo.recommend`` (the consensus of sampled answers first), the prompt a fine-tuned adapter
learned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

from sllmbo.core.errors import BackendError, ConfigError, SpaceError
from sllmbo.core.prompts import initializer_messages, initializer_schema
from sllmbo.core.space import CategoricalParam, FloatParam, IntParam, Param, SearchSpace
from sllmbo.core.taskcard import TaskCard
from sllmbo.inference.base import Backend, SamplingParams
from sllmbo.samplers.calls import DuplicateError, ask_json
from sllmbo.samplers.llm import accept_config

#: ``--init``: where a study's initial configurations come from.
INIT_MODES = ("auto", "initializer", "recommender")

#: The reason an ``InitResult`` gives for keeping the default space.
DEFAULT_SPACE_REASON = "default search space (--space default)"


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
    #: Who proposed ``configs``: "initializer" (this module's prompt) or "recommender".
    configs_source: str = "initializer"

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
        reason = DEFAULT_SPACE_REASON
    return InitResult(space, configs, "llm" if llm_space else "default", reason,
                      repairs, dropped, **stats)


def init_source(mode: str, backend: Backend) -> str:
    """``mode`` with ``auto`` resolved: the recommender for a fine-tuned backend, else the
    paper's initializer.

    sllmbo's adapters learn the recommend prompt, not the initializer's. In the default
    evaluation (seed 0, 32 held-out cells) the first trial's mean normalized regret was 0.805
    from the fine-tuned model's initializer answer and 0.218 from its recommend consensus;
    for the base model 0.359 and 0.483: each is best on the prompt it does well on.
    """
    if mode not in INIT_MODES:
        raise ValueError(f"init must be one of {INIT_MODES}, got {mode!r}")
    if mode != "auto":
        return mode
    try:
        return "recommender" if backend.fine_tuned else "initializer"
    except BackendError:  # a server that cannot list its models: the initializer's call says
        return "initializer"


def start(*, mode: str, backend: Backend, card: TaskCard | None, limits: SearchSpace,
          default_space: SearchSpace, n_configs: int, llm_space: bool, seed: int | None,
          timeout: float | None) -> InitResult:
    """A study's start: its space (the initializer's with ``llm_space``, else the default)
    and ``n_configs`` initial configurations from the source ``init_source`` picks."""
    source = init_source(mode, backend)
    if source == "initializer":
        return initialize(backend=backend, card=card, limits=limits,
                          default_space=default_space, n_configs=n_configs,
                          llm_space=llm_space, seed=seed, timeout=timeout)
    if llm_space:  # the initializer decides the space; recommended_start replaces its configs
        base = initialize(backend=backend, card=card, limits=limits,
                          default_space=default_space, n_configs=1, llm_space=True,
                          seed=seed, timeout=timeout)
    else:
        base = InitResult(default_space.restricted_to(limits), [], "default",
                          DEFAULT_SPACE_REASON)
    return recommended_start(base, backend=backend, card=card, n_configs=n_configs,
                             seed=seed, timeout=timeout)


def recommended_start(base: InitResult, *, backend: Backend, card: TaskCard | None,
                      n_configs: int, seed: int | None, timeout: float | None) -> InitResult:
    """``base`` with its configurations replaced by ``n_configs`` of its space from
    ``sllmbo.recommend`` (its consensus first) and their cost added; a failed backend leaves
    none. ``base``'s own repairs and drops describe the configurations replaced, so they go."""
    from sllmbo.recommend import recommend_with
    from sllmbo.samplers.calls import TimedBackend

    if n_configs < 1:
        return replace(base, configs=[], repairs=[], dropped=[], configs_source="recommender")
    try:
        rec = recommend_with(TimedBackend(backend, timeout), card, base.space, n_configs,
                             seed=seed or 0)
    except (BackendError, TimeoutError) as err:
        message = err.message if isinstance(err, BackendError) else str(err)
        return replace(base, configs=[], repairs=[], dropped=[], configs_source="recommender",
                       reason=f"{base.reason}; no initial configurations: the recommender "
                       f"failed ({message})")
    return replace(
        base, configs=rec.configs, configs_source="recommender",
        repairs=[f"config {i}: {r}" for i, fixes in enumerate(rec.repairs) for r in fixes],
        dropped=list(rec.rejected),
        reason=f"{base.reason}; initial configurations from the recommender (the consensus "
        f"of {rec.consensus_of} sampled answers first)",
        calls=base.calls + rec.requests,
        prompt_tokens=base.prompt_tokens + rec.prompt_tokens,
        completion_tokens=base.completion_tokens + rec.completion_tokens,
        latency_s=round(base.latency_s + rec.latency_s, 3))
