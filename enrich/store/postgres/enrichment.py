"""Enrichment in PostgreSQL: what is pending, reading rows to derive, publishing tags, annotating and
indexing in place (the same semantics as :mod:`enrich.store.sqlite.enrichment`).

Loading a batch records, in the same transaction, that its new and changed rows still need
tags, annotations and search indexing (``pending_enrichment``). Each publish re-derives the
rows of every pending run and clears those runs in the same transaction, so a run whose
tagging failed is caught up by the next one. A publish locks its table against other
writers (``SHARE ROW EXCLUSIVE``: readers go on) before it compares the table's fingerprint,
as SQLite's ``BEGIN IMMEDIATE`` does.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from enrich.store.adbc import Cursor, rechunk
from enrich.store.errors import ConcurrentModification, ConstraintViolation
from enrich.store.location import DatabaseLocation
from enrich.store.postgres.connection import connect, transaction
from enrich.store.postgres.lineage import keys_in_sql, keys_of_runs_sql, run_key, run_keys_of
from enrich.store.postgres.schema import SEARCH_INDEX, SEARCH_INDEX_SQL, SEARCH_TABLE
from enrich.store.records import ANNOTATIONS, SEARCH, TAGS, PublishStats
from enrich.store.records import TableFingerprint
from enrich.store.shared_sql import (annotation_case_sql, fingerprint, fingerprint_key, fingerprint_sql,
                                     value_counts_of)

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)

#: Rows indexed at once from which the search index is built anew rather than added to.
REBUILD_ROWS = 100_000


# ..................................................................... state
def pending_runs(cur: Cursor, kind: str) -> tuple[str, ...]:
    """Runs whose new or changed rows still need ``kind`` derived."""
    return tuple(str(run) for (run,) in cur.rows("SELECT run_id FROM pending_enrichment WHERE kind = $1 "
                                                 "ORDER BY run_id COLLATE \"C\"", (kind,)))


def get_state(cur: Cursor, key: str) -> str | None:
    """A value of the enrichment state."""
    value = cur.scalar("SELECT value FROM enrichment_state WHERE key = $1", (key,))
    return None if value is None else str(value)


def table_fingerprint(cur: Cursor, kind: str) -> TableFingerprint:
    """The current fingerprint of a table, the one its last publish left, and its rows per value."""
    rows = cur.rows(fingerprint_sql(kind))
    return TableFingerprint(fingerprint(rows), get_state(cur, fingerprint_key(kind)), value_counts_of(rows))


def scope_sql(runs: Sequence[str] | None, first: int = 1,
              column: str = "last_changed_run") -> tuple[str, list[object]]:
    """A WHERE condition on transactions selecting the rows last changed by ``runs`` (None: all), its
    parameters numbered from ``$first``."""
    if runs is None:
        return "true", []
    return f"{column} IN ({keys_of_runs_sql(len(runs), first)})", list(runs)


def scope_id_range(cur: Cursor, runs: Sequence[str] | None) -> tuple[int, int] | None:
    """Smallest and largest id of the transactions in scope."""
    if runs is not None and not runs:
        return None
    scope, params = scope_sql(runs)
    low, high = cur.row(f"SELECT MIN(id), MAX(id) FROM transactions WHERE {scope}", params) or (None, None)
    return None if low is None else (int(low), int(high))


# ..................................................................... reading rows to derive
def iter_transactions(location: DatabaseLocation, columns: Sequence[str], runs: Sequence[str] | None,
                      ids: tuple[int, int] | None, chunk_rows: int) -> Iterator[pa.Table]:
    """Stored transactions in id order, ``chunk_rows`` at a time (streamed: see the interface)."""
    from enrich.store.batches import transaction_schema

    schema = transaction_schema(columns)
    if runs is not None and not runs:
        return
    scope, params = scope_sql(runs)
    if ids is not None:
        scope = f"{scope} AND id BETWEEN ${len(params) + 1} AND ${len(params) + 2}"
        params = [*params, *ids]
    with connect(location, bulk=True) as cur:
        reader = cur.batches(f"SELECT {', '.join(columns)} FROM transactions WHERE {scope} ORDER BY id", params)
        yield from rechunk(iter(reader), schema, chunk_rows)


def transaction_amounts(location: DatabaseLocation, runs: Sequence[str]) -> pa.Table:
    """``id`` and ``amount_cents`` of the transactions last changed by ``runs``, in one read."""
    from enrich.store.batches import AMOUNTS_SCHEMA, plain

    if not runs:
        return AMOUNTS_SCHEMA.empty_table()
    scope, params = scope_sql(runs)
    with connect(location, bulk=True) as cur:
        return plain(cur.table(f"SELECT id, amount_cents FROM transactions WHERE {scope}", params), AMOUNTS_SCHEMA)


# ..................................................................... tags: staged, then published
def stage_tags(location: DatabaseLocation, run_id: str, shard: int, tags: Iterable[pa.RecordBatch],
               ambiguous: pa.Table | Callable[[], pa.Table]) -> int:
    """Stage one shard's tags and ambiguous wordings, replacing what it staged before (one transaction)."""
    from enrich.store.batches import StagedTags, staged_ambiguous

    staged = StagedTags(shard, tags)
    with connect(location, bulk=True) as cur, transaction(cur):
        key = run_key(cur, run_id)
        cur.execute("DELETE FROM staged_tags WHERE run = $1 AND shard = $2", (key, shard))
        cur.execute("DELETE FROM staged_ambiguous WHERE run_id = $1 AND shard = $2", (run_id, shard))
        cur.ingest("staged_tags", staged.reader(key))
        wordings = staged_ambiguous(run_id, shard, ambiguous() if callable(ambiguous) else ambiguous)
        if wordings.num_rows:
            cur.ingest("staged_ambiguous", wordings)
    return staged.rows


def publish_tags(location: DatabaseLocation, run_id: str, covered_runs: Sequence[str] | None,
                 state: Mapping[str, str], expected_fingerprint: str | None) -> PublishStats:
    """Replace the covered transactions' tags by the staged ones, in one transaction (see the interface)."""
    with connect(location, bulk=True) as cur, transaction(cur):
        cur.execute("LOCK TABLE tags IN SHARE ROW EXCLUSIVE MODE")
        _refuse_if_changed(cur, location, TAGS, expected_fingerprint)
        key = run_key(cur, run_id)
        removed = _delete_covered(cur, "tags", _covered_keys(cur, covered_runs))
        # in id order (shards are ascending id ranges): the primary key is appended to; a staged tag
        # whose transaction does not exist is not written, and then refused (see the schema's note on
        # foreign keys: one set-based pass instead of a look-up per row)
        staged = int(cur.scalar(f"SELECT COUNT(*) FROM staged_tags WHERE run = {key}"))
        written = execute_count(cur, f"INSERT INTO tags (transaction_id, tag, run) SELECT s.transaction_id, s.tag, "
                                     f"s.run FROM staged_tags s WHERE s.run = {key} AND EXISTS (SELECT 1 FROM "
                                     f"transactions t WHERE t.id = s.transaction_id) ORDER BY s.transaction_id")
        if written != staged:
            raise ConstraintViolation(f"{location.display}: a write broke a database constraint ({staged - written} "
                                      "staged tags name a transaction that does not exist); nothing was written")
        cur.execute("DELETE FROM ambiguous_wordings WHERE run_id = $1", (run_id,))
        cur.execute("INSERT INTO ambiguous_wordings (run_id, wording, tags_found, transactions) "
                    "SELECT run_id, wording, MAX(tags_found), SUM(transactions) FROM staged_ambiguous "
                    "WHERE run_id = $1 GROUP BY run_id, wording", (run_id,))
        _discard(cur, run_id)
        _finish_publish(cur, TAGS, covered_runs, state)
    logger.debug("published tags: %d rows written, %d old rows replaced", written, removed)
    return PublishStats(written=written, removed=removed,
                        pending_runs=tuple(covered_runs) if covered_runs is not None else ())


def discard_staged(location: DatabaseLocation, run_id: str) -> None:
    """Drop what ``run_id`` staged."""
    with connect(location) as cur, transaction(cur):
        _discard(cur, run_id)


def _discard(cur: Cursor, run_id: str) -> None:
    cur.execute("DELETE FROM staged_tags WHERE run IN (SELECT run_key FROM run_keys WHERE run_id = $1)", (run_id,))
    cur.execute("DELETE FROM staged_ambiguous WHERE run_id = $1", (run_id,))


def execute_count(cur: Cursor, dml: str) -> int:
    """Run one INSERT, UPDATE or DELETE without parameters (the driver reports the row count only
    then); the rows it wrote."""
    count = cur.execute(dml)
    if count is None or count < 0:
        raise RuntimeError(f"the driver reported no row count for: {dml[:80]}")
    return int(count)


def _refuse_if_changed(cur: Cursor, location: DatabaseLocation, kind: str, expected: str | None) -> None:
    if expected is not None and fingerprint(cur.rows(fingerprint_sql(kind))) != expected:
        raise ConcurrentModification(f"{location.display}: the {kind} table changed since its rows were derived; "
                                     "the step's retry derives them again")


def _covered_keys(cur: Cursor, covered_runs: Sequence[str] | None) -> tuple[int, ...] | None:
    return None if covered_runs is None else run_keys_of(cur, covered_runs)


def _scope(keys: Sequence[int] | None) -> str:
    """A WHERE condition on transactions: last changed by a run of ``keys`` (None: every row)."""
    return "true" if keys is None else keys_in_sql("last_changed_run", keys)


def _delete_covered(cur: Cursor, table: str, keys: Sequence[int] | None) -> int:
    """Delete the rows of ``table`` whose transaction is in scope; returns how many."""
    if keys is None:
        return execute_count(cur, f"DELETE FROM {table}")
    if not keys:
        return 0
    return execute_count(cur, f"DELETE FROM {table} WHERE transaction_id IN "
                              f"(SELECT id FROM transactions WHERE {_scope(keys)})")


# ..................................................................... annotations, in place
def annotate_in_place(location: DatabaseLocation, run_id: str, covered_runs: Sequence[str] | None,
                      state: Mapping[str, str], expected_fingerprint: str | None
                      ) -> tuple[PublishStats, dict[str | None, int]]:
    """Derive and replace the covered transactions' annotations inside PostgreSQL, in one transaction.

    The annotation rules are a pure function of the stored amount, so they run as SQL
    (:func:`annotation_case_sql`, generated from :data:`enrich.annotation.RULES`, shared with
    SQLite) over the rows in place: nothing is read out or written back row by row.
    """
    with connect(location, bulk=True) as cur, transaction(cur):
        cur.execute("LOCK TABLE annotations IN SHARE ROW EXCLUSIVE MODE")
        _refuse_if_changed(cur, location, ANNOTATIONS, expected_fingerprint)
        key = run_key(cur, run_id)
        keys = _covered_keys(cur, covered_runs)
        removed = _delete_covered(cur, "annotations", keys)
        written = execute_count(cur, _annotate_sql(_scope(keys), key))
        table = _finish_publish(cur, ANNOTATIONS, covered_runs, state)
        # what was just written, per class: the annotations of the rows in scope are exactly those the
        # insert derived (the old ones were deleted first), so they are counted from the rows in scope
        # (one scan of them, no join with the annotations); the whole table's are in its fingerprint
        counts = {label: int(count) for label, count in cur.rows(_annotation_classes_sql(_scope(keys)))}
        in_scope = sum(counts.values())
        if covered_runs is None:
            classes: dict[str | None, int] = {str(label): int(count) for label, count, *_ in table}
        else:
            classes = {str(label): count for label, count in counts.items() if label is not None}
    classes[None] = in_scope - written  # zero amounts
    logger.debug("annotated in place: %d rows written, %d old rows replaced", written, removed)
    return PublishStats(written=written, removed=removed,
                        pending_runs=tuple(covered_runs) if covered_runs is not None else ()), classes


def _annotation_classes_sql(scope: str) -> str:
    """The rows in ``scope`` per annotation they get (NULL: a zero amount, none)."""
    return (f"SELECT CASE WHEN amount_cents = 0 THEN NULL ELSE {annotation_case_sql()} END AS annotation, "
            f"COUNT(*) FROM transactions WHERE {scope} GROUP BY 1")


def _annotate_sql(scope: str, key: int) -> str:
    """Annotations of the transactions in ``scope`` (zero amounts get none), by the run of ``key``."""
    return (f"INSERT INTO annotations (transaction_id, annotation, run) "
            f"SELECT id, {annotation_case_sql()}, {int(key)} FROM transactions "
            f"WHERE amount_cents != 0 AND {scope} ORDER BY id")


def _finish_publish(cur: Cursor, kind: str, covered_runs: Sequence[str] | None,
                    state: Mapping[str, str]) -> list[tuple[Any, ...]]:
    """Clear the covered runs from pending_enrichment, save ``state`` and the table's new fingerprint
    (returns the rows it was computed from: value, count, id sums)."""
    if covered_runs is None:
        cur.execute("DELETE FROM pending_enrichment WHERE kind = $1", (kind,))
    for run in covered_runs or ():
        cur.execute("DELETE FROM pending_enrichment WHERE kind = $1 AND run_id = $2", (kind, run))
    table = cur.rows(fingerprint_sql(kind))
    for key, value in {**state, fingerprint_key(kind): fingerprint(table)}.items():
        cur.execute("INSERT INTO enrichment_state (key, value) VALUES ($1, $2) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))
    return table


# ..................................................................... full-text index
def index_wordings(location: DatabaseLocation) -> tuple[tuple[str, ...], int]:
    """Add the wordings of the rows loaded by the runs pending search to the full-text index.

    One transaction: the rows, then the runs cleared from ``pending_enrichment``. A row is
    "not indexed" exactly while the run that first loaded it is pending search (as on
    SQLite): a run that changes rows is pending too, so those rows are found through the
    index on ``last_changed_run``. Returns the runs covered and the rows indexed.

    Many rows at once (at least :data:`REBUILD_ROWS` and half the index): the table's GIN
    index and primary key are dropped and built again inside the transaction (one sorted
    build each instead of a million insertions); meanwhile searches wait, and so would an
    update of indexed rows (the flow runs none then: loads hold the run lock).
    """
    with connect(location, bulk=True) as cur, transaction(cur):
        runs = pending_runs(cur, SEARCH)
        if not runs:
            return (), 0
        keys = run_keys_of(cur, runs)
        rows_sql = (f"FROM transactions WHERE {keys_in_sql('last_changed_run', keys)} "
                    f"AND {keys_in_sql('first_run', keys)}")
        rows = int(cur.scalar(f"SELECT COUNT(*) {rows_sql}"))
        indexed = float(cur.scalar(f"SELECT reltuples FROM pg_class WHERE oid = '{SEARCH_TABLE}'::regclass") or 0)
        rebuild = rows >= REBUILD_ROWS and rows >= indexed / 2
        if rebuild:  # rows already indexed (an operator's insert) go first: then a plain insert
            cur.execute(f"DELETE FROM {SEARCH_TABLE} WHERE id IN (SELECT id {rows_sql})")
            cur.execute(f"DROP INDEX {SEARCH_INDEX}")
            cur.execute(f"ALTER TABLE {SEARCH_TABLE} DROP CONSTRAINT {SEARCH_TABLE}_pkey")
            written = execute_count(cur, f"INSERT INTO {SEARCH_TABLE} (id, document) "
                                         f"SELECT id, enrich_search_document(wording) {rows_sql}")
            cur.execute(f"ALTER TABLE {SEARCH_TABLE} ADD PRIMARY KEY (id)")
            cur.execute(SEARCH_INDEX_SQL)
        else:
            written = execute_count(cur, f"INSERT INTO {SEARCH_TABLE} (id, document) "
                                         f"SELECT id, enrich_search_document(wording) {rows_sql} ORDER BY id "
                                         f"ON CONFLICT (id) DO UPDATE SET document = excluded.document")
        cur.execute("DELETE FROM pending_enrichment WHERE kind = $1", (SEARCH,))
    logger.info("indexed %s wordings for search (%d run(s))", f"{written:,}", len(runs))
    return runs, written
