"""JSON-Schema-constrained decoding for transformers ``generate`` through xgrammar.

Why xgrammar: it compiles a schema once into a token-level grammar and fills a vocabulary
bitmask per step in C++; on the embedded model it was faster than lm-format-enforcer (numbers
in ``docs``/the inference report, re-measured by ``python -m sllmbo.eval.bench_inference``).

Why not ``xgrammar.contrib.hf.LogitsProcessor`` as is: transformers appends user processors
*after* its own temperature/top-p warpers, so top-p could keep only tokens the grammar then
forbids (an all ``-inf`` row, a crash in sampling), and the contrib processor takes one grammar
set for the whole batch with no unconstrained rows. ``SchemaLogitsProcessor`` masks first and
applies temperature and top-p itself, per row, with rows that carry no schema left free.
"""

from __future__ import annotations

import json
import threading
from collections import Counter, OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import BackendError

from .base import FinishReason

if TYPE_CHECKING:
    import torch
    import xgrammar as xgr


def check_schema(schema: dict[str, Any]) -> None:
    """Raise ``BackendError`` naming the problem when ``schema`` is not a valid JSON Schema."""
    import jsonschema

    if not isinstance(schema, dict):
        raise BackendError(f"a JSON Schema must be an object, got {type(schema).__name__}")
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as err:
        path = "/".join(str(p) for p in err.absolute_path) or "(root)"
        raise BackendError(
            f"invalid JSON Schema at {path}: {err.message}",
            hint="fix the search space's schema (SearchSpace.to_json_schema)",
        ) from None


def schema_problem(text: str, schema: dict[str, Any] | None) -> str | None:
    """Why ``text`` is not a JSON document satisfying ``schema`` (None when it is)."""
    import jsonschema

    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return f"not valid JSON ({err.msg} at {err.pos})"
    if schema is None:
        return None
    error = jsonschema.exceptions.best_match(
        jsonschema.validators.validator_for(schema)(schema).iter_errors(value))
    if error is None:
        return None
    path = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"does not match the schema at {path}: {error.message}"


def classify_finish(engine_reason: str | None, text: str, schema: dict[str, Any] | None,
                    who: str) -> tuple[FinishReason, str | None]:
    """Map an engine's finish reason to ours and re-validate a finished answer.

    Servers may ignore a schema silently (vLLM drops unknown fields such as ``guided_json``),
    so an answer that "stopped" is still checked; ``who`` names the engine in the error.
    """
    if engine_reason == "length":
        return "length", None
    if engine_reason != "stop":
        return "error", f"{who} finished with {engine_reason!r}"
    problem = schema_problem(text, schema) if schema is not None else None
    if problem is not None:
        return "error", f"{who}'s answer {problem}: {text[:200]!r}"
    return "stop", None


#: How every JSON Schema is compiled, here and in the server's compile worker. No free
#: whitespace: a weak model otherwise pads with spaces until max_tokens. Compact separators:
#: ~18% fewer tokens per answer on the embedded model, and the form
#: sllmbo.core.prompts.render_config writes (so training targets match).
COMPILE_OPTIONS: dict[str, Any] = {"any_whitespace": False, "separators": (",", ":"),
                                   "strict_mode": True}


def schema_key(schema: dict[str, Any]) -> str:
    """One string per distinct schema (the caches' key)."""
    return json.dumps(schema, sort_keys=True)


def compile_schema(compiler: xgr.GrammarCompiler, schema: dict[str, Any]) -> xgr.CompiledGrammar:
    """``schema`` checked and compiled for ``compiler``'s tokenizer; ``BackendError`` naming
    the problem when it is not a schema the decoder can use."""
    check_schema(schema)
    try:
        # Compiled from the schema as given: property order is the answer's key order.
        return compiler.compile_json_schema(json.dumps(schema), **COMPILE_OPTIONS)
    except RuntimeError as err:
        reason = str(err).strip().splitlines()[-1].split("] ")[-1].split(": ", 1)[-1]
        raise BackendError(
            f"the constrained decoder cannot compile this JSON Schema: {reason}",
            hint="use plain types, enums, minimum/maximum and local $refs",
        ) from None


class GrammarCache:
    """Compiles JSON Schemas for one tokenizer, once per distinct schema.

    Holds the ``max_entries`` most recently used grammars (a study uses a handful; a server
    fed ever-new schemas must not grow without bound), and turns xgrammar's own unbounded
    cache off so this one is the only one. A server compiles elsewhere (a child process it
    can stop, ``sllmbo.inference.server.compiler``) and ``put``s the result here; its
    request holds it ``pinned`` from before the compile to the answer: were it evicted while
    the request waited for the model (newer schemas put meanwhile), ``get`` would compile it
    again on the model, where no deadline can stop it.
    """

    def __init__(self, tokenizer: Any, vocab_size: int, stop_token_ids: Sequence[int],
                 max_entries: int = 64) -> None:
        import xgrammar as xgr

        self.info = xgr.TokenizerInfo.from_huggingface(
            tokenizer, vocab_size=vocab_size, stop_token_ids=list(stop_token_ids))
        self.vocab_size = vocab_size
        self.max_entries = max(1, max_entries)
        self._compiler = xgr.GrammarCompiler(self.info, max_threads=2, cache_enabled=False)
        self._compiled: OrderedDict[str, xgr.CompiledGrammar] = OrderedDict()
        self._pins: Counter[str] = Counter()  # kept whatever ``max_entries`` says
        self._lock = threading.Lock()  # a server puts from its event loop, the model gets

    def __contains__(self, schema: dict[str, Any]) -> bool:
        with self._lock:
            return schema_key(schema) in self._compiled

    def get(self, schema: dict[str, Any]) -> xgr.CompiledGrammar:
        key = schema_key(schema)
        with self._lock:
            if key in self._compiled:
                self._compiled.move_to_end(key)
                return self._compiled[key]
        return self.put(schema, compile_schema(self._compiler, schema))

    def put(self, schema: dict[str, Any], grammar: xgr.CompiledGrammar) -> xgr.CompiledGrammar:
        """Keep ``grammar`` (compiled for this tokenizer) as ``schema``'s."""
        with self._lock:
            self._compiled[schema_key(schema)] = grammar
            self._evict()
        return grammar

    @contextmanager
    def pinned(self, schema: dict[str, Any]) -> Iterator[None]:
        """Keep ``schema``'s grammar (when cached) for the duration, however many others are
        put: beyond ``max_entries`` only by the pinned ones."""
        key = schema_key(schema)
        with self._lock:
            self._pins[key] += 1
        try:
            yield
        finally:
            with self._lock:
                self._pins[key] -= 1
                if self._pins[key] <= 0:
                    del self._pins[key]
                self._evict()

    def _evict(self) -> None:
        """Drop the least recently used unpinned grammars past ``max_entries`` (lock held)."""
        excess = len(self._compiled) - self.max_entries
        for key in [k for k in self._compiled if k not in self._pins][:max(0, excess)]:
            del self._compiled[key]


class SchemaLogitsProcessor:
    """A transformers logits processor: grammar mask, then temperature and top-p, per row.

    One instance serves one ``generate`` call (the matchers hold per-row state). Rows whose
    grammar is ``None`` are not masked. Pass it as the only processor and leave
    ``temperature``/``top_p`` at 1.0 in the generation config so nothing reorders the steps.
    """

    def __init__(self, grammars: Sequence[xgr.CompiledGrammar | None], *, vocab_size: int,
                 temperature: float, top_p: float) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self.matchers = [xgr.GrammarMatcher(g) if g is not None else None for g in grammars]
        self.vocab_size = vocab_size
        self.temperature = temperature
        self.top_p = top_p
        self._bitmask = (xgr.allocate_token_bitmask(len(grammars), vocab_size)
                         if any(m is not None for m in self.matchers) else None)
        self._started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import torch

        if self._bitmask is not None:
            self._advance(input_ids)
            self._bitmask.fill_(-1)  # all bits set: every token allowed
            for row, matcher in enumerate(self.matchers):
                if matcher is not None and not matcher.is_terminated():
                    matcher.fill_next_token_bitmask(self._bitmask, row)
            # The model's logit row may be wider than the tokenizer's vocabulary (padding).
            width = min(scores.shape[-1], self.vocab_size)
            masked = scores[:, :width].float().cpu().contiguous()
            self._xgr.apply_token_bitmask_inplace(masked, self._bitmask)
            scores = scores.clone()
            scores[:, :width] = masked.to(scores.device, scores.dtype)
            if scores.shape[-1] > width:
                scores[:, width:] = -float("inf")
        if self.temperature > 0 and self.temperature != 1.0:
            scores = scores / self.temperature
        if self.temperature > 0 and self.top_p < 1.0:
            scores = _top_p(scores, self.top_p, torch)
        return scores

    def _advance(self, input_ids: torch.LongTensor) -> None:
        """Feed each row's last sampled token to its matcher (not on the first step)."""
        if not self._started:
            self._started = True
            return
        last = input_ids[:, -1].tolist()
        for row, matcher in enumerate(self.matchers):
            # The mask made any other token impossible; a rejection here is a library bug.
            if (matcher is not None and not matcher.is_terminated()
                    and not matcher.accept_token(last[row])):
                raise BackendError(f"constrained decoder rejected token {last[row]} "
                                   f"it had allowed (row {row})")


def _top_p(scores: torch.Tensor, top_p: float, torch: Any) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of tokens whose probability reaches ``top_p``."""
    sorted_logits, order = torch.sort(scores, descending=True, dim=-1)
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop_sorted = cumulative - sorted_logits.softmax(dim=-1) >= top_p  # always keeps the top one
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return scores.masked_fill(drop, -float("inf"))
