"""The shipped task facts match the data, and a card built from them is the loaded one's."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from sllmbo.core.families import get_family
from sllmbo.core.objective import EvalSettings
from sllmbo.data.facts import FACTS_FILE, registered_facts
from sllmbo.data.facts_build import all_facts
from sllmbo.data.resolve import build_card, registered_card, resolve_task


def test_the_shipped_facts_are_what_the_data_gives():
    shipped = json.loads(FACTS_FILE.read_text())
    assert shipped == all_facts(), "rebuild with: python -m sllmbo.data.facts_build"


@pytest.mark.parametrize(("name", "family"), [("diabetes", "lightgbm"),
                                              ("titanic_survival", "xgboost")])
def test_a_card_from_facts_equals_the_card_from_the_data(name, family):
    settings = EvalSettings(seed=0)
    fam = get_family(family)
    loaded = build_card(resolve_task(name, None, None, None), fam, settings)
    assert registered_card(name.upper().replace("_", "-"), fam, settings) == loaded


def test_unknown_names_have_no_facts():
    assert registered_facts("no_such_task") is None
    assert registered_card("no_such_task", get_family("lightgbm"), EvalSettings()) is None


def test_recommend_for_a_registered_task_reads_no_data():
    code = ("import sys, json; from sllmbo.recommend import recommend_task\n"
            "from sllmbo.inference.base import Backend, Completion\n"
            "class B(Backend):\n"
            "    def complete(self, requests):\n"
            "        return [Completion(json.dumps({'learning_rate': 0.05, 'n_estimators': 300,"
            " 'num_leaves': 31, 'subsample': 0.8, 'colsample_bytree': 0.8, 'reg_alpha': 1e-3,"
            " 'reg_lambda': 1e-3, 'min_child_samples': 20}), 'stop') for _ in requests]\n"
            "rec = recommend_task('bike_sharing', 'lightgbm', 1, B())\n"
            "assert rec.configs, rec.rejected\n"
            "print(sorted(m for m in ('pandas', 'sklearn') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
