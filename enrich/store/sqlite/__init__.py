"""The SQLite backend: one database file in WAL mode, the zero-setup default.

Modules by concern: :mod:`.connection` (the one driver, settings, transactions, errors),
:mod:`.schema` (versioned migrations), :mod:`.loading` (the batch load),
:mod:`.enrichment` (pending work, tags, annotations, search indexing), :mod:`.checks`
(the checks' scans), :mod:`.lock` (the run lock), :mod:`.search` (FTS5), :mod:`.queries`
(views and canned queries for datasette), :mod:`.backup` (backup and restore). The ledger's
SQL is shared with the other backends (:mod:`enrich.store.ledger`).
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path
from types import ModuleType
from typing import Any

from enrich.store import lockrow
from enrich.store.adbc import Cursor
from enrich.store.common import BackendStore
from enrich.store.errors import NotADatabase
from enrich.store.location import SQLITE, DatabaseLocation
from enrich.store.records import LockHolder
from enrich.store.sqlite import backup as backups
from enrich.store.sqlite import checks, enrichment, lock, schema, search
from enrich.store.sqlite import connection
from enrich.store.sqlite.connection import DriverError, connect
from enrich.store.sqlite.connection import read_only as open_read_only
from enrich.store.sqlite.lock import DIALECT
from enrich.store.sqlite.queries import CANNED_QUERIES


class SQLiteStore(BackendStore):
    """A database file. Each call opens its own connection (closed on return), so a store can be
    shared by threads; ``read_only`` stores never create, migrate or write the file."""

    backend = SQLITE
    _connection = connection
    _schema = schema
    _enrichment = enrichment
    _checks = checks
    _lock = lock
    _search = search
    _dialect = DIALECT
    _canned_queries = CANNED_QUERIES
    _placeholder = "?"
    _no_wait_option = "busy_timeout_ms"
    _driver_errors = (DriverError,)

    def __init__(self, location: DatabaseLocation, *, read_only: bool = False) -> None:
        super().__init__(location, read_only=read_only)
        self.path = location.path

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r}, read_only={self.read_only})"

    # ------------------------------------------------------------------ connections
    def _connect(self, *, read_only: bool = False, **options: Any) -> AbstractContextManager[Cursor]:
        return open_read_only(self.path) if read_only else connect(self.path, **options)

    def _bulk(self) -> Path:
        self.prepare()
        return self.path

    def _loading(self) -> ModuleType:
        from enrich.store.sqlite import loading  # (pandas: only the loading step pays for it)

        return loading

    # ------------------------------------------------------------------ schema
    def exists(self) -> bool:
        if not self.path.is_file():
            return False
        try:
            with open_read_only(self.path) as cur:
                return bool(cur.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'runs'"))
        except NotADatabase:
            return False

    def _occupied(self) -> bool:
        return self.path.exists()  # any file: one that cannot be read cannot rule out a run

    def lock_holder(self) -> LockHolder | None:
        with self._cursor() as cur:
            if not cur.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'run_lock'"):
                return None
            if not cur.scalar("SELECT COUNT(*) FROM pragma_table_info('run_lock') WHERE name = 'expires_at'"):
                rows = cur.dicts('SELECT run_id, "user", host, pid, process_start, acquired_at FROM run_lock')
                return LockHolder.from_row(rows[0]) if rows else None
            return lockrow.holder(cur, DIALECT)

    # ------------------------------------------------------------------ backup and restore
    def backup(self, dest: str) -> dict[str, Any]:
        return backups.backup(self.path, dest)

    def restore(self, source: str, *, force: bool, stale_after_hours: float,
                own_lock: str | None) -> dict[str, Any]:
        backup_file = Path(source).expanduser().resolve()
        backups.verify_backup(backup_file)
        return backups.restore(self.path, backup_file, self.restore_blockers(stale_after_hours, own_lock), force)

    def verify_backup(self, source: str) -> int:
        return backups.verify_backup(Path(source).expanduser().resolve())
