"""Training recipes and the checks that run before any model is loaded: validation, the
held-out refusal, the output folder, and ``sllmbo train``'s exit code on bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sllmbo.cli import main
from sllmbo.core.errors import SllmboError
from sllmbo.training.recipe import (
    RECIPES_DIR,
    Recipe,
    RecipeError,
    load_recipe,
    parse_overrides,
    parse_recipe,
)


@pytest.mark.parametrize("path", sorted(RECIPES_DIR.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_are_valid_and_named_after_their_file(path):
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert load_recipe(path.stem) == recipe  # a shipped recipe is found by name


def test_qlora_recipe_asks_for_nf4_and_the_cpu_recipe_does_not():
    assert load_recipe("codellama-7b-instruct-qlora").quantization == "nf4"
    cpu = load_recipe("smollm2-135m-lora")
    assert cpu.quantization == "none" and cpu.base_model == "smollm2-135m-instruct"
    assert cpu.token_budget is not None  # the 90-minute cap


@pytest.mark.parametrize(("data", "expected"), [
    ({"lora_rank": 8}, "unknown key 'lora_rank' (did you mean 'lora_r'?)"),
    ({"lora_r": 0}, "lora_r: Input should be greater than or equal to 1 (got 0)"),
    ({"lora_dropout": 1.5}, "lora_dropout: Input should be less than 1"),
    ({"learning_rate": -1e-4}, "learning_rate: Input should be greater than 0"),
    ({"quantization": "int3"}, "quantization: Input should be 'none' or 'nf4'"),
    ({"precision": "fp8"}, "precision: Input should be"),
    ({"max_length": 4}, "max_length: Input should be greater than or equal to 16"),
    ({"lora_target_modules": []}, "must be 'all-linear' or a non-empty list"),
    ({"lora_target_modules": ["q_proj", "lm_head"]}, "cannot include lm_head"),
    ({"quantization": "nf4", "precision": "fp16"}, "quantization nf4 computes in bf16 or fp32"),
    ({"name": "my adapter"}, "name: String should match pattern"),
    ({"packing": True, "shared_prefix": True}, "two ways to pack; choose one"),
])
def test_bad_recipe_values_are_one_message_naming_the_key(data, expected):
    with pytest.raises(RecipeError) as err:
        parse_recipe(data, "recipe x.yaml")
    message = str(err.value)
    assert message.startswith("recipe x.yaml is not a valid recipe: ")
    assert expected in message
    assert "hint: recipe keys: name, base_model" in message


def test_every_problem_is_listed_at_once():
    with pytest.raises(RecipeError) as err:
        parse_recipe({"lora_r": -1, "batch_size": 0, "bogus": 1}, "r")
    assert all(s in err.value.message for s in ("lora_r:", "batch_size:", "unknown key 'bogus'"))


def test_recipe_file_errors(tmp_path):
    not_mapping = tmp_path / "list.yaml"
    not_mapping.write_text("- 1\n- 2\n")
    broken = tmp_path / "broken.yaml"
    broken.write_text("lora_r: [1,\n")
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(not_mapping)
    with pytest.raises(RecipeError, match="is not valid YAML"):
        load_recipe(broken)
    with pytest.raises(RecipeError, match=r"no recipe at .*nope\.yaml") as err:
        load_recipe(tmp_path / "nope.yaml")
    assert "smollm2-135m-lora" in str(err.value.hint)


def test_overrides_are_yaml_values_and_validated_again(tmp_path):
    assert parse_overrides(["lora_r=8", "packing=true", "lora_target_modules=[q_proj]"]) == {
        "lora_r": 8, "packing": True, "lora_target_modules": ["q_proj"]}
    recipe = load_recipe("smollm2-135m-lora", {"lora_r": 8, "max_steps": 3})
    assert (recipe.lora_r, recipe.max_steps, recipe.name) == (8, 3, "smollm2-135m-lora")
    with pytest.raises(RecipeError, match="--set takes KEY=VALUE"):
        parse_overrides(["lora_r"])
    with pytest.raises(RecipeError, match="lora_r"):
        Recipe().overridden({"lora_r": 0})


def fake_data(root: Path, tasks: list[str]) -> Path:
    """A data folder whose card lists ``tasks`` (no rows: the card check comes first)."""
    (root / "dataset").mkdir(parents=True)
    (root / "data_card.json").write_text(json.dumps(
        {"format": "sllmbo-instructions/1", "tasks": {"train": tasks, "validation": []}}))
    return root


@pytest.mark.parametrize("task", ["concrete_strength", "cement_strength_lgbm", "bike_sharing"])
def test_training_refuses_a_data_card_that_lists_a_heldout_task(tmp_path, task):
    from sllmbo.training.sft_data import check_data

    data = fake_data(tmp_path / "data", ["diabetes", task])
    with pytest.raises(SllmboError, match=r"refusing to train on .*held-out tasks \['"):
        check_data(data)
    assert check_data(fake_data(tmp_path / "ok", ["diabetes"])).card_sha256


def test_missing_data_names_the_command_that_builds_it(tmp_path):
    from sllmbo.training.sft_data import check_data

    with pytest.raises(SllmboError, match="no instruction data") as err:
        check_data(tmp_path)
    assert "sllmbo data build" in str(err.value.hint)


def test_an_existing_result_is_not_overwritten_without_resume(tmp_path):
    from sllmbo.training.sft import _prepare_out

    assert _prepare_out(tmp_path / "new", resume=False) is None
    assert _prepare_out(tmp_path / "new", resume=True) is None  # nothing yet: a fresh start
    done = tmp_path / "done"
    done.mkdir()
    (done / "adapter_config.json").write_text("{}")
    with pytest.raises(SllmboError, match="already holds a finished adapter"):
        _prepare_out(done, resume=False)
    with pytest.raises(SllmboError, match="nothing to resume"):
        _prepare_out(done, resume=True)


@pytest.mark.parametrize(("args", "expected"), [
    (["--set", "lora_r=0"], "lora_r: Input should be greater than or equal to 1"),
    (["--set", "lora_rank=8"], "unknown key 'lora_rank'"),
    (["--max-steps", "0"], "max_steps: Input should be greater than or equal to 1"),
])
def test_cli_bad_recipe_exits_2_with_one_message(args, expected, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "smollm2-135m-lora", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: recipe ") and expected in err
    assert "Traceback" not in err


def test_cli_heldout_data_exits_2(tmp_path, capsys):
    data = fake_data(tmp_path / "data", ["concrete_strength"])
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "smollm2-135m-lora", "--data", str(data),
              "--out", str(tmp_path / "out")])
    assert exit_info.value.code == 2
    assert "held-out tasks ['concrete_strength']" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_missing_base_model_folder_says_to_pass_base_model(tmp_path, capsys):
    data = fake_data(tmp_path / "data", ["diabetes"])
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "--recipe", "codellama-7b-instruct-qlora", "--data", str(data),
              "--base-model", str(tmp_path / "no-such-model"), "--out", str(tmp_path / "o")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "no base model at" in err and "--base-model FOLDER" in err
