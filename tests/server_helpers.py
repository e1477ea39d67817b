"""Helpers for the ``http_server`` tests: a backend that generates slowly, token by token,
and raw HTTP clients that can misbehave (half-send, hang up, lie about lengths)."""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from sllmbo.eval.server_faults import answered
from sllmbo.inference.base import Backend, ChatRequest, Completion

MESSAGES = [{"role": "user", "content": "suggest"}]
FINITE = {"type": "object", "properties": {"kernel": {"enum": ["rbf", "linear"]}},
          "required": ["kernel"], "additionalProperties": False}


class TickingBackend(Backend):
    """Generates one token every ``tick_s`` up to ``max_tokens``, stopping early, as the
    transformers backend does, when ``max_time_s`` passes or ``cancelled()`` says so.

    Records what each call cost, and the most calls that ever ran at once."""

    name = "ticking"

    def __init__(self, tick_s: float = 0.01, context_length: int = 2048) -> None:
        self.tick_s = tick_s
        self.context_length = context_length
        self.calls: list[dict[str, Any]] = []
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        with self._lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            return [self._one(r) for r in requests]
        finally:
            with self._lock:
                self.running -= 1

    def _one(self, request: ChatRequest) -> Completion:
        start = time.perf_counter()
        s = request.sampling
        tokens, stopped_early = 0, False
        while tokens < s.max_tokens:
            if ((s.max_time_s is not None and time.perf_counter() - start >= s.max_time_s)
                    or (request.cancelled is not None and request.cancelled())):
                stopped_early = True
                break
            time.sleep(self.tick_s)
            tokens += 1
        took = time.perf_counter() - start
        self.calls.append({"tokens": tokens, "seconds": took, "stopped_early": stopped_early})
        if stopped_early:
            return Completion("", "error", 5, tokens, took, error="stopped early")
        return Completion(json.dumps({"kernel": "rbf"}), "stop", 5, tokens, took)


def post(url: str, body: Any, *, headers: dict[str, str] | None = None,
         timeout: float = 30.0, raw: bytes | None = None) -> tuple[int, dict[str, Any]]:
    """POST ``body`` (or ``raw`` bytes) to ``url``; (status, JSON reply)."""
    host, port, path = split(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = raw if raw is not None else json.dumps(body).encode()
        conn.request("POST", path, body=data,
                     headers={"Content-Type": "application/json", **(headers or {})})
        resp = conn.getresponse()
        text = resp.read()
        return resp.status, json.loads(text) if text else {}
    finally:
        conn.close()


def get(url: str, *, headers: dict[str, str] | None = None,
        timeout: float = 10.0) -> tuple[int, dict[str, Any]]:
    host, port, path = split(url)
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read() or b"{}")
    finally:
        conn.close()


def split(url: str) -> tuple[str, int, str]:
    rest = url.removeprefix("http://")
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port), "/" + path


def chat_url(server_url: str) -> str:
    return f"{server_url}/chat/completions"


def open_request(url: str, body: Any, *, send_all: bool = True,
                 headers: dict[str, str] | None = None) -> socket.socket:
    """A socket that has sent a chat request (all of it, or its headers and half its body)
    and reads nothing: what an abandoned or half-sent client leaves behind."""
    host, port, path = split(url)
    data = json.dumps(body).encode()
    head = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    request = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
               f"{head}Content-Length: {len(data)}\r\n\r\n").encode()
    sock = socket.create_connection((host, port), timeout=10)
    sock.sendall(request + (data if send_all else data[:len(data) // 2]))
    return sock


def hang_up(sock: socket.socket) -> None:
    """Close at once, with a reset (SO_LINGER 0), as a killed client does."""
    import struct

    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def wait_until(check: Any, timeout_s: float, step_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(step_s)
    return bool(check())


def rss_mb(trim: bool = False) -> float:
    """This process's resident memory in MB (Linux). ``trim``: first hand freed heap pages
    back to the OS (glibc ``malloc_trim``), so what is measured is what is still held, not
    what the allocator keeps for reuse after megabyte-sized requests."""
    if trim:
        import ctypes
        import ctypes.util

        name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def headers_only(url: str, *, source: str | None = None) -> socket.socket:
    """A socket that has sent a request line and one header, and never ends its headers."""
    host, port, _ = split(url)
    sock = socket.create_connection((host, port), timeout=10,
                                    source_address=(source, 0) if source else None)
    sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n")
    return sock


class Drip:
    """``n`` connections that each send ``POST /v1/chat/completions HTTP/1.1\\r\\n`` and
    then one more byte every ``every_s`` for ``for_s`` (no key, never a whole request): the
    slow-drip client of issue 38. Runs in a thread; ``closed_after`` holds, per connection,
    the seconds after which the server ended it: answered it (an error, then the end of the
    server's half) or refused its bytes (None: still open at the end)."""

    def __init__(self, url: str, n: int, *, every_s: float, for_s: float,
                 source: str | None = None) -> None:
        self.url, self.n, self.every_s, self.for_s = url, n, every_s, for_s
        self.source = source  # another loopback address (127.0.0.2): another client
        self.closed_after: list[float | None] = []
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Drip:
        self._thread.start()
        assert self.opened.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join(self.for_s + 10)

    def _run(self) -> None:
        host, port, _ = split(self.url)
        socks = []
        for _ in range(self.n):
            try:
                sock = socket.create_connection(
                    (host, port), timeout=5,
                    source_address=(self.source, 0) if self.source else None)
                sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
                socks.append(sock)
            except OSError:
                socks.append(None)
        start = time.monotonic()
        self.closed_after = [0.0 if s is None else None for s in socks]
        self.opened.set()
        while time.monotonic() - start < self.for_s:
            time.sleep(self.every_s)
            for i, sock in enumerate(socks):
                if sock is None or self.closed_after[i] is not None:
                    continue
                try:
                    if answered(sock):  # the server lingers a while, reading what comes
                        raise ConnectionAbortedError
                    sock.sendall(b"X")
                except OSError:
                    self.closed_after[i] = time.monotonic() - start
        for sock in socks:
            if sock is not None:
                sock.close()


def timed(call: Any) -> tuple[Any, float]:
    """``call()``'s result and the seconds it took."""
    start = time.monotonic()
    result = call()
    return result, time.monotonic() - start


#: Compiles for well over 10 s on these machines (fixed-length patterns expand to a rule per
#: character, each masked against the 49k-token vocabulary).
SLOW_PATTERN_LENGTH = 20000


def slow_schema(salt: int = 0) -> dict:
    return {"type": "object", "properties": {
        f"p{i}": {"type": "string", "pattern": f"^[a-z]{{{SLOW_PATTERN_LENGTH + salt + i}}}$"}
        for i in range(4)}, "required": ["p0"]}
