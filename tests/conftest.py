"""Shared fixtures: temporary databases and an isolated Metaflow datastore."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_CSV = ROOT.parent / "shared" / "reference" / "transactions.csv"


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """Never touch the developer's .metaflow/, Twilio settings or the network."""
    datastore = tmp_path_factory.getbasetemp() / "metaflow-datastore"
    datastore.mkdir(exist_ok=True)
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(datastore))
    monkeypatch.setenv("USER", os.environ.get("USER") or "tester")
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "TWILIO_TO",
                 "TWILIO_CONFIG", "PROMETHEUS_PUSHGATEWAY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db_path(tmp_path) -> Path:
    """Path of a database file that does not exist yet."""
    return tmp_path / "database.db"


@pytest.fixture
def fresh_db(db_path):
    """A new database with the project's schema (a real SQLite file)."""
    from enrich import storage

    db = storage.connect(db_path)
    yield db
    db.close()


class Store:
    """A test database file. Bulk operations (load, publish, read in bulk) take its path and open
    their own connection, so a test opens a sqlite3 connection only around each read
    (see storage's note on two SQLite libraries in one process)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, function, *args, **kwargs):
        """Call ``function(db, *args, **kwargs)`` on a connection opened for the call."""
        from enrich import storage

        db = storage.connect(self.path)
        try:
            return function(db, *args, **kwargs)
        finally:
            db.close()

    def rows(self, sql: str, params=()) -> list[tuple]:
        """Run one statement and return its rows as tuples."""
        return self(lambda db: [tuple(r) for r in db.execute(sql, params).fetchall()])


@pytest.fixture
def store(db_path) -> Store:
    """A new database file with the project's schema, no connection left open."""
    from enrich import storage

    storage.connect(db_path).close()
    return Store(db_path)
