"""Arrow batches crossing into and out of a database, identical on every backend.

Only the bulk paths import this module (and with it numpy and pyarrow): staging a loaded
batch chunk by chunk, staging a shard's tags, reading transactions back. The SQL around them
is each backend's.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from enrich.store.adbc import Cursor
from enrich.store.idorder import IdOrder

TRANSACTION_TYPES = {"id": pa.int64(), "amount_cents": pa.int64(), "wording": pa.large_string()}
AMOUNTS_SCHEMA = pa.schema([("id", pa.int64()), ("amount_cents", pa.int64())])
STORED_TAGS_SCHEMA = pa.schema([("id", pa.int64()), ("wording", pa.large_string()), ("tag", pa.large_string())])
ENRICHED_SCHEMA = pa.schema([("id", pa.int64()), ("amount_cents", pa.int64()), ("wording", pa.large_string()),
                             ("tag", pa.large_string()), ("annotation", pa.large_string())])
STAGING_SCHEMA = pa.schema([("line", pa.int64()), ("id", pa.int64()), ("amount_cents", pa.int64()),
                            ("wording", pa.large_string())])
REJECTED_SCHEMA = pa.schema([("line", pa.int64()), ("raw", pa.large_string()), ("reason", pa.large_string())])
UNCHANGED_RUNS_SCHEMA = pa.schema([("first_id", pa.int64()), ("first_line", pa.int64()), ("n", pa.int64())])
STAGED_TAGS_SCHEMA = pa.schema([("run", pa.int64()), ("shard", pa.int64()), ("transaction_id", pa.int64()),
                                ("tag", pa.large_string())])
STAGED_AMBIGUOUS_SCHEMA = pa.schema([("run_id", pa.large_string()), ("shard", pa.int64()),
                                     ("wording", pa.large_string()), ("tags_found", pa.int64()),
                                     ("transactions", pa.int64())])


def transaction_schema(columns: Sequence[str]) -> pa.Schema:
    """The Arrow schema of the given transaction columns (raises ValueError for an unknown one)."""
    unknown = set(columns) - set(TRANSACTION_TYPES)
    if unknown:
        raise ValueError(f"unknown columns {sorted(unknown)}")
    return pa.schema([(name, TRANSACTION_TYPES[name]) for name in columns])


def plain(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A table read back, without its driver's field metadata, cast to ``schema``."""
    return table.replace_schema_metadata(None).cast(schema)


# ..................................................................... loading a batch
#: Reads the stored (id, amount_cents, wording) rows of ids ``low`` to ``high``, in id order.
ReadRange = Callable[[int, int], pa.Table]


@dataclass
class BatchStaging:
    """The chunk loop of a batch load, the same on every backend.

    Each chunk's valid rows go to the temporary table ``staging`` (its rejected rows to
    ``staging_rejected``), except the rows found identical to the stored ones: of those only
    where they are is kept, to pair duplicates, as runs of consecutive lines holding
    consecutive ids (``unchanged_runs``, see :func:`unchanged_runs`). Counts and the control
    total are kept on the way; ``order`` follows the ids for the duplicate pairing.
    """

    cur: Cursor
    read_range: ReadRange | None  # None: the table was empty, nothing can be the same
    rows_read: int = 0
    valid: int = 0
    cents_in_file: int = 0
    same_cents: int = 0
    staged: int = 0
    order: IdOrder = field(default_factory=IdOrder)

    def add(self, chunk: Any) -> None:
        rows, rejected = chunk.valid, chunk.rejected
        self.rows_read += len(rows) + len(rejected)
        self.valid += len(rows)
        self.cents_in_file += int(rows["amount_cents"].sum())
        late = self.order.add(rows["id"].to_numpy())
        same = same_as_stored(self.read_range, rows, ~late) if self.read_range else np.zeros(len(late), bool)
        self._ingest("staging", rows[~same], STAGING_SCHEMA)
        self._ingest("staging_rejected", rejected, REJECTED_SCHEMA)
        self.staged += int((~same).sum())
        if same.any():
            runs = unchanged_runs(rows["line"].to_numpy()[same], rows["id"].to_numpy()[same])
            self.cur.ingest("unchanged_runs", runs, temporary=True)
            self.same_cents += int(rows["amount_cents"].to_numpy()[same].sum())

    def _ingest(self, table: str, frame: Any, schema: pa.Schema) -> None:
        if len(frame):
            self.cur.ingest(table, pa.Table.from_pandas(frame[list(schema.names)], schema=schema,
                                                        preserve_index=False), temporary=True)


def unchanged_runs(lines: np.ndarray, ids: np.ndarray) -> pa.Table:
    """The lines of a chunk found unchanged (``lines``, ascending, with their ``ids``, ascending: see
    :func:`same_as_stored`) as runs where each line holds the id after the previous line's:
    (first id, first line, length). A re-sent export is a few runs per chunk, not a row per line,
    so a re-run stages almost nothing; line ``first_line + k`` holds id ``first_id + k``."""
    breaks = np.flatnonzero((np.diff(lines) != 1) | (np.diff(ids) != 1)) + 1
    starts = np.concatenate(([0], breaks))
    lengths = np.diff(np.append(starts, len(ids)))
    return pa.table([pa.array(ids[starts], pa.int64()), pa.array(lines[starts], pa.int64()),
                     pa.array(lengths, pa.int64())], schema=UNCHANGED_RUNS_SCHEMA)


def same_as_stored(read_range: ReadRange, valid: Any, candidates: np.ndarray) -> np.ndarray:
    """Which rows of a chunk are already stored exactly so (same id, amount and wording).

    Only ``candidates`` are looked at: the rows whose id is larger than every id before it,
    so in ascending order and seen for the first time. Their stored rows are read by id range,
    in the load's (write) transaction, and compared with Arrow kernels. Sparse ids (a range
    much wider than the rows) are not worth the read: then nothing is found the same.
    """
    same = np.zeros(len(valid), dtype=bool)
    positions = np.flatnonzero(candidates)
    if len(positions) == 0:
        return same
    ids = valid["id"].to_numpy()[positions]
    low, high = int(ids[0]), int(ids[-1])  # ascending: candidates are
    if high - low + 1 > 4 * len(ids) + 1024:
        return same
    stored = read_range(low, high)
    if stored.num_rows == 0:
        return same
    stored_ids = stored.column("id").to_numpy()
    at = np.minimum(np.searchsorted(stored_ids, ids), len(stored_ids) - 1)
    found = stored_ids[at] == ids
    take = pa.array(at[found])
    mine = positions[found]
    wordings = pa.array(valid["wording"], from_pandas=True)  # (no copy for an Arrow-backed column)
    if isinstance(wordings, pa.ChunkedArray):
        wordings = wordings.combine_chunks()
    equal = ((stored.column("amount_cents").take(take).to_numpy() == valid["amount_cents"].to_numpy()[mine])
             & pc.equal(stored.column("wording").take(take).combine_chunks().cast(pa.large_string()),
                        wordings.take(pa.array(mine)).cast(pa.large_string())).to_numpy(zero_copy_only=False))
    same[mine[equal]] = True
    return same


def late_ids_table(order: IdOrder) -> pa.Table:
    """The batch's late ids (see :class:`IdOrder`), for the duplicate pairing."""
    return pa.table({"id": pa.array(order.late_ids(), pa.int64())})


# ..................................................................... staged tags
class StagedTags:
    """A shard's tags as the batches of ``staged_tags`` (run key, shard, transaction id, tag),
    counted as they stream."""

    def __init__(self, shard: int, tags: Iterable[pa.RecordBatch]) -> None:
        self.shard, self.tags, self.rows = shard, tags, 0

    def reader(self, run_key: int) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(STAGED_TAGS_SCHEMA, self._batches(run_key))

    def _batches(self, run_key: int) -> Iterator[pa.RecordBatch]:
        for batch in self.tags:
            self.rows += batch.num_rows
            yield pa.RecordBatch.from_arrays(
                [pa.array(np.full(batch.num_rows, run_key, np.int64)),
                 pa.array(np.full(batch.num_rows, self.shard, np.int64)),
                 batch.column("transaction_id").cast(pa.int64()), batch.column("tag").cast(pa.large_string())],
                schema=STAGED_TAGS_SCHEMA)


def staged_ambiguous(run_id: str, shard: int, ambiguous: pa.Table) -> pa.Table:
    """A shard's ambiguous wordings (wording, tags_found, transactions) as rows of ``staged_ambiguous``."""
    count = ambiguous.num_rows
    return pa.table({
        "run_id": pa.array([run_id]).take(pa.array(np.zeros(count, np.int32))).cast(pa.large_string()),
        "shard": pa.array(np.full(count, shard, np.int64)),
        "wording": ambiguous.column("wording").cast(pa.large_string()),
        "tags_found": ambiguous.column("tags_found").cast(pa.int64()),
        "transactions": ambiguous.column("transactions").cast(pa.int64())}, schema=STAGED_AMBIGUOUS_SCHEMA)
