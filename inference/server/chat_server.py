"""``ChatServer``: a ``Backend`` behind uvicorn, on a port bound before the model loads.

For CPU users, who have no vLLM, and for tests of ``OpenAIBackend`` against a real server.
Built to be exposed to a team, not only to this machine (each defence in its own module):
- an API key, checked as vLLM checks it, before the body is read (``app.py``); a non-loopback
  address is refused without one unless the network is said to be trusted (``limits.py``);
- a deadline on the whole request, from its first byte to its answer (``chat.py``);
- a share of the connections per client address, and requests that must arrive whole
  within ``read_timeout_s`` (``connections.py``);
- JSON Schemas compiled off the model, in a child process stopped at a time bound
  (``compiler.py``);
- one generation at a time, in arrival order, with a bounded line (``gate.py``), run in one
  worker thread and stopped when its client goes or its deadline passes;
- bounded bodies and schemas and checked values (``http_request``), 4xx with the reason;
- a client that disconnects, or any other failure, is one line on the ``sllmbo.server`` log,
  never a traceback (``SLLMBO_DEBUG=1`` adds them).
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from http import HTTPStatus

from sllmbo.core.errors import BackendError

from ..base import Backend, ChatRequest, Completion
from ..http_request import RequestError, check_fits
from .compiler import SchemaCompiler, compiler_for
from .connections import ConnectionGuard, guarded_protocol
from .gate import ModelGate
from .limits import ServerLimits, check_exposure


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
        self.model_name = model_name
        self.api_key = api_key or None
        self.limits = limits or ServerLimits()
        self.guard = ConnectionGuard(self.limits)
        self.gate: ModelGate | None = None  # made on the server's event loop
        self.compiler: SchemaCompiler | None = None
        self._backend: Backend | None = None
        self._model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sllmbo-model")
        self._closing = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._sock = socket.create_server((host, port), family=family, backlog=128)
        except OSError as err:
            raise BackendError(f"cannot listen on {host}:{port}: {err.strerror}",
                               hint="pick another --port") from None
        self._uvicorn = None
        self._thread: threading.Thread | None = None
        self.backend = backend

    @property
    def backend(self) -> Backend | None:
        return self._backend

    @backend.setter
    def backend(self, backend: Backend | None) -> None:
        if self.compiler is not None:
            self.compiler.stop()
        self._backend = backend
        self.compiler = (compiler_for(backend, self.limits.compile_timeout_s)
                         if backend is not None else None)

    @property
    def url(self) -> str:
        """The API root clients pass as ``base_url``, e.g. ``http://127.0.0.1:8000/v1``."""
        host, port = self._sock.getsockname()[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"http://{host}:{port}/v1"

    @property
    def connections(self) -> int:
        """Connections open now (at most ``max_connections``)."""
        return self.guard.open

    def require_backend(self) -> Backend:
        if self._backend is None:
            raise BackendError("the server has no model yet", hint="set ChatServer.backend")
        return self._backend

    async def answer(self, request: ChatRequest, *, max_tokens_given: bool, deadline: float,
                     gone: asyncio.Event) -> Completion:
        """Compile the request's schema (off the model), wait for the model's turn, fit the
        request to the context, generate; ``deadline`` is in loop time (monotonic)."""
        backend = self.require_backend()
        if request.json_schema is None or self.compiler is None:
            return await self._turn(backend, request, max_tokens_given, deadline, gone)
        # Kept in the cache from its compile to the answer, however many schemas other
        # requests put meanwhile: the model must find it compiled, not compile it again
        # where neither the deadline nor the compile bound can stop it.
        with self.compiler.cache.pinned(request.json_schema):
            await self.compiler.ensure(request.json_schema, deadline=deadline, gone=gone)
            return await self._turn(backend, request, max_tokens_given, deadline, gone)

    async def _turn(self, backend: Backend, request: ChatRequest, max_tokens_given: bool,
                    deadline: float, gone: asyncio.Event) -> Completion:
        """Wait for the model, then generate in its thread."""
        assert self.gate is not None
        loop = asyncio.get_running_loop()
        async with self.gate.turn(deadline, gone):
            left = deadline - loop.time()
            if left <= 0:
                raise RequestError("the request's deadline passed while it waited for the "
                                   "model", HTTPStatus.GATEWAY_TIMEOUT)

            def stop() -> bool:  # polled by the backend from the model thread
                return gone.is_set() or self._closing or time.monotonic() >= deadline

            return await loop.run_in_executor(
                self._model_thread, self._generate, backend, request, max_tokens_given, left,
                stop)

    def _generate(self, backend: Backend, request: ChatRequest, max_tokens_given: bool,
                  left: float, stop: object) -> Completion:
        request = self._fit(request, backend, max_tokens_given)
        sampling = request.sampling
        if sampling.max_time_s is None or sampling.max_time_s > left:
            sampling = replace(sampling, max_time_s=left)
        return backend.complete([replace(request, sampling=sampling, cancelled=stop)])[0]

    def _fit(self, request: ChatRequest, backend: Backend, max_tokens_given: bool) -> ChatRequest:
        context = int(backend.context_length)
        chars = sum(len(m["content"]) for m in request.messages)
        if chars > 32 * context:  # no tokenizer packs 32 characters a token: skip counting
            raise RequestError(f"prompt too long: {chars} characters, and the model's context "
                               f"holds {context} tokens")
        return check_fits(request, backend.count_prompt_tokens(request.messages), context,
                          max_tokens_given)

    # -- running -----------------------------------------------------------------------------

    def _server(self):  # type: ignore[no-untyped-def]
        import uvicorn

        from .app import build_app

        config = uvicorn.Config(
            build_app(self), http=guarded_protocol(self.guard), lifespan="off",
            log_config=None, access_log=False, ws="none", server_header=False,
            proxy_headers=False, timeout_keep_alive=5, timeout_graceful_shutdown=2)
        return uvicorn.Server(config)

    def serve_forever(self) -> None:
        """Serve until ``shutdown`` (or Ctrl-C in the main thread)."""
        self.require_backend()
        self._uvicorn = server = self._server()
        asyncio.run(self._serve(server))

    async def _serve(self, server) -> None:  # type: ignore[no-untyped-def]
        self.gate = ModelGate(self.limits.max_waiting)
        await server.serve(sockets=[self._sock])

    def start(self) -> ChatServer:
        """Serve from a background thread (tests, notebooks); returns once it listens and
        its schema compiler has started."""
        self.require_backend()
        if self.compiler is not None:
            self.compiler.wait_ready(120)
        self._thread = threading.Thread(target=self.serve_forever, name="sllmbo-server",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not (self._uvicorn is not None and self._uvicorn.started):
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise BackendError("the server did not start within 30 s")
            time.sleep(0.01)
        return self

    def shutdown(self) -> None:
        self._closing = True
        if self._uvicorn is not None:
            self._uvicorn.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._sock.close()
        self._model_thread.shutdown(wait=False, cancel_futures=True)
        if self.compiler is not None:
            self.compiler.stop()

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()
