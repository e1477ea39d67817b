"""``recommend()``: configurations from ONE batched inference, no trials run.

The backend gets one batch of requests sampled with distinct seeds (a tenth extra to survive
duplicates and bad answers; a shortfall is asked again, at most ``TOP_UP_ROUNDS`` times). Every
answer is parsed, clipped into the space (repairs
reported) and validated; duplicates are dropped. An answer that is still invalid after
clipping is reported, never returned.

The first candidate (the answer of ``n=1``) is, by default, the **consensus** of the first
``samples`` valid sampled answers: per parameter their median (on a log scale where the space
is), or the most common choice. Greedy decoding picks numbers digit by digit, and the most
likely first digits make a small learning rate with few trees: in the default evaluation
(seed 0, 32 held-out cells) the fine-tuned model's greedy answer had a normalized test regret
of 0.63 at one trial, the consensus of 8 samples 0.19 (library defaults 0.43).
``decode="greedy"`` keeps the single greedy answer (one request, the fastest path).
``decode="score"`` decodes nothing: the model scores the committed pool of configurations
and the best-ranked come back (``sllmbo.scoring``, the scoring formulation).
``decode="pick"`` decodes nothing either: one forward pass gives the probability the model
names each pool entry; the most probable comes first, then the entries that best complement
it on the training matrix (the pick formulation, ``sllmbo.scoring.pick_recommend``).
``decode="rank"`` is the learned scorer of [14/16] with an empty history: each pool entry's
predicted bin of its error ratio to the library defaults, ranked by expected improvement
(``sllmbo.samplers.llm_rank.rank_recommend``; it needs a rank-bins adapter).
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import ConfigError, SllmboError
from sllmbo.core.prompts import config_schema, recommend_messages
from sllmbo.core.renamed import renamed_kwargs
from sllmbo.core.space import CategoricalParam, IntParam, SearchSpace
from sllmbo.core.taskcard import TaskCard
from sllmbo.inference.base import ChatRequest, Completion, SamplingParams
from sllmbo.recommendation import Recommendation
from sllmbo.samplers.calls import DuplicateError
from sllmbo.samplers.llm import accept_config

if TYPE_CHECKING:
    from sllmbo.inference.base import Backend


DECODES = ("consensus", "greedy", "score", "pick", "rank")
#: Sampled answers a consensus is formed from (8 measured better than 4 and no worse than 16).
CONSENSUS_SAMPLES = 8
#: Further batches asked when too few answers of the first were valid and distinct.
TOP_UP_ROUNDS = 2


def n_requests(n: int, decode: str = "greedy", samples: int = CONSENSUS_SAMPLES) -> int:
    """Requests in the first batch for ``n`` candidates: a margin of a tenth, at least one (in
    the default evaluation 1,440 of 1,440 fine-tuned answers were valid and distinct, and at
    most 4 of 45 base-model ones were not; ``recommend_with`` asks again for a shortfall). A
    consensus asks for at least ``samples``, with no margin: it is of the valid ones."""
    wanted = 1 if n == 1 else n + max(1, n // 10)
    return max(wanted, samples) if decode == "consensus" else wanted


def build_requests(card: TaskCard | None, space: SearchSpace, n: int, *, seed: int,
                   temperature: float, max_tokens: int, decode: str = "greedy",
                   samples: int = CONSENSUS_SAMPLES, first: int = 0,
                   count: int | None = None) -> list[ChatRequest]:
    """The batch: request ``i`` sampled with seed ``seed + i``; with ``decode="greedy"`` the
    first request is greedy instead. ``first``/``count``: requests ``first`` to
    ``first + count - 1`` (a top-up batch); by default the first batch, ``n_requests``."""
    messages = recommend_messages(card, space)
    schema = config_schema(space)
    greedy_first = decode == "greedy"
    return [
        ChatRequest(messages, schema, SamplingParams(
            max_tokens=max_tokens, temperature=0.0 if i == 0 and greedy_first else temperature,
            seed=seed + i))
        for i in range(first, first + (n_requests(n, decode, samples) if count is None
                                       else count))
    ]


def consensus_config(configs: Sequence[dict[str, Any]], space: SearchSpace) -> dict[str, Any]:
    """Per parameter, the median of ``configs`` (geometric on a log-scaled parameter,
    rounded for integers) or their most common choice (the earliest on a tie)."""
    if not configs:
        raise ValueError("a consensus needs at least one configuration")
    out: dict[str, Any] = {}
    for param in space:
        values = [c[param.name] for c in configs]
        if isinstance(param, CategoricalParam):
            counts = Counter(map(repr, values))
            out[param.name] = max(values, key=lambda v: counts[repr(v)])  # first of the top
            continue
        if param.log:
            middle = math.exp(statistics.median(math.log(v) for v in values))
        else:
            middle = statistics.median(values)
        # Four significant digits: what the model writes, and all a hyperparameter needs.
        out[param.name] = (round(middle) if isinstance(param, IntParam)
                           else float(f"{middle:.4g}"))
    fixed, _ = space.clip(out)  # a rounded median can sit a hair outside a bound
    return space.validate(fixed)


def collect(completions: Sequence[Completion], space: SearchSpace, n: int,
            consensus_samples: int = 0) -> Recommendation:
    """Parse, clip, validate and deduplicate answers, keeping the first ``n`` good ones; with
    ``consensus_samples``, the first is the consensus of that many valid answers (all there
    are, when fewer are valid) and the answers follow it."""
    rec = Recommendation(configs=[], requests=len(completions))
    seen: set[Any] = set()
    valid: list[dict[str, Any]] = []
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
        valid.append(config)
        if len(rec.configs) < n:
            rec.configs.append(config)
            rec.repairs.append(repairs)
    if consensus_samples and valid:
        pool = valid[:consensus_samples]
        middle = consensus_config(pool, space)
        # An answer that rounds to the consensus is the consensus: not tried twice.
        rest = [(c, r) for c, r in zip(rec.configs, rec.repairs, strict=True)
                if consensus_config([c], space) != middle]
        rec.configs = [middle, *[c for c, _ in rest][:n - 1]]
        rec.repairs = [[], *[r for _, r in rest][:n - 1]]
        rec.consensus_of = len(pool)
    return rec


#: Most candidates (``--n``) and consensus samples (``--samples``) one call generates: each
#: is one more generated answer, so a mistyped 1000 would run for many minutes in silence.
#: ``score`` and ``pick`` are bounded by the pool instead (``recommend_task`` says so).
MAX_CANDIDATES = 64
MAX_SAMPLES = 64


def check_options(n: int, decode: str, samples: int, temperature: float) -> None:
    """One clear error for options that cannot work, before any model is loaded."""
    if n < 1:
        raise SllmboError(f"--n must be >= 1, got {n}")
    if decode not in DECODES:
        raise SllmboError(f"unknown decode {decode!r}", hint=f"use one of {', '.join(DECODES)}")
    if decode in ("consensus", "greedy") and n > MAX_CANDIDATES:
        raise SllmboError(f"--n must be at most {MAX_CANDIDATES} with --decode {decode} (each "
                          f"candidate is one more generated answer), got {n}",
                          hint="to try more configurations than that, run `sllmbo tune`")
    if decode == "consensus" and samples > MAX_SAMPLES:
        raise SllmboError(f"--samples must be at most {MAX_SAMPLES} (each is one more generated "
                          f"answer; 8 measured as good as 16), got {samples}")
    if decode == "consensus" and (samples < 1 or not temperature > 0):
        raise SllmboError(f"a consensus needs --samples >= 1 and --temperature > 0, got "
                          f"{samples} and {temperature}", hint="or use --decode greedy")


def recommend_with(backend: Backend, card: TaskCard | None, space: SearchSpace, n: int = 1,
                   *, seed: int = 0, temperature: float = 0.8, max_tokens: int = 256,
                   decode: str = "consensus",
                   samples: int = CONSENSUS_SAMPLES,
                   candidates: Sequence[dict[str, Any]] | None = None) -> Recommendation:
    """``n`` configurations of ``space`` for the task of ``card`` from one backend batch (a
    further one for a shortfall): the consensus of ``samples`` sampled answers first
    (``decode="greedy"``: the greedy answer), then the sampled answers. With
    ``decode="score"``, the ``n`` of ``candidates`` the model ranks best together."""
    check_options(n, decode, samples, temperature)
    if decode == "score":
        from sllmbo.scoring import score_recommend

        if candidates is None:
            raise SllmboError("decode 'score' needs candidate configurations to score")
        return score_recommend(backend, card, space, n, candidates)
    if decode == "pick":
        from sllmbo.scoring import pick_recommend

        if card is None:
            raise SllmboError("decode 'pick' needs a task card (it names the model family)")
        return pick_recommend(backend, card, space, n, card.model_family)
    if decode == "rank":
        from sllmbo.samplers.llm_rank import rank_recommend

        if card is None:
            raise SllmboError("decode 'rank' needs a task card (the scorer reads it)")
        return rank_recommend(backend, card, space, n)

    def ask(first: int = 0, count: int | None = None) -> list[Completion]:
        return backend.complete(build_requests(
            card, space, n, seed=seed, temperature=temperature, max_tokens=max_tokens,
            decode=decode, samples=samples, first=first, count=count))

    consensus = samples if decode == "consensus" else 0
    completions = ask()
    latency = max((c.latency_s for c in completions), default=0.0)
    rec = collect(completions, space, n, consensus_samples=consensus)
    for _ in range(TOP_UP_ROUNDS):
        missing = n - len(rec.configs)
        if missing <= 0:
            break
        batch = ask(first=len(completions), count=missing + max(1, missing // 2))
        latency += max((c.latency_s for c in batch), default=0.0)
        completions = [*completions, *batch]
        rec = collect(completions, space, n, consensus_samples=consensus)
    rec.latency_s = latency  # the batches ran one after the other
    return rec


@renamed_kwargs(model="family", model_path="llm_path")
def recommend(
    task: str | None = None,
    family: str = "lightgbm",
    n: int = 1,
    backend: Backend | None = None,
    *,
    data: str | Path | None = None,
    target: str | None = None,
    task_type: str | None = None,
    seed: int = 0,
    temperature: float = 0.8,
    max_tokens: int = 256,
    decode: str = "consensus",
    samples: int = CONSENSUS_SAMPLES,
    backend_kind: str = "auto",
    llm_path: str | None = None,
    adapter: str | None = "default",
    base_url: str | None = None,
) -> list[dict[str, Any]]:
    """Recommended configurations of the ML model ``family`` (lightgbm, xgboost, ...) for a
    task, best guess first. Without a ``backend``, one is built: ``backend_kind`` with the LLM
    ``llm_path`` (``create_backend``'s ``llm``: a local folder or a name under
    ``$SLLMBO_HOME/models``, or for "openai" the served model name; None: the embedded one).
    ``family`` and ``llm_path`` were ``model=`` and ``model_path=``, still taken with a
    ``FutureWarning``.

    >>> recommend("diabetes", family="lightgbm", n=3)  # doctest: +SKIP
    """
    return recommend_task(task, family, n, backend, data=data, target=target,
                          task_type=task_type, seed=seed, temperature=temperature,
                          max_tokens=max_tokens, decode=decode, samples=samples,
                          backend_kind=backend_kind,
                          llm_path=llm_path, adapter=adapter, base_url=base_url).configs


@renamed_kwargs(model="family", model_path="llm_path")
def recommend_task(task: str | None, family: str, n: int, backend: Backend | None,
                   **options: Any) -> Recommendation:
    """``recommend`` with the details (repairs, rejected candidates, tokens)."""
    from sllmbo.core.families import get_family
    from sllmbo.core.objective import EvalSettings
    from sllmbo.data.resolve import build_card, registered_card, resolve_task

    check_options(n, options.get("decode", "consensus"),
                  options.get("samples", CONSENSUS_SAMPLES), options.get("temperature", 0.8))
    family = get_family(family)
    settings = EvalSettings(seed=options.get("seed", 0))
    data, target = options.pop("data", None), options.pop("target", None)
    task_type = options.pop("task_type", None)
    # A registered task's card comes from its shipped facts: no data to read.
    card = (registered_card(task, family, settings)
            if isinstance(task, str) and data is None else None)
    if card is None:
        loaded = resolve_task(task, data, target, task_type)
        card = build_card(loaded, family, settings)
    space = family.default_space(card.task_type)
    if options.get("decode") in ("score", "pick", "rank"):
        from sllmbo.scoring import pool_candidates

        candidates = pool_candidates(family.name, space)
        if n > len(candidates):
            raise SllmboError(f"--decode {options['decode']} chooses from the committed pool, "
                              f"which has {len(candidates)} {family.name} entries; got --n {n}",
                              hint=f"use --n {len(candidates)} or less")
        if options["decode"] == "score":
            options["candidates"] = candidates
    kind, llm_path = options.pop("backend_kind", "auto"), options.pop("llm_path", None)
    adapter, base_url = options.pop("adapter", "default"), options.pop("base_url", None)
    owned = backend is None
    if backend is None:
        from sllmbo.inference.factory import create_backend

        backend = create_backend(kind, llm=llm_path, adapter=adapter, base_url=base_url)
    try:
        rec = recommend_with(backend, card, space, n, **options)
        rec.engine, rec.engine_note = backend.name, getattr(backend, "engine_note", None)
        return rec
    finally:
        if owned:
            backend.close()
