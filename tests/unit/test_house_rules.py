"""House rules that a linter does not check: a suppressed warning says why, and no import hides in a function
to dodge a cycle (the import contracts in pyproject.toml keep the layers; see test_import_rules.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("ogp", "schemas", "command_api", "ledger_processor", "projections", "query_api", "infra", "tests")
CODE = [ROOT / name for name in OURS] + [ROOT / "bench"]

NOQA = re.compile(r"#\s*noqa(?::\s*[A-Z]+\d+(?:\s*,\s*[A-Z]+\d+)*)?(?P<why>.*)$")
TYPE_IGNORE = re.compile(r"#\s*type:\s*ignore(?:\[[\w\-, ]+\])?(?P<why>.*)$")


def python_files() -> list[Path]:
    return sorted(p for folder in CODE for p in folder.rglob("*.py") if "__pycache__" not in p.parts)


def unexplained(pattern: re.Pattern) -> list[str]:
    found = []
    for path in python_files():
        for number, line in enumerate(path.read_text().splitlines(), 1):
            match = pattern.search(line)
            # A reason is words after the rule codes, e.g. "- a bug in one rule must not stop the partition".
            if match and len(re.findall(r"[a-z]{2,}", match["why"])) < 2:
                found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()}")
    return found


def test_every_noqa_says_why():
    assert unexplained(NOQA) == []


def test_every_type_ignore_says_why():
    assert unexplained(TYPE_IGNORE) == []


def test_no_module_of_ours_is_imported_inside_a_function():
    """In the product, the benchmarks and the test harness (a test itself may import what it tests late)."""
    local = []
    tests_tiers = {"unit", "integration", "e2e"}
    for path in python_files():
        parts = path.relative_to(ROOT).parts
        if parts[0] == "tests" and parts[1] in tests_tiers:
            continue
        tree = ast.parse(path.read_text())
        for function in ast.walk(tree):
            if not isinstance(function, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for node in ast.walk(function):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                if any(name.split(".")[0] in OURS for name in names):
                    local.append(f"{path.relative_to(ROOT)}:{node.lineno}: {', '.join(names)}")
    assert local == []


def test_no_two_test_files_share_a_name():
    # The tiers are not packages: pytest imports each test file by its base name, and a second file of the same
    # name in another tier stops the whole run at collection.
    seen: dict[str, Path] = {}
    clashes = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        if path.name in seen:
            clashes.append(f"{seen[path.name].relative_to(ROOT)} and {path.relative_to(ROOT)}")
        seen.setdefault(path.name, path)
    assert not clashes, clashes
