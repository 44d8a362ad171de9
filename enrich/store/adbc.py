"""The Arrow Database Connectivity (ADBC) connection both backends talk through.

Each backend uses exactly one driver, ADBC's (``adbc_driver_sqlite``,
``adbc_driver_postgresql``): whole Arrow batches cross into the database in C (no Python
tuple per row) and come back as Arrow. This module holds only what is identical on both:
a connection and a cursor with the few conveniences the backends need. SQL, placeholders
(``?`` for SQLite, ``$1`` for PostgreSQL), transactions and error mapping belong to each
backend.

It is written on the driver manager's own API rather than its DB-API module, which imports
``pyarrow.dataset`` and with it pandas: about half a second in every process that opens a
database, for conveniences this module does not use.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import adbc_driver_manager
import pyarrow as pa

#: Every error an ADBC driver raises.
DriverError = adbc_driver_manager.Error

_INGEST_OPTIONS = {"adbc.ingest.mode": "adbc.ingest.mode.append"}


class Connection:
    """One ADBC database handle and connection (autocommit: each backend issues BEGIN/COMMIT)."""

    def __init__(self, database: Any) -> None:
        self.database = database
        try:
            self.handle = adbc_driver_manager.AdbcConnection(database)
        except BaseException:
            database.close()
            raise

    def close(self) -> None:
        try:
            self.handle.close()
        finally:
            self.database.close()


class Cursor:
    """Statements on one connection, with scalar/row/dict reads, Arrow batches and bulk ingest.

    Each call prepares a fresh statement, closed once its result is read, so a failed
    statement leaves nothing behind and the caller can still roll back.
    """

    def __init__(self, connection: Connection, options: dict[str, str] | None = None) -> None:
        self.connection, self.options = connection, dict(options or {})
        self._open: list[Any] = []  # statements whose result stream is still being read

    def _statement(self, sql: str, options: dict[str, str] | None = None) -> Any:
        statement = adbc_driver_manager.AdbcStatement(self.connection.handle)
        try:
            if self.options or options:
                statement.set_options(**{**self.options, **(options or {})})
            statement.set_sql_query(sql)
        except BaseException:
            statement.close()
            raise
        return statement

    def _query(self, sql: str, params: Sequence[object]) -> tuple[Any, pa.RecordBatchReader]:
        statement = self._statement(sql)
        try:
            if params:
                statement.bind(_parameters(params))
            handle, _ = statement.execute_query()
            return statement, pa.RecordBatchReader._import_from_c(handle.address)
        except BaseException:
            statement.close()
            raise

    def close(self) -> None:
        for statement in self._open:
            statement.close()
        self._open.clear()

    def execute(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run one statement whose result is not needed; the rows it changed (-1 when unknown)."""
        statement = self._statement(sql)
        try:
            if params:
                statement.bind(_parameters(params))
            return int(statement.execute_update())
        finally:
            statement.close()

    def executemany(self, sql: str, rows: Sequence[Sequence[object]]) -> None:
        """Run one statement once per row of parameters (bound as one Arrow batch)."""
        if not rows:
            return
        statement = self._statement(sql)
        try:
            columns = list(zip(*rows))
            statement.bind(pa.record_batch([pa.array(list(column)) for column in columns],
                                           names=[str(i) for i in range(len(columns))]))
            statement.execute_update()
        finally:
            statement.close()

    def table(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        statement, reader = self._query(sql, params)
        try:
            return reader.read_all()
        finally:
            statement.close()

    def batches(self, sql: str, params: Sequence[object] = ()) -> pa.RecordBatchReader:
        """The result as a stream of batches (read it before the next statement on this cursor)."""
        statement, reader = self._query(sql, params)
        self._open.append(statement)
        return reader

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return _rows(self.table(sql, params))

    def dicts(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        """The rows as dicts (column name to value)."""
        return self.table(sql, params).to_pylist()

    def row(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        found = self.row(sql, params)
        return found[0] if found else None

    def ingest(self, table: str, data: pa.Table | pa.RecordBatchReader, temporary: bool = False) -> int:
        """Append ``data`` to the existing ``table``; returns the rows written (-1 when unknown)."""
        statement = adbc_driver_manager.AdbcStatement(self.connection.handle)
        try:
            statement.set_options(**{**_INGEST_OPTIONS, "adbc.ingest.target_table": table,
                                     "adbc.ingest.temporary": "true" if temporary else "false"})
            reader = data if isinstance(data, pa.RecordBatchReader) else pa.RecordBatchReader.from_batches(
                data.schema, data.to_batches())
            statement.bind_stream(reader)
            return int(statement.execute_update())
        finally:
            statement.close()


def _parameters(params: Sequence[object]) -> pa.RecordBatch:
    """One row of positional parameters as an Arrow batch (column i is parameter i + 1)."""
    return pa.record_batch([pa.array([value]) for value in params], names=[str(i) for i in range(len(params))])


def _rows(table: pa.Table) -> list[tuple[Any, ...]]:
    columns = [column.to_pylist() for column in table.columns]
    return list(zip(*columns)) if columns else []


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
