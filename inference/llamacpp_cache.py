"""The llama.cpp engine's prompt cache: sequence 0 keeps the last prompt, in memory and on disk.

Why: a study's requests share a long head (system prompt, task card, search space), and so do
the candidates of one scoring call; the next request that shares it prefills only the rest.
Prompts of ``KV_MIN_TOKENS`` or more also keep their KV state in a file, so a cold ``sllmbo
recommend`` with the same task and space skips its prefill.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .llamacpp_engine import LlamaEngine

#: Prompts at least this long keep their KV state in a file for the next process; the newest
#: ``llamacpp_engine.KV_FILES`` are kept.
KV_MIN_TOKENS = 64


class PromptCache:
    """What sequence 0 of ``engine`` holds, and how to make it hold a prompt.

    Args:
        engine: the llama.cpp engine whose sequence 0 this is.
        kv_dir: folder of KV state files kept between processes; None: in memory only.
        model_key: names the weights in a KV file's key (files of other weights never load).
    """

    def __init__(self, engine: LlamaEngine, kv_dir: Path | None, model_key: str) -> None:
        self.engine = engine
        self.kv_dir = kv_dir
        self.model_key = model_key
        self.ids: list[int] = []  # the prompt sequence 0 holds

    def clear(self) -> None:
        """Empty sequence 0."""
        self.engine.seq_rm(0, 0)
        self.ids = []

    def shared_head(self, prompt: Sequence[int]) -> int:
        """Leading tokens of ``prompt`` sequence 0 already holds (never its last token)."""
        shared = 0
        limit = min(len(self.ids), len(prompt) - 1)
        while shared < limit and self.ids[shared] == prompt[shared]:
            shared += 1
        return shared

    def prefill(self, prompt: list[int]) -> int:
        """Make sequence 0 hold ``prompt``, reusing the cached head (in memory, else a KV file
        an earlier process saved for this exact prompt); the output index of the last prompt
        token's logits."""
        engine = self.engine
        shared = self.shared_head(prompt)
        kv_file = self.kv_file(prompt)
        from_file = False
        if shared == 0 and kv_file is not None and kv_file.is_file():
            engine.seq_rm(0, 0)
            loaded = engine.load_seq(kv_file, 0, len(prompt))
            from_file = loaded == prompt
            shared = len(prompt) - 1 if from_file else 0
        engine.seq_rm(0, shared)
        self.ids = []
        # The last token alone, always: its logits then come from the same one-row kernels
        # whether the head was cached or not, so a seeded (or greedy) answer does not change
        # with what the cache held (a batched row rounds differently).
        last = len(prompt) - 1
        if shared < last:
            engine.decode([(t, shared + j, 0, False) for j, t in enumerate(prompt[shared:last])])
        outputs = engine.decode([(prompt[last], last, 0, True)])
        self.ids = list(prompt)
        if kv_file is not None and not from_file and shared < len(prompt) // 2:
            engine.save_seq(kv_file, 0, prompt)
        return outputs[-1]

    def kv_file(self, prompt: Sequence[int]) -> Path | None:
        """Where the KV state of ``prompt`` is kept between processes (``KV_FILES`` newest
        prompts of ``KV_MIN_TOKENS`` or more, ~23 KB a token); None: not kept."""
        if self.kv_dir is None or len(prompt) < KV_MIN_TOKENS:
            return None
        digest = hashlib.sha256(self.model_key.encode())
        digest.update(np.asarray(prompt, dtype=np.int32).tobytes())
        return self.kv_dir / f"{digest.hexdigest()[:24]}.kv"
