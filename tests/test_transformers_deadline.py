"""The transformers engine stops generating at its deadline in every path: the fast path and
``generate``, free and constrained, a long prompt's prefill, a call of several batches (n > 1),
behind the server and in process. Generation may outlive the deadline by one forward pass
(a decoding step, or one prefill chunk), never more.

The tiny model decodes in microseconds, so a forward pre-hook on its decoder makes each pass
cost what a real model's does on 2 cores (a fixed part per pass, a part per token), and
counts the passes that start after the deadline: the checks are on what ran, with timings
only as loose bounds."""

from __future__ import annotations

import time

import pytest
from server_helpers import chat_url, post

from sllmbo.inference.base import ChatRequest, SamplingParams
from sllmbo.inference.http_server import ChatServer
from sllmbo.inference.transformers_backend import TransformersBackend

MESSAGES = [{"role": "user", "content": "suggest"}]
#: A prompt of about 330 tokens with the chat template: 21 prefill chunks of 16.
LONG = [{"role": "user", "content": "tune the learning rate of lightgbm " * 40}]
#: Forces at least 300 characters of answer: a constrained answer that cannot end early.
LONG_STRING = {"type": "object", "properties": {"a": {"type": "string", "minLength": 300}},
               "required": ["a"], "additionalProperties": False}
CHUNK = 16


class Passes:
    """A forward pre-hook on ``backend``'s decoder: sleeps ``fixed_s`` + ``per_token_s`` per
    token fed, and notes when each pass started and how many tokens it fed."""

    def __init__(self, backend: TransformersBackend, fixed_s: float = 0.02,
                 per_token_s: float = 0.0) -> None:
        self.fixed_s, self.per_token_s = fixed_s, per_token_s
        self.started: list[float] = []
        self.tokens: list[int] = []
        backend.model.get_decoder().register_forward_pre_hook(self, with_kwargs=True)

    def __call__(self, module, args, kwargs):
        ids = kwargs.get("input_ids")
        if ids is None:
            ids = args[0]
        self.started.append(time.monotonic())
        self.tokens.append(int(ids.shape[1]))
        time.sleep(self.fixed_s + self.per_token_s * int(ids.shape[1]))

    def after(self, at: float) -> int:
        """Passes that started at or after ``at`` (``time.monotonic()``)."""
        return sum(s >= at for s in self.started)

    def clear(self) -> None:
        self.started.clear()
        self.tokens.clear()


def backend_for(tiny_model, fast: bool, **kwargs) -> TransformersBackend:
    backend = TransformersBackend(tiny_model, device="cpu", fast_decode=fast, **kwargs)
    backend.prefill_chunk = CHUNK  # the tiny model's context is 512 tokens
    return backend


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "generate"])
def test_a_call_of_several_batches_ends_every_request_at_its_max_time(tiny_model, fast):
    # n > 1 in process (recommend's consensus, complete_all's timeout): a call of 6 requests
    # in batches of 2 gave each batch its own max_time_s, so the call (and the backend's
    # lock) lasted about three times its limit. The fast path answers one request a call,
    # so there "several batches" is several requests.
    size = 1 if fast else 2
    with backend_for(tiny_model, fast, max_batch_size=size) as backend:
        passes = Passes(backend)
        limit = 0.5
        requests = [ChatRequest(MESSAGES, sampling=SamplingParams(
            max_tokens=400, temperature=0.8, seed=i, max_time_s=limit)) for i in range(6)]
        start = time.monotonic()
        answers = backend.complete(requests)
        took = time.monotonic() - start
    assert all(a.finish_reason == "error" and "stopped" in (a.error or "") for a in answers)
    # The pass in flight when the limit passes finishes, and one may start just after it
    # (the stop is checked between passes, and a busy machine can be slow to get there);
    # every later batch ran in full before (17 passes after the limit on the fast path).
    assert passes.after(start + limit) <= 1, passes.started
    assert [a.completion_tokens for a in answers[-2:]] == [0, 0]  # never started
    assert took < limit + 5  # loose: one pass past the limit, on a busy machine


@pytest.mark.parametrize("fast", [True, False], ids=["fast-path", "generate"])
def test_a_long_prompt_is_stopped_between_its_prefill_chunks(tiny_model, fast):
    # One pass over a whole prompt cannot be stopped: 2,000 tokens of the embedded model
    # took 30 s on busy cores, past any deadline. Here a pass costs 10 ms a token.
    with backend_for(tiny_model, fast) as backend:
        passes = Passes(backend, fixed_s=0.0, per_token_s=0.01)
        prompt_tokens = backend.count_prompt_tokens(LONG)
        assert prompt_tokens > 10 * CHUNK
        request = ChatRequest(LONG, sampling=SamplingParams(max_tokens=50, temperature=0,
                                                            max_time_s=0.3))
        start = time.monotonic()
        [answer] = backend.complete([request])
        took = time.monotonic() - start
    assert answer.finish_reason == "error" and answer.completion_tokens == 0
    assert max(passes.tokens) <= CHUNK
    assert sum(passes.tokens) < prompt_tokens  # stopped part of the way through
    assert passes.after(start + 0.3) <= 1
    assert took < prompt_tokens * 0.01  # the whole prefill alone would take this long


def test_a_stoppable_request_prefilled_in_chunks_answers_as_in_one_pass(tiny_model):
    # Chunked prefill (the fast path's own, transformers' in generate) changes nothing but
    # where it may stop: one request on the fast path; a left-padded batch of a long and a
    # short prompt through generate; seeded sampling.
    short = [{"role": "user", "content": "go"}]
    with TransformersBackend(tiny_model, device="cpu", dtype="float32") as backend:
        backend.fast_decoder.reuse_prompt_cache = False  # prefill the whole prompt each time

        def answers(chunk: int, max_time_s: float | None) -> list[str]:
            backend.prefill_chunk = chunk
            sampling = SamplingParams(max_tokens=12, temperature=1.0, seed=3,
                                      max_time_s=max_time_s)
            alone = backend.complete([ChatRequest(LONG, sampling=sampling)])
            batch = backend.complete([ChatRequest(LONG, sampling=sampling),
                                      ChatRequest(short, sampling=sampling)])
            return [c.text for c in alone + batch]

        assert answers(CHUNK, 600.0) == answers(10**6, None)


@pytest.mark.parametrize(("prompt", "fast", "schema"), [
    ("short", True, None), ("short", True, LONG_STRING), ("short", False, None),
    ("short", False, LONG_STRING), ("long", True, None), ("long", False, None)],
    ids=["fast-path", "fast-path-constrained", "generate", "generate-constrained",
         "fast-path-long-prompt", "generate-long-prompt"])
def test_the_server_answers_504_at_the_deadline_and_the_model_is_free(tiny_model, prompt,
                                                                      fast, schema):
    long = prompt == "long"
    with backend_for(tiny_model, fast) as backend:
        passes = Passes(backend, fixed_s=0.02, per_token_s=0.02 if long else 0.0)
        body = {"messages": LONG if long else MESSAGES, "temperature": 0,
                "max_tokens": 100 if long else 400}
        if schema is not None:
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": "a", "schema": schema}}
        with ChatServer(backend, model_name="m", port=0) as server:
            if schema is not None:  # compiled before the clock starts
                assert post(chat_url(server.url), {**body, "messages": MESSAGES,
                                                   "max_tokens": 2})[0] == 200
            passes.clear()
            deadline_s = 0.5
            start = time.monotonic()
            status, reply = post(chat_url(server.url), body,
                                 headers={"X-Stainless-Read-Timeout": str(deadline_s)})
            took = time.monotonic() - start
            held = server.gate._lock.locked()
    assert status == 504 and "deadline" in reply["error"]["message"], reply
    assert not held  # the model's turn ended with the answer
    # The server's clock starts at the request's first byte, a moment after ``start``: one
    # pass may start in between.
    assert passes.after(start + deadline_s) <= 1, passes.started
    assert took < deadline_s + 3  # loose; a long prompt's whole prefill takes 6.6 s


def test_a_schema_compiled_off_the_model_is_not_compiled_again_on_it(tiny_model, monkeypatch):
    # The server compiles a schema in a child and puts it in the backend's grammar cache,
    # then the request waits for the model. Were the grammar evicted meanwhile (newer
    # schemas put by other requests), generation compiled it again on the model, under its
    # lock, where neither the deadline nor the compile bound can stop it.
    import threading

    from sllmbo.inference import constrained

    compiled_here = []
    real = constrained.compile_schema

    def counting(compiler, schema):
        compiled_here.append(schema)
        return real(compiler, schema)

    monkeypatch.setattr(constrained, "compile_schema", counting)
    with backend_for(tiny_model, True) as backend:
        Passes(backend, fixed_s=0.02)
        backend.grammar_cache.max_entries = 2
        with ChatServer(backend, model_name="m", port=0) as server:
            url = chat_url(server.url)
            busy = threading.Thread(target=post, args=(url, {
                "messages": MESSAGES, "max_tokens": 400, "temperature": 0}),
                kwargs={"headers": {"X-Stainless-Read-Timeout": "2"}})
            busy.start()  # holds the model for 2 s
            time.sleep(0.3)
            results = {}

            def ask(i: int) -> None:
                schema = {"type": "object", "properties": {"pick": {"enum": [f"v{i}"]}},
                          "required": ["pick"], "additionalProperties": False}
                body = {"messages": MESSAGES, "max_tokens": 16, "temperature": 0,
                        "response_format": {"type": "json_schema",
                                            "json_schema": {"name": "a", "schema": schema}}}
                results[i] = post(url, body)

            waiters = []
            for i in range(5):  # the first one's grammar is the oldest of five
                waiters.append(threading.Thread(target=ask, args=(i,)))
                waiters[-1].start()
                time.sleep(0.1)
            for thread in [busy, *waiters]:
                thread.join(60)
    assert [results[i][0] for i in range(5)] == [200] * 5, results
    assert compiled_here == []
