"""Docstrings that hold reStructuredText tables (the config and strategy
references) render without a docutils warning: a column one character too
narrow silently breaks the table in every documentation tool."""

from __future__ import annotations

import ast
import io
from pathlib import Path

import docutils.core
import pytest

import llmlb_actors

ROOT = Path(llmlb_actors.__file__).parent


def _tables() -> list[tuple[str, str]]:
    found = []
    for path in sorted(ROOT.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and "\n===" in f"\n{doc}":
                    name = getattr(node, "name", "<module>")
                    found.append((f"{path.relative_to(ROOT)}:{name}", doc))
    return found


def test_the_tables_are_found() -> None:
    names = [name for name, _ in _tables()]
    assert "strategies.py:<module>" in names
    assert "_config.py:BalancerConfig" in names


@pytest.mark.parametrize(("where", "doc"), _tables(), ids=[n for n, _ in _tables()])
def test_table_renders(where: str, doc: str) -> None:
    warnings = io.StringIO()
    docutils.core.publish_doctree(
        doc, settings_overrides={"warning_stream": warnings, "report_level": 2}
    )
    assert warnings.getvalue() == "", f"{where}:\n{warnings.getvalue()}"


def test_a_malformed_table_is_caught() -> None:
    warnings = io.StringIO()
    bad = "===== ====\nname  what\n===== ====\nround-robin next\n===== ====\n"
    docutils.core.publish_doctree(
        bad, settings_overrides={"warning_stream": warnings, "report_level": 2}
    )
    assert "Malformed table" in warnings.getvalue()
