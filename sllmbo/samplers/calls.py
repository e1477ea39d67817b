"""Ask a backend for one JSON answer: timeout, one retry with the error shown, accounting.

Shared by the optimizer step, the initializer, space adaptation and ``recommend``. The
answer is data: ``check`` parses/validates it and raises ``ValueError`` (``ConfigError`` is
fine too) with a message the model can read on its retry. Nothing here falls back; callers
decide what a failure means and count it.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from sllmbo.core.errors import BackendError, ConfigError
from sllmbo.core.prompts import Messages, retry_messages
from sllmbo.inference.base import Backend, ChatRequest, Completion, SamplingParams

T = TypeVar("T")


class DuplicateError(ValueError):
    """The answer repeats a configuration that was already evaluated."""


@dataclass
class CallStats:
    """What the backend calls of one question cost (summed over the retry)."""

    calls: int = 0
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, completion: Completion) -> None:
        self.calls += 1
        self.latency_s += completion.latency_s
        self.prompt_tokens += completion.prompt_tokens
        self.completion_tokens += completion.completion_tokens


@dataclass
class Answer(Generic[T]):
    """The checked value, or ``None`` with ``cause`` in backend_error|timeout|invalid|duplicate."""

    value: T | None
    stats: CallStats = field(default_factory=CallStats)
    retries: int = 0
    error: str | None = None
    cause: str | None = None


_LOCKS: weakref.WeakKeyDictionary[Backend, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def backend_lock(backend: Backend) -> threading.Lock:
    """One lock per backend object: calls through ``complete_one`` never overlap, so a
    timed-out generation cannot run beside the next one on the same in-process model."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(backend, threading.Lock())


def complete_one(backend: Backend, request: ChatRequest, timeout: float | None) -> Completion:
    """One completion; ``TimeoutError`` when ``timeout`` seconds pass first (``complete_all``)."""
    return _first(complete_all(backend, [request], timeout))


def complete_all(backend: Backend, requests: Sequence[ChatRequest],
                 timeout: float | None) -> list[Completion]:
    """One batch; ``TimeoutError`` when ``timeout`` seconds pass first.

    Calls on one backend are serialized. With a timeout, each request carries it as
    ``max_time_s`` so an in-process backend stops generating by itself; the waiting thread is
    abandoned (daemon) and a call still waiting for the backend gives up at the deadline
    instead of starting late work.
    """
    lock = backend_lock(backend)
    if timeout is None:
        with lock:
            return backend.complete(requests)
    requests = [dataclasses.replace(r, sampling=dataclasses.replace(r.sampling,
                                                                    max_time_s=timeout))
                for r in requests]
    deadline = time.monotonic() + timeout
    box: dict[str, Any] = {}

    def work() -> None:
        if not lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            box["error"] = TimeoutError(
                f"the backend was still busy with an earlier request after {timeout:g} s")
            return
        try:
            if time.monotonic() < deadline:
                box["result"] = backend.complete(requests)
        except Exception as err:  # re-raised in the caller's thread below
            box["error"] = err
        finally:
            lock.release()

    worker = threading.Thread(target=work, name="sllmbo-llm-call", daemon=True)
    worker.start()
    worker.join(timeout)
    if "error" in box:
        raise box["error"]
    if worker.is_alive() or "result" not in box:
        raise TimeoutError(f"the backend gave no answer within {timeout:g} s")
    return list(box["result"])


class TimedBackend(Backend):
    """``backend`` behind its lock and a deadline per batch (``complete_all``): for callers
    that take a ``Backend``, such as ``recommend_with``."""

    def __init__(self, backend: Backend, timeout: float | None) -> None:
        self.backend, self.timeout = backend, timeout
        self.name = backend.name

    @property
    def context_length(self) -> int:  # type: ignore[override]
        return self.backend.context_length

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        return complete_all(self.backend, requests, self.timeout)

    def count_tokens(self, text: str) -> int:
        return self.backend.count_tokens(text)


def _first(completions: list[Completion]) -> Completion:
    if len(completions) != 1:
        raise BackendError(f"the backend returned {len(completions)} completions for 1 request")
    return completions[0]


def ask_json(
    backend: Backend,
    messages: Messages,
    check: Callable[[Any], T],
    *,
    schema: dict[str, Any] | None,
    sampling: SamplingParams,
    timeout: float | None = None,
    max_retries: int = 1,
) -> Answer[T]:
    """Ask, parse JSON, ``check``; on a rejected answer retry up to ``max_retries`` times with
    the rejection shown to the model. Backend failures and timeouts are not retried (the
    server is unlikely to recover within one trial)."""
    answer: Answer[T] = Answer(value=None)
    for attempt in range(max_retries + 1):
        answer.retries = attempt
        try:
            completion = complete_one(backend, ChatRequest(messages, schema, sampling), timeout)
        except TimeoutError as err:
            answer.error, answer.cause = str(err), "timeout"
            return answer
        except BackendError as err:
            answer.error, answer.cause = err.message, "backend_error"
            return answer
        answer.stats.add(completion)
        if completion.finish_reason == "error":
            answer.error, answer.cause = f"the backend failed: {completion.error}", "backend_error"
            return answer
        try:
            answer.value = check(completion.parse_json())
        except DuplicateError as err:
            answer.error, answer.cause = str(err), "duplicate"
        except ConfigError as err:
            answer.error, answer.cause = "; ".join(err.problems), "invalid"
        except ValueError as err:
            answer.error, answer.cause = str(err), "invalid"
        else:
            answer.cause = None
            return answer
        messages = retry_messages(messages, completion.text, answer.error)
        if sampling.seed is not None:
            sampling = dataclasses.replace(sampling, seed=sampling.seed + 1)
    return answer
