"""What the routes need of the server (``ChatServer`` is it), and OpenAI-shaped error bodies:
the routes (``app``, ``chat``) import this, and the server imports the routes, with no circle.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Protocol

from fastapi.responses import JSONResponse

if TYPE_CHECKING:
    from ..base import Backend, ChatRequest, Completion
    from .limits import ServerLimits


class Served(Protocol):
    """The model being served, its name and key, and the limits its requests run under."""

    model_name: str
    api_key: str | None
    limits: ServerLimits

    def require_backend(self) -> Backend: ...

    async def answer(self, request: ChatRequest, *, max_tokens_given: bool, deadline: float,
                     gone: asyncio.Event) -> Completion: ...


def error_response(status: int, message: str, headers: dict[str, str] | None = None
                   ) -> JSONResponse:
    """OpenAI's error body: ``{"error": {"message", "type", "code"}}``."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": int(status)}},
                        status_code=int(status), headers=headers)
