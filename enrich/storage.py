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

import logging
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import sqlite_utils

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 1
BUSY_TIMEOUT_MS = 10 * 60 * 1000
READ_CHUNK_ROWS = 500_000
TAGS = "tags"
ANNOTATIONS = "annotations"
ENRICHMENT_KINDS = (TAGS, ANNOTATIONS)


class StorageError(Exception):
    """The database cannot be used; the message names the file and what to do."""


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

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = ((1, _SCHEMA_V1),)


def connect(path: str | Path) -> sqlite_utils.Database:
    """Open (creating if needed) the database at ``path`` with the project's settings and schema."""
    path = Path(path)
    if not path.parent.exists():
        raise StorageError(f"{path}: directory {path.parent} does not exist. Create it or pass another --database.")
    try:
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None)
        db = sqlite_utils.Database(conn)
        _configure(db)
        migrate(db)
    except sqlite3.DatabaseError as exc:
        raise StorageError(f"{path}: cannot use this file as the database ({exc}). "
                           "Check the path, its permissions and free disk space.") from exc
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
        raise StorageError(f"database schema version {current} is newer than this program "
                           f"({SCHEMA_VERSION}). Upgrade the program.")
    for version, statements in MIGRATIONS:
        if version <= current:
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
    """One ``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back whole on any exception."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def utc_now() -> str:
    """Current UTC time as ISO 8601 text (the format of every timestamp in the database)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


# --------------------------------------------------------------------------- loading
def load_batch(db: sqlite_utils.Database, run_id: str, chunks: Iterable) -> LoadStats:
    """Load parsed CSV chunks as one batch, in one transaction.

    ``chunks`` yields objects with ``valid`` (line, id, amount_cents, wording) and
    ``rejected`` (line, raw, reason) frames (see :mod:`enrich.ingest`). Identical
    duplicate rows are loaded once and counted; rows sharing an id with different
    content are all rejected. Rows are upserted by id: new rows inserted, changed
    rows updated (and marked as changed by this run), identical rows untouched.
    If reading fails midway, nothing is written.
    """
    with write_transaction(db):
        _create_staging(db)
        rows_read = 0
        for chunk in chunks:
            rows_read += len(chunk.valid) + len(chunk.rejected)
            _stage_chunk(db, chunk.valid, chunk.rejected)
        conflicts = _reject_conflicting_duplicates(db)
        db.execute(_batch_from_staging_sql())
        rows_loaded = db.execute("SELECT COUNT(*) FROM temp.batch").fetchone()[0]
        in_file = db.execute("SELECT COALESCE(SUM(amount_cents), 0) FROM temp.batch").fetchone()[0]
        db.execute(_upsert_batch_sql(), {"run_id": run_id})
        new, updated, stored = db.execute(_count_batch_changes_sql(), {"run_id": run_id}).fetchone()
        db.execute("DELETE FROM rejected_rows WHERE run_id = ?", (run_id,))
        db.execute("INSERT INTO rejected_rows (run_id, line, raw, reason) "
                   "SELECT ?, line, raw, reason FROM temp.staging_rejected", (run_id,))
        rejected = db.execute("SELECT COUNT(*) FROM temp.staging_rejected").fetchone()[0]
        db.conn.executemany("INSERT OR IGNORE INTO pending_enrichment (run_id, kind) VALUES (?, ?)",
                       [(run_id, kind) for kind in ENRICHMENT_KINDS])
        _drop_staging(db)
    stats = LoadStats(rows_read=rows_read, rows_loaded=rows_loaded, rows_new=new or 0,
                      rows_updated=updated or 0,
                      rows_unchanged=rows_loaded - (new or 0) - (updated or 0),
                      rows_rejected=rejected, rows_duplicate=rows_read - rows_loaded - rejected,
                      cents_in_file=in_file, cents_stored=stored or 0)
    logger.info("loaded batch: %s (%d conflicting ids)", stats, conflicts)
    return stats


def _create_staging(db: sqlite_utils.Database) -> None:
    _drop_staging(db)
    db.execute("CREATE TEMP TABLE staging (line INTEGER NOT NULL, id INTEGER NOT NULL, "
               "amount_cents INTEGER NOT NULL, wording TEXT NOT NULL)")
    db.execute("CREATE TEMP TABLE staging_rejected (line INTEGER PRIMARY KEY, raw TEXT NOT NULL, "
               "reason TEXT NOT NULL)")


def _drop_staging(db: sqlite_utils.Database) -> None:
    for table in ("staging", "staging_rejected", "conflicts", "batch"):
        db.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _stage_chunk(db: sqlite_utils.Database, valid: pd.DataFrame, rejected: pd.DataFrame) -> None:
    db.conn.executemany(
        "INSERT INTO temp.staging (line, id, amount_cents, wording) VALUES (?, ?, ?, ?)",
        zip(valid["line"].tolist(), valid["id"].tolist(), valid["amount_cents"].tolist(),
            valid["wording"].tolist()),
    )
    db.conn.executemany(
        "INSERT INTO temp.staging_rejected (line, raw, reason) VALUES (?, ?, ?)",
        zip(rejected["line"].tolist(), rejected["raw"].tolist(), rejected["reason"].tolist()),
    )


def _reject_conflicting_duplicates(db: sqlite_utils.Database) -> int:
    """Move every row of an id that appears with different content to the rejected rows."""
    db.execute("CREATE INDEX temp.staging_id ON staging(id)")
    db.execute("""CREATE TEMP TABLE conflicts AS
        SELECT id, group_concat(line, ', ') AS lines FROM (
            SELECT id, line FROM temp.staging WHERE id IN (
                SELECT id FROM (SELECT DISTINCT id, amount_cents, wording FROM temp.staging)
                GROUP BY id HAVING COUNT(*) > 1)
            ORDER BY id, line)
        GROUP BY id""")
    db.execute("""INSERT INTO temp.staging_rejected (line, raw, reason)
        SELECT s.line,
               s.id || ',' || printf('%s%d.%02d', CASE WHEN s.amount_cents < 0 THEN '-' ELSE '' END,
                                     abs(s.amount_cents) / 100, abs(s.amount_cents) % 100)
                    || ',"' || replace(s.wording, '"', '""') || '"',
               'conflicting duplicate id: id ' || s.id || ' appears with different content on lines '
                    || c.lines || '; fix the file and load it again'
        FROM temp.staging s JOIN temp.conflicts c ON c.id = s.id""")
    db.execute("DELETE FROM temp.staging WHERE id IN (SELECT id FROM temp.conflicts)")
    return db.execute("SELECT COUNT(*) FROM temp.conflicts").fetchone()[0]


def _batch_from_staging_sql() -> str:
    # after conflicts are gone, rows sharing an id are identical: keep the first line
    return """CREATE TEMP TABLE batch AS
        SELECT id, MIN(line) AS line, amount_cents, wording FROM temp.staging GROUP BY id"""


def _upsert_batch_sql() -> str:
    return """INSERT INTO transactions (id, amount_cents, wording, first_run_id, last_changed_run_id)
        SELECT id, amount_cents, wording, :run_id, :run_id FROM temp.batch WHERE true
        ON CONFLICT (id) DO UPDATE SET
            amount_cents = excluded.amount_cents,
            wording = excluded.wording,
            last_changed_run_id = excluded.last_changed_run_id
        WHERE transactions.amount_cents != excluded.amount_cents
           OR transactions.wording != excluded.wording"""


def _count_batch_changes_sql() -> str:
    return """SELECT SUM(t.first_run_id = :run_id),
                     SUM(t.first_run_id != :run_id AND t.last_changed_run_id = :run_id),
                     SUM(t.amount_cents)
        FROM temp.batch b JOIN transactions t ON t.id = b.id"""


# --------------------------------------------------------------------------- enrichment
def pending_runs(db: sqlite_utils.Database, kind: str) -> tuple[str, ...]:
    """Runs whose new or changed rows still need ``kind`` (tags or annotations) derived."""
    rows = db.execute("SELECT run_id FROM pending_enrichment WHERE kind = ? ORDER BY run_id", (kind,))
    return tuple(run_id for (run_id,) in rows.fetchall())


def get_state(db: sqlite_utils.Database, key: str) -> str | None:
    """A value of the enrichment state (e.g. the fingerprint of the tag list last applied)."""
    row = db.execute("SELECT value FROM enrichment_state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def iter_transactions(db: sqlite_utils.Database, columns: Sequence[str],
                      runs: Sequence[str] | None, chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pd.DataFrame]:
    """Stored transactions in id order, ``chunk_rows`` at a time.

    ``runs=None`` reads every transaction; otherwise only those last changed by one of ``runs``.
    """
    allowed = {"id", "amount_cents", "wording"}
    if not set(columns) <= allowed:
        raise ValueError(f"unknown columns {sorted(set(columns) - allowed)}")
    sql, params = _select_transactions_sql(columns, runs)
    cursor = db.execute(sql, params)
    while True:
        rows = cursor.fetchmany(chunk_rows)
        if not rows:
            return
        yield pd.DataFrame.from_records(rows, columns=list(columns))


def _select_transactions_sql(columns: Sequence[str], runs: Sequence[str] | None) -> tuple[str, list[str]]:
    select = f"SELECT {', '.join(columns)} FROM transactions"
    if runs is None:
        return select + " ORDER BY id", []
    marks = ", ".join("?" for _ in runs) or "NULL"
    return select + f" WHERE last_changed_run_id IN ({marks}) ORDER BY id", list(runs)


def publish(db: sqlite_utils.Database, kind: str, run_id: str, frames: Iterable[pd.DataFrame],
            covered_runs: Sequence[str] | None, state: dict[str, str] | None = None) -> PublishStats:
    """Replace the ``kind`` rows (tags or annotations) of the re-derived transactions, in one transaction.

    ``covered_runs`` are the pending runs whose rows ``frames`` re-derived
    (``None``: every transaction was re-derived). Their old rows are removed
    (so a tag that no longer applies disappears), the new rows inserted, the
    runs cleared from ``pending_enrichment`` and ``state`` saved.
    """
    table, value = {TAGS: ("tags", "tag"), ANNOTATIONS: ("annotations", "annotation")}[kind]
    with write_transaction(db):
        before = db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        if covered_runs is None:
            db.execute(f"DELETE FROM {table}")
        else:
            marks = ", ".join("?" for _ in covered_runs) or "NULL"
            db.execute(f"DELETE FROM {table} WHERE transaction_id IN "
                       f"(SELECT id FROM transactions WHERE last_changed_run_id IN ({marks}))",
                       list(covered_runs))
        removed = before - db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
        written = 0
        for frame in frames:
            db.conn.executemany(
                f"INSERT INTO {table} (transaction_id, {value}, run_id) VALUES (?, ?, ?)",
                zip(frame["transaction_id"].tolist(), frame[value].tolist(), [run_id] * len(frame)),
            )
            written += len(frame)
        if covered_runs is None:
            db.execute("DELETE FROM pending_enrichment WHERE kind = ?", (kind,))
        else:
            db.conn.executemany("DELETE FROM pending_enrichment WHERE kind = ? AND run_id = ?",
                           [(kind, run) for run in covered_runs])
        for key, val in (state or {}).items():
            db.execute("INSERT INTO enrichment_state (key, value) VALUES (?, ?) "
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
