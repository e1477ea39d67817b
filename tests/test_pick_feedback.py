"""The few-shot pick: the prompt carries the pool entries tried so far with their scores on
this task, the model names the next one (prompts, matrix-pick-feedback examples, the scorer's
masking of tried entries, and the validation method that feeds back only tried scores)."""

from __future__ import annotations

import pytest
from test_pick import NamingBackend

from sllmbo.core.prompts import PICK_NAMES, pick_messages, render_tried


def test_tried_scores_are_scaled_among_themselves_in_trial_order():
    assert render_tried([(2, 5.0), (0, 9.0), (1, 6.0)]) == "C=0.0, A=1.0, B=0.2"
    assert render_tried([(0, 3.0), (1, None), (2, float("nan"))]) == \
        "A=0.0, B=failed, C=failed"
    assert render_tried([(0, 1.0), (1, 1.0)]) == "A=0.0, B=0.0"


def test_the_few_shot_prompt_extends_the_card_only_prompt():
    bare = pick_messages(None, "lightgbm-abc", 60)[-1]["content"]
    shot = pick_messages(None, "lightgbm-abc", 60, [(3, 0.5), (7, 0.2)])[-1]["content"]
    assert "No trials have been run" in bare and "No trials" not in shot
    assert "D=1.0, H=0.0" in shot and "untried" in shot
    with pytest.raises(ValueError, match="outside the pool"):
        pick_messages(None, "lightgbm-abc", 60, [(60, 0.1)])


def feedback_rows(family: str, histories: int = 3):
    from sllmbo.data.matrix_examples import MatrixOptions, matrix_examples
    from sllmbo.eval.zeroshot_baselines import load_selectors

    selectors = load_selectors()
    variant = sorted(selectors.scores(family).index)[0]
    rows = [r for r in matrix_examples(options=MatrixOptions(
        top_k=0, score_per_variant=0, feedback_histories=histories), variants=[variant])
        if r["family"] == family]
    return selectors, variant, rows


def test_feedback_examples_start_from_the_portfolio_and_never_target_a_tried_entry():
    from sllmbo.data.matrix_examples import FEEDBACK_START
    from sllmbo.data.pool_select import portfolio, task_type_of

    selectors, variant, rows = feedback_rows("lightgbm")
    assert {r["kind"] for r in rows} == {"matrix-pick-feedback"}
    pool = selectors.pools["lightgbm"].configs
    ids = [c.id for c in pool]
    histories: dict[str, list] = {}
    for r in rows:
        histories.setdefault(r["prompt"][-1]["content"], []).append(r)
    assert len(histories) == 3
    folio = portfolio(selectors.cards, selectors.scores("lightgbm"),
                      task_type_of(selectors.cards[variant]), FEEDBACK_START)
    first = next(iter(histories))
    assert render_tried([(ids.index(c), selectors.scores("lightgbm").loc[variant, c])
                         for c in folio]) in first
    for text, group in histories.items():
        tried = text.split("worst): ", 1)[1].split(". Which", 1)[0]
        names = {part.split("=")[0] for part in tried.split(", ")}
        targets = [r["completion"][0]["content"] for r in group]
        assert not names & set(targets)
        assert len(targets) == len(set(targets)) == len(ids) - len(names)
        assert sum(r["weight"] for r in group) == pytest.approx(len(group), abs=1e-3)
        best_untried = min((c for c in ids if PICK_NAMES[ids.index(c)] not in names),
                           key=lambda c: selectors.scores("lightgbm").loc[variant, c])
        assert group[0]["completion"][0]["content"] == PICK_NAMES[ids.index(best_untried)]


def test_the_scorer_never_picks_a_tried_entry():
    from sllmbo.data.matrix import POOL_FILE
    from sllmbo.data.pool import read_pools
    from sllmbo.scoring import feedback_pick, pick_probabilities

    pool = read_pools(POOL_FILE)["lightgbm"]
    backend = NamingBackend("cAz")
    assert feedback_pick(backend, None, pool, []) == PICK_NAMES.index("c")
    tried = [(PICK_NAMES.index("c"), 1.0), (PICK_NAMES.index("A"), 2.0)]
    assert feedback_pick(backend, None, pool, tried) == PICK_NAMES.index("z")
    probs = pick_probabilities(backend, None, pool, tried)
    assert probs[PICK_NAMES.index("c")] == 0 and probs.sum() == pytest.approx(1.0)
    assert "c=0.0, A=1.0" in backend.prompts[-1][-1]["content"]


def test_the_validation_method_feeds_back_only_the_scores_of_tried_entries():
    from sllmbo.eval.validate_adapter import pick_feedback_picks
    from sllmbo.eval.zeroshot_baselines import load_selectors

    class Watched(dict):
        def __init__(self, data):
            super().__init__(data)
            self.read: set[str] = set()

        def get(self, key, default=None):
            self.read.add(key)
            return super().get(key, default)

        def __getitem__(self, key):
            self.read.add(key)
            return super().__getitem__(key)

    selectors = load_selectors()
    pool = selectors.pools["xgboost"]
    variant = sorted(selectors.scores("xgboost").index)[0]
    observed = Watched({k: float(v) for k, v in
                        selectors.scores("xgboost").loc[variant].items()})
    folio = [pool.configs[5].id, pool.configs[9].id]
    picks = pick_feedback_picks(NamingBackend("cAz"), variant, "xgboost", pool, 5, folio,
                                observed)
    ids = [c.id for c in pool.configs]
    assert picks == folio + [ids[PICK_NAMES.index(n)] for n in "cAz"]
    assert observed.read == set(picks[:4])


@pytest.mark.parametrize("flags, message", [
    (["--matrix-feedback", "-1"], "feedback_histories"),
    (["--matrix-feedback", "2", "--matrix-feedback-temperature", "0"], "feedback_temperature"),
])
def test_bad_feedback_options_exit_2_before_anything_is_written(tmp_path, capsys, flags,
                                                                message):
    from sllmbo.cli import main

    out = tmp_path / "out"
    with pytest.raises(SystemExit) as info:
        main(["data", "build", "--matrix", "data/matrix/train.csv.gz", "--out", str(out),
              *flags])
    assert info.value.code == 2
    assert message in capsys.readouterr().err and not out.exists()


def test_llm_feedback_in_tune_checks_its_backend_before_any_trial(capsys):
    from sllmbo.cli import main

    with pytest.raises(SystemExit) as info:
        main(["tune", "--task", "diabetes", "--sampler", "llm-feedback", "--backend", "openai",
              "--base-url", "http://127.0.0.1:9/v1", "--n-trials", "1"])
    assert info.value.code == 2
    assert "cannot reach the model server" in capsys.readouterr().err
