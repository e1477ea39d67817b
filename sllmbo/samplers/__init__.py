"""Optuna samplers driven by an LLM: ``LLMSampler`` and the ``LLMTPESampler`` hybrid."""

from __future__ import annotations

from sllmbo.samplers.llm import LLMSampler

__all__ = ["LLMSampler"]
