"""The wheel maps the stage folders into one `sllmbo` namespace; nothing may be left out."""

from __future__ import annotations

import shutil
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


def clean_copy(dest: Path) -> Path:
    """The working tree's files that git keeps (tracked or not ignored), copied to ``dest``:
    a build in place would reuse ``build/`` and the egg-info's SOURCES.txt of earlier builds,
    which list files the package configuration may no longer ship."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                            cwd=ROOT, check=True, capture_output=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)
    return dest


@pytest.mark.slow
def test_the_built_wheel_holds_every_module(tmp_path):
    source = clean_copy(tmp_path / "src")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(source)],
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
    # What the core and the evaluation read at run time: the pool and the training matrix
    # (recommend --decode pick|score, the feedback samplers), the held-out matrix (eval only).
    data_files = {"sllmbo/data/matrix/pool.json", "sllmbo/data/matrix/train.csv.gz",
                  "sllmbo/data/matrix/train.json", "sllmbo/data/task_facts.json",
                  "sllmbo/eval/matrix/heldout.csv.gz", "sllmbo/eval/matrix/heldout.json"}
    assert data_files <= names, sorted(data_files - names)
