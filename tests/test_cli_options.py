"""Bad tune options: one message and exit 2 before any data or model is loaded."""

from __future__ import annotations

import pytest

from sllmbo.cli import main


@pytest.mark.parametrize("extra, message", [
    (["--llm-timeout", "0"], "--llm-timeout must be > 0"),
    (["--llm-timeout", "-3"], "--llm-timeout must be > 0"),
    (["--min-delta", "-1"], "--min-delta must be a finite number >= 0"),
    (["--min-delta", "nan"], "--min-delta must be a finite number >= 0"),
    (["--adaptive-p", "--p-llm", "1"], "--adaptive-p needs 0 < --p-llm < 1"),
    (["--adaptive-p", "--p-llm", "0"], "--adaptive-p needs 0 < --p-llm < 1"),
    (["--p-llm", "1.5"], "--p-llm must be in [0, 1]"),
    (["--patience", "-1"], "--patience must be >= 0"),
])
def test_bad_llm_option_exits_2_before_the_model_loads(extra, message, monkeypatch, capsys):
    import sllmbo.inference.factory as factory
    import sllmbo.tune as tune_module

    def forbidden(*args, **kwargs):
        raise AssertionError("loaded before the options were checked")

    monkeypatch.setattr(factory, "create_backend", forbidden)
    monkeypatch.setattr(tune_module, "resolve_task", forbidden)
    with pytest.raises(SystemExit) as exit_info:
        main(["tune", "--task", "diabetes", "--sampler", "llm-tpe", *extra])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_fail_state_from_optuna_names_is_history():
    from sllmbo.core.history import to_record

    assert to_record({"number": 3, "params": {}, "state": "FAIL"}).state == "failed"


def test_ctrl_c_in_a_command_says_how_to_resume_and_exits_130(monkeypatch, capsys):
    import sllmbo.data as data_stage

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(data_stage, "list_tasks", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        main(["tasks", "--json"])
    assert exit_info.value.code == 130
    assert "run the same command to resume" in capsys.readouterr().err
