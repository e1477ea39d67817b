"""The language model's methods: single-shot answers and the LLM loop.

- ``single-shot``: one batched inference for the budget's candidates (the consensus decode),
  enqueued and scored in order; ``single-shot-score`` and ``single-shot-pick`` rank the
  committed pool by the adapter's scores or its pick ([10/12]).
- ``llm``, ``llm-tpe``: the SLLMBO loop (``sllmbo tune --sampler``), the paper's hybrid as it
  is (its TPE half samples one parameter at a time, at random for 10 trials).
- ``llm-tpe-warm``: the hybrid with its TPE half as a user would configure it: multivariate,
  and random only until the initializer's enqueued configurations are in.
- ``llm-feedback``: the ``feedback`` start, then the adapter's pick given the run's scores.
- ``llm-rank``: the adapter as a learned scorer (a rank-bins adapter): untried pool entries by
  expected improvement over its predicted error-ratio bins, then TPE; its first trial is
  ``recommend --decode rank``'s answer.
- ``-base`` twins run the base model without the adapter.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sllmbo.eval.methods.base import Method, register
from sllmbo.eval.methods.optimizers import tpe_startup_options
from sllmbo.eval.methods.transfer import LearnedRanker, PoolFeedback
from sllmbo.eval.runs import RunContext, RunLog, empty_log, run_study, shared_backend


def _adapter(ctx: RunContext, base: bool) -> str | None:
    return None if base else ctx.settings.adapter


@dataclass(frozen=True, kw_only=True)
class SingleShot(Method):
    """One inference for ``max_budget`` candidates; its answer is stored, so a resumed run
    asks nothing again."""

    kind: str = "llm"
    #: ``recommend``'s decode: None for its default (the consensus), ``score`` or ``pick``.
    decode: str | None = None
    #: The base model without the adapter.
    base: bool = False

    def run(self, ctx: RunContext) -> RunLog:
        budget = ctx.settings.max_budget
        configs, cost = self.answers(ctx)
        notes: list[str] = []
        if len(configs) < budget:
            notes.append(f"{len(configs)} valid distinct candidates of {budget} asked for")
        if not configs:
            notes.append("no valid candidate: the run holds no configuration")
            return empty_log(ctx, notes)
        return run_study(ctx, notes=notes, first_trial_cost=cost, sampler="tpe",
                         n_trials=max(1, len(configs)), enqueue=configs,
                         enqueue_source="single-shot")

    def answers(self, ctx: RunContext) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        from sllmbo.recommend import DECODES, recommend_with

        key = f"{ctx.job.key}:answers"
        stored = ctx.store.run(key)
        decode = self.decode or DECODES[0]
        # Answers stored before the consensus decode (greedy first) are asked again.
        if stored is not None and stored.get("decode") == decode:
            return stored["configs"], stored["cost"]
        from sllmbo.data.resolve import build_card

        task, family, protocol = ctx.task, ctx.family, ctx.protocol
        card = build_card(task, family, ctx.eval_settings(), protocol=protocol)
        space = protocol.space if protocol is not None and protocol.space is not None \
            else family.default_space(task.task_type)
        backend = shared_backend(ctx.settings.llm, _adapter(ctx, self.base))
        candidates = None
        if decode == "score":
            from sllmbo.scoring import pool_candidates

            candidates = pool_candidates(family.name, space)
        llm = ctx.settings.llm
        rec = recommend_with(backend, card, space, ctx.settings.max_budget, seed=ctx.job.seed,
                             temperature=llm.temperature, max_tokens=llm.max_tokens,
                             decode=decode, candidates=candidates)
        cost = {"llm_s": rec.latency_s, "llm_calls": rec.requests,
                "llm_tokens": rec.prompt_tokens + rec.completion_tokens,
                "rejected": rec.rejected, "consensus_of": rec.consensus_of}
        ctx.store.put_run(key, {"configs": rec.configs, "cost": cost, "decode": decode})
        return rec.configs, cost


@dataclass(frozen=True, kw_only=True)
class LLMLoop(Method):
    """``sllmbo tune --sampler llm|llm-tpe`` with the evaluation's backend."""

    kind: str = "llm"
    sampler: str
    base: bool = False
    #: Configure the hybrid's TPE half as a user would (multivariate, random only until the
    #: enqueued initial configurations are in); False: the paper's.
    warm_tpe: bool = False

    def run(self, ctx: RunContext) -> RunLog:
        backend = shared_backend(ctx.settings.llm, _adapter(ctx, self.base))
        options: dict[str, Any] = {"sampler": self.sampler, "backend": backend}
        if self.warm_tpe:
            from sllmbo.samplers import build_sampler

            def factory(**kwargs: Any) -> Any:
                # Built after the initializer enqueued its configurations: count them.
                tpe = tpe_startup_options(enqueued_count(ctx))
                return build_sampler(self.sampler, tpe_options=tpe, **kwargs)

            options["sampler_factory"] = factory
        return run_study(ctx, **options)


def enqueued_count(ctx: RunContext) -> int:
    """Trials of the run's study with fixed parameters (enqueued), waiting or done."""
    import optuna

    from sllmbo.core.storage import open_storage

    study = optuna.load_study(study_name=ctx.job.key, storage=open_storage(ctx.settings.storage))
    return sum("fixed_params" in t.system_attrs for t in study.get_trials(deepcopy=False))


for _base in (False, True):
    _suffix = "-base" if _base else ""
    _who = "the base model" if _base else "the adapter"
    register(SingleShot(name=f"single-shot{_suffix}", base=_base, needs_adapter=not _base,
                        summary=f"{_who}'s single-shot candidates, tried in order"))
    register(LLMLoop(name=f"llm{_suffix}", sampler="llm", base=_base, needs_adapter=not _base,
                     summary=f"the SLLMBO LLM loop with {_who}"))
    register(LLMLoop(name=f"llm-tpe{_suffix}", sampler="llm-tpe", base=_base,
                     needs_adapter=not _base,
                     summary=f"the SLLMBO LLM/TPE hybrid with {_who} (the paper's TPE half)"))
register(SingleShot(name="single-shot-score", decode="score", needs_adapter=True,
                    deterministic=True, summary="the adapter scores every pool entry; best "
                    "first"))
register(SingleShot(name="single-shot-pick", decode="pick", needs_adapter=True,
                    deterministic=True, summary="the adapter picks from the pool in one pass"))
register(PoolFeedback(name="llm-feedback", kind="llm", sampler="llm-feedback",
                      needs_adapter=True, summary="the feedback start, then the adapter's "
                      "pick given the run's scores"))
register(LLMLoop(name="llm-tpe-warm", sampler="llm-tpe", warm_tpe=True, needs_adapter=True,
                 summary="the LLM/TPE hybrid with a multivariate TPE half, random only until "
                 "the initial configurations are in"))
register(LearnedRanker(name="llm-rank", kind="llm", sampler="llm-rank", needs_adapter=True,
                       summary="untried pool entries by the adapter's expected improvement "
                       "given the card and the run's scores, then TPE (a rank-bins adapter)"))
