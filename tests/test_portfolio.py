"""Reading the committed portfolios (``sllmbo.eval.portfolio``): the reader's errors, and what
the committed files hold."""

from __future__ import annotations

import json

import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.core.families import FAMILIES
from sllmbo.data.corpus_candidates import config_key
from sllmbo.data.corpus_portfolio import DEFAULT_OUT, PROG
from sllmbo.eval import portfolio as pf

#: The command the committed portfolios were built with, before the builder moved to the
#: data stage ([15/16]); a rebuild records ``PROG``.
HISTORIC_PROG = "python -m sllmbo.eval.portfolio"


def test_loading_errors(tmp_path) -> None:
    with pytest.raises(SllmboError, match="no portfolio"):
        pf.load_portfolio("xgboost", tmp_path)
    (tmp_path / "xgboost.json").write_text("{not json")
    with pytest.raises(SllmboError, match="not valid JSON"):
        pf.load_portfolio("xgboost", tmp_path)
    (tmp_path / "xgboost.json").write_text(json.dumps({"format": pf.FORMAT,
                                                       "family": "mlp", "portfolio": []}))
    with pytest.raises(SllmboError, match="not a sllmbo-portfolio"):
        pf.load_portfolio("xgboost", tmp_path)
    with pytest.raises(SllmboError, match="unknown model family"):
        pf.load_portfolio("svm", tmp_path)


# -- the committed portfolios --------------------------------------------------------------


@pytest.mark.parametrize("family", list(FAMILIES))
def test_committed_portfolios(family: str) -> None:
    record = pf.read_portfolio(family)
    configs = pf.load_portfolio(family)
    assert len(configs) >= 10
    space = FAMILIES[family].default_space()
    assert all(space.contains(c) for c in configs)
    assert len({config_key(c) for c in configs}) == len(configs)
    prov = record["provenance"]
    used = prov["candidate_tasks"] + prov["evaluation_tasks"] + [
        e["source_task"] for e in record["portfolio"]]
    # Built before [9/12] moved 17 datasets to the held-out split; it serves the default
    # suite only, so it must hold none of that suite's held-out tasks.
    from sllmbo.eval.suites import DEFAULT_SUITE_TASKS

    assert used and not set(used) & set(DEFAULT_SUITE_TASKS)
    assert not set(prov["evaluation_tasks"]) & set(DEFAULT_SUITE_TASKS)
    assert not set(prov["evaluation_tasks"]) & set(prov["candidate_tasks"])
    assert prov["command"].startswith((HISTORIC_PROG + " ", PROG + " "))
    assert prov["corpus_trials"] > 0 and prov["settings"]["seed"] == 0
    curve = [e["portfolio_regret"] for e in record["portfolio"]]
    assert curve == sorted(curve, reverse=True)


def test_the_builder_writes_where_the_reader_reads() -> None:
    assert DEFAULT_OUT == pf.PORTFOLIO_DIR
