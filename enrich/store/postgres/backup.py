"""Backup and restore of a PostgreSQL database with PostgreSQL's own tools: ``pg_dump -Fc`` and
``pg_restore --clean --if-exists --single-transaction``.

A backup is one custom-format archive, taken from one snapshot (exported by a repeatable-read
transaction that also counts the tables, so the counts reported are those of the archive),
even while a run writes; it is written as a ``.partial`` file, checked by ``pg_restore
--list`` and its schema version read back, flushed to disk, then renamed into place.

A restore verifies the archive, refuses while a run may be writing (unless forced), first
dumps the current database aside (``<name>.replaced-<UTC time>.dump`` next to the backup:
nothing is lost), then replaces every object of the archive in one transaction.

The password never appears on a command line: it is handed to the tools as ``PGPASSWORD``
(or they find it in ``~/.pgpass`` as usual). Without the tools on ``PATH``, both refuse with
:class:`UnsupportedOperation` naming them.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from enrich.store.backupfiles import backup_target, fsync
from enrich.store.errors import (BackupInvalid, DatabaseMissing, RestoreRefused, StorageError,
                                 UnsupportedOperation)
from enrich.store.location import DatabaseLocation
from enrich.store.postgres.connection import connect
from enrich.store.postgres.schema import SCHEMA_VERSION

#: File names a backup may be written to; any other DEST is a directory to put it in.
BACKUP_SUFFIXES = (".dump", ".pgdump", ".backup", ".bak")
COUNTED_TABLES = ("transactions", "tags", "annotations", "rejected_rows")
_TIMEOUT_S = 6 * 3600


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise _unsupported(f"{name} is not installed here")
    return found


def _unsupported(why: str) -> UnsupportedOperation:
    return UnsupportedOperation(
        f"{why}: back up and restore a PostgreSQL database with PostgreSQL's tools, e.g. "
        "`pg_dump -Fc -f enrich.dump postgresql://user@host/db` and "
        "`pg_restore --clean --if-exists --single-transaction -d postgresql://user@host/db enrich.dump` "
        "(Debian: apt-get install postgresql-client).")


def _env(location: DatabaseLocation) -> dict[str, str]:
    env = dict(os.environ)
    if location.password is not None:
        env["PGPASSWORD"] = location.password
    return env


def _run(location: DatabaseLocation, argv: list[str], what: str) -> subprocess.CompletedProcess[bytes]:
    result = subprocess.run(argv, env=_env(location), stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=_TIMEOUT_S, check=False)
    if result.returncode != 0:
        detail = " ".join(result.stderr.decode(errors="replace").split())[-1500:]
        password = location.password
        if password:
            detail = detail.replace(password, "***")
        raise StorageError(f"{location.display}: {what} failed ({Path(argv[0]).name} exit {result.returncode}: "
                           f"{detail})")
    return result


def _dbname(location: DatabaseLocation) -> str:
    return location.without_password().target


def dump(location: DatabaseLocation, target: Path) -> dict[str, Any]:
    """``pg_dump -Fc`` of one snapshot into ``target`` (via a ``.partial`` file, renamed once verified);
    the row counts of that snapshot."""
    pg_dump = _tool("pg_dump")
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        with connect(location, read_only=True) as cur:
            cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            snapshot = str(cur.scalar("SELECT pg_export_snapshot()"))
            counts = {table: int(cur.scalar(f"SELECT COUNT(*) FROM {table}")) for table in COUNTED_TABLES}
            _run(location, [pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={partial}",
                            f"--dbname={_dbname(location)}"], "pg_dump")
            cur.execute("COMMIT")
        version = archive_schema_version(location, partial)
        if version < 1:
            raise BackupInvalid(f"{target}: the archive of {location.display} holds no schema version; it was "
                                "not kept.")
        fsync(partial)
        os.replace(partial, target)
        fsync(target.parent)
    finally:
        partial.unlink(missing_ok=True)
    return {"bytes": target.stat().st_size, "seconds": round(time.perf_counter() - started, 3),
            "schema_version": version, "counts": counts}


def backup(location: DatabaseLocation, dest: str) -> dict[str, Any]:
    """A consistent online archive of the database (see :func:`backup_target` for ``dest``)."""
    _tool("pg_dump")
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", location.target.rsplit("/", 1)[-1].split("?")[0]) or "enrich"
    target = backup_target(dest, name, ".dump", BACKUP_SUFFIXES)
    done = dump(location, target)
    return {"database": location.display, "backup": str(target), **done, "integrity": "ok"}


def archive_schema_version(location: DatabaseLocation, path: Path) -> int:
    """The schema version recorded in a ``pg_dump -Fc`` archive (0 if it has none); raises
    :class:`BackupInvalid` if ``pg_restore`` cannot read it."""
    pg_restore = _tool("pg_restore")
    listing = subprocess.run([pg_restore, "--list", str(path)], stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=_TIMEOUT_S, check=False)
    if listing.returncode != 0:
        detail = " ".join(listing.stderr.decode(errors="replace").split())[-500:]
        raise BackupInvalid(f"{path}: not a readable pg_dump archive ({detail}). Restore another backup.")
    if b"TABLE DATA" not in listing.stdout or b" schema_version " not in listing.stdout:
        return 0
    data = _run(location, [pg_restore, "--data-only", "--table=schema_version", "--file=-", str(path)],
                "reading the backup's schema version").stdout.decode(errors="replace")
    versions, copying = [], False
    for line in data.splitlines():
        if line.startswith("COPY ") and "schema_version" in line:
            copying = True
        elif copying and line == "\\.":
            copying = False
        elif copying and line.split("\t", 1)[0].isdigit():
            versions.append(int(line.split("\t", 1)[0]))
    return max(versions, default=0)


def verify_backup(location: DatabaseLocation, path: Path) -> int:
    """Check that ``path`` is an archive of one of our databases that this program can restore."""
    if not path.is_file():
        raise DatabaseMissing(f"{path}: no such backup file.")
    version = archive_schema_version(location, path)
    if version < 1:
        raise BackupInvalid(f"{path}: not a transaction-enrichment database archive (no schema version).")
    if version > SCHEMA_VERSION:
        raise BackupInvalid(f"{path}: schema version {version} is newer than this program "
                            f"({SCHEMA_VERSION}); restore it with the program that wrote it.")
    return version


def restore(location: DatabaseLocation, backup_file: Path, blockers: list[str], force: bool) -> dict[str, Any]:
    """Replace the database's objects by those of ``backup_file``, in one transaction, after dumping
    the current database aside. ``blockers``: why a run may be writing; any refuses unless ``force``."""
    pg_restore = _tool("pg_restore")
    verify_backup(location, backup_file)
    if blockers and not force:
        raise RestoreRefused(f"{location.display}: not restored: " + "; ".join(blockers) +
                             ". Wait for the run to finish (or, once it is known to be dead, pass --force).")
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
    aside = backup_file.with_name(f"{backup_file.stem}.replaced-{stamp}.dump")
    kept = [str(aside)] if _has_schema(location) and dump(location, aside) else []
    started = time.perf_counter()
    _run(location, [pg_restore, "--clean", "--if-exists", "--single-transaction", "--exit-on-error", "--no-owner",
                    f"--dbname={_dbname(location)}", str(backup_file)], "pg_restore")
    with connect(location, read_only=True) as cur:
        version = int(cur.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version"))
        counts = {table: int(cur.scalar(f"SELECT COUNT(*) FROM {table}")) for table in COUNTED_TABLES}
    return {"database": location.display, "restored_from": str(backup_file), "replaced": kept,
            "forced_past": blockers if force else [], "bytes": backup_file.stat().st_size,
            "seconds": round(time.perf_counter() - started, 3), "integrity": "ok",
            "schema_version": version, "counts": counts}


def _has_schema(location: DatabaseLocation) -> bool:
    with connect(location, read_only=True) as cur:
        return not cur.scalar("SELECT to_regclass('schema_version') IS NULL")
