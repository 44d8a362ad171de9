"""SQLite connections: one library (ADBC's SQLite driver), the project's settings, transactions, errors.

Every connection of this backend, bulk or not, goes through :func:`connect` (or
:func:`read_only`): a process never has one file open through two copies of SQLite, so no
POSIX lock of one copy can be dropped by the other
(https://www.sqlite.org/howtocorrupt.html#multiple_copies_of_sqlite_linked_into_the_same_application).

Each write is one ``BEGIN IMMEDIATE`` transaction (:func:`transaction`) in WAL mode:
readers (datasette, the CLI) never block the writer and never see half a write, and
parallel writers wait for each other (``busy_timeout``) instead of failing with
"database is locked".
"""
from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import adbc_driver_sqlite

from enrich.store import adbc
from enrich.store.adbc import Connection, Cursor, DriverError
from enrich.store.errors import (CannotOpenDatabase, ConstraintViolation, DatabaseBusy, DatabaseDirectoryMissing,
                                 DatabaseMissing, DatabaseReadOnly, NotADatabase, StorageError, StorageFull)

BUSY_TIMEOUT_MS = 10 * 60 * 1000
PAGE_SIZE = 16384  # for new files: fewer, fuller b-tree pages for millions of rows
BATCH_ROWS = 262_144  # rows per Arrow batch read back
#: Page cache of a connection, in KiB: 128 MiB for bulk work (as fast as 256 MiB for 10M-row
#: loads), 64 MiB otherwise.
BULK_CACHE_KIB, CACHE_KIB = 131072, 65536
#: The batch load's cache: it appends in id order and reads stored rows by id range once, so a
#: small cache is as fast (10M rows, 2026-11-30: fresh 10.8 s vs 10.9 s with 128 MiB; re-run
#: 3.8 s vs 4.2 s) and keeps its process, which holds the parsed chunks, under 1 GiB.
LOAD_CACHE_KIB = 16384


@contextmanager
def connect(path: Path, *, foreign_keys: bool = True, busy_timeout_ms: int = BUSY_TIMEOUT_MS,
            bulk: bool = False, cache_kib: int | None = None) -> Iterator[Cursor]:
    """A connection to the database file ``path`` (created if absent), closed on exit.

    ``foreign_keys=False`` is for statements whose rows satisfy the foreign keys by
    construction (they skip a look-up per row per key); the referential-integrity check
    verifies the tables after every run anyway. A write waits up to ``busy_timeout_ms`` for
    another writer, then raises :class:`DatabaseBusy`. ``cache_kib`` overrides the page cache's
    size (default: :data:`BULK_CACHE_KIB` for ``bulk``, else :data:`CACHE_KIB`).
    """
    if not path.parent.is_dir():
        raise DatabaseDirectoryMissing(f"{path}: directory {path.parent} does not exist. "
                                       "Create it or pass another --database.")
    new_file = not path.exists() or path.stat().st_size == 0
    try:
        conn = Connection(adbc_driver_sqlite.connect(str(path)))
    except DriverError as exc:
        raise database_error(path, exc) from exc
    with _session(conn, path, {"adbc.sqlite.query.batch_rows": str(BATCH_ROWS)}) as cur:
        if new_file:  # before WAL and any table
            cur.execute(f"PRAGMA page_size = {PAGE_SIZE}")
        for pragma in _pragmas(foreign_keys, busy_timeout_ms, cache_kib or (BULK_CACHE_KIB if bulk else CACHE_KIB)):
            cur.execute(pragma)
        if cur.scalar("PRAGMA journal_mode") != "wal":
            cur.scalar("PRAGMA journal_mode = WAL")
        yield cur


@contextmanager
def read_only(path: Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS, *, query_only: bool = True) -> Iterator[Cursor]:
    """The database opened for reading only: no migration, no write, no file created.

    Looking at a database this way never changes it and never waits for a run's write
    transaction (WAL readers do not block writers). ``query_only=False`` only for ``VACUUM INTO``,
    which writes another file.
    """
    if not path.is_file():
        raise DatabaseMissing(f"{path}: no such database file. Pass the path of an existing database "
                              "with --database.")
    try:
        conn = Connection(adbc_driver_sqlite.connect(f"{path.as_uri()}?mode=ro"))
    except DriverError as exc:
        raise database_error(path, exc) from exc
    with _session(conn, path) as cur:
        cur.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        if query_only:
            cur.execute("PRAGMA query_only = ON")
        yield cur


@contextmanager
def _session(conn: Connection, path: Path, options: dict[str, str] | None = None) -> Iterator[Cursor]:
    """A cursor on ``conn``, both closed on exit; the driver's errors that are a state of the file
    or disk become this package's errors (anything else is a bug, raised as it is)."""
    try:
        cur = Cursor(conn, options)
        try:
            yield cur
        finally:
            cur.close()
    except DriverError as exc:
        if condition_of(exc):
            raise database_error(path, exc) from exc
        raise
    finally:
        conn.close()


def _pragmas(foreign_keys: bool, busy_timeout_ms: int, cache_kib: int) -> tuple[str, ...]:
    return (f"PRAGMA busy_timeout = {int(busy_timeout_ms)}", "PRAGMA synchronous = NORMAL",
            f"PRAGMA foreign_keys = {'ON' if foreign_keys else 'OFF'}", f"PRAGMA cache_size = -{cache_kib}",
            "PRAGMA temp_store = FILE")


def transaction(cur: Cursor) -> AbstractContextManager[Cursor]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back whole on any exception (SQLite has already
    rolled back after a full disk: the rollback is then skipped)."""
    return adbc.transaction(cur, "BEGIN IMMEDIATE", _rollback)


def _rollback(cur: Cursor) -> None:
    try:
        cur.execute("ROLLBACK")
    except DriverError as exc:  # SQLite rolled back by itself (full disk, I/O error)
        if "no transaction is active" not in str(exc):
            raise


#: SQLite's messages for the conditions of a file or disk (ADBC reports SQLite's message, not its code).
_CONDITIONS: tuple[tuple[str, str], ...] = (
    ("disk is full", "full"), ("database or disk is full", "full"), ("readonly", "readonly"),
    ("read-only", "readonly"), ("not a database", "notadb"), ("malformed", "notadb"),
    ("unable to open", "cantopen"), ("failed to open", "cantopen"), ("disk I/O error", "ioerr"),
    ("database is locked", "busy"), ("database table is locked", "busy"),
    ("constraint failed", "constraint"),
)


def condition_of(exc: BaseException) -> str | None:
    """The condition of the file or disk that ``exc`` reports (see :func:`database_error`), or None."""
    text = str(exc)
    return next((condition for phrase, condition in _CONDITIONS if phrase in text), None)


def database_error(path: Path | str, exc: BaseException) -> StorageError:
    """The project's error for an SQLite error on ``path``, named after its condition.

    Conditions of the file or the disk (read-only, full, not a database, cannot open,
    I/O error, still locked after the busy timeout) become an error whose message says
    what to do; any other becomes a plain :class:`StorageError` naming the file and
    SQLite's message. Raise it ``from exc`` so that the original stays attached.
    """
    detail = " ".join(str(exc).split())
    condition = condition_of(exc)
    if condition == "readonly":
        return DatabaseReadOnly(
            f"{path}: the database cannot be written ({detail}); nothing was written. Make the file, "
            "its -wal and -shm files and its directory writable by this user (and check the disk is "
            "not mounted read-only), then run again.")
    if condition == "full":
        return StorageFull(f"{path}: the disk is full ({detail}); the write was rolled back and "
                           "nothing stored was lost. Free disk space, then run again.")
    if condition == "notadb":
        return NotADatabase(
            f"{path}: cannot use this file as the database: it is not an SQLite database or is damaged "
            f"({detail}); it was left untouched. Check that --database names the right file; if it is "
            "damaged, restore it from a backup or move it away to start a new database.")
    if condition == "cantopen":
        return CannotOpenDatabase(
            f"{path}: cannot open or create the database file ({detail}). Check that the path is a "
            "file, that its directory is writable by this user and that the disk is not mounted "
            "read-only.")
    if condition == "ioerr":
        return StorageError(f"{path}: disk I/O error ({detail}); the write was rolled back. "
                            "Check the disk, then run again.")
    if condition == "busy":
        return DatabaseBusy(f"{path}: the database stayed locked by another writer past the busy "
                            f"timeout ({detail}); nothing was written. Run again once the other writer "
                            "has finished.")
    if condition == "constraint":
        return ConstraintViolation(f"{path}: a write broke a database constraint ({detail}); nothing was "
                                   "written")
    return StorageError(f"{path}: cannot use this file as the database ({detail}). Check the path, "
                        "its permissions and free disk space.")
