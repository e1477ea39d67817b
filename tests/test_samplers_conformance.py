"""Both LLM samplers pass Optuna's own sampler conformance suites: on scripted valid answers,
and on a real (tiny, random-weight) transformers model whose every answer is decoded under
the space's JSON Schema."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from llm_scripts import ScriptedBackend
from optuna.samplers import BaseSampler
from optuna.testing.pytest_samplers import (
    BasicSamplerTestCase,
    RelativeSamplerTestCase,
    SingleOnlySamplerTestCase,
)

from sllmbo.samplers import LLMSampler, LLMTPESampler


class TestLLMSamplerConformance(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: LLMSampler(backend=ScriptedBackend(), seed=0)


class TestLLMTPESamplerConformance(
    BasicSamplerTestCase, RelativeSamplerTestCase, SingleOnlySamplerTestCase
):
    @pytest.fixture
    def sampler(self) -> Callable[[], BaseSampler]:
        return lambda: LLMTPESampler(backend=ScriptedBackend(), seed=0, adaptive=True)


class TestLLMSamplerOnARealModel(BasicSamplerTestCase, SingleOnlySamplerTestCase):
    """The same suites with a real model behind the sampler: what it parses, validates and
    records is a transformers answer, not a script's."""

    @pytest.fixture
    def sampler(self, tiny_backend) -> Callable[[], BaseSampler]:
        return lambda: LLMSampler(backend=tiny_backend, seed=0, max_tokens=48)
