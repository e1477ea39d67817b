"""``POST /v1/chat/completions``: one request from its first byte to its answer.

The request's clock starts at its first byte (``connections.GuardedConnection``) and one
deadline covers all of it: the rest of the body (also due ``read_timeout_s`` after that first
byte: 408), the schema compile (``compiler.py``), the wait for the model and generation (504).
From the moment the body is in, a watcher notices the client hanging up, and compiling,
waiting or generating for it stops.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
import uuid
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive

from sllmbo.core.errors import BackendError

from ..base import Completion
from ..http_request import RequestError, parse_body, parse_chat_request
from .connections import CONNECTION_KEY
from .gate import ClientGone
from .served import Served, error_response

log = logging.getLogger("sllmbo.server")

#: Header the OpenAI Python SDK sends with its read timeout: the client's own deadline.
CLIENT_TIMEOUT_HEADER = "X-Stainless-Read-Timeout"


def budget_s(server_timeout_s: float, client_timeout: str | None) -> float:
    """Seconds a request may take: the server's limit, or the client's own if smaller."""
    try:
        asked = float(client_timeout) if client_timeout is not None else math.inf
    except ValueError:
        asked = math.inf
    return min(server_timeout_s, asked) if math.isfinite(asked) and asked > 0 \
        else server_timeout_s


async def chat_completion(server: Served, request: Request) -> Response:

    loop = asyncio.get_running_loop()
    conn = request.scope.get("state", {}).get(CONNECTION_KEY)
    started = getattr(conn, "request_started", None) or loop.time()
    limits = server.limits
    deadline = started + budget_s(limits.request_timeout_s,
                                  request.headers.get(CLIENT_TIMEOUT_HEADER))
    peer = f"{request.client.host}:{request.client.port}" if request.client else "?"
    gone = asyncio.Event()
    try:
        raw = await read_body(request, min(deadline, started + limits.read_timeout_s),
                              limits.read_timeout_s, limits.body.max_body_bytes)
        body = parse_body(raw, limits.body)
        chat = parse_chat_request(body, {server.model_name}, limits.body)
        given = any(body.get(k) is not None for k in ("max_tokens", "max_completion_tokens"))
        watcher = asyncio.ensure_future(_watch(request.receive, gone))
        try:
            completion = await server.answer(chat, max_tokens_given=given, deadline=deadline,
                                             gone=gone)
        finally:
            watcher.cancel()
        if gone.is_set():
            raise ClientGone()
    except ClientGone:
        log.info("client %s went away after %.1f s; its request was dropped", peer,
                 loop.time() - started)
        return Response(status_code=HTTPStatus.NO_CONTENT)  # nobody is there to read it
    except RequestError as err:
        close = {"Connection": "close"} if err.status == HTTPStatus.REQUEST_TIMEOUT else None
        return error_response(err.status, str(err), close)
    except BackendError as err:  # e.g. a schema the decoder cannot compile
        return error_response(HTTPStatus.BAD_REQUEST, err.message)
    except Exception as err:  # the request boundary: answer 500, log one line
        log.error("request from %s failed: %s: %s", peer, type(err).__name__, err,
                  exc_info=bool(os.environ.get("SLLMBO_DEBUG")))
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR,
                              f"the server failed on this request: {type(err).__name__}: {err}")
    if completion.finish_reason == "error":
        if loop.time() >= deadline:
            return error_response(HTTPStatus.GATEWAY_TIMEOUT, f"the request's deadline passed "
                                  f"after {loop.time() - started:.1f} s: {completion.error}")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, completion.error or "failed")
    return JSONResponse(completion_body(completion, server.model_name))


async def read_body(request: Request, due: float, read_timeout_s: float,
                    max_bytes: int) -> bytes:
    """The whole body, which must have a Content-Length of at most ``max_bytes`` (checked
    before reading: 411, 413) and arrive by ``due`` (loop time; 408)."""
    if request.headers.get("transfer-encoding"):
        raise RequestError("send the body with a Content-Length, not chunked",
                           HTTPStatus.LENGTH_REQUIRED)
    try:
        length = int(request.headers.get("content-length", "0"))
    except ValueError:
        raise RequestError("bad Content-Length") from None
    if length > max_bytes:
        raise RequestError(f"the body is {length} bytes; the limit is {max_bytes}",
                           HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    if length <= 0:
        raise RequestError("the body is empty: send a JSON object with a Content-Length",
                           HTTPStatus.LENGTH_REQUIRED)
    loop = asyncio.get_running_loop()
    chunks: list[bytes] = []
    more = True
    while more:
        try:
            message = await asyncio.wait_for(request.receive(), max(0.0, due - loop.time()))
        except asyncio.TimeoutError:
            raise RequestError(f"the body did not arrive within {read_timeout_s:g} s",
                               HTTPStatus.REQUEST_TIMEOUT) from None
        if message["type"] == "http.disconnect":
            raise ClientGone()
        chunks.append(message.get("body", b""))
        more = message.get("more_body", False)
    raw = b"".join(chunks)
    if len(raw) < length:
        raise ClientGone()
    return raw


async def _watch(receive: Receive, gone: asyncio.Event) -> None:
    """Set ``gone`` when the client hangs up (the body has been read: all that can come is
    the disconnect)."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            gone.set()
            return


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
