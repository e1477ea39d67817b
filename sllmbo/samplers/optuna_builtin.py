"""Optuna's own samplers under their ``sllmbo tune`` names, seeded and with their defaults."""

from __future__ import annotations

from typing import Any

from optuna.samplers import RandomSampler, TPESampler

from sllmbo.core.errors import SllmboError


def _no_options(name: str, options: dict[str, Any]) -> None:
    if options:
        raise SllmboError(f"sampler '{name}' takes no options, got {sorted(options)}")


def build_tpe(*, seed: int | None = None, space: Any = None, card: Any = None,
              backend: Any = None, **options: Any) -> TPESampler:
    _no_options("tpe", options)
    return TPESampler(seed=seed)


def build_random(*, seed: int | None = None, space: Any = None, card: Any = None,
                 backend: Any = None, **options: Any) -> RandomSampler:
    _no_options("random", options)
    return RandomSampler(seed=seed)
