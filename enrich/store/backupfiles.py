"""Where a backup file goes, and making it durable: alike on every backend (each backend owns
how it copies: ``VACUUM INTO`` for SQLite, ``pg_dump`` for PostgreSQL)."""
from __future__ import annotations

import os
from datetime import datetime, timezone
from pathlib import Path

from enrich.store.errors import DatabaseDirectoryMissing


def backup_target(dest: str, name: str, suffix: str, suffixes: tuple[str, ...]) -> Path:
    """The file a backup goes to. ``dest`` is a directory (created if missing) when it ends with
    ``/``, is one, or has none of the backup ``suffixes``: then the backup is
    ``<name>-<UTC time><suffix>`` inside. An existing file is never overwritten."""
    target = Path(dest).expanduser()
    as_directory = dest.endswith(("/", os.sep)) or target.is_dir() or target.suffix.lower() not in suffixes
    if as_directory:
        target.mkdir(parents=True, exist_ok=True)
        target = target.resolve() / f"{name}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}{suffix}"
    else:
        target = target.resolve()
        if not target.parent.is_dir():
            raise DatabaseDirectoryMissing(f"{target}: directory {target.parent} does not exist. Create it, or "
                                           "name a directory (ending with /) to put the backup in.")
    if target.exists():
        raise FileExistsError(f"{target}: already exists; a backup never overwrites a file. "
                              "Name a new file or a directory.")
    return target


def fsync(path: Path) -> None:
    """Flush a file (or a directory's entries) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
