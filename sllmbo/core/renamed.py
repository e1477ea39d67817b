"""Keywords renamed in the Python API, still taken under their old names for now.

``model`` used to name both the ML model family (``tune``, ``recommend``) and the LLM
(``create_backend``); those keywords are now ``family`` and ``llm`` / ``llm_path``. As
Hugging Face does for a renamed keyword, the old one still works: it is mapped to the new
one with a ``FutureWarning`` that names the new keyword, and passing both is a
``RenamedKeywordError`` (a ``TypeError``, as Python's own for a keyword given twice).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from sllmbo.core.errors import SllmboError

F = TypeVar("F", bound=Callable[..., Any])


class RenamedKeywordError(SllmboError, TypeError):
    """A call passed a keyword under both its old and its new name."""


def renamed_kwargs(**renames: str) -> Callable[[F], F]:
    """Decorate a function whose keyword ``old`` became ``new`` (``renamed_kwargs(old="new")``):
    a call passing ``old=`` gets a ``FutureWarning`` and runs as if it had passed ``new=``;
    passing both (``new`` by keyword or in its position) raises ``RenamedKeywordError``.

    >>> @renamed_kwargs(model="family")
    ... def tune(task, family="lightgbm"):
    ...     return family
    >>> import warnings
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     tune("diabetes", model="xgboost")
    'xgboost'
    >>> caught[0].category.__name__
    'FutureWarning'
    """

    def decorate(func: F) -> F:
        # Where a new keyword may also arrive by position (absent: keyword only, or **options).
        params = list(inspect.signature(func).parameters.values())
        positions = {p.name: i for i, p in enumerate(params)
                     if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)}
        name = func.__qualname__

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old not in kwargs:
                    continue
                if new in kwargs or positions.get(new, len(args)) < len(args):
                    raise RenamedKeywordError(
                        f"{name}() got both {old}= and {new}=",
                        hint=f"{old}= is the old name of {new}=: pass only {new}=")
                warnings.warn(f"{name}(): the keyword {old}= is renamed {new}= and will be "
                              f"removed; pass {new}= instead", FutureWarning, stacklevel=2)
                kwargs[new] = kwargs.pop(old)
            return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate
