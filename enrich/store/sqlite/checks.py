"""The checks' queries in SQLite: whole-database scans of annotations, tags and foreign keys."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from enrich.store.adbc import Cursor, rechunk
from enrich.store.shared_sql import annotation_case_sql, annotation_census_of, annotation_label_counts_sql
from enrich.store.sqlite.connection import connect

_ALL_IDS = (-(2**63), 2**63 - 1)
if TYPE_CHECKING:
    import pyarrow as pa


def annotation_census(cur: Cursor, ids: tuple[int, int] | None) -> dict[str, int]:
    """Annotations missing, wrong, or present on a zero amount, over the ids ``ids`` (inclusive); with
    the annotations per label on the way (:func:`~enrich.store.split_annotation_counts`)."""
    expected = annotation_case_sql("t.amount_cents")
    return annotation_census_of(cur.row(f"""SELECT
            SUM(a.transaction_id IS NULL AND t.amount_cents != 0),
            SUM(a.transaction_id IS NOT NULL AND t.amount_cents != 0 AND a.annotation IS NOT ({expected})),
            SUM(a.transaction_id IS NOT NULL AND t.amount_cents = 0),
            COUNT(*), {annotation_label_counts_sql("a.annotation")}
        FROM transactions t LEFT JOIN annotations a ON a.transaction_id = t.id
        WHERE t.id BETWEEN ? AND ?""", ids or _ALL_IDS))


def id_range(cur: Cursor) -> tuple[int, int] | None:
    """The smallest and largest transaction id."""
    low, high = cur.row("SELECT MIN(id), MAX(id) FROM transactions") or (None, None)
    return None if low is None else (int(low), int(high))


def iter_stored_tags(path: Path, ids: tuple[int, int] | None, chunk_rows: int) -> Iterator[pa.Table]:
    """Every transaction's id and wording with its stored tag (null if untagged), by id."""
    from enrich.store.batches import STORED_TAGS_SCHEMA

    with connect(path, bulk=True) as cur:
        reader = cur.batches("SELECT t.id, t.wording, g.tag FROM transactions t "
                             "LEFT JOIN tags g ON g.transaction_id = t.id WHERE t.id BETWEEN ? AND ? ORDER BY t.id",
                             ids or _ALL_IDS)
        yield from rechunk(iter(reader), STORED_TAGS_SCHEMA, chunk_rows)


def orphan_counts(cur: Cursor) -> dict[str, int]:
    """Tags and annotations whose transaction does not exist: SQLite's own foreign-key check (one
    primary-key look-up per row; it works even on a connection with enforcement off)."""
    return {table: int(cur.scalar("SELECT COUNT(*) FROM pragma_foreign_key_check(?)", (table,)))
            for table in ("tags", "annotations")}
