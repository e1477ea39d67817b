"""A small OpenAI-compatible server around any ``Backend`` (the transformers one in practice).

For CPU users, who have no vLLM, and for tests of ``OpenAIBackend`` against a real server.
Routes: ``POST /v1/chat/completions`` (honours ``response_format`` json_schema / json_object),
``GET /v1/models``, ``GET /health``. Standard library only (``http.server``).

Built to be exposed to a team, not only to this machine:
- an API key, checked as vLLM checks it (``Authorization: Bearer KEY`` on every ``/v1/*``
  request, else 401); a non-loopback address is refused without one unless
  ``allow_unauthenticated`` says the network is trusted;
- one generation at a time (an in-process model is not thread-safe, and on CPU parallel
  requests would only compete for the same cores), in arrival order, with a bounded line of
  waiters (full: 503) and a per-request deadline (passed: 504);
- generation stops when its client goes away (``ChatRequest.cancelled``);
- socket read timeouts and a cap on served connections (more wait in the listen backlog),
  so half-sent requests cannot pile up threads;
- bounded bodies and schemas and checked values (``http_request``), 400/413 with the reason;
- a client that disconnects, or any other failure, is one line on the ``sllmbo.server`` log,
  never a traceback (``SLLMBO_DEBUG=1`` adds them).
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import math
import os
import select
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sllmbo.errors import BackendError

from .base import Backend, ChatRequest, Completion
from .http_request import (
    BodyLimits,
    RequestError,
    check_fits,
    parse_body,
    parse_chat_request,
)

__all__ = [
    "ChatServer",
    "RequestError",
    "ServerLimits",
    "completion_body",
    "is_loopback",
    "parse_chat_request",
]

log = logging.getLogger("sllmbo.server")

#: Header the OpenAI Python SDK sends with its read timeout: the client's own deadline.
CLIENT_TIMEOUT_HEADER = "X-Stainless-Read-Timeout"


@dataclass(frozen=True)
class ServerLimits:
    """How much any one client may take from the others."""

    #: Seconds a request may take from its arrival to its answer, waiting included; a client
    #: that sends ``X-Stainless-Read-Timeout`` (the OpenAI SDK does) gets the smaller one.
    request_timeout_s: float = 300.0
    #: Seconds a socket read may wait for the client (a half-sent request is dropped then).
    read_timeout_s: float = 10.0
    #: Requests that may wait for the model behind the one it answers; more get 503.
    max_waiting: int = 32
    #: Connections served at once (each holds a thread); more wait to be accepted.
    max_connections: int = 64
    body: BodyLimits = field(default_factory=BodyLimits)

    def __post_init__(self) -> None:
        for name in ("request_timeout_s", "read_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"ServerLimits.{name} must be a number > 0, got {value!r}")
        for name in ("max_waiting", "max_connections"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"ServerLimits.{name} must be an integer >= 1, got {value!r}")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is reachable from this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name other than localhost, or "" (every interface)
        return False


def check_exposure(host: str, api_key: str | None, allow_unauthenticated: bool) -> None:
    """Refuse to serve a non-loopback address to anyone without a key, unless told to."""
    if api_key or allow_unauthenticated or is_loopback(host):
        return
    raise BackendError(
        f"refusing to listen on {host or 'every interface'} without an API key: anyone who "
        "can reach this port could use the model",
        hint="pass --api-key KEY (or set $SLLMBO_API_KEY) and give clients the same "
        "$SLLMBO_API_KEY, or add --allow-unauthenticated if the network is trusted")


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


class ClientWatch:
    """Whether a client is still connected, asked without blocking (``poll`` with timeout 0
    and a peek: readable with no data means the peer closed)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._poll = select.poll()
        self._poll.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        self.gone = False

    def __call__(self) -> bool:
        if self.gone:
            return True
        if not self._poll.poll(0):
            return False
        try:
            self.gone = self._sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:  # reset by the peer
            self.gone = True
        return self.gone


class ModelGate:
    """One request at a time on the model, first come first served, at most ``max_waiting``
    waiting; a waiter leaves when its deadline passes (504) or its client goes."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._line: deque[object] = deque()
        self._cond = threading.Condition()

    @property
    def waiting(self) -> int:
        with self._cond:
            return max(0, len(self._line) - 1)

    @contextmanager
    def turn(self, deadline: float, gone: Callable[[], bool]) -> Iterator[None]:
        ticket = object()
        with self._cond:
            if len(self._line) > self.max_waiting:
                raise RequestError(f"the server is busy: {self.max_waiting} requests are "
                                   "already waiting for the model; retry later",
                                   HTTPStatus.SERVICE_UNAVAILABLE)
            self._line.append(ticket)
        try:
            with self._cond:
                while self._line[0] is not ticket:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise RequestError("the request's deadline passed while it waited for "
                                           "the model", HTTPStatus.GATEWAY_TIMEOUT)
                    if gone():
                        raise ClientGone()
                    self._cond.wait(timeout=min(left, 0.1))
            yield
        finally:
            with self._cond:
                self._line.remove(ticket)
                self._cond.notify_all()


class ChatServer:
    """Serves ``backend`` under ``model_name`` on ``host:port`` (port 0 picks a free one).

    The port is bound here, so a busy one fails before anything slow; ``backend`` may be None
    and set later (``sllmbo serve`` binds first, then loads the model). ``api_key``: the key
    clients must send as ``Authorization: Bearer KEY``; None serves anyone, which a
    non-loopback ``host`` refuses unless ``allow_unauthenticated``.
    """

    def __init__(self, backend: Backend | None, *, model_name: str, host: str = "127.0.0.1",
                 port: int = 8000, api_key: str | None = None,
                 allow_unauthenticated: bool = False,
                 limits: ServerLimits | None = None) -> None:
        check_exposure(host, api_key, allow_unauthenticated)
        self.backend = backend
        self.model_name = model_name
        self.api_key = api_key or None
        self.limits = limits or ServerLimits()
        self.gate = ModelGate(self.limits.max_waiting)
        try:
            self._httpd = _Server((host, port), _handler_for(self), self.limits)
        except OSError as err:
            raise BackendError(f"cannot listen on {host}:{port}: {err.strerror}",
                               hint="pick another --port") from None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API root clients pass as ``base_url``, e.g. ``http://127.0.0.1:8000/v1``."""
        host, port = self._httpd.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/v1"

    @property
    def connections(self) -> int:
        """Connections being served now (each holds a thread; at most ``max_connections``)."""
        return self._httpd.connections

    def authorized(self, header: str | None) -> bool:
        """Whether an ``Authorization`` header carries the key (constant-time compare)."""
        if self.api_key is None:
            return True
        return hmac.compare_digest((header or "").encode(), f"Bearer {self.api_key}".encode())

    def deadline_for(self, started: float, client_timeout: str | None) -> float:
        """When a request that arrived at ``started`` (monotonic) must be answered."""
        budget = self.limits.request_timeout_s
        try:
            asked = float(client_timeout) if client_timeout is not None else math.inf
        except ValueError:
            asked = math.inf
        if math.isfinite(asked) and asked > 0:
            budget = min(budget, asked)
        return started + budget

    def answer(self, request: ChatRequest, *, max_tokens_given: bool = True,
               deadline: float | None = None,
               gone: Callable[[], bool] = lambda: False) -> Completion:
        """Wait for the model's turn, fit the request to the context, generate."""
        backend = self._backend()
        deadline = deadline if deadline is not None else (
            time.monotonic() + self.limits.request_timeout_s)
        with self.gate.turn(deadline, gone):
            request = self._fit(request, backend, max_tokens_given)
            left = deadline - time.monotonic()
            if left <= 0:
                raise RequestError("the request's deadline passed while it waited for the "
                                   "model", HTTPStatus.GATEWAY_TIMEOUT)
            sampling = request.sampling
            if sampling.max_time_s is None or sampling.max_time_s > left:
                sampling = replace(sampling, max_time_s=left)
            return backend.complete([replace(request, sampling=sampling, cancelled=gone)])[0]

    def _fit(self, request: ChatRequest, backend: Backend, max_tokens_given: bool) -> ChatRequest:
        context = int(backend.context_length)
        chars = sum(len(m["content"]) for m in request.messages)
        if chars > 32 * context:  # no tokenizer packs 32 characters a token: skip counting
            raise RequestError(f"prompt too long: {chars} characters, and the model's context "
                               f"holds {context} tokens")
        return check_fits(request, backend.count_prompt_tokens(request.messages), context,
                          max_tokens_given)

    def _backend(self) -> Backend:
        if self.backend is None:
            raise BackendError("the server has no model yet", hint="set ChatServer.backend")
        return self.backend

    def serve_forever(self) -> None:
        self._backend()
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ChatServer:
        """Serve from a background thread (tests, notebooks)."""
        self._backend()
        self._thread = threading.Thread(target=self.serve_forever, name="sllmbo-server",
                                        daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        if self._thread is not None or self._httpd.serving:
            self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def completion_body(completion: Completion, model: str) -> dict[str, Any]:
    """A ``Completion`` as an OpenAI ``chat.completion`` object."""
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "finish_reason": completion.finish_reason,
                     "message": {"role": "assistant", "content": completion.text}}],
        "usage": {"prompt_tokens": completion.prompt_tokens,
                  "completion_tokens": completion.completion_tokens,
                  "total_tokens": completion.prompt_tokens + completion.completion_tokens},
    }


class _Server(ThreadingHTTPServer):
    """``ThreadingHTTPServer`` with a cap on open connections and one-line error logs."""

    daemon_threads = True
    request_queue_size = 128  # the listen backlog: bursts of clients wait instead of failing

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler],
                 limits: ServerLimits) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._slots = threading.BoundedSemaphore(limits.max_connections)
        self._max_connections = limits.max_connections
        self._capped = False
        self._count_lock = threading.Lock()
        self.connections = 0  # accepted and not yet closed
        self.serving = False
        super().__init__(address, handler)

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self.serving = True
        try:
            super().serve_forever(poll_interval)
        finally:
            self.serving = False

    def get_request(self) -> tuple[Any, Any]:
        """Accept only while under the cap; over it, connections wait in the listen backlog
        (refusing them instead would reset clients still sending their request)."""
        if not self._slots.acquire(timeout=0.2):
            if not self._capped:
                log.info("%d connections are open: new ones wait", self._max_connections)
            self._capped = True
            raise OSError("connection cap reached")  # socketserver tries again next poll
        self._capped = False
        try:
            accepted = super().get_request()
        except BaseException:
            self._slots.release()
            raise
        with self._count_lock:
            self.connections += 1
        return accepted

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self._count_lock:
            self.connections -= 1
        self._slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """One line instead of socketserver's traceback (a gone client is routine)."""
        import sys

        err = sys.exc_info()[1]
        who = _peer(client_address)
        if isinstance(err, ConnectionError | TimeoutError):
            log.info("client %s went away (%s)", who, type(err).__name__)
        else:
            log.error("error serving %s: %s: %s", who, type(err).__name__, err,
                      exc_info=bool(os.environ.get("SLLMBO_DEBUG")))


def _peer(address: Any) -> str:
    return f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address)


def _handler_for(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = server.limits.read_timeout_s  # StreamRequestHandler sets it on the socket

        def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
            """Quiet: one line per request would drown the CLI's own output."""

        def log_message(self, format: str, *args: Any) -> None:
            """http.server's own complaints (timeouts, bad request lines): one line each."""
            log.info("client %s: %s", _peer(self.client_address), format % args)

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok"})
            elif not self._authorized():
                return
            elif self.path.rstrip("/") == "/v1/models":
                backend = server._backend()
                entry = {"id": server.model_name, "object": "model", "created": 0,
                         "owned_by": "sllmbo", "max_model_len": int(backend.context_length)}
                if backend.fine_tuned:  # listed as vLLM lists a LoRA module
                    entry["parent"] = backend.name
                self._send(HTTPStatus.OK, {"object": "list", "data": [entry]})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")

        def do_POST(self) -> None:
            started = time.monotonic()
            self._body_read = False
            if not self._authorized():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")
                return
            watch = ClientWatch(self.connection)
            try:
                self._chat(started, watch)
            except ClientGone:
                self._client_gone(started)
            except RequestError as err:
                self._error(err.status, str(err))
            except BackendError as err:  # e.g. a schema the decoder cannot compile
                self._error(HTTPStatus.BAD_REQUEST, err.message)
            except Exception as err:  # the request boundary: answer 500, log one line
                log.error("request from %s failed: %s: %s", _peer(self.client_address),
                          type(err).__name__, err, exc_info=bool(os.environ.get("SLLMBO_DEBUG")))
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR,
                            f"the server failed on this request: {type(err).__name__}: {err}")

        def _chat(self, started: float, watch: ClientWatch) -> None:
            body = self._read_body()
            request = parse_chat_request(body, {server.model_name}, server.limits.body)
            given = any(body.get(k) is not None for k in ("max_tokens", "max_completion_tokens"))
            deadline = server.deadline_for(started, self.headers.get(CLIENT_TIMEOUT_HEADER))
            completion = server.answer(request, max_tokens_given=given, deadline=deadline,
                                       gone=watch)
            if watch():
                raise ClientGone()
            if completion.finish_reason == "error":
                if time.monotonic() >= deadline:
                    raise RequestError(f"the request's deadline passed after "
                                       f"{time.monotonic() - started:.1f} s: "
                                       f"{completion.error}", HTTPStatus.GATEWAY_TIMEOUT)
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, completion.error or "failed")
                return
            self._send(HTTPStatus.OK, completion_body(completion, server.model_name))

        def _authorized(self) -> bool:
            if server.authorized(self.headers.get("Authorization")):
                return True
            self._error(HTTPStatus.UNAUTHORIZED, "Unauthorized: send the server's API key as "
                        "'Authorization: Bearer KEY' (clients read $SLLMBO_API_KEY)",
                        {"WWW-Authenticate": "Bearer"})
            return False

        def _read_body(self) -> Any:
            limit = server.limits.body.max_body_bytes
            if self.headers.get("Transfer-Encoding"):
                raise RequestError("send the body with a Content-Length, not chunked",
                                   HTTPStatus.LENGTH_REQUIRED)
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise RequestError("bad Content-Length") from None
            if length > limit:
                raise RequestError(f"the body is {length} bytes; the limit is {limit}",
                                   HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
            if length <= 0:
                raise RequestError("the body is empty: send a JSON object with a "
                                   "Content-Length", HTTPStatus.LENGTH_REQUIRED)
            try:
                raw = self.rfile.read(length)
            except TimeoutError:
                raise RequestError(f"the body did not arrive within "
                                   f"{server.limits.read_timeout_s:g} s",
                                   HTTPStatus.REQUEST_TIMEOUT) from None
            if len(raw) < length:
                raise ClientGone()
            self._body_read = True
            return parse_body(raw, server.limits.body)

        def _client_gone(self, started: float) -> None:
            log.info("client %s went away after %.1f s; its request was dropped",
                     _peer(self.client_address), time.monotonic() - started)
            self.close_connection = True

        def _error(self, status: HTTPStatus, message: str,
                   headers: dict[str, str] | None = None) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._send(status, {"error": {"message": message, "type": kind,
                                          "code": int(status)}}, headers)

        def _send(self, status: HTTPStatus, payload: dict[str, Any],
                  headers: dict[str, str] | None = None) -> None:
            data = json.dumps(payload).encode()
            # A POST whose body was not read would leave it to be parsed as the next request.
            unread = self.command == "POST" and not getattr(self, "_body_read", True)
            # Near the connection cap, idle keep-alive connections would hold the slots that
            # waiting clients need: answer and close (clients reconnect by themselves).
            crowded = server.connections >= max(1, server.limits.max_connections * 3 // 4)
            close = unread or crowded
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                if close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                self.wfile.write(data)
                self.wfile.flush()
            except (ConnectionError, TimeoutError) as err:
                log.info("client %s went away before its answer was sent (%s)",
                         _peer(self.client_address), type(err).__name__)
                self.close_connection = True
                return
            if unread:
                self._linger()

        def _linger(self) -> None:
            """Drop what the client still sends (an unread body) for up to 2 s after the
            reply: closing with unread data resets the connection, and the client, still
            sending, would never read why (a 413, a 401)."""
            end = time.monotonic() + min(2.0, server.limits.read_timeout_s)
            try:
                self.connection.shutdown(socket.SHUT_WR)
                self.connection.settimeout(0.25)
                while time.monotonic() < end and self.connection.recv(65536):
                    pass
            except OSError:
                pass  # gone, or silent: either way, done

    return Handler
