"""A small OpenAI-compatible server around any ``Backend`` (the transformers one in practice).

For CPU users, who have no vLLM, and for tests of ``OpenAIBackend`` against a real server.
Routes: ``POST /v1/chat/completions`` (honours ``response_format`` json_schema / json_object),
``GET /v1/models``, ``GET /health``. Loopback by default. Generation is serialised by a lock:
an in-process model is not thread-safe, and on CPU parallel requests would only compete for
the same cores. Standard library only (``http.server``): nothing to install, nothing to tune.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from sllmbo.errors import BackendError

from .base import Backend, ChatRequest, Completion, SamplingParams

#: Largest request body accepted, in bytes (a chat prompt with a long history is far smaller).
MAX_BODY_BYTES = 4 * 1024 * 1024


class RequestError(ValueError):
    """A request the server rejects with HTTP 400 / 404."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


def parse_chat_request(body: dict[str, Any], served: set[str]) -> ChatRequest:
    """An OpenAI chat-completions body as a ``ChatRequest``; ``RequestError`` when unusable."""
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    model = body.get("model")
    if model is not None and model not in served:
        raise RequestError(f"the model {model!r} does not exist; served: {sorted(served)}",
                           HTTPStatus.NOT_FOUND)
    messages = body.get("messages")
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                       and isinstance(m.get("content"), str) for m in messages)):
        raise RequestError("messages must be a non-empty list of {role, content} strings")
    if body.get("n", 1) != 1:
        raise RequestError("only n=1 is supported")
    if body.get("stream"):
        raise RequestError("stream=true is not supported")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or 256
    try:
        sampling = SamplingParams(
            max_tokens=int(max_tokens), temperature=float(body.get("temperature", 1.0)),
            top_p=float(body.get("top_p", 1.0)),
            seed=int(body["seed"]) if body.get("seed") is not None else None)
    except (TypeError, ValueError) as err:
        raise RequestError(f"bad sampling settings: {err}") from None
    return ChatRequest(messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                       json_schema=_schema_of(body.get("response_format")), sampling=sampling)


def _schema_of(response_format: Any) -> dict[str, Any] | None:
    if response_format is None:
        return None
    if not isinstance(response_format, dict):
        raise RequestError("response_format must be an object")
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "object"}
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise RequestError("response_format.json_schema.schema must be an object")
        return schema
    raise RequestError(f"unknown response_format type {kind!r}; use text, json_object or "
                       "json_schema")


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


class ChatServer:
    """Serves ``backend`` under ``model_name`` on ``host:port`` (port 0 picks a free one)."""

    def __init__(self, backend: Backend, *, model_name: str, host: str = "127.0.0.1",
                 port: int = 8000) -> None:
        self.backend = backend
        self.model_name = model_name
        self._lock = threading.Lock()
        try:
            self._httpd = ThreadingHTTPServer((host, port), _handler_for(self))
        except OSError as err:
            raise BackendError(f"cannot listen on {host}:{port}: {err.strerror}",
                               hint="pick another --port") from None
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The API root clients pass as ``base_url``, e.g. ``http://127.0.0.1:8000/v1``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def answer(self, request: ChatRequest) -> Completion:
        with self._lock:
            return self.backend.complete([request])[0]

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def start(self) -> ChatServer:
        """Serve from a background thread (tests, notebooks)."""
        self._thread = threading.Thread(target=self.serve_forever, name="sllmbo-server",
                                        daemon=True)
        self._thread.start()
        return self

    def shutdown(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> ChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _handler_for(server: ChatServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            """Quiet by default: one line per request would drown the CLI's own output."""

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok"})
            elif self.path.rstrip("/") == "/v1/models":
                entry = {"id": server.model_name, "object": "model", "created": 0,
                         "owned_by": "sllmbo",
                         "max_model_len": int(server.backend.context_length)}
                if server.backend.fine_tuned:  # listed as vLLM lists a LoRA module
                    entry["parent"] = server.backend.name
                self._send(HTTPStatus.OK, {"object": "list", "data": [entry]})
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")

        def do_POST(self) -> None:
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._error(HTTPStatus.NOT_FOUND, f"no route {self.path}")
                return
            try:
                request = parse_chat_request(self._read_json(), {server.model_name})
            except RequestError as err:
                self._error(err.status, str(err))
                return
            try:
                completion = server.answer(request)
            except BackendError as err:  # e.g. a schema the decoder cannot compile
                self._error(HTTPStatus.BAD_REQUEST, err.message)
                return
            if completion.finish_reason == "error":
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, completion.error or "failed")
                return
            self._send(HTTPStatus.OK, completion_body(completion, server.model_name))

        def _read_json(self) -> Any:
            try:
                length = int(self.headers.get("Content-Length", "0"))
            except ValueError:
                raise RequestError("bad Content-Length") from None
            if not 0 < length <= MAX_BODY_BYTES:
                raise RequestError(f"the body must be 1..{MAX_BODY_BYTES} bytes, got {length}")
            try:
                return json.loads(self.rfile.read(length))
            except (json.JSONDecodeError, UnicodeDecodeError) as err:
                raise RequestError(f"the body is not JSON: {err}") from None

        def _error(self, status: HTTPStatus, message: str) -> None:
            kind = "invalid_request_error" if status < 500 else "server_error"
            self._send(status, {"error": {"message": message, "type": kind,
                                          "code": int(status)}})

        def _send(self, status: HTTPStatus, payload: dict[str, Any]) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    return Handler
