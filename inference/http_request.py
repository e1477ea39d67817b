"""Parsing and bounding an OpenAI chat-completions request body (``http_server``'s input).

Every value a hostile or buggy client can send is checked here, before anything reaches the
model: the body's size and nesting, the JSON Schema's size, nesting and enum lengths (a
100k-value enum held the model for minutes), and each sampling value's type and range
(``1e400``, ``2**70`` and ``"nan"`` used to crash the handler). Pure functions: they test
without a server or a model.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import Any

from .base import SEED_MAX, SEED_MIN, ChatRequest, SamplingParams

#: Tokens generated when the body names no ``max_tokens`` (cut to what the context leaves).
DEFAULT_MAX_TOKENS = 256
#: Seeds accepted: a signed or unsigned 64-bit integer, as vLLM takes them. A negative one is
#: read as its unsigned 64-bit twin (``-1`` is ``2**64 - 1``; ``SamplingParams`` does it, for
#: every backend, see ``base.SEED_MIN``).
SEED_RANGE = (SEED_MIN, SEED_MAX)
#: Most digits an integer literal in a body may have (Python refuses over 4300 with a
#: ValueError; no field sllmbo reads needs more than 20).
MAX_INTEGER_DIGITS = 100


class RequestError(ValueError):
    """A request the server rejects; ``status`` is the HTTP status (400 unless said)."""

    def __init__(self, message: str, status: HTTPStatus = HTTPStatus.BAD_REQUEST) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class BodyLimits:
    """How large a request may be. Defaults are far above what sllmbo's own clients send (a
    prompt of a few thousand tokens, a schema of a few kB) and far below what hurts."""

    #: Largest body in bytes; larger is 413.
    max_body_bytes: int = 4 * 1024 * 1024
    #: Deepest nesting of arrays/objects anywhere in the body.
    max_depth: int = 32
    #: Largest ``response_format`` schema, in bytes of compact JSON.
    max_schema_bytes: int = 64 * 1024
    #: Deepest nesting inside the schema (sllmbo's deepest, the initializer's, is 7).
    max_schema_depth: int = 16
    #: Most ``enum`` values in the whole schema (16k values took 8 s and 200 MB to decode).
    max_enum_values: int = 1024

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not (isinstance(value, int) and value >= 1):
                raise ValueError(f"BodyLimits.{name} must be an integer >= 1, got {value!r}")


def _no_constant(name: str) -> Any:
    raise RequestError(f"the body holds {name}, which is not a JSON number")


def _bounded_int(text: str) -> int:
    digits = len(text.lstrip("-"))
    if digits > MAX_INTEGER_DIGITS:
        raise RequestError(f"the body holds an integer of {digits} digits; the limit is "
                           f"{MAX_INTEGER_DIGITS}")
    return int(text)


def parse_body(raw: bytes, limits: BodyLimits) -> Any:
    """The body as JSON data; 400 for what is not JSON, holds NaN/Infinity or an integer of
    more than ``MAX_INTEGER_DIGITS`` digits, or nests deeper than ``limits.max_depth``."""
    try:
        data = json.loads(raw, parse_constant=_no_constant, parse_int=_bounded_int)
    except RequestError:
        raise
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RequestError(f"the body is not JSON: {err}") from None
    except ValueError as err:  # a number Python will not convert, should one slip through
        raise RequestError(f"the body holds a value that cannot be read: {err}") from None
    except RecursionError:
        raise RequestError(f"the body is nested deeper than {limits.max_depth} levels") from None
    depth = nesting_depth(data)
    if depth > limits.max_depth:
        raise RequestError(f"the body is nested {depth} levels deep; the limit is "
                           f"{limits.max_depth}")
    return data


def nesting_depth(value: Any) -> int:
    """How many arrays/objects deep ``value`` goes (a scalar is 0); iterative, so any depth
    that parsed can be measured."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = (item.values() if isinstance(item, dict)
                    else item if isinstance(item, list) else None)
        if children is None:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_chat_request(body: Any, served: set[str],
                       limits: BodyLimits | None = None) -> ChatRequest:
    """An OpenAI chat-completions body as a ``ChatRequest``; ``RequestError`` when unusable.

    A body without ``max_tokens`` gets ``DEFAULT_MAX_TOKENS``; the server then fits it to the
    context (``check_fits``)."""
    limits = limits or BodyLimits()
    if not isinstance(body, dict):
        raise RequestError("the body must be a JSON object")
    model = body.get("model")
    if model is not None and model not in served:
        raise RequestError(f"the model {_show(model)} does not exist; served: {sorted(served)}",
                           HTTPStatus.NOT_FOUND)
    messages = body.get("messages")
    if (not isinstance(messages, list) or not messages
            or not all(isinstance(m, dict) and isinstance(m.get("role"), str)
                       and isinstance(m.get("content"), str) for m in messages)):
        raise RequestError("messages must be a non-empty list of {role, content} strings")
    n = body.get("n")
    if n is not None and (type(n) is not int or n != 1):  # 1.0 and true are not the integer 1
        raise RequestError(f"only n=1 is supported (a JSON integer); got {_show(n)}")
    if body.get("stream"):
        raise RequestError("stream=true is not supported")
    return ChatRequest(messages=[{"role": m["role"], "content": m["content"]} for m in messages],
                       json_schema=_schema_of(body.get("response_format"), limits),
                       sampling=sampling_of(body))


def sampling_of(body: dict[str, Any]) -> SamplingParams:
    """The sampling settings of ``body``, each a JSON number of the right kind and range."""
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else \
        "max_tokens"
    max_tokens = _integer(body, key, DEFAULT_MAX_TOKENS, 1, None)
    seed = _integer(body, "seed", None, *SEED_RANGE)
    return SamplingParams(max_tokens=max_tokens,
                          temperature=_real(body, "temperature", 1.0, 0.0, None),
                          top_p=_real(body, "top_p", 1.0, 0.0, 1.0, low_open=True), seed=seed)


def _integer(body: dict[str, Any], key: str, default: int | None, low: int,
             high: int | None) -> Any:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)  # 64.0 is an integer in JSON's eyes
    upper = "" if high is None else f" and <= {high}"
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (
            high is not None and value > high):
        raise RequestError(f"{key} must be an integer >= {low}{upper}; got {_show(value)}")
    return value


def _real(body: dict[str, Any], key: str, default: float, low: float, high: float | None,
          low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    bad = (isinstance(value, bool) or not isinstance(value, int | float)
           or not math.isfinite(value) or value < low or (low_open and value == low)
           or (high is not None and value > high))
    if bad:
        span = (f"in ({low:g}, {high:g}]" if low_open else f"in [{low:g}, {high:g}]") \
            if high is not None else f">= {low:g}"
        raise RequestError(f"{key} must be {span}, a finite JSON number; got {_show(value)}")
    return float(value)


def _show(value: Any) -> str:
    """A rejected value, short: a huge string or number would flood the error message."""
    text = json.dumps(value) if not isinstance(value, float) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _schema_of(response_format: Any, limits: BodyLimits) -> dict[str, Any] | None:
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
        check_schema_size(schema, limits)
        return schema
    raise RequestError(f"unknown response_format type {_show(kind)}; use text, json_object or "
                       "json_schema")


def check_schema_size(schema: dict[str, Any], limits: BodyLimits) -> None:
    """400 for a schema too large, too deep or with too many enum values to decode with."""
    size = len(json.dumps(schema, separators=(",", ":")))
    if size > limits.max_schema_bytes:
        raise RequestError(f"the JSON Schema is {size} bytes; the limit is "
                           f"{limits.max_schema_bytes}", HTTPStatus.REQUEST_ENTITY_TOO_LARGE)
    depth = nesting_depth(schema)
    if depth > limits.max_schema_depth:
        raise RequestError(f"the JSON Schema is nested {depth} levels deep; the limit is "
                           f"{limits.max_schema_depth}")
    enums = _enum_values(schema)
    if enums > limits.max_enum_values:
        raise RequestError(f"the JSON Schema lists {enums} enum values; the limit is "
                           f"{limits.max_enum_values}")


def _enum_values(schema: Any) -> int:
    """All values under every ``enum`` keyword of ``schema`` (iterative walk)."""
    total, stack = 0, [schema]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            enum = item.get("enum")
            if isinstance(enum, list):
                total += len(enum)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def check_fits(request: ChatRequest, prompt_tokens: int, context_length: int,
               max_tokens_given: bool) -> ChatRequest:
    """The request with ``max_tokens`` fitted to the context, as vLLM does: 400 "prompt too
    long" when the prompt fills the context, 400 when an explicit ``max_tokens`` does not fit
    beside it; an unset one is cut to what is left."""
    if prompt_tokens >= context_length:
        raise RequestError(f"prompt too long: {prompt_tokens} tokens, and the model's context "
                           f"holds {context_length} (prompt and answer together)")
    room = context_length - prompt_tokens
    wanted = request.sampling.max_tokens
    if wanted <= room:
        return request
    if max_tokens_given:
        raise RequestError(f"max_tokens is too large: the prompt takes {prompt_tokens} "
                           f"tokens, so at most {room} of the model's {context_length} "
                           f"are left for the answer, and {wanted} were asked for")
    return replace(request, sampling=replace(request.sampling, max_tokens=room))
