"""Enrichment in SQLite: what is pending, reading rows to derive, publishing tags, annotating and
indexing in place.

Loading a batch records, in the same transaction, that its new and changed rows still need
tags, annotations and search indexing (``pending_enrichment``). Each publish re-derives the
rows of every pending run and clears those runs in the same transaction, so a run whose
tagging failed is caught up by the next one.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enrich.store.adbc import Cursor, rechunk
from enrich.store.errors import ConcurrentModification
from enrich.store.records import ANNOTATIONS, SEARCH, TAGS, PublishStats
from enrich.store.records import TableFingerprint
from enrich.store.shared_sql import (annotation_case_sql, fingerprint, fingerprint_key, fingerprint_sql,
                                     value_counts_of)
from enrich.store.sqlite.connection import connect, transaction
from enrich.store.sqlite.lineage import keys_of_runs_sql, run_key
from enrich.store.sqlite.schema import FTS_AUTOMERGE, FTS_TABLE

if TYPE_CHECKING:
    import pyarrow as pa

logger = logging.getLogger(__name__)


# ..................................................................... state
def pending_runs(cur: Cursor, kind: str) -> tuple[str, ...]:
    """Runs whose new or changed rows still need ``kind`` derived."""
    return tuple(run for (run,) in cur.rows("SELECT run_id FROM pending_enrichment WHERE kind = ? "
                                            "ORDER BY run_id", (kind,)))


def get_state(cur: Cursor, key: str) -> str | None:
    """A value of the enrichment state."""
    value = cur.scalar("SELECT value FROM enrichment_state WHERE key = ?", (key,))
    return None if value is None else str(value)


def table_fingerprint(cur: Cursor, kind: str) -> TableFingerprint:
    """The current fingerprint of a table, the one its last publish left, and its rows per value."""
    rows = cur.rows(fingerprint_sql(kind))
    return TableFingerprint(fingerprint(rows), get_state(cur, fingerprint_key(kind)), value_counts_of(rows))


def _scope_sql(runs: Sequence[str] | None, column: str = "last_changed_run") -> tuple[str, list[object]]:
    """A WHERE condition on transactions selecting the rows last changed by ``runs`` (None: all)."""
    if runs is None:
        return "true", []
    return f"{column} IN ({keys_of_runs_sql(len(runs))})", list(runs)


def scope_id_range(cur: Cursor, runs: Sequence[str] | None) -> tuple[int, int] | None:
    """Smallest and largest id of the transactions in scope."""
    if runs is not None and not runs:
        return None
    scope, params = _scope_sql(runs)
    low, high = cur.row(f"SELECT MIN(id), MAX(id) FROM transactions WHERE {scope}", params) or (None, None)
    return None if low is None else (int(low), int(high))


# ..................................................................... reading rows to derive
def iter_transactions(path: Path, columns: Sequence[str], runs: Sequence[str] | None,
                      ids: tuple[int, int] | None, chunk_rows: int) -> Iterator[pa.Table]:
    """Stored transactions in id order, ``chunk_rows`` at a time (see the interface)."""
    from enrich.store.batches import transaction_schema

    schema = transaction_schema(columns)
    if runs is not None and not runs:
        return
    scope, params = _scope_sql(runs)
    if ids is not None:
        scope, params = f"{scope} AND id BETWEEN ? AND ?", [*params, *ids]
    with connect(path, bulk=True) as cur:
        reader = cur.batches(f"SELECT {', '.join(columns)} FROM transactions WHERE {scope} ORDER BY id", params)
        yield from rechunk(iter(reader), schema, chunk_rows)


def transaction_amounts(path: Path, runs: Sequence[str]) -> pa.Table:
    """``id`` and ``amount_cents`` of the transactions last changed by ``runs``, in one read."""
    from enrich.store.batches import AMOUNTS_SCHEMA, plain

    if not runs:
        return AMOUNTS_SCHEMA.empty_table()
    scope, params = _scope_sql(runs)
    with connect(path, bulk=True) as cur:
        return plain(cur.table(f"SELECT id, amount_cents FROM transactions WHERE {scope}", params), AMOUNTS_SCHEMA)


# ..................................................................... tags: staged, then published
def stage_tags(path: Path, run_id: str, shard: int, tags: Iterable[pa.RecordBatch],
               ambiguous: pa.Table | Callable[[], pa.Table]) -> int:
    """Stage one shard's tags and ambiguous wordings, replacing what it staged before (one transaction)."""
    from enrich.store.batches import StagedTags, staged_ambiguous

    staged = StagedTags(shard, tags)
    with connect(path, foreign_keys=False, bulk=True) as cur, transaction(cur):
        key = run_key(cur, run_id)
        cur.execute("DELETE FROM staged_tags WHERE run = ? AND shard = ?", (key, shard))
        cur.execute("DELETE FROM staged_ambiguous WHERE run_id = ? AND shard = ?", (run_id, shard))
        cur.ingest("staged_tags", staged.reader(key))
        wordings = staged_ambiguous(run_id, shard, ambiguous() if callable(ambiguous) else ambiguous)
        if wordings.num_rows:
            cur.ingest("staged_ambiguous", wordings)
    return staged.rows


def publish_tags(path: Path, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                 expected_fingerprint: str | None) -> PublishStats:
    """Replace the covered transactions' tags by the staged ones, in one transaction (see the interface)."""
    with connect(path, bulk=True) as cur, transaction(cur):
        _refuse_if_changed(cur, path, TAGS, expected_fingerprint)
        key = run_key(cur, run_id)
        before = int(cur.scalar("SELECT COUNT(*) FROM tags"))
        _delete_covered(cur, "tags", covered_runs)
        removed = before - int(cur.scalar("SELECT COUNT(*) FROM tags"))
        # staged in (shard, id) order, and shards are ascending id ranges: appended in id order
        cur.execute("INSERT INTO tags (transaction_id, tag, run) SELECT transaction_id, tag, run FROM staged_tags "
                    "WHERE run = ? ORDER BY shard, transaction_id", (key,))
        written = int(cur.scalar("SELECT changes()"))
        cur.execute("DELETE FROM ambiguous_wordings WHERE run_id = ?", (run_id,))
        cur.execute("INSERT INTO ambiguous_wordings (run_id, wording, tags_found, transactions) "
                    "SELECT run_id, wording, MAX(tags_found), SUM(transactions) FROM staged_ambiguous "
                    "WHERE run_id = ? GROUP BY run_id, wording", (run_id,))
        _discard(cur, run_id)
        _finish_publish(cur, TAGS, covered_runs, state)
    logger.debug("published tags: %d rows written, %d old rows replaced", written, removed)
    return PublishStats(written=written, removed=removed,
                        pending_runs=tuple(covered_runs) if covered_runs is not None else ())


def discard_staged(path: Path, run_id: str) -> None:
    """Drop what ``run_id`` staged."""
    with connect(path, bulk=True) as cur, transaction(cur):
        _discard(cur, run_id)


def _discard(cur: Cursor, run_id: str) -> None:
    key = cur.scalar("SELECT run_key FROM run_keys WHERE run_id = ?", (run_id,))
    if key is not None and not cur.scalar(_other_runs_staged_sql(), (key, run_id)):
        # only this run's rows (the usual case): emptied whole, which SQLite does without visiting
        # each row (millions after a full re-tag)
        cur.execute("DELETE FROM staged_tags")
        cur.execute("DELETE FROM staged_ambiguous")
        return
    cur.execute("DELETE FROM staged_tags WHERE run = ?", (key,))  # (none when the run has no key)
    cur.execute("DELETE FROM staged_ambiguous WHERE run_id = ?", (run_id,))


def _other_runs_staged_sql() -> str:
    # two range seeks on each primary key (``!=`` would scan the whole staging table)
    return ("SELECT EXISTS (SELECT 1 FROM staged_tags WHERE run < ?1) "
            "OR EXISTS (SELECT 1 FROM staged_tags WHERE run > ?1) "
            "OR EXISTS (SELECT 1 FROM staged_ambiguous WHERE run_id < ?2) "
            "OR EXISTS (SELECT 1 FROM staged_ambiguous WHERE run_id > ?2)")


def _refuse_if_changed(cur: Cursor, path: Path, kind: str, expected: str | None) -> None:
    if expected is not None and fingerprint(cur.rows(fingerprint_sql(kind))) != expected:
        raise ConcurrentModification(f"{path}: the {kind} table changed since its rows were derived; "
                                     "the step's retry derives them again")


def _delete_covered(cur: Cursor, table: str, covered_runs: Sequence[str] | None) -> None:
    if covered_runs is None:
        cur.execute(f"DELETE FROM {table}")
    elif covered_runs:
        cur.execute(f"DELETE FROM {table} WHERE transaction_id IN (SELECT id FROM transactions "
                    f"WHERE last_changed_run IN ({keys_of_runs_sql(len(covered_runs))}))", list(covered_runs))


# ..................................................................... annotations, in place
def annotate_in_place(path: Path, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                      expected_fingerprint: str | None) -> tuple[PublishStats, dict[str | None, int]]:
    """Derive and replace the covered transactions' annotations inside SQLite, in one transaction.

    The annotation rules are a pure function of the stored amount, so they run as SQL
    (:func:`annotation_case_sql`, generated from :data:`enrich.annotation.RULES`) over the
    rows in place: nothing is read out or written back row by row.
    """
    scope, params = _scope_sql(covered_runs)
    # the rows come from transactions in the same statement, with this run's key: they cannot
    # break the foreign keys, whose per-row look-ups (a quarter of the insert's cost) are skipped
    with connect(path, foreign_keys=False, bulk=True) as cur, transaction(cur):
        _refuse_if_changed(cur, path, ANNOTATIONS, expected_fingerprint)
        key = run_key(cur, run_id)
        before = int(cur.scalar("SELECT COUNT(*) FROM annotations"))
        _delete_covered(cur, "annotations", covered_runs)
        removed = before - int(cur.scalar("SELECT COUNT(*) FROM annotations"))
        cur.execute(_annotate_sql(scope), [key, *params])
        written = int(cur.scalar("SELECT changes()"))
        in_scope = int(cur.scalar(f"SELECT COUNT(*) FROM transactions WHERE {scope}", params))
        table = _finish_publish(cur, ANNOTATIONS, covered_runs, state)
        if covered_runs is None:  # the whole table was written: its fingerprint has the counts
            classes: dict[str | None, int] = {str(label): int(count) for label, count, *_ in table}
        else:
            classes = {str(label): int(count) for label, count in cur.rows(_annotation_classes_sql(scope), params)}
    classes[None] = in_scope - written  # zero amounts
    logger.debug("annotated in place: %d rows written, %d old rows replaced", written, removed)
    return PublishStats(written=written, removed=removed,
                        pending_runs=tuple(covered_runs) if covered_runs is not None else ()), classes


def _annotation_classes_sql(scope: str) -> str:
    # the annotations of the rows in scope, per class (sorted by the annotation index, no sort step)
    return (f"SELECT annotation, COUNT(*) FROM annotations INDEXED BY annotations_annotation "
            f"WHERE transaction_id IN (SELECT id FROM transactions WHERE {scope}) GROUP BY annotation")


def _annotate_sql(scope: str) -> str:
    """Annotations of the transactions in ``scope`` (zero amounts get none); ?1 is the run key."""
    return (f"INSERT INTO annotations (transaction_id, annotation, run) "
            f"SELECT id, {annotation_case_sql()}, ?1 FROM transactions "
            f"WHERE amount_cents != 0 AND {scope} ORDER BY id")  # (a plain ? after ?1 is ?2, ?3...)


def _finish_publish(cur: Cursor, kind: str, covered_runs: Sequence[str] | None,
                    state: Mapping[str, str]) -> list[tuple[Any, ...]]:
    """Clear the covered runs from pending_enrichment, save ``state`` and the table's new fingerprint
    (returns the rows it was computed from: value, count, id sums)."""
    if covered_runs is None:
        cur.execute("DELETE FROM pending_enrichment WHERE kind = ?", (kind,))
    for run in covered_runs or ():
        cur.execute("DELETE FROM pending_enrichment WHERE kind = ? AND run_id = ?", (kind, run))
    table = cur.rows(fingerprint_sql(kind))
    for key, value in {**state, fingerprint_key(kind): fingerprint(table)}.items():
        cur.execute("INSERT INTO enrichment_state (key, value) VALUES (?, ?) "
                    "ON CONFLICT (key) DO UPDATE SET value = excluded.value", (key, value))
    return table


# ..................................................................... full-text index
def index_wordings(path: Path) -> tuple[tuple[str, ...], int]:
    """Add the wordings of the rows loaded by the runs pending search to the full-text index.

    One transaction: the rows, then the runs cleared from ``pending_enrichment``. A row is
    "not indexed" exactly while the run that first loaded it is pending search: a run that
    changes rows is pending too, so those rows are found through the index on
    ``last_changed_run``. Returns the runs covered and the rows indexed.
    """
    with connect(path, bulk=True) as cur, transaction(cur):
        runs = pending_runs(cur, SEARCH)
        if not runs:
            return (), 0
        keys = keys_of_runs_sql(len(runs))
        # no incremental merging of index segments during the bulk insert (30% of its time; searches
        # measured as fast without it); FTS5's own threshold still merges when a level fills up
        cur.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('automerge', 0)")
        cur.execute(f"INSERT INTO {FTS_TABLE} (rowid, wording) SELECT id, wording FROM transactions "
                    f"WHERE last_changed_run IN ({keys}) AND first_run IN ({keys})", [*runs, *runs])
        rows = int(cur.scalar("SELECT changes()"))
        cur.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('automerge', {FTS_AUTOMERGE})")
        cur.execute("DELETE FROM pending_enrichment WHERE kind = ?", (SEARCH,))
    logger.info("indexed %s wordings for search (%d run(s))", f"{rows:,}", len(runs))
    return runs, rows

