"""The llama.cpp model, context and batch through llama-cpp-python's ctypes API.

Why its own module: the backend (``llamacpp_backend.py``) thinks in prompts, rows and
grammars; this wrapper is the few C calls it needs (decode a batch of (token, position,
sequence) entries, read logits, copy and drop sequences in the unified KV cache, save and load a
sequence's KV state) and owns the C objects' lifetimes. Nothing here imports torch.
"""

from __future__ import annotations

import ctypes
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from sllmbo.core.errors import BackendError

from .cpu_threads import omp_wait_policy

#: Tokens per ``llama_decode`` call (prefill chunks, scoring chunks).
N_BATCH = 512
#: KV state files kept in one folder (the newest).
KV_FILES = 32


class LlamaEngine:
    """A llama.cpp model + context + batch, and the few calls used.

    Args:
        path: the GGUF file.
        n_threads: CPU threads of the first decode (``set_threads`` changes it later).
        n_ctx: KV cells.
        n_seq_max: parallel sequences in the KV cache.
    """

    def __init__(self, path: Path, *, n_threads: int, n_ctx: int, n_seq_max: int) -> None:
        # Must be set before libgomp loads; a user's own setting wins.
        for key, value in omp_wait_policy().items():
            os.environ.setdefault(key, value)
        import llama_cpp.llama_cpp as C

        self.C = C
        quiet_logs(C)
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
        self.n_threads = n_threads
        self.n_ctx = C.llama_n_ctx(self.ctx)
        self.n_ctx_train = C.llama_model_n_ctx_train(self.model)
        self.n_vocab = C.llama_vocab_n_tokens(C.llama_model_get_vocab(self.model))
        self.memory = C.llama_get_memory(self.ctx)
        self.batch = C.llama_batch_init(N_BATCH, 0, n_seq_max)

    def set_threads(self, n_threads: int) -> None:
        """Decode with ``n_threads`` threads from the next call on (cheap: a field set)."""
        if n_threads != self.n_threads:
            self.C.llama_set_n_threads(self.ctx, n_threads, n_threads)
            self.n_threads = n_threads

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

    def step_seconds(self, token: int, n_tokens: int, max_rows: int, repeats: int) -> float:
        """Median seconds of one ``decode`` of ``n_tokens`` tokens, one per parallel sequence
        (up to ``max_rows``, then several per sequence), after a 64-token prompt of ``token``
        in sequence 0, logits at every token; sequence 0 is left empty."""
        self.seq_rm(0, 0)
        prompt = [token] * 64
        self.decode([(t, j, 0, False) for j, t in enumerate(prompt)])
        seqs = min(n_tokens, max_rows)
        entries = [(token, len(prompt) + i // seqs, 1 + i % seqs, True)
                   for i in range(n_tokens)]
        walls = []
        try:
            for _ in range(repeats + 1):  # the first one warms up
                for slot in range(1, seqs + 1):
                    self.seq_cp(0, slot, len(prompt))
                start = time.perf_counter()
                self.decode(entries)
                walls.append(time.perf_counter() - start)
                for slot in range(1, seqs + 1):
                    self.seq_rm(slot, 0)
        finally:
            self.seq_rm(0, 0)
        walls = sorted(walls[1:])
        return walls[len(walls) // 2]

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


_LOG_CALLBACK: Any = None


def quiet_logs(C: Any) -> None:
    """llama.cpp prints model details to stderr on every load; keep errors only."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is None:
        def forward(level: int, text: bytes, _data: Any) -> None:
            if level == 3 and text:  # GGML_LOG_LEVEL_ERROR
                sys.stderr.write(text.decode("utf-8", "replace"))

        _LOG_CALLBACK = C.llama_log_callback(forward)
        C.llama_log_set(_LOG_CALLBACK, ctypes.c_void_p(0))
