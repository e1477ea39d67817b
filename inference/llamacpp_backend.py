"""In-process CPU backend on llama.cpp (``llama-cpp-python``'s low-level API) + llguidance.

Why: on 2 CPU cores the transformers path pays ~3 s importing torch and transformers before the
first token, and decodes the 135M model far below what memory bandwidth allows. llama.cpp
loads a GGUF in a fraction of a second and has fast batched CPU kernels; llguidance (Rust, no
dependencies) enforces a JSON Schema *including* numeric ``minimum``/``maximum``, which
llama.cpp's own GBNF converter ignores. Nothing here imports torch or transformers.

What it does that ``llama_cpp.Llama`` does not:

- **n answers for about the price of one**: requests that share a prompt share one prefill
  (the prompt's KV cells are tagged with every row's sequence id in a unified cache, no
  copy), then all rows decode together, one ``llama_decode`` per step;
- **prompt cache**: the last prompt stays in sequence 0; the next request that shares its head
  (a study's system prompt, card, space) prefills only the rest;
- **verified jump-forward**: the tokens the grammar forces next (``compute_ff_tokens``) are fed
  in the same step as the chosen token and kept while the model's own choice at each position
  agrees, so answers are the ones token-by-token decoding gives;
- **scoring**: ``score`` gives the log-probability of each of many continuations of one prompt
  (the prompt computed once, candidates in parallel sequences), for a recommender that ranks a
  pool of configurations instead of writing one.

The model is the base GGUF with the LoRA adapter merged in at Q8_0 (``gguf_merge.py``), cached
by the adapter's hash (``merged_cache.gguf_path``). Sampling draws from numpy's generator, so
seeded answers are reproducible here but differ from torch's draws; greedy answers match the
transformers path where the arithmetic agrees (``tests/test_llamacpp_backend.py``). Not
thread-safe: callers serialize access to a backend (``samplers.calls.backend_lock``, the
server's lock).
"""

from __future__ import annotations

import ctypes
import importlib.util
import json
import os
import sys
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.errors import BackendError, ModelNotFoundError

from .base import Backend, ChatRequest, Completion, FinishReason

#: Sequences decoded together in one chunk (sequence 0 is the prompt cache).
MAX_ROWS = 16
#: KV cells: the cached prompt, other prompts of a batch, and every row's answer.
N_CTX = 8192
#: Tokens per ``llama_decode`` call (prefill chunks, scoring chunks).
N_BATCH = 512
#: Forced tokens fed in one step per row (keeps a step of MAX_ROWS rows under N_BATCH).
MAX_DRAFT = 24
#: Prompts at least this long keep their KV state in a file for the next process (a cold
#: ``sllmbo recommend`` with the same task and space skips its prefill); the newest
#: ``KV_FILES`` are kept.
KV_MIN_TOKENS = 64
KV_FILES = 32
ENGINE_HINT = ("install the fast CPU engine: `make setup` (or pip install 'sllmbo[cpu]', which "
               "builds llama-cpp-python from source, ~5 min)")


def unavailable_reason() -> str | None:
    """Why this engine cannot run here (a missing package), or None when it can."""
    for module, package in (("llama_cpp", "llama-cpp-python"), ("llguidance", "llguidance"),
                            ("tokenizers", "tokenizers"), ("jinja2", "jinja2")):
        if importlib.util.find_spec(module) is None:
            return f"{package} is not installed"
    return None


def _threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


#: Load average, per thread this engine runs, from which OpenMP workers stop spinning.
OVERSUBSCRIBED_LOAD = 2.0


def omp_wait_policy(n_threads: int, load: float | None = None) -> str | None:
    """``PASSIVE`` where the machine is oversubscribed (a 1-minute load average of at least
    ``OVERSUBSCRIBED_LOAD`` per thread), else None: libgomp's default, whose workers spin
    briefly at each barrier. Measured on 2 cores: quiet, passive workers made a one-token
    decode step 40 ms against 14 ms and a cold greedy ``recommend`` 3.5 s against 2.1 s;
    with two other CPU-bound processes (load 2) spinning was no slower; at load 7, spinning
    workers made a step 130 ms against 25 ms."""
    if load is None:
        try:
            load = os.getloadavg()[0]
        except (AttributeError, OSError):  # not Unix
            return None
    return "PASSIVE" if load >= OVERSUBSCRIBED_LOAD * max(1, n_threads) else None


@dataclass
class _Row:
    """One request being decoded: its sequence in the KV cache and its sampling state."""

    index: int
    prompt: list[int]
    matcher: Any
    rng: np.random.Generator
    temperature: float
    top_p: float
    max_tokens: int
    deadline: float | None
    cancelled: Callable[[], bool] | None
    seq: int = 0
    pos: int = 0  # tokens in this row's sequence
    out: list[int] = field(default_factory=list)
    draft: list[int] = field(default_factory=list)
    pending: list[int] = field(default_factory=list)
    done: bool = False
    stopped: bool = False
    timed_out: bool = False
    passes: int = 0


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
        n_threads: CPU threads (default: every core this process may use; llama-cpp-python's
            own default is half of them).
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
        self.jump_forward = jump_forward
        self.n_threads = n_threads or _threads()
        base = Path(gguf) if gguf is not None else base_gguf(self.model_path)
        if base is None or not base.is_file():
            raise ModelNotFoundError(f"no GGUF weights for {self.model_path}",
                                     hint="the llama.cpp engine runs the embedded model (run "
                                     "`sllmbo models pull`), or pass a llama GGUF file")
        if self.adapter_path is not None:
            from .adapters import check_adapter_fits

            check_adapter_fits(self.adapter_path, self.model_path,
                               _read_json(self.model_path / "config.json"))
        self.gguf_path = merged_cache.gguf_file(base, self.adapter_path, out_type,
                                                on_note=on_note)
        self.kv_dir = (merged_cache.kv_dir() if kv_files and
                       os.environ.get("SLLMBO_KV_CACHE", "1") != "0" else None)
        self._load_text_side()
        self._engine = _Engine(self.gguf_path, n_threads=self.n_threads, n_ctx=n_ctx,
                               n_seq_max=MAX_ROWS + 1)
        self.context_length = self._engine.n_ctx_train
        self.vocab_size = self._engine.n_vocab
        self._llg_tokenizer: Any = None
        self._grammars: OrderedDict[str, str] = OrderedDict()
        self._cache_ids: list[int] = []  # the prompt sequence 0 holds
        self.name = f"llamacpp:{self.model_path.name}" + (
            f"+{self.adapter_path.name}" if self.adapter_path else "")
        #: Forward passes and answer tokens of the last ``complete`` (benchmarks).
        self.last_stats: dict[str, int] = {}

    # -- loading -----------------------------------------------------------------------------

    def _load_text_side(self) -> None:
        import jinja2.sandbox
        from tokenizers import Tokenizer

        folder = self.model_path
        path = folder / "tokenizer.json"
        if not path.is_file():
            raise ModelNotFoundError(f"no tokenizer.json in {folder}",
                                     hint="the llama.cpp engine reads the model folder's "
                                     "tokenizer; re-run `sllmbo models pull`")
        self.tokenizer = Tokenizer.from_file(str(path))
        config = _read_json(folder / "tokenizer_config.json")
        template = config.get("chat_template")
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text()
        if not template:
            raise BackendError(f"the tokenizer of {folder} has no chat template",
                               hint="use an instruct model, or add chat_template.jinja")
        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
        self._template = env.from_string(template)
        self._special = {k: v for k, v in config.items()
                         if k.endswith("_token") and isinstance(v, str)}
        ids: set[int] = set()
        generation = _read_json(folder / "generation_config.json")
        eos = generation.get("eos_token_id")
        ids.update([eos] if isinstance(eos, int) else (eos or []))
        if isinstance(config.get("eos_token"), str):
            token = self.tokenizer.token_to_id(config["eos_token"])
            if token is not None:
                ids.add(token)
        if not ids:
            raise BackendError("the model defines no end-of-sequence token",
                               hint="set eos_token_id in generation_config.json")
        self.stop_token_ids = sorted(int(i) for i in ids)
        self._stops = frozenset(self.stop_token_ids)

    def _render(self, messages: Sequence[dict[str, str]]) -> str:
        import jinja2

        try:
            return self._template.render(messages=list(messages), add_generation_prompt=True,
                                         **self._special)
        except jinja2.TemplateError as err:
            raise BackendError(f"cannot apply the chat template of {self.model_path}: {err}",
                               hint="use an instruct model whose tokenizer has a chat "
                               "template") from None

    def encode_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat prompt's token ids, as the transformers path encodes them."""
        return self.tokenizer.encode(self._render(messages), add_special_tokens=False).ids

    def _grammar(self, schema: dict[str, Any]) -> str:
        import llguidance

        key = json.dumps(schema, sort_keys=True)
        if key in self._grammars:
            self._grammars.move_to_end(key)
            return self._grammars[key]
        # No free whitespace, compact separators: the form the transformers path decodes
        # (xgrammar with any_whitespace=False, separators (",", ":")) and training targets use.
        compact = {**schema, "x-guidance": {"whitespace_flexible": False,
                                            "item_separator": ",", "key_separator": ":"}}
        grammar = llguidance.grammar_from("json_schema", json.dumps(compact))
        ok, problems = _validate_grammar(grammar)
        if not ok:
            raise BackendError(f"the constrained decoder cannot compile this JSON Schema: "
                               f"{problems}",
                               hint="use plain types, enums, minimum/maximum and local $refs")
        self._grammars[key] = grammar
        while len(self._grammars) > 64:
            self._grammars.popitem(last=False)
        return grammar

    def _matcher(self, schema: dict[str, Any] | None) -> Any:
        if schema is None or not self.constrained:
            return None
        import llguidance

        if self._llg_tokenizer is None:
            self._llg_tokenizer = llguidance.LLTokenizer(
                str(self.model_path / "tokenizer.json"), n_vocab=self.vocab_size,
                eos_token=self.stop_token_ids[0])
        matcher = llguidance.LLMatcher(self._llg_tokenizer, self._grammar(schema), log_level=0)
        if matcher.is_error():
            raise BackendError(f"the constrained decoder rejected this JSON Schema: "
                               f"{matcher.get_error()}")
        return matcher

    # -- the interface ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return len(self.encode_prompt(messages))

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer in order: up to ``MAX_ROWS`` requests decode together, those that share a
        prompt share its prefill."""
        if self._engine is None:
            raise BackendError("this backend was closed", hint="create a new backend")
        start = time.perf_counter()
        rows = [self._row(i, r, start) for i, r in enumerate(requests)]
        results: list[Completion | None] = [None] * len(rows)
        self.last_stats = {"forward_passes": 0, "answer_tokens": 0}
        # Sort by prompt so rows sharing one land in one chunk; answers keep request order.
        order = sorted(range(len(rows)), key=lambda i: rows[i].prompt)
        for chunk in self._chunks([rows[i] for i in order]):
            chunk_start = time.perf_counter()
            self._decode_chunk(chunk)
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
        if self._engine is None:
            raise BackendError("this backend was closed", hint="create a new backend")
        engine = self._engine
        prompt = self.encode_prompt(messages)
        last = self._prefill_cache(prompt)
        first_logits = _log_softmax(engine.logits(last)[None, :])[0]
        stop = self.stop_token_ids[0]
        cands = [self.tokenizer.encode(text, add_special_tokens=False).ids
                 + ([stop] if with_stop else []) for text in continuations]
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
                    logp = _log_softmax(rows)
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
        if self._engine is None:
            raise BackendError("this backend was closed", hint="create a new backend")
        if not prompts:
            return []
        engine = self._engine
        ids = self._choice_ids(
            choices, lambda c: self.tokenizer.encode(c, add_special_tokens=False).ids)
        encoded = [self.encode_prompt(m) for m in prompts]
        head = min(len(e) for e in encoded) - 1  # every prompt keeps a tail of >= 1 token
        first = encoded[0]
        shared = 0
        while shared < head and all(e[shared] == first[shared] for e in encoded):
            shared += 1
        if shared > 0:
            self._prefill_cache(first[:shared])
        else:
            engine.seq_rm(0, 0)
            self._cache_ids = []
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
            logp = _log_softmax(np.stack([engine.logits(o) for o in outputs]))
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
        if self._engine is None:
            raise BackendError("this backend was closed", hint="create a new backend")
        if not 1 <= n_tokens <= N_BATCH:
            raise BackendError(f"n_tokens must be in 1..{N_BATCH}, got {n_tokens}")
        engine = self._engine
        engine.seq_rm(0, 0)
        self._cache_ids = []
        prompt = [self.stop_token_ids[0]] * 64
        engine.decode([(t, j, 0, False) for j, t in enumerate(prompt)])
        seqs = min(n_tokens, MAX_ROWS)
        entries = [(prompt[0], len(prompt) + i // seqs, 1 + i % seqs, True)
                   for i in range(n_tokens)]
        walls = []
        try:
            for _ in range(repeats + 1):  # the first one warms up
                for slot in range(1, seqs + 1):
                    engine.seq_cp(0, slot, len(prompt))
                start = time.perf_counter()
                engine.decode(entries)
                walls.append(time.perf_counter() - start)
                for slot in range(1, seqs + 1):
                    engine.seq_rm(slot, 0)
        finally:
            engine.seq_rm(0, 0)
        walls = sorted(walls[1:])
        return walls[len(walls) // 2]

    def close(self) -> None:
        if getattr(self, "_engine", None) is not None:
            self._engine.close()
        self._engine = None

    # -- decoding ----------------------------------------------------------------------------

    def _row(self, index: int, request: ChatRequest, start: float) -> _Row:
        s = request.sampling
        return _Row(index=index, prompt=self.encode_prompt(request.messages),
                    matcher=self._matcher(request.json_schema),
                    rng=np.random.default_rng(s.seed), temperature=s.temperature,
                    top_p=s.top_p, max_tokens=s.max_tokens,
                    deadline=None if s.max_time_s is None else start + s.max_time_s,
                    cancelled=request.cancelled)

    def _chunks(self, rows: list[_Row]) -> list[list[_Row]]:
        """Rows in groups that fit the KV cache: prompts plus every row's answer."""
        chunks: list[list[_Row]] = []
        current: list[_Row] = []
        need = 0
        for row in rows:
            fresh = not current or row.prompt != current[-1].prompt
            cost = row.max_tokens + 1 + (len(row.prompt) if fresh else 0)
            if current and (len(current) >= MAX_ROWS
                            or need + cost + len(row.prompt) > self._engine.n_ctx):
                chunks.append(current)
                current, need, cost = [], 0, row.max_tokens + 1 + len(row.prompt)
            current.append(row)
            need += cost
        if current:
            chunks.append(current)
        return chunks

    def _prefill_cache(self, prompt: list[int]) -> int:
        """Make sequence 0 hold ``prompt``, reusing the cached head (in memory, else a KV file
        an earlier process saved for this exact prompt); the output index of the last prompt
        token's logits."""
        engine = self._engine
        shared = 0
        limit = min(len(self._cache_ids), len(prompt) - 1)
        while shared < limit and self._cache_ids[shared] == prompt[shared]:
            shared += 1
        kv_file = self._kv_file(prompt)
        from_file = False
        if shared == 0 and kv_file is not None and kv_file.is_file():
            engine.seq_rm(0, 0)
            loaded = engine.load_seq(kv_file, 0, len(prompt))
            from_file = loaded == prompt
            shared = len(prompt) - 1 if from_file else 0
        engine.seq_rm(0, shared)
        self._cache_ids = []
        # The last token alone, always: its logits then come from the same one-row kernels
        # whether the head was cached or not, so a seeded (or greedy) answer does not change
        # with what the cache held (a batched row rounds differently).
        last = len(prompt) - 1
        if shared < last:
            engine.decode([(t, shared + j, 0, False) for j, t in enumerate(prompt[shared:last])])
        outputs = engine.decode([(prompt[last], last, 0, True)])
        self._cache_ids = list(prompt)
        if kv_file is not None and not from_file and shared < len(prompt) // 2:
            engine.save_seq(kv_file, 0, prompt)
        return outputs[-1]

    def _kv_file(self, prompt: list[int]) -> Path | None:
        """Where the KV state of ``prompt`` is kept between processes (``KV_FILES`` newest
        prompts of ``KV_MIN_TOKENS`` or more, ~23 KB a token); None: not kept."""
        if self.kv_dir is None or len(prompt) < KV_MIN_TOKENS:
            return None
        import hashlib

        digest = hashlib.sha256(self.gguf_path.name.encode())
        digest.update(np.asarray(prompt, dtype=np.int32).tobytes())
        return self.kv_dir / f"{digest.hexdigest()[:24]}.kv"

    def _decode_chunk(self, rows: list[_Row]) -> None:
        engine = self._engine
        for slot, row in enumerate(rows, start=1):
            row.seq = slot
            engine.seq_rm(slot, 0)
        try:
            # Prefill: the first prompt through the cache (sequence 0), others once each.
            logits: dict[int, np.ndarray] = {}
            groups: dict[tuple[int, ...], list[_Row]] = {}
            for row in rows:
                groups.setdefault(tuple(row.prompt), []).append(row)
            for g, (prompt, members) in enumerate(groups.items()):
                if g == 0:
                    last = self._prefill_cache(list(prompt))
                    source = 0
                else:
                    source = members[0].seq
                    shared = 0
                    limit = min(len(self._cache_ids), len(prompt) - 1)
                    while shared < limit and self._cache_ids[shared] == prompt[shared]:
                        shared += 1
                    if shared:
                        engine.seq_cp(0, source, shared)
                    end = len(prompt) - 1
                    if shared < end:
                        engine.decode([(t, shared + j, source, False)
                                       for j, t in enumerate(prompt[shared:end])])
                    last = engine.decode([(prompt[end], end, source, True)])[-1]
                first = np.array(engine.logits(last), copy=True)
                for row in members:
                    if row.seq != source:
                        engine.seq_cp(source, row.seq, len(prompt))
                    row.pos = len(prompt)
                    logits[row.seq] = first[None, :]
            for row in rows:
                self._advance(row, logits[row.seq])
            while True:
                live = [r for r in rows if not r.done]
                if not live:
                    break
                entries, spans = [], []
                for row in live:
                    spans.append(len(entries))
                    for j, token in enumerate(row.pending):
                        entries.append((token, row.pos + j, row.seq, True))
                    row.pos += len(row.pending)
                    row.passes += 1
                outputs = engine.decode(entries)
                for row, begin in zip(live, spans, strict=True):
                    n = len(row.pending)
                    block = np.stack([engine.logits(outputs[begin + j]) for j in range(n)])
                    self._advance(row, block)
        finally:
            for row in rows:
                engine.seq_rm(row.seq, 0)
        self.last_stats["forward_passes"] += max((r.passes for r in rows), default=0) + 1
        self.last_stats["answer_tokens"] += sum(len(r.out) for r in rows)

    def _advance(self, row: _Row, block: np.ndarray) -> None:
        """Choose at each position of ``block`` (the logits after each pending token): keep
        the draft while the model agrees, then set the row's next pending tokens."""
        draft = row.draft
        token = -1
        for j in range(len(draft) + 1):
            token = self._choose(row, block[j])
            if j < len(draft) and token == draft[j] and token not in self._stops:
                self._consume(row, token)
                continue
            unused = len(draft) - j
            if unused:  # the model parted from the draft: those cells leave the cache
                row.pos -= unused
                self._engine.seq_rm(row.seq, row.pos)
            break
        row.draft = []
        if token in self._stops:
            row.out.append(token)
            row.done = row.stopped = True
            return
        self._consume(row, token)
        matcher = row.matcher
        if matcher is not None and matcher.is_stopped():
            row.out.append(self.stop_token_ids[0])  # nothing but the end can follow
            row.done = row.stopped = True
            return
        if len(row.out) >= row.max_tokens:
            row.done = True
            return
        if ((row.deadline is not None and time.perf_counter() >= row.deadline)
                or (row.cancelled is not None and row.cancelled())):
            row.done = row.timed_out = True
            return
        if matcher is not None and self.jump_forward:
            room = row.max_tokens - len(row.out) - 1  # the token chosen after the draft
            row.draft = matcher.compute_ff_tokens()[:max(0, min(room, MAX_DRAFT))]
        row.pending = [token, *row.draft]

    def _consume(self, row: _Row, token: int) -> None:
        if row.matcher is not None and not row.matcher.consume_token(token):
            # The mask made any other token impossible; a rejection is a library bug.
            raise BackendError(f"constrained decoder rejected token {token} it had allowed: "
                               f"{row.matcher.get_error()}")
        row.out.append(token)

    def _choose(self, row: _Row, logits: np.ndarray) -> int:
        """The next token at one position: grammar mask, then greedy or temperature + top-p."""
        ids = None
        if row.matcher is not None:
            mask = np.frombuffer(row.matcher.compute_bitmask(), dtype=np.uint8)
            allowed = np.unpackbits(mask, bitorder="little")[:logits.shape[0]]
            ids = np.flatnonzero(allowed)
            if len(ids) == 0:
                raise BackendError("the constrained decoder allows no token: "
                                   f"{row.matcher.get_error()}")
            if len(ids) == 1:
                return int(ids[0])
            logits = logits[ids]
        if row.temperature == 0:
            index = int(np.argmax(logits))
        else:
            z = logits.astype(np.float64) / row.temperature
            z -= z.max()
            p = np.exp(z)
            p /= p.sum()
            if row.top_p < 1.0:
                order = np.argsort(-p, kind="stable")
                ranked = p[order]
                keep = np.cumsum(ranked) - ranked < row.top_p  # always keeps the top one
                p = np.zeros_like(p)
                p[order[keep]] = ranked[keep]
                p /= p.sum()
            index = int(row.rng.choice(len(p), p=p))
        return index if ids is None else int(ids[index])

    def _finish(self, row: _Row, request: ChatRequest, latency: float) -> Completion:
        from .constrained import schema_problem

        body = row.out[:-1] if row.stopped else row.out
        text = self.tokenizer.decode(body, skip_special_tokens=True)
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


class _Engine:
    """A llama.cpp model + context + batch through the ctypes API, and the few calls used."""

    def __init__(self, path: Path, *, n_threads: int, n_ctx: int, n_seq_max: int) -> None:
        # Must be set before libgomp loads; a user's own OMP_WAIT_POLICY wins.
        policy = omp_wait_policy(n_threads)
        if policy is not None:
            os.environ.setdefault("OMP_WAIT_POLICY", policy)
        import llama_cpp.llama_cpp as C

        self.C = C
        _quiet_logs(C)
        C.llama_backend_init()
        mparams = C.llama_model_default_params()
        mparams.use_mmap = True
        self.model = C.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise BackendError(f"llama.cpp could not load {path}",
                               hint="delete the file to rebuild it, or use --backend "
                               "transformers")
        cparams = C.llama_context_default_params()
        cparams.n_ctx = n_ctx
        cparams.n_batch = N_BATCH
        cparams.n_ubatch = N_BATCH
        cparams.n_seq_max = n_seq_max
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads
        cparams.kv_unified = True  # rows share their prompt's cells instead of copies
        cparams.no_perf = True
        self.ctx = C.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            C.llama_model_free(self.model)
            raise BackendError("llama.cpp could not create a context",
                               hint="free some memory, or use --backend transformers")
        self.n_ctx = C.llama_n_ctx(self.ctx)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(self.model))
        self.memory = C.llama_get_memory(self.ctx)
        self.batch = C.llama_batch_init(N_BATCH, 0, n_seq_max)

    def seq_rm(self, seq: int, start: int) -> None:
        """Drop sequence ``seq`` from position ``start`` on."""
        self.C.llama_memory_seq_rm(self.memory, seq, start, -1)

    def seq_cp(self, src: int, dst: int, length: int) -> None:
        """Give ``dst`` the first ``length`` positions of ``src`` (shared cells)."""
        self.C.llama_memory_seq_cp(self.memory, src, dst, 0, length)

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> list[int]:
        """Feed (token, position, sequence, wants logits) entries, ``N_BATCH`` at a time;
        the output index (``logits``) of every entry that wants logits, in order. An index
        is valid until the next call."""
        C, batch = self.C, self.batch
        outputs: list[int] = []
        for begin in range(0, len(entries), N_BATCH):
            part = entries[begin:begin + N_BATCH]
            mine = []
            for i, (token, pos, seq, wants) in enumerate(part):
                batch.token[i] = token
                batch.pos[i] = pos
                batch.n_seq_id[i] = 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = wants
                if wants:
                    mine.append(i)
            batch.n_tokens = len(part)
            code = C.llama_decode(self.ctx, batch)
            if code != 0:
                raise BackendError(f"llama.cpp decode failed (code {code}): the KV cache is "
                                   "full or the batch is invalid",
                                   hint="ask for fewer answers or fewer max_tokens at once")
            outputs = mine  # only the last part's outputs are readable
            if begin + N_BATCH < len(entries) and any(e[3] for e in part):
                raise BackendError("logits wanted from a non-final part of a long batch")
        return outputs

    def save_seq(self, path: Path, seq: int, tokens: Sequence[int]) -> bool:
        """Write sequence ``seq``'s KV state (and its tokens) to ``path``, atomically, keeping
        the newest ``KV_FILES`` files of its folder; False where it cannot be written."""
        import tempfile

        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=path.parent)
            os.close(fd)
        except OSError:
            return False
        array = (self.C.llama_token * len(tokens))(*tokens)
        written = self.C.llama_state_seq_save_file(self.ctx, tmp.encode(), seq, array,
                                                   len(tokens))
        try:
            if not written:
                raise OSError("nothing written")
            os.replace(tmp, path)
            old = sorted(path.parent.glob("*.kv"), key=lambda p: p.stat().st_mtime)
            for stale in old[:-KV_FILES]:
                stale.unlink(missing_ok=True)
        except OSError:
            Path(tmp).unlink(missing_ok=True)
            return False
        return True

    def load_seq(self, path: Path, seq: int, capacity: int) -> list[int] | None:
        """Load a ``save_seq`` file into sequence ``seq``; its tokens, or None."""
        array = (self.C.llama_token * max(1, capacity))()
        count = ctypes.c_size_t(0)
        read = self.C.llama_state_seq_load_file(self.ctx, str(path).encode(), seq, array,
                                                capacity, ctypes.byref(count))
        if not read:
            self.seq_rm(seq, 0)
            return None
        return list(array[:count.value])

    def logits(self, index: int) -> np.ndarray:
        """The next-token logits at output ``index`` of the last ``decode`` (a view)."""
        pointer = self.C.llama_get_logits_ith(self.ctx, index)
        return np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))

    def close(self) -> None:
        C = self.C
        if self.batch is not None:
            C.llama_batch_free(self.batch)
            self.batch = None
        if self.ctx:
            C.llama_free(self.ctx)
            self.ctx = None
        if self.model:
            C.llama_model_free(self.model)
            self.model = None


def _validate_grammar(grammar: str) -> tuple[bool, str]:
    import llguidance

    ok, is_error, messages = True, False, []
    result = llguidance.LLMatcher.validate_grammar_with_warnings(grammar)
    if isinstance(result, tuple):
        is_error, messages = result[0], result[1]
        ok = not is_error
    return ok, "; ".join(messages)


def _log_softmax(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    return rows - top - np.log(np.exp(rows - top).sum(axis=1, keepdims=True))


_LOG_CALLBACK: Any = None


def _quiet_logs(C: Any) -> None:
    """llama.cpp prints model details to stderr on every load; keep errors only."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        def forward(level: int, text: bytes, _data: Any) -> None:
            if level == 3 and text:  # GGML_LOG_LEVEL_ERROR
                sys.stderr.write(text.decode("utf-8", "replace"))

        _LOG_CALLBACK = C.llama_log_callback(forward)
        C.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, json.JSONDecodeError) as err:
        raise BackendError(f"cannot read {path}: {err}") from None
    return data if isinstance(data, dict) else {}
