"""pytest fixtures for the real servers the tests use: PostgreSQL and S3 (moto).

A pytest plugin: ``tests/conftest.py`` lists it in ``pytest_plugins``, so every test module
can ask for these fixtures by name.

PostgreSQL (:mod:`tests.support.postgres`):

* ``postgres_server`` (session): a :class:`ThrowawayPostgres`, started on first use, one
  per pytest-xdist worker, stopped (and its folder deleted) at the end of the session,
  failed tests or not.
* ``postgres_url`` (function): the URL of a new empty database on it,
  ``postgresql://enrich:PASSWORD@127.0.0.1:PORT/test_<hex>``, dropped after the test.

When PostgreSQL's binaries are missing these fixtures FAIL, telling to run
``make test-deps``, unless ``ENRICH_SKIP_POSTGRES=1``, in which case they skip.

S3 (:mod:`tests.support.s3`):

* ``s3_server`` (session): a :class:`MotoServer` (moto in server mode) on 127.0.0.1.
* ``s3_bucket`` (function): a new bucket on it, its name.
* ``metaflow_s3_env`` (function): the environment for a Metaflow run with the S3
  datastore in that bucket. The fixture also applies it to ``os.environ`` for the test
  (and removes AWS and Metaflow variables that could lead elsewhere), so
  ``Runner(..., env=metaflow_s3_env)``, ``subprocess.run(..., env={**os.environ, **env})``
  and boto3 in the test itself all see the same settings.
"""
from __future__ import annotations

import os
import urllib.parse
from collections.abc import Iterator

import pytest

from tests.support.postgres import SKIP_ENV, PostgresUnavailable, ThrowawayPostgres, find_bindir
from tests.support.s3 import MotoServer, metaflow_s3_env as _metaflow_s3_env, variables_to_remove


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
    except Exception:  # noqa: BLE001 - the whole cluster is deleted at session end anyway
        pass


@pytest.fixture(scope="session")
def s3_server() -> Iterator[MotoServer]:
    """moto's server (S3 and the other AWS services) on 127.0.0.1 for this session (worker)."""
    with MotoServer() as server:
        yield server


@pytest.fixture
def s3_bucket(s3_server: MotoServer) -> str:
    """The name of a new, empty bucket on ``s3_server``."""
    return s3_server.create_bucket()


@pytest.fixture
def metaflow_s3_env(s3_server: MotoServer, s3_bucket: str, tmp_path_factory,
                    monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Environment for Metaflow's S3 datastore in ``s3_bucket`` (also applied to os.environ)."""
    env = _metaflow_s3_env(s3_server.endpoint_url, s3_bucket, tmp_path_factory.mktemp("aws-config"))
    for name in variables_to_remove():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def pytest_report_header(config) -> list[str]:  # noqa: ARG001 - pytest's hook signature
    """Say which PostgreSQL the fixtures would use."""
    bindir = find_bindir()
    return [f"throwaway PostgreSQL: {bindir or 'not installed (make test-deps)'}"]


__all__ = ["metaflow_s3_env", "postgres_server", "postgres_url", "s3_bucket", "s3_server"]
