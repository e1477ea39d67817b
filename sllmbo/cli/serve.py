"""``sllmbo serve``: an OpenAI-compatible server for a local model (+ adapter)."""

from __future__ import annotations

import typer

from sllmbo.cli import options

SERVE_HELP = """Serve a model (and LoRA adapter) at /v1/chat/completions on this machine.

--engine vllm runs `vllm serve` (CUDA GPU, `pip install 'sllmbo\\[gpu]'`): one server answers
every tuning worker. --engine transformers serves in-process with transformers (CPU or GPU,
--device); --engine llamacpp serves in-process with llama.cpp (CPU, `pip install
'sllmbo\\[cpu]'`; the fastest on a CPU). All honour response_format json_schema; point
clients at the printed URL with `--backend openai --base-url URL --model-path NAME`.

With an API key (--api-key or $SLLMBO_API_KEY) every /v1 request needs
`Authorization: Bearer KEY`, as with `vllm serve --api-key`; sllmbo clients send
$SLLMBO_API_KEY. An address other than loopback needs a key, or --allow-unauthenticated.

Examples:

  sllmbo serve --engine llamacpp --port 8000

  sllmbo serve --engine transformers --device cpu --request-timeout 60

  SLLMBO_API_KEY=$(openssl rand -hex 16) sllmbo serve --engine transformers --host 0.0.0.0

  sllmbo serve --engine vllm --model ~/models/CodeLlama-7b-Instruct-hf \\
      --adapter ~/.cache/sllmbo/adapters/hpo-codellama --lora-name hpo

  sllmbo tune --task bike_sharing --backend openai --base-url http://127.0.0.1:8000/v1 --model-path hpo
"""


def register(app: typer.Typer) -> None:
    app.command("serve", help=SERVE_HELP)(serve_command)


def serve_command(
    engine: str = typer.Option(
        "vllm", "--engine", help="vllm (`vllm serve`, GPU), transformers (in-process, CPU or "
        "GPU) or llamacpp (in-process llama.cpp, CPU)."),
    llm: str | None = typer.Option(
        None, "--model", help="Model folder or name under $SLLMBO_HOME/models "
        "(default: the embedded SmolLM2-135M-Instruct)."),
    adapter: str | None = options.ADAPTER,
    lora_name: str | None = typer.Option(
        None, "--lora-name", help="Model name clients use for the adapter "
        "(default: the adapter folder's name)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(8000, "--port", min=0, max=65535, help="Port (0: any free one)."),
    startup_timeout: float = typer.Option(
        600.0, "--startup-timeout", min=1.0, help="Seconds to wait for vLLM to be healthy."),
    device: str = typer.Option("auto", "--device", help="transformers engine: auto, cpu, cuda."),
    api_key: str | None = typer.Option(
        None, "--api-key", envvar="SLLMBO_API_KEY", show_envvar=True,
        help="Key clients must send as 'Authorization: Bearer KEY' (prefer the environment "
        "variable: a command line is visible to every user of the machine)."),
    allow_unauthenticated: bool = typer.Option(
        False, "--allow-unauthenticated",
        help="Serve a non-loopback --host without an API key (a trusted network only)."),
    request_timeout: float = typer.Option(
        300.0, "--request-timeout", min=1.0,
        help="transformers and llamacpp engines: seconds a whole request may take (arriving, "
        "compiling its schema, waiting, generating) before 504."),
    read_timeout: float = typer.Option(
        10.0, "--read-timeout",
        help="transformers and llamacpp engines: seconds a request's headers and body may "
        "take to arrive, counted from its first byte (408 past it; a connection silent this "
        "long is closed)."),
    compile_timeout: float = typer.Option(
        10.0, "--compile-timeout",
        help="transformers engine: seconds a request's JSON Schema may take to compile into "
        "a grammar, off the model (400 past it: the schema is too costly)."),
) -> None:
    from sllmbo.core.errors import BackendError
    from sllmbo.core.home import resolve_model
    from sllmbo.inference.models import (
        DEFAULT_ADAPTER_NAME,
        resolve_adapter,
        shipped_adapter_path,
    )
    from sllmbo.inference.serve import ENGINES, serve_local, serve_vllm
    from sllmbo.inference.server.limits import ServerLimits, check_exposure

    if engine not in ENGINES:
        raise BackendError(f"unknown engine {engine!r}", hint=f"use one of {', '.join(ENGINES)}")
    limits = ServerLimits(request_timeout_s=seconds("--request-timeout", request_timeout),
                          read_timeout_s=seconds("--read-timeout", read_timeout),
                          compile_timeout_s=seconds("--compile-timeout", compile_timeout))
    api_key = api_key or None  # an empty $SLLMBO_API_KEY is no key
    check_exposure(host, api_key, allow_unauthenticated)  # before any model is resolved
    model_path = resolve_model(llm)
    adapter_path = resolve_adapter(adapter, model_path=model_path)
    if lora_name is None and adapter_path == shipped_adapter_path():
        lora_name = DEFAULT_ADAPTER_NAME
    if lora_name is not None and adapter_path is None:
        raise BackendError("--lora-name needs --adapter", hint="pass --adapter FOLDER too")

    def on_ready(url: str, names: list[str]) -> None:
        typer.echo(f"serving {', '.join(names)} at {url}  (Ctrl-C stops)")
        if api_key:
            typer.echo("clients need the API key: set SLLMBO_API_KEY where they run")
        typer.echo(f"use: --backend openai --base-url {url} --model-path {names[-1]}")

    if engine == "vllm":
        code = serve_vllm(model_path, adapter=adapter_path,
                          lora_name=lora_name or (adapter_path.name if adapter_path else "hpo"),
                          host=host, port=port, startup_timeout_s=startup_timeout,
                          on_ready=on_ready, api_key=api_key,
                          allow_unauthenticated=allow_unauthenticated)
    else:
        code = serve_local(engine, model_path, adapter=adapter_path, lora_name=lora_name,
                           host=host, port=port, device=device, on_ready=on_ready,
                           api_key=api_key, allow_unauthenticated=allow_unauthenticated,
                           limits=limits)
    raise typer.Exit(code)


def seconds(flag: str, value: float) -> float:
    """``value`` if it is a finite number of seconds > 0; else ``SllmboError`` (one line,
    exit 2) naming ``flag``."""
    import math

    from sllmbo.core.errors import SllmboError

    if not (math.isfinite(value) and value > 0):
        raise SllmboError(f"{flag} must be a finite number of seconds > 0, got {value:g}")
    return float(value)
