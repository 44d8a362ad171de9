"""Fixtures of the storage tests (the shared ones, ``any_store`` on every backend, are in tests/conftest.py)."""
from __future__ import annotations

import pytest


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """Path of a new SQLite database file."""
    return str(tmp_path / "database.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """A fresh database of each backend in turn (its --database value)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def pg_store(postgres_url):
    from enrich.store import open_store

    store = open_store(postgres_url)
    store.prepare()
    return store
