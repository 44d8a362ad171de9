"""Storage: one small typed interface (:class:`Store`), one implementation per backend.

``--database`` names the backend: a file path is SQLite (:mod:`enrich.store.sqlite`, the
zero-setup default), a ``postgresql://`` URL is PostgreSQL (:mod:`enrich.store.postgres`).
Only this package imports a database driver; everything above it sees :class:`Store`,
plain dataclasses (:mod:`enrich.store.records`, :class:`enrich.figures.RunRecord`) and
Arrow tables. Each backend is imported only when a database of its kind is opened.
"""
from __future__ import annotations

import os

from enrich.store.errors import *  # noqa: F403 - the storage errors are part of this package's API
from enrich.store.errors import __all__ as _errors
from enrich.store.interface import Store
from enrich.store.location import POSTGRESQL, SQLITE, DatabaseLocation, parse_location, redact_url
from enrich.store.records import (ANNOTATIONS, ENRICHMENT_KINDS, PENDING_KINDS, SEARCH, TAGS, WHOLE_DATABASE,
                                  AlertRecord, CheckRecord, LoadStats, LockClaim, LockHolder, LockOutcome,
                                  PublishStats, StepAttempt, TableFingerprint)
from enrich.store.shared_sql import split_annotation_counts

__all__ = [*_errors, "Store", "open_store", "DatabaseLocation", "parse_location", "redact_url", "SQLITE",
           "POSTGRESQL", "TAGS", "ANNOTATIONS", "SEARCH", "ENRICHMENT_KINDS", "PENDING_KINDS", "AlertRecord",
           "CheckRecord", "LoadStats", "LockClaim", "LockHolder", "LockOutcome", "PublishStats", "StepAttempt",
           "TableFingerprint", "WHOLE_DATABASE", "split_annotation_counts"]


def open_store(database: str | os.PathLike[str] | DatabaseLocation, *, read_only: bool = False) -> Store:
    """The store of ``--database`` (a file path or a ``postgresql://`` URL). Opening connects to
    nothing: each operation opens its own connection. ``read_only`` stores never create,
    migrate or write the database."""
    location = database if isinstance(database, DatabaseLocation) else parse_location(database)
    if location.backend == POSTGRESQL:
        from enrich.store.postgres import PostgresStore

        return PostgresStore(location, read_only=read_only)
    from enrich.store.sqlite import SQLiteStore

    return SQLiteStore(location, read_only=read_only)
