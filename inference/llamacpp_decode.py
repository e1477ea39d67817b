"""Decoding rows together on the llama.cpp engine: shared prefill, grammar masks, jump-forward.

Why its own module: this is the loop that makes n answers cost about one. Requests that share
a prompt share one prefill (the prompt's KV cells are tagged with every row's sequence id, no
copy), then all rows decode together, one ``llama_decode`` per step; the tokens the grammar
forces next are fed in the same step as the chosen token and kept while the model's own choice
at each position agrees (verified jump-forward), so answers are the ones token-by-token decoding
gives.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from sllmbo.core.errors import BackendError

from .llamacpp_cache import PromptCache
from .llamacpp_engine import LlamaEngine

#: Sequences decoded together in one chunk (sequence 0 is the prompt cache).
MAX_ROWS = 16
#: Forced tokens fed in one step per row (keeps a step of MAX_ROWS rows under N_BATCH).
MAX_DRAFT = 24


@dataclass
class Row:
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


class RowDecoder:
    """Decodes chunks of rows on ``engine``, the first prompt of a chunk through ``cache``.

    Args:
        engine: the llama.cpp engine.
        cache: its prompt cache (sequence 0).
        stop_token_ids: tokens that end an answer; the first is appended when the grammar
            allows nothing more.
        jump_forward: feed grammar-forced tokens in the same step, verified.
    """

    def __init__(self, engine: LlamaEngine, cache: PromptCache, stop_token_ids: list[int], *,
                 jump_forward: bool = True) -> None:
        self.engine = engine
        self.cache = cache
        self.stop_token_ids = stop_token_ids
        self.stops = frozenset(stop_token_ids)
        self.jump_forward = jump_forward

    def chunks(self, rows: list[Row]) -> list[list[Row]]:
        """Rows in groups that fit the KV cache: prompts plus every row's answer."""
        chunks: list[list[Row]] = []
        current: list[Row] = []
        need = 0
        for row in rows:
            fresh = not current or row.prompt != current[-1].prompt
            cost = row.max_tokens + 1 + (len(row.prompt) if fresh else 0)
            if current and (len(current) >= MAX_ROWS
                            or need + cost + len(row.prompt) > self.engine.n_ctx):
                chunks.append(current)
                current, need, cost = [], 0, row.max_tokens + 1 + len(row.prompt)
            current.append(row)
            need += cost
        if current:
            chunks.append(current)
        return chunks

    def decode_chunk(self, rows: list[Row], stats: dict[str, int]) -> None:
        """Decode ``rows`` (at most ``MAX_ROWS``) to their ends; adds the chunk's forward
        passes and answer tokens to ``stats``."""
        engine = self.engine
        for slot, row in enumerate(rows, start=1):
            row.seq = slot
            engine.seq_rm(slot, 0)
        try:
            # Prefill: the first prompt through the cache (sequence 0), others once each.
            logits: dict[int, np.ndarray] = {}
            groups: dict[tuple[int, ...], list[Row]] = {}
            for row in rows:
                groups.setdefault(tuple(row.prompt), []).append(row)
            for g, (prompt, members) in enumerate(groups.items()):
                if g == 0:
                    last = self.cache.prefill(list(prompt))
                    source = 0
                else:
                    source = members[0].seq
                    shared = self.cache.shared_head(prompt)
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
        stats["forward_passes"] += max((r.passes for r in rows), default=0) + 1
        stats["answer_tokens"] += sum(len(r.out) for r in rows)

    def _advance(self, row: Row, block: np.ndarray) -> None:
        """Choose at each position of ``block`` (the logits after each pending token): keep
        the draft while the model agrees, then set the row's next pending tokens."""
        draft = row.draft
        token = -1
        for j in range(len(draft) + 1):
            token = choose(row, block[j])
            if j < len(draft) and token == draft[j] and token not in self.stops:
                _consume(row, token)
                continue
            unused = len(draft) - j
            if unused:  # the model parted from the draft: those cells leave the cache
                row.pos -= unused
                self.engine.seq_rm(row.seq, row.pos)
            break
        row.draft = []
        if token in self.stops:
            row.out.append(token)
            row.done = row.stopped = True
            return
        _consume(row, token)
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


def _consume(row: Row, token: int) -> None:
    if row.matcher is not None and not row.matcher.consume_token(token):
        # The mask made any other token impossible; a rejection is a library bug.
        raise BackendError(f"constrained decoder rejected token {token} it had allowed: "
                           f"{row.matcher.get_error()}")
    row.out.append(token)


def choose(row: Row, logits: np.ndarray) -> int:
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


def log_softmax(rows: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    rows = rows.astype(np.float64)
    top = rows.max(axis=1, keepdims=True)
    return rows - top - np.log(np.exp(rows - top).sum(axis=1, keepdims=True))
