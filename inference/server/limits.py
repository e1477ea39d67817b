"""What the server allows any one client, and to whom it listens.

Kept apart from the server so ``sllmbo serve`` can check its options (and refuse an exposed
address without a key) before anything heavy is imported or loaded.
"""

from __future__ import annotations

import ipaddress
import math
from dataclasses import dataclass, field

from sllmbo.core.errors import BackendError

from ..http_request import BodyLimits


@dataclass(frozen=True)
class ServerLimits:
    """How much any one client may take from the others. Every time is in seconds."""

    #: The whole request, from its first byte to its answer: headers, body, schema compile,
    #: the wait for the model and generation (504 when it passes). A client that sends
    #: ``X-Stainless-Read-Timeout`` (the OpenAI SDK does) gets the smaller of the two.
    request_timeout_s: float = 300.0
    #: A request's headers and body must all have arrived this long after its first byte
    #: (a connection that sends nothing for this long is closed). A deadline on the whole
    #: read, not on each read: a client dripping one byte at a time is still cut off.
    read_timeout_s: float = 10.0
    #: Longest a JSON Schema may take to compile into a grammar (400 past it). Compiling runs
    #: in a child process, off the model, and is killed at this bound, at the request's
    #: deadline, or when its client goes away.
    compile_timeout_s: float = 10.0
    #: Requests that may wait for the model behind the one it answers; more get 503.
    max_waiting: int = 32
    #: Connections open at once, every client together. A new one past the cap closes the
    #: slowest idle connection (idle: no request of its own in progress, e.g. one still
    #: dripping its headers; ``connections.py``); with none idle it is refused with 503.
    max_connections: int = 256
    #: Connections open at once from one client address, the same rule within that address:
    #: slow-drip clients from one address cannot take every slot.
    max_connections_per_client: int = 32
    body: BodyLimits = field(default_factory=BodyLimits)

    def __post_init__(self) -> None:
        for name in ("request_timeout_s", "read_timeout_s", "compile_timeout_s"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"ServerLimits.{name} must be a number > 0, got {value!r}")
        for name in ("max_waiting", "max_connections", "max_connections_per_client"):
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
