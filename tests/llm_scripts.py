"""Scripted LLM backends for tests: canned answers, no model.

``ScriptedBackend`` plays a list of steps, one per request: a string (the answer text), an
exception instance (raised), ``VALID`` (a random configuration that fits the request's JSON
Schema), ``SLOW`` (sleeps longer than any test timeout) or a callable ``request -> str``.
When the script runs out, the last step repeats. Every request is kept in ``requests``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from sllmbo.inference.base import Backend, ChatRequest, Completion

VALID = "<valid>"
SLOW = "<slow>"

Step = str | BaseException | Callable[[ChatRequest], str]


def random_config(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A configuration inside a ``SearchSpace.to_json_schema()`` schema."""
    out: dict[str, Any] = {}
    for name, prop in schema["properties"].items():
        if "enum" in prop:
            out[name] = rng.choice(prop["enum"])
        elif prop["type"] == "integer":
            out[name] = rng.randint(int(prop["minimum"]), int(prop["maximum"]))
        else:
            out[name] = rng.uniform(prop["minimum"], prop["maximum"])
    return out


def valid_answer(schema: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """A valid answer to any of the loop's schemas: a configuration, the initializer's
    ``{space, configs}`` (empty space: keep the default) or a keep-all adaptation."""
    props = schema.get("properties", {})
    if "configs" in props:
        items = props["configs"]["items"]
        n = props["configs"].get("maxItems", 1)
        return {"space": {}, "configs": [random_config(items, rng) for _ in range(n)]}
    if "params" in props and "reason" in props:
        return {"reason": "keep", "params": {}}
    return random_config(schema, rng)


class ScriptedBackend(Backend):
    name = "scripted"

    def __init__(self, steps: Sequence[Step] = (VALID,), *, seed: int = 0,
                 context_length: int = 2048, latency_s: float = 0.01) -> None:
        self.steps = list(steps)
        self.requests: list[ChatRequest] = []
        self.context_length = context_length
        self._rng = random.Random(seed)
        self._latency = latency_s
        self._lock = threading.Lock()

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        out = []
        for request in requests:
            with self._lock:
                index = len(self.requests)
                self.requests.append(request)
                step = self.steps[min(index, len(self.steps) - 1)]
            if isinstance(step, BaseException):
                raise step
            if step == SLOW:
                time.sleep(30)
                text = "{}"
            elif step == VALID:
                with self._lock:
                    text = json.dumps(valid_answer(request.json_schema or {}, self._rng))
            elif callable(step):
                text = step(request)
            else:
                text = step
            out.append(Completion(text=text, finish_reason="stop", prompt_tokens=100,
                                  completion_tokens=20, latency_s=self._latency))
        return out


class ErrorCompletionBackend(Backend):
    """Answers every request with ``finish_reason='error'`` (a failed request, no raise)."""

    name = "error-completions"

    def __init__(self) -> None:
        self.calls = 0

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        self.calls += len(requests)
        return [Completion("", "error", error="CUDA out of memory") for _ in requests]
