"""Shared fixtures. Inference: the embedded model and tiny random Llamas (tests/inference_fixtures.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def embedded_model() -> Path:
    """The real SmolLM2-135M-Instruct folder, pulled once if missing (idempotent)."""
    from sllmbo.inference.models import pull_default_model

    return pull_default_model()


@pytest.fixture(scope="session")
def tiny_model(embedded_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer random-weight Llama with the embedded model's tokenizer and chat template."""
    from inference_fixtures import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny") / "tiny-llama", embedded_model)


@pytest.fixture(scope="session")
def tiny_backend(tiny_model: Path):
    """A CPU ``TransformersBackend`` on ``tiny_model`` shared by the tests that only read it."""
    from sllmbo.inference.transformers_backend import TransformersBackend

    backend = TransformersBackend(tiny_model, device="cpu")
    yield backend
    backend.close()
