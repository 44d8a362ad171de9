"""The storage errors, each named after its condition; the message names the database and what to do.

All derive from :class:`enrich.errors.StorageError`. Those a person must fix (retrying at
once cannot help) also derive from :class:`enrich.errors.PermanentError`; the others
(a busy database, a dropped connection, a table changed meanwhile) are transient and
retried by the flow.
"""
from __future__ import annotations

from typing import Any

from enrich.errors import PermanentError, StorageError

__all__ = [
    "StorageError", "DatabaseMissing", "DatabaseDirectoryMissing", "NotADatabase", "DatabaseReadOnly",
    "CannotOpenDatabase", "StorageFull", "SchemaTooNew", "AccessDenied", "DatabaseBusy", "ConnectionLost",
    "ConcurrentModification", "ConstraintViolation", "RunLockHeld", "RunAbandoned", "BackupInvalid",
    "RestoreRefused", "UnsupportedOperation", "BadDatabaseLocation",
]


class BadDatabaseLocation(StorageError, PermanentError):
    """``--database`` is neither a file path nor a ``postgresql://`` URL this program can use."""


class DatabaseMissing(StorageError, PermanentError):
    """The database (or backup) named does not exist."""


class DatabaseDirectoryMissing(StorageError, PermanentError):
    """The directory that should hold the database file does not exist."""


class NotADatabase(StorageError, PermanentError):
    """The file is not a database of this program, or is damaged."""


class DatabaseReadOnly(StorageError, PermanentError):
    """The database, its files, its directory or its disk cannot be written."""


class CannotOpenDatabase(StorageError, PermanentError):
    """The database cannot be opened or created (permissions, a directory, a read-only disk...)."""


class StorageFull(StorageError, PermanentError):
    """The disk (or the database's size limit) is full."""


class SchemaTooNew(StorageError, PermanentError):
    """The database was written by a newer version of the program."""


class AccessDenied(StorageError, PermanentError):
    """The server refused the credentials, the database does not exist there, or a privilege is missing."""


class DatabaseBusy(StorageError):
    """Another writer held the database's write lock for longer than this one would wait."""


class ConnectionLost(StorageError):
    """The connection to the database server broke (reset, server restart, serialization failure,
    deadlock): the transaction was rolled back and the work can be retried."""


class ConcurrentModification(StorageError):
    """A table changed between deriving its rows and publishing them: the step's retry derives them again."""


class ConstraintViolation(StorageError):
    """A write broke a constraint of the schema (e.g. a tag for a transaction that does not exist)."""


class RunLockHeld(StorageError, PermanentError):
    """Another run, still alive, holds the database's run lock."""

    def __init__(self, message: str, holder: Any = None) -> None:
        super().__init__(message)
        self.holder = holder


class RunAbandoned(StorageError, PermanentError):
    """This step's run was killed (its runtime process is gone) or lost its lock: the step must not write."""


class BackupInvalid(StorageError, PermanentError):
    """A backup (or a copy being made) fails its integrity check or is not one of our databases."""


class RestoreRefused(StorageError, PermanentError):
    """Restoring now could lose a run's writes: a run is in progress, or that cannot be ruled out."""


class UnsupportedOperation(StorageError, PermanentError):
    """This backend does not do that operation (the message names the tool that does)."""
