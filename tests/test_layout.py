"""The package's shape, kept as the structure issue left it: few modules at the top, each module's
private names its own. A merge of two branches once brought back ``from .prefill import _configs``;
this catches the next one before review does."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "lcplugin"


def test_at_most_eight_modules_at_the_top() -> None:
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 8, top


def test_no_module_imports_a_private_name_of_another() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.ImportFrom) and (node.module or node.level):
                found += [f"{path.relative_to(PACKAGE.parent)}:{node.lineno} imports {alias.name}"
                          for alias in node.names if alias.name.startswith("_") and not alias.name.startswith("__")]
    assert not found, "\n".join(found)
