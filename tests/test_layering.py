"""The architecture's table (``sllmbo/core/__init__.py`` documents it), checked on every import.

Rooms sit in data order: core -> data -> training -> inference -> loop -> eval -> cli. A room
imports only the rooms its row of ``ALLOWED`` names; ``EXCEPTIONS`` lists the one arrow that
runs back on purpose. Every import counts: at the top of a module, inside a function, relative,
and ``importlib.import_module`` of a module named by a string literal in the file (the lazy
name maps of ``sllmbo`` and ``sllmbo.data``). A module importing its own parent package is
not an arrow: Python imports the parent first whatever the child says. No circle may exist
between modules, whether its imports sit at the top or inside functions.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path

import networkx as nx
import tomllib

ROOT = Path(__file__).resolve().parents[1]

#: room -> the rooms it may import (besides itself).
ALLOWED: dict[str, frozenset[str]] = {
    "core": frozenset(),
    "data": frozenset({"core"}),
    "training": frozenset({"core", "data"}),
    "inference": frozenset({"core"}),
    "loop": frozenset({"core", "data", "training", "inference"}),
    "eval": frozenset({"core", "data", "training", "inference", "loop"}),
    "cli": frozenset({"core", "data", "training", "inference", "loop", "eval"}),
}
#: Package prefix -> room; the longest prefix wins, and what no prefix names is the loop.
ROOMS: dict[str, str] = {
    "sllmbo.core": "core", "sllmbo.data": "data", "sllmbo.training": "training",
    "sllmbo.inference": "inference", "sllmbo.eval": "eval", "sllmbo.cli": "cli",
    "sllmbo.__main__": "cli",
}
#: The one back-arrow kept on purpose: corpus collection runs its studies through the loop.
EXCEPTIONS: frozenset[tuple[str, str]] = frozenset({("sllmbo.data.collect", "sllmbo.tune")})


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """pyproject's ``package-dir``: import name -> folder (``sllmbo.data`` is ``data/``)."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    return {name: root / folder
            for name, folder in config["tool"]["setuptools"]["package-dir"].items()}


def module_sources(root: Path = ROOT) -> dict[str, str]:
    """Every project module's dotted name -> its source (``__init__`` named by its package)."""
    dirs = package_dirs(root)
    out: dict[str, str] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            name = ".".join((package, *parts))
            if name.endswith(".__init__"):
                name = name.removesuffix(".__init__")
            out[name] = path.read_text()
    return out


def is_package(name: str, sources: Mapping[str, str]) -> bool:
    return any(other.startswith(name + ".") for other in sources)


def _imported_names(name: str, source: str, sources: Mapping[str, str]) -> set[str]:
    """Every dotted name ``source`` imports, absolute, as written or resolved."""
    package = name if is_package(name, sources) else name.rpartition(".")[0]
    tree = ast.parse(source)
    found: set[str] = set()
    uses_importlib = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
        elif (isinstance(node, ast.Attribute) and node.attr == "import_module") or (
                isinstance(node, ast.Name) and node.id == "import_module"):
            uses_importlib = True
    if uses_importlib:  # modules named by string literals, as lazy name maps hold them
        found.update(node.value for node in ast.walk(tree)
                     if isinstance(node, ast.Constant) and isinstance(node.value, str)
                     and node.value in sources)
    return found


def import_graph(sources: Mapping[str, str]) -> nx.DiGraph:
    """Module -> the project modules it imports (each name resolved to its longest module)."""
    graph = nx.DiGraph()
    graph.add_nodes_from(sources)
    for name, source in sources.items():
        for target in _imported_names(name, source, sources):
            while target and target not in sources:
                target = target.rpartition(".")[0]
            if target and target != name and not name.startswith(target + "."):
                graph.add_edge(name, target)
    return graph


def room_of(module: str) -> str:
    best = max((p for p in ROOMS if module == p or module.startswith(p + ".")), key=len,
               default=None)
    return ROOMS[best] if best else "loop"


def forbidden_arrows(graph: nx.DiGraph) -> list[str]:
    out = []
    for a, b in sorted(graph.edges):
        ra, rb = room_of(a), room_of(b)
        if ra != rb and rb not in ALLOWED[ra] and (a, b) not in EXCEPTIONS:
            out.append(f"{a} ({ra}) -> {b} ({rb})")
    return out


def circles(graph: nx.DiGraph) -> list[list[str]]:
    return sorted(sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1)


def test_every_import_follows_the_table() -> None:
    assert forbidden_arrows(import_graph(module_sources())) == []


def test_no_circles_between_modules() -> None:
    assert circles(import_graph(module_sources())) == []


def test_the_named_exception_is_still_needed() -> None:
    graph = import_graph(module_sources())
    assert all(graph.has_edge(a, b) for a, b in EXCEPTIONS), "drop a stale exception"


def test_a_planted_back_arrow_inside_a_function_fails() -> None:
    sources = dict(module_sources())
    sources["sllmbo.core.planted"] = "def f():\n    from sllmbo.tune import tune\n"
    assert forbidden_arrows(import_graph(sources)) == [
        "sllmbo.core.planted (core) -> sllmbo.tune (loop)"]


def test_a_planted_importlib_back_arrow_fails() -> None:
    sources = dict(module_sources())
    sources["sllmbo.inference.planted"] = (
        "import importlib\n\ndef f():\n    return importlib.import_module('sllmbo.eval.report')\n")
    assert forbidden_arrows(import_graph(sources)) == [
        "sllmbo.inference.planted (inference) -> sllmbo.eval.report (eval)"]


def test_a_planted_circle_through_a_relative_import_fails() -> None:
    sources = dict(module_sources())
    sources["sllmbo.data.planted_a"] = "def f():\n    from . import planted_b\n"
    sources["sllmbo.data.planted_b"] = "from sllmbo.data.planted_a import f\n"
    assert circles(import_graph(sources)) == [["sllmbo.data.planted_a", "sllmbo.data.planted_b"]]


def test_the_graph_sees_every_kind_of_import() -> None:
    sources = {"sllmbo.data": "", "sllmbo.data.a": "", "sllmbo.data.b": "", "sllmbo.data.c": "",
               "sllmbo.data.d": "",
               "sllmbo.data.x": ("import sllmbo.data.a\nfrom .b import y\n"
                                 "def f():\n    from sllmbo.data import c\n"
                                 "import importlib\nM = {'d': 'sllmbo.data.d'}\n"
                                 "g = lambda n: importlib.import_module(M[n])\n")}
    graph = import_graph(sources)
    assert sorted(graph.successors("sllmbo.data.x")) == [
        "sllmbo.data.a", "sllmbo.data.b", "sllmbo.data.c", "sllmbo.data.d"]


def test_the_core_docstring_states_the_table() -> None:
    doc = (ROOT / "sllmbo" / "core" / "__init__.py").read_text()
    for room, allowed in ALLOWED.items():
        line = next(line for line in doc.splitlines() if line.startswith(room + " "))
        stated = line.split("  ")[-1].strip()
        expected = "(nothing of the project)" if not allowed else (
            "every room" if room == "cli" else
            ", ".join(r for r in ALLOWED if r in allowed))
        assert stated == expected, (room, stated)
