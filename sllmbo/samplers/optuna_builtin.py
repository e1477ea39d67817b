"""Optuna's own samplers under their ``sllmbo tune`` names, seeded: ``tpe`` and ``random``
with their defaults, and ``tpe-warm``, TPE after the pool's warm start as the evaluation
runs it (the strongest baseline of zero-shot-30 at 5, 20 and 30 trials on LightGBM)."""

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


def build_tpe_warm(*, seed: int | None = None, space: Any = None, card: Any = None,
                   backend: Any = None, **options: Any) -> TPESampler:
    """TPE once the warm start's enqueued entries are in (``tune`` enqueues them: the
    registry's ``warm_start``): Optuna counts enqueued trials in ``n_startup_trials``, so its
    random start ends with them; multivariate, which TPESampler's docstring reports to
    outperform the independent TPE."""
    from sllmbo.data.pool_select import WARM_START

    _no_options("tpe-warm", options)
    return TPESampler(seed=seed, multivariate=True, n_startup_trials=WARM_START)


def build_random(*, seed: int | None = None, space: Any = None, card: Any = None,
                 backend: Any = None, **options: Any) -> RandomSampler:
    _no_options("random", options)
    return RandomSampler(seed=seed)
