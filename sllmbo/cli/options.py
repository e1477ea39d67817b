"""Options shared by several commands, defined once (same flag, same help everywhere)."""

from __future__ import annotations

import typer

TASK = typer.Option(None, "--task", help="A built-in task (see `sllmbo tasks`).")
DATA = typer.Option(None, "--data", help="Your CSV or Parquet file.")
TARGET = typer.Option(None, "--target", help="Column to predict (with --data).")
TASK_TYPE = typer.Option(
    None, "--task-type", help="regression | classification (with --data; inferred if unset)."
)
MODEL = typer.Option("lightgbm", "--model", help="lightgbm | xgboost | random_forest | mlp")

BACKEND = typer.Option("transformers", "--backend", help="LLM backend: transformers | vllm | openai.")
MODEL_PATH = typer.Option(
    None,
    "--model-path",
    help="Local model folder or name (default: the embedded model); with --backend openai, "
    "the served model or LoRA name (default: the server's first).",
)
ADAPTER = typer.Option(None, "--adapter", help="LoRA adapter folder or name.")
BASE_URL = typer.Option(
    None, "--base-url", help="OpenAI-compatible server root (with --backend openai)."
)
