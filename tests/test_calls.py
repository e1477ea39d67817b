"""One LLM call at a time per backend; a timeout stops the work it abandons."""

from __future__ import annotations

import threading
import time

import pytest

from sllmbo.inference.base import Backend, ChatRequest, Completion, SamplingParams
from sllmbo.samplers.calls import complete_one


class SlowBackend(Backend):
    """Sleeps ``seconds`` per call (less when the request carries ``max_time_s``) and
    records how many calls ran at once."""

    name = "slow"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.running = 0
        self.most_at_once = 0
        self.calls = 0
        self.limits: list[float | None] = []
        self._lock = threading.Lock()

    def complete(self, requests):
        with self._lock:
            self.running += 1
            self.calls += 1
            self.most_at_once = max(self.most_at_once, self.running)
        limit = requests[0].sampling.max_time_s
        self.limits.append(limit)
        cut = limit is not None and limit < self.seconds
        time.sleep(limit if cut else self.seconds)
        with self._lock:
            self.running -= 1
        if cut:  # what an in-process backend answers when max_time_s stops it
            return [Completion("", "error", error="stopped at max_time_s")]
        return [Completion("{}", "stop")]


REQUEST = ChatRequest([{"role": "user", "content": "hi"}], None, SamplingParams())


def outcome(backend: Backend, timeout: float | None) -> str:
    """'timeout', or the finish reason when the backend answered (a backend that honours
    max_time_s may answer 'error' right at the deadline)."""
    try:
        return complete_one(backend, REQUEST, timeout).finish_reason
    except TimeoutError:
        return "timeout"


def test_a_timed_out_call_does_not_overlap_the_next_one():
    backend = SlowBackend(seconds=0.6)
    for _ in range(3):
        assert outcome(backend, 0.2) in ("timeout", "error")
    time.sleep(1.0)
    assert backend.most_at_once == 1


def test_the_timeout_reaches_the_backend_as_max_time():
    backend = SlowBackend(seconds=5.0)
    started = time.monotonic()
    assert outcome(backend, 0.2) in ("timeout", "error")
    time.sleep(0.4)
    assert backend.limits == [0.2] and backend.running == 0  # it stopped by itself
    assert time.monotonic() - started < 2


def test_without_timeout_calls_are_serialized_and_answered():
    backend = SlowBackend(seconds=0.1)
    threads = [threading.Thread(target=complete_one, args=(backend, REQUEST, None))
               for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.calls == 4 and backend.most_at_once == 1


@pytest.mark.slow
def test_transformers_generation_stops_at_max_time(tiny_backend):
    request = ChatRequest([{"role": "user", "content": "count"}], None,
                          SamplingParams(max_tokens=4000, temperature=0, max_time_s=0.3))
    started = time.monotonic()
    (completion,) = tiny_backend.complete([request])
    assert time.monotonic() - started < 5
    assert completion.finish_reason in ("error", "stop", "length")
    if completion.finish_reason == "error":
        assert "max_time_s" in completion.error


def test_max_time_must_be_positive():
    with pytest.raises(ValueError, match="max_time_s"):
        SamplingParams(max_time_s=0)
