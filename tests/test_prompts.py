"""Prompt rendering and history summaries are pure, deterministic and budgeted."""

from __future__ import annotations

import pytest
from loop_helpers import CARD, LIMITS, SPACE

from sllmbo.core import history, prompts
from sllmbo.core.history import TrialRecord


@pytest.mark.parametrize(
    "value, text",
    [(0.123456, "0.1235"), (1234567.0, "1.235e+06"), (3, "3"), (True, "true"),
     (None, "null"), ("gbdt", "gbdt"), (1e-08, "1e-08"), (float("nan"), "nan")],
)
def test_numbers_are_shown_with_four_significant_digits(value, text):
    assert prompts.fmt(value) == text


def test_render_config_is_compact_json_with_short_floats():
    assert prompts.render_config({"x": 0.0123456789, "n": 3, "kind": "a"}) == (
        '{"x":0.01235,"n":3,"kind":"a"}'
    )


def test_space_lines_show_type_range_and_scale():
    assert prompts.render_space(SPACE).splitlines() == [
        "- x: float in [0, 10]",
        "- n: int in [1, 100], log scale",
        '- kind: one of ["a", "b"]',
    ]


def test_card_rendering_without_a_card_still_works():
    assert "unknown" in prompts.render_card(None)
    text = prompts.render_card(CARD)
    assert "Metric: rmse (minimize, lower is better)" in text
    assert "Target: mean 1.5, std 0.25, skew 0.1" in text


@pytest.mark.parametrize(
    "render",
    [
        lambda: prompts.initializer_messages(CARD, LIMITS, 3),
        lambda: prompts.optimizer_messages(CARD, SPACE, "No trials yet."),
        lambda: prompts.adaptation_messages(CARD, SPACE, LIMITS, "No trials yet."),
        lambda: prompts.recommend_messages(CARD, SPACE),
    ],
)
def test_every_renderer_is_deterministic_system_plus_user(render):
    first, second = render(), render()
    assert first == second
    assert [m["role"] for m in first] == ["system", "user"]
    assert "JSON" in first[0]["content"] and "JSON" in first[1]["content"]


def test_schemas_bound_values_by_the_hard_limits():
    init = prompts.initializer_schema(LIMITS, 3)
    assert init["properties"]["configs"]["maxItems"] == 3
    x = init["properties"]["space"]["properties"]["x"]["properties"]["low"]
    assert (x["minimum"], x["maximum"]) == (-50.0, 50.0)
    adapt = prompts.adaptation_schema(SPACE, LIMITS)
    assert set(adapt["properties"]["params"]["properties"]) == {"x", "n"}


def records(n, direction="minimize"):
    return [
        TrialRecord(number=i, params={"x": i / 3, "n": i + 1, "kind": "a"},
                    value=(10.0 - i) if i % 3 else 20.0 + i)
        for i in range(n)
    ] + [TrialRecord(number=n, params={"x": 1.0}, state="failed"),
         TrialRecord(number=n + 1, params={"x": 2.0}, state="pruned")]


def test_history_counts_trends_and_tables():
    text = history.summarize(records(12), SPACE.names, "minimize", k_best=2, k_recent=2).text
    lines = text.splitlines()
    assert lines[0] == "14 trials: 12 complete, 1 failed, 1 pruned (lower is better)."
    assert lines[1] == (
        "Best so far: #4 6, #5 5, #7 3, #8 2, #10 0, #11 -1 (3 earlier improvements)"
    )
    assert "Last 5 complete trials improved the best by" in text
    assert "Best 2 (# | x | n | kind | value):" in text
    assert "#11 | 3.667 | 12 | a | -1" in text  # the best row
    assert "#13 | 2 | - | - | pruned" in text  # recent rows keep failed/pruned trials


def test_history_for_maximize_ranks_high_values_first():
    text = history.summarize(records(6), SPACE.names, "maximize", k_best=1, k_recent=0).text
    assert "Best 1" in text and "\n#3 |" in text  # value 23 is the largest


def test_history_is_empty_text_for_no_trials():
    assert history.summarize([], SPACE.names, "minimize").text == "No trials yet."


@pytest.mark.parametrize("budget", [150, 100, 60, 30])
def test_history_shrinks_k_until_it_fits_the_budget(budget):
    summary = history.summarize(records(40), SPACE.names, "minimize", budget_tokens=budget,
                                count_tokens=lambda t: len(t) // 3)
    assert summary.n_tokens <= budget or (summary.k_best, summary.k_recent) == (0, 0)
    assert summary.fits == (summary.n_tokens <= budget)
    full = history.summarize(records(40), SPACE.names, "minimize")
    assert summary.k_best + summary.k_recent < full.k_best + full.k_recent


def test_history_accepts_plain_mappings_and_frozen_trials():
    import optuna

    study = optuna.create_study()
    study.add_trial(optuna.create_trial(params={"x": 1.0}, distributions={
        "x": optuna.distributions.FloatDistribution(0, 2)}, value=0.5))
    from_study = history.summarize(study.trials, ["x"], "minimize").text
    from_dicts = history.summarize([{"number": 0, "params": {"x": 1.0}, "value": 0.5}],
                                   ["x"], "minimize").text
    assert from_study == from_dicts


def test_history_budget_reserves_prompt_and_answer():
    assert history.history_budget(2048, 500, 256) == 2048 - 500 - 256 - 32
    assert history.history_budget(100, 500, 256) == 0
