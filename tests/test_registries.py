"""The registries of the extension points (samplers, model families): one entry per name,
with the facts the loop reads; a taken name is refused and the CLI help lists each."""

from __future__ import annotations

import optuna
import pytest

from sllmbo.core.errors import SllmboError
from sllmbo.samplers import build_sampler, registry


def test_a_second_sampler_under_a_taken_name_is_refused():
    with pytest.raises(SllmboError, match="already registered"):
        registry.register(registry.SamplerSpec(name="tpe", help="again",
                                               builder="sllmbo.samplers.optuna_builtin:build_tpe"))
    assert registry.get("tpe").help.startswith("Optuna's TPE")


def test_an_unknown_name_lists_the_choices():
    with pytest.raises(SllmboError, match="unknown sampler 'cmaes'") as err:
        registry.get("cmaes")
    assert all(name in err.value.hint for name in registry.names())


def test_every_entry_builds_from_its_named_function():
    for name in registry.names():
        spec = registry.get(name)
        module, _, function = spec.builder.partition(":")
        assert callable(getattr(__import__(module, fromlist=[function]), function)), name
    assert isinstance(build_sampler("tpe", seed=0), optuna.samplers.TPESampler)


def test_tune_help_lists_what_the_registry_holds():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "sllmbo", "tune", "--help"], check=True,
                         capture_output=True, text=True, env={"COLUMNS": "400", "PATH": ""}).stdout
    out = out.replace("│", " ")
    for name in registry.names():
        assert f"{name}: {registry.get(name).help}" in " ".join(out.split())


def test_the_registry_loads_without_optuna():
    import subprocess
    import sys

    code = ("import sys; import sllmbo.samplers.registry as r; r.names(); "
            "print('optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_a_second_family_under_a_taken_name_is_refused():
    from sllmbo.core.families import FAMILIES, register_family

    with pytest.raises(SllmboError, match="already registered"):
        register_family(FAMILIES["lightgbm"])
    assert list(FAMILIES) == ["lightgbm", "xgboost", "random_forest", "mlp"]


def test_model_help_lists_the_families():
    import subprocess
    import sys

    from sllmbo.core.families import FAMILIES

    out = subprocess.run([sys.executable, "-m", "sllmbo", "recommend", "--help"], check=True,
                         capture_output=True, text=True, env={"COLUMNS": "400", "PATH": ""}).stdout
    assert " | ".join(FAMILIES) in out
