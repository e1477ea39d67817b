"""``LLMOptions``: how the LLM part of ``tune``'s loop runs, checked once where it is built."""

from __future__ import annotations

import math
from dataclasses import dataclass

from sllmbo.core.errors import SllmboError

SPACE_MODES = ("default", "llm")


@dataclass(frozen=True)
class LLMOptions:
    """How the LLM part of the loop runs (ignored by tpe/random unless ``space == "llm"``).

    ``patience``: completed trials without improvement before stopping; None picks the
    paper's default for the LLM samplers (15 llm, 5 llm-tpe) and no stopping for tpe/random;
    0 turns stopping off. ``adapt_every``: completed trials between LLM space adaptations
    (0: off). ``n_initial``: initial configurations enqueued on a fresh study; ``init``
    where they come from (``sllmbo.initializer.init_source``: auto picks the recommender for
    a fine-tuned backend, the paper's initializer otherwise).
    """

    backend: str = "auto"
    model_path: str | None = None
    adapter: str | None = "default"  # the shipped adapter (embedded model); None: base model
    base_url: str | None = None
    space: str = "default"
    n_initial: int = 5
    init: str = "auto"
    patience: int | None = None
    min_delta: float = 0.0
    adapt_every: int = 0
    p_llm: float = 0.5
    adaptive_p: bool = False
    timeout: float | None = None
    temperature: float = 0.7
    max_tokens: int = 256

    def __post_init__(self) -> None:
        if self.space not in SPACE_MODES:
            raise SllmboError(f"--space must be one of {SPACE_MODES}, got '{self.space}'")
        from sllmbo.initializer import INIT_MODES

        if self.init not in INIT_MODES:
            raise SllmboError(f"--init must be one of {', '.join(INIT_MODES)}, got "
                              f"'{self.init}'")
        for name in ("n_initial", "adapt_every"):
            if getattr(self, name) < 0:
                raise SllmboError(f"--{name.replace('_', '-')} must be >= 0, "
                                  f"got {getattr(self, name)}")
        if self.patience is not None and self.patience < 0:
            raise SllmboError(f"--patience must be >= 0, got {self.patience}")
        if not 0 <= self.p_llm <= 1:
            raise SllmboError(f"--p-llm must be in [0, 1], got {self.p_llm}")
        if self.adaptive_p and not 0 < self.p_llm < 1:
            raise SllmboError(f"--adaptive-p needs 0 < --p-llm < 1 (a share it can move), "
                              f"got {self.p_llm}")
        if not (self.min_delta >= 0 and math.isfinite(self.min_delta)):
            raise SllmboError(f"--min-delta must be a finite number >= 0, got {self.min_delta}")
        if self.timeout is not None and not (self.timeout > 0 and math.isfinite(self.timeout)):
            raise SllmboError(f"--llm-timeout must be > 0 seconds, got {self.timeout}",
                              hint="leave it out to wait as long as the backend does")
        if self.max_tokens < 1:
            raise SllmboError(f"--max-tokens must be >= 1, got {self.max_tokens}")
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):
            raise SllmboError(f"--temperature must be >= 0, got {self.temperature}")
