"""The evaluation's methods, one registry: ``get(name)``, ``names(**attributes)``,
``register(method)``.

One module per family, each registering its methods on import: ``selectors`` (the library
defaults and the pool selectors), ``optimizers`` (Optuna's samplers, seeded or not),
``transfer`` (optimizers that read the training matrix), ``llm`` (the language model's
methods). A new baseline is a ``Method`` registered in its family's module, plus its test.
"""

from sllmbo.eval.methods import llm, optimizers, selectors, transfer  # noqa: F401 - register
from sllmbo.eval.methods.base import KINDS, Method, get, methods, names, register, unregister

__all__ = ["KINDS", "Method", "get", "methods", "names", "register", "unregister"]
