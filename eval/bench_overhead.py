"""Benchmark: the seconds a trial spends outside model fitting under TPE and under ``llm-tpe``.

Why: the LLM's cost to a study is what it adds per trial, not its latency alone; this runs both
samplers on one real task with the same settings and compares (the fast-path and CPU-engine
benchmarks report it).
"""

from __future__ import annotations

import statistics
from typing import Any


def llm_tpe_overhead(llm: str | None, adapter: str, *, n_trials: int,
                     task: str = "bike_sharing", kind: str = "transformers") -> dict[str, Any]:
    """Seconds a trial spends outside model fitting (sampling, LLM, bookkeeping) under TPE and
    under ``llm-tpe`` (p = 0.5, the LLM ``llm`` with ``adapter``, the fast path), on one real
    task: the mean over the trials the sampler chose (early stopping off, so all ``n_trials``
    run), the mean LLM seconds of the trials the LLM answered (``mean_llm_trial_s``); the
    initializer's one call is ``setup_llm_s``."""
    import tempfile

    import optuna

    from sllmbo.eval.runs import setup_cost, trial_rows
    from sllmbo.inference.factory import create_backend
    from sllmbo.samplers.attrs import SOURCE
    from sllmbo.tune import LLMOptions, tune

    backend = create_backend(kind, llm=llm, adapter=adapter, device="cpu")
    # Stopping off: every one of the n_trials runs, so the LLM's share of them is p = 0.5.
    options = LLMOptions(patience=0)
    out: dict[str, Any] = {"task": task, "n_trials": n_trials, "backend": backend.name}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            storage = f"sqlite:///{tmp}/overhead.db"
            for sampler in ("tpe", "llm-tpe"):
                tune(task, family="lightgbm", sampler=sampler, n_trials=n_trials,
                     storage=storage, study_name=sampler, n_folds=3, max_rows=1000,
                     score_test=False, progress=False, llm=options,
                     backend=backend if sampler != "tpe" else None)
                study = optuna.load_study(study_name=sampler, storage=storage)
                source = {t.number: t.user_attrs.get(SOURCE) for t in study.trials}
                # The trials the sampler chose (not the initializer's enqueued ones).
                rows = [r for r in trial_rows(study) if source[r.number] != "initial"]
                overhead = [r.llm_s + r.other_s for r in rows]
                out[sampler] = {"mean_overhead_s": statistics.mean(overhead),
                                "median_overhead_s": statistics.median(overhead),
                                "mean_fit_s": statistics.mean(r.fit_s for r in rows),
                                "sampled_trials": len(rows),
                                "llm_trials": sum(r.llm_calls > 0 for r in rows),
                                "mean_llm_trial_s": (statistics.mean(
                                    r.llm_s for r in rows if r.llm_calls > 0)
                                    if any(r.llm_calls > 0 for r in rows) else None),
                                "setup_llm_s": setup_cost(study)["llm_s"]}
    finally:
        backend.close()
    out["extra_per_trial_s"] = (out["llm-tpe"]["mean_overhead_s"]
                                - out["tpe"]["mean_overhead_s"])
    return out

