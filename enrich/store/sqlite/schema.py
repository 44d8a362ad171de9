"""The SQLite schema: versioned migrations, each a tuple of SQL statements, applied in order.

A database records the versions applied in ``schema_version``; :func:`migrate` applies
the missing ones, each in one transaction, so a database written by any earlier version
(1 to 4) is brought up with its data kept. A database from a newer program is refused.
"""
from __future__ import annotations

from enrich.figures import COLUMN_TYPES, RUN_STATUSES
from enrich.store.adbc import Cursor
from enrich.store.errors import SchemaTooNew
from enrich.store.sqlite.connection import transaction
from enrich.store.timeutil import utc_now

SCHEMA_VERSION = 5
FTS_TABLE = "transactions_fts"
FTS_AUTOMERGE = 4  # FTS5's default: the index's other writers (triggers) merge segments as usual

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

# Version 2: browsing: views, full-text
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

# Version 3: the run lock (enrich/store/sqlite/lock.py); independent of version 2.
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
FTS_INSERT_TRIGGER_SQL = _FTS_INSERT_TRIGGER  # dropped and re-created around the bulk load
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

# Version 5: the run's status may be "interrupted" (Ctrl-C, SIGTERM), and the runs table is
# generated from enrich.figures.RunRecord (its single description); the run lock is a lease
# with an expiry (renewed while the run works); derived tags are staged per shard in the
# database (so that no step reads a file another step wrote) and published from there.
def runs_table_sql(name: str = "runs") -> str:
    """The ``runs`` table, from :class:`enrich.figures.RunRecord`."""
    statuses = ", ".join(f"'{status}'" for status in RUN_STATUSES)
    columns = ["run_id TEXT PRIMARY KEY", f"status TEXT NOT NULL CHECK (status IN ({statuses}))"]
    for column, kind in COLUMN_TYPES.items():
        columns.append(f"{column} {kind.upper()}{' NOT NULL' if column == 'started_at' else ''}")
    return f"CREATE TABLE {name} (\n        " + ",\n        ".join(columns) + "\n    )"


def _run_summary_view_sql() -> str:
    return next(statement for statement in _SCHEMA_V2 if "CREATE VIEW run_summary" in statement)


_V4_RUN_COLUMNS = ("run_id", "status", *(c for c in COLUMN_TYPES))

_SCHEMA_V5: tuple[str, ...] = (
    "DROP VIEW run_summary",
    runs_table_sql("runs_v5"),
    f"INSERT INTO runs_v5 ({', '.join(_V4_RUN_COLUMNS)}) SELECT {', '.join(_V4_RUN_COLUMNS)} FROM runs",
    "DROP TABLE runs",
    "ALTER TABLE runs_v5 RENAME TO runs",
    "CREATE INDEX runs_status ON runs(status, started_at)",
    "CREATE INDEX runs_started ON runs(started_at)",
    _run_summary_view_sql(),
    "ALTER TABLE run_lock ADD COLUMN expires_at TEXT",
    """CREATE TABLE staged_tags (
        run INTEGER NOT NULL REFERENCES run_keys(run_key),
        shard INTEGER NOT NULL,
        transaction_id INTEGER NOT NULL,
        tag TEXT NOT NULL,
        PRIMARY KEY (run, shard, transaction_id)
    ) WITHOUT ROWID""",
    """CREATE TABLE staged_ambiguous (
        run_id TEXT NOT NULL,
        shard INTEGER NOT NULL,
        wording TEXT NOT NULL,
        tags_found INTEGER NOT NULL,
        transactions INTEGER NOT NULL,
        PRIMARY KEY (run_id, shard, wording)
    )""",
)

#: Migrations that rebuild tables: run with foreign-key enforcement off (SQLite's
#: documented procedure for changing a table's columns; the rows are copied as they are).
_REBUILDING_MIGRATIONS = frozenset({4, 5})

MIGRATIONS: tuple[tuple[int, tuple[str, ...]], ...] = (
    (1, _SCHEMA_V1), (2, _SCHEMA_V2), (3, _SCHEMA_V3), (4, _SCHEMA_V4), (5, _SCHEMA_V5))


def schema_version(cur: Cursor) -> int:
    """The schema version of the database (0 for an empty file)."""
    if not cur.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'"):
        return 0
    return int(cur.scalar("SELECT COALESCE(MAX(version), 0) FROM schema_version"))


def _applied_versions(cur: Cursor) -> set[int]:
    """The migrations already applied (a gap, e.g. 1 and 3 without 2, is filled in later)."""
    if not cur.scalar("SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_version'"):
        return set()
    return {int(version) for (version,) in cur.rows("SELECT version FROM schema_version")}


def migrate(cur: Cursor, where: str) -> list[int]:
    """Bring the schema up to :data:`SCHEMA_VERSION`, one versioned migration at a time; returns
    the versions applied. ``where`` names the database in messages."""
    current = schema_version(cur)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(f"{where}: database schema version {current} is newer than this program "
                           f"({SCHEMA_VERSION}): a newer version of the program wrote it. Upgrade the "
                           "program; the database was left untouched.")
    applied, done = _applied_versions(cur), []
    for version, statements in sorted(MIGRATIONS):
        if version in applied:
            continue
        rebuilding = version in _REBUILDING_MIGRATIONS
        if rebuilding:
            cur.execute("PRAGMA foreign_keys = OFF")  # (outside a transaction, or SQLite ignores it)
        try:
            with transaction(cur):
                cur.execute("CREATE TABLE IF NOT EXISTS schema_version "
                            "(version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
                for statement in statements:
                    cur.execute(statement)
                cur.execute("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", (version, utc_now()))
        finally:
            if rebuilding:
                cur.execute("PRAGMA foreign_keys = ON")
        done.append(version)
    return done
