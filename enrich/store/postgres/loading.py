"""Loading a batch into PostgreSQL: COPY into temporary staging tables, duplicate pairing, one
set-based upsert (changed rows updated, new rows inserted), quarantine, all in one transaction.

The same steps and the same results as the SQLite loader (:mod:`enrich.store.sqlite.loading`):
each parsed chunk is compared with the stored rows of its id range (read back as Arrow in
this transaction) and only its new or different rows are staged (``adbc_ingest``: binary
COPY); identical duplicates are loaded once, every line of an id repeated with different
content is rejected with the same reason text; the upsert touches only new and changed rows
(an ``UPDATE ... FROM`` staging ``WHERE`` changed, then an ``INSERT ... WHERE NOT EXISTS``: half
the cost of ``INSERT ... ON CONFLICT`` for a million new rows, and the table is locked against
other writers meanwhile); the control total is read
back from the table. Memory stays bounded by the chunk size: nothing but the chunk at hand
and the late ids (:class:`IdOrder`) is held.
A NUL character, which PostgreSQL's text cannot hold, never reaches here: the input contract
rejects it on every backend alike (:data:`enrich.ingest.contract.NUL_IN_WORDING_REASON`).
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING

from enrich.store.adbc import Cursor
from enrich.store.batches import BatchStaging, late_ids_table, plain
from enrich.store.idorder import IdOrder
from enrich.store.interface import ParsedChunk
from enrich.store.location import DatabaseLocation
from enrich.store.postgres.connection import connect, transaction
from enrich.store.postgres.enrichment import execute_count
from enrich.store.postgres.lineage import run_key
from enrich.store.postgres.schema import BULK_LOAD_SETTING
from enrich.store.records import PENDING_KINDS, LoadStats

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

#: Staged rows beyond which the staging table's statistics are gathered before the set-based steps.
_ANALYZE_ROWS = 10_000
#: Rows written by a load beyond which the table's statistics are gathered again before it commits.
_ANALYZE_TABLE_ROWS = 100_000


def load_batch(location: DatabaseLocation, run_id: str, chunks: Iterable[ParsedChunk]) -> LoadStats:
    """Load parsed CSV chunks as one batch, in one transaction (see :func:`enrich.store.sqlite.loading.load_batch`
    for the contract: the results are the same). If reading fails midway, nothing is written."""
    with connect(location, bulk=True) as bulk, transaction(bulk):
        # one load at a time (readers go on); the new rows skip the per-statement search trigger:
        # the index_wordings step indexes them in bulk (updates of indexed rows still go through it)
        bulk.execute("LOCK TABLE transactions IN SHARE ROW EXCLUSIVE MODE")
        bulk.execute(f"SET LOCAL {BULK_LOAD_SETTING} = 'on'")
        _create_staging(bulk)
        any_stored = bool(bulk.scalar("SELECT EXISTS (SELECT 1 FROM transactions)"))
        staging = BatchStaging(bulk, (lambda low, high: _stored_range(bulk, low, high)) if any_stored else None)
        for chunk in chunks:
            staging.add(chunk)
        order = staging.order
        if staging.staged >= _ANALYZE_ROWS:
            bulk.execute("ANALYZE pg_temp.staging")
        conflicts, dropped, dropped_cents, dropped_same_cents = _reject_conflicting_duplicates(bulk, order)
        rows_loaded, in_file = staging.valid - dropped, staging.cents_in_file - dropped_cents  # every id once now
        key = run_key(bulk, run_id)
        updated = execute_count(bulk, _update_changed_sql(key))  # first: the new rows are not there yet
        new = execute_count(bulk, _insert_new_sql(key, in_id_order=order.nearly_sorted))
        changed = updated + new
        if changed >= _ANALYZE_TABLE_ROWS:  # the next steps' plans need the new rows counted (autovacuum
            bulk.execute("ANALYZE transactions")  # would gather them later, after those steps began)
        # what the database now holds for the batch's ids: the staged rows read back, plus the rows
        # found identical to the stored ones (read in this transaction, which the upsert leaves alone)
        # (a table empty before the batch holds only the batch's rows now: then it is summed whole,
        # without the join)
        stored = (int(bulk.scalar(_stored_total_sql(whole_table=not any_stored)) or 0)
                  + staging.same_cents - dropped_same_cents)
        bulk.execute("DELETE FROM rejected_rows WHERE run_id = $1", (run_id,))
        bulk.execute("INSERT INTO rejected_rows (run_id, line, raw, reason) "
                     "SELECT $1, line, raw, reason FROM pg_temp.staging_rejected", (run_id,))
        rejected = int(bulk.scalar("SELECT COUNT(*) FROM pg_temp.staging_rejected"))
        for kind in PENDING_KINDS if changed else ():  # an unchanged batch leaves nothing to derive
            bulk.execute("INSERT INTO pending_enrichment (run_id, kind) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                         (run_id, kind))
    stats = LoadStats.of_load(rows_read=staging.rows_read, rows_loaded=rows_loaded, new=new, changed=changed,
                              rejected=rejected, cents_in_file=in_file or 0, cents_stored=stored or 0)
    logger.info("loaded batch: %s (%d conflicting ids among the rejected)", stats.describe(), conflicts)
    return stats


def _create_staging(bulk: Cursor) -> None:
    # temporary, dropped at commit or rollback; no index: every step below is one set-based pass
    for name, columns in (("staging", ("line BIGINT NOT NULL, id BIGINT NOT NULL, amount_cents BIGINT NOT NULL, "
                                       "wording TEXT NOT NULL")),
                          ("unchanged_runs", "first_id BIGINT PRIMARY KEY, first_line BIGINT NOT NULL, "
                                             "n BIGINT NOT NULL"),
                          ("staging_rejected", "line BIGINT NOT NULL, raw TEXT NOT NULL, reason TEXT NOT NULL")):
        bulk.execute(f"DROP TABLE IF EXISTS pg_temp.{name}")
        bulk.execute(f"CREATE TEMP TABLE {name} ({columns}) ON COMMIT DROP")


def _stored_range(bulk: Cursor, low: int, high: int) -> pa.Table:
    """The stored rows of ids ``low`` to ``high``, in id order (read in the load's transaction)."""
    from enrich.store.batches import STAGING_SCHEMA

    schema = STAGING_SCHEMA.remove(0)  # id, amount_cents, wording
    return plain(bulk.table("SELECT id, amount_cents, wording FROM transactions WHERE id BETWEEN $1 AND $2 "
                            "ORDER BY id", (low, high)), schema)


def _reject_conflicting_duplicates(bulk: Cursor, order: IdOrder) -> tuple[int, int, int, int]:
    """Drop the repeated lines of identical duplicates; reject every line of a conflicting id (see the
    SQLite loader: the same pairing, the same reason text). Returns the conflicting ids, the lines
    dropped and the sum of their amounts, and the part of that sum from ``unchanged``."""
    if not order.late_count:
        return 0, 0, 0, 0  # ids strictly ascending: every id once, nothing to pair
    if order.nearly_sorted:
        bulk.execute("CREATE TEMP TABLE late_ids (id BIGINT PRIMARY KEY) ON COMMIT DROP")
        bulk.ingest("late_ids", late_ids_table(order), temporary=True)
        repeated = "SELECT id FROM pg_temp.late_ids"
    else:
        found = _unchanged_lines_sql("SELECT DISTINCT id FROM pg_temp.staging")
        repeated = (f"SELECT id FROM (SELECT id FROM pg_temp.staging UNION ALL SELECT id FROM ({found}) f) ids "
                    "GROUP BY id HAVING COUNT(*) > 1")
    bulk.execute(f"""CREATE TEMP TABLE dup_rows ON COMMIT DROP AS
        SELECT line, id, amount_cents, wording, 0 AS unchanged FROM pg_temp.staging WHERE id IN ({repeated})
        UNION ALL
        SELECT u.line, u.id, t.amount_cents, t.wording, 1 FROM ({_unchanged_lines_sql(repeated)}) u
        JOIN transactions t ON t.id = u.id""")
    bulk.execute("DELETE FROM pg_temp.dup_rows WHERE id IN "
                 "(SELECT id FROM pg_temp.dup_rows GROUP BY id HAVING COUNT(*) = 1)")
    if not bulk.scalar("SELECT COUNT(*) FROM pg_temp.dup_rows"):
        return 0, 0, 0, 0
    bulk.execute("""CREATE TEMP TABLE conflicts ON COMMIT DROP AS
        SELECT id, string_agg(line::text, ', ' ORDER BY line) AS lines FROM pg_temp.dup_rows
        WHERE id IN (SELECT id FROM (SELECT DISTINCT id, amount_cents, wording FROM pg_temp.dup_rows) variants
                     GROUP BY id HAVING COUNT(*) > 1)
        GROUP BY id""")
    bulk.execute("""INSERT INTO pg_temp.staging_rejected (line, raw, reason)
        SELECT d.line,
               d.id || ',' || CASE WHEN d.amount_cents < 0 THEN '-' ELSE '' END
                    || (abs(d.amount_cents) / 100)::text || '.' || lpad((abs(d.amount_cents) % 100)::text, 2, '0')
                    || ',"' || replace(d.wording, '"', '""') || '"',
               'conflicting duplicate id: id ' || d.id || ' appears with different content on lines '
                    || c.lines || '; fix the file and load it again'
        FROM pg_temp.dup_rows d JOIN pg_temp.conflicts c ON c.id = d.id""")
    # every line of a conflicting id goes; of an identical duplicate, all but the first
    bulk.execute("""CREATE TEMP TABLE dropped ON COMMIT DROP AS
        SELECT line, amount_cents, unchanged FROM pg_temp.dup_rows
        WHERE id IN (SELECT id FROM pg_temp.conflicts)
           OR line NOT IN (SELECT MIN(line) FROM pg_temp.dup_rows GROUP BY id)""")
    bulk.execute("DELETE FROM pg_temp.staging WHERE line IN (SELECT line FROM pg_temp.dropped WHERE unchanged = 0)")
    dropped, cents, unchanged_cents = bulk.row(
        "SELECT COUNT(*), COALESCE(SUM(amount_cents), 0)::bigint, "
        "COALESCE(SUM(amount_cents * unchanged), 0)::bigint FROM pg_temp.dropped") or (0, 0, 0)
    return int(bulk.scalar("SELECT COUNT(*) FROM pg_temp.conflicts")), int(dropped), int(cents), int(unchanged_cents)


def _unchanged_lines_sql(ids: str) -> str:
    """The lines found unchanged (line, id) whose id is one of ``ids`` (a query of distinct ids): the
    run holding an id is the one starting at the largest first id not above it (a primary-key
    seek), if the id falls within its length."""
    return f"""SELECT r.first_line + (x.id - r.first_id) AS line, x.id AS id
        FROM ({ids}) x CROSS JOIN LATERAL (
            SELECT first_id, first_line, n FROM pg_temp.unchanged_runs
            WHERE first_id <= x.id ORDER BY first_id DESC LIMIT 1) r
        WHERE x.id < r.first_id + r.n"""


def _update_changed_sql(key: int) -> str:
    """The upsert's first half: the stored rows whose amount or wording the batch changes, and only
    those, get the staged content and this run's key (``key``, a literal: the row count is reported)."""
    return f"""UPDATE transactions t SET amount_cents = s.amount_cents, wording = s.wording,
            last_changed_run = {int(key)}
        FROM pg_temp.staging s
        WHERE t.id = s.id AND (t.amount_cents != s.amount_cents OR t.wording != s.wording)"""


def _insert_new_sql(key: int, in_id_order: bool = False) -> str:
    """The upsert's second half: the staged rows whose id is not stored, inserted (a plain insert: the
    table is locked against other writers, so the ids found absent stay absent)."""
    # in id order, so that the primary-key b-tree is appended to rather than split at random
    # (staging is in file order: already the id order, but for a few late ids, when nearly sorted)
    order = "" if in_id_order else " ORDER BY s.id"
    return f"""INSERT INTO transactions (id, amount_cents, wording, first_run, last_changed_run)
        SELECT s.id, s.amount_cents, s.wording, {int(key)}, {int(key)} FROM pg_temp.staging s
        WHERE NOT EXISTS (SELECT 1 FROM transactions t WHERE t.id = s.id){order}"""


def _stored_total_sql(whole_table: bool = False) -> str:
    # control total: what the database now holds for the batch's ids
    if whole_table:
        return "SELECT SUM(amount_cents)::bigint FROM transactions"
    return "SELECT SUM(t.amount_cents)::bigint FROM pg_temp.staging s JOIN transactions t ON t.id = s.id"
