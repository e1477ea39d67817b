"""Reading the committed ``portfolio`` baseline: an ordered list of configurations per model
family (``eval/portfolios/<family>.json``), tried in order by ``sllmbo eval``.

The data stage builds these files from the training tasks' corpus studies
(:mod:`sllmbo.data.corpus_portfolio`, ``make portfolio``; the method is in its docstring);
the evaluation only reads them, so the folder and its reader live here::

    load_portfolio("lightgbm")   # the configurations, first: try first
    read_portfolio("lightgbm")   # the whole record, with scores and provenance
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import FAMILIES, get_family
from sllmbo.data.corpus_portfolio import FORMAT

#: Where the committed portfolios live (one JSON per family).
PORTFOLIO_DIR = Path(__file__).resolve().parent / "portfolios"


def read_portfolio(family: str, folder: str | Path | None = None) -> dict[str, Any]:
    """The whole record of ``family``'s portfolio (configurations, scores, provenance)."""
    name = get_family(family).name
    path = Path(folder or PORTFOLIO_DIR) / f"{name}.json"
    if not path.is_file():
        raise SllmboError(f"no portfolio for {name} at {path}",
                          hint="build it with `make portfolio`")
    try:
        record = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SllmboError(f"{path} is not valid JSON: {err}",
                          hint="rebuild it with `make portfolio`") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT or \
            record.get("family") != name or not isinstance(record.get("portfolio"), list):
        raise SllmboError(f"{path} is not a {FORMAT} portfolio of {name}",
                          hint="rebuild it with `make portfolio`")
    return record


def load_portfolio(family: str, folder: str | Path | None = None) -> list[dict[str, Any]]:
    """The ordered configurations of ``family``'s committed portfolio (first: try first),
    each checked against the family's default space."""
    record = read_portfolio(family, folder)
    space = FAMILIES[record["family"]].default_space()
    return [space.validate(entry["config"]) for entry in record["portfolio"]]
