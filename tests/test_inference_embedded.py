"""The real embedded model (SmolLM2-135M-Instruct) under constrained decoding, and its pull."""

from __future__ import annotations

import jsonschema
import pytest
from inference_fixtures import SCHEMAS

from sllmbo.core.home import MARKER, default_model_path, is_pulled
from sllmbo.inference import ChatRequest, SamplingParams, create_backend
from sllmbo.inference.models import pull_default_model

FAMILIES = ["lightgbm", "xgboost", "random_forest", "finite"]


@pytest.fixture(scope="module")
def smollm(embedded_model):
    with create_backend("transformers", llm=str(embedded_model), device="cpu") as backend:
        yield backend


@pytest.mark.slow
def test_twenty_constrained_generations_all_parse_and_fit_their_schema(smollm):
    requests = [
        ChatRequest([{"role": "system", "content": "Answer with JSON only."},
                     {"role": "user", "content": f"Suggest {family} hyperparameters for a "
                      f"dataset with {1000 * (i + 1)} rows and {5 + i} features."}],
                    SCHEMAS[family],
                    SamplingParams(max_tokens=96, temperature=0.0 if i < 4 else 0.8, seed=i))
        for i, family in enumerate(FAMILIES * 5)
    ]
    outs = smollm.complete(requests)
    assert len(outs) == 20
    for request, c in zip(requests, outs, strict=True):
        assert c.finish_reason == "stop", c
        jsonschema.validate(c.parse_json(), request.json_schema)


def test_backend_reads_the_real_models_window(smollm):
    assert smollm.context_length == 8192
    # The shipped adapter rides along by default (merged into the weights at load).
    assert smollm.name == "transformers:smollm2-135m-instruct+default_adapter"


def test_pull_is_idempotent_and_a_folder_without_marker_is_not_pulled(embedded_model, tmp_path):
    marker = embedded_model / MARKER
    before = marker.stat().st_mtime_ns
    assert pull_default_model(embedded_model.parent.parent) == embedded_model
    assert marker.stat().st_mtime_ns == before
    half = default_model_path(tmp_path)
    half.mkdir(parents=True)
    (half / "config.json").write_text("{}")  # an interrupted pull leaves no marker
    assert not is_pulled(tmp_path)
