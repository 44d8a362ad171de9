"""Run-scoped scratch files: large intermediate results passed between steps.

Steps hand each other paths, never large pickled artifacts: a derive step
streams its result to a Parquet file, chunk by chunk, and the matching publish
step streams it back into the database. Memory stays bounded by the chunk size.
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)


def work_dir(database: Path, run_id: str) -> Path:
    """The scratch directory of a run, beside the database (``<db>.enrich-work/<run>``)."""
    safe = run_id.replace("/", "-")
    return database.with_name(database.name + ".enrich-work") / safe


def write_frames(path: Path, frames: Iterable[pd.DataFrame], schema: pa.Schema) -> int:
    """Stream frames to one Parquet file (written to a temporary name, then renamed); return rows written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    rows = 0
    with pq.ParquetWriter(partial, schema) as writer:
        for frame in frames:
            writer.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False))
            rows += len(frame)
    partial.replace(path)
    return rows


def read_frames(path: Path, batch_rows: int = 500_000) -> Iterator[pd.DataFrame]:
    """Read back a file written by :func:`write_frames`, ``batch_rows`` at a time."""
    for batch in pq.ParquetFile(path).iter_batches(batch_size=batch_rows):
        yield batch.to_pandas()


def remove(directory: Path) -> None:
    """Delete a run's scratch directory (missing is fine)."""
    shutil.rmtree(directory, ignore_errors=True)
    try:
        directory.parent.rmdir()  # the database's scratch root, once no run uses it
    except OSError:
        pass
    logger.debug("removed scratch directory %s", directory)
