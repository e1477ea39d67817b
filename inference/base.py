"""The one interface every LLM backend implements.

A request is chat messages + an optional JSON Schema + sampling settings; a completion is the
text, why generation stopped, token counts and latency. Backends are batched: ``complete``
takes a list and answers in the same order. A request-level failure comes back as a completion
with ``finish_reason == "error"``; a backend that cannot answer at all raises ``BackendError``.
"""

from __future__ import annotations

import json
import numbers
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

FinishReason = Literal["stop", "length", "error"]

#: Seeds a request may carry: a signed or an unsigned 64-bit integer, the range vLLM's
#: OpenAI server and ``torch.manual_seed`` take. A negative seed is a fixed seed, not "pick
#: one at random" (llama.cpp's convention for -1): it stands for its unsigned 64-bit twin
#: (``-1`` is ``2**64 - 1``), as torch reads it and so vLLM, whose per-request generator is
#: ``torch.Generator().manual_seed(seed)``. Random sampling is ``seed=None``.
SEED_MIN, SEED_MAX = -(2**63), 2**64 - 1


def unsigned_seed(seed: int) -> int:
    """``seed`` (in ``SEED_MIN..SEED_MAX``) as the unsigned 64-bit number every engine takes
    (numpy's and llama.cpp's generators refuse negative seeds)."""
    return seed % 2**64


def signed_seed(seed: int) -> int:
    """``seed`` as a signed 64-bit number, the form an OpenAI-compatible server takes (vLLM's
    accepts at most ``2**63 - 1``); the same seed to torch, and so to vLLM."""
    seed = unsigned_seed(seed)
    return seed - 2**64 if seed >= 2**63 else seed


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings; ``temperature == 0`` means greedy decoding.

    ``seed``: None samples at random; an integer in ``SEED_MIN..SEED_MAX`` fixes the draws. A
    negative one is kept as its unsigned 64-bit twin (``unsigned_seed``: ``-1`` becomes
    ``2**64 - 1``), so every backend reads it the same way; anything else is a ``ValueError``.
    """

    max_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int | None = None
    #: Seconds after which an in-process backend stops generating (the caller's timeout), so
    #: an abandoned request does not keep the model busy; None: no limit.
    max_time_s: float | None = None

    def __post_init__(self) -> None:
        if self.max_time_s is not None and not self.max_time_s > 0:
            raise ValueError(f"max_time_s must be > 0 or None, got {self.max_time_s}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.seed is not None:
            object.__setattr__(self, "seed", _checked_seed(self.seed))


def _checked_seed(seed: object) -> int:
    """``seed`` as ``SamplingParams`` keeps it (``unsigned_seed``), or ``ValueError``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"seed must be an integer or None, got {seed!r}")
    if not SEED_MIN <= int(seed) <= SEED_MAX:
        raise ValueError(f"seed must be a 64-bit integer (from -2**63 to 2**64 - 1), got "
                         f"{int(seed)}; for random sampling pass seed=None")
    return unsigned_seed(int(seed))


@dataclass(frozen=True)
class ChatRequest:
    """Chat messages (``{"role": ..., "content": ...}``) and an optional JSON Schema."""

    messages: list[dict[str, str]]
    json_schema: dict[str, Any] | None = None
    sampling: SamplingParams = field(default_factory=SamplingParams)
    #: Polled while an in-process backend generates; True stops the request early (its
    #: client went away, ``http_server``), answered as an error. None: never cancelled.
    cancelled: Callable[[], bool] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: FinishReason
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        """Finished by itself (not cut at max_tokens, no error)."""
        return self.finish_reason == "stop"

    def parse_json(self) -> Any:
        """The text as JSON; raises ``ValueError`` with the reason when it is not usable."""
        if self.finish_reason == "length":
            raise ValueError("the answer was cut off at max_tokens")
        if self.finish_reason == "error":
            raise ValueError(f"the backend failed: {self.error}")
        return parse_answer(self.text)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"the answer holds {name}, which is not a JSON number")


def parse_answer(text: str) -> Any:
    """An LLM answer as JSON data; ``ValueError`` for anything that is not plain JSON:
    malformed text, ``NaN``/``Infinity`` (Python's json accepts them), nesting too deep to
    parse."""
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise ValueError(f"the answer is not valid JSON ({err.msg} at {err.pos})") from None
    except RecursionError:
        raise ValueError("the answer is nested too deeply") from None


class Backend(ABC):
    """A batched chat-completion engine."""

    #: Short name shown in logs and trial attributes, e.g. "transformers:smollm2-135m-instruct".
    name: str = "backend"
    #: Context window in tokens; prompts (history summaries) are budgeted against it.
    context_length: int = 2048
    #: Whether answers come through a LoRA adapter. sllmbo's adapters learn the recommend
    #: and optimizer prompts, not the initializer's, so ``--init auto`` starts such a model
    #: from its recommendation (``sllmbo.initializer.init_source``).
    fine_tuned: bool = False

    @abstractmethod
    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer every request, in order."""

    def count_tokens(self, text: str) -> int:
        """Token count of ``text``; backends with a tokenizer override this estimate."""
        return max(1, len(text) // 3)

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        """Tokens the chat prompt of ``messages`` takes; backends with a chat template
        override this estimate (contents plus a few tokens of framing per message)."""
        return sum(self.count_tokens(m.get("content", "")) + 4 for m in messages)

    def choice_logprobs(self, prompts: Sequence[Sequence[dict[str, str]]],
                        choices: Sequence[str]) -> list[list[float]]:
        """For each chat prompt, the log-probability of each of ``choices`` (single-token
        strings, e.g. the digits of ``sllmbo.core.prompts.score_messages``) as the answer's first
        token: one forward pass per prompt and no decoding, how a scorer ranks a pool."""
        from sllmbo.core.errors import BackendError

        raise BackendError(f"the {self.name} backend cannot score choices",
                           hint="use the llamacpp or transformers backend")

    def _choice_ids(self, choices: Sequence[str],
                    encode: Callable[[str], Sequence[int]]) -> list[int]:
        """The token id of each of ``choices``, each one token for ``encode`` (no specials)."""
        from sllmbo.core.errors import BackendError

        ids = []
        for choice in choices:
            encoded = list(encode(choice))
            if len(encoded) != 1:
                raise BackendError(f"choice {choice!r} is {len(encoded)} tokens for this "
                                   "tokenizer, not one", hint="score single-token answers (digits)")
            ids.append(int(encoded[0]))
        return ids

    def close(self) -> None:  # noqa: B027 - optional hook; most backends hold nothing
        """Release resources (GPU memory, HTTP sessions, server processes)."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
