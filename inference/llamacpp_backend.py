"""In-process CPU backend on llama.cpp (``llama-cpp-python``'s low-level API) + llguidance.

Why: on 2 CPU cores the transformers path pays ~3 s importing torch and transformers before the
first token, and decodes the 135M model far below what memory bandwidth allows. llama.cpp
loads a GGUF in a fraction of a second and has fast batched CPU kernels; llguidance (Rust, no
dependencies) enforces a JSON Schema *including* numeric ``minimum``/``maximum``, which
llama.cpp's own GBNF converter ignores. Nothing here imports torch or transformers.

What it does that ``llama_cpp.Llama`` does not, and where:

- **n answers for about the price of one** (``llamacpp_decode.py``): requests that share a
  prompt share one prefill, then all rows decode together, one ``llama_decode`` per step;
- **prompt cache** (``llamacpp_cache.py``): the last prompt stays in sequence 0; the next
  request that shares its head (a study's system prompt, card, space) prefills only the rest;
- **verified jump-forward** (``llamacpp_decode.py``): the tokens the grammar forces next are
  fed in the same step as the chosen token and kept while the model's own choice agrees;
- **scoring**: ``score`` gives the log-probability of each of many continuations of one prompt
  (the prompt computed once, candidates in parallel sequences), for a recommender that ranks a
  pool of configurations instead of writing one;
- **threads from the cores actually free** (``cpu_threads.py``): chosen again before each call,
  so a busy core does not stall every step's barrier.

The model is the base GGUF with the LoRA adapter merged in at Q8_0 (``gguf_merge.py``), cached
by the adapter's hash (``merged_cache.gguf_path``). The C calls are in ``llamacpp_engine.py``,
the tokenizer, chat template and grammars in ``llamacpp_text.py``. Sampling draws from numpy's
generator, so seeded answers are reproducible here but differ from torch's draws; greedy
answers match the transformers path where the arithmetic agrees
(``tests/test_llamacpp_backend.py``). Not thread-safe: callers serialize access to a backend
(``samplers.calls.backend_lock``, the server's lock).
"""

from __future__ import annotations

import importlib.util
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.core.errors import BackendError, ModelNotFoundError

from .base import Backend, ChatRequest, Completion, FinishReason
from .cpu_threads import ThreadChooser
from .llamacpp_cache import KV_MIN_TOKENS, PromptCache
from .llamacpp_decode import MAX_DRAFT, MAX_ROWS, Row, RowDecoder, log_softmax
from .llamacpp_engine import KV_FILES, N_BATCH, LlamaEngine
from .llamacpp_text import ChatText, read_json

__all__ = ["ENGINE_HINT", "KV_FILES", "KV_MIN_TOKENS", "MAX_DRAFT", "MAX_ROWS", "N_BATCH",
           "N_CTX", "LlamaCppBackend", "unavailable_reason"]

#: KV cells: the cached prompt, other prompts of a batch, and every row's answer.
N_CTX = 8192
ENGINE_HINT = ("install the fast CPU engine: `make setup` (or pip install 'sllmbo[cpu]', which "
               "builds llama-cpp-python from source, ~5 min)")


def unavailable_reason() -> str | None:
    """Why this engine cannot run here (a missing package), or None when it can."""
    for module, package in (("llama_cpp", "llama-cpp-python"), ("llguidance", "llguidance"),
                            ("tokenizers", "tokenizers"), ("jinja2", "jinja2")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed"
    return None


class LlamaCppBackend(Backend):
    """Batched chat completions on llama.cpp with JSON Schemas enforced by llguidance.

    Args:
        model_path: a Hugging Face model folder (``tokenizer.json``, chat template,
            ``generation_config.json``) whose weights also exist as a llama GGUF (``gguf``).
        gguf: the base GGUF file; None: the one kept beside the embedded model
            (``models.base_gguf``).
        adapter_path: optional PEFT LoRA adapter folder, merged into the GGUF once and cached.
        constrained: enforce each request's JSON Schema while decoding (default True).
        out_type: weight type of the merged file, "Q8_0" (default: keeps the adapter, fast
            kernels) or "F16".
        n_threads: CPU threads, fixed; None (default): before each call, the cores this process
            may use that other processes leave free (``cpu_threads.ThreadChooser``).
        jump_forward: feed grammar-forced tokens in the same step, verified (default True).
        kv_files: keep long prompts' KV state in files for the next process
            (``$SLLMBO_HOME/cache/kv``; ``SLLMBO_KV_CACHE=0`` turns it off).
        on_note: called with a one-line note (the one-time merge) for the user.
    """

    def __init__(self, model_path: str | Path, *, gguf: str | Path | None = None,
                 adapter_path: str | Path | None = None, constrained: bool = True,
                 out_type: str = "Q8_0", n_threads: int | None = None,
                 jump_forward: bool = True, n_ctx: int = N_CTX, kv_files: bool = True,
                 on_note: Callable[[str], None] | None = None) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise BackendError(f"the llama.cpp engine cannot run: {reason}", hint=ENGINE_HINT)
        from . import merged_cache
        from .models import base_gguf

        self.model_path = Path(model_path)
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self.fine_tuned = self.adapter_path is not None
        self.constrained = constrained
        self.threads = ThreadChooser(fixed=n_threads)
        base = Path(gguf) if gguf is not None else base_gguf(self.model_path)
        if base is None or not base.is_file():
            raise ModelNotFoundError(f"no GGUF weights for {self.model_path}",
                                     hint="the llama.cpp engine runs the embedded model (run "
                                     "`sllmbo models pull`), or pass a llama GGUF file")
        if self.adapter_path is not None:
            from .adapters import check_adapter_fits

            check_adapter_fits(self.adapter_path, self.model_path,
                               read_json(self.model_path / "config.json"))
        self.gguf_path = merged_cache.gguf_file(base, self.adapter_path, out_type,
                                                on_note=on_note)
        self.kv_dir = (merged_cache.kv_dir() if kv_files and
                       os.environ.get("SLLMBO_KV_CACHE", "1") != "0" else None)
        self.text = ChatText(self.model_path)
        self.tokenizer = self.text.tokenizer
        self.stop_token_ids = self.text.stop_token_ids
        self._engine: LlamaEngine | None = LlamaEngine(
            self.gguf_path, n_threads=self.threads.choose(), n_ctx=n_ctx,
            n_seq_max=MAX_ROWS + 1)
        self.context_length = self._engine.n_ctx_train
        self.vocab_size = self._engine.n_vocab
        self._cache = PromptCache(self._engine, self.kv_dir, self.gguf_path.name)
        self._decoder = RowDecoder(self._engine, self._cache, self.stop_token_ids,
                                   jump_forward=jump_forward)
        self.name = f"llamacpp:{self.model_path.name}" + (
            f"+{self.adapter_path.name}" if self.adapter_path else "")
        #: Forward passes and answer tokens of the last ``complete`` (benchmarks).
        self.last_stats: dict[str, int] = {}

    @property
    def jump_forward(self) -> bool:
        """Feed grammar-forced tokens in the same step, verified."""
        return self._decoder.jump_forward

    @jump_forward.setter
    def jump_forward(self, value: bool) -> None:
        self._decoder.jump_forward = value

    @property
    def n_threads(self) -> int:
        """Threads the engine decodes with now."""
        return self._live().n_threads

    # -- the interface ------------------------------------------------------------------------

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat prompt's token ids, as the transformers path encodes them."""
        return self.text.encode_prompt(messages)

    def count_tokens(self, text: str) -> int:
        return len(self.text.encode(text))

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return len(self.encode_prompt(messages))

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer in order: up to ``MAX_ROWS`` requests decode together, those that share a
        prompt share its prefill."""
        self._live()
        start = time.perf_counter()
        rows = [self._row(i, r, start) for i, r in enumerate(requests)]
        results: list[Completion | None] = [None] * len(rows)
        self.last_stats = {"forward_passes": 0, "answer_tokens": 0}
        # Sort by prompt so rows sharing one land in one chunk; answers keep request order.
        order = sorted(range(len(rows)), key=lambda i: rows[i].prompt)
        for chunk in self._decoder.chunks([rows[i] for i in order]):
            chunk_start = time.perf_counter()
            self._decoder.decode_chunk(chunk, self.last_stats)
            latency = time.perf_counter() - chunk_start
            for row in chunk:
                results[row.index] = self._finish(row, requests[row.index], latency)
        return [r for r in results if r is not None]

    def score(self, messages: Sequence[dict[str, str]], continuations: Sequence[str], *,
              with_stop: bool = True) -> list[float]:
        """Log-probability (natural log, summed over tokens) of each continuation as the
        model's answer to ``messages``; ``with_stop``: including the stop token after it.

        The prompt is computed once (and kept in the prompt cache); candidates go through in
        parallel sequences, several per forward pass."""
        engine = self._live()
        prompt = self.encode_prompt(messages)
        last = self._cache.prefill(prompt)
        first_logits = log_softmax(engine.logits(last)[None, :])[0]
        stop = self.stop_token_ids[0]
        cands = [self.text.encode(text) + ([stop] if with_stop else [])
                 for text in continuations]
        scores = [0.0] * len(cands)
        pending = list(range(len(cands)))
        while pending:
            group, tokens = [], 0
            while pending and len(group) < MAX_ROWS and (
                    not group or tokens + len(cands[pending[0]]) <= N_BATCH):
                group.append(pending.pop(0))
                tokens += len(cands[group[-1]])
            entries = []
            for slot, c in enumerate(group, start=1):
                engine.seq_cp(0, slot, len(prompt))
                for j, token in enumerate(cands[c][:-1]):
                    entries.append((token, len(prompt) + j, slot, True))
            outputs = engine.decode(entries) if entries else []
            cursor = 0
            for c in group:
                toks = cands[c]
                total = float(first_logits[toks[0]])
                if len(toks) > 1:
                    rows = np.stack([engine.logits(outputs[cursor + j])
                                     for j in range(len(toks) - 1)])
                    logp = log_softmax(rows)
                    total += float(logp[np.arange(len(toks) - 1), toks[1:]].sum())
                    cursor += len(toks) - 1
                scores[c] = total
            for slot in range(1, len(group) + 1):
                engine.seq_rm(slot, 0)
        return scores

    def choice_logprobs(self, prompts: Sequence[Sequence[dict[str, str]]],
                        choices: Sequence[str]) -> list[list[float]]:
        """``Backend.choice_logprobs``: the prompts' common head (a pool's card, space and
        question) is computed once in the prompt cache; each prompt then costs only its own
        tail (the candidate), several tails per forward pass in parallel sequences."""
        engine = self._live()
        if not prompts:
            return []
        ids = self._choice_ids(choices, self.text.encode)
        encoded = [self.encode_prompt(m) for m in prompts]
        head = min(len(e) for e in encoded) - 1  # every prompt keeps a tail of >= 1 token
        first = encoded[0]
        shared = 0
        while shared < head and all(e[shared] == first[shared] for e in encoded):
            shared += 1
        if shared > 0:
            self._cache.prefill(first[:shared])
        else:
            self._cache.clear()
        out: list[list[float]] = [[] for _ in encoded]
        pending = list(range(len(encoded)))
        while pending:
            group: list[int] = []
            tokens = 0
            while pending and len(group) < MAX_ROWS and (
                    not group or tokens + len(encoded[pending[0]]) - shared <= N_BATCH):
                group.append(pending.pop(0))
                tokens += len(encoded[group[-1]]) - shared
            if tokens > N_BATCH:
                raise BackendError(f"a prompt's own tail is {tokens} tokens, over the "
                                   f"{N_BATCH} of one forward pass",
                                   hint="score prompts that share their head")
            entries = []
            for slot, index in enumerate(group, start=1):
                engine.seq_cp(0, slot, shared)
                tail = encoded[index][shared:]
                entries += [(token, shared + j, slot, j == len(tail) - 1)
                            for j, token in enumerate(tail)]
            outputs = engine.decode(entries)
            logp = log_softmax(np.stack([engine.logits(o) for o in outputs]))
            for row, index in enumerate(group):
                out[index] = [float(logp[row, i]) for i in ids]
            for slot in range(1, len(group) + 1):
                engine.seq_rm(slot, 0)
        return out

    def decode_step_seconds(self, n_tokens: int, repeats: int = 8) -> float:
        """Median seconds of one ``llama_decode`` of ``n_tokens`` tokens, one per parallel
        sequence (up to ``MAX_ROWS``, then several per sequence), after a 64-token prompt,
        logits at every token: what one decode step of that many rows and drafts costs
        (benchmarks; the prompt cache is left empty)."""
        engine = self._live()
        if not 1 <= n_tokens <= N_BATCH:
            raise BackendError(f"n_tokens must be in 1..{N_BATCH}, got {n_tokens}")
        self._cache.ids = []
        return engine.step_seconds(self.stop_token_ids[0], n_tokens, MAX_ROWS, repeats)

    def close(self) -> None:
        if getattr(self, "_engine", None) is not None:
            self._engine.close()
        self._engine = None

    # -- helpers -----------------------------------------------------------------------------

    def _live(self) -> LlamaEngine:
        """The open engine, its threads chosen for the cores free now."""
        if self._engine is None:
            raise BackendError("this backend was closed", hint="create a new backend")
        self._engine.set_threads(self.threads.choose())
        return self._engine

    def _matcher(self, schema: dict[str, Any] | None) -> Any:
        if schema is None or not self.constrained:
            return None
        return self.text.matcher(schema, self.vocab_size)

    def _row(self, index: int, request: ChatRequest, start: float) -> Row:
        s = request.sampling
        return Row(index=index, prompt=self.encode_prompt(request.messages),
                   matcher=self._matcher(request.json_schema),
                   rng=np.random.default_rng(s.seed), temperature=s.temperature,
                   top_p=s.top_p, max_tokens=s.max_tokens,
                   deadline=None if s.max_time_s is None else start + s.max_time_s,
                   cancelled=request.cancelled)

    def _finish(self, row: Row, request: ChatRequest, latency: float) -> Completion:
        from .constrained import schema_problem

        body = row.out[:-1] if row.stopped else row.out
        text = self.text.decode(body)
        if row.timed_out:
            return Completion(text, "error", len(row.prompt), len(body), latency,
                              error=f"generation stopped after {latency:.1f} s "
                              "(max_time_s, or the request was cancelled)")
        reason: FinishReason = "stop" if row.stopped else "length"
        error = None
        schema = request.json_schema if self.constrained else None
        if reason == "stop" and schema is not None:
            problem = schema_problem(text, schema)
            if problem is not None:  # the grammar should make this impossible: say so loudly
                reason, error = "error", f"constrained output {problem}: {text[:200]!r}"
        return Completion(text=text, finish_reason=reason, prompt_tokens=len(row.prompt),
                          completion_tokens=len(body) + row.stopped, latency_s=latency,
                          error=error)
