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
import sqlite3
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import adbc_driver_manager as adbc_errors
import adbc_driver_sqlite.dbapi as adbc_sqlite
import pandas as pd
import pyarrow as pa
import sqlite_utils

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 3
BUSY_TIMEOUT_MS = 10 * 60 * 1000
READ_CHUNK_ROWS = 500_000
TAGS = "tags"
ANNOTATIONS = "annotations"
ENRICHMENT_KINDS = (TAGS, ANNOTATIONS)


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

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _SCHEMA_V1), (3, _SCHEMA_V3))


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


def connect(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at ``path`` with the project's settings and schema."""
    path = Path(path).resolve()
    if _OPEN_BULK[path]:
        raise MixedSQLiteLibraries(f"{path} is open for a bulk operation in this process: "
                                   "finish it before opening the database")
    if not path.parent.exists():
        raise DatabaseDirectoryMissing(f"{path}: directory {path.parent} does not exist. "
                                       "Create it or pass another --database.")
    conn = None
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db = sqlite_utils.Database(conn)
        _configure(db)
        migrate(db)
        _OPEN_DATABASES.add(db)
    except (sqlite3.DatabaseError, StorageError) as exc:
        if conn is not None:
            conn.close()
        if isinstance(exc, StorageError):
            raise
        raise database_error(path, exc) from exc
    return db


def _configure(db: sqlite_utils.Database) -> None:
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
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
        with write_transaction(db):
            db.execute("CREATE TABLE IF NOT EXISTS schema_version "
                       "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)",
                       (version, utc_now()))
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
def bulk_connection(path: str | Path) -> Iterator[_BulkCursor]:
    """An Arrow (ADBC) connection to a database created by :func:`connect`, closed on exit.

    No :func:`connect` connection to the same file may be open in this process meanwhile.
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
        for pragma in _bulk_pragmas():
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
    """The project's error for a failed bulk operation, named after its condition."""
    text = str(exc).replace("\n", " ")
    if "constraint failed" in text:
        return ConstraintViolation(f"{path}: a write broke a database constraint ({text}); nothing was written")
    if "disk is full" in text or "SQLITE_FULL" in text:
        return StorageFull(f"{path}: the disk is full ({text}); nothing was written. Free space and re-run.")
    return StorageError(f"{path}: bulk operation failed ({text}); nothing was written. "
                        "Check the file's permissions and free disk space, then re-run.")


def _bulk_pragmas() -> tuple[str, ...]:
    return (f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}", "PRAGMA synchronous = NORMAL",
            "PRAGMA foreign_keys = ON", "PRAGMA cache_size = -262144", "PRAGMA temp_store = FILE")


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
    with bulk_connection(database) as bulk, _bulk_transaction(bulk):
        _create_staging(bulk)
        rows_read = 0
        for chunk in chunks:
            rows_read += len(chunk.valid) + len(chunk.rejected)
            _stage_chunk(bulk, chunk.valid, chunk.rejected)
        bulk.execute("CREATE INDEX temp.staging_id ON staging(id)")
        conflicts = _reject_conflicting_duplicates(bulk)
        rows_loaded, in_file = bulk.row(_batch_totals_sql())
        existing = bulk.scalar(_count_existing_sql()) if bulk.scalar(_any_transaction_sql()) else 0
        bulk.execute(_upsert_batch_sql(), (run_id, run_id))
        changed = bulk.scalar("SELECT changes()")
        stored = bulk.scalar(_stored_total_sql())
        bulk.execute("DELETE FROM rejected_rows WHERE run_id = ?", (run_id,))
        bulk.execute("INSERT INTO rejected_rows (run_id, line, raw, reason) "
                     "SELECT ?, line, raw, reason FROM temp.staging_rejected", (run_id,))
        rejected = bulk.scalar("SELECT COUNT(*) FROM temp.staging_rejected")
        for kind in ENRICHMENT_KINDS:
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
    bulk.execute("CREATE TEMP TABLE staging_rejected (line INTEGER PRIMARY KEY, raw TEXT NOT NULL, "
                 "reason TEXT NOT NULL)")


def _drop_staging(bulk: _BulkCursor) -> None:
    for table in ("staging", "staging_rejected", "conflicts", "duplicates"):
        bulk.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _stage_chunk(bulk: _BulkCursor, valid: pd.DataFrame, rejected: pd.DataFrame) -> None:
    if len(valid):
        bulk.ingest("staging", pa.Table.from_pandas(valid[list(_STAGING_SCHEMA.names)], schema=_STAGING_SCHEMA,
                                                    preserve_index=False), temporary=True)
    if len(rejected):
        bulk.ingest("staging_rejected", pa.Table.from_pandas(rejected[list(_REJECTED_SCHEMA.names)],
                                                             schema=_REJECTED_SCHEMA, preserve_index=False),
                    temporary=True)


def _reject_conflicting_duplicates(bulk: _BulkCursor) -> int:
    """Drop the repeated lines of identical duplicates; reject every line of a conflicting id."""
    bulk.execute("""CREATE TEMP TABLE duplicates AS
        SELECT id FROM temp.staging GROUP BY id HAVING COUNT(*) > 1""")
    if not bulk.scalar("SELECT COUNT(*) FROM temp.duplicates"):
        return 0  # the usual case: every id once, nothing more to do
    bulk.execute("""CREATE TEMP TABLE conflicts AS
        SELECT id, group_concat(line, ', ') AS lines FROM (
            SELECT s.id, s.line FROM temp.staging s WHERE s.id IN (
                SELECT id FROM (SELECT DISTINCT id, amount_cents, wording FROM temp.staging
                                WHERE id IN (SELECT id FROM temp.duplicates))
                GROUP BY id HAVING COUNT(*) > 1)
            ORDER BY s.id, s.line)
        GROUP BY id""")
    bulk.execute("""INSERT INTO temp.staging_rejected (line, raw, reason)
        SELECT s.line,
               s.id || ',' || printf('%s%d.%02d', CASE WHEN s.amount_cents < 0 THEN '-' ELSE '' END,
                                     abs(s.amount_cents) / 100, abs(s.amount_cents) % 100)
                    || ',"' || replace(s.wording, '"', '""') || '"',
               'conflicting duplicate id: id ' || s.id || ' appears with different content on lines '
                    || c.lines || '; fix the file and load it again'
        FROM temp.staging s JOIN temp.conflicts c ON c.id = s.id""")
    bulk.execute("DELETE FROM temp.staging WHERE id IN (SELECT id FROM temp.conflicts)")
    # identical duplicates: keep the first line of each id
    bulk.execute("""DELETE FROM temp.staging WHERE id IN (SELECT id FROM temp.duplicates)
        AND line NOT IN (SELECT MIN(line) FROM temp.staging WHERE id IN (SELECT id FROM temp.duplicates)
                         GROUP BY id)""")
    return int(bulk.scalar("SELECT COUNT(*) FROM temp.conflicts"))


def _batch_totals_sql() -> str:
    # after _reject_conflicting_duplicates every id appears once in staging
    return "SELECT COUNT(*), COALESCE(SUM(amount_cents), 0) FROM temp.staging"


def _any_transaction_sql() -> str:
    return "SELECT EXISTS (SELECT 1 FROM transactions)"


def _count_existing_sql() -> str:
    return "SELECT COUNT(*) FROM temp.staging s WHERE EXISTS (SELECT 1 FROM transactions t WHERE t.id = s.id)"


def _upsert_batch_sql() -> str:
    # in id order, so that the primary-key b-tree is appended to rather than split at random
    return """INSERT INTO transactions (id, amount_cents, wording, first_run_id, last_changed_run_id)
        SELECT id, amount_cents, wording, ?1, ?2 FROM temp.staging ORDER BY id
        ON CONFLICT (id) DO UPDATE SET
            amount_cents = excluded.amount_cents,
            wording = excluded.wording,
            last_changed_run_id = excluded.last_changed_run_id
        WHERE transactions.amount_cents != excluded.amount_cents
           OR transactions.wording != excluded.wording"""


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


def _select_transactions_sql(columns: Sequence[str], runs: Sequence[str] | None) -> tuple[str, list[str]]:
    select = f"SELECT {', '.join(columns)} FROM transactions"
    if runs is None:
        return select + " ORDER BY id", []
    marks = ", ".join("?" for _ in runs)
    return select + f" WHERE last_changed_run_id IN ({marks}) ORDER BY id", list(runs)


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


def publish(database: str | Path, kind: str, run_id: str, frames: Iterable[pd.DataFrame],
            covered_runs: Sequence[str] | None, state: dict[str, str] | None = None) -> PublishStats:
    """Replace the ``kind`` rows (tags or annotations) of the re-derived transactions, in one transaction.

    ``covered_runs`` are the pending runs whose rows ``frames`` re-derived
    (``None``: every transaction was re-derived). Their old rows are removed
    (so a tag that no longer applies disappears), the new rows inserted, the
    runs cleared from ``pending_enrichment`` and ``state`` saved.
    """
    table, value = _ENRICHMENT_TABLES[kind]
    schema = pa.schema([("transaction_id", pa.int64()), (value, pa.large_string()), ("run_id", pa.large_string())])
    written = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal written
        for frame in frames:
            written += len(frame)
            yield pa.RecordBatch.from_pandas(frame[["transaction_id", value]].assign(run_id=run_id),
                                             schema=schema, preserve_index=False)

    with bulk_connection(database) as bulk, _bulk_transaction(bulk):
        before = bulk.scalar(f"SELECT COUNT(*) FROM {table}")
        if covered_runs is None:
            bulk.execute(f"DELETE FROM {table}")
        elif covered_runs:
            marks = ", ".join("?" for _ in covered_runs)
            bulk.execute(f"DELETE FROM {table} WHERE transaction_id IN "
                         f"(SELECT id FROM transactions WHERE last_changed_run_id IN ({marks}))", covered_runs)
        removed = before - bulk.scalar(f"SELECT COUNT(*) FROM {table}")
        bulk.ingest(table, pa.RecordBatchReader.from_batches(schema, batches()))
        if covered_runs is None:
            bulk.execute("DELETE FROM pending_enrichment WHERE kind = ?", (kind,))
        for run in covered_runs or ():
            bulk.execute("DELETE FROM pending_enrichment WHERE kind = ? AND run_id = ?", (kind, run))
        state = {**(state or {}), fingerprint_key(kind): _fingerprint(_fetch_all(bulk, _fingerprint_sql(kind)))}
        for key, val in state.items():
            bulk.execute("INSERT INTO enrichment_state (key, value) VALUES (?, ?) "
                         "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, val))
    stats = PublishStats(written=written, removed=removed,
                         pending_runs=tuple(covered_runs) if covered_runs is not None else ())
    logger.info("published %s: %d rows written, %d old rows replaced", kind, written, removed)
    return stats


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


def annotation_discrepancies(db: sqlite_utils.Database) -> dict[str, int]:
    """Over the whole database: annotations missing, wrong, or present on a zero amount."""
    expected = annotation_case_sql("t.amount_cents")
    row = db.execute(f"""SELECT
            SUM(a.transaction_id IS NULL AND t.amount_cents != 0),
            SUM(a.transaction_id IS NOT NULL AND t.amount_cents != 0 AND a.annotation IS NOT ({expected})),
            SUM(a.transaction_id IS NOT NULL AND t.amount_cents = 0),
            COUNT(*)
        FROM transactions t LEFT JOIN annotations a ON a.transaction_id = t.id""").fetchone()
    return {"missing": row[0] or 0, "wrong": row[1] or 0, "unexpected": row[2] or 0, "checked": row[3]}


def iter_stored_tags(db: sqlite_utils.Database, chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Every transaction's id and wording with its stored tag (None if untagged), by id."""
    cursor = db.execute("SELECT t.id, t.wording, g.tag FROM transactions t "
                        "LEFT JOIN tags g ON g.transaction_id = t.id ORDER BY t.id")
    while rows := cursor.fetchmany(chunk_rows):
        yield pd.DataFrame.from_records(rows, columns=["id", "wording", "tag"])


def orphan_counts(db: sqlite_utils.Database) -> dict[str, int]:
    """Tags and annotations whose transaction does not exist (referential integrity)."""
    return {table: db.execute(f"SELECT COUNT(*) FROM {table} WHERE transaction_id NOT IN "
                              "(SELECT id FROM transactions)").fetchone()[0]
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


class SchemaTooNew(StorageError):
    """The database was written by a newer version of the program."""


#: SQLite primary result codes (``sqlite3.Error.sqlite_errorcode & 0xFF``) and their conditions.
_SQLITE_BUSY, _SQLITE_LOCKED, _SQLITE_READONLY, _SQLITE_IOERR = 5, 6, 8, 10
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_CANTOPEN, _SQLITE_NOTADB = 11, 13, 14, 26


def database_error(path: str | Path, exc: sqlite3.Error) -> StorageError | sqlite3.Error:
    """The project's error for an SQLite error on ``path``, named after its condition.

    Conditions of the file or the disk (read-only, full, not a database,
    cannot open, I/O error, still locked after the busy timeout) become a
    :class:`StorageError` subclass whose message says what to do; any other
    error (a bug: bad SQL, a constraint) is returned unchanged.
    """
    code = (getattr(exc, "sqlite_errorcode", None) or 0) & 0xFF
    detail = str(exc)
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
            f"{path}: this file is not an SQLite database or is damaged ({detail}); it was left "
            "untouched. Check that --database names the right file; if it is damaged, restore it "
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
        return StorageError(f"{path}: the database stayed locked by another writer for "
                            f"{BUSY_TIMEOUT_MS // 1000} s ({detail}); nothing was written. Run again "
                            "once the other writer has finished.")
    return exc


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
    run holds it and ``holder_is_dead(holder)`` is false. Taking a lock the same
    run already holds keeps its ``acquired_at`` (steps of one run re-check it).
    """
    held = run_lock_holder(db)
    if held is not None and _same_holder(held, claim):
        return True, None  # already ours: no write, so steps never queue behind a long publish
    with write_transaction(db):
        held = run_lock_holder(db)
        if held is not None and held["run_id"] != claim["run_id"] and not holder_is_dead(held):
            return False, held
        db.execute("""INSERT INTO run_lock (id, run_id, user, host, pid, process_start, acquired_at)
            VALUES (1, :run_id, :user, :host, :pid, :process_start, :acquired_at)
            ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, user = excluded.user,
                host = excluded.host, pid = excluded.pid, process_start = excluded.process_start,
                acquired_at = CASE WHEN run_lock.run_id = excluded.run_id THEN run_lock.acquired_at
                                   ELSE excluded.acquired_at END""",
                   {**{name: claim.get(name) for name in RUN_LOCK_FIELDS}, "acquired_at": utc_now()})
    replaced = held if held is not None and held["run_id"] != claim["run_id"] else None
    return True, replaced


def _same_holder(held: dict, claim: dict) -> bool:
    return all(held[name] == claim.get(name) for name in ("run_id", "host", "pid", "process_start"))


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
