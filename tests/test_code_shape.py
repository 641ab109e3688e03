"""The shape the codebase keeps (issue 18): small modules, short functions, public seams.

A reader should find one idea per module and see a whole function on one screen, and a
controller should use the store's public API, never its private helpers.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("services", "gateway", "shipyard")
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 100


def _sources() -> list[Path]:
    return [
        path
        for top in PACKAGES
        for path in sorted((ROOT / top).rglob("*.py"))
        if "eventspb" not in path.parts  # generated protobuf code
    ]


def test_no_module_over_800_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in _sources()
        if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES
    }
    assert not long, f"modules over {MAX_MODULE_LINES} lines (split along a seam): {long}"


def test_no_function_over_100_lines() -> None:
    long = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length})")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: {long}"


@pytest.mark.parametrize(
    "what,pattern",
    [
        ("the store's private API", re.compile(r"\bstore\._[a-z]")),
        ("a string-keyed extras dict", re.compile(r"\bextras\[")),
    ],
    ids=["store-private", "extras"],
)
def test_no_reach_into_private_seams(what: str, pattern: re.Pattern[str]) -> None:
    store_package = ROOT / "services" / "common" / "resources"
    offenders = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in _sources()
        if store_package not in path.parents
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not offenders, f"{what} used outside its owner:\n" + "\n".join(offenders)


def test_the_checks_can_fail(tmp_path: Path) -> None:
    """The function measure counts a long function (a check that cannot fail is a defect)."""
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    tree = ast.parse(f"def long():\n{body}\n")
    node = tree.body[0]
    assert isinstance(node, ast.FunctionDef)
    assert (node.end_lineno or 0) - node.lineno + 1 == MAX_FUNCTION_LINES + 1
