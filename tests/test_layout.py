"""The layout's import rules, as the README states them: only the storage package imports a
database driver, the domain library never imports Metaflow, and each backend is imported only
when a database of its kind is opened."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DRIVERS = ("sqlite3", "sqlite_utils", "adbc_driver_sqlite", "adbc_driver_postgresql", "adbc_driver_manager",
           "psycopg", "psycopg2")
#: The plain-script yardstick of the benchmark is the job written with no guarantees, run in a
#: process of its own: it uses sqlite3 on purpose.
YARDSTICK = ROOT / "enrich" / "bench" / "plain_script.py"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _python_files() -> list[Path]:
    return [ROOT / "algorithm.py", *sorted((ROOT / "flows").rglob("*.py")), *sorted((ROOT / "enrich").rglob("*.py"))]


@pytest.mark.parametrize("path", _python_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_only_the_storage_package_imports_a_database_driver(path):
    if (ROOT / "enrich" / "store") in path.parents or path == YARDSTICK:
        return
    assert not _imports(path) & set(DRIVERS), path


@pytest.mark.parametrize("path", sorted((ROOT / "enrich").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_the_domain_library_never_imports_metaflow(path):
    assert "metaflow" not in _imports(path), path


def test_opening_an_sqlite_store_never_imports_the_postgresql_backend(tmp_path):
    code = ("import sys; from enrich.store import open_store; "
            f"open_store({str(tmp_path / 'db.db')!r}).list_runs(); "
            "print(sorted(m for m in sys.modules if m.startswith(('enrich.store.postgres', 'adbc_driver_postgresql')) "
            "or m in ('sqlite3', 'sqlite_utils', 'pandas')))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
