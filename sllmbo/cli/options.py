"""Options shared by several commands, defined once (same flag, same help everywhere)."""

from __future__ import annotations

import typer

from sllmbo.core.families import FAMILIES

TASK = typer.Option(None, "--task", help="A built-in task (see `sllmbo tasks`).")
DATA = typer.Option(None, "--data", help="Your CSV or Parquet file.")
TARGET = typer.Option(None, "--target", help="Column to predict (with --data).")
TASK_TYPE = typer.Option(
    None, "--task-type", help="regression | classification (with --data; inferred if unset)."
)
#: ``--model`` names the ML model family (the flag keeps its name; the API says ``family``).
FAMILY = typer.Option("lightgbm", "--model", help="The ML model family: " + " | ".join(FAMILIES))

BACKEND = typer.Option(
    "auto", "--backend",
    help="LLM backend: auto (llama.cpp on a CPU where it is built, else transformers) | "
    "llamacpp | transformers | vllm | openai.")
#: ``--model-path`` names the LLM (the API says ``llm`` / ``llm_path``).
LLM_PATH = typer.Option(
    None,
    "--model-path",
    help="Local model folder or name (default: the embedded model); with --backend openai, "
    "the served model or LoRA name (default: the served LoRA adapter, else the server's first model).",
)
ADAPTER = typer.Option(
    "default", "--adapter",
    help="LoRA adapter folder or name; 'default': the shipped fine-tuned adapter (with the "
    "embedded model), 'none': the base model.",
)
BASE_URL = typer.Option(
    None, "--base-url", help="OpenAI-compatible server root (with --backend openai)."
)

# The LLM loop's settings: `tune` and `eval` take the same flags into one `LLMOptions`.
N_INITIAL = typer.Option(
    5, "--n-initial", help="LLM initializer configurations enqueued (llm samplers)."
)
INIT = typer.Option(
    "auto", "--init",
    help="Where the initial configurations come from: initializer (the paper's prompt) | "
    "recommender (`sllmbo recommend`, its consensus first) | auto: the recommender for a "
    "fine-tuned adapter, else the initializer.",
)
P_LLM = typer.Option(0.5, "--p-llm", help="LLM share of trials for llm-tpe.")
LLM_TIMEOUT = typer.Option(
    None, "--llm-timeout", help="Seconds to wait for one LLM answer before using TPE."
)
TEMPERATURE = typer.Option(0.7, "--temperature", help="Sampling temperature of the LLM.")
MAX_TOKENS = typer.Option(256, "--max-tokens", help="Longest LLM answer, in tokens.")
