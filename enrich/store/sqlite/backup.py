"""Backup and restore of an SQLite database: a consistent online copy (``VACUUM INTO``, inside one
read transaction), integrity-checked, flushed to disk, then renamed into place.

A backup is exactly the last committed state, even while a run writes (the run is not
blocked); it is a single self-contained file. A restore verifies the backup, refuses
while a run may be writing, copies the backup next to the database, checks the copy,
moves the database with its ``-wal`` and ``-shm`` files aside as ``DB.replaced-<UTC
time>`` and renames the copy into place.
"""
from __future__ import annotations

import os
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from enrich.store.backupfiles import backup_target, fsync
from enrich.store.errors import (BackupInvalid, DatabaseDirectoryMissing, DatabaseMissing, RestoreRefused,
                                 StorageError)
from enrich.store.sqlite.connection import DriverError, database_error, read_only
from enrich.store.sqlite.schema import SCHEMA_VERSION, schema_version

#: File names a backup may be written to; any other DEST is a directory to put it in.
BACKUP_SUFFIXES = (".db", ".sqlite", ".sqlite3", ".bak")


def integrity_problems(path: Path) -> list[str]:
    """SQLite's ``PRAGMA integrity_check`` of a file, read-only: [] when it is sound."""
    try:
        with read_only(path) as cur:
            rows = [str(row[0]) for row in cur.rows("PRAGMA integrity_check")]
    except (DriverError, StorageError) as exc:
        return [" ".join(str(exc).split())]
    return [] if rows == ["ok"] else rows


def file_schema_version(path: Path) -> int:
    """The schema version recorded in a database file, read-only (0 if it has none)."""
    with read_only(path) as cur:
        return schema_version(cur)


def table_counts_of(path: Path) -> dict[str, int]:
    """Row counts of the data tables of a database file, read-only."""
    with read_only(path) as cur:
        return {table: int(cur.scalar(f"SELECT COUNT(*) FROM {table}"))
                for table in ("transactions", "tags", "annotations", "rejected_rows")}


def _copy(source: Path, dest: Path) -> None:
    """``VACUUM INTO``: one read transaction of ``source``, WAL content included."""
    with read_only(source, query_only=False) as cur:
        cur.execute("VACUUM INTO ?", (str(dest),))


def verified_copy(source: Path, dest: Path) -> dict[str, Any]:
    """Copy ``source`` to the new file ``dest`` (via a ``.partial`` file, renamed once verified)."""
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        _copy(source, partial)
        problems = integrity_problems(partial)
        if problems:
            raise BackupInvalid(f"{dest}: the copy of {source} fails its integrity check "
                                f"({'; '.join(problems[:5])}); it was not kept.")
        fsync(partial)
        os.replace(partial, dest)
        fsync(dest.parent)
    except DriverError as exc:
        raise database_error(source, exc) from exc
    finally:
        partial.unlink(missing_ok=True)
    return {"bytes": dest.stat().st_size, "seconds": round(time.perf_counter() - started, 3)}


def backup(database: Path, dest: str) -> dict[str, Any]:
    """A consistent online copy of ``database`` (see :func:`backup_target` for ``dest``)."""
    if not database.is_file():
        raise DatabaseMissing(f"{database}: no such database file to back up. Check --database.")
    target = backup_target(dest, database.stem, ".db", BACKUP_SUFFIXES)
    done = verified_copy(database, target)
    return {"database": str(database), "backup": str(target), **done, "integrity": "ok",
            "schema_version": file_schema_version(target), "counts": table_counts_of(target)}


def verify_backup(path: Path) -> int:
    """Check that ``path`` is a sound database of ours that this program can use; return its version."""
    if not path.is_file():
        raise DatabaseMissing(f"{path}: no such backup file.")
    problems = integrity_problems(path)
    if problems:
        raise BackupInvalid(f"{path}: fails SQLite's integrity check ({'; '.join(problems[:5])}). "
                            "Restore another backup.")
    version = file_schema_version(path)
    if version < 1:
        raise BackupInvalid(f"{path}: not a transaction-enrichment database (no schema version).")
    if version > SCHEMA_VERSION:
        raise BackupInvalid(f"{path}: schema version {version} is newer than this program "
                            f"({SCHEMA_VERSION}); restore it with the program that wrote it.")
    return version


def _sidecars(path: Path) -> list[Path]:
    """A database file and its WAL and shared-memory files, those that exist."""
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def restore(target: Path, backup_file: Path, blockers: list[str], force: bool) -> dict[str, Any]:
    """Replace ``target`` by a verified copy of ``backup_file``; keep the old files aside.

    ``blockers``: why a run may be writing (see the store's ``restore_blockers``); any
    refuses the restore unless ``force``.
    """
    verify_backup(backup_file)
    if backup_file == target:
        raise RestoreRefused(f"{target}: the backup and the database are the same file.")
    if not target.parent.is_dir():
        raise DatabaseDirectoryMissing(f"{target}: directory {target.parent} does not exist.")
    if blockers and not force:
        raise RestoreRefused(f"{target}: not restored: " + "; ".join(blockers) +
                             ". Wait for the run to finish (or, once it is known to be dead, pass --force).")
    incoming = target.with_name(f"{target.name}.restoring")
    incoming.unlink(missing_ok=True)
    done = verified_copy(backup_file, incoming)
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
    kept = []
    try:
        for old in _sidecars(target):
            aside = Path(str(old).replace(str(target), f"{target}.replaced-{stamp}", 1))
            os.replace(old, aside)
            kept.append(str(aside))
        os.replace(incoming, target)
        fsync(target.parent)
    finally:
        incoming.unlink(missing_ok=True)
    return {"database": str(target), "restored_from": str(backup_file), "replaced": kept,
            "forced_past": blockers if force else [], **done, "integrity": "ok",
            "schema_version": file_schema_version(target), "counts": table_counts_of(target)}
