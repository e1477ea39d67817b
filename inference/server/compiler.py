"""Schema compilation off the model, bounded in time, its cost counted.

xgrammar compiles some small schemas for a long time (a ``pattern`` of ``^[a-z]{20000}$``
took over a minute), and it cannot be interrupted inside a call. So the server compiles in
child processes (``compile_worker``) while the model keeps answering others; a grammar comes
back serialized and goes into the backend's ``GrammarCache``, where generation finds it. Up
to ``max_parallel`` (2) schemas compile at once, each in its own child, so a slow schema
holds up no other. A compile is stopped, by killing its child, when it passes
``compile_timeout_s`` (400: the schema is too costly), its request's deadline (504) or its
client goes away; a fresh child, forked from multiprocessing's fork server (which holds the
imports), is ready in milliseconds. Time spent waiting for a compiler and compiling counts
against the request's deadline, and ``stats`` counts what compiling has cost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import tempfile
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from http import HTTPStatus
from multiprocessing.connection import Connection
from typing import Any

from sllmbo.core.errors import BackendError

from ..constrained import GrammarCache
from ..http_request import RequestError
from .gate import ClientGone

log = logging.getLogger("sllmbo.server")


@dataclass
class CompileStats:
    """What compiling has cost so far (seconds are wall time in the child)."""

    compiled: int = 0
    seconds: float = 0.0
    #: Compiles stopped: too slow, past their request's deadline, or their client gone.
    stopped: int = 0
    failed: int = 0


@dataclass(eq=False)  # identity: children are kept in a set
class _Child:
    """A compile child: its process, our end of its pipe, and its "ready" answer (read once,
    never cancelled: the requests waiting for it share it)."""

    proc: Any
    conn: Connection
    ready: Future[dict[str, Any]]


class SchemaCompiler:
    """Compiles schemas for ``cache`` in child processes, at most ``max_parallel`` at once, so
    one slow schema does not hold up the others (one child is started at once)."""

    def __init__(self, cache: GrammarCache, compile_timeout_s: float,
                 max_parallel: int = 2) -> None:
        self.cache = cache
        self.compile_timeout_s = compile_timeout_s
        self.max_parallel = max_parallel
        self.stats = CompileStats()
        # The tokenizer's description (megabytes for a large vocabulary) goes to each child
        # as a file, read there.
        with tempfile.NamedTemporaryFile("w", prefix="sllmbo-tokenizer-", suffix=".json",
                                         delete=False) as info:
            info.write(cache.info.serialize_json())
        self._info_path = info.name
        self._readers = ThreadPoolExecutor(max_workers=2 * max_parallel + 1,
                                           thread_name_prefix="sllmbo-compile")
        self._slots: asyncio.Semaphore | None = None
        self._children: set[_Child] = set()  # every live child, idle or compiling
        self._idle: list[_Child] = [self._launch()]

    def _launch(self) -> _Child:
        from . import compile_worker

        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([compile_worker.__name__])
        ours, theirs = context.Pipe()
        proc = context.Process(target=compile_worker.run, args=(theirs, self._info_path),
                               name="sllmbo-compile", daemon=True)
        proc.start()
        theirs.close()  # the child holds the other end: its death is our end-of-file
        child = _Child(proc, ours, self._readers.submit(_receive, ours))
        self._children.add(child)
        return child

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until a child can compile (the first one waits for the fork server's
        imports, seconds); False on timeout."""
        child = self._idle[0] if self._idle else self._launch()
        try:
            return bool(child.ready.result(timeout_s).get("ready"))
        except FutureTimeout:
            return False

    async def ensure(self, schema: dict[str, Any], *, deadline: float,
                     gone: asyncio.Event) -> float:
        """Have ``schema`` compiled in the cache; the seconds this request spent on it (0 when
        it was cached). ``deadline`` is in loop time."""
        if schema in self.cache:
            return 0.0
        loop = asyncio.get_running_loop()
        started = loop.time()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.max_parallel)
        await self._bounded(asyncio.ensure_future(self._slots.acquire()), deadline, gone,
                            "waiting for a schema compiler", on_stop="cancel")
        try:
            if schema in self.cache:
                return loop.time() - started
            reply = await self._compile(schema, deadline, gone)
        finally:
            self._slots.release()
        if "error" in reply:
            self.stats.failed += 1
            raise BackendError(reply["error"])
        import xgrammar as xgr

        self.cache.put(schema, xgr.CompiledGrammar.deserialize_json(reply["grammar"],
                                                                     self.cache.info))
        self.stats.compiled += 1
        self.stats.seconds += reply["seconds"]
        return loop.time() - started

    async def _compile(self, schema: dict[str, Any], deadline: float,
                       gone: asyncio.Event) -> dict[str, Any]:
        """Compile in an idle child (or a fresh one); a child whose compile is stopped is
        killed, one that answered goes back to the idle ones."""
        loop = asyncio.get_running_loop()
        child = self._idle.pop() if self._idle else self._launch()
        if not child.proc.is_alive():  # died on its own
            self._drop(child)
            child = self._launch()
        try:
            if not child.ready.done():  # a fork reads the tokenizer; the first waits for
                await self._bounded(asyncio.wrap_future(child.ready), deadline, gone,  # imports
                                    "waiting for the schema compiler to start", on_stop="keep")
        except (ClientGone, RequestError):
            self._idle.append(child)  # still starting: the next request takes it
            raise
        if not child.ready.result().get("ready"):
            self._drop(child)
            raise BackendError("the schema compiler did not start",
                               hint="run the server with SLLMBO_DEBUG=1 to see why")
        child.conn.send(schema)
        limit = loop.time() + self.compile_timeout_s
        answer = asyncio.wrap_future(self._readers.submit(_receive, child.conn))
        reply = await self._bounded(answer, min(deadline, limit), gone,
                                    "compiling the JSON Schema", on_stop="kill",
                                    too_slow=limit <= deadline, child=child)
        if reply.get("gone"):
            self._drop(child)
            raise BackendError("the schema compiler died while compiling this schema")
        self._idle.append(child)
        return reply

    async def _bounded(self, pending: asyncio.Future[Any], bound: float, gone: asyncio.Event,
                       doing: str, *, on_stop: str, too_slow: bool = False,
                       child: _Child | None = None) -> Any:
        """``pending``'s result, unless ``bound`` (loop time) passes or the client goes first.
        Then ``on_stop``: "kill" ``child`` (a compile), "cancel" ``pending`` (a wait in
        line) or "keep" it (a child's start, which a later request can use); and the request
        is answered: ``ClientGone``, 400 when ``too_slow``, else 504."""
        loop = asyncio.get_running_loop()
        leave = asyncio.ensure_future(gone.wait())
        started = loop.time()
        try:
            await asyncio.wait({pending, leave}, timeout=max(0.0, bound - loop.time()),
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            leave.cancel()
        if pending.done():
            return pending.result()
        if on_stop == "kill" and child is not None:
            self.stats.stopped += 1
            self._drop(child)  # its reader sees end-of-file and returns
            await asyncio.wait({pending}, timeout=5)
        elif on_stop == "cancel":
            pending.cancel()
        took = loop.time() - started
        if gone.is_set():
            log.info("stopped %s after %.1f s: its client went away", doing, took)
            raise ClientGone()
        log.info("stopped %s after %.1f s", doing, took)
        if too_slow:
            raise RequestError(f"the JSON Schema did not compile within "
                               f"{self.compile_timeout_s:g} s: simplify it (long fixed-length "
                               "patterns and large min/max lengths are costly)")
        raise RequestError(f"the request's deadline passed while {doing}",
                           HTTPStatus.GATEWAY_TIMEOUT)

    def _drop(self, child: _Child) -> None:
        """Kill ``child`` (forking another later takes milliseconds: the fork server holds
        the imports)."""
        self._children.discard(child)
        if child in self._idle:
            self._idle.remove(child)
        _kill(child.proc, child.conn)

    def stop(self) -> None:
        """Stop for good: the children, the reader threads and the tokenizer file."""
        for child in list(self._children):
            self._drop(child)
        self._readers.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(OSError):
            os.unlink(self._info_path)


def _kill(proc: Any, conn: Connection) -> None:
    """Stop a child; its reader sees end-of-file."""
    if proc.is_alive():
        proc.kill()
    proc.join(5)
    conn.close()


def _receive(conn: Connection) -> dict[str, Any]:
    """One answer from a child (blocking: run in a thread); ``{"gone": True}`` when it died
    or was killed."""
    try:
        return conn.recv()
    except (EOFError, OSError):
        return {"gone": True}


def compiler_for(backend: Any, compile_timeout_s: float) -> SchemaCompiler | None:
    """A compiler for backends that compile schemas with xgrammar in this process (the
    transformers one); None for the others (llama.cpp's llguidance builds its grammar lazily
    and bounded, in well under a second)."""
    cache = getattr(backend, "grammar_cache", None)
    return SchemaCompiler(cache, compile_timeout_s) if isinstance(cache, GrammarCache) else None
