"""The OpenAI-compatible server around any ``Backend``: its public names, kept in one place.

The server itself is FastAPI on uvicorn (vLLM's stack), one module per job under
``inference/server/``; ``ChatServer``'s docstring lists what it defends against.
"""

from __future__ import annotations

from .http_request import RequestError, parse_chat_request
from .server.chat import completion_body
from .server.chat_server import ChatServer
from .server.limits import ServerLimits, check_exposure, is_loopback

__all__ = [
    "ChatServer",
    "RequestError",
    "ServerLimits",
    "check_exposure",
    "completion_body",
    "is_loopback",
    "parse_chat_request",
]
