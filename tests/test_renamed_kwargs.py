"""Renamed keywords of the Python API: ``model=`` became ``family=`` (the ML model family of
``tune`` / ``recommend``) and ``llm=`` / ``llm_path=`` (the LLM of ``create_backend`` /
``recommend``). The old keyword still works, with a ``FutureWarning`` naming the new one, and
gives the same result; passing both is refused before any work."""

from __future__ import annotations

import inspect
import warnings

import pytest
from llm_scripts import VALID, ScriptedBackend

from sllmbo.core.errors import SllmboError
from sllmbo.core.renamed import RenamedKeywordError, renamed_kwargs
from sllmbo.inference.factory import create_backend
from sllmbo.recommend import recommend, recommend_task
from sllmbo.tune import tune

URL = "http://127.0.0.1:9/v1"  # never asked: an OpenAI backend contacts its server lazily


def _new_and_old(call_new, call_old, new: str, old: str):
    """Both results; the new call warns of nothing, the old one once, naming ``new=``, at the
    caller's line (this file)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning from the new spelling fails the test
        new_result = call_new()
    with pytest.warns(FutureWarning, match=rf"keyword {old}= is renamed {new}=") as caught:
        old_result = call_old()
    future = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(future) == 1 and future[0].filename == __file__
    return new_result, old_result


# ------------------------------------------------------------------------ the helper itself


def test_the_helper_maps_warns_and_refuses_both():
    @renamed_kwargs(model="family")
    def f(task, family="lightgbm", *, n=1):
        return task, family, n

    assert f("t", family="xgboost") == ("t", "xgboost", 1)
    with pytest.warns(FutureWarning, match=r"f\(\): the keyword model= is renamed family="):
        assert f("t", model="xgboost", n=2) == ("t", "xgboost", 2)
    with pytest.raises(RenamedKeywordError, match=r"got both model= and family="):
        f("t", model="a", family="b")
    with pytest.raises(RenamedKeywordError, match=r"got both model= and family="):
        f("t", "b", model="a")  # the new one by position
    assert list(inspect.signature(f).parameters) == ["task", "family", "n"]


def test_both_at_once_is_a_type_error_and_an_sllmbo_error():
    assert issubclass(RenamedKeywordError, TypeError)
    assert issubclass(RenamedKeywordError, SllmboError)


def test_the_public_signatures_show_the_new_names():
    assert "family" in inspect.signature(tune).parameters
    assert "model" not in inspect.signature(tune).parameters
    params = inspect.signature(recommend).parameters
    assert list(params)[:2] == ["task", "family"]  # positional order kept
    assert "llm_path" in params and "model" not in params and "model_path" not in params
    assert list(inspect.signature(recommend_task).parameters)[:4] == [
        "task", "family", "n", "backend"]
    assert "llm" in inspect.signature(create_backend).parameters


# ------------------------------------------------------------------------ create_backend


def test_create_backend_takes_model_as_the_old_name_of_llm():
    new, old = _new_and_old(lambda: create_backend("openai", llm="served", base_url=URL),
                            lambda: create_backend("openai", model="served", base_url=URL),
                            "llm", "model")
    try:
        assert new.model == old.model == "served"  # the OpenAI request's "model" field
        assert new.name == old.name
    finally:
        new.close()
        old.close()


def test_create_backend_refuses_llm_and_model_together():
    with pytest.raises(RenamedKeywordError, match="model= is the old name of llm="):
        create_backend("openai", llm="a", model="b", base_url=URL)


# ------------------------------------------------------------------------ tune


def test_tune_takes_model_as_the_old_name_of_family():
    common = dict(sampler="random", n_trials=2, n_folds=2, progress=False, score_test=False)
    new, old = _new_and_old(lambda: tune("diabetes", family="xgboost", **common),
                            lambda: tune("diabetes", model="xgboost", **common),
                            "family", "model")
    assert new.model == old.model == "xgboost"  # TuneResult.model: the --output file's key
    assert new.study == old.study == "diabetes-xgboost-random-seed0"
    assert new.best_params == old.best_params
    assert new.best_value == pytest.approx(old.best_value)


def test_tune_refuses_family_and_model_together():
    with pytest.raises(RenamedKeywordError, match="got both model= and family="):
        tune("diabetes", family="xgboost", model="lightgbm", n_trials=1, progress=False)


# ------------------------------------------------------------------------ recommend


def test_recommend_takes_model_as_the_old_name_of_family():
    backends = [ScriptedBackend([VALID]), ScriptedBackend([VALID])]
    new, old = _new_and_old(
        lambda: recommend("diabetes", family="xgboost", n=2, backend=backends[0]),
        lambda: recommend("diabetes", model="xgboost", n=2, backend=backends[1]),
        "family", "model")
    assert new == old and len(new) == 2
    for backend in backends:  # the prompt names the family asked for
        assert "model: xgboost" in backend.requests[0].messages[-1]["content"]


def test_recommend_task_takes_model_as_the_old_name_of_family():
    new, old = _new_and_old(
        lambda: recommend_task("diabetes", "xgboost", 2, ScriptedBackend([VALID])),
        lambda: recommend_task("diabetes", model="xgboost", n=2,
                               backend=ScriptedBackend([VALID])),
        "family", "model")
    assert new.configs == old.configs and len(new.configs) == 2


@pytest.mark.parametrize("call", ["recommend", "recommend_task"])
def test_model_path_is_the_old_name_of_llm_path(call, monkeypatch):
    """Without a backend, ``llm_path`` reaches ``create_backend`` as ``llm``."""
    import sllmbo.inference.factory as factory

    asked: list[dict] = []

    def fake_create_backend(kind, **kwargs):
        asked.append({"kind": kind, **kwargs})
        return ScriptedBackend([VALID])

    monkeypatch.setattr(factory, "create_backend", fake_create_backend)
    options = dict(decode="greedy", backend_kind="openai", base_url=URL)
    if call == "recommend":
        new, old = _new_and_old(
            lambda: recommend("diabetes", "lightgbm", 1, llm_path="served", **options),
            lambda: recommend("diabetes", "lightgbm", 1, model_path="served", **options),
            "llm_path", "model_path")
    else:
        new, old = _new_and_old(
            lambda: recommend_task("diabetes", "lightgbm", 1, None, llm_path="served",
                                   **options).configs,
            lambda: recommend_task("diabetes", "lightgbm", 1, None, model_path="served",
                                   **options).configs,
            "llm_path", "model_path")
    assert new == old
    assert asked[0] == asked[1] == {"kind": "openai", "llm": "served", "adapter": "default",
                                    "base_url": URL}


@pytest.mark.parametrize(("args", "kwargs", "match"), [
    (("diabetes", "xgboost"), {"model": "lightgbm"}, "got both model= and family="),
    (("diabetes",), {"family": "xgboost", "model": "lightgbm"}, "got both model= and family="),
    (("diabetes",), {"llm_path": "a", "model_path": "b"}, "got both model_path= and llm_path="),
])
def test_recommend_refuses_old_and_new_together(args, kwargs, match):
    backend = ScriptedBackend([VALID])
    with pytest.raises(RenamedKeywordError, match=match):
        recommend(*args, backend=backend, **kwargs)
    with pytest.raises(RenamedKeywordError, match=match):
        recommend_task(*args, **({"family": "x"} if len(args) == 1 and "family" not in kwargs
                                 else {}), n=1, backend=backend, **kwargs)
    assert backend.requests == []  # refused before any work
