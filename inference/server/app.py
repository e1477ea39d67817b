"""The FastAPI application: routes, the API key, and OpenAI-shaped error bodies.

Routes: ``POST /v1/chat/completions`` (``chat.py``), ``GET /v1/models``, ``GET /health``.
The key is checked by a plain ASGI middleware, on the headers alone, so a request without it
is answered 401 before a byte of its body is read. Every error, the framework's own 404 and
405 included, has OpenAI's body: ``{"error": {"message", "type", "code"}}``.
"""

from __future__ import annotations

import hmac
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from .chat import chat_completion
from .served import Served, error_response

UNAUTHORIZED = ("Unauthorized: send the server's API key as 'Authorization: Bearer KEY' "
                "(clients read $SLLMBO_API_KEY)")


def key_matches(api_key: str | None, header: str | None) -> bool:
    """Whether an ``Authorization`` header carries the key (constant-time compare)."""
    if api_key is None:
        return True
    return hmac.compare_digest((header or "").encode(), f"Bearer {api_key}".encode())


class KeyCheck:
    """401 for a ``/v1`` request without the key, decided on its headers, body unread."""

    def __init__(self, app: ASGIApp, api_key: str | None) -> None:
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] == "http" and self.api_key is not None
                and scope["path"].startswith("/v1")):
            header = next((v.decode("latin-1") for k, v in scope["headers"]
                           if k == b"authorization"), None)
            if not key_matches(self.api_key, header):
                reply = error_response(HTTPStatus.UNAUTHORIZED, UNAUTHORIZED,
                                       {"WWW-Authenticate": "Bearer"})
                await reply(scope, receive, send)
                return
        await self.app(scope, receive, send)


def build_app(server: Served) -> FastAPI:
    app = FastAPI(title="sllmbo", openapi_url=None, docs_url=None, redoc_url=None)
    app.add_middleware(KeyCheck, api_key=server.api_key)

    @app.exception_handler(HTTPException)
    async def framework_error(request: Request, exc: HTTPException) -> JSONResponse:
        message = (f"no route {request.url.path}" if exc.status_code == 404
                   else f"{request.method} {request.url.path}: {exc.detail}")
        return error_response(exc.status_code, message)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        backend = server.require_backend()
        entry: dict[str, Any] = {"id": server.model_name, "object": "model", "created": 0,
                                 "owned_by": "sllmbo",
                                 "max_model_len": int(backend.context_length)}
        if backend.fine_tuned:  # listed as vLLM lists a LoRA module
            entry["parent"] = backend.name
        return {"object": "list", "data": [entry]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        return await chat_completion(server, request)

    return app
