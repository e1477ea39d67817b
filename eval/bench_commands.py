"""Timing ``sllmbo recommend`` as a command and ``sllmbo serve`` as a warm server.

Why a module of its own: the fast-path and CPU-engine benchmarks both time the commands a user
types (cold, the model files in the OS cache) and answers from a warm server, with the
in-process engine pinned by ``$SLLMBO_LOCAL_ENGINE``.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sllmbo.inference import SamplingParams

from .bench_prompts import make_request

RECOMMEND_ARGS = ("recommend", "--task", "bike_sharing", "--model", "lightgbm")


def command_seconds(repeats: int = 3, extra: Sequence[str] = ()) -> dict[str, Any]:
    """Wall time of ``sllmbo recommend`` as a command (model pulled, files in the OS cache)."""
    import subprocess
    import sys

    args = [sys.executable, "-m", "sllmbo", *RECOMMEND_ARGS, *extra]
    subprocess.run(args, capture_output=True, check=True)  # warm the file cache
    walls = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True)
        walls.append(time.perf_counter() - start)
    return {"command": " ".join(["sllmbo", *args[3:]]), "median_s": statistics.median(walls),
            "runs_s": walls}


def commands(repeats: int = 3) -> dict[str, dict[str, Any]]:
    """``sllmbo recommend`` as a command: the default (consensus of 8 sampled answers), one
    greedy answer, and both against a warm ``sllmbo serve`` (the repeated-calls path)."""
    out = {"consensus": command_seconds(repeats),
           "greedy": command_seconds(repeats, ("--decode", "greedy"))}
    with warm_server() as url:
        served = ("--backend", "openai", "--base-url", url)
        out["consensus, warm server"] = command_seconds(repeats, served)
        out["greedy, warm server"] = command_seconds(repeats, (*served, "--decode", "greedy"))
    return out


@contextlib.contextmanager
def warm_server() -> Iterator[str]:
    """``sllmbo serve --engine transformers`` on a free port, the default adapter loaded."""
    import socket
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "sllmbo", "serve", "--engine",
                               "transformers", "--port", str(port), "--device", "cpu"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 300
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"sllmbo serve exited with {server.returncode}")
            try:
                with urllib.request.urlopen(f"{url}/models", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("sllmbo serve did not come up in 300 s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=60)


def command_seconds_with(engine: str, repeats: int, extra: Sequence[str] = ()) -> dict[str, Any]:
    """``command_seconds`` with the in-process engine pinned (``$SLLMBO_LOCAL_ENGINE``)."""
    from sllmbo.inference.factory import ENGINE_ENV

    saved = os.environ.get(ENGINE_ENV)
    os.environ[ENGINE_ENV] = engine
    try:
        return command_seconds(repeats, extra)
    finally:
        if saved is None:
            os.environ.pop(ENGINE_ENV, None)
        else:
            os.environ[ENGINE_ENV] = saved


def served_answer_s(engine: str, repeats: int = 5) -> float:
    """Median seconds of one greedy answer from a warm ``sllmbo serve`` (HTTP round trip)."""
    from sllmbo.inference.factory import ENGINE_ENV
    from sllmbo.inference.openai_backend import OpenAIBackend

    saved = os.environ.get(ENGINE_ENV)
    os.environ[ENGINE_ENV] = engine  # the server process inherits it
    try:
        with warm_server() as url:
            client = OpenAIBackend(url)
            request = make_request(0, SamplingParams(max_tokens=256, temperature=0.0))
            client.complete([request])
            walls = []
            for _ in range(repeats):
                t = time.perf_counter()
                client.complete([request])
                walls.append(time.perf_counter() - t)
            client.close()
            return statistics.median(walls)
    finally:
        if saved is None:
            os.environ.pop(ENGINE_ENV, None)
        else:
            os.environ[ENGINE_ENV] = saved


def merge_result(path: Path, key: str, block: dict[str, Any]) -> dict[str, Any]:
    """The results file at ``path`` with ``block`` under ``key``, written back: each
    benchmark rewrites its own figures and keeps the others'."""
    result = json.loads(path.read_text()) if path.is_file() else {}
    result[key] = block
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, default=str))
    return result
