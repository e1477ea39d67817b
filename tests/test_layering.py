"""Data flows one way (DESIGN.md): no stage imports ``eval``, and ``data`` does not import the
loop. An import of ``sllmbo.eval`` from ``data`` would also be a way round the rule that
nothing there reads the held-out matrix (``eval`` loads it)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: The ``sllmbo eval`` command is the one place outside ``eval`` that calls it.
EVAL_COMMAND = ROOT / "sllmbo" / "cli" / "evaluation.py"


def imported_modules(source: Path) -> list[tuple[int, str]]:
    """Every module ``source`` imports, at the top or inside a function."""
    found = []
    for node in ast.walk(ast.parse(source.read_text(), filename=str(source))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def imports_of(folders: list[str], prefix: str, skip: tuple[Path, ...] = ()) -> list[str]:
    hits = []
    for folder in folders:
        for source in sorted((ROOT / folder).rglob("*.py")):
            if source in skip:
                continue
            for line, module in imported_modules(source):
                if module == prefix or module.startswith(prefix + "."):
                    hits.append(f"{source.relative_to(ROOT)}:{line} imports {module}")
    return hits


def test_no_stage_imports_eval() -> None:
    assert imports_of(["data", "training", "inference", "sllmbo"], "sllmbo.eval",
                      skip=(EVAL_COMMAND,)) == []


def test_data_does_not_import_the_loop() -> None:
    assert imports_of(["data"], "sllmbo.samplers") == []


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "lazy.py"
    source.write_text("def f():\n    from sllmbo.eval.portfolio import greedy_portfolio\n")
    assert imported_modules(source) == [(2, "sllmbo.eval.portfolio")]
