"""One function that turns CLI/API settings into a ``Backend``.

Kept import-light: each backend module (and torch, transformers, vllm, openai behind it) is
imported only when that kind is asked for.
"""

from __future__ import annotations

from sllmbo.errors import BackendError

from .base import Backend

KINDS = ("transformers", "vllm", "openai")


def create_backend(kind: str = "transformers", *, model: str | None = None,
                   adapter: str | None = "default", base_url: str | None = None,
                   api_key_env: str = "SLLMBO_API_KEY", device: str = "auto",
                   load_in_4bit: bool = False, timeout_s: float = 120.0,
                   constrained: bool = True) -> Backend:
    """Build a backend.

    Args:
        kind: "transformers" (in-process, CPU or GPU), "vllm" (offline GPU engine) or
            "openai" (any OpenAI-compatible server at ``base_url``).
        model: a local model folder or a name under ``$SLLMBO_HOME/models``; None means the
            embedded default (``ModelNotFoundError`` with the pull hint when not pulled). For
            "openai" it is the served model name (None: the served LoRA adapter, else the
            server's first model).
        adapter: a PEFT/LoRA adapter folder or a name under ``$SLLMBO_HOME/adapters``;
            "default" (the default): the shipped fine-tuned adapter when ``model`` is the
            embedded default, else none; None or "none": the base model. For "openai" pass
            the served LoRA module name as ``model`` instead.
        base_url: the server's API root for "openai", e.g. ``http://127.0.0.1:8000/v1``.
        api_key_env: environment variable with the server's API key ("openai").
        device: "auto", "cpu", "cuda" or "cuda:N" ("transformers").
        load_in_4bit: NF4 weights via bitsandbytes, CUDA only ("transformers").
        timeout_s: per-request HTTP timeout in seconds ("openai").
        constrained: enforce each request's JSON Schema while decoding.
    """
    from .models import DEFAULT_ADAPTER, NO_ADAPTER, resolve_adapter, resolve_model

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

        return OpenAIBackend(base_url, model=model, api_key_env=api_key_env,
                             timeout_s=timeout_s, constrained=constrained)
    if base_url is not None:
        raise BackendError(f"base_url is only for the openai backend, not {kind!r}",
                           hint="drop --base-url, or use --backend openai")
    model_path = resolve_model(model)
    adapter_path = resolve_adapter(adapter, model_path=model_path)
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
