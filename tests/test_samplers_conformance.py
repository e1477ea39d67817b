"""Both LLM samplers pass Optuna's own sampler conformance suites (scripted valid answers)."""

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
