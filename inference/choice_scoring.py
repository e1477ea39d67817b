"""Choice log-probabilities for many prompts that share a head, on a transformers model.

A scorer's prompts for one moment of a run differ only in their last line (the candidate):
``rank_messages`` renders ~340 shared tokens and a ~70-token tail, so scoring 60 pool entries
one full prompt at a time is ~25,000 tokens where the head once and the tails are ~4,500. Here
the head's key/value cache is computed once; each batch of tails runs on a copy of it,
right-padded (a causal model's real tokens never attend to the padding after them), and every
row's answer is read at its own last token. The llama.cpp engine does the same with its
prompt cache (``LlamaCppBackend.choice_logprobs``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

#: Below this many shared tokens a plain batched pass is as cheap as caching the head.
MIN_SHARED = 16


def shared_prefix_length(encoded: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own."""
    if not encoded:
        return 0
    limit = min(len(e) for e in encoded) - 1
    first = encoded[0]
    shared = 0
    while shared < limit and all(e[shared] == first[shared] for e in encoded):
        shared += 1
    return max(shared, 0)


def head_cached_logprobs(model: Any, encoded: Sequence[Sequence[int]], ids: Sequence[int],
                         pad_id: int, batch_size: int, shared: int) -> list[list[float]]:
    """Per prompt (token ids), the log-softmax at its last token of the ``ids`` tokens, the
    first ``shared`` tokens computed once."""
    import torch

    device = model.device
    out: list[list[float]] = []
    with torch.inference_mode():
        head = model(input_ids=torch.tensor([list(encoded[0][:shared])], device=device),
                     use_cache=True)
        for start in range(0, len(encoded), batch_size):
            tails = [list(e[shared:]) for e in encoded[start:start + batch_size]]
            width = max(len(t) for t in tails)
            input_ids = torch.full((len(tails), width), pad_id, dtype=torch.long,
                                   device=device)
            mask = torch.zeros((len(tails), shared + width), dtype=torch.long, device=device)
            mask[:, :shared] = 1
            for row, tail in enumerate(tails):
                input_ids[row, :len(tail)] = torch.tensor(tail, device=device)
                mask[row, shared:shared + len(tail)] = 1
            positions = (shared + torch.arange(width, device=device)).expand(len(tails), -1)
            cache = copy.deepcopy(head.cache)
            cache.batch_repeat_interleave(len(tails))
            logits = model(input_ids=input_ids, attention_mask=mask, position_ids=positions,
                           cache=cache, use_cache=True).logits
            last = torch.tensor([len(t) - 1 for t in tails], device=device)
            rows = logits[torch.arange(len(tails), device=device), last].float()
            out += torch.log_softmax(rows, dim=-1)[:, list(ids)].cpu().tolist()
    return out
