"""Hostile clients of ``sllmbo serve`` for ``fault_figures`` (issue 38's reproductions).

Each case starts the real ``sllmbo serve --engine transformers`` (the embedded model, its
default adapter, an API key, ``--request-timeout 5``) in a subprocess and plays one client
from the issue against it, while a keyed client asks for ordinary answers and times them:
- a slow drip: 70 keyless connections each send a request line, then a byte every 5 s for
  40 s; keyed requests at 2, 12, 22 and 32 s, and ``/health`` beside each;
- a slow-compiling schema: a 292-byte ``json_schema`` with 4 ``^[a-z]{20000}$`` patterns,
  and a keyed request 1 s after it;
- a disconnect during compile: the same schema, the socket reset after 1 s, then a keyed
  request with a schema never seen before.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from typing import Any

SLLMBO = [sys.executable, "-m", "sllmbo"]
KEY = "fault-figures-key"
MESSAGES = [{"role": "user", "content": "Answer with a JSON object."}]
SLOW_SCHEMA = {"type": "object", "properties": {
    f"p{i}": {"type": "string", "pattern": f"^[a-z]{{{20000 + i}}}$"} for i in range(4)}}


def schema_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"messages": MESSAGES, "max_tokens": 24, "temperature": 0,
            "response_format": {"type": "json_schema",
                                "json_schema": {"name": "x", "schema": schema}}}


def fresh_schema(tag: str) -> dict[str, Any]:
    return {"type": "object", "properties": {"pick": {"enum": [f"{tag}-{k}" for k in range(4)]}},
            "required": ["pick"], "additionalProperties": False}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(request_timeout_s: float = 5.0):  # type: ignore[no-untyped-def]
    """``sllmbo serve`` on a free port; yields (host, port) once /health answers."""
    port = free_port()
    proc = subprocess.Popen([*SLLMBO, "serve", "--engine", "transformers", "--device", "cpu",
                             "--port", str(port), "--request-timeout", str(request_timeout_s)],
                            env={**os.environ, "SLLMBO_API_KEY": KEY},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        else:
            raise RuntimeError("sllmbo serve did not answer /health within 300 s")
        yield "127.0.0.1", port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def ask(host: str, port: int, body: dict[str, Any] | None, *, path: str = "/v1/chat/completions",
        timeout: float = 120.0) -> tuple[int, float, str]:
    """(status, seconds, error message or "") of one keyed request (GET when no body)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}
        if body is None:
            conn.request("GET", path, headers=headers)
        else:
            conn.request("POST", path, body=json.dumps(body).encode(), headers=headers)
        reply = conn.getresponse()
        text = reply.read()
        status = reply.status
    except OSError as err:
        return 0, time.monotonic() - started, f"{type(err).__name__}: {err}"
    finally:
        conn.close()
    message = ""
    if status != 200:
        try:
            message = json.loads(text)["error"]["message"][:90]
        except (ValueError, KeyError, TypeError):
            message = text[:90].decode(errors="replace")
    return status, time.monotonic() - started, message


def warm_up(host: str, port: int) -> None:
    """A first answer (the model's first call, the compiler's start), so the figures time
    the server, not its warm-up; a few tries, as 5 s is short on busy cores."""
    for _ in range(5):
        if ask(host, port, schema_body(fresh_schema("warm")))[0] == 200:
            return


def answered(sock: socket.socket) -> bool:
    """The server has sent something on ``sock``: an error answer, or the end of its half
    (it closes a connection it answers itself only after a linger, so a send still works)."""
    import select

    return bool(select.select([sock], [], [], 0)[0])


def slow_drip(connections: int = 70, every_s: float = 5.0, for_s: float = 40.0,
              asks_at: tuple[float, ...] = (2, 12, 22, 32)) -> dict[str, Any]:
    with served() as (host, port):
        warm_up(host, port)
        socks: list[socket.socket] = []
        for _ in range(connections):
            sock = socket.create_connection((host, port), timeout=5)
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\n")
            socks.append(sock)
        start = time.monotonic()
        closed: dict[int, float] = {}

        def drip() -> None:
            while time.monotonic() - start < for_s:
                time.sleep(every_s)
                for i, sock in enumerate(socks):
                    if i not in closed:
                        try:
                            if answered(sock):  # it lingers a while, reading what comes
                                raise ConnectionAbortedError
                            sock.sendall(b"X")
                        except OSError:
                            closed[i] = time.monotonic() - start
            for sock in socks:
                sock.close()

        dripper = threading.Thread(target=drip, daemon=True)
        dripper.start()
        answers = []
        for at in asks_at:
            time.sleep(max(0.0, at - (time.monotonic() - start)))
            status, took, _ = ask(host, port, schema_body(fresh_schema("drip")))
            health, health_took, _ = ask(host, port, None, path="/health")
            answers.append({"at_s": at, "status": status, "seconds": round(took, 2),
                            "health": health, "health_seconds": round(health_took, 2)})
        dripper.join(for_s + 30)
    cut = sorted(closed.values())
    median = cut[len(cut) // 2] if cut else None
    shown = ", ".join(f"{a['status']} in {a['seconds']:.1f} s" for a in answers)
    return {"case": f"slow drip: {connections} keyless connections, a byte every "
                    f"{every_s:g} s for {for_s:g} s",
            "answers": answers, "drips_closed": len(cut), "drip_closed_median_s": median,
            "outcome": f"keyed requests at {', '.join(f'{a:g}' for a in asks_at)} s: {shown}; "
                       f"/health in at most {max(a['health_seconds'] for a in answers):.1f} s; "
                       f"{len(cut)}/{connections} drip connections closed by the server "
                       f"(median after {median if median is None else round(median, 1)} s)"}


def slow_schema(hang_up_after_s: float | None = None) -> dict[str, Any]:
    """The slow schema, sent whole (and reset after ``hang_up_after_s``), then a keyed request."""
    size = len(json.dumps(SLOW_SCHEMA, separators=(",", ":")))
    with served() as (host, port):
        warm_up(host, port)
        result: dict[str, Any] = {}
        if hang_up_after_s is None:
            def send() -> None:
                result["slow"] = ask(host, port, schema_body(SLOW_SCHEMA))
            sender = threading.Thread(target=send, daemon=True)
            sender.start()
            time.sleep(1.0)
            status, took, message = ask(host, port, schema_body(fresh_schema("next")))
            sender.join(120)
            slow_status, slow_took, slow_message = result["slow"]
            return {"case": f"slow-compiling schema ({size} bytes, 4 patterns "
                            "^[a-z]{20000}$), --request-timeout 5",
                    "slow": [slow_status, round(slow_took, 2), slow_message],
                    "next": [status, round(took, 2)],
                    "outcome": f"the schema: {slow_status} after {slow_took:.1f} s "
                               f"({slow_message}); a keyed request sent 1 s later: {status} "
                               f"in {took:.1f} s"}
        data = json.dumps(schema_body(SLOW_SCHEMA)).encode()
        sock = socket.create_connection((host, port), timeout=5)
        sock.sendall((f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: "
                      f"Bearer {KEY}\r\nContent-Type: application/json\r\nContent-Length: "
                      f"{len(data)}\r\n\r\n").encode() + data)
        time.sleep(hang_up_after_s)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
        status, took, message = ask(host, port, schema_body(fresh_schema("after")))
        return {"case": f"disconnect during compile (the same schema, reset after "
                        f"{hang_up_after_s:g} s)",
                "next": [status, round(took, 2), message],
                "outcome": f"a keyed request with a new schema, sent right after the reset: "
                           f"{status} in {took:.1f} s"}
