"""What ``recommend()`` returns, in a module of its own: the decoding paths (``recommend``)
and the scoring paths (``scoring``) both build one, and neither imports the other for it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Recommendation:
    configs: list[dict[str, Any]]
    repairs: list[list[str]] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    #: How many sampled answers the first configuration is the consensus of (0: greedy).
    consensus_of: int = 0
    #: The backend that answered (its ``name``), and why the fast engine did not, if not.
    engine: str = ""
    engine_note: str | None = None
    #: ``decode="score"``: each returned configuration's expected predicted rank decile.
    scores: list[float] = field(default_factory=list)
