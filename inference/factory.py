"""One function that turns CLI/API settings into a ``Backend``.

Kept import-light: each backend module (and torch, transformers, vllm, openai behind it) is
imported only when that kind is asked for.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from sllmbo.core.errors import BackendError
from sllmbo.core.renamed import renamed_kwargs

from .base import Backend

KINDS = ("auto", "transformers", "llamacpp", "vllm", "openai")
#: Environment override of what "auto" picks for an in-process model: auto, llamacpp or
#: transformers (benchmarks pin today's path with it).
ENGINE_ENV = "SLLMBO_LOCAL_ENGINE"


@renamed_kwargs(model="llm")
def create_backend(kind: str = "transformers", *, llm: str | None = None,
                   adapter: str | None = "default", base_url: str | None = None,
                   api_key_env: str = "SLLMBO_API_KEY", device: str = "auto",
                   load_in_4bit: bool = False, timeout_s: float = 120.0,
                   constrained: bool = True) -> Backend:
    """Build a backend.

    Args:
        kind: "auto" (in-process: llama.cpp on a CPU where it is installed and the LLM has
            GGUF weights, else transformers; ``local_engine``), "transformers" (in-process,
            CPU or GPU), "llamacpp" (in-process CPU engine, ``llamacpp_backend``), "vllm"
            (offline GPU engine) or "openai" (any OpenAI-compatible server at ``base_url``).
        llm: the LLM: its local Hugging Face folder or a name under ``$SLLMBO_HOME/models``;
            None means the embedded default (``ModelNotFoundError`` with the pull hint when
            not pulled). For "openai" it is the served model name (None: the served LoRA
            adapter, else the server's first model). Formerly ``model=``, still taken with a
            ``FutureWarning`` (``sllmbo.core.renamed``).
        adapter: a PEFT/LoRA adapter folder or a name under ``$SLLMBO_HOME/adapters``;
            "default" (the default): the shipped fine-tuned adapter when ``llm`` is the
            embedded default, else none; None or "none": the base model. For "openai" pass
            the served LoRA module name as ``llm`` instead.
        base_url: the server's API root for "openai", e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: environment variable with the server's API key ("openai").
        device: "auto", "cpu", "cuda" or "cuda:N" ("transformers").
        load_in_4bit: NF4 weights via bitsandbytes, CUDA only ("transformers").
        timeout_s: per-request HTTP timeout in seconds ("openai").
        constrained: enforce each request's JSON Schema while decoding.
    """
    from sllmbo.core.home import resolve_model

    from .models import DEFAULT_ADAPTER, NO_ADAPTER, resolve_adapter

    if kind not in KINDS:
        raise BackendError(f"unknown backend kind {kind!r}", hint=f"use one of {', '.join(KINDS)}")
    if kind == "openai":
        if base_url is None:
            raise BackendError("the openai backend needs a base_url",
                               hint="e.g. --base-url http://127.0.0.1:8000/v1 (see `sllmbo serve`)")
        if adapter not in (None, DEFAULT_ADAPTER, NO_ADAPTER):
            raise BackendError("the openai backend takes no adapter folder",
                               hint="serve the adapter (`sllmbo serve --adapter ... --lora-name "
                               "NAME`) and pass --model-path NAME")
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(base_url, model=llm, api_key_env=api_key_env,
                             timeout_s=timeout_s, constrained=constrained)
    if base_url is not None:
        raise BackendError(f"base_url is only for the openai backend, not {kind!r}",
                           hint="drop --base-url, or use --backend openai")
    model_path = resolve_model(llm)
    adapter_path = resolve_adapter(adapter, model_path=model_path)
    if kind in ("auto", "llamacpp"):
        return local_backend(model_path, adapter_path, device=device,
                             load_in_4bit=load_in_4bit, constrained=constrained,
                             engine="llamacpp" if kind == "llamacpp" else None)
    if kind == "vllm":
        if load_in_4bit:
            raise BackendError("load_in_4bit is a transformers option",
                               hint="serve a pre-quantized model with vLLM, or use "
                               "--backend transformers")
        from .vllm_backend import VLLMBackend

        return VLLMBackend(model_path, adapter_path=adapter_path, constrained=constrained)
    from .transformers_backend import TransformersBackend

    return TransformersBackend(model_path, adapter_path=adapter_path, device=device,
                               load_in_4bit=load_in_4bit, constrained=constrained)


def local_engine(model_path: Path, *, device: str = "auto", load_in_4bit: bool = False,
                 prefer: str | None = None) -> tuple[str, str | None]:
    """The in-process engine "auto" picks, and why not llama.cpp when it is transformers.

    llama.cpp where: the device is a CPU ("cpu", or "auto" with no NVIDIA GPU visible; told
    without importing torch), no 4-bit weights were asked for, llama-cpp-python and
    llguidance are installed, and the model folder holds GGUF weights (the embedded model
    keeps its shipped file). ``$SLLMBO_LOCAL_ENGINE`` overrides the choice."""
    from .llamacpp_backend import unavailable_reason
    from .models import base_gguf

    forced = prefer or os.environ.get(ENGINE_ENV, "auto")
    if forced not in ("auto", "llamacpp", "transformers"):
        raise BackendError(f"unknown in-process engine {forced!r} (${ENGINE_ENV})",
                           hint="use auto, llamacpp or transformers")
    if forced == "transformers":
        return "transformers", f"{ENGINE_ENV}=transformers"
    reason = None
    if load_in_4bit:
        reason = "4-bit weights are a transformers (CUDA) option"
    elif device != "cpu" and (device != "auto" or _cuda_visible()):
        reason = f"the device is {'a CUDA GPU' if device == 'auto' else device}"
    elif (missing := unavailable_reason()) is not None:
        reason = f"{missing} (`make setup` builds it)"
    elif base_gguf(model_path) is None:
        reason = f"{model_path} has no GGUF weights"
    if reason is not None and forced == "llamacpp":
        raise BackendError(f"the llama.cpp engine cannot run: {reason}",
                           hint="use --backend transformers")
    return ("transformers", reason) if reason is not None else ("llamacpp", None)


def local_backend(model_path: Path, adapter_path: Path | None, *, device: str = "auto",
                  load_in_4bit: bool = False, constrained: bool = True,
                  engine: str | None = None) -> Backend:
    """The fast in-process backend for this machine (``local_engine``); ``engine`` forces
    one. The backend's ``engine_note`` says why it is not llama.cpp, when it is not."""
    chosen, reason = local_engine(model_path, device=device, load_in_4bit=load_in_4bit,
                                  prefer=engine)
    backend: Backend | None = None
    if chosen == "llamacpp":
        from sllmbo.core.errors import ModelNotFoundError

        from .llamacpp_backend import LlamaCppBackend

        try:
            backend = LlamaCppBackend(model_path, adapter_path=adapter_path,
                                      constrained=constrained, on_note=_note)
        except BackendError as err:  # e.g. an adapter the merge cannot map
            if engine == "llamacpp" or isinstance(err, ModelNotFoundError):
                raise
            reason = f"llama.cpp could not load it ({err})"
    if backend is None:
        from .transformers_backend import TransformersBackend

        backend = TransformersBackend(model_path, adapter_path=adapter_path, device=device,
                                      load_in_4bit=load_in_4bit, constrained=constrained)
    backend.engine_note = reason  # type: ignore[attr-defined]
    return backend


def _note(message: str) -> None:
    print(f"note: {message}", file=sys.stderr)


def _cuda_visible() -> bool:
    """An NVIDIA GPU this process may use (driver present, not hidden)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    return Path("/proc/driver/nvidia/gpus").is_dir() or Path("/dev/nvidia0").exists()
