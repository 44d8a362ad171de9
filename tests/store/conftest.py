"""Fixtures of the storage tests: a store of each backend, on a fresh database per test.

``postgres_server`` and ``postgres_url`` have the names and behaviour of those in
``tests/support/fixtures.py`` (the throwaway server of :mod:`tests.support.postgres`, one per
session and xdist worker; a new empty database per test, dropped after it). Once
``tests/conftest.py`` loads that plugin, the two definitions here can go.

``database_url`` is parametrized over both backends (a new SQLite file, a new PostgreSQL
database): a shared suite takes it, or ``any_store``, to run on each.
"""
from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.support.postgres import SKIP_ENV, PostgresUnavailable, ThrowawayPostgres, find_bindir


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[ThrowawayPostgres]:
    """A throwaway PostgreSQL server for this session (this xdist worker)."""
    if find_bindir() is None:
        message = ("PostgreSQL is not installed (no initdb on PATH or in /usr/lib/postgresql/*/bin): "
                   "run `make test-deps` (CI does), or set ENRICH_SKIP_POSTGRES=1 to skip")
        if os.environ.get(SKIP_ENV, "").strip() == "1":
            pytest.skip(message)
        pytest.fail(message, pytrace=False)
    server = ThrowawayPostgres()
    try:
        server.start()
    except PostgresUnavailable as error:
        pytest.fail(f"the throwaway PostgreSQL did not start: {error}", pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: ThrowawayPostgres) -> Iterator[str]:
    """URL (with the password) of a new empty database, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    name = urllib.parse.unquote(urllib.parse.urlsplit(url).path.lstrip("/"))
    try:
        postgres_server.drop_database(name)
    except Exception:  # noqa: BLE001, S110 - the whole cluster is deleted at session end anyway
        pass


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    """Path of a new SQLite database file."""
    return str(tmp_path / "database.db")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request) -> str:
    """A fresh database of each backend in turn (its --database value)."""
    return request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
def any_store(database_url):
    """A store on a fresh database of each backend in turn, its schema prepared."""
    from enrich.store import open_store

    store = open_store(database_url)
    store.prepare()
    return store


@pytest.fixture
def pg_store(postgres_url):
    from enrich.store import open_store

    store = open_store(postgres_url)
    store.prepare()
    return store


@pytest.fixture
def sqlite_store(sqlite_url):
    from enrich.store import open_store

    store = open_store(sqlite_url)
    store.prepare()
    return store
