"""One request at a time on the model, in arrival order, with a bounded line of waiters.

An in-process model is not thread-safe, and on CPU parallel requests would only compete for
the same cores. A waiter leaves the line when its deadline passes (504) or its client goes
away; a full line answers 503 at once. Event-loop side only: the model itself runs in one
worker thread (``chat.py``), and a turn ends only when that thread has returned, so two
generations never overlap.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http import HTTPStatus

from ..http_request import RequestError


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


class ModelGate:
    """First come, first served (``asyncio.Lock`` wakes waiters in order)."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self._lock = asyncio.Lock()
        self._queued = 0  # the one on the model and those waiting

    @property
    def waiting(self) -> int:
        return max(0, self._queued - 1)

    @asynccontextmanager
    async def turn(self, deadline: float, gone: asyncio.Event) -> AsyncIterator[None]:
        """Hold the model; ``deadline`` is in loop time."""
        if self._queued > self.max_waiting:
            raise RequestError(f"the server is busy: {self.max_waiting} requests are already "
                               "waiting for the model; retry later",
                               HTTPStatus.SERVICE_UNAVAILABLE)
        self._queued += 1
        try:
            await self._acquire(deadline, gone)
            try:
                yield
            finally:
                self._lock.release()
        finally:
            self._queued -= 1

    async def _acquire(self, deadline: float, gone: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        acquire = asyncio.ensure_future(self._lock.acquire())
        leave = asyncio.ensure_future(gone.wait())
        try:
            await asyncio.wait({acquire, leave}, timeout=max(0.0, deadline - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            leave.cancel()
        if acquire.done() and not acquire.cancelled():
            return
        acquire.cancel()
        try:
            await acquire
        except asyncio.CancelledError:
            pass
        else:  # handed the lock while being cancelled: give it back
            self._lock.release()
        if gone.is_set():
            raise ClientGone()
        raise RequestError("the request's deadline passed while it waited for the model",
                           HTTPStatus.GATEWAY_TIMEOUT)
