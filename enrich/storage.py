"""Storage: the SQLite schema and every SQL statement of the project.

Nothing else in the project opens SQLite by hand: the flow, the checks, the CLI
and the tests go through the functions here. The database is a plain SQLite file
in WAL mode (readers such as datasette never block the writer and never see half
a publish) managed through sqlite-utils.

Write discipline
----------------
Each write (load a batch, publish tags, publish annotations, a ledger row) is one
``BEGIN IMMEDIATE`` transaction: it either lands whole or not at all, so a retry
repeats it safely. Parallel writers wait for each other (``busy_timeout``) instead
of failing with "database is locked".

Pending enrichment
------------------
Loading a batch records, in the same transaction, that its new and changed rows
still need tags and annotations (``pending_enrichment``). Publishing tags (or
annotations) re-derives the rows of every pending run and clears those runs in
the same transaction, so a run whose tagging failed is caught up by the next one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import adbc_driver_manager as adbc_errors
import adbc_driver_sqlite.dbapi as adbc_sqlite
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import sqlite_utils

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 10 * 60 * 1000
READ_CHUNK_ROWS = 500_000
TAGS = "tags"
ANNOTATIONS = "annotations"
ENRICHMENT_KINDS = (TAGS, ANNOTATIONS)
SEARCH = "search"  # the full-text index of the wordings
PENDING_KINDS = (*ENRICHMENT_KINDS, SEARCH)  # what a batch that changed rows leaves to do


class StorageError(Exception):
    """The database cannot be used; the message names the file and what to do."""


class ConstraintViolation(StorageError):
    """A write broke a constraint of the schema (e.g. a tag for a transaction that does not exist)."""


class StorageFull(StorageError):
    """The disk (or the database's size limit) is full."""


@dataclass(frozen=True)
class LoadStats:
    """What loading one CSV batch did (``rows_read = rows_loaded + rows_rejected + rows_duplicate``)."""

    rows_read: int
    rows_loaded: int
    rows_new: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    rows_duplicate: int
    cents_in_file: int = 0  # control total: sum of the batch's amounts as read from the file
    cents_stored: int = 0  # the sum stored for those ids once the batch is loaded


@dataclass(frozen=True)
class PublishStats:
    """What one publish did: rows written, stale rows removed, and the scope re-derived."""

    written: int
    removed: int
    pending_runs: tuple[str, ...]


# --------------------------------------------------------------------------- schema
_SCHEMA_V1: tuple[str, ...] = (
    """CREATE TABLE transactions (
        id INTEGER PRIMARY KEY,
        amount_cents INTEGER NOT NULL,
        amount REAL GENERATED ALWAYS AS (amount_cents / 100.0) VIRTUAL,
        wording TEXT NOT NULL,
        first_run_id TEXT NOT NULL,
        last_changed_run_id TEXT NOT NULL
    )""",
    "CREATE INDEX transactions_last_changed_run ON transactions(last_changed_run_id)",
    """CREATE TABLE tags (
        transaction_id INTEGER PRIMARY KEY REFERENCES transactions(id),
        tag TEXT NOT NULL,
        run_id TEXT NOT NULL
    )""",
    "CREATE INDEX tags_tag ON tags(tag)",
    """CREATE TABLE annotations (
        transaction_id INTEGER PRIMARY KEY REFERENCES transactions(id),
        annotation TEXT NOT NULL,
        run_id TEXT NOT NULL
    )""",
    "CREATE INDEX annotations_annotation ON annotations(annotation)",
    """CREATE TABLE rejected_rows (
        run_id TEXT NOT NULL,
        line INTEGER NOT NULL,
        raw TEXT NOT NULL,
        reason TEXT NOT NULL,
        PRIMARY KEY (run_id, line)
    )""",
    """CREATE TABLE pending_enrichment (
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('tags', 'annotations')),
        PRIMARY KEY (run_id, kind)
    )""",
    """CREATE TABLE enrichment_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE runs (
        run_id TEXT PRIMARY KEY,
        status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
        started_at TEXT NOT NULL,
        finished_at TEXT,
        user TEXT,
        input_path TEXT,
        input_sha256 TEXT,
        input_bytes INTEGER,
        tags_sha256 TEXT,
        match_mode TEXT,
        rows_read INTEGER,
        rows_loaded INTEGER,
        rows_new INTEGER,
        rows_updated INTEGER,
        rows_unchanged INTEGER,
        rows_rejected INTEGER,
        rows_duplicate INTEGER,
        tagged INTEGER,
        untagged INTEGER,
        ambiguous INTEGER,
        annotated INTEGER,
        zero_amount INTEGER
    )""",
    "CREATE INDEX runs_status ON runs(status, started_at)",
    """CREATE TABLE step_runs (
        run_id TEXT NOT NULL,
        step TEXT NOT NULL,
        task_id TEXT NOT NULL,
        attempt INTEGER NOT NULL,
        status TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
        started_at TEXT NOT NULL,
        finished_at TEXT,
        duration_s REAL,
        error_type TEXT,
        error_message TEXT,
        PRIMARY KEY (run_id, step, task_id, attempt)
    )""",
    "CREATE INDEX step_runs_step ON step_runs(step, duration_s)",
    """CREATE TABLE alerts (
        run_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        channel TEXT NOT NULL,
        status TEXT NOT NULL,
        recipients TEXT NOT NULL,
        message TEXT NOT NULL,
        error TEXT
    )""",
    "CREATE INDEX alerts_run ON alerts(run_id)",
    """CREATE TABLE check_results (
        run_id TEXT NOT NULL,
        check_name TEXT NOT NULL,
        severity TEXT NOT NULL CHECK (severity IN ('critical', 'warning', 'info')),
        passed INTEGER NOT NULL CHECK (passed IN (0, 1)),
        observed TEXT,
        expected TEXT,
        message TEXT NOT NULL,
        PRIMARY KEY (run_id, check_name)
    )""",
    "CREATE INDEX check_results_failed ON check_results(passed, severity)",
    """CREATE TABLE anomalies (
        run_id TEXT NOT NULL,
        transaction_id INTEGER NOT NULL,
        kind TEXT NOT NULL,
        amount_cents INTEGER NOT NULL,
        detail TEXT NOT NULL,
        PRIMARY KEY (run_id, transaction_id, kind)
    )""",
    """CREATE TABLE run_distributions (
        run_id TEXT NOT NULL,
        dimension TEXT NOT NULL,
        category TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (run_id, dimension, category)
    )""",
)

# Version 2: browsing (see "browse and operate" at the end of this module): views, full-text
# search on wording, the ambiguous wordings of each run, indexes for the canned queries.
def _summary_view_sql(view: str, table: str, alias: str, column: str) -> str:
    """A view of count, sum, mean, min and max amount (EUR) per tag or per annotation."""
    return f"""CREATE VIEW {view} AS
    SELECT {alias}.{column}, COUNT(*) AS transactions,
           ROUND(SUM(t.amount_cents) / 100.0, 2) AS total_eur,
           ROUND(AVG(t.amount_cents) / 100.0, 2) AS mean_eur,
           MIN(t.amount) AS min_eur, MAX(t.amount) AS max_eur
    FROM {table} {alias} JOIN transactions t ON t.id = {alias}.transaction_id
    GROUP BY {alias}.{column}"""


_FTS_TRIGGERS: tuple[str, ...] = (
    """CREATE TRIGGER transactions_fts_insert AFTER INSERT ON transactions BEGIN
        INSERT INTO transactions_fts (rowid, wording) VALUES (new.id, new.wording);
    END""",
    """CREATE TRIGGER transactions_fts_update AFTER UPDATE OF id, wording ON transactions
    WHEN old.id != new.id OR old.wording IS NOT new.wording BEGIN
        INSERT INTO transactions_fts (transactions_fts, rowid, wording) VALUES ('delete', old.id, old.wording);
        INSERT INTO transactions_fts (rowid, wording) VALUES (new.id, new.wording);
    END""",
    """CREATE TRIGGER transactions_fts_delete AFTER DELETE ON transactions BEGIN
        INSERT INTO transactions_fts (transactions_fts, rowid, wording) VALUES ('delete', old.id, old.wording);
    END""",
)

_SUMMARY_VIEWS: tuple[str, ...] = (
    _summary_view_sql("tag_summary", "tags", "g", "tag"),
    _summary_view_sql("annotation_summary", "annotations", "a", "annotation"),
)

_SCHEMA_V2: tuple[str, ...] = (
    # Full-text index of transactions.wording. External content (the text lives once, in
    # transactions); no per-document sizes (columnsize=0: a third cheaper to maintain, bm25
    # ranking still works). Kept in step by the triggers below, whoever writes transactions.
    """CREATE VIRTUAL TABLE transactions_fts USING fts5(
        wording, content="transactions", content_rowid="id", columnsize=0,
        tokenize="unicode61 remove_diacritics 2")""",
    *_FTS_TRIGGERS,
    "INSERT INTO transactions_fts (transactions_fts) VALUES ('rebuild')",  # rows stored before version 2
    """CREATE TABLE ambiguous_wordings (
        run_id TEXT NOT NULL,
        wording TEXT NOT NULL,
        tags_found INTEGER NOT NULL CHECK (tags_found >= 2),
        transactions INTEGER NOT NULL CHECK (transactions > 0),
        PRIMARY KEY (run_id, wording)
    )""",
    "CREATE INDEX ambiguous_wordings_frequency ON ambiguous_wordings(run_id, transactions DESC)",
    "CREATE INDEX runs_started ON runs(started_at)",
    """CREATE VIEW enriched_transactions AS
    SELECT t.id, t.amount, t.amount_cents, t.wording, g.tag, a.annotation,
           t.first_run_id, t.last_changed_run_id, g.run_id AS tag_run_id, a.run_id AS annotation_run_id
    FROM transactions t
    LEFT JOIN tags g ON g.transaction_id = t.id
    LEFT JOIN annotations a ON a.transaction_id = t.id""",
    *_SUMMARY_VIEWS,
    """CREATE VIEW run_summary AS
    SELECT r.run_id, r.status, r.started_at, r.finished_at,
           ROUND((julianday(r.finished_at) - julianday(r.started_at)) * 86400, 3) AS duration_s,
           r.user, r.input_path, r.match_mode,
           r.rows_read, r.rows_loaded, r.rows_new, r.rows_updated, r.rows_unchanged,
           r.rows_rejected, r.rows_duplicate, r.tagged, r.untagged, r.ambiguous, r.annotated, r.zero_amount,
           (SELECT COUNT(*) FROM step_runs s WHERE s.run_id = r.run_id AND s.status = 'failed') AS failed_attempts,
           (SELECT group_concat(DISTINCT s.step) FROM step_runs s
             WHERE s.run_id = r.run_id AND s.status = 'failed') AS failed_steps,
           (SELECT COUNT(*) FROM check_results c
             WHERE c.run_id = r.run_id AND c.passed = 0 AND c.severity = 'critical') AS critical_checks_failed,
           (SELECT COUNT(*) FROM check_results c
             WHERE c.run_id = r.run_id AND c.passed = 0 AND c.severity != 'critical') AS warnings,
           (SELECT COUNT(*) FROM anomalies x WHERE x.run_id = r.run_id) AS anomalies,
           (SELECT COUNT(*) FROM alerts x WHERE x.run_id = r.run_id) AS alerts
    FROM runs r""",
)

# Version 3: the run lock (see "run lock" at the end of this module); independent of version 2.
_SCHEMA_V3: tuple[str, ...] = (
    """CREATE TABLE run_lock (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        run_id TEXT NOT NULL,
        user TEXT,
        host TEXT NOT NULL,
        pid INTEGER NOT NULL,
        process_start TEXT,
        acquired_at TEXT NOT NULL
    )""",
)

# Version 4: compact lineage. The runs that loaded, changed, tagged and annotated a row
# are small integer keys into run_keys instead of the run-id text ("Flow/1795327520347799",
# about 40 bytes) on every row: half the bytes of transactions, tags and annotations, and
# of the index that finds a run's rows. The views show the run ids as before. Existing
# rows are carried over (the tables are rebuilt: SQLite cannot retype a column in place).
# Also: full-text indexing of a load's new rows becomes a pending kind of its own ("search",
# see index_wordings), and the update/delete triggers leave rows not indexed yet alone.
def _lineage_key_sql(key: str, alias: str) -> str:
    """The run id of a lineage key column, for the views."""
    return f"(SELECT k.run_id FROM run_keys k WHERE k.run_key = {key}) AS {alias}"


_ENRICHED_VIEW_V4 = f"""CREATE VIEW enriched_transactions AS
    SELECT t.id, t.amount, t.amount_cents, t.wording, g.tag, a.annotation,
           {_lineage_key_sql("t.first_run", "first_run_id")},
           {_lineage_key_sql("t.last_changed_run", "last_changed_run_id")},
           {_lineage_key_sql("g.run", "tag_run_id")},
           {_lineage_key_sql("a.run", "annotation_run_id")}
    FROM transactions t
    LEFT JOIN tags g ON g.transaction_id = t.id
    LEFT JOIN annotations a ON a.transaction_id = t.id"""

#: A transaction whose wording is not in the full-text index yet: loaded by a run whose
#: search indexing is still pending (see :func:`index_wordings`).
def _not_indexed_sql(row: str) -> str:
    return (f"EXISTS (SELECT 1 FROM run_keys k JOIN pending_enrichment p ON p.run_id = k.run_id "
            f"AND p.kind = 'search' WHERE k.run_key = {row}.first_run)")


_FTS_INSERT_TRIGGER = _FTS_TRIGGERS[0]
#: Version 4: an update or delete of a row not indexed yet leaves the index alone (its indexing,
#: still pending, reads the row as it is then).
_FTS_CHANGE_TRIGGERS_V4: tuple[str, ...] = (
    f"""CREATE TRIGGER transactions_fts_update AFTER UPDATE OF id, wording ON transactions
    WHEN (old.id != new.id OR old.wording IS NOT new.wording) AND NOT {_not_indexed_sql("old")} BEGIN
        INSERT INTO transactions_fts (transactions_fts, rowid, wording) VALUES ('delete', old.id, old.wording);
        INSERT INTO transactions_fts (rowid, wording) VALUES (new.id, new.wording);
    END""",
    f"""CREATE TRIGGER transactions_fts_delete AFTER DELETE ON transactions
    WHEN NOT {_not_indexed_sql("old")} BEGIN
        INSERT INTO transactions_fts (transactions_fts, rowid, wording) VALUES ('delete', old.id, old.wording);
    END""",
)

_SCHEMA_V4: tuple[str, ...] = (
    "CREATE TABLE run_keys (run_key INTEGER PRIMARY KEY, run_id TEXT NOT NULL UNIQUE)",
    """INSERT OR IGNORE INTO run_keys (run_id)
        SELECT first_run_id FROM transactions UNION SELECT last_changed_run_id FROM transactions
        UNION SELECT run_id FROM tags UNION SELECT run_id FROM annotations""",
    "DROP VIEW enriched_transactions", "DROP VIEW tag_summary", "DROP VIEW annotation_summary",
    "DROP TRIGGER transactions_fts_insert", "DROP TRIGGER transactions_fts_update",
    "DROP TRIGGER transactions_fts_delete",
    """CREATE TABLE transactions_v4 (
        id INTEGER PRIMARY KEY,
        amount_cents INTEGER NOT NULL,
        amount REAL GENERATED ALWAYS AS (amount_cents / 100.0) VIRTUAL,
        wording TEXT NOT NULL,
        first_run INTEGER NOT NULL REFERENCES run_keys(run_key),
        last_changed_run INTEGER NOT NULL REFERENCES run_keys(run_key)
    )""",
    """INSERT INTO transactions_v4 (id, amount_cents, wording, first_run, last_changed_run)
        SELECT t.id, t.amount_cents, t.wording, f.run_key, c.run_key FROM transactions t
        JOIN run_keys f ON f.run_id = t.first_run_id JOIN run_keys c ON c.run_id = t.last_changed_run_id
        ORDER BY t.id""",
    *(f"""CREATE TABLE {table}_v4 (
        transaction_id INTEGER PRIMARY KEY REFERENCES transactions(id),
        {value} TEXT NOT NULL,
        run INTEGER NOT NULL REFERENCES run_keys(run_key)
    )""" for table, value in (("tags", "tag"), ("annotations", "annotation"))),
    *(f"""INSERT INTO {table}_v4 (transaction_id, {value}, run)
        SELECT x.transaction_id, x.{value}, k.run_key FROM {table} x JOIN run_keys k ON k.run_id = x.run_id
        ORDER BY x.transaction_id""" for table, value in (("tags", "tag"), ("annotations", "annotation"))),
    "DROP TABLE annotations", "DROP TABLE tags", "DROP TABLE transactions",
    "ALTER TABLE transactions_v4 RENAME TO transactions",
    "ALTER TABLE tags_v4 RENAME TO tags",
    "ALTER TABLE annotations_v4 RENAME TO annotations",
    "CREATE INDEX transactions_last_changed_run ON transactions(last_changed_run)",
    "CREATE INDEX tags_tag ON tags(tag)",
    "CREATE INDEX annotations_annotation ON annotations(annotation)",
    """CREATE TABLE pending_enrichment_v4 (
        run_id TEXT NOT NULL,
        kind TEXT NOT NULL CHECK (kind IN ('tags', 'annotations', 'search')),
        PRIMARY KEY (run_id, kind)
    )""",
    "INSERT INTO pending_enrichment_v4 (run_id, kind) SELECT run_id, kind FROM pending_enrichment",
    "DROP TABLE pending_enrichment",
    "ALTER TABLE pending_enrichment_v4 RENAME TO pending_enrichment",
    _FTS_INSERT_TRIGGER,
    *_FTS_CHANGE_TRIGGERS_V4,
    _ENRICHED_VIEW_V4,
    *_SUMMARY_VIEWS,
)
#: Migrations that rebuild tables: run with foreign-key enforcement off (SQLite's
#: documented procedure for changing a table's columns; the rows are copied as they are).
_REBUILDING_MIGRATIONS = frozenset({4})

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _SCHEMA_V1), (2, _SCHEMA_V2), (3, _SCHEMA_V3),
                                                       (4, _SCHEMA_V4))


# Two copies of SQLite in one process must never have the same file open at once: POSIX
# locks belong to the process, so closing the file in one copy silently drops the locks
# the other holds (https://www.sqlite.org/howtocorrupt.html#multiple_copies_of_sqlite_linked_into_the_same_application).
# Python's sqlite3 and ADBC's driver are two copies: a process opens a file with one or
# the other, never both; these registries enforce it.
_OPEN_DATABASES: "weakref.WeakSet[sqlite_utils.Database]" = weakref.WeakSet()
_OPEN_BULK: Counter[Path] = Counter()


class MixedSQLiteLibraries(StorageError):
    """A database file was about to be opened by both SQLite libraries in one process."""


def _is_open(db: sqlite_utils.Database) -> bool:
    try:
        db.conn.total_changes  # noqa: B018 - raises once the connection is closed
    except sqlite3.ProgrammingError:
        return False
    return True


def _open_elsewhere(path: Path) -> bool:
    return any(_is_open(db) and database_file(db) == path for db in list(_OPEN_DATABASES))


def connect(path: str | Path, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> sqlite_utils.Database:
    """Open (creating if needed) the database at ``path`` with the project's settings and schema.

    A write waits up to ``busy_timeout_ms`` for another writer's transaction to end, then
    raises :class:`DatabaseBusy`.
    """
    path = Path(path).resolve()
    if _OPEN_BULK[path]:
        raise MixedSQLiteLibraries(f"{path} is open for a bulk operation in this process: "
                                   "finish it before opening the database")
    if not path.parent.exists():
        raise DatabaseDirectoryMissing(f"{path}: directory {path.parent} does not exist. "
                                       "Create it or pass another --database.")
    conn = None
    try:
        conn = sqlite3.connect(path, timeout=busy_timeout_ms / 1000, isolation_level=None)
        db = sqlite_utils.Database(conn)
        _configure(db, busy_timeout_ms)
        migrate(db)
        _OPEN_DATABASES.add(db)
    except (sqlite3.DatabaseError, StorageError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StorageError):
            raise
        raise database_error(path, exc) from exc
    return db


PAGE_SIZE = 16384  # for new files: fewer, fuller b-tree pages for millions of rows


def _configure(db: sqlite_utils.Database, busy_timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
    db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    if db.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new, empty file: before WAL and any table
        db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = NORMAL")
    db.execute("PRAGMA foreign_keys = ON")
    db.execute("PRAGMA cache_size = -65536")
    db.execute("PRAGMA temp_store = FILE")


def schema_version(db: sqlite_utils.Database) -> int:
    """The schema version of the database (0 for an empty file)."""
    if "schema_version" not in db.table_names():
        return 0
    return int(db.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> None:
    """Bring the schema up to :data:`SCHEMA_VERSION`, one versioned migration at a time."""
    current = schema_version(db)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(f"{_file_of(db)}: database schema version {current} is newer than this "
                           f"program ({SCHEMA_VERSION}): a newer version of the program wrote it. "
                           "Upgrade the program; the database was left untouched.")
    applied = _applied_versions(db)
    for version, statements in sorted(MIGRATIONS):
        if version in applied:
            continue
        rebuilding = version in _REBUILDING_MIGRATIONS
        if rebuilding:
            db.execute("PRAGMA foreign_keys = OFF")  # (outside a transaction, or SQLite ignores it)
        try:
            with write_transaction(db):
                db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                           "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
                for statement in statements:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                           (version, utc_now()))
        finally:
            if rebuilding:
                db.execute("PRAGMA foreign_keys = ON")
        logger.info("database schema migrated to version %d", version)


@contextmanager
def write_transaction(db: sqlite_utils.Database) -> Iterator[sqlite_utils.Database]:
    """One ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back whole on any exception.

    A read-only, full, damaged or unreachable database raises the matching
    :class:`StorageError` (see :func:`database_error`) naming the file.
    """
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        raise database_error(_file_of(db), exc) from exc
    try:
        yield db
        db.execute("COMMIT")
    except sqlite3.OperationalError as exc:
        _rollback(db)
        if not _is_condition(exc):
            raise  # a bug (bad SQL...), not a state of the file: keep it as it is
        raise database_error(_file_of(db), exc) from exc
    except BaseException:
        _rollback(db)
        raise


def utc_now() -> str:
    """Current UTC time as ISO 8601 text (the format of every timestamp in the database)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- bulk I/O
# Bulk reads and writes go through Apache Arrow's ADBC SQLite driver: whole Arrow
# batches cross into SQLite in C (no Python tuple per row), several times faster
# than ``executemany``/``fetchmany``. It opens the same file with the same
# settings; its transactions are the same ``BEGIN IMMEDIATE`` ones as elsewhere.
BULK_BATCH_ROWS = 262_144

_STAGING_SCHEMA = pa.schema([("line", pa.int64()), ("id", pa.int64()), ("amount_cents", pa.int64()),
                             ("wording", pa.large_string())])
_REJECTED_SCHEMA = pa.schema([("line", pa.int64()), ("raw", pa.large_string()),
                              ("reason", pa.large_string())])


def database_file(db: sqlite_utils.Database) -> Path:
    """The file behind a connection (the ``main`` database)."""
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main" and file:
            return Path(file).resolve()
    raise StorageError("the database is not a file: bulk operations need an on-disk database")


class _BulkCursor:
    """An ADBC cursor with the few conveniences the bulk paths need."""

    def __init__(self, cursor) -> None:
        self.cursor = cursor

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.cursor.execute(sql, tuple(params) if params else None)

    def scalar(self, sql: str, params: Sequence[object] = ()) -> object:
        self.execute(sql, params)
        row = self.cursor.fetchone()
        return row[0] if row else None

    def row(self, sql: str, params: Sequence[object] = ()) -> tuple:
        self.execute(sql, params)
        return tuple(self.cursor.fetchone())

    def ingest(self, table: str, data: pa.Table | pa.RecordBatchReader, temporary: bool = False) -> None:
        self.cursor.adbc_ingest(table, data, mode="append", temporary=temporary)

    def batches(self, sql: str, params: Sequence[object] = ()) -> pa.RecordBatchReader:
        self.execute(sql, params)
        return self.cursor.fetch_record_batch()


@contextmanager
def bulk_connection(path: str | Path, enforce_foreign_keys: bool = True) -> Iterator[_BulkCursor]:
    """An Arrow (ADBC) connection to a database created by :func:`connect`, closed on exit.

    No :func:`connect` connection to the same file may be open in this process meanwhile.
    ``enforce_foreign_keys=False`` is for statements whose rows satisfy the foreign keys by
    construction (they skip a look-up per row per key); the referential-integrity check
    verifies the tables after every run anyway.
    """
    path = Path(path).resolve()
    if _open_elsewhere(path):
        raise MixedSQLiteLibraries(f"{path} is open through sqlite3 in this process: "
                                   "close it before a bulk operation")
    if not path.exists():
        raise StorageError(f"{path}: no such database; it is created by the run's start step")
    _OPEN_BULK[path] += 1
    conn = adbc_sqlite.connect(str(path), autocommit=True)
    try:
        cursor = conn.cursor()
        cursor.adbc_statement.set_options(**{"adbc.sqlite.query.batch_rows": str(BULK_BATCH_ROWS)})
        bulk = _BulkCursor(cursor)
        for pragma in _bulk_pragmas(enforce_foreign_keys):
            bulk.execute(pragma)
        try:
            yield bulk
        finally:
            cursor.close()
    except adbc_errors.Error as exc:
        raise _bulk_error(path, exc) from exc
    finally:
        conn.close()
        _OPEN_BULK[path] -= 1


def _bulk_error(path: Path, exc: Exception) -> StorageError:
    """The project's error for a failed bulk operation, named after its condition.

    ADBC reports SQLite's message but not its code: the code is recovered from the
    message, then :func:`database_error` words it as for any other write.
    """
    text = str(exc).replace("\n", " ")
    if "constraint failed" in text:
        return ConstraintViolation(f"{path}: a write broke a database constraint ({text}); nothing was written")
    return database_error(path, exc, code=next((code for phrase, code in _BULK_ERROR_CODES if phrase in text), 0))



def _bulk_pragmas(enforce_foreign_keys: bool = True) -> tuple[str, ...]:
    # a 128 MiB page cache: as fast as 256 MiB for 10M-row loads, and the load's process stays
    # well under 1 GiB with the chunks being parsed alongside
    return (f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", "PRAGMA synchronous = NORMAL",
            f"PRAGMA foreign_keys = {'ON' if enforce_foreign_keys else 'OFF'}",
            "PRAGMA cache_size = -131072", "PRAGMA temp_store = FILE")


@contextmanager
def _bulk_transaction(bulk: _BulkCursor) -> Iterator[_BulkCursor]:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` on a bulk connection; rolled back whole on any exception."""
    bulk.execute("BEGIN IMMEDIATE")
    try:
        yield bulk
    except BaseException:
        bulk.execute("ROLLBACK")
        raise
    bulk.execute("COMMIT")


# --------------------------------------------------------------------------- loading
def load_batch(database: str | Path, run_id: str, chunks: Iterable) -> LoadStats:
    """Load parsed CSV chunks as one batch, in one transaction.

    ``chunks`` yields objects with ``valid`` (line, id, amount_cents, wording) and
    ``rejected`` (line, raw, reason) frames (see :mod:`enrich.ingest`). Identical
    duplicate rows are loaded once and counted; rows sharing an id with different
    content are all rejected. Rows are upserted by id: new rows inserted, changed
    rows updated (and marked as changed by this run), identical rows untouched.
    If reading fails midway, nothing is written. Creates the database if needed.
    """
    connect(database).close()  # the schema, migrated, before the bulk connection opens
    # every row gets this run's key (created first) and no id changes: the foreign keys hold by
    # construction, and their per-row look-ups are skipped
    with bulk_connection(database, enforce_foreign_keys=False) as bulk, _bulk_transaction(bulk):
        _create_staging(bulk)
        stored_before = bulk.scalar(_count_transactions_sql())
        rows_read, valid, in_file, order, same_cents = 0, 0, 0, _IdOrder(), 0
        for chunk in chunks:
            rows_read += len(chunk.valid) + len(chunk.rejected)
            valid += len(chunk.valid)
            in_file += int(chunk.valid["amount_cents"].sum())
            late = order.add(chunk.valid["id"].to_numpy())
            same = _same_as_stored(bulk, chunk.valid, ~late) if stored_before else np.zeros(len(late), bool)
            _stage_chunk(bulk, chunk.valid[~same], chunk.rejected)
            if same.any():
                _record_unchanged(bulk, chunk.valid[same])
                same_cents += int(chunk.valid["amount_cents"].to_numpy()[same].sum())
        conflicts, dropped, dropped_cents, dropped_same_cents = _reject_conflicting_duplicates(bulk, order)
        rows_loaded, in_file = valid - dropped, in_file - dropped_cents  # every id once now
        # new rows are indexed for search by the index_wordings step, in bulk: the per-row insert
        # trigger is dropped for this statement only, inside the transaction (no other connection
        # ever sees it missing); updates of indexed rows still go through their trigger
        bulk.execute("DROP TRIGGER transactions_fts_insert")
        bulk.execute(_upsert_batch_sql(in_id_order=order.nearly_sorted), (_run_key(bulk, run_id),))
        changed = bulk.scalar("SELECT changes()")
        existing = rows_loaded - (bulk.scalar(_count_transactions_sql()) - stored_before)  # loaded minus inserted
        bulk.execute(_FTS_INSERT_TRIGGER)
        # what the database now holds for the batch's ids: the staged rows read back, plus the rows
        # found identical to the stored ones (read in this transaction, which the upsert leaves alone)
        stored = (bulk.scalar(_stored_total_sql()) or 0) + same_cents - dropped_same_cents
        bulk.execute("DELETE FROM rejected_rows WHERE run_id = ?", (run_id,))
        bulk.execute("INSERT INTO rejected_rows (run_id, line, raw, reason) "
                     "SELECT ?, line, raw, reason FROM temp.staging_rejected", (run_id,))
        rejected = bulk.scalar("SELECT COUNT(*) FROM temp.staging_rejected")
        for kind in PENDING_KINDS if changed else ():  # an unchanged batch leaves nothing to derive
            bulk.execute("INSERT OR IGNORE INTO pending_enrichment (run_id, kind) VALUES (?, ?)", (run_id, kind))
        _drop_staging(bulk)
    new = rows_loaded - existing
    stats = LoadStats(rows_read=rows_read, rows_loaded=rows_loaded, rows_new=new,
                      rows_updated=changed - new, rows_unchanged=existing - (changed - new),
                      rows_rejected=rejected, rows_duplicate=rows_read - rows_loaded - rejected,
                      cents_in_file=in_file or 0, cents_stored=stored or 0)
    logger.info("loaded batch: %s (%d conflicting ids)", stats, conflicts)
    return stats


def _create_staging(bulk: _BulkCursor) -> None:
    _drop_staging(bulk)
    # line is the rowid: rows stay in file order, duplicates of an id keep their first line
    bulk.execute("CREATE TEMP TABLE staging (line INTEGER PRIMARY KEY, id INTEGER NOT NULL, "
                 "amount_cents INTEGER NOT NULL, wording TEXT NOT NULL)")
    bulk.execute("CREATE TEMP TABLE unchanged (line INTEGER PRIMARY KEY, id INTEGER NOT NULL)")
    bulk.execute("CREATE TEMP TABLE staging_rejected (line INTEGER PRIMARY KEY, raw TEXT NOT NULL, "
                 "reason TEXT NOT NULL)")


def _drop_staging(bulk: _BulkCursor) -> None:
    for table in ("staging", "unchanged", "staging_rejected", "conflicts", "late_ids", "dup_rows", "dropped"):
        bulk.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _same_as_stored(bulk: _BulkCursor, valid: pd.DataFrame, candidates: np.ndarray) -> np.ndarray:
    """Which rows of a chunk are already stored exactly so (same id, amount and wording).

    Only ``candidates`` are looked at: the rows whose id is larger than every id before it,
    so in ascending order and seen for the first time. Their stored rows are read by id
    range, in this (write) transaction, and compared with Arrow kernels. Sparse ids (a range
    much wider than the rows) are not worth the read: then nothing is found the same.
    """
    same = np.zeros(len(valid), dtype=bool)
    positions = np.flatnonzero(candidates)
    if len(positions) == 0:
        return same
    ids = valid["id"].to_numpy()[positions]
    low, high = int(ids[0]), int(ids[-1])  # ascending: candidates are
    if high - low + 1 > 4 * len(ids) + 1024:
        return same
    stored = bulk.batches("SELECT id, amount_cents, wording FROM transactions WHERE id BETWEEN ? AND ?",
                          (low, high)).read_all()
    if stored.num_rows == 0:
        return same
    stored_ids = stored.column("id").to_numpy()
    at = np.minimum(np.searchsorted(stored_ids, ids), len(stored_ids) - 1)
    found = stored_ids[at] == ids
    take = pa.array(at[found])
    mine = positions[found]
    wordings = pa.array(valid["wording"], from_pandas=True)  # (no copy for an Arrow-backed column)
    if isinstance(wordings, pa.ChunkedArray):
        wordings = wordings.combine_chunks()
    equal = ((stored.column("amount_cents").take(take).to_numpy() == valid["amount_cents"].to_numpy()[mine])
             & pc.equal(stored.column("wording").take(take).combine_chunks().cast(pa.large_string()),
                        wordings.take(pa.array(mine)).cast(pa.large_string())).to_numpy(zero_copy_only=False))
    same[mine[equal]] = True
    return same


_UNCHANGED_SCHEMA = pa.schema([("line", pa.int64()), ("id", pa.int64())])


def _record_unchanged(bulk: _BulkCursor, rows: pd.DataFrame) -> None:
    """Keep the line and id of rows found identical to the stored ones (for pairing duplicates)."""
    bulk.ingest("unchanged", pa.Table.from_pandas(rows[["line", "id"]], schema=_UNCHANGED_SCHEMA,
                                                  preserve_index=False), temporary=True)


def _stage_chunk(bulk: _BulkCursor, valid: pd.DataFrame, rejected: pd.DataFrame) -> None:
    if len(valid):
        bulk.ingest("staging", pa.Table.from_pandas(valid[list(_STAGING_SCHEMA.names)], schema=_STAGING_SCHEMA,
                                                    preserve_index=False), temporary=True)
    if len(rejected):
        bulk.ingest("staging_rejected", pa.Table.from_pandas(rejected[list(_REJECTED_SCHEMA.names)],
                                                             schema=_REJECTED_SCHEMA, preserve_index=False),
                    temporary=True)


def _reject_conflicting_duplicates(bulk: _BulkCursor, order: "_IdOrder") -> tuple[int, int, int, int]:
    """Drop the repeated lines of identical duplicates; reject every line of a conflicting id.

    The batch's lines are in ``temp.staging`` and, for those found identical to the stored
    rows, ``temp.unchanged`` (line and id; the content is the stored row's). Returns the
    conflicting ids, the lines dropped and the sum of their amounts, and the part of that
    sum from ``unchanged``.

    The lines of repeated ids are gathered into ``temp.dup_rows`` first: when the file's
    ids come in order but for a few late ones (the usual export, maybe with re-sent rows
    appended), only those late ids can repeat, and one scan finds their lines without
    sorting; otherwise the batch's ids are grouped.
    """
    if not order.late_count:
        return 0, 0, 0, 0  # ids strictly ascending: every id once, nothing to pair
    if order.nearly_sorted:
        bulk.execute("CREATE TEMP TABLE late_ids (id INTEGER PRIMARY KEY)")
        bulk.ingest("late_ids", pa.table({"id": pa.array(order.late_ids(), pa.int64())}), temporary=True)
        repeated = "SELECT id FROM temp.late_ids"
    else:
        repeated = ("SELECT id FROM (SELECT id FROM temp.staging UNION ALL SELECT id FROM temp.unchanged) "
                    "GROUP BY id HAVING COUNT(*) > 1")
    bulk.execute(f"""CREATE TEMP TABLE dup_rows AS
        SELECT line, id, amount_cents, wording, 0 AS unchanged FROM temp.staging WHERE id IN ({repeated})
        UNION ALL
        SELECT u.line, u.id, t.amount_cents, t.wording, 1 FROM temp.unchanged u JOIN transactions t ON t.id = u.id
        WHERE u.id IN ({repeated})""")
    bulk.execute("DELETE FROM temp.dup_rows WHERE id IN (SELECT id FROM temp.dup_rows GROUP BY id HAVING COUNT(*) = 1)")
    if not bulk.scalar("SELECT COUNT(*) FROM temp.dup_rows"):
        return 0, 0, 0, 0
    bulk.execute("""CREATE TEMP TABLE conflicts AS
        SELECT id, group_concat(line, ', ') AS lines FROM (
            SELECT d.id, d.line FROM temp.dup_rows d WHERE d.id IN (
                SELECT id FROM (SELECT DISTINCT id, amount_cents, wording FROM temp.dup_rows)
                GROUP BY id HAVING COUNT(*) > 1)
            ORDER BY d.id, d.line)
        GROUP BY id""")
    bulk.execute("""INSERT INTO temp.staging_rejected (line, raw, reason)
        SELECT d.line,
               d.id || ',' || printf('%s%d.%02d', CASE WHEN d.amount_cents < 0 THEN '-' ELSE '' END,
                                     abs(d.amount_cents) / 100, abs(d.amount_cents) % 100)
                    || ',"' || replace(d.wording, '"', '""') || '"',
               'conflicting duplicate id: id ' || d.id || ' appears with different content on lines '
                    || c.lines || '; fix the file and load it again'
        FROM temp.dup_rows d JOIN temp.conflicts c ON c.id = d.id""")
    # every line of a conflicting id goes; of an identical duplicate, all but the first
    bulk.execute("""CREATE TEMP TABLE dropped AS SELECT line, amount_cents, unchanged FROM temp.dup_rows
        WHERE id IN (SELECT id FROM temp.conflicts)
           OR line NOT IN (SELECT MIN(line) FROM temp.dup_rows GROUP BY id)""")
    bulk.execute("DELETE FROM temp.staging WHERE line IN (SELECT line FROM temp.dropped WHERE NOT unchanged)")
    bulk.execute("DELETE FROM temp.unchanged WHERE line IN (SELECT line FROM temp.dropped WHERE unchanged)")
    dropped, cents, unchanged_cents = bulk.row("SELECT COUNT(*), COALESCE(SUM(amount_cents), 0), "
                                               "COALESCE(SUM(amount_cents * unchanged), 0) FROM temp.dropped")
    return int(bulk.scalar("SELECT COUNT(*) FROM temp.conflicts")), int(dropped), int(cents), int(unchanged_cents)


def _count_transactions_sql() -> str:
    return "SELECT COUNT(*) FROM transactions"  # (SQLite counts the smallest index's entries)


class _IdOrder:
    """The order of a batch's ids, chunk after chunk: the running maximum and the "late" ids.

    An id is late when an id at least as large came before it. Only a late id can repeat
    an earlier one, so a file whose ids ascend but for a few late ones (re-sent rows
    appended, say) is paired without sorting it. Up to :data:`LATE_IDS_KEPT` late ids are
    kept (8 bytes each); beyond that the batch counts as unsorted.
    """

    LATE_IDS_KEPT = 1_000_000

    def __init__(self) -> None:
        self.maximum = 0  # ids are positive
        self.late_count = 0
        self._late: list[np.ndarray] = []

    def add(self, ids: np.ndarray) -> np.ndarray:
        """Take the next chunk's ids; return which of them are late."""
        if len(ids) == 0:
            return np.zeros(0, dtype=bool)
        before = np.maximum.accumulate(np.concatenate(([self.maximum], ids[:-1])))
        is_late = ids <= before
        late = ids[is_late]
        self.maximum = max(self.maximum, int(ids.max()))
        self.late_count += len(late)
        if self.nearly_sorted and len(late):
            self._late.append(late)
        elif not self.nearly_sorted:
            self._late.clear()
        return is_late

    @property
    def nearly_sorted(self) -> bool:
        """Ascending but for at most :data:`LATE_IDS_KEPT` late ids."""
        return self.late_count <= self.LATE_IDS_KEPT

    def late_ids(self) -> np.ndarray:
        """The distinct late ids (only while :attr:`nearly_sorted`)."""
        return np.unique(np.concatenate(self._late)) if self._late else np.empty(0, np.int64)


def _upsert_batch_sql(in_id_order: bool = False) -> str:
    # in id order, so that the primary-key b-tree is appended to rather than split at random
    # (staging is in file order: already the id order, but for a few late ids, when nearly sorted)
    order = " WHERE true" if in_id_order else " ORDER BY id"  # (WHERE: SQLite's upsert parsing rule)
    return f"""INSERT INTO transactions (id, amount_cents, wording, first_run, last_changed_run)
        SELECT id, amount_cents, wording, ?1, ?1 FROM temp.staging{order}
        ON CONFLICT (id) DO UPDATE SET
            amount_cents = excluded.amount_cents,
            wording = excluded.wording,
            last_changed_run = excluded.last_changed_run
        WHERE transactions.amount_cents != excluded.amount_cents
           OR transactions.wording != excluded.wording"""


def _run_key(bulk: _BulkCursor, run_id: str) -> int:
    """The lineage key of ``run_id`` (see version 4 of the schema), created on first use."""
    bulk.execute("INSERT OR IGNORE INTO run_keys (run_id) VALUES (?)", (run_id,))
    return int(bulk.scalar("SELECT run_key FROM run_keys WHERE run_id = ?", (run_id,)))


def _keys_of_runs_sql(count: int) -> str:
    """The lineage keys of ``count`` run ids (bound as parameters)."""
    return f"SELECT run_key FROM run_keys WHERE run_id IN ({', '.join('?' for _ in range(count))})"


def _stored_total_sql() -> str:
    # control total: what the database now holds for the batch's ids
    return "SELECT SUM(t.amount_cents) FROM temp.staging s JOIN transactions t ON t.id = s.id"


# --------------------------------------------------------------------------- enrichment
def pending_runs(db: sqlite_utils.Database, kind: str) -> tuple[str, ...]:
    """Runs whose new or changed rows still need ``kind`` (tags or annotations) derived."""
    rows = db.execute("SELECT run_id FROM pending_enrichment WHERE kind = ? ORDER BY run_id", (kind,))
    return tuple(run_id for (run_id,) in rows.fetchall())


def get_state(db: sqlite_utils.Database, key: str) -> str | None:
    """A value of the enrichment state (e.g. the fingerprint of the tag list last applied)."""
    row = db.execute("SELECT value FROM enrichment_state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


_TRANSACTION_TYPES = {"id": pa.int64(), "amount_cents": pa.int64(), "wording": pa.large_string()}


def iter_transactions(database: str | Path, columns: Sequence[str],
                      runs: Sequence[str] | None, chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Stored transactions in id order, about ``chunk_rows`` at a time (read as Arrow batches).

    ``runs=None`` reads every transaction; otherwise only those last changed by one of ``runs``.
    """
    if not set(columns) <= set(_TRANSACTION_TYPES):
        raise ValueError(f"unknown columns {sorted(set(columns) - set(_TRANSACTION_TYPES))}")
    if runs is not None and not runs:
        return
    sql, params = _select_transactions_sql(columns, runs)
    schema = pa.schema([(name, _TRANSACTION_TYPES[name]) for name in columns])
    with bulk_connection(database) as bulk:
        buffered = pa.Table.from_batches([], schema)
        for batch in bulk.batches(sql, params):
            buffered = pa.concat_tables([buffered, pa.Table.from_batches([batch]).cast(schema)])
            while buffered.num_rows >= chunk_rows:
                yield buffered.slice(0, chunk_rows).to_pandas()
                buffered = buffered.slice(chunk_rows)
        if buffered.num_rows:
            yield buffered.to_pandas()


def transaction_amounts(database: str | Path, runs: Sequence[str]) -> pd.DataFrame:
    """``id`` and ``amount_cents`` of the transactions last changed by one of ``runs``, in one read.

    For the amount-outlier check, whose median needs every amount at once (16 bytes a row).
    """
    sql, params = _select_transactions_sql(["id", "amount_cents"], runs)
    if not runs:
        return pd.DataFrame({"id": pd.Series([], dtype="int64"), "amount_cents": pd.Series([], dtype="int64")})
    with bulk_connection(database) as bulk:
        table = bulk.batches(sql.removesuffix(" ORDER BY id"), params).read_all()
    return table.cast(pa.schema([("id", pa.int64()), ("amount_cents", pa.int64())])).to_pandas()


def _select_transactions_sql(columns: Sequence[str], runs: Sequence[str] | None) -> tuple[str, list[str]]:
    select = f"SELECT {', '.join(columns)} FROM transactions"
    if runs is None:
        return select + " ORDER BY id", []
    return select + f" WHERE last_changed_run IN ({_keys_of_runs_sql(len(runs))}) ORDER BY id", list(runs)


_ENRICHMENT_TABLES = {TAGS: ("tags", "tag"), ANNOTATIONS: ("annotations", "annotation")}


def fingerprint_key(kind: str) -> str:
    """The enrichment_state key of the fingerprint a publish leaves of its table."""
    return f"{kind}_table_fingerprint"


def _fingerprint_sql(kind: str) -> str:
    # per value: row count and two modular sums of the ids (reads the value index only,
    # which holds the id as rowid); any insert, delete or change of a row moves them
    table, value = _ENRICHMENT_TABLES[kind]
    return (f"SELECT {value}, COUNT(*), SUM(transaction_id % 1000000007), "
            f"SUM((transaction_id % 65521) * (transaction_id % 65519)) FROM {table} "
            f"GROUP BY {value} ORDER BY {value}")


def _fingerprint(rows: Iterable[Sequence[object]]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        digest.update(repr(tuple(row)).encode())
    return digest.hexdigest()


def _fetch_all(bulk: _BulkCursor, sql: str) -> list[tuple]:
    bulk.execute(sql)
    return [tuple(row) for row in bulk.cursor.fetchall()]


def table_fingerprint(db: sqlite_utils.Database, kind: str) -> tuple[str, str | None]:
    """The current fingerprint of the tags (or annotations) table, and the one its last publish left."""
    return _fingerprint(db.execute(_fingerprint_sql(kind)).fetchall()), get_state(db, fingerprint_key(kind))


class ConcurrentModification(StorageError):
    """A table changed between deriving and publishing (outside the pipeline): retry the step."""


def publish(database: str | Path, kind: str, run_id: str, frames: Iterable[pd.DataFrame],
            covered_runs: Sequence[str] | None, state: dict[str, str] | None = None,
            expected_fingerprint: str | None = None) -> PublishStats:
    """Replace the ``kind`` rows (tags or annotations) of the re-derived transactions, in one transaction.

    ``covered_runs`` are the pending runs whose rows ``frames`` re-derived
    (``None``: every transaction was re-derived). Their old rows are removed
    (so a tag that no longer applies disappears), the new rows inserted, the
    runs cleared from ``pending_enrichment`` and ``state`` saved, with a fingerprint of
    the table as published (:func:`table_fingerprint`). ``expected_fingerprint``: the
    table's fingerprint when the rows were derived; a table changed since is refused.
    """
    table, value = _ENRICHMENT_TABLES[kind]
    schema = pa.schema([("transaction_id", pa.int64()), (value, pa.large_string()), ("run", pa.int64())])
    written, run_key = 0, None

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal written
        for frame in frames:
            written += len(frame)
            yield pa.RecordBatch.from_pandas(frame[["transaction_id", value]].assign(run=run_key),
                                             schema=schema, preserve_index=False)

    with bulk_connection(database) as bulk, _bulk_transaction(bulk):
        if expected_fingerprint is not None and \
                _fingerprint(_fetch_all(bulk, _fingerprint_sql(kind))) != expected_fingerprint:
            raise ConcurrentModification(f"{database}: the {table} table changed since its rows were derived; "
                                         "the step's retry derives them again")
        run_key = _run_key(bulk, run_id)
        before = bulk.scalar(f"SELECT COUNT(*) FROM {table}")
        if covered_runs is None:
            bulk.execute(f"DELETE FROM {table}")
        elif covered_runs:
            bulk.execute(f"DELETE FROM {table} WHERE transaction_id IN (SELECT id FROM transactions "
                         f"WHERE last_changed_run IN ({_keys_of_runs_sql(len(covered_runs))}))", covered_runs)
        removed = before - bulk.scalar(f"SELECT COUNT(*) FROM {table}")
        bulk.ingest(table, pa.RecordBatchReader.from_batches(schema, batches()))
        _finish_publish(bulk, kind, covered_runs, state)
    stats = PublishStats(written=written, removed=removed,
                         pending_runs=tuple(covered_runs) if covered_runs is not None else ())
    logger.info("published %s: %d rows written, %d old rows replaced", kind, written, removed)
    return stats


def annotate_in_place(database: str | Path, run_id: str, covered_runs: Sequence[str] | None,
                      state: dict[str, str] | None = None,
                      expected_fingerprint: str | None = None) -> tuple[PublishStats, dict[str, int]]:
    """Derive and replace the annotations of the covered transactions inside SQLite, in one transaction.

    The annotation rules are a pure function of the stored amount, so they run as
    SQL (:func:`annotation_case_sql`, generated from :data:`enrich.annotation.RULES`)
    over the rows in place: nothing is read out or written back row by row.
    ``covered_runs``, ``state`` and ``expected_fingerprint`` as for :func:`publish`.
    Returns what was written and the count per annotation class, ``None`` for a zero amount.
    """
    scope = ("true" if covered_runs is None else
             f"last_changed_run IN ({_keys_of_runs_sql(len(covered_runs))})")
    params = list(covered_runs or ())
    # the rows come from transactions in the same statement, with this run's key: they cannot
    # break the foreign keys, whose per-row look-ups (a quarter of the insert's cost) are skipped
    with bulk_connection(database, enforce_foreign_keys=False) as bulk:
        with _bulk_transaction(bulk):
            if expected_fingerprint is not None and \
                    _fingerprint(_fetch_all(bulk, _fingerprint_sql(ANNOTATIONS))) != expected_fingerprint:
                raise ConcurrentModification(f"{database}: the annotations table changed since the step read "
                                             "it; the step's retry derives the annotations again")
            run_key = _run_key(bulk, run_id)
            before = bulk.scalar("SELECT COUNT(*) FROM annotations")
            bulk.execute("DELETE FROM annotations" if covered_runs is None else
                         f"DELETE FROM annotations WHERE transaction_id IN (SELECT id FROM transactions "
                         f"WHERE {scope})", params)
            removed = before - bulk.scalar("SELECT COUNT(*) FROM annotations")
            bulk.execute(_annotate_sql(scope), [run_key, *params])
            written = int(bulk.scalar("SELECT changes()"))
            in_scope = int(bulk.scalar(f"SELECT COUNT(*) FROM transactions WHERE {scope}", params))
            table = _finish_publish(bulk, ANNOTATIONS, covered_runs, state)
            if covered_runs is None:  # the whole table was written: its fingerprint has the counts
                classes = {label: int(count) for label, count, *_ in table}
            else:
                bulk.execute(_annotation_classes_sql(scope), params)
                classes = {label: int(count) for label, count in bulk.cursor.fetchall()}
    classes[None] = in_scope - written  # zero amounts
    stats = PublishStats(written=written, removed=removed,
                         pending_runs=tuple(covered_runs) if covered_runs is not None else ())
    logger.info("annotated in place: %d rows written, %d old rows replaced", written, removed)
    return stats, classes


def index_wordings(database: str | Path) -> tuple[tuple[str, ...], int]:
    """Add the wordings of the rows loaded by the runs pending search to the full-text index.

    One transaction: the rows, then the runs cleared from ``pending_enrichment``. A row
    is "not indexed" exactly while the run that first loaded it is pending search: a
    run that changes rows is pending too, so those rows are found through the index on
    ``last_changed_run``. Returns the runs covered and the rows indexed.
    """
    with bulk_connection(database) as bulk, _bulk_transaction(bulk):
        bulk.execute("SELECT run_id FROM pending_enrichment WHERE kind = ? ORDER BY run_id", (SEARCH,))
        runs = tuple(run for (run,) in bulk.cursor.fetchall())
        if not runs:
            return (), 0
        keys = _keys_of_runs_sql(len(runs))
        # no incremental merging of index segments during the bulk insert (30% of its time; searches
        # measured as fast without it); FTS5's own threshold still merges when a level fills up
        bulk.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('automerge', 0)")
        bulk.execute(f"INSERT INTO {FTS_TABLE} (rowid, wording) SELECT id, wording FROM transactions "
                     f"WHERE last_changed_run IN ({keys}) AND first_run IN ({keys})", [*runs, *runs])
        rows = int(bulk.scalar("SELECT changes()"))
        bulk.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('automerge', {FTS_AUTOMERGE})")
        bulk.execute("DELETE FROM pending_enrichment WHERE kind = ?", (SEARCH,))
    logger.info("indexed %d wordings for search (runs %s)", rows, list(runs))
    return runs, rows


def _annotation_classes_sql(scope: str) -> str:
    # the annotations of the rows in scope, per class (sorted by the annotation index, no sort step)
    return (f"SELECT annotation, COUNT(*) FROM annotations INDEXED BY annotations_annotation "
            f"WHERE transaction_id IN (SELECT id FROM transactions WHERE {scope}) GROUP BY annotation")


def _annotate_sql(scope: str) -> str:
    """Annotations of the transactions in ``scope`` (zero amounts get none); ?1 is the run key."""
    return (f"INSERT INTO annotations (transaction_id, annotation, run) "
            f"SELECT id, {annotation_case_sql()}, ?1 FROM transactions "
            f"WHERE amount_cents != 0 AND {scope} ORDER BY id")  # (a plain ? after ?1 is ?2, ?3...)


def _finish_publish(bulk: _BulkCursor, kind: str, covered_runs: Sequence[str] | None,
                    state: dict[str, str] | None) -> list[tuple]:
    """Clear the covered runs from pending_enrichment, save ``state`` and the table's new fingerprint
    (returns the rows it was computed from: value, count, id sums)."""
    if covered_runs is None:
        bulk.execute("DELETE FROM pending_enrichment WHERE kind = ?", (kind,))
    for run in covered_runs or ():
        bulk.execute("DELETE FROM pending_enrichment WHERE kind = ? AND run_id = ?", (kind, run))
    table = _fetch_all(bulk, _fingerprint_sql(kind))
    state = {**(state or {}), fingerprint_key(kind): _fingerprint(table)}
    for key, val in state.items():
        bulk.execute("INSERT INTO enrichment_state (key, value) VALUES (?, ?) "
                     "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, val))
    return table


# --------------------------------------------------------------------------- ledger
RUN_FIELDS = ("status", "started_at", "finished_at", "user", "input_path", "input_sha256",
              "input_bytes", "tags_sha256", "match_mode", "rows_read", "rows_loaded", "rows_new",
              "rows_updated", "rows_unchanged", "rows_rejected", "rows_duplicate", "tagged",
              "untagged", "ambiguous", "annotated", "zero_amount")


def record_run(db: sqlite_utils.Database, run_id: str, **fields: object) -> None:
    """Create or update the ledger row of a run (only the given fields change)."""
    unknown = set(fields) - set(RUN_FIELDS)
    if unknown:
        raise ValueError(f"unknown run fields {sorted(unknown)}")
    values = {"status": "running", "started_at": utc_now(), **fields, "run_id": run_id}
    columns = ", ".join(values)
    placeholders = ", ".join(f":{name}" for name in values)
    update = ", ".join(f"{name} = excluded.{name}" for name in fields)
    conflict = f"DO UPDATE SET {update}" if update else "DO NOTHING"
    with write_transaction(db):
        db.execute(f"INSERT INTO runs ({columns}) VALUES ({placeholders}) ON CONFLICT (run_id) {conflict}",
                   values)


def latest_run(db: sqlite_utils.Database) -> dict | None:
    """The ledger row of the run that started last, or None."""
    rows = list(db.query("SELECT * FROM runs ORDER BY started_at DESC LIMIT 1"))
    return rows[0] if rows else None


def get_run(db: sqlite_utils.Database, run_id: str) -> dict | None:
    """The ledger row of a run, or None."""
    rows = list(db.query("SELECT * FROM runs WHERE run_id = ?", [run_id]))
    return rows[0] if rows else None


def record_step_attempt(db: sqlite_utils.Database, run_id: str, step: str, task_id: str,
                        attempt: int, status: str, started_at: str, finished_at: str | None = None,
                        duration_s: float | None = None, error_type: str | None = None,
                        error_message: str | None = None) -> None:
    """Insert or update one attempt of one step in ``step_runs``."""
    with write_transaction(db):
        db.execute("""INSERT INTO step_runs (run_id, step, task_id, attempt, status, started_at,
                          finished_at, duration_s, error_type, error_message)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id, step, task_id, attempt) DO UPDATE SET
                status = excluded.status, finished_at = excluded.finished_at,
                duration_s = excluded.duration_s, error_type = excluded.error_type,
                error_message = excluded.error_message""",
                   (run_id, step, task_id, attempt, status, started_at, finished_at, duration_s,
                    error_type, error_message))


def step_attempts(db: sqlite_utils.Database, run_id: str) -> list[dict]:
    """Every recorded step attempt of a run, in start order."""
    return list(db.query("SELECT * FROM step_runs WHERE run_id = ? ORDER BY started_at, step, attempt",
                         [run_id]))


def record_alert(db: sqlite_utils.Database, run_id: str, channel: str, status: str,
                 recipients: Sequence[str], message: str, error: str | None) -> None:
    """Remember that an alert was attempted for a run (its text holds no secret)."""
    with write_transaction(db):
        db.execute("INSERT INTO alerts (run_id, created_at, channel, status, recipients, message, error) "
                   "VALUES (?, ?, ?, ?, ?, ?, ?)",
                   (run_id, utc_now(), channel, status, ", ".join(recipients), message, error))


def alerts_for_run(db: sqlite_utils.Database, run_id: str) -> list[dict]:
    """The alerts recorded for a run."""
    return list(db.query("SELECT * FROM alerts WHERE run_id = ? ORDER BY created_at", [run_id]))


# --------------------------------------------------------------------------- checks
def annotation_case_sql(column: str = "amount_cents") -> str:
    """The annotation rules (:data:`enrich.annotation.RULES`) as one SQL CASE expression."""
    from enrich.annotation import RULES

    branches = []
    for rule in RULES:
        bounds = [f"{column} >= {rule.low_cents}" if rule.low_cents is not None else "",
                  f"{column} <= {rule.high_cents}" if rule.high_cents is not None else ""]
        branches.append(f"WHEN {' AND '.join(b for b in bounds if b)} THEN '{rule.label}'")
    return f"CASE {' '.join(branches)} ELSE NULL END"


def annotation_discrepancies(db: sqlite_utils.Database, ids: tuple[int, int] | None = None) -> dict[str, int]:
    """Over the whole database (or the ids from ``ids[0]`` to ``ids[1]``, inclusive): annotations
    missing, wrong, or present on a zero amount."""
    expected = annotation_case_sql("t.amount_cents")
    row = db.execute(f"""SELECT
            SUM(a.transaction_id IS NULL AND t.amount_cents != 0),
            SUM(a.transaction_id IS NOT NULL AND t.amount_cents != 0 AND a.annotation IS NOT ({expected})),
            SUM(a.transaction_id IS NOT NULL AND t.amount_cents = 0),
            COUNT(*)
        FROM transactions t LEFT JOIN annotations a ON a.transaction_id = t.id
        WHERE t.id BETWEEN ? AND ?""", ids or (-(2**63), 2**63 - 1)).fetchone()
    return {"missing": row[0] or 0, "wrong": row[1] or 0, "unexpected": row[2] or 0, "checked": row[3]}


def id_range(db: sqlite_utils.Database) -> tuple[int, int] | None:
    """The smallest and largest transaction id (None when there is none)."""
    low, high = db.execute("SELECT MIN(id), MAX(id) FROM transactions").fetchone()
    return None if low is None else (int(low), int(high))


def iter_stored_tags(db: sqlite_utils.Database, chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Every transaction's id and wording with its stored tag (None if untagged), by id."""
    cursor = db.execute("SELECT t.id, t.wording, g.tag FROM transactions t "
                        "LEFT JOIN tags g ON g.transaction_id = t.id ORDER BY t.id")
    while rows := cursor.fetchmany(chunk_rows):
        yield pd.DataFrame.from_records(rows, columns=["id", "wording", "tag"])


def orphan_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Tags and annotations whose transaction does not exist (referential integrity).

    SQLite's own foreign-key check (one primary-key look-up per row; it works even
    on a connection with enforcement off, e.g. after an external tool's edit).
    """
    return {table: db.execute("SELECT COUNT(*) FROM pragma_foreign_key_check(?)", (table,)).fetchone()[0]
            for table in ("tags", "annotations")}


def recent_runs(db: sqlite_utils.Database, before_run: str, limit: int = 7) -> list[dict]:
    """The last ``limit`` succeeded runs that started before ``before_run``, newest first."""
    return list(db.query("""SELECT * FROM runs WHERE status = 'succeeded'
            AND started_at < COALESCE((SELECT started_at FROM runs WHERE run_id = :run), '9999')
            ORDER BY started_at DESC LIMIT :limit""", {"run": before_run, "limit": limit}))


def save_distribution(db: sqlite_utils.Database, run_id: str, dimension: str,
                      counts: dict[str, int]) -> None:
    """Store one run's category counts for a dimension (e.g. annotation classes)."""
    with write_transaction(db):
        db.execute("DELETE FROM run_distributions WHERE run_id = ? AND dimension = ?", (run_id, dimension))
        db.conn.executemany("INSERT INTO run_distributions (run_id, dimension, category, count) "
                            "VALUES (?, ?, ?, ?)",
                            [(run_id, dimension, category, int(n)) for category, n in counts.items()])


def distribution(db: sqlite_utils.Database, run_ids: Sequence[str], dimension: str) -> dict[str, int]:
    """Category counts for a dimension, summed over ``run_ids``."""
    marks = ", ".join("?" for _ in run_ids) or "NULL"
    rows = db.execute(f"SELECT category, SUM(count) FROM run_distributions WHERE dimension = ? "
                      f"AND run_id IN ({marks}) GROUP BY category", [dimension, *run_ids]).fetchall()
    return {category: int(n) for category, n in rows}


def save_check_results(db: sqlite_utils.Database, run_id: str, results: Iterable[dict],
                       anomalies: pd.DataFrame | None = None) -> None:
    """Replace a run's check results (and its anomalies), in one transaction."""
    with write_transaction(db):
        db.execute("DELETE FROM check_results WHERE run_id = ?", (run_id,))
        db.conn.executemany(
            "INSERT INTO check_results (run_id, check_name, severity, passed, observed, expected, message) "
            "VALUES (:run_id, :check_name, :severity, :passed, :observed, :expected, :message)",
            [{**result, "run_id": run_id, "passed": int(result["passed"])} for result in results])
        if anomalies is not None:
            db.execute("DELETE FROM anomalies WHERE run_id = ?", (run_id,))
            db.conn.executemany(
                "INSERT INTO anomalies (run_id, transaction_id, kind, amount_cents, detail) VALUES (?, ?, ?, ?, ?)",
                zip([run_id] * len(anomalies), anomalies["transaction_id"].tolist(), anomalies["kind"].tolist(),
                    anomalies["amount_cents"].tolist(), anomalies["detail"].tolist()))


def check_results(db: sqlite_utils.Database, run_id: str) -> list[dict]:
    """A run's check results."""
    return list(db.query("SELECT * FROM check_results WHERE run_id = ? ORDER BY check_name", [run_id]))


# --------------------------------------------------------------------------- reading back
def table_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Row counts of the data tables."""
    return {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("transactions", "tags", "annotations", "rejected_rows")}


def rejected_rows(db: sqlite_utils.Database, run_id: str) -> pd.DataFrame:
    """The rejected rows of one run, by line."""
    rows = db.execute("SELECT line, raw, reason FROM rejected_rows WHERE run_id = ? ORDER BY line",
                      (run_id,)).fetchall()
    return pd.DataFrame.from_records(rows, columns=["line", "raw", "reason"])


def enriched_transactions(db: sqlite_utils.Database) -> pd.DataFrame:
    """Every transaction with its tag and annotation (None where absent), by id."""
    rows = db.execute("""SELECT t.id, t.amount_cents, t.wording, g.tag, a.annotation
        FROM transactions t
        LEFT JOIN tags g ON g.transaction_id = t.id
        LEFT JOIN annotations a ON a.transaction_id = t.id
        ORDER BY t.id""").fetchall()
    return pd.DataFrame.from_records(rows, columns=["id", "amount_cents", "wording", "tag", "annotation"])



# --------------------------------------------------------------------------- run report
def previous_run(db: sqlite_utils.Database, run_id: str) -> dict | None:
    """The latest run (any status) that started before ``run_id``."""
    rows = list(db.query("""SELECT * FROM runs WHERE started_at <
            COALESCE((SELECT started_at FROM runs WHERE run_id = :run), '9999')
            ORDER BY started_at DESC LIMIT 1""", {"run": run_id}))
    return rows[0] if rows else None


def rejected_sample(db: sqlite_utils.Database, run_id: str, limit: int = 20) -> list[dict]:
    """The first rejected rows of a run, by line."""
    return list(db.query("SELECT line, raw, reason FROM rejected_rows WHERE run_id = ? ORDER BY line LIMIT ?",
                         [run_id, limit]))


def anomalies_sample(db: sqlite_utils.Database, run_id: str, limit: int = 20) -> list[dict]:
    """A run's anomalies with their wording, largest amounts first."""
    return list(db.query("""SELECT a.transaction_id, a.kind, a.amount_cents, a.detail, t.wording
            FROM anomalies a LEFT JOIN transactions t ON t.id = a.transaction_id
            WHERE a.run_id = ? ORDER BY abs(a.amount_cents) DESC LIMIT ?""", [run_id, limit]))


def last_success_finished_at(db: sqlite_utils.Database, excluding: str) -> str | None:
    """When the latest succeeded run other than ``excluding`` finished (ISO text), or None."""
    row = db.execute("SELECT MAX(finished_at) FROM runs WHERE status = 'succeeded' AND run_id != ?",
                     (excluding,)).fetchone()
    return row[0] if row else None


def anomaly_count(db: sqlite_utils.Database, run_id: str) -> int:
    """How many anomalies a run listed."""
    return db.execute("SELECT COUNT(*) FROM anomalies WHERE run_id = ?", (run_id,)).fetchone()[0]


def value_counts(db: sqlite_utils.Database, table: str) -> dict[str, int]:
    """Rows per tag (``table='tags'``) or per annotation (``'annotations'``) over the whole database."""
    column = {"tags": "tag", "annotations": "annotation"}[table]
    rows = db.execute(f"SELECT {column}, COUNT(*) FROM {table} GROUP BY {column} ORDER BY 2 DESC").fetchall()
    return {value: count for value, count in rows}


# --------------------------------------------------------------------------- database faults
# Each condition a person must fix (retrying at once cannot help) has its own error,
# named after it; the message names the file and what to do. StorageFull is above.
class DatabaseDirectoryMissing(StorageError):
    """The directory that should hold the database does not exist."""


class NotADatabase(StorageError):
    """The file is not an SQLite database, or is damaged."""


class DatabaseReadOnly(StorageError):
    """The database file, its directory or its disk cannot be written."""


class CannotOpenDatabase(StorageError):
    """SQLite cannot open or create the file (permissions, read-only disk, a directory...)."""


class DatabaseBusy(StorageError):
    """Another connection held the write lock for longer than this one would wait."""


class SchemaTooNew(StorageError):
    """The database was written by a newer version of the program."""


#: SQLite primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``) and their conditions.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26
# SQLite's messages for those codes, for drivers that report the message only (ADBC)
_BULK_ERROR_CODES = (("disk is full", _SQLITE_FULL), ("readonly", _SQLITE_READONLY),
                     ("not a database", _SQLITE_NOTADB), ("malformed", _SQLITE_CORRUPT),
                     ("unable to open", _SQLITE_CANTOPEN), ("disk I/O error", _SQLITE_IOERR),
                     ("database is locked", _SQLITE_BUSY))


def database_error(path: str | Path, exc: Exception, code: int | None = None) -> StorageError:
    """The project's error for an SQLite error on ``path``, named after its condition.

    Conditions of the file or the disk (read-only, full, not a database,
    cannot open, I/O error, still locked after the busy timeout) become a
    :class:`StorageError` subclass whose message says what to do; any other
    error becomes a plain :class:`StorageError` naming the file and SQLite's
    message. Raise it ``from exc`` so that the original stays attached.
    """
    code = (code if code is not None else getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    detail = str(exc).replace("\n", " ")
    if code == _SQLITE_READONLY or "readonly" in detail:
        return DatabaseReadOnly(
            f"{path}: the database cannot be written ({detail}); nothing was written. Make the file, "
            "its -wal and -shm files and its directory writable by this user (and check the disk is "
            "not mounted read-only), then run again.")
    if code == _SQLITE_FULL:
        return StorageFull(f"{path}: the disk is full ({detail}); the write was rolled back and "
                           "nothing stored was lost. Free disk space, then run again.")
    if code in (_SQLITE_NOTADB, _SQLITE_CORRUPT):
        return NotADatabase(
            f"{path}: cannot use this file as the database: it is not an SQLite database or is damaged "
            f"({detail}); it was left untouched. Check that --database names the right file; if it is damaged, restore it "
            "from a backup or move it away to start a new database.")
    if code == _SQLITE_CANTOPEN:
        return CannotOpenDatabase(
            f"{path}: cannot open or create the database file ({detail}). Check that the path is a "
            "file, that its directory is writable by this user and that the disk is not mounted "
            "read-only.")
    if code == _SQLITE_IOERR:
        return StorageError(f"{path}: disk I/O error ({detail}); the write was rolled back. "
                            "Check the disk, then run again.")
    if code in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return DatabaseBusy(f"{path}: the database stayed locked by another writer past the busy "
                            f"timeout ({detail}); nothing was written. Run again once the other writer "
                            "has finished.")
    return StorageError(f"{path}: cannot use this file as the database ({detail}). Check the path, "
                        "its permissions and free disk space.")


def _is_condition(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` is a state of the file or disk (see :func:`database_error`), not a bug."""
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    return code in (_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR, _SQLITE_CORRUPT,
                    _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB) or "readonly" in str(exc)


def _file_of(db: sqlite_utils.Database) -> str:
    """The file behind a connection, for messages (``?`` for an in-memory database)."""
    for _, name, file in db.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file or ":memory:"
    return "?"


def _rollback(db: sqlite_utils.Database) -> None:
    """Roll back the open transaction, if SQLite has not already done it (it does on a full disk)."""
    if db.conn.in_transaction:
        db.execute("ROLLBACK")


def _applied_versions(db: sqlite_utils.Database) -> set[int]:
    """The migrations already applied (a gap, e.g. 1 and 3 without 2, is filled in later)."""
    if "schema_version" not in db.table_names():
        return set()
    return {int(version) for (version,) in db.execute("SELECT version FROM schema_version").fetchall()}


# --------------------------------------------------------------------------- run lock
# One run at a time writes a database: the run lock (table run_lock, at most one row)
# names the run holding it, its user, and the host and pid of its Metaflow runtime
# process, so that a lock whose holder died can be recognised (see enrich/runlock.py,
# which decides liveness; this section only holds the SQL).
RUN_LOCK_FIELDS = ("run_id", "user", "host", "pid", "process_start", "acquired_at")


class RunLockHeld(StorageError):
    """Another run, still alive, holds the database's run lock."""

    def __init__(self, message: str, holder: dict | None = None) -> None:
        super().__init__(message)
        self.holder = holder


def run_lock_holder(db: sqlite_utils.Database) -> dict | None:
    """The run holding the database's run lock (run_id, user, host, pid, process_start,
    acquired_at), or None when it is free."""
    if "run_lock" not in db.table_names():
        return None
    rows = list(db.query(f"SELECT {', '.join(RUN_LOCK_FIELDS)} FROM run_lock WHERE id = 1"))
    return rows[0] if rows else None


def acquire_run_lock(db: sqlite_utils.Database, claim: dict,
                     holder_is_dead: Callable[[dict], bool]) -> tuple[bool, dict | None]:
    """Take the run lock for ``claim`` (run_id, user, host, pid, process_start), in one transaction.

    Returns ``(True, replaced)`` when ``claim`` now holds the lock (``replaced``
    is the dead holder taken over, or None) and ``(False, holder)`` when another
    run holds it and ``holder_is_dead(holder)`` is false. A lock the same run
    already holds is left as it is (steps of one run re-check it).
    """
    held = run_lock_holder(db)
    if held is not None and held["run_id"] == claim["run_id"]:
        return True, None  # already ours: no write, so steps never queue behind a long publish
    with write_transaction(db):
        held = run_lock_holder(db)
        if held is not None and held["run_id"] == claim["run_id"]:
            return True, None
        if held is not None and not holder_is_dead(held):
            return False, held
        db.execute("""INSERT INTO run_lock (id, run_id, user, host, pid, process_start, acquired_at)
            VALUES (1, :run_id, :user, :host, :pid, :process_start, :acquired_at)
            ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, user = excluded.user,
                host = excluded.host, pid = excluded.pid, process_start = excluded.process_start,
                acquired_at = excluded.acquired_at""",
                   {**{name: claim.get(name) for name in RUN_LOCK_FIELDS}, "acquired_at": utc_now()})
        if held is not None:  # the dead holder's run can never finish: close its ledger row
            db.execute("UPDATE runs SET status = 'failed', finished_at = ? WHERE run_id = ? AND status = 'running'",
                       (utc_now(), held["run_id"]))
    return True, held


def release_run_lock(db: sqlite_utils.Database, run_id: str) -> bool:
    """Free the run lock if ``run_id`` holds it; return whether it did (no write otherwise)."""
    held = run_lock_holder(db)
    if held is None or held["run_id"] != run_id:
        return False
    with write_transaction(db):
        cursor = db.execute("DELETE FROM run_lock WHERE id = 1 AND run_id = ?", (run_id,))
        return cursor.rowcount > 0


def break_run_lock(db: sqlite_utils.Database) -> dict | None:
    """Free the run lock whoever holds it (manual recovery); return the holder removed, if any."""
    with write_transaction(db):
        held = run_lock_holder(db)
        db.execute("DELETE FROM run_lock")
    return held


# ----- browse and operate: views, full-text search, canned queries, backup and restore
# Browsing goes through datasette on the same file (enrich/browse.py builds its metadata
# from what is below); operators use ``python -m enrich`` (enrich/cli.py). The views,
# the full-text index and its triggers, the ambiguous_wordings table and the indexes
# the canned queries need are schema version 2 (_SCHEMA_V2 above).
FTS_TABLE = "transactions_fts"
FTS_AUTOMERGE = 4  # FTS5's default: the index's other writers (triggers) merge segments as usual
BROWSE_VIEWS: tuple[str, ...] = ("enriched_transactions", "tag_summary", "annotation_summary", "run_summary")
#: A ``running`` run older than this is taken as dead (its process crashed before ``end``).
RUNNING_STALE_AFTER_HOURS = 24.0


class DatabaseMissing(StorageError):
    """The database (or backup) file named does not exist."""


class BackupInvalid(StorageError):
    """A backup (or a copy being made) fails its integrity check or is not one of our databases."""


class RestoreRefused(StorageError):
    """Restoring now could lose a run's writes: a run is in progress, or that cannot be ruled out."""


def open_readonly(path: str | Path) -> sqlite_utils.Database:
    """Open an existing database for reading only: no migration, no write, no file created.

    The operator CLI reads through this, so that looking at a database never changes
    it and never waits for a run's write lock (WAL readers do not block writers).
    """
    path = Path(path).resolve()
    if not path.is_file():
        raise DatabaseMissing(f"{path}: no such database file. Pass the path of an existing "
                              "database with --database.")
    try:
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_MS / 1000,
                               isolation_level=None)
        conn.execute("PRAGMA query_only = ON")
        db = sqlite_utils.Database(conn)
        if "runs" not in db.table_names():
            conn.close()
            raise NotADatabase(f"{path}: not a transaction-enrichment database (no runs table). "
                               "Check the --database path.")
    except sqlite3.DatabaseError as exc:
        raise database_error(path, exc) from exc
    _OPEN_DATABASES.add(db)
    return db


# ..................................................................... full-text search
def rebuild_fts(db: sqlite_utils.Database) -> None:
    """Re-index every wording from the transactions table, in one transaction.

    Triggers keep the index in step with every insert, update and delete, whoever
    writes (an operator's SQL too), except the flow's bulk load, whose new rows the
    ``index_wordings`` step indexes in bulk (:func:`index_wordings`); rebuilding is
    for repairs only, e.g. after :func:`fts_problem` reported one. It indexes every
    row, so no run is left pending search.
    """
    with write_transaction(db):
        db.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')")
        db.execute("DELETE FROM pending_enrichment WHERE kind = ?", (SEARCH,))


def fts_problem(db: sqlite_utils.Database) -> str | None:
    """None when the full-text index matches transactions.wording exactly, else SQLite's complaint
    (or the runs whose rows are still waiting to be indexed)."""
    waiting = pending_runs(db, SEARCH)
    if waiting:
        return f"the rows of runs {', '.join(waiting)} are not indexed yet (the next run's index_wordings step does it)"
    try:
        db.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
    except sqlite3.DatabaseError as exc:
        return str(exc)
    return None


def search_wordings_sql() -> str:
    """Transactions whose wording matches an FTS5 query (``:query``), best match first."""
    return f"""SELECT t.id, t.amount, t.wording FROM {FTS_TABLE} f JOIN transactions t ON t.id = f.rowid
        WHERE {FTS_TABLE} MATCH :query ORDER BY f.rank LIMIT :limit"""


def search_wordings(db: sqlite_utils.Database, query: str, limit: int = 100) -> list[dict]:
    """Transactions whose wording matches ``query`` (FTS5 syntax: words, "phrases", OR, prefix*)."""
    return list(db.query(search_wordings_sql(), {"query": query, "limit": limit}))


# ..................................................................... ambiguous wordings
def save_ambiguous_wordings(db: sqlite_utils.Database, run_id: str, wordings: pd.DataFrame) -> None:
    """Replace the wordings a run's tagging found ambiguous, in one transaction.

    ``wordings`` has one row per distinct wording with ``wording``, ``tags_found``
    (distinct tags found, 2 or more) and ``transactions`` (rows of the run with that
    wording); their ``transactions`` sum to the run's ``runs.ambiguous``. An
    ambiguous transaction stores no tag, so this is the only trace of why.
    """
    with write_transaction(db):
        db.execute("DELETE FROM ambiguous_wordings WHERE run_id = ?", (run_id,))
        db.conn.executemany(
            "INSERT INTO ambiguous_wordings (run_id, wording, tags_found, transactions) VALUES (?, ?, ?, ?)",
            zip([run_id] * len(wordings), wordings["wording"].tolist(), wordings["tags_found"].tolist(),
                wordings["transactions"].tolist()))


# ..................................................................... canned queries
@dataclass(frozen=True)
class CannedQuery:
    """A monitoring query published by datasette (``/database/<name>``) and checked by the tests.

    ``full_scan_when`` names the exceptional condition under which the query may
    scan a large table (transactions, tags, annotations); otherwise it never does.
    """

    name: str
    title: str
    description: str
    sql: str
    full_scan_when: str | None = None


def _run_ref_sql(param: str = "run_id") -> str:
    """A run id from ``:param``: the full id, its bare number, or blank for the latest run."""
    return (f"(SELECT run_id FROM runs WHERE COALESCE(:{param}, '') = '' "
            f"OR run_id = :{param} OR substr(run_id, instr(run_id, '/') + 1) = :{param} "
            "ORDER BY started_at DESC LIMIT 1)")


def runs_by_status_sql() -> str:
    """How many runs ended in each status, with the latest of each."""
    return """SELECT r.status, COUNT(*) AS runs, MAX(r.started_at) AS last_started_at,
           (SELECT x.run_id FROM runs x WHERE x.status = r.status ORDER BY x.started_at DESC LIMIT 1)
               AS last_run_id
        FROM runs r GROUP BY r.status ORDER BY runs DESC"""


def last_run_failed_checks_sql() -> str:
    """The failed checks of the latest run that ran its checks (critical first)."""
    return """SELECT c.run_id, r.status AS run_status, c.check_name, c.severity, c.observed, c.expected,
               c.message
        FROM check_results c JOIN runs r ON r.run_id = c.run_id
        WHERE c.run_id = (SELECT x.run_id FROM runs x
                          WHERE EXISTS (SELECT 1 FROM check_results y WHERE y.run_id = x.run_id)
                          ORDER BY x.started_at DESC LIMIT 1)
          AND c.passed = 0
        ORDER BY c.severity = 'critical' DESC, c.check_name"""


def run_rejected_rows_sql() -> str:
    """The quarantined rows of a run (``:run_id``: full id, bare number, or blank for the latest)."""
    return f"""SELECT run_id, line, reason, raw FROM rejected_rows
        WHERE run_id = {_run_ref_sql()} ORDER BY line"""


def step_durations_sql() -> str:
    """Per step, over its succeeded attempts: how many, mean, 95th percentile (nearest rank), max."""
    return """WITH d AS (
            SELECT step, duration_s,
                   ROW_NUMBER() OVER (PARTITION BY step ORDER BY duration_s) AS position,
                   COUNT(*) OVER (PARTITION BY step) AS attempts
            FROM step_runs WHERE status = 'succeeded' AND duration_s IS NOT NULL)
        SELECT step, MAX(attempts) AS attempts, ROUND(AVG(duration_s), 3) AS mean_s,
               ROUND(MIN(CASE WHEN position >= 0.95 * attempts THEN duration_s END), 3) AS p95_s,
               ROUND(MAX(duration_s), 3) AS max_s
        FROM d GROUP BY step ORDER BY mean_s DESC"""


def runs_between_sql() -> str:
    """Runs started in ``[:start, :end)`` (UTC, ISO 8601 text such as 2025-01-31 or
    2025-01-31T12:00; a blank bound is open), newest first."""
    return """SELECT run_id, status, started_at, finished_at, user, rows_read, rows_loaded, rows_new,
               rows_updated, rows_rejected, tagged, ambiguous, annotated
        FROM runs
        WHERE started_at >= COALESCE(NULLIF(:start, ''), '0000')
          AND started_at < COALESCE(NULLIF(:end, ''), '9999')
        ORDER BY started_at DESC"""


def _annotations_verdict_sql() -> str:
    # the whole-database annotations_complete verdict of the latest run that checked it
    return """(SELECT c.passed FROM check_results c JOIN runs r ON r.run_id = c.run_id
               WHERE c.check_name = 'annotations_complete' ORDER BY r.started_at DESC LIMIT 1)"""


def unannotated_transactions_sql() -> str:
    """Non-zero transactions without an annotation (should be empty; zero amounts have none by rule).

    Every run's ``annotations_complete`` check proves, over the whole database, that
    none is missing. So while the latest verdict is a pass, only rows loaded since
    (those of runs whose annotations are still pending) can lack one, and only they
    are looked at, through the index on last_changed_run. When the latest verdict
    is a failure (or no run checked yet), the whole table is searched.
    """
    columns = (f"t.id, t.amount, t.wording, {_lineage_key_sql('t.first_run', 'first_run_id')}, "
               f"{_lineage_key_sql('t.last_changed_run', 'last_changed_run_id')}")
    missing = ("t.amount_cents != 0 AND NOT EXISTS "
               "(SELECT 1 FROM annotations a WHERE a.transaction_id = t.id)")
    verdict = _annotations_verdict_sql()
    # each branch's guard is a zero-or-one-row co-routine joined first (CROSS JOIN keeps that
    # order), so a branch whose guard is false never starts its loop: a WHERE term alone
    # would be tested once per row of transactions
    return f"""SELECT {columns}, 'pending run' AS searched
        FROM (SELECT 1 WHERE {verdict} IS 1) AS verdict_passed CROSS JOIN transactions t
        WHERE t.last_changed_run IN (SELECT k.run_key FROM run_keys k
                                     JOIN pending_enrichment p ON p.run_id = k.run_id AND p.kind = 'annotations')
          AND {missing}
        UNION ALL
        SELECT {columns}, 'whole table' AS searched
        FROM (SELECT 1 WHERE {verdict} IS NOT 1) AS verdict_not_passed CROSS JOIN transactions t
        WHERE {missing}"""


def ambiguous_wordings_sql() -> str:
    """The wordings a run's tagging found ambiguous, most frequent first (``:run_id``: full id,
    bare number, or blank for the latest run that recorded some)."""
    return """SELECT w.run_id, w.wording, w.tags_found, w.transactions FROM ambiguous_wordings w
        WHERE w.run_id = (SELECT r.run_id FROM runs r
                          WHERE (COALESCE(:run_id, '') = '' OR r.run_id = :run_id
                                 OR substr(r.run_id, instr(r.run_id, '/') + 1) = :run_id)
                            AND EXISTS (SELECT 1 FROM ambiguous_wordings x WHERE x.run_id = r.run_id)
                          ORDER BY r.started_at DESC LIMIT 1)
        ORDER BY w.transactions DESC, w.wording LIMIT 100"""


def daily_volume_sql() -> str:
    """Per UTC day: runs (succeeded, failed) and rows read, loaded, new, updated, rejected."""
    return """SELECT substr(started_at, 1, 10) AS day, COUNT(*) AS runs,
               SUM(status = 'succeeded') AS succeeded, SUM(status = 'failed') AS failed,
               SUM(rows_read) AS rows_read, SUM(rows_loaded) AS rows_loaded, SUM(rows_new) AS rows_new,
               SUM(rows_updated) AS rows_updated, SUM(rows_rejected) AS rows_rejected
        FROM runs GROUP BY day ORDER BY day DESC"""


def failed_steps_sql() -> str:
    """The latest failed step attempts, with their errors."""
    return """SELECT run_id, step, attempt, started_at, duration_s, error_type, error_message
        FROM step_runs WHERE status = 'failed' ORDER BY started_at DESC LIMIT 100"""


def pending_enrichment_sql() -> str:
    """Runs whose rows still wait for tags or annotations (caught up by the next run)."""
    return """SELECT p.run_id, p.kind, r.status AS run_status, r.started_at, r.rows_new, r.rows_updated
        FROM pending_enrichment p LEFT JOIN runs r ON r.run_id = p.run_id
        ORDER BY r.started_at DESC, p.kind"""


CANNED_QUERIES: dict[str, CannedQuery] = {q.name: q for q in (
    CannedQuery("runs_by_status", "Runs by status",
                "How many runs succeeded, failed or are still running, with the latest of each.",
                runs_by_status_sql()),
    CannedQuery("last_run_failed_checks", "Failed checks of the last run",
                "The checks that failed in the latest run that ran its checks, critical ones first "
                "(empty when everything passed).", last_run_failed_checks_sql()),
    CannedQuery("run_rejected_rows", "Rejected rows of a run",
                "The rows a run quarantined, by line, with the reason and the raw text. run_id: the full "
                "id (TransactionEnrichmentFlow/123), its number (123), or blank for the latest run.",
                run_rejected_rows_sql()),
    CannedQuery("step_durations", "Step durations: mean and 95th percentile",
                "Per step, over its succeeded attempts in every run: attempts, mean, 95th percentile "
                "(nearest rank) and maximum duration in seconds.", step_durations_sql()),
    CannedQuery("runs_between", "Runs in a time range",
                "Runs started from start (included) to end (excluded), UTC, as 2025-01-31 or "
                "2025-01-31T12:00; leave a bound blank to leave it open.", runs_between_sql()),
    CannedQuery("unannotated_transactions", "Transactions without an annotation",
                "Non-zero transactions that have no annotation: should be empty (zero amounts have none "
                "by rule). While the latest whole-database annotations check passed, only rows of runs "
                "whose annotations are still pending are searched; otherwise the whole table.",
                unannotated_transactions_sql(),
                full_scan_when="the latest annotations_complete check failed or no run has checked yet"),
    CannedQuery("most_ambiguous_wordings", "Most frequent ambiguous wordings",
                "Wordings in which tagging found two or more different tags (so the transaction got no "
                "tag), most frequent first, for one run (run_id: full id, number, or blank for the "
                "latest run that recorded some).", ambiguous_wordings_sql()),
    CannedQuery("daily_volume", "Daily volume",
                "Per UTC day: runs, succeeded, failed, and rows read, loaded, new, updated, rejected.",
                daily_volume_sql()),
    CannedQuery("failed_steps", "Failed step attempts",
                "The latest 100 failed step attempts with their error (a retried step that then "
                "succeeded shows here too).", failed_steps_sql()),
    CannedQuery("runs_pending_enrichment", "Runs waiting for tags or annotations",
                "Runs whose new or changed rows still need tags or annotations; the next run catches "
                "them up. Empty when every run's enrichment was published.", pending_enrichment_sql()),
)}


# ..................................................................... operator reads
def list_runs(db: sqlite_utils.Database, limit: int = 20) -> list[dict]:
    """The latest ``limit`` runs with their times, duration and counts, newest first."""
    return list(db.query("""SELECT run_id, status, started_at, finished_at,
            ROUND((julianday(finished_at) - julianday(started_at)) * 86400, 3) AS duration_s,
            user, rows_read, rows_loaded, rows_new, rows_updated, rows_rejected, rows_duplicate,
            tagged, untagged, ambiguous, annotated, zero_amount
        FROM runs ORDER BY started_at DESC LIMIT :limit""", {"limit": limit}))


def resolve_run(db: sqlite_utils.Database, ref: str) -> str | None:
    """The run id that ``ref`` names (full id such as ``Flow/123``, the bare number, or blank
    for the latest run), or None."""
    return db.execute(f"SELECT {_run_ref_sql()}", {"run_id": ref}).fetchone()[0]


def runs_in_progress(db: sqlite_utils.Database, stale_after_hours: float = RUNNING_STALE_AFTER_HOURS
                     ) -> list[dict]:
    """Runs still marked ``running`` that started less than ``stale_after_hours`` ago."""
    since = datetime.fromtimestamp(datetime.now(timezone.utc).timestamp() - stale_after_hours * 3600,
                                   timezone.utc).isoformat(timespec="milliseconds")
    return list(db.query("SELECT run_id, started_at, user FROM runs WHERE status = 'running' "
                         "AND started_at >= :since ORDER BY started_at", {"since": since}))


# ..................................................................... backup and restore
def integrity_problems(path: str | Path) -> list[str]:
    """SQLite's ``PRAGMA integrity_check`` of a file, read-only: [] when it is sound."""
    conn = None
    try:
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
        rows = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
    except sqlite3.DatabaseError as exc:
        return [str(exc)]
    finally:
        if conn is not None:
            conn.close()
    return [] if rows == ["ok"] else rows


def file_schema_version(path: str | Path) -> int:
    """The schema version recorded in a database file, read-only (0 if it has none)."""
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        if not conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'schema_version'").fetchone():
            return 0
        return int(conn.execute("SELECT COALESCE(MAX(version), 0) FROM schema_version").fetchone()[0])
    finally:
        conn.close()


def copy_database(source: str | Path, dest: str | Path) -> int:
    """Copy ``source`` to the new file ``dest`` with SQLite's online backup API; return its pages.

    The copy is made in one backup step, i.e. inside one read transaction of
    ``source``: it is exactly the last state committed before the copy began,
    WAL content included, whatever other processes write meanwhile (in WAL mode
    they are not blocked). ``dest`` is left as a single self-contained file
    (rollback journal mode).
    """
    src = sqlite3.connect(f"{Path(source).resolve().as_uri()}?mode=ro", uri=True,
                          timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
    dst = sqlite3.connect(dest, isolation_level=None)
    try:
        src.backup(dst)
        dst.execute("PRAGMA journal_mode = DELETE")
        return int(dst.execute("PRAGMA page_count").fetchone()[0])
    finally:
        dst.close()
        src.close()


def table_counts_of(path: str | Path) -> dict[str, int]:
    """Row counts of the data tables of a database file, read-only."""
    db = open_readonly(path)
    try:
        return table_counts(db)
    finally:
        db.close()


def _sidecars(path: Path) -> list[Path]:
    """A database file and its WAL and shared-memory files, those that exist."""
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _verified_copy(source: Path, dest: Path) -> dict[str, object]:
    """Copy ``source`` to the new file ``dest`` (via a ``.partial`` file, renamed once verified)."""
    partial = dest.with_name(f".{dest.name}.partial")
    partial.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        pages = copy_database(source, partial)
        problems = integrity_problems(partial)
        if problems:
            raise BackupInvalid(f"{dest}: the copy of {source} fails its integrity check "
                                f"({'; '.join(problems[:5])}); it was not kept.")
        with open(partial, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(partial, dest)
        _fsync_dir(dest.parent)
    except sqlite3.DatabaseError as exc:
        raise database_error(source, exc) from exc
    finally:
        partial.unlink(missing_ok=True)
    return {"pages": pages, "bytes": dest.stat().st_size, "seconds": round(time.perf_counter() - started, 3)}


def backup_database(database: str | Path, dest: str | Path) -> dict[str, object]:
    """A consistent online copy of ``database`` at ``dest``, integrity-checked; returns what was done.

    Safe while a run writes: the copy is the last committed state (see
    :func:`copy_database`). ``dest`` may be a directory, which then receives
    ``<name>-<UTC time>.db``; an existing file is never overwritten.
    """
    source = Path(database).resolve()
    if not source.is_file():
        raise DatabaseMissing(f"{source}: no such database file to back up. Check --database.")
    target = Path(dest).resolve()
    if target.is_dir():
        target = target / f"{source.stem}-{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}.db"
    if target.exists():
        raise FileExistsError(f"{target}: already exists; a backup never overwrites a file. "
                              "Name a new file or a directory.")
    if not target.parent.is_dir():
        raise DatabaseDirectoryMissing(f"{target}: directory {target.parent} does not exist.")
    done = _verified_copy(source, target)
    return {"database": str(source), "backup": str(target), **done, "integrity": "ok",
            "schema_version": file_schema_version(target), "counts": table_counts_of(target)}


def verify_backup(path: str | Path) -> int:
    """Check that ``path`` is a sound database of ours that this program can use; return its version."""
    path = Path(path).resolve()
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


def restore_blockers(database: str | Path, stale_after_hours: float = RUNNING_STALE_AFTER_HOURS,
                     own_lock: str | None = None) -> list[str]:
    """Why restoring over ``database`` now could lose a run's writes ([] when nothing stands in the way).

    A run is in progress when the run lock is held (by another than ``own_lock``,
    the restore's own claim) or a ``running`` run started less than
    ``stale_after_hours`` ago. A database that cannot be read at all cannot rule
    it out either.
    """
    path = Path(database).resolve()
    if not path.exists():
        return []
    try:
        db = open_readonly(path)
    except StorageError as exc:
        return [f"cannot read {path} to rule out a run in progress ({exc})"]
    try:
        blockers = []
        holder = run_lock_holder(db) if "run_lock" in db.table_names() else None
        if holder and holder["run_id"] != own_lock:
            blockers.append(f"run {holder['run_id']} holds the run lock (user {holder.get('user')}, "
                            f"host {holder.get('host')}, pid {holder.get('pid')}, since {holder.get('acquired_at')})")
        for run in runs_in_progress(db, stale_after_hours):
            blockers.append(f"run {run['run_id']} is running (started {run['started_at']} by {run['user']})")
    except sqlite3.DatabaseError as exc:
        blockers = [f"cannot read {path} to rule out a run in progress ({exc})"]
    finally:
        db.close()
    return blockers


def restore_database(database: str | Path, source: str | Path, force: bool = False,
                     stale_after_hours: float = RUNNING_STALE_AFTER_HOURS,
                     own_lock: str | None = None) -> dict[str, object]:
    """Replace ``database`` by a verified copy of the backup ``source``; keep the old file aside.

    Refuses (:class:`RestoreRefused`) while a run may be writing, unless ``force``.
    The backup is verified (integrity, schema version) before anything is touched;
    it is copied through SQLite (WAL content included) next to the database and
    verified again; then the database, its -wal and its -shm files are renamed
    together to ``<database>.replaced-<UTC time>`` (the old file and its WAL stay a
    consistent pair, and no stale WAL can be applied to the restored file), and the
    copy takes the database's name. ``own_lock``: the run-lock claim the caller took
    on the database for the restore's duration (so that no run can start meanwhile).
    """
    target = Path(database).resolve()
    backup = Path(source).resolve()
    verify_backup(backup)
    if backup == target:
        raise RestoreRefused(f"{target}: the backup and the database are the same file.")
    if not target.parent.is_dir():
        raise DatabaseDirectoryMissing(f"{target}: directory {target.parent} does not exist.")
    blockers = restore_blockers(target, stale_after_hours, own_lock)
    if blockers and not force:
        raise RestoreRefused(f"{target}: not restored: " + "; ".join(blockers) +
                             ". Wait for the run to finish (or, once it is known to be dead, "
                             "pass --force).")
    incoming = target.with_name(f"{target.name}.restoring")
    incoming.unlink(missing_ok=True)
    done = _verified_copy(backup, incoming)
    stamp = f"{datetime.now(timezone.utc):%Y%m%dT%H%M%S%fZ}"
    kept = []
    try:
        for old in _sidecars(target):
            aside = Path(str(old).replace(str(target), f"{target}.replaced-{stamp}", 1))
            os.replace(old, aside)
            kept.append(str(aside))
        os.replace(incoming, target)
        _fsync_dir(target.parent)
    finally:
        incoming.unlink(missing_ok=True)
    return {"database": str(target), "restored_from": str(backup), "replaced": kept,
            "forced_past": blockers if force else [], **done, "integrity": "ok",
            "schema_version": file_schema_version(target), "counts": table_counts_of(target)}
