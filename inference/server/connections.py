"""Connections: who gets a slot, and how long a request may take to arrive.

uvicorn reads HTTP/1.1 with h11 and has no timer on a connection until its first answer, and
no per-client cap: a client that drips one header byte every few seconds holds its slot for as
long as it likes. ``guarded_protocol`` subclasses uvicorn's h11 protocol with two rules, kept
by one ``ConnectionGuard`` per server (touched from the event loop's thread only):

- a request must arrive whole (headers and body) within ``read_timeout_s`` of its first byte,
  and a connection that sends nothing for that long is closed;
- a new connection past ``max_connections_per_client`` (its address) or ``max_connections``
  (everyone) closes the slowest idle connection of that address, or of all, to make room.
  Idle means no request of its own is being answered (its headers are not all in), which
  is where a slow-drip client sits; slowest means the fewest bytes a second since it went
  idle (a silent keep-alive first, then the drippers; a client sending a whole request
  promptly is not idle for long). A connection idle for less than ``GRACE_S`` is spared:
  its request may still be on its way. With no idle connection past its grace, the
  newcomer is answered 503 and closed.

Every connection the guard answers itself (503, 408) is closed the way nginx's
``lingering_close`` closes one: the answer, then our half of the stream, then whatever the
client still sends is read and dropped for up to ``LINGER_S``. Closing at once would make the
kernel answer the client's next bytes (a body it was still sending when refused) with a
reset, and a client that is still writing sees "connection reset" or "broken pipe" instead of
the 503 it was sent.

A request whose headers have arrived is the application's to time (``chat.py``).
"""

from __future__ import annotations

import asyncio
import json
import logging
from http import HTTPStatus
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol

from .limits import ServerLimits

log = logging.getLogger("sllmbo.server")

#: Seconds a new (or newly idle) connection is spared from being closed to make room.
GRACE_S = 0.5
#: Seconds a connection answered by the guard keeps reading (and dropping) what its client
#: still sends before it is closed; a client that reads the answer and hangs up ends it sooner.
LINGER_S = 2.0
#: Key of ``scope["state"]`` that holds the request's ``GuardedConnection``.
CONNECTION_KEY = "sllmbo.connection"


def raw_reply(status: HTTPStatus, message: str) -> bytes:
    """A whole HTTP/1.1 error answer with an OpenAI error body, closing the connection (for
    connections no request handler will ever see)."""
    body = json.dumps({"error": {"message": message, "type": "invalid_request_error"
                                 if status < 500 else "server_error", "code": int(status)}})
    head = (f"HTTP/1.1 {int(status)} {status.phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    return head.encode() + body.encode()


class ConnectionGuard:
    """The open connections of one server, by client address, and what was done to them."""

    def __init__(self, limits: ServerLimits) -> None:
        self.limits = limits
        self.by_host: dict[str, list[GuardedConnection]] = {}
        self.evicted = 0
        self.refused = 0
        self.timed_out = 0

    @property
    def open(self) -> int:
        return sum(len(conns) for conns in self.by_host.values())

    def admit(self, conn: GuardedConnection) -> bool:
        """Make room for ``conn`` (closing the slowest idle connection if needed); False when
        every slot it could take is busy answering."""
        mine = self.by_host.setdefault(conn.host, [])
        if len(mine) >= self.limits.max_connections_per_client:
            victim = _slowest_idle(mine)
            if victim is None:
                return self._refuse(conn, f"{len(mine)} connections from {conn.host} are "
                                    "being answered; wait for one of them")
            victim.evict(f"{len(mine)} connections from {conn.host}")
        elif self.open >= self.limits.max_connections:
            victim = _slowest_idle([c for conns in self.by_host.values() for c in conns])
            if victim is None:
                return self._refuse(conn, f"{self.open} connections are being answered; "
                                    "retry later")
            victim.evict(f"{self.open} connections open")
        mine.append(conn)
        return True

    def release(self, conn: GuardedConnection) -> None:
        conns = self.by_host.get(conn.host, [])
        if conn in conns:
            conns.remove(conn)
            if not conns:
                del self.by_host[conn.host]

    def _refuse(self, conn: GuardedConnection, why: str) -> bool:
        self.refused += 1
        log.info("refused a connection from %s: %s", conn.host, why)
        return False


def _slowest_idle(conns: list[GuardedConnection]) -> GuardedConnection | None:
    if not conns:
        return None
    now = conns[0].loop.time()
    idle = [c for c in conns if not c.busy and now - c.idle_since >= GRACE_S]
    return min(idle, key=lambda c: (c.rate(), c.idle_since)) if idle else None


class GuardedConnection(H11Protocol):
    """uvicorn's h11 protocol under a ``ConnectionGuard`` (bound by ``guarded_protocol``)."""

    guard: ConnectionGuard

    def __init__(self, config: Any, server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        # Every request's scope["state"] carries this connection, so the application can time
        # the request from its first byte.
        super().__init__(config, server_state, {**app_state, CONNECTION_KEY: self}, _loop)
        self.host = "?"
        self.admitted = False
        self.idle_since = 0.0
        #: Bytes received since ``idle_since``.
        self.received = 0
        #: Loop time of the current request's first byte; None while idle.
        self.request_started: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        #: Answered by the guard and half-closed: what arrives now is read and dropped.
        self.lingering = False

    @property
    def busy(self) -> bool:
        """A request's headers have arrived and it is not answered yet."""
        return self.cycle is not None and not self.cycle.response_complete

    def rate(self) -> float:
        """Bytes a second received since going idle (over at least one second)."""
        return self.received / max(1.0, self.loop.time() - self.idle_since)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.host = self.client[0] if self.client else "?"
        self.idle_since = self.loop.time()
        if not self.guard.admit(self):
            self._answer_and_linger(HTTPStatus.SERVICE_UNAVAILABLE, "the server has no free "
                                    "connection for this address; retry later")
            return
        self.admitted = True
        self._arm(self.idle_since + self.guard.limits.read_timeout_s)

    def data_received(self, data: bytes) -> None:
        if not self.admitted or self.lingering or self.transport.is_closing():
            return  # refused or dropped: nothing it sends reaches the application
        if self.request_started is None:
            self.request_started = self.loop.time()
        self.received += len(data)
        super().data_received(data)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.request_started = None
        self.idle_since = self.loop.time()
        self.received = 0
        self._arm(self.idle_since + self.guard.limits.read_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
        if self.admitted:
            self.guard.release(self)
            self.admitted = False
        super().connection_lost(exc)

    def evict(self, why: str) -> None:
        """Close this idle connection to make room for a new one."""
        self.guard.evicted += 1
        log.info("closed an idle connection from %s to make room (%s)", self.host, why)
        self._drop(HTTPStatus.SERVICE_UNAVAILABLE, "this idle connection was closed to make "
                   "room for others; send whole requests promptly")

    def _arm(self, due: float) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer = self.loop.call_at(due, self._check_read)

    def _check_read(self) -> None:
        """A request still not whole ``read_timeout_s`` after its first byte (or a connection
        silent that long) is closed; one whose headers arrived is the application's to time."""
        self._timer = None
        if self.lingering or self.transport.is_closing() or self.busy:
            return
        limit = self.guard.limits.read_timeout_s
        due = (self.request_started or self.idle_since) + limit
        if self.loop.time() < due:
            self._arm(due)
            return
        if self.request_started is None:  # idle keep-alive: close quietly
            self._drop(None, "")
            return
        self.guard.timed_out += 1
        log.info("client %s did not send a whole request within %g s; closed", self.host, limit)
        self._drop(HTTPStatus.REQUEST_TIMEOUT, f"the request did not arrive within {limit:g} s "
                   "of its first byte")

    def _drop(self, status: HTTPStatus | None, message: str) -> None:
        if self.lingering or self.transport.is_closing():
            return
        if status is None:
            self.transport.close()
        else:
            self._answer_and_linger(status, message)
        self.guard.release(self)
        self.admitted = False

    def _answer_and_linger(self, status: HTTPStatus, message: str) -> None:
        """Send ``status``, close our half, and drop what still arrives for ``LINGER_S``
        (the module's docstring says why); the client's own close ends it sooner."""
        self.lingering = True
        if self._timer is not None:
            self._timer.cancel()
        self.transport.write(raw_reply(status, message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self._timer = self.loop.call_later(LINGER_S, self.transport.close)


def guarded_protocol(guard: ConnectionGuard) -> type[GuardedConnection]:
    """The protocol class uvicorn builds each connection with, bound to ``guard``."""
    return type("Guarded", (GuardedConnection,), {"guard": guard})
