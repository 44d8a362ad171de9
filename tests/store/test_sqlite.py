"""What only the SQLite backend does: the file, WAL, pages, migrations from every older schema,
faults of the file, one SQLite library per process."""
from __future__ import annotations

import pytest

from enrich.store import NotADatabase, SchemaTooNew, StorageError, open_store
from enrich.store.sqlite import connection, schema


def test_schema_is_versioned_and_wal(store):
    assert store.schema_version() == schema.SCHEMA_VERSION
    assert store.rows("PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in store.rows("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"transactions", "tags", "annotations", "rejected_rows", "runs", "step_runs", "alerts",
            "staged_tags", "run_lock"} <= tables


def test_reopening_does_not_migrate_twice(db_path):
    open_store(db_path).prepare()
    store = open_store(db_path)
    store.prepare()
    assert store.rows("SELECT version FROM schema_version") == [(v,) for v in range(1, schema.SCHEMA_VERSION + 1)]


def test_newer_schema_is_refused(store):
    store.rows("INSERT INTO schema_version VALUES (99, 'future')")
    with pytest.raises(SchemaTooNew, match="newer than this program"):
        open_store(store.path).prepare()


def test_missing_directory_is_explained(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        open_store(tmp_path / "nope" / "db.db").prepare()


def test_a_file_that_is_not_sqlite_is_explained(tmp_path):
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not a database, just text" * 100)
    with pytest.raises(NotADatabase, match="cannot use this file"):
        open_store(path).prepare()


def test_a_new_database_uses_large_pages(store):
    assert store.rows("PRAGMA page_size") == [(connection.PAGE_SIZE,)]


def test_the_runs_table_is_generated_from_the_run_record(store):
    from enrich.figures import RUN_COLUMNS

    assert tuple(name for _, name, *_ in store.rows("PRAGMA table_info(runs)")) == RUN_COLUMNS


def test_read_only_stores_never_create_a_file(tmp_path):
    from enrich.store import DatabaseMissing

    with pytest.raises(DatabaseMissing):
        open_store(tmp_path / "absent.db", read_only=True).list_runs()
    assert not (tmp_path / "absent.db").exists()


def test_the_backend_uses_one_sqlite_library():
    """By construction: no module of the SQLite backend imports Python's sqlite3 or sqlite-utils."""
    import pathlib

    package = pathlib.Path(connection.__file__).parent
    for module in package.glob("*.py"):
        text = module.read_text()
        assert "import sqlite3" not in text and "sqlite_utils" not in text, module.name
