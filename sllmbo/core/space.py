"""Typed search spaces: the one description of "what may be tuned" shared by Optuna, the
LLM (as a JSON Schema for constrained decoding) and the validator of LLM answers.

LLM output is data: ``validate`` reports every problem precisely, ``clip`` repairs what can be
repaired (type coercion, clipping into range, snapping to a near categorical choice) and lists
each repair so callers can count them.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from sllmbo.core.errors import ConfigError, SpaceError, shown

Choice = str | int | float | bool | None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class FloatParam:
    """A real-valued hyperparameter in [low, high]; ``log`` samples on a log scale."""

    name: str
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_bounds(self.name, self.low, self.high, self.log)
        object.__setattr__(self, "low", float(self.low))
        object.__setattr__(self, "high", float(self.high))


@dataclass(frozen=True)
class IntParam:
    """An integer hyperparameter in [low, high]; ``log`` samples on a log scale."""

    name: str
    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        for bound_name, bound in (("low", self.low), ("high", self.high)):
            if not _is_number(bound) or float(bound) != int(bound):
                raise SpaceError(
                    f"{bound_name} of integer parameter '{self.name}' must be a whole number, "
                    f"got {shown(bound)}"
                )
        _check_bounds(self.name, self.low, self.high, self.log)
        object.__setattr__(self, "low", int(self.low))
        object.__setattr__(self, "high", int(self.high))


@dataclass(frozen=True)
class CategoricalParam:
    """A hyperparameter taking one of ``choices`` (JSON scalars: str, int, float, bool, None)."""

    name: str
    choices: tuple[Choice, ...]

    def __post_init__(self) -> None:
        choices = tuple(self.choices)
        if not choices:
            raise SpaceError(f"categorical parameter '{self.name}' needs at least one choice")
        for choice in choices:
            if choice is not None and not isinstance(choice, (str, int, float, bool)):
                raise SpaceError(
                    f"choices of '{self.name}' must be JSON scalars, got {shown(choice)} "
                    f"({type(choice).__name__})"
                )
        if len(set(map(repr, choices))) != len(choices):
            raise SpaceError(f"choices of '{self.name}' repeat a value: {list(choices)}")
        object.__setattr__(self, "choices", choices)


Param = FloatParam | IntParam | CategoricalParam


def _check_bounds(name: str, low: Any, high: Any, log: bool) -> None:
    if not _is_number(low) or not _is_number(high):
        raise SpaceError(f"bounds of '{name}' must be numbers, got low={shown(low)}, high={shown(high)}")
    if not (math.isfinite(low) and math.isfinite(high)):
        raise SpaceError(f"bounds of '{name}' must be finite, got low={low}, high={high}")
    if low > high:
        raise SpaceError(
            f"low must be <= high for '{name}', got low={low}, high={high}",
            hint="swap the bounds or fix the typo in the space definition",
        )
    if log and low <= 0:
        raise SpaceError(
            f"a log-scale range needs low > 0 for '{name}', got low={low}",
            hint="use a small positive lower bound (e.g. 1e-8) or drop log=True",
        )


@dataclass(frozen=True)
class SearchSpace:
    """An ordered set of named hyperparameters."""

    params: tuple[Param, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [p.name for p in self.params]
        duplicated = sorted({n for n in names if names.count(n) > 1})
        if duplicated:
            raise SpaceError(f"parameter names must be unique, repeated: {duplicated}")
        object.__setattr__(self, "params", tuple(self.params))

    # -- container protocol -------------------------------------------------------------
    def __iter__(self) -> Iterator[Param]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def __contains__(self, name: object) -> bool:
        return any(p.name == name for p in self.params)

    def __getitem__(self, name: str) -> Param:
        for param in self.params:
            if param.name == name:
                return param
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [p.name for p in self.params]

    # -- conversions --------------------------------------------------------------------
    def to_optuna(self) -> dict[str, Any]:
        """Optuna distributions keyed by name (``trial.suggest_*`` equivalents)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        out: dict[str, Any] = {}
        for p in self.params:
            if isinstance(p, FloatParam):
                out[p.name] = FloatDistribution(p.low, p.high, log=p.log)
            elif isinstance(p, IntParam):
                out[p.name] = IntDistribution(p.low, p.high, log=p.log)
            else:
                out[p.name] = CategoricalDistribution(list(p.choices))
        return out

    @classmethod
    def from_optuna(cls, distributions: Mapping[str, Any]) -> SearchSpace:
        """Build a space from Optuna distributions (e.g. a foreign study's trial params)."""
        from optuna.distributions import (
            CategoricalDistribution,
            FloatDistribution,
            IntDistribution,
        )

        params: list[Param] = []
        for name, dist in distributions.items():
            if isinstance(dist, FloatDistribution):
                params.append(FloatParam(name, dist.low, dist.high, log=dist.log))
            elif isinstance(dist, IntDistribution):
                params.append(IntParam(name, dist.low, dist.high, log=dist.log))
            elif isinstance(dist, CategoricalDistribution):
                params.append(CategoricalParam(name, tuple(dist.choices)))
            else:
                raise SpaceError(
                    f"unsupported Optuna distribution for '{name}': {type(dist).__name__}"
                )
        return cls(tuple(params))

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """A JSON-able mapping ``name -> {type, low, high, log} | {type, choices}``."""
        out: dict[str, dict[str, Any]] = {}
        for p in self.params:
            if isinstance(p, CategoricalParam):
                out[p.name] = {"type": "categorical", "choices": list(p.choices)}
            else:
                kind = "float" if isinstance(p, FloatParam) else "int"
                out[p.name] = {"type": kind, "low": p.low, "high": p.high, "log": p.log}
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Mapping[str, Any]]) -> SearchSpace:
        """Inverse of :meth:`to_dict`; raises ``SpaceError`` with the offending entry."""
        if not isinstance(data, Mapping):
            raise SpaceError(f"a search space must be a mapping of name -> range, got {data!r}")
        params: list[Param] = []
        for name, spec in data.items():
            if not isinstance(spec, Mapping):
                raise SpaceError(f"entry '{name}' must be a mapping, got {spec!r}")
            kind = spec.get("type")
            try:
                if kind == "float":
                    params.append(
                        FloatParam(name, spec["low"], spec["high"], bool(spec.get("log", False)))
                    )
                elif kind == "int":
                    params.append(
                        IntParam(name, spec["low"], spec["high"], bool(spec.get("log", False)))
                    )
                elif kind == "categorical":
                    params.append(CategoricalParam(name, tuple(spec["choices"])))
                else:
                    raise SpaceError(
                        f"type of '{name}' must be float, int or categorical, got {kind!r}"
                    )
            except KeyError as missing:
                raise SpaceError(f"entry '{name}' lacks the key {missing}") from None
        return cls(tuple(params))

    def to_json_schema(self) -> dict[str, Any]:
        """A JSON Schema for one configuration: every key required, nothing extra."""
        properties: dict[str, Any] = {}
        for p in self.params:
            if isinstance(p, FloatParam):
                properties[p.name] = {"type": "number", "minimum": p.low, "maximum": p.high}
            elif isinstance(p, IntParam):
                properties[p.name] = {"type": "integer", "minimum": p.low, "maximum": p.high}
            else:
                properties[p.name] = {"enum": list(p.choices)}
        return {
            "type": "object",
            "properties": properties,
            "required": self.names,
            "additionalProperties": False,
        }

    # -- checking LLM answers -----------------------------------------------------------
    def validate(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``config`` as plain Python values, or raise ``ConfigError`` listing every
        problem (missing, unknown, wrong type, out of range, not a choice)."""
        problems = self._problems(config)
        if problems:
            raise ConfigError(problems)
        return {p.name: _plain(p, config[p.name]) for p in self.params}

    def contains(self, config: Mapping[str, Any]) -> bool:
        return not self._problems(config)

    def _problems(self, config: Mapping[str, Any]) -> list[str]:
        if not isinstance(config, Mapping):
            return [f"a configuration must be a JSON object, got {type(config).__name__}"]
        problems = [f"unknown parameter '{k}'" for k in config if k not in self]
        for p in self.params:
            if p.name not in config:
                problems.append(f"missing parameter '{p.name}'")
                continue
            value = config[p.name]
            if isinstance(p, CategoricalParam):
                if not any(_same_choice(value, c) for c in p.choices):
                    problems.append(f"'{p.name}' must be one of {list(p.choices)}, got {shown(value)}")
            elif not _is_number(value) or not _finite(value):
                problems.append(f"'{p.name}' must be a finite number, got {shown(value)}")
            elif isinstance(p, IntParam) and float(value) != int(value):
                problems.append(f"'{p.name}' must be an integer, got {shown(value)}")
            elif not (p.low <= value <= p.high):
                problems.append(f"'{p.name}' must be in [{p.low}, {p.high}], got {shown(value)}")
        return problems

    def clip(self, config: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
        """Repair a configuration where that is unambiguous and list each repair.

        Numbers (also numeric strings) are clipped into range and rounded for integers;
        a categorical value matching a choice case-insensitively or numerically is snapped to
        it; unknown keys are dropped. Missing parameters and values that cannot be repaired
        raise ``ConfigError``.
        """
        if not isinstance(config, Mapping):
            raise ConfigError([f"a configuration must be a JSON object, got {type(config).__name__}"])
        repairs = [f"dropped unknown parameter '{k}'" for k in config if k not in self]
        fixed: dict[str, Any] = {}
        problems: list[str] = []
        for p in self.params:
            if p.name not in config:
                problems.append(f"missing parameter '{p.name}'")
                continue
            value = config[p.name]
            if isinstance(p, CategoricalParam):
                match = next((c for c in p.choices if _same_choice(value, c)), _NO_MATCH)
                if match is _NO_MATCH:
                    match = next((c for c in p.choices if _loose_choice(value, c)), _NO_MATCH)
                    if match is _NO_MATCH:
                        problems.append(
                            f"'{p.name}' must be one of {list(p.choices)}, got {shown(value)}"
                        )
                        continue
                    repairs.append(f"snapped '{p.name}' from {shown(value)} to {shown(match)}")
                fixed[p.name] = match
                continue
            number = _as_number(value)
            if number is None:
                problems.append(f"'{p.name}' must be a finite number, got {shown(value)}")
                continue
            clipped = min(max(number, p.low), p.high)
            if isinstance(p, IntParam):
                clipped = round(clipped)
                clipped = min(max(clipped, p.low), p.high)
            else:
                clipped = float(clipped)
            if not (_is_number(value) and clipped == value):
                repairs.append(f"clipped '{p.name}' from {shown(value)} to {shown(clipped)}")
            fixed[p.name] = clipped
        if problems:
            raise ConfigError(problems)
        return fixed, repairs

    # -- adapting ranges ----------------------------------------------------------------
    def restricted_to(self, limits: SearchSpace) -> SearchSpace:
        """This space with each range intersected with ``limits`` (the family's hard limits).

        A range that falls wholly outside its limit is replaced by the limit; parameters
        unknown to ``limits`` raise ``SpaceError``.
        """
        params: list[Param] = []
        for p in self.params:
            if p.name not in limits:
                raise SpaceError(f"'{p.name}' is not a tunable parameter here: {limits.names}")
            hard = limits[p.name]
            if type(hard) is not type(p):
                raise SpaceError(
                    f"'{p.name}' must be {type(hard).__name__}, got {type(p).__name__}"
                )
            if isinstance(p, CategoricalParam):
                assert isinstance(hard, CategoricalParam)
                kept = tuple(c for c in p.choices if any(_same_choice(c, h) for h in hard.choices))
                params.append(CategoricalParam(p.name, kept or hard.choices))
                continue
            assert isinstance(hard, (FloatParam, IntParam))
            low, high = max(p.low, hard.low), min(p.high, hard.high)
            if low > high:
                low, high = hard.low, hard.high
            params.append(type(p)(p.name, low, high, log=hard.log))  # type: ignore[call-arg]
        return SearchSpace(tuple(params))

    def fitted_within(self, limits: SearchSpace) -> tuple[SearchSpace, list[str]]:
        """A user's space inside ``limits``: each range clipped to its limit, its own log flag
        kept; returns the space and one note per clip. A range or choice set wholly outside
        its limit raises ``SpaceError`` (a user's range is never silently replaced)."""
        fitted = self.restricted_to(limits)
        params: list[Param] = []
        notes: list[str] = []
        for mine, got in zip(self.params, fitted.params, strict=True):
            hard = limits[mine.name]
            if isinstance(mine, CategoricalParam):
                assert isinstance(got, CategoricalParam)
                if not any(any(_same_choice(c, h) for h in hard.choices)  # type: ignore[union-attr]
                           for c in mine.choices):
                    raise SpaceError(f"no choice of '{mine.name}' is allowed: "
                                     f"{list(mine.choices)} vs {list(hard.choices)}")  # type: ignore[union-attr]
                if got.choices != mine.choices:
                    notes.append(f"'{mine.name}': dropped choices outside {list(got.choices)}")
                params.append(got)
                continue
            assert isinstance(mine, (FloatParam, IntParam)) and isinstance(hard, (FloatParam, IntParam))
            if mine.high < hard.low or mine.low > hard.high:
                raise SpaceError(
                    f"range of '{mine.name}' [{mine.low}, {mine.high}] lies outside its hard "
                    f"limit [{hard.low}, {hard.high}]",
                    hint="choose a range that overlaps the limit",
                )
            low, high = max(mine.low, hard.low), min(mine.high, hard.high)
            if (low, high) != (mine.low, mine.high):
                notes.append(f"'{mine.name}': [{mine.low}, {mine.high}] clipped to the hard "
                             f"limit: [{low}, {high}]")
            params.append(type(mine)(mine.name, low, high, log=mine.log))  # type: ignore[call-arg]
        return SearchSpace(tuple(params)), notes

    def replace(self, params: Iterable[Param]) -> SearchSpace:
        """A copy with the given parameters swapped in by name (order kept)."""
        new = {p.name: p for p in params}
        unknown = sorted(set(new) - set(self.names))
        if unknown:
            raise SpaceError(f"cannot replace unknown parameters {unknown}")
        return SearchSpace(tuple(new.get(p.name, p) for p in self.params))


_NO_MATCH = object()


def _same_choice(value: Any, choice: Choice) -> bool:
    # bool is an int subclass: True must not match 1.
    if isinstance(value, bool) or isinstance(choice, bool):
        return isinstance(value, bool) and isinstance(choice, bool) and value is choice
    if _is_number(value) and _is_number(choice):
        return float(value) == float(choice)
    return value == choice and type(value) is type(choice)


def _loose_choice(value: Any, choice: Choice) -> bool:
    if isinstance(value, str) and isinstance(choice, str):
        return value.strip().lower() == choice.strip().lower()
    if isinstance(value, str) and choice is None:
        return value.strip().lower() in {"none", "null"}
    if isinstance(value, str) and isinstance(choice, bool):
        return value.strip().lower() == str(choice).lower()
    if isinstance(value, str) and _is_number(choice):
        number = _as_number(value)
        return number is not None and float(number) == float(choice)
    return False


def _as_number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not _is_number(value):
        # numpy scalars expose item(); anything else is not a number.
        item = getattr(value, "item", None)
        if item is None:
            return None
        value = item()
        if not _is_number(value):
            return None
    return value if _finite(value) else None


def _finite(value: float) -> bool:
    """``math.isfinite`` that says False, not ``OverflowError``, for an int too large for a
    float (an LLM may answer with a 400-digit number)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _plain(param: Param, value: Any) -> Any:
    """Plain ``int``/``float`` (never numpy scalars or bools) for Optuna and JSON."""
    if isinstance(param, IntParam):
        return int(value)
    if isinstance(param, FloatParam):
        return float(value)
    return next(c for c in param.choices if _same_choice(value, c))
