"""Loading a batch into SQLite: staging, duplicate pairing, the upsert, quarantine, in one transaction."""
from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from enrich.store.adbc import Cursor
from enrich.store.batches import BatchStaging, late_ids_table
from enrich.store.idorder import IdOrder
from enrich.store.interface import ParsedChunk
from enrich.store.records import PENDING_KINDS, LoadStats
from enrich.store.sqlite.connection import LOAD_CACHE_KIB, connect, transaction
from enrich.store.sqlite.schema import FTS_INSERT_TRIGGER_SQL
from enrich.store.sqlite.lineage import run_key

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)


def load_batch(path: Path, run_id: str, chunks: Iterable[ParsedChunk]) -> LoadStats:
    """Load parsed CSV chunks as one batch, in one transaction.

    ``chunks`` yields objects with ``valid`` (line, id, amount_cents, wording) and
    ``rejected`` (line, raw, reason) frames (see :mod:`enrich.ingest`). Identical
    duplicate rows are loaded once and counted; rows sharing an id with different
    content are all rejected. Rows are upserted by id: new rows inserted, changed
    rows updated (and marked as changed by this run), identical rows untouched.
    If reading fails midway, nothing is written.
    """
    # every row gets this run's key (created first) and no id changes: the foreign keys hold by
    # construction, and their per-row look-ups are skipped
    with connect(path, foreign_keys=False, bulk=True, cache_kib=LOAD_CACHE_KIB) as bulk, transaction(bulk):
        _create_staging(bulk)
        stored_before = bulk.scalar(_count_transactions_sql())
        staging = BatchStaging(bulk, (lambda low, high: _stored_range(bulk, low, high)) if stored_before else None)
        for chunk in chunks:
            staging.add(chunk)
        order = staging.order
        conflicts, dropped, dropped_cents, dropped_same_cents = _reject_conflicting_duplicates(bulk, order)
        rows_loaded, in_file = staging.valid - dropped, staging.cents_in_file - dropped_cents  # every id once now
        # new rows are indexed for search by the index_wordings step, in bulk: the per-row insert
        # trigger is dropped for this statement only, inside the transaction (no other connection
        # ever sees it missing); updates of indexed rows still go through their trigger
        bulk.execute("DROP TRIGGER transactions_fts_insert")
        bulk.execute(_upsert_batch_sql(in_id_order=order.nearly_sorted), (run_key(bulk, run_id),))
        changed = bulk.scalar("SELECT changes()")
        existing = rows_loaded - (bulk.scalar(_count_transactions_sql()) - stored_before)  # loaded minus inserted
        bulk.execute(FTS_INSERT_TRIGGER_SQL)
        # what the database now holds for the batch's ids: the staged rows read back, plus the rows
        # found identical to the stored ones (read in this transaction, which the upsert leaves alone)
        stored = (bulk.scalar(_stored_total_sql()) or 0) + staging.same_cents - dropped_same_cents
        bulk.execute("DELETE FROM rejected_rows WHERE run_id = ?", (run_id,))
        bulk.execute("INSERT INTO rejected_rows (run_id, line, raw, reason) "
                     "SELECT ?, line, raw, reason FROM temp.staging_rejected", (run_id,))
        rejected = bulk.scalar("SELECT COUNT(*) FROM temp.staging_rejected")
        for kind in PENDING_KINDS if changed else ():  # an unchanged batch leaves nothing to derive
            bulk.execute("INSERT OR IGNORE INTO pending_enrichment (run_id, kind) VALUES (?, ?)", (run_id, kind))
        _drop_staging(bulk)
    stats = LoadStats.of_load(rows_read=staging.rows_read, rows_loaded=rows_loaded, new=rows_loaded - existing,
                              changed=int(changed), rejected=int(rejected), cents_in_file=in_file or 0,
                              cents_stored=int(stored or 0))
    logger.info("loaded batch: %s (%d conflicting ids among the rejected)", stats.describe(), conflicts)
    return stats


def _create_staging(bulk: Cursor) -> None:
    _drop_staging(bulk)
    # line is the rowid: rows stay in file order, duplicates of an id keep their first line
    bulk.execute("CREATE TEMP TABLE staging (line INTEGER PRIMARY KEY, id INTEGER NOT NULL, "
                 "amount_cents INTEGER NOT NULL, wording TEXT NOT NULL)")
    bulk.execute("CREATE TEMP TABLE unchanged_runs (first_id INTEGER PRIMARY KEY, first_line INTEGER NOT NULL, "
                 "n INTEGER NOT NULL)")
    bulk.execute("CREATE TEMP TABLE staging_rejected (line INTEGER PRIMARY KEY, raw TEXT NOT NULL, "
                 "reason TEXT NOT NULL)")


def _drop_staging(bulk: Cursor) -> None:
    for table in ("staging", "unchanged_runs", "staging_rejected", "conflicts", "late_ids", "dup_rows", "dropped"):
        bulk.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _stored_range(bulk: Cursor, low: int, high: int) -> pa.Table:
    """The stored rows of ids ``low`` to ``high``, in id order (read in the load's transaction)."""
    return bulk.table("SELECT id, amount_cents, wording FROM transactions WHERE id BETWEEN ? AND ?", (low, high))


def _reject_conflicting_duplicates(bulk: Cursor, order: IdOrder) -> tuple[int, int, int, int]:
    """Drop the repeated lines of identical duplicates; reject every line of a conflicting id.

    The batch's lines are in ``temp.staging`` and, for those found identical to the stored
    rows, ``temp.unchanged_runs`` (runs of lines and ids; the content is the stored row's,
    see :func:`_unchanged_lines_sql`). Returns the
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
        bulk.ingest("late_ids", late_ids_table(order), temporary=True)
        repeated = "SELECT id FROM temp.late_ids"
    else:
        found = _unchanged_lines_sql("SELECT DISTINCT id FROM temp.staging")
        repeated = (f"SELECT id FROM (SELECT id FROM temp.staging UNION ALL SELECT id FROM ({found})) "
                    "GROUP BY id HAVING COUNT(*) > 1")
    bulk.execute(f"""CREATE TEMP TABLE dup_rows AS
        SELECT line, id, amount_cents, wording, 0 AS unchanged FROM temp.staging WHERE id IN ({repeated})
        UNION ALL
        SELECT u.line, u.id, t.amount_cents, t.wording, 1 FROM ({_unchanged_lines_sql(repeated)}) u
        JOIN transactions t ON t.id = u.id""")
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
    dropped, cents, unchanged_cents = bulk.row("SELECT COUNT(*), COALESCE(SUM(amount_cents), 0), "  # type: ignore[misc]
                                               "COALESCE(SUM(amount_cents * unchanged), 0) FROM temp.dropped")
    return int(bulk.scalar("SELECT COUNT(*) FROM temp.conflicts")), int(dropped), int(cents), int(unchanged_cents)


def _unchanged_lines_sql(ids: str) -> str:
    """The lines found unchanged (line, id) whose id is one of ``ids`` (a query of distinct ids): the
    run holding an id is the one starting at the largest first id not above it (a primary-key
    seek), if the id falls within its length."""
    return f"""SELECT r.first_line + (x.id - r.first_id) AS line, x.id AS id
        FROM ({ids}) x JOIN temp.unchanged_runs r
          ON r.first_id = (SELECT MAX(first_id) FROM temp.unchanged_runs WHERE first_id <= x.id)
        WHERE x.id < r.first_id + r.n"""


def _count_transactions_sql() -> str:
    return "SELECT COUNT(*) FROM transactions"  # (SQLite counts the smallest index's entries)


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


def _stored_total_sql() -> str:
    # control total: what the database now holds for the batch's ids
    return "SELECT SUM(t.amount_cents) FROM temp.staging s JOIN transactions t ON t.id = s.id"
