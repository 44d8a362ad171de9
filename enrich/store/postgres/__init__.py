"""The PostgreSQL backend: a database on a PostgreSQL server, named by a ``postgresql://`` URL.

Modules by concern, as for SQLite: :mod:`.connection` (the one driver, ADBC's, transactions,
errors by SQLSTATE), :mod:`.schema` (versioned migrations under an advisory lock),
:mod:`.loading` (the batch load: COPY into staging tables, then set-based SQL),
:mod:`.enrichment` (pending work, tags, annotations, search indexing), :mod:`.checks` (the
checks' scans), :mod:`.lock` (the run lock: a lease row under ``pg_advisory_xact_lock``),
:mod:`.search` (``tsvector`` + GIN), :mod:`.queries` (views and canned queries),
:mod:`.backup` (``pg_dump``/``pg_restore``). The ledger's SQL is shared with SQLite
(:mod:`enrich.store.ledger`, numbered placeholders).

Each call opens its own connection (closed on return), so a store can be shared by threads.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

from enrich.store.adbc import Cursor
from enrich.store.common import BackendStore
from enrich.store.errors import AccessDenied
from enrich.store.location import POSTGRESQL, DatabaseLocation
from enrich.store.postgres import backup as backups
from enrich.store.postgres import checks, enrichment, lock, schema, search
from enrich.store.postgres import connection
from enrich.store.postgres.connection import SESSIONS, DriverError, connect, missing_database
from enrich.store.postgres.lock import DIALECT
from enrich.store.postgres.queries import CANNED_QUERIES
from enrich.store.records import LockHolder


class PostgresStore(BackendStore):
    """A database on a PostgreSQL server. ``read_only`` stores never create, migrate or write it
    (their sessions refuse writes)."""

    backend = POSTGRESQL
    _connection = connection
    _schema = schema
    _enrichment = enrichment
    _checks = checks
    _lock = lock
    _search = search
    _dialect = DIALECT
    _canned_queries = CANNED_QUERIES
    _placeholder = "$"
    _no_wait_option = "lock_timeout_ms"
    _driver_errors = (DriverError,)

    def __repr__(self) -> str:
        return f"PostgresStore({self.location.display!r}, read_only={self.read_only})"

    # ------------------------------------------------------------------ connections
    def _connect(self, *, read_only: bool = False, **options: Any) -> AbstractContextManager[Cursor]:
        if options:  # (a lock timeout is a setting of the session: not for one shared)
            return connect(self.location, read_only=read_only, **options)
        return SESSIONS.cursor(self.location, read_only=read_only)

    def _bulk(self) -> DatabaseLocation:
        self.prepare()
        return self.location

    def _loading(self) -> ModuleType:
        from enrich.store.postgres import loading  # (pandas: only the loading step pays for it)

        return loading

    # ------------------------------------------------------------------ schema
    def exists(self) -> bool:
        try:
            with connect(self.location, read_only=True) as cur:
                return not cur.scalar("SELECT to_regclass('runs') IS NULL")
        except AccessDenied as exc:
            if missing_database(exc.__cause__):
                return False
            raise

    def lock_holder(self) -> LockHolder | None:
        with self._cursor() as cur:
            return lock.holder(cur)

    # ------------------------------------------------------------------ backup and restore
    def backup(self, dest: str) -> dict[str, Any]:
        return backups.backup(self.location, dest)

    def restore(self, source: str, *, force: bool, stale_after_hours: float,
                own_lock: str | None) -> dict[str, Any]:
        backup_file = Path(source).expanduser().resolve()
        backups.verify_backup(self.location, backup_file)
        return backups.restore(self.location, backup_file, self.restore_blockers(stale_after_hours, own_lock), force)

    def verify_backup(self, source: str) -> int:
        return backups.verify_backup(self.location, Path(source).expanduser().resolve())
