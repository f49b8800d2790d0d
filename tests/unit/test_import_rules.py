"""The layout's rules hold: services never import each other, the shared package imports no service, the
contracts import nothing of ours, and the ledger's core does no I/O (contracts in pyproject.toml)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("ogp", "schemas", "command_api", "ledger_processor", "projections", "query_api", "infra", "tests")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    # The tree under test comes first on the path, before the editable install of the real one.
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(root / "pyproject.toml"), "--no-cache"],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def copy_of_the_tree(tmp_path) -> Path:
    """The project's packages and pyproject.toml in a scratch directory, to break a rule in."""
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.jar")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def test_the_code_keeps_every_import_contract():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_service_importing_another_service_breaks_the_contracts(copy_of_the_tree):
    target = copy_of_the_tree / "query_api" / "partner_views.py"
    target.write_text(target.read_text() + "\nimport ledger_processor.runner  # a deliberate violation\n")

    result = lint_imports(copy_of_the_tree)

    assert result.returncode != 0
    assert "Services never import each other" in result.stdout
    assert "BROKEN" in result.stdout


def test_the_shared_package_importing_a_service_breaks_the_contracts(copy_of_the_tree):
    target = copy_of_the_tree / "ogp" / "settings.py"
    target.write_text(target.read_text() + "\nimport command_api.app  # a deliberate violation\n")

    result = lint_imports(copy_of_the_tree)

    assert result.returncode != 0
    assert "The shared package imports no service" in result.stdout
    assert "BROKEN" in result.stdout


def test_the_pure_core_touching_the_database_breaks_the_contracts(copy_of_the_tree):
    target = copy_of_the_tree / "ledger_processor" / "domain" / "checks.py"
    target.write_text(target.read_text() + "\nimport sqlalchemy  # a deliberate violation\n")

    result = lint_imports(copy_of_the_tree)

    assert result.returncode != 0
    assert "pure core does no I/O" in result.stdout
