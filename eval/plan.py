"""``EvalPlan``: what one ``sllmbo eval`` asks for (suite x tasks x families x methods x
seeds) and the runs it makes, in a module of its own so that the harness that runs it and the
report that describes it both import it and neither imports the other."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sllmbo.eval.methods import get as get_method
from sllmbo.eval.runs import RunJob, RunSettings, TaskRef
from sllmbo.eval.suites import Suite


@dataclass(frozen=True)
class EvalPlan:
    suite: Suite
    tasks: tuple[TaskRef, ...]
    settings: RunSettings
    skipped_methods: tuple[str, ...] = ()
    #: Methods the results and report cover (every finished run of them, not only the runs of
    #: this invocation): ``--methods llm`` adds llm's runs to a report that keeps the others.
    report_methods: tuple[str, ...] = ()
    #: (task, method) pairs not run: the adapter trained on that task (zero-shot suite).
    excluded: tuple[tuple[str, str], ...] = ()

    def _iter_jobs(self, methods: Sequence[str]) -> Iterator[RunJob]:
        for task in self.tasks:
            for family in self.suite.families:
                for method in methods:
                    if (task.label, method) not in self.excluded:
                        for seed in range(self.suite.seeds_of(method)):
                            yield RunJob(task, family, method, seed)

    def _jobs(self, methods: Sequence[str]) -> list[RunJob]:
        return list(self._iter_jobs(methods))

    def iter_jobs(self) -> Iterator[RunJob]:
        """Every run, cheapest methods first so that results come early, made one at a time
        (a question about the runs need not build them all)."""
        order = {m: i for i, m in enumerate(self.methods)}
        for method in sorted(self.methods,
                             key=lambda m: (get_method(m).uses_llm, order[m])):
            yield from self._iter_jobs((method,))

    @property
    def jobs(self) -> list[RunJob]:
        return list(self.iter_jobs())

    @property
    def methods(self) -> tuple[str, ...]:
        return tuple(m for m in self.suite.methods if m not in self.skipped_methods)

    @property
    def reported_methods(self) -> tuple[str, ...]:
        wanted = self.report_methods or self.suite.methods
        return tuple(m for m in wanted if m not in self.skipped_methods)

    @property
    def report_jobs(self) -> list[RunJob]:
        """The runs the results cover: ``jobs`` widened to ``reported_methods``."""
        return self._jobs(self.reported_methods)

    def to_dict(self) -> dict[str, Any]:
        return {"suite": asdict(self.suite), "tasks": [asdict(t) for t in self.tasks],
                "settings": {**asdict(self.settings), "llm": _masked_llm(self.settings.llm)},
                "skipped_methods": list(self.skipped_methods),
                "excluded": [list(pair) for pair in self.excluded]}


def _masked_llm(llm: Any) -> dict[str, Any]:
    """The LLM options as stored in ``plan.json``: a password in ``--base-url`` is masked."""
    from sllmbo.core.storage import mask_url

    record = asdict(llm)
    if "base_url" in record:
        record["base_url"] = mask_url(record["base_url"])
    return record
