"""Backend for any OpenAI-compatible chat server: ``vllm serve``, ``sllmbo serve``, others.

The schema travels as ``response_format={"type": "json_schema", ...}``: vLLM 0.26 honours that
and silently ignores the old ``guided_json`` field, so nothing else is sent, and every answer
is re-validated here because a server may still ignore the schema. A batch is sent as
concurrent requests (the server batches them itself). A server that cannot be reached raises
``BackendError``; a request the server rejects becomes a ``finish_reason="error"`` completion.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sllmbo.core.errors import BackendError
from sllmbo.core.storage import mask_url, redact

from .base import Backend, ChatRequest, Completion, signed_seed
from .constrained import classify_finish

_SERVE_HINT = "start one with `sllmbo serve` (or `vllm serve MODEL`) and pass its --base-url"


#: Context assumed when neither the caller nor the server says (a small model's window).
ASSUMED_CONTEXT = 2048


class OpenAIBackend(Backend):
    """Chat completions over HTTP with the ``openai`` client.

    Args:
        base_url: the server's API root, e.g. ``http://127.0.0.1:8000/v1``.
        model: the served model (or LoRA module) name; None asks ``/v1/models`` on first use
            and takes the served LoRA adapter if there is one, else the first model.
        api_key_env: environment variable holding the key; "EMPTY" when unset (vLLM's
            convention for servers started without ``--api-key``).
        timeout_s: per-request timeout in seconds; ``max_retries`` bounded retries follow.
        max_concurrency: requests of one batch in flight at once.
        constrained: send each request's schema (re-validation happens either way).
        context_length: the served model's window, for prompt budgeting; None asks the
            server once (``max_model_len`` in ``/v1/models``, which vLLM and ``sllmbo serve``
            report) and assumes 2,048 tokens where it is not reported.
    """

    def __init__(self, base_url: str, *, model: str | None = None,
                 api_key_env: str = "SLLMBO_API_KEY", timeout_s: float = 120.0,
                 max_retries: int = 2, max_concurrency: int = 16, constrained: bool = True,
                 context_length: int | None = None) -> None:
        import openai

        if not base_url.startswith(("http://", "https://")):
            raise BackendError(f"base_url must start with http:// or https://, got "
                               f"{mask_url(base_url)!r}",
                               hint="e.g. --base-url http://127.0.0.1:8000/v1")
        if timeout_s <= 0:
            raise BackendError(f"timeout_s must be > 0, got {timeout_s}")
        self.base_url = base_url.rstrip("/")
        #: What messages, names and stored attributes show: the URL with its password masked.
        self.shown_url = mask_url(self.base_url) or self.base_url
        self._model = model
        self.constrained = constrained
        self.max_concurrency = max(1, max_concurrency)
        self._context_length = context_length
        self._adapters: list[str] = []
        self._parents: dict[str, str] = {}
        self._listed: dict[str, int | None] | None = None  # /v1/models, asked at most once
        self._client = openai.OpenAI(base_url=self.base_url,
                                     api_key=os.environ.get(api_key_env) or "EMPTY",
                                     timeout=timeout_s, max_retries=max_retries)
        self.name = f"openai:{model or '?'}@{self.shown_url}"

    @property
    def model(self) -> str:
        """The served model name (asked of the server once when not given)."""
        if self._model is None:
            self._model = self._default_served_model()
            self.name = f"openai:{self._model}@{self.shown_url}"
        return self._model

    @property
    def fine_tuned(self) -> bool:  # type: ignore[override]
        """Whether the model asked is a served LoRA module (vLLM lists it with a parent)."""
        model = self.model
        self._served_models()
        return model in self._parents

    @property
    def context_length(self) -> int:  # type: ignore[override]
        """The served model's window: as given, else as the server reports it (asked once)."""
        if self._context_length is None:
            served = self._served_models()
            reported = served.get(self.model) or served.get(self._parents.get(self.model, ""))
            self._context_length = reported or ASSUMED_CONTEXT
        return self._context_length

    def _served_models(self) -> dict[str, int | None]:
        """Served model names -> ``max_model_len`` where the server reports it (LoRA modules,
        which vLLM lists with a ``parent``, are remembered in ``_adapters``). The server is
        asked once; later calls answer from that listing."""
        import openai

        if self._listed is not None:
            return self._listed
        try:
            models = list(self._client.models.list())
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise BackendError(f"cannot reach the model server at {self.shown_url}: {self._redact(err)}",
                               hint=_SERVE_HINT) from None
        except openai.APIError as err:
            raise BackendError(f"{self.shown_url}/models failed: {self._redact(err)}",
                               hint="pass the served model name with --model-path") from None
        except (ValueError, TypeError, AttributeError, KeyError) as err:  # not JSON, wrong shape
            raise BackendError(f"{self.shown_url}/models did not answer a model list: "
                               f"{type(err).__name__}",
                               hint="pass the served model name with --model-path") from None
        out: dict[str, int | None] = {}
        self._adapters, self._parents = [], {}
        for m in models:
            name = getattr(m, "id", None)
            if not isinstance(name, str) or not name:
                continue  # an entry without a usable name cannot be asked for
            extra = getattr(m, "model_extra", None)
            extra = extra if isinstance(extra, dict) else {}
            out[name] = _positive_int(extra.get("max_model_len"))
            parent = extra.get("parent")
            if isinstance(parent, str) and parent:  # a LoRA module: its window is its base's
                self._adapters.append(name)
                self._parents[name] = parent
        self._listed = out
        return out

    def _default_served_model(self) -> str:
        """The served LoRA adapter when there is one (the fine-tuned model is the point of
        serving one), else the first served model."""
        served = list(self._served_models())
        if not served:
            raise BackendError(f"the server at {self.shown_url} serves no model", hint=_SERVE_HINT)
        return self._adapters[0] if self._adapters else served[0]

    def _redact(self, err: BaseException) -> str:
        """The client's error text with the URL's credentials masked (httpx may quote it)."""
        return redact(str(err), self.base_url)

    def complete(self, requests: Sequence[ChatRequest]) -> list[Completion]:
        if not requests:
            return []
        model = self.model
        workers = min(self.max_concurrency, len(requests))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sllmbo-http") as pool:
            return list(pool.map(lambda r: self._one(r, model), requests))

    def close(self) -> None:
        self._client.close()

    def _one(self, request: ChatRequest, model: str) -> Completion:
        import openai

        s = request.sampling
        kwargs: dict[str, Any] = {"model": model, "messages": request.messages,
                                  "max_tokens": s.max_tokens, "temperature": s.temperature,
                                  "top_p": s.top_p}
        if s.seed is not None:  # signed: vLLM's server takes at most 2**63 - 1
            kwargs["seed"] = signed_seed(s.seed)
        if self.constrained and request.json_schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "answer", "schema": request.json_schema, "strict": True},
            }
        start = time.perf_counter()
        try:
            response = self._client.chat.completions.create(**kwargs)
        except (openai.APIConnectionError, openai.APITimeoutError) as err:
            raise BackendError(f"cannot reach the model server at {self.shown_url}: {self._redact(err)}",
                               hint=_SERVE_HINT) from None
        except openai.APIStatusError as err:
            return _failed(f"server answered HTTP {err.status_code}: "
                           f"{redact(_message(err), self.base_url)}", start)
        except openai.APIResponseValidationError as err:
            return _failed("the server's reply is not an OpenAI chat completion: "
                           f"{self._redact(err)}", start)
        except (ValueError, TypeError, AttributeError, KeyError) as err:  # not JSON, wrong shape
            return _failed("the server's reply is not an OpenAI chat completion: "
                           f"{type(err).__name__}", start)
        return _to_completion(response, request.json_schema, start)


def _to_completion(response: Any, schema: dict[str, Any] | None, start: float) -> Completion:
    latency = time.perf_counter() - start
    choices = getattr(response, "choices", None)
    if not isinstance(choices, list) or not choices:
        return _failed("the server's reply has no choices", start)
    message = getattr(choices[0], "message", None)
    text = getattr(message, "content", None)
    if text is None:
        text = ""
    if not isinstance(text, str):
        return _failed(f"the server's answer is a {type(text).__name__}, not text", start)
    usage = getattr(response, "usage", None)
    prompt_tokens = _positive_int(getattr(usage, "prompt_tokens", 0)) or 0
    completion_tokens = _positive_int(getattr(usage, "completion_tokens", 0)) or 0
    finish = getattr(choices[0], "finish_reason", None)
    reason, error = classify_finish(finish if isinstance(finish, str) else None, text, schema,
                                    "the server")
    return Completion(text=text, finish_reason=reason, prompt_tokens=prompt_tokens,
                      completion_tokens=completion_tokens, latency_s=latency, error=error)


def _positive_int(value: Any) -> int | None:
    """``value`` when the server sent a sane count (an int in 1..2**31), else None."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 2**31:
        return None
    return value


def _failed(message: str, start: float) -> Completion:
    return Completion(text="", finish_reason="error", latency_s=time.perf_counter() - start,
                      error=message)


def _message(err: Any) -> str:
    body = getattr(err, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        if "message" in body:
            return str(body["message"])
    return str(getattr(err, "message", err))
