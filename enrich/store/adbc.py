"""The Arrow Database Connectivity (ADBC) cursor both backends talk through.

Each backend uses exactly one driver, ADBC's (``adbc_driver_sqlite``,
``adbc_driver_postgresql``): whole Arrow batches cross into the database in C (no Python
tuple per row) and come back as Arrow. This module holds only what is identical on both:
a thin cursor with the few conveniences the backends need. SQL, placeholders (``?`` for
SQLite, ``$1`` for PostgreSQL), transactions and error mapping belong to each backend.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import adbc_driver_manager
import pyarrow as pa

#: Every error an ADBC driver raises.
DriverError = adbc_driver_manager.Error


class Cursor:
    """An ADBC DB-API cursor with scalar/row/dict reads, Arrow batches and bulk ingest.

    A statement that fails leaves the driver's cursor unusable (its parameters stay bound): the
    cursor is then replaced by a fresh one on the same connection, so that the caller can still
    roll back.
    """

    def __init__(self, connection: Any, options: dict[str, str] | None = None) -> None:
        self.connection, self.options = connection, dict(options or {})
        self.cursor = self._new_cursor()

    def _new_cursor(self) -> Any:
        cursor = self.connection.cursor()
        if self.options:
            cursor.adbc_statement.set_options(**self.options)
        return cursor

    def close(self) -> None:
        self.cursor.close()

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        try:
            self.cursor.execute(sql, tuple(params) if params else None)
        except DriverError:  # the driver's cursor is unusable now: renew it, then re-raise as it is
            self.cursor.close()
            self.cursor = self._new_cursor()
            raise

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        if not rows:
            return
        try:
            self.cursor.executemany(sql, [tuple(row) for row in rows])
        except DriverError:  # as in execute
            self.cursor.close()
            self.cursor = self._new_cursor()
            raise

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        self.execute(sql, params)
        row = self.cursor.fetchone()
        return row[0] if row else None

    def row(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        self.execute(sql, params)
        row = self.cursor.fetchone()
        return tuple(row) if row is not None else None

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self.execute(sql, params)
        return [tuple(row) for row in self.cursor.fetchall()]

    def dicts(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        """The rows as dicts (column name to value)."""
        self.execute(sql, params)
        names = [column[0] for column in self.cursor.description or ()]
        return [dict(zip(names, row)) for row in self.cursor.fetchall()]

    def batches(self, sql: str, params: Sequence[object] = ()) -> pa.RecordBatchReader:
        self.execute(sql, params)
        return self.cursor.fetch_record_batch()

    def table(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        self.execute(sql, params)
        return self.cursor.fetch_arrow_table()

    def ingest(self, table: str, data: pa.Table | pa.RecordBatchReader, temporary: bool = False) -> int:
        """Append ``data`` to ``table`` (created when ``temporary``); returns the rows written."""
        written = self.cursor.adbc_ingest(table, data, mode="append", temporary=temporary)
        return int(written) if written is not None and written >= 0 else -1


def rechunk(batches: Iterator[pa.RecordBatch], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
    """Arrow batches regrouped into tables of ``rows`` rows (the last one shorter), cast to ``schema``."""
    pending: list[pa.RecordBatch] = []
    held = 0
    for batch in batches:
        if batch.num_rows == 0:
            continue
        pending.extend(pa.Table.from_batches([batch]).cast(schema).to_batches())
        held += batch.num_rows
        while held >= rows:
            table = pa.Table.from_batches(pending, schema)
            yield table.slice(0, rows)
            rest = table.slice(rows)
            pending, held = rest.to_batches(), rest.num_rows
    if held:
        yield pa.Table.from_batches(pending, schema)
