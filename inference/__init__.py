"""LLM backends behind one interface, the embedded default model, and serving.

Importing this package is cheap: torch, transformers, openai and vllm load only when a backend
of that kind is created.
"""

from __future__ import annotations

from .base import Backend, ChatRequest, Completion, FinishReason, SamplingParams
from .factory import KINDS, create_backend

__all__ = ["KINDS", "Backend", "ChatRequest", "Completion", "FinishReason", "SamplingParams",
           "create_backend"]
