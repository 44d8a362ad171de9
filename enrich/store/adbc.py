"""The Arrow Database Connectivity (ADBC) connection both backends talk through.

Each backend uses exactly one driver, ADBC's (``adbc_driver_sqlite``,
``adbc_driver_postgresql``): whole Arrow batches cross into the database in C (no Python
tuple per row) and come back as Arrow. This module holds only what is identical on both:
a connection and a cursor with the few conveniences the backends need. SQL, placeholders
(``?`` for SQLite, ``$1`` for PostgreSQL), transactions and error mapping belong to each
backend.

It is written on the driver manager's own API rather than its DB-API module, which imports
``pyarrow.dataset`` and with it pandas: about half a second in every process that opens a
database. Small statements (the ledger, the lock, the checks' counts) bind and read their
values through nanoarrow, which imports in milliseconds; only the bulk paths (Arrow tables
and batches in and out) import pyarrow. A step that writes nothing but ledger rows pays for
neither numpy nor pyarrow.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import adbc_driver_manager
import nanoarrow as na

if TYPE_CHECKING:
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

    def _query(self, sql: str, params: Sequence[object]) -> tuple[Any, Any]:
        """The statement and its result stream handle (the caller reads it, then closes the statement)."""
        statement = self._statement(sql)
        try:
            if params:
                statement.bind(_parameters(params))
            handle, _ = statement.execute_query()
            return statement, handle
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
            statement.bind(_struct([_column(list(column)) for column in zip(*rows)]))
            statement.execute_update()
        finally:
            statement.close()

    def table(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """The result as an Arrow table (bulk reads)."""
        import pyarrow as pa

        statement, handle = self._query(sql, params)
        try:
            return pa.RecordBatchReader._import_from_c(handle.address).read_all()
        finally:
            statement.close()

    def batches(self, sql: str, params: Sequence[object] = ()) -> pa.RecordBatchReader:
        """The result as a stream of Arrow batches (read it before the next statement on this cursor)."""
        import pyarrow as pa

        statement, handle = self._query(sql, params)
        self._open.append(statement)
        return pa.RecordBatchReader._import_from_c(handle.address)

    def dicts(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        """The rows as dicts (column name to value), read without pyarrow."""
        statement, handle = self._query(sql, params)
        try:
            with _opaque_as_text():
                return [row for batch in na.ArrayStream(handle) for row in batch.iter_py()]
        finally:
            statement.close()

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """The rows as tuples, by position (two columns may share a name), read without pyarrow."""
        statement, handle = self._query(sql, params)
        try:
            with _opaque_as_text():
                return [row for batch in na.ArrayStream(handle) for row in batch.iter_tuples()]
        finally:
            statement.close()

    def row(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        found = self.rows(sql, params)
        return found[0] if found else None

    def scalar(self, sql: str, params: Sequence[object] = ()) -> Any:
        found = self.row(sql, params)
        return found[0] if found else None

    def ingest(self, table: str, data: pa.Table | pa.RecordBatchReader, temporary: bool = False) -> int:
        """Append ``data`` to the existing ``table``; returns the rows written (-1 when unknown)."""
        import pyarrow as pa

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


@contextmanager
def transaction(cur: Cursor, begin: str, rollback: Callable[[Cursor], None]) -> Iterator[Cursor]:
    """``begin`` ... ``COMMIT``, undone whole by ``rollback`` (the backend's, which knows when the
    server has already rolled back) on any exception."""
    cur.execute(begin)
    try:
        yield cur
    except BaseException:
        rollback(cur)
        raise
    cur.execute("COMMIT")


@contextmanager
def _opaque_as_text() -> Iterator[None]:
    """Read a type the driver passes as text (PostgreSQL's numeric, a SUM of bigint) as that text,
    as pyarrow does, without a warning for every value."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*unregistered extension 'arrow\.opaque'")
        yield


def _parameters(params: Sequence[object]) -> Any:
    """One row of positional parameters as an Arrow struct array (field i is parameter i + 1)."""
    return _struct([_column([value]) for value in params])


def _struct(columns: list[Any]) -> Any:
    """Columns (nanoarrow arrays of one length) as one Arrow struct array, fields named 0, 1, ..."""
    schema = na.struct({str(i): column.schema for i, column in enumerate(columns)})
    return na.c_array_from_buffers(schema, len(columns[0]) if columns else 0, [None], children=columns)


def _column(values: list[object]) -> Any:
    """``values`` (None, bool, int, float, str or bytes, one kind besides None) as a nanoarrow array."""
    kind = next((type(value) for value in values if value is not None), None)
    if kind is None:
        return na.c_array_from_buffers(na.null(), len(values), [])
    if kind is bool:
        values = [None if value is None else int(value) for value in values]  # type: ignore[call-overload]
        kind = int
    if kind is int:
        return na.c_array(values, na.int64())
    if kind is float:
        return na.c_array(values, na.float64())
    if kind is bytes:
        return na.c_array(values, na.large_binary())
    return na.c_array([None if value is None else str(value) for value in values], na.large_string())


def rechunk(batches: Iterator[pa.RecordBatch], schema: pa.Schema, rows: int) -> Iterator[pa.Table]:
    """Arrow batches regrouped into tables of ``rows`` rows (the last one shorter), cast to ``schema``."""
    import pyarrow as pa

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
