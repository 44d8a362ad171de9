"""Shared fixtures: temporary databases on every backend and an isolated Metaflow datastore.

The suite reads nothing outside the repository: the original 50-row sample of the job is
tests/data/reference_transactions.csv.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.fixtures"]

ROOT = Path(__file__).resolve().parent.parent
REFERENCE_CSV = Path(__file__).resolve().parent / "data" / "reference_transactions.csv"


@pytest.fixture(autouse=True)
def _isolated_environment(tmp_path_factory, monkeypatch):
    """Never touch the developer's .metaflow/, Twilio settings or the network."""
    datastore = tmp_path_factory.getbasetemp() / "metaflow-datastore"
    datastore.mkdir(exist_ok=True)
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(datastore))
    monkeypatch.setenv("USER", os.environ.get("USER") or "tester")
    for name in ("TWILIO_ACCOUNT_SID", "TWILIO_AUTH_TOKEN", "TWILIO_FROM", "TWILIO_TO",
                 "TWILIO_CONFIG", "PROMETHEUS_PUSHGATEWAY", "ENRICH_SIMULATE_FAILURE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def db_path(tmp_path) -> Path:
    """Path of a database file that does not exist yet."""
    return tmp_path / "database.db"


@pytest.fixture
def sqlite_store(db_path):
    """A new SQLite database file with the project's schema."""
    from enrich.store import open_store

    store = open_store(db_path)
    store.prepare()
    return store


@pytest.fixture
def store(sqlite_store):
    """A new, empty database of the project (SQLite; the shared suites use ``any_store``)."""
    return sqlite_store


BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each backend in turn: the shared suites run once per backend."""
    return request.param


@pytest.fixture
def new_database(backend, tmp_path_factory, request):
    """A factory of new, empty database locations on ``backend`` (a file path, or a URL)."""
    if backend == "postgresql":
        server = request.getfixturevalue("postgres_server")
        return server.create_database

    def new() -> str:
        return str(tmp_path_factory.mktemp("db") / "database.db")

    return new


@pytest.fixture
def new_store(new_database):
    """A factory of new, empty, prepared stores on ``backend`` (for property tests: one per example)."""
    from enrich.store import open_store

    def new():
        store = open_store(new_database())
        store.prepare()
        return store

    return new


@pytest.fixture
def flow_database(backend, tmp_path, request, monkeypatch) -> str:
    """``--database`` for a flow run on ``backend``: a file, or a URL whose password the tasks find in
    ``PGPASSWORD`` (as the launcher hands it over)."""
    if backend == "sqlite":
        return str(tmp_path / "database.db")
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(request.getfixturevalue("postgres_url"))
    monkeypatch.setenv("PGPASSWORD", unquote(parts.password or ""))
    return urlunsplit(parts._replace(netloc=f"{parts.username}@{parts.hostname}:{parts.port}"))


@pytest.fixture
def any_store(new_store):
    """A new, empty database on each backend."""
    return new_store()
