"""The wheel maps the stage folders into one `sllmbo` namespace; nothing may be left out."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]


def declared() -> tuple[list[str], dict[str, str]]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    return config["packages"], config["package-dir"]


def on_disk() -> set[str]:
    """Every package folder under the mapped stage folders, as its import name."""
    _, mapping = declared()
    names = set()
    for top, folder in mapping.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder).parts
            if "__pycache__" not in relative:
                names.add(".".join((top, *relative)))
    return names


def test_every_package_folder_is_declared_for_the_wheel():
    packages, _ = declared()
    assert on_disk() == set(packages)


@pytest.mark.slow
def test_the_built_wheel_holds_every_module(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True,
    )  # fmt: skip
    wheel = next(tmp_path.glob("sllmbo-*.whl"))
    inside = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".py")}
    _, mapping = declared()
    expected = set()
    for top, folder in mapping.items():
        for source in (ROOT / folder).rglob("*.py"):
            relative = source.relative_to(ROOT / folder)
            expected.add("/".join((*top.split("."), *relative.parts)))
    assert expected <= inside, sorted(expected - inside)
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"sllmbo/inference/default_adapter/{f}" for f in (
        "adapter_config.json", "adapter_model.safetensors", "data_card.json", "README.md")}
    assert shipped <= names, sorted(shipped - names)  # the default adapter ships in the wheel
