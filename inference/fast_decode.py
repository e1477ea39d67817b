"""One request, decoded without ``generate``: jump-forward and a reused prompt cache.

Why: on 2 CPU cores the embedded model spends an answer in per-step overhead (a forward pass of
30 layers for one token costs about what it costs for eight), and a configuration is about half
forced text: keys, quotes, colons, commas. Three levers, each switchable so
``python -m sllmbo.eval.bench_inference`` can measure it against ``generate``:

- **Jump-forward, verified**: after each chosen token, xgrammar names the string the grammar
  forces next (``GrammarMatcher.find_jump_forward_string``). Its tokens are fed as a draft in
  the same forward pass as the chosen token, and kept while the model's own choice at each
  position (drawn from that position's masked logits) agrees; at the first disagreement the
  model's choice wins and the rest of the draft leaves the cache. So one pass advances several
  tokens, and the answer is the one token-by-token decoding gives: the same greedy answers,
  the same sampling distribution.
- **Prompt cache**: the KV cache of the last sequence stays; the next request that shares its
  head (a study's system prompt, card and space) is cropped to the common prefix and only the
  rest is prefilled.
- **Early end**: once the grammar can only stop (after the closing brace), decoding ends
  without another forward pass.
- **Prompt-lookup draft**: where the grammar forces nothing (a number, an enum value), the
  tokens that followed the last three tokens' latest occurrence in the prompt or the answer so
  far are drafted too (a history row's value, a bound of the space), verified the same way.
- **Sparse head**: under a grammar, only the allowed tokens' logits are computed (the rows of
  the output embedding they select), not all 49k: a key or a comma allows a handful. Only for
  architectures whose logits are the plain output projection (``SPARSE_HEAD_TYPES``).

A test checks that greedy answers equal ``generate``'s on real prompts (up to the rounding of
a several-token forward pass against a one-token one). Not thread-safe: callers serialize access
to a backend (``samplers.calls.backend_lock``, the server's lock).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import BackendError

if TYPE_CHECKING:
    import torch
    import xgrammar as xgr


#: Model types whose logits are ``lm_head(hidden)`` with nothing after it (no soft-capping or
#: scaling), so a subset of the rows gives exactly those tokens' logits.
SPARSE_HEAD_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3", "phi3", "olmo2"})
#: Above this many allowed tokens the full head is as cheap as gathering rows.
SPARSE_HEAD_MAX_ALLOWED = 8192
#: Prompt-lookup drafting: match this many trailing tokens, draft at most this many after them.
LOOKUP_NGRAM = 3
LOOKUP_TOKENS = 8
#: With a time limit or a stop check, a longer prompt is prefilled this many tokens a pass
#: and the two are looked at between passes: one pass over a whole long prompt cannot be
#: stopped (on 2 busy shared cores, 2,000 tokens of the embedded model took 30 s in one
#: pass). sllmbo's own prompts (~450 tokens) stay one pass; chunks cost a longer prompt some
#: speed (1,024 tokens on busy cores: +25% in 512-token passes, +20-50% in 256, x2.5-3 in
#: 128). The transformers backend's ``generate`` path prefills in chunks of the same size.
PREFILL_CHUNK = 512


@dataclass
class DecodeResult:
    """Tokens appended after the prompt (forced ones included) and how decoding ended."""

    tokens: list[int]
    stopped: bool  # a stop token was chosen (or was the only one left)
    timed_out: bool  # stopped by max_time_s or should_stop before the answer ended
    forward_passes: int
    prefilled: int  # prompt tokens that were not found in the cache


class NgramLookup:
    """Where each ``LOOKUP_NGRAM``-gram of the prompt and answer last occurred: a draft is what
    followed the latest occurrence of the current tail (prompt-lookup decoding)."""

    def __init__(self, prompt: Sequence[int]) -> None:
        self.tokens: list[int] = []
        self.after: dict[tuple[int, ...], int] = {}
        for token in prompt:
            self.append(token)

    def append(self, token: int) -> None:
        n = LOOKUP_NGRAM
        if len(self.tokens) >= n:  # the gram ending before ``token`` is followed by it
            self.after[tuple(self.tokens[-n:])] = len(self.tokens)
        self.tokens.append(token)

    def propose(self, pending: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` tokens that followed the tail of (tokens + ``pending``) before."""
        tail = (self.tokens + list(pending))[-LOOKUP_NGRAM:]
        start = self.after.get(tuple(tail)) if len(tail) == LOOKUP_NGRAM else None
        return [] if start is None else self.tokens[start:start + k]


@dataclass
class PromptCache:
    """The KV cache of the last sequence fed to the model, and that sequence's token ids."""

    cache: Any = None
    ids: tuple[int, ...] = ()

    def reuse(self, prompt: Sequence[int]) -> tuple[Any, int]:
        """The cache cropped to the longest prefix it shares with ``prompt`` (at most all but
        the last token, which must be fed to get the next token's logits), and that length."""
        if self.cache is None:
            return None, 0
        limit = min(len(self.ids), len(prompt) - 1)
        shared = 0
        while shared < limit and self.ids[shared] == prompt[shared]:
            shared += 1
        if shared == 0:
            self.clear()
            return None, 0
        excess = self.cache.get_seq_length() - shared
        if excess > 0:
            self.cache.crop(-excess)  # transformers >= 5: a negative count of tokens to drop
        return self.cache, shared

    def clear(self) -> None:
        self.cache, self.ids = None, ()


class FastDecoder:
    """Batch-of-one decoding for a causal LM with an optional compiled grammar.

    Args:
        model: a transformers causal LM (PEFT-wrapped or merged) in eval mode.
        tokenizer: its tokenizer (to encode jump-forward strings).
        vocab_size: the grammar's vocabulary size (the logit row may be wider).
        stop_token_ids: ids that end an answer.
        jump_forward, reuse_prompt_cache, lookup_draft, sparse_head: the levers (see the
            module docstring); ``sparse_head`` is ignored for architectures outside
            ``SPARSE_HEAD_TYPES``.
    """

    def __init__(self, model: Any, tokenizer: Any, *, vocab_size: int,
                 stop_token_ids: Sequence[int], jump_forward: bool = True,
                 reuse_prompt_cache: bool = True, lookup_draft: bool = True,
                 sparse_head: bool = True) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = frozenset(int(t) for t in stop_token_ids)
        self.jump_forward = jump_forward
        self.reuse_prompt_cache = reuse_prompt_cache
        self.sparse_head = sparse_head
        self.lookup_draft = lookup_draft
        self.prompt_cache = PromptCache()
        self.last_result: DecodeResult | None = None  # for benchmarks: passes, prefill
        config = getattr(model, "config", None)
        self._can_split_head = (getattr(config, "model_type", None) in SPARSE_HEAD_TYPES
                                and model.get_output_embeddings() is not None)

    @staticmethod
    def supports(model: Any) -> bool:
        """Whether the model's default cache can be cropped (sliding-window or recurrent
        layers cannot be rewound; those models decode through ``generate``)."""
        config = getattr(model, "config", None)
        text = getattr(config, "text_config", None) or config
        if getattr(text, "sliding_window", None):
            return False
        layer_types = getattr(text, "layer_types", None) or []
        if any(t != "full_attention" for t in layer_types):
            return False
        return not getattr(config, "is_encoder_decoder", False)

    def decode(self, prompt: list[int], grammar: xgr.CompiledGrammar | None, *,
               max_tokens: int, temperature: float, top_p: float, seed: int | None,
               max_time_s: float | None,
               should_stop: Callable[[], bool] | None = None,
               prefill_chunk: int = PREFILL_CHUNK) -> DecodeResult:
        """Decode one answer to ``prompt`` (token ids, chat template applied); ``max_time_s``
        and ``should_stop`` (a server's "the client went away") are looked at after every
        forward pass, a long prompt's prefill chunks of ``prefill_chunk`` tokens included, so
        decoding outlives them by at most one pass."""
        import torch
        import xgrammar as xgr

        start = time.perf_counter()
        device = next(self.model.parameters()).device
        matcher = xgr.GrammarMatcher(grammar) if grammar is not None else None
        bitmask = xgr.allocate_token_bitmask(1, self.vocab_size) if matcher else None
        generator = None  # unseeded sampling draws from torch's global generator
        if temperature > 0 and seed is not None:
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)

        cache, shared = (self.prompt_cache.reuse(prompt) if self.reuse_prompt_cache
                         else (None, 0))
        self.prompt_cache.clear()  # set again at the end, once cache and ids agree
        fed: list[int] = list(prompt[:shared])  # the tokens the cache holds
        pending: list[int] = list(prompt[shared:])  # to feed next; ends with the draft
        draft: list[int] = []  # forced tokens proposed after the last chosen one
        out: list[int] = []
        passes, stopped, timed_out = 0, False, False
        split = self.sparse_head and self._can_split_head
        lookup = NgramLookup(prompt) if self.lookup_draft else None

        def past() -> bool:
            return ((max_time_s is not None and time.perf_counter() - start >= max_time_s)
                    or (should_stop is not None and should_stop()))

        stoppable = max_time_s is not None or should_stop is not None
        while stoppable and len(pending) > prefill_chunk:  # all but the last: no logits
            cache = self._prefill(pending[:prefill_chunk], cache, device, torch)
            passes += 1
            fed.extend(pending[:prefill_chunk])
            del pending[:prefill_chunk]
            if past():
                timed_out = True
                break
        while not timed_out:
            rows, cache = self._forward(pending, cache, len(draft) + 1, split, device, torch)
            passes += 1
            fed.extend(pending)
            # Row j holds the next-token logits after the j-th draft token: the model's own
            # choice is drawn at each row; draft tokens are kept while they agree with it.
            for j in range(len(draft) + 1):
                token = self._choose(rows[j:j + 1], split, matcher, bitmask, temperature,
                                     top_p, generator, xgr, torch)
                # A drafted stop token (prompt lookup copies the chat template's) ends the
                # answer below like a chosen one; accepting it here would run the grammar
                # matcher past its end.
                if j < len(draft) and token == draft[j] and token not in self.stop_token_ids:
                    self._accept(matcher, token)
                    out.append(token)
                    if lookup is not None:
                        lookup.append(token)
                    continue
                unused = len(draft) - j
                if unused:  # the model parted from the draft: drop the rest from the cache
                    cache.crop(-unused)
                    del fed[-unused:]
                break
            if token in self.stop_token_ids:
                out.append(token)
                stopped = True
                break
            self._accept(matcher, token)
            out.append(token)
            if lookup is not None:
                lookup.append(token)
            if matcher is not None and self._only_stop_left(matcher, bitmask, xgr, torch):
                out.append(min(self.stop_token_ids))
                stopped = True
                break
            if len(out) >= max_tokens:
                break
            if past():
                timed_out = True
                break
            room = max_tokens - len(out)
            draft = (self._forced_tokens(matcher, room)
                     if matcher is not None and self.jump_forward else [])
            if lookup is not None and len(draft) < room:
                draft += lookup.propose(draft, min(LOOKUP_TOKENS, room - len(draft)))
            pending = [token, *draft]
        if self.reuse_prompt_cache and cache is not None:
            self.prompt_cache.cache, self.prompt_cache.ids = cache, tuple(fed)
        self.last_result = DecodeResult(out[:max_tokens] if not stopped else out, stopped,
                                        timed_out, passes, len(prompt) - shared)
        return self.last_result

    # -- steps ---------------------------------------------------------------------------------

    def _prefill(self, tokens: list[int], cache: Any, device: Any, torch: Any) -> Any:
        """Feed ``tokens`` (nothing is chosen from them: one row of logits); the cache."""
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        return self.model(input_ids=ids, past_key_values=cache, use_cache=True,
                          logits_to_keep=1).past_key_values

    def _forward(self, tokens: list[int], cache: Any, keep: int, split: bool, device: Any,
                 torch: Any) -> tuple[torch.Tensor, Any]:
        """Feed ``tokens``; for the last ``keep`` positions the final hidden states (``split``:
        the head is applied per row, ``_choose``) or the float logits; and the cache."""
        ids = torch.tensor([tokens], dtype=torch.long, device=device)
        if split:
            body = self.model.get_decoder()(input_ids=ids, past_key_values=cache,
                                            use_cache=True)
            return body.last_hidden_state[0, -keep:, :], body.past_key_values
        result = self.model(input_ids=ids, past_key_values=cache, use_cache=True,
                            logits_to_keep=keep)
        return result.logits[0, -keep:, :].float(), result.past_key_values

    def _choose(self, row: torch.Tensor, split: bool, matcher: xgr.GrammarMatcher | None,
                bitmask: torch.Tensor | None, temperature: float, top_p: float,
                generator: Any, xgr: Any, torch: Any) -> int:
        """The next token from one position: grammar mask, then greedy or top-p."""
        from .constrained import _top_p

        ids = None
        if split:
            head = self.model.get_output_embeddings()
            if matcher is not None:
                matcher.fill_next_token_bitmask(bitmask, 0)
                allowed = self._allowed(bitmask, torch)
                if len(allowed) <= SPARSE_HEAD_MAX_ALLOWED:
                    ids = allowed.to(row.device)
            weight = head.weight if ids is None else head.weight.index_select(0, ids)
            bias = getattr(head, "bias", None)
            if bias is not None and ids is not None:
                bias = bias.index_select(0, ids)
            logits = torch.nn.functional.linear(row, weight, bias).float()
            if ids is None and matcher is not None:
                logits = self._apply(logits, bitmask, xgr, torch)
        else:
            logits = row
            if matcher is not None:
                matcher.fill_next_token_bitmask(bitmask, 0)
                logits = self._apply(logits, bitmask, xgr, torch)
        if temperature == 0:
            index = int(logits.argmax(-1)[0])
        else:
            logits = logits / temperature
            if top_p < 1.0:
                logits = _top_p(logits, top_p, torch)
            index = int(torch.multinomial(logits.softmax(-1), 1, generator=generator)[0, 0])
        return index if ids is None else int(ids[index])

    @staticmethod
    def _accept(matcher: xgr.GrammarMatcher | None, token: int) -> None:
        # The mask made any other token impossible; a rejection here is a library bug.
        if matcher is not None and not matcher.accept_token(token):
            raise BackendError(f"constrained decoder rejected token {token} it had allowed")

    def _apply(self, logits: torch.Tensor, bitmask: torch.Tensor, xgr: Any,
               torch: Any) -> torch.Tensor:
        """Forbidden tokens to -inf (the logit row may be wider than the vocabulary)."""
        width = min(logits.shape[-1], self.vocab_size)
        masked = logits[:, :width].cpu().contiguous()
        xgr.apply_token_bitmask_inplace(masked, bitmask)
        if logits.shape[-1] > width:
            pad = masked.new_full((1, logits.shape[-1] - width), -float("inf"))
            masked = torch.cat([masked, pad], dim=-1)
        return masked.to(logits.device)

    def _allowed(self, bitmask: torch.Tensor, torch: Any) -> torch.Tensor:
        """The token ids a filled one-row bitmask allows, ascending."""
        shifts = torch.arange(32, dtype=torch.int32)
        bits = ((bitmask[0].unsqueeze(-1) >> shifts) & 1).flatten()[:self.vocab_size]
        return bits.nonzero().flatten()

    def _forced_tokens(self, matcher: xgr.GrammarMatcher, budget: int) -> list[int]:
        """The grammar's forced continuation, tokenized: a draft the next pass verifies."""
        text = matcher.find_jump_forward_string()
        if not text:
            return []
        return self.tokenizer.encode(text, add_special_tokens=False)[:budget]

    def _only_stop_left(self, matcher: xgr.GrammarMatcher, bitmask: torch.Tensor, xgr: Any,
                        torch: Any) -> bool:
        """The grammar is complete and allows nothing but a stop token."""
        if not matcher.is_completed():
            return False
        matcher.fill_next_token_bitmask(bitmask, 0)
        probe = torch.zeros(1, self.vocab_size)
        xgr.apply_token_bitmask_inplace(probe, bitmask)
        allowed = torch.isfinite(probe[0]).nonzero().flatten().tolist()
        return bool(allowed) and all(t in self.stop_token_ids for t in allowed)

