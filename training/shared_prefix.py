"""Shared-prefix packing: examples with one prompt head train behind a single copy of it.

The matrix's examples come in groups that share almost all of their prompt: the scoring
examples of one variant and family differ only in the candidate's values at the end, and its
single-shot examples share the whole prompt. Trained one by one, each example pays for the
head again (~370 of ~430 tokens for a scoring example), which put one epoch of the full
matrix at ~18 hours on 2 CPU cores. Here a group becomes one sequence::

    [ head | tail 1 | tail 2 | ... ]

Each tail is the rest of one example after the head (its last prompt tokens and its
completion). A 4D attention mask lets a tail's tokens see the head and the earlier tokens of
their own tail, never another tail; each tail's position ids continue from the head's end. So
every completion token is predicted from exactly the context it has in its own sequence (the
same logits up to float rounding, which ``tests/test_shared_prefix.py`` checks), and the head
is computed once per pack. Loss is on the completion tokens only, as TRL's completion-only
loss puts it, and the LM head projects only the positions that carry a label.

Which examples share a head is found from the tokens, not from the data's columns: examples
are sorted by their prompt's tokens, and neighbours join a pack while they share at least
``min_shared`` tokens with it, joining saves tokens (the system prompt alone, shared by every
example, does not make two cards one pack) and the pack fits ``max_length``. The head never
reaches into a completion. TRL's packing cannot express this (its packs separate examples entirely), so this
module builds the rows and the mask and trains with ``transformers.Trainer``; LoRA and QLoRA
come from the same recipe keys as the TRL path. Needs an attention implementation that reads a
4D mask: ``sdpa`` (the CPU default) or ``eager``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sllmbo.core.errors import SllmboError

#: Attention implementations that take an arbitrary 4D boolean mask.
MASKABLE_ATTENTION = ("sdpa", "eager")


@dataclass(frozen=True)
class Tokenized:
    """One example's token ids (prompt then completion), its prompt length, and the weight
    of its completion tokens in the loss (soft targets: ``matrix-pick`` with a temperature)."""

    ids: tuple[int, ...]
    n_prompt: int
    weight: float = 1.0


@dataclass(frozen=True)
class Pack:
    """One training row: ``segments`` is 0 on the head and i on the i-th tail; ``weights``
    is each token's label weight (0 where there is no label)."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    segments: list[int]
    weights: list[float]

    def as_row(self) -> dict[str, list[Any]]:
        return {"input_ids": self.input_ids, "labels": self.labels,
                "position_ids": self.position_ids, "segments": self.segments,
                "weights": self.weights}


def tokenize(tokenizer: Any, prompt: list[dict[str, str]],
             completion: list[dict[str, str]], weight: float = 1.0) -> Tokenized:
    """The chat template's tokens of prompt + completion, as TRL tokenizes a conversational
    prompt/completion row (and as inference renders the prompt, generation prompt included)."""
    prompt_ids = _ids(tokenizer.apply_chat_template(prompt, tokenize=True,
                                                    add_generation_prompt=True))
    full = _ids(tokenizer.apply_chat_template(prompt + completion, tokenize=True))
    if full[:len(prompt_ids)] != prompt_ids or len(full) == len(prompt_ids):
        raise SllmboError("the chat template does not render a prompt as the start of its "
                          "conversation, so completion tokens cannot be told apart",
                          hint="use a base model whose template puts the assistant turn after "
                          "the generation prompt, or train without shared_prefix")
    return Tokenized(tuple(full), len(prompt_ids), float(weight))


def _ids(rendered: Any) -> list[int]:
    if isinstance(rendered, dict) or hasattr(rendered, "keys"):  # a BatchEncoding
        rendered = rendered["input_ids"]
    return [int(i) for i in rendered]


def _common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def pack_shared_prefix(examples: Sequence[Tokenized], max_length: int,
                       min_shared: int = 32) -> list[Pack]:
    """Packs of examples that share a head of at least ``min_shared`` tokens; an example
    that shares less with its neighbours, or is too long to share, is a pack of its own
    (cut to ``max_length`` from the end, as the TRL path cuts it)."""
    order = sorted(range(len(examples)), key=lambda i: examples[i].ids[:examples[i].n_prompt])
    packs: list[Pack] = []
    group: list[Tokenized] = []
    head = 0
    for i in order:
        example = examples[i]
        if group:
            # The head stops before a prompt's last token: a tail must hold the position that
            # predicts its first completion token, or examples with one whole prompt (a pick's
            # names) would predict it from the previous tail's end.
            shared = min(head, _common_prefix(group[0].ids, example.ids), example.n_prompt - 1)
            length = shared + sum(len(e.ids) - shared for e in group) + len(example.ids) - shared
            # Join only where it saves tokens: a shorter head lengthens every tail already in.
            saves = shared > (head - shared) * len(group)
            if shared >= min_shared and saves and length <= max_length:
                group.append(example)
                head = shared
                continue
            packs.append(_build(group, head, max_length))
        group, head = [example], example.n_prompt - 1
    if group:
        packs.append(_build(group, head, max_length))
    return packs


def _build(group: list[Tokenized], head: int, max_length: int) -> Pack:
    if len(group) == 1:  # no sharing: the whole example, the head being its prompt
        example = group[0]
        ids = list(example.ids[:max_length])
        n_prompt = min(example.n_prompt, len(ids))
        n_answer = len(ids) - n_prompt
        return Pack(ids, [-100] * n_prompt + ids[n_prompt:], list(range(len(ids))),
                    [0] * n_prompt + [1] * n_answer,
                    [0.0] * n_prompt + [example.weight] * n_answer)
    ids = list(group[0].ids[:head])
    labels = [-100] * head
    positions = list(range(head))
    segments = [0] * head
    weights = [0.0] * head
    for k, example in enumerate(group, start=1):
        tail = example.ids[head:]
        answer = example.ids[example.n_prompt:]
        ids.extend(tail)
        labels.extend([-100] * (example.n_prompt - head) + list(answer))
        positions.extend(range(head, head + len(tail)))
        segments.extend([k] * len(tail))
        weights.extend([0.0] * (example.n_prompt - head) + [example.weight] * len(answer))
    return Pack(ids, labels, positions, segments, weights)


def attention_mask(segments: Any) -> Any:
    """(batch, 1, L, L) boolean mask from (batch, L) segment ids (-1: padding): causal, and a
    tail token sees the head (segment 0) and its own tail. A padding row sees itself only, so
    no softmax row is empty."""
    import torch

    length = segments.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    query, key = segments[:, :, None], segments[:, None, :]
    visible = ((key == 0) | (key == query)) & (key >= 0) & (query >= 0) & causal
    eye = torch.eye(length, dtype=torch.bool, device=segments.device)
    visible |= (query < 0) & eye
    return visible[:, None, :, :]


class SharedPrefixCollator:
    """Pads packs to the batch's longest (segment -1, label -100) and adds the 4D mask."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        longest = max(len(f["input_ids"]) for f in features)

        def padded(key: str, fill: Any, dtype: Any = torch.long) -> Any:
            return torch.tensor([list(f[key]) + [fill] * (longest - len(f[key]))
                                 for f in features], dtype=dtype)

        segments = padded("segments", -1)
        return {"input_ids": padded("input_ids", self.pad_token_id),
                "labels": padded("labels", -100),
                "position_ids": padded("position_ids", 0),
                "attention_mask": attention_mask(segments),
                "weights": padded("weights", 0.0, torch.float32)}


def label_positions(labels: Any) -> Any:
    """(batch, L) boolean: the positions whose next token is a label (what the LM head must
    project)."""
    import torch

    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    return keep


def packed_loss(model: Any, inputs: dict[str, Any], num_items: Any = None) -> tuple[Any, Any]:
    """Summed next-token cross-entropy over the label tokens, each times its weight (1 but
    for soft targets), divided by ``num_items`` (the Trainer's label count across gradient
    accumulation) or by this batch's count."""
    import torch

    labels = inputs["labels"]
    keep = label_positions(labels)
    model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "weights")}
    mask = model_inputs["attention_mask"]
    if mask.dtype == torch.bool and _attention_of(model) == "eager":  # eager adds the mask
        model_inputs["attention_mask"] = torch.zeros(mask.shape).masked_fill(
            ~mask, torch.finfo(torch.float32).min)
    outputs = model(**model_inputs, logits_to_keep=keep)
    logits = outputs.logits.reshape(-1, outputs.logits.shape[-1]).float()
    targets = labels[:, 1:][keep[:, :-1]]
    losses = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    if "weights" in inputs:
        losses = losses * inputs["weights"][:, 1:][keep[:, :-1]]
    total = losses.sum()
    count = num_items if num_items is not None else targets.numel()
    return total / count, outputs


def packed_dataset(tokenizer: Any, rows: Any, max_length: int, min_shared: int) -> Any:
    """A ``Dataset`` of packs from prompt/completion rows."""
    from datasets import Dataset

    examples = [tokenize(tokenizer, r["prompt"], r["completion"], r.get("weight", 1.0))
                for r in rows]
    return Dataset.from_list([p.as_row() for p in pack_shared_prefix(examples, max_length,
                                                                     min_shared)])


def _attention_of(model: Any) -> str | None:
    config = getattr(getattr(model, "module", model), "config", None)
    return getattr(config, "_attn_implementation", None)


def subsample_packs(packs: Any, max_examples: int | None, seed: int) -> Any:
    """A seeded random subset of whole packs holding at most ``max_examples`` examples (at
    least one pack): a subsample of rows would break the groups that make packs short."""
    if not max_examples:
        return packs
    import random

    order = list(range(len(packs)))
    random.Random(seed).shuffle(order)
    chosen, examples = [], 0
    for i in order:
        n = len(set(packs[i]["segments"]) - {0}) or 1
        if chosen and examples + n > max_examples:
            continue
        chosen.append(i)
        examples += n
    return packs.select(sorted(chosen))


def check_attention(model: Any) -> None:
    implementation = _attention_of(model)
    if implementation not in MASKABLE_ATTENTION:
        raise SllmboError(f"shared_prefix needs an attention implementation that reads a 4D "
                          f"mask ({', '.join(MASKABLE_ATTENTION)}), not {implementation}",
                          hint="load the base with attn_implementation='sdpa', or train "
                          "without shared_prefix")
