"""Small modules and functions: a reader finds a concept by its file and reads it whole.

No module of the package over 400 lines and no function over 80 (docstring included);
declarative tables are the exception (``DECLARATIVE``), each named here with why.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src" / "bnlab"
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# The argument parser is a table of subcommands and their options, read one at a time.
DECLARATIVE = {"bnlab/cli/parser.py:build_parser"}
MODULES = sorted(SOURCE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SOURCE.parent)))
def test_modules_and_functions_stay_small(path):
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= MAX_MODULE_LINES
    where = path.relative_to(SOURCE.parent)
    long = [f"{where}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
            and f"{where}:{node.name}" not in DECLARATIVE]
    assert long == []
