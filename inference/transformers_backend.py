"""In-process backend: any local Hugging Face causal LM (+ optional PEFT adapter).

The CPU path of the project and the reference for the others: the model's own chat template,
bf16 on CUDA and on CPUs with native bf16 (AVX512-BF16/AMX: decoding is memory-bound there and
bf16 halves the bytes read per token, measured 2x faster on the embedded model), fp32 on other
CPUs (emulated bf16 matmuls are slower than fp32), left-padded batches with
one ``generate`` per batch, and per-request JSON Schemas enforced by xgrammar
(``constrained.py``). A request without a schema, or a backend made with
``constrained=False``, decodes freely.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sllmbo.core.errors import BackendError, ModelNotFoundError

from . import merged_cache
from .adapters import check_adapter_fits
from .base import Backend, ChatRequest, Completion, FinishReason
from .constrained import GrammarCache, SchemaLogitsProcessor, schema_problem
from .cpu_threads import ThreadChooser, omp_wait_policy
from .fast_decode import PREFILL_CHUNK, FastDecoder

KERNEL_TRUST_NOTE = "Skipping publisher trust check"


class _DropKernelTrustNote(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(KERNEL_TRUST_NOTE)


def quiet_kernel_trust_note() -> None:
    """Drop one line of the ``kernels`` package, once per process: on a CPU with AVX512-BF16,
    bitsandbytes (imported by peft) asks ``kernels`` for an optional hub kernel, and offline
    ``kernels`` logs that it skips the publisher trust check. Nothing is fetched and
    bitsandbytes' own CPU code runs, so the line says nothing to a user; every other message
    of that logger still shows."""
    logger = logging.getLogger("kernels._internals.hf_hub")
    if not any(isinstance(f, _DropKernelTrustNote) for f in logger.filters):
        logger.addFilter(_DropKernelTrustNote())


class TransformersBackend(Backend):
    """Batched chat completions with transformers ``generate``.

    Args:
        model_path: a local folder with ``config.json``, weights and a tokenizer that has a
            chat template.
        adapter_path: optional PEFT adapter folder trained on this base.
        device: "auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N".
        load_in_4bit: NF4 weights through bitsandbytes; CUDA only.
        constrained: enforce each request's JSON Schema while decoding (default True).
        max_batch_size: requests per ``generate`` call; larger lists are split.
        dtype: "auto" (see the module docstring), "float32", "bfloat16" or "float16".
        fast_decode: answer one-request calls with ``FastDecoder`` (jump-forward, reused
            prompt cache; ``fast_decode.py``) instead of ``generate``; batches always use
            ``generate``.
        merge_adapter: fold the LoRA weights into the base weights at load (one matmul per
            layer instead of three; not with ``load_in_4bit``).
    """

    #: Prompt tokens per prefill pass when a request can be stopped (a time limit, a
    #: cancel check): its deadline is looked at between passes (``fast_decode``).
    prefill_chunk: int = PREFILL_CHUNK

    def __init__(self, model_path: str | Path, *, adapter_path: str | Path | None = None,
                 device: str = "auto", load_in_4bit: bool = False, constrained: bool = True,
                 max_batch_size: int = 16, dtype: str = "auto", fast_decode: bool = True,
                 merge_adapter: bool = True) -> None:
        # Must be set before torch loads its OpenMP runtime; a user's own setting wins.
        for key, value in omp_wait_policy().items():
            os.environ.setdefault(key, value)
        import torch

        self.model_path = Path(model_path)
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self.fine_tuned = self.adapter_path is not None
        self.constrained = constrained
        self.merge_adapter = merge_adapter and not load_in_4bit
        self.max_batch_size = max(1, max_batch_size)
        self.device = _resolve_device(device, torch)
        self.dtype = resolve_dtype(dtype, self.device, torch)
        #: On a CPU, torch's threads before each call: the cores other processes leave free.
        self.threads = ThreadChooser() if self.device.type == "cpu" else None
        if load_in_4bit and self.device.type != "cuda":
            raise BackendError("load_in_4bit needs a CUDA GPU (bitsandbytes NF4), "
                               f"but the device is {self.device}",
                               hint="drop --load-in-4bit on CPU; the model runs in fp32 there")
        self._config = _load_config(self.model_path)
        self.tokenizer = _load_tokenizer(self.model_path)
        self.model = self._load_model(load_in_4bit, torch)
        self.context_length = int(getattr(self._text_config(), "max_position_embeddings", 2048))
        self.name = f"transformers:{self.model_path.name}" + (
            f"+{self.adapter_path.name}" if self.adapter_path else "")
        self.stop_token_ids = _stop_token_ids(self.model, self.tokenizer)
        vocab = int(getattr(self._text_config(), "vocab_size", len(self.tokenizer)))
        self._grammars = GrammarCache(self.tokenizer, vocab, self.stop_token_ids)
        self.fast_decoder = (FastDecoder(self.model, self.tokenizer, vocab_size=vocab,
                                         stop_token_ids=self.stop_token_ids)
                             if fast_decode and FastDecoder.supports(self.model) else None)

    @property
    def grammar_cache(self) -> GrammarCache:
        """The compiled JSON Schemas; a server compiles into it off the model
        (``sllmbo.inference.server.compiler``)."""
        return self._grammars

    # -- loading -----------------------------------------------------------------------------

    def _text_config(self) -> Any:
        return getattr(self._config, "text_config", None) or self._config

    def _load_model(self, load_in_4bit: bool, torch: Any) -> Any:
        from transformers import AutoModelForCausalLM

        kwargs: dict[str, Any] = {"dtype": self.dtype}
        if load_in_4bit:
            kwargs["quantization_config"] = _nf4_config(torch)
            kwargs["device_map"] = {"": self.device.index or 0}
        if not sys.stderr.isatty():
            # A weight-loading bar is useful on a terminal, noise in logs and pipes.
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
        merged = self._merged_folder() if not load_in_4bit else None
        # Saved by an earlier load: base + adapter already folded, no peft needed.
        cached = merged is not None and merged_cache.is_complete(merged)
        source = merged if cached else self.model_path
        try:
            model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
        except ValueError as err:
            raise BackendError(f"{source} is not a causal language model: "
                               f"{str(err).splitlines()[0]}",
                               hint="pass a decoder-only model folder (Llama, Mistral, ...)"
                               ) from None
        except OSError as err:
            raise ModelNotFoundError(f"cannot load weights from {source}: "
                                     f"{str(err).splitlines()[0]}") from None
        if not load_in_4bit:
            model.to(self.device)
        if self.adapter_path is not None and not cached:
            model = self._attach_adapter(model)
            if merged is not None:
                merged_cache.save(model, merged)
        model.eval()
        return model

    def _merged_folder(self) -> Path | None:
        """Where the merged weights of this base + adapter + dtype live (``merged_cache``);
        None when nothing is merged or the cache is off (``SLLMBO_MERGED_CACHE=0``)."""
        if self.adapter_path is None or not self.merge_adapter:
            return None
        if os.environ.get("SLLMBO_MERGED_CACHE", "1") == "0":
            return None
        try:
            return merged_cache.cache_dir(self.model_path, self.adapter_path,
                                          str(self.dtype))
        except OSError:
            return None

    def _attach_adapter(self, model: Any) -> Any:
        quiet_kernel_trust_note()  # before peft imports bitsandbytes
        from peft import PeftModel

        assert self.adapter_path is not None
        check_adapter_fits(self.adapter_path, self.model_path, self._text_config().to_dict())
        try:
            peft_model = PeftModel.from_pretrained(model, str(self.adapter_path),
                                                   is_trainable=False)
            return peft_model.merge_and_unload() if self.merge_adapter else peft_model
        except (RuntimeError, ValueError, KeyError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise BackendError(f"adapter {self.adapter_path} does not fit base model "
                               f"{self.model_path}: {first[:300]}",
                               hint="use the base model the adapter was trained on") from None

    # -- the interface ------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def count_prompt_tokens(self, messages: Sequence[dict[str, str]]) -> int:
        return self.count_tokens(self._render(list(messages)))

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        """Answer in order; requests with equal sampling settings share ``generate`` calls.

        A request's ``max_time_s`` counts from this call, not from its own ``generate``: a
        call that takes several (more requests than ``max_batch_size``, or several sampling
        settings) still ends each request at its time, and one whose time has passed before
        its turn is answered as stopped without running."""
        self._use_free_cores()
        called = time.monotonic()
        results: list[Completion | None] = [None] * len(requests)
        groups: dict[tuple[int, float, float, float | None], list[int]] = {}
        for i, req in enumerate(requests):
            s = req.sampling
            groups.setdefault((s.max_tokens, s.temperature, s.top_p, s.max_time_s),
                              []).append(i)
        for (*_, max_time_s), indices in groups.items():
            deadline = None if max_time_s is None else called + max_time_s
            for start in range(0, len(indices), self.max_batch_size):
                chunk = indices[start:start + self.max_batch_size]
                batch = [requests[i] for i in chunk]
                if deadline is not None and time.monotonic() >= deadline:
                    answers = [self._expired(r, time.monotonic() - called) for r in batch]
                else:
                    answers = self._generate(batch, deadline)
                for i, completion in zip(chunk, answers, strict=True):
                    results[i] = completion
        return [r for r in results if r is not None]

    def choice_logprobs(self, prompts: Sequence[Sequence[dict[str, str]]],
                        choices: Sequence[str]) -> list[list[float]]:
        """``Backend.choice_logprobs``: the prompts' shared head (a scorer's card, history and
        question) computed once and the tails batched on it (``choice_scoring``); prompts that
        share little run as one left-padded batch. The log-softmax of each prompt's last
        position at each choice's token."""
        import torch

        from .choice_scoring import MIN_SHARED, head_cached_logprobs, shared_prefix_length

        if self.model is None:
            raise BackendError("this backend was closed", hint="create a new backend")
        if not prompts:
            return []
        self._use_free_cores()
        ids = self._choice_ids(
            choices, lambda c: self.tokenizer.encode(c, add_special_tokens=False))
        texts = [self._render(list(m)) for m in prompts]
        encoded = [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]
        shared = shared_prefix_length(encoded)
        if len(prompts) > 1 and shared >= MIN_SHARED:
            pad = self.tokenizer.pad_token_id
            pad = self.tokenizer.eos_token_id if pad is None else pad
            return head_cached_logprobs(self.model, encoded, ids, pad, self.max_batch_size,
                                        shared)
        out: list[list[float]] = []
        side = self.tokenizer.padding_side
        self.tokenizer.padding_side = "left"  # the last position is every row's next token
        try:
            for start in range(0, len(texts), self.max_batch_size):
                enc = self.tokenizer(texts[start:start + self.max_batch_size],
                                     return_tensors="pt", padding=True,
                                     add_special_tokens=False).to(self.device)
                # Positions count real tokens only: a left-padded row starts at 0 as alone.
                positions = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
                with torch.inference_mode():
                    logits = self.model(**enc, position_ids=positions).logits[:, -1, :].float()
                out += torch.log_softmax(logits, dim=-1)[:, ids].cpu().tolist()
        finally:
            self.tokenizer.padding_side = side
        return out

    def _use_free_cores(self) -> None:
        """On a CPU, run torch on one thread per core other processes leave free: a thread on
        a taken core stalls every kernel's barrier (``cpu_threads``)."""
        if self.threads is None:
            return
        import torch

        wanted = self.threads.choose()
        if torch.get_num_threads() != wanted:
            torch.set_num_threads(wanted)

    def close(self) -> None:
        self.model = None
        self.fast_decoder = None
        if self.device.type == "cuda":
            import torch

            torch.cuda.empty_cache()

    # -- one batch ---------------------------------------------------------------------------

    def _generate(self, batch: list[ChatRequest], deadline: float | None) -> list[Completion]:
        """One ``generate`` call (or the fast path for one request); ``deadline``
        (``time.monotonic()``) ends it, checked after every decoding step."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        if self.model is None:
            raise BackendError("this backend was closed", hint="create a new backend")
        sampling = batch[0].sampling
        if len(batch) == 1 and self.fast_decoder is not None:
            return [self._generate_fast(batch[0], deadline)]
        schemas = [r.json_schema if self.constrained else None for r in batch]
        grammars = [self._grammars.get(s) if s is not None else None for s in schemas]
        prompts = [self._render(r.messages) for r in batch]
        enc = self.tokenizer(prompts, return_tensors="pt", padding=True,
                             add_special_tokens=False).to(self.device)
        seeds = [r.sampling.seed for r in batch if r.sampling.seed is not None]
        if seeds:
            torch.manual_seed(seeds[0])  # one RNG per generate call: the first seed drives it
        # Greedy passes no sampling flags; sampling disables transformers' own warpers
        # (global default top_k=50) because our processor applies temperature and top-p after
        # the grammar mask.
        flags: dict[str, Any] = ({"do_sample": False} if sampling.temperature == 0 else
                                 {"do_sample": True, "temperature": 1.0, "top_p": 1.0, "top_k": 0})
        processor = SchemaLogitsProcessor(grammars, vocab_size=self._grammars.vocab_size,
                                          temperature=sampling.temperature,
                                          top_p=sampling.top_p)
        cancel = _BatchCancelled([r.cancelled for r in batch], torch)
        # The whole batch stops at once, after the step that passes the deadline (the batch
        # shares it: ``complete`` groups by max_time_s); a row stopped alone would be fed
        # padding its grammar does not allow.
        late = _PastDeadline(deadline, torch)
        criteria = [c for c in (cancel, late) if c.active]
        prompt_len = enc["input_ids"].shape[1]
        prompt_tokens = enc["attention_mask"].sum(dim=1).tolist()
        # A long prompt is prefilled in chunks (transformers' own chunked prefill), and
        # before each chunk's forward pass the same two criteria are asked: stopping
        # criteria are only asked after a token.
        chunked = prompt_len > self.prefill_chunk and bool(criteria)
        hook = (self.model.get_decoder().register_forward_pre_hook(_StopBetweenPasses(criteria))
                if chunked else None)
        start = time.perf_counter()
        try:
            with torch.inference_mode():
                out = self.model.generate(
                    **enc, max_new_tokens=sampling.max_tokens, **flags,
                    logits_processor=LogitsProcessorList([processor]),
                    stopping_criteria=StoppingCriteriaList(criteria),
                    **({"prefill_chunk_size": self.prefill_chunk} if chunked else {}),
                    pad_token_id=self.tokenizer.pad_token_id, eos_token_id=self.stop_token_ids)
        except _Stopped:
            latency = time.perf_counter() - start
            return [Completion("", "error", int(n), 0, latency,
                               error=f"generation stopped after {latency:.1f} s, while reading "
                               "the prompt (max_time_s, or the request was cancelled)")
                    for n in prompt_tokens]
        finally:
            if hook is not None:
                hook.remove()
        latency = time.perf_counter() - start
        timed_out = late.fired or cancel.fired
        return [self._finish(out[row, prompt_len:].tolist(), int(prompt_tokens[row]), latency,
                             schemas[row], sampling.max_tokens, timed_out)
                for row in range(len(batch))]

    def _generate_fast(self, request: ChatRequest, deadline: float | None) -> Completion:
        import torch

        assert self.fast_decoder is not None
        schema = request.json_schema if self.constrained else None
        grammar = self._grammars.get(schema) if schema is not None else None
        prompt = self.tokenizer.encode(self._render(request.messages), add_special_tokens=False)
        s = request.sampling
        start = time.perf_counter()
        left = None if deadline is None else max(1e-6, deadline - time.monotonic())
        with torch.inference_mode():
            result = self.fast_decoder.decode(
                prompt, grammar, max_tokens=s.max_tokens, temperature=s.temperature,
                top_p=s.top_p, seed=s.seed, max_time_s=left, should_stop=request.cancelled,
                prefill_chunk=self.prefill_chunk)
        return self._finish(result.tokens, len(prompt), time.perf_counter() - start, schema,
                            s.max_tokens, result.timed_out)

    def _render(self, messages: list[dict[str, str]]) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False,
                                                      add_generation_prompt=True)
        except (ValueError, TypeError) as err:  # no template, or messages it rejects
            raise BackendError(f"cannot apply the chat template of {self.model_path}: {err}",
                               hint="use an instruct model whose tokenizer has a chat template"
                               ) from None

    @staticmethod
    def _expired(request: ChatRequest, waited: float) -> Completion:
        """The answer to a request whose ``max_time_s`` passed before its turn came."""
        return Completion("", "error", 0, 0, waited,
                          error=f"generation stopped after {waited:.1f} s, before this "
                          f"request's turn: its max_time_s ({request.sampling.max_time_s:g} s) "
                          "had passed")

    def _finish(self, tokens: list[int], prompt_tokens: int, latency: float,
                schema: dict[str, Any] | None, max_tokens: int,
                timed_out: bool = False) -> Completion:
        stop = next((k for k, t in enumerate(tokens) if t in self.stop_token_ids), None)
        body = tokens if stop is None else tokens[:stop]
        text = self.tokenizer.decode(body, skip_special_tokens=True)
        if timed_out and stop is None:
            return Completion(text, "error", prompt_tokens, len(body), latency,
                              error=f"generation stopped after {latency:.1f} s "
                              "(max_time_s, or the request was cancelled)")
        reason: FinishReason = "stop" if stop is not None else "length"
        error = None
        if reason == "length" and len(body) < max_tokens:
            reason = "stop"  # generate ended for another reason (all rows done): not a cut
        if reason == "stop" and schema is not None:
            problem = schema_problem(text, schema)
            if problem is not None:  # the grammar should make this impossible: say so loudly
                reason, error = "error", f"constrained output {problem}: {text[:200]!r}"
        return Completion(text=text, finish_reason=reason, prompt_tokens=prompt_tokens,
                          completion_tokens=len(body) + (stop is not None),
                          latency_s=latency, error=error)


class _BatchCancelled:
    """A ``generate`` stopping criterion: stop once every request of the batch is cancelled
    (``ChatRequest.cancelled``), so a gone client does not keep the model busy."""

    def __init__(self, checks: list[Any], torch: Any) -> None:
        self._checks = [c for c in checks if c is not None]
        self.active = len(self._checks) == len(checks) and bool(checks)
        self.fired = False
        self._torch = torch

    def check(self) -> bool:
        self.fired = self.fired or all(check() for check in self._checks)
        return self.fired

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return self._torch.full((input_ids.shape[0],), self.check(), dtype=self._torch.bool,
                                device=input_ids.device)


class _PastDeadline:
    """A ``generate`` stopping criterion: stop the batch after the step that passes
    ``deadline`` (``time.monotonic()``; None: never), so generation outlives it by at most
    one decoding step. Unlike ``generate(max_time=...)``, whose clock starts inside that
    ``generate``, the deadline is the caller's, however many calls came before."""

    def __init__(self, deadline: float | None, torch: Any) -> None:
        self.deadline = deadline
        self.active = deadline is not None
        self.fired = False
        self._torch = torch

    def check(self) -> bool:
        self.fired = self.fired or (self.deadline is not None
                                    and time.monotonic() >= self.deadline)
        return self.fired

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        return self._torch.full((input_ids.shape[0],), self.check(), dtype=self._torch.bool,
                                device=input_ids.device)


class _Stopped(Exception):
    """Raised out of ``generate`` between two prefill chunks (``_StopBetweenPasses``)."""


class _StopBetweenPasses:
    """A forward pre-hook on the decoder: before each forward pass of a chunked prefill,
    end ``generate`` (``_Stopped``) when one of ``criteria`` says stop. Decoding steps have
    already been stopped by the same criteria, which ``generate`` asks after each token."""

    def __init__(self, criteria: list[Any]) -> None:
        self.criteria = criteria

    def __call__(self, module: Any, args: Any) -> None:
        if any(c.check() for c in self.criteria):
            raise _Stopped()


def _resolve_device(device: str, torch: Any) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise BackendError(f"unknown device {device!r}",
                           hint="use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device {device!r} asked for, but torch sees no CUDA GPU",
                           hint="use --device cpu (or auto)")
    return resolved


def resolve_dtype(dtype: str, device: Any, torch: Any) -> Any:
    """The compute dtype: bf16 where the hardware has it natively, else fp32."""
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16
        native_bf16 = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        return torch.bfloat16 if native_bf16 else torch.float32
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise BackendError(f"unknown dtype {dtype!r}", hint=f"use auto or one of {list(choices)}")
    return choices[dtype]


def _load_config(path: Path) -> Any:
    from transformers import AutoConfig

    if not (path / "config.json").is_file():
        raise ModelNotFoundError(f"no model at {path} (no config.json)",
                                 hint="pass a local Hugging Face model folder, or run "
                                 "`sllmbo models pull` for the embedded default")
    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError, json.JSONDecodeError) as err:
        raise BackendError(f"cannot read the config of {path}: {str(err).splitlines()[0]}",
                           hint="check config.json (model_type must be one transformers knows)"
                           ) from None


def _load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError, TypeError) as err:
        raise BackendError(f"cannot load the tokenizer of {path}: {str(err).splitlines()[0]}",
                           hint="the model folder needs tokenizer.json / tokenizer_config.json"
                           ) from None
    tokenizer.padding_side = "left"  # generate continues from the right edge of every row
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise BackendError(f"the tokenizer of {path} has no chat template",
                           hint="use an instruct model, or add chat_template.jinja to the folder")
    return tokenizer


def _stop_token_ids(model: Any, tokenizer: Any) -> list[int]:
    """Every id that ends an answer: the generation config's eos ids and the tokenizer's."""
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif isinstance(configured, list):
        ids.update(int(i) for i in configured)
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise BackendError("the model defines no end-of-sequence token",
                           hint="set eos_token_id in generation_config.json")
    return sorted(ids)


def _nf4_config(torch: Any) -> Any:
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise BackendError("load_in_4bit needs bitsandbytes, which is not installed",
                           hint="pip install 'sllmbo[gpu]'") from None
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)
