"""What an evaluation method is, and the one registry that holds them.

A method is an object: its name (as the results spell it), its kind, what the report must know
about it (a ceiling or a competitor, whether it runs the fine-tuned adapter, whether one seed
is enough) and the code that runs it. The harness, the suites, the report and ``sllmbo eval
--help`` read the registry; none of them dispatches on a method's name. A new baseline is one
module that registers a ``Method`` (or a subclass) plus its test.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sllmbo.core.errors import SllmboError

if TYPE_CHECKING:
    from sllmbo.eval.runs import RunContext, RunLog

#: The method families, one module each under ``sllmbo.eval.methods``.
KINDS: dict[str, str] = {
    "defaults": "the library's own defaults, one evaluation",
    "selector": "a ranked list of pool configurations chosen without fitting, tried in order",
    "optimizer": "a sequential optimizer (an Optuna sampler), seeded or not",
    "transfer": "an optimizer that reads the other tasks' scores (the training matrix)",
    "llm": "the language model: single-shot answers or the LLM loop",
}


@dataclass(frozen=True, kw_only=True)
class Method:
    """One evaluation method. Subclasses say how it runs (``run``) and, where the training
    matrix gives it configurations, what it was given (``inputs``)."""

    #: The name in suites, ``--methods``, run keys and results.
    name: str
    #: One of ``KINDS``.
    kind: str
    #: One line for ``sllmbo eval --help`` and the suite docs.
    summary: str
    #: A ceiling (e.g. the pool's oracle): reported beside the others, never a competitor.
    ceiling: bool = False
    #: Runs the fine-tuned adapter (left out, or refused when named, without one).
    needs_adapter: bool = False
    #: Gives the same answer for every seed, so a suite runs it with one seed.
    deterministic: bool = False
    #: The most trials the method can use whatever the suite asks (None: any number).
    budget_cap: int | None = None

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip() or "," in self.name:
            raise SllmboError(f"a method name must be a non-empty word without commas, got "
                              f"{self.name!r}")
        if self.kind not in KINDS:
            raise SllmboError(f"method '{self.name}' has unknown kind '{self.kind}'",
                              hint=f"choose one of: {', '.join(KINDS)}")
        if self.budget_cap is not None and self.budget_cap < 1:
            raise SllmboError(f"method '{self.name}': budget_cap must be >= 1 or None, got "
                              f"{self.budget_cap}")

    @property
    def uses_llm(self) -> bool:
        """Runs a language model (the harness runs these last, and checks the server first)."""
        return self.kind == "llm"

    def run(self, ctx: RunContext) -> RunLog:
        """Run the job of ``ctx`` to ``ctx.settings.max_budget`` trials."""
        raise NotImplementedError(f"method '{self.name}' ({type(self).__name__}) has no run")

    def inputs(self, ctx: RunContext) -> list[dict[str, Any]] | None:
        """The configurations this run takes from the training matrix (a selector's list, an
        optimizer's seeds), as the matrix gives them now; None: nothing. A stored run whose
        inputs the grown matrix changes runs again."""
        return None


# ------------------------------------------------------------------------------ registry

_REGISTRY: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method``; a second method of the same name is refused (results and run keys
    name methods, so two of one name would mix their runs)."""
    if not isinstance(method, Method):
        raise SllmboError(f"register() takes a Method, got {type(method).__name__}")
    existing = _REGISTRY.get(method.name)
    if existing is not None:
        raise SllmboError(
            f"evaluation method '{method.name}' is registered twice: "
            f"{type(existing).__module__}.{type(existing).__name__} and "
            f"{type(method).__module__}.{type(method).__name__}",
            hint="give the new method another name",
        )
    _REGISTRY[method.name] = method
    return method


def unregister(name: str) -> None:
    """Drop ``name`` (tests that register a method of their own clean up with this)."""
    _REGISTRY.pop(name, None)


def get(name: str) -> Method:
    """The method called ``name``; a clear error listing the registered ones otherwise."""
    if name not in _REGISTRY:
        raise SllmboError(f"unknown evaluation method '{name}'",
                          hint=f"choose from: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def names(**where: Any) -> tuple[str, ...]:
    """Registered method names in registration order, those whose attributes equal
    ``where``'s values (e.g. ``names(kind="llm")``, ``names(ceiling=True)``)."""
    unknown = [k for k in where if not hasattr(Method, k)
               and k not in Method.__dataclass_fields__]
    if unknown:
        raise SllmboError(f"names(): methods have no attribute {', '.join(unknown)}")
    return tuple(n for n, m in _REGISTRY.items()
                 if all(getattr(m, k) == v for k, v in where.items()))


def methods() -> Mapping[str, Method]:
    """Every registered method by name (read-only view)."""
    from types import MappingProxyType

    return MappingProxyType(_REGISTRY)
