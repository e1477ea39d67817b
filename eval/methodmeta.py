"""What the report needs to know about a method or a task, in one place: which methods are
ceilings (reported, never competitors), which run an LLM and which baselines they must beat,
and a task's subtype. The methods' facts come from their registry (``sllmbo.eval.methods``),
the subtype from the registered task facts.
"""

from __future__ import annotations

from collections.abc import Sequence

from sllmbo.data.pool_select import dataset_of


def ceilings(methods: Sequence[str]) -> list[str]:
    """The methods of ``methods`` that are ceilings (``oracle-pool``), in their order."""
    from sllmbo.eval.methods import get

    return [m for m in methods if get(m).ceiling]


def llm_versus(methods: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(LLM method, the baselines it must beat) for each LLM method in ``methods``."""
    from sllmbo.eval.methods import get
    from sllmbo.eval.suites import ZERO_SHOT_BASELINES

    return [(m, ZERO_SHOT_BASELINES) for m in methods if get(m).uses_llm]


def subtype_of(task: str) -> str:
    """``binary``, ``multiclass`` or ``regression`` from the registered task's facts (the
    number of classes of its labels, not of its name: ``shuttle_sensors`` is the binary
    rare-vs-normal version of the shuttle data); ``unknown`` for a task without facts."""
    from sllmbo.data.facts import registered_facts

    facts = registered_facts(dataset_of(task))
    if facts is None:
        return "unknown"
    if facts.get("task_type") == "regression":
        return "regression"
    return "binary" if int(facts.get("n_classes") or 0) == 2 else "multiclass"
