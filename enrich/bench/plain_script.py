"""The plain-script yardstick: the simplest way a user could write this job, with no guarantees.

``python -m enrich.bench.plain_script --transactions FILE --database DB [--tags TAGS]``
(the harness runs this file by its path, so that no package ``__init__`` is imported first).

What it does, and nothing more (issue 13):

* read the whole CSV into memory with ``pyarrow.csv`` (ids as int64, amounts and wordings as
  strings);
* tag with one ``pyarrow.compute.match_substring_regex`` per tag on the lower-cased wording,
  the tag bounded by non-alphanumerics (or the ends); a row is tagged when exactly one tag is
  found;
* annotate with ``numpy.where`` on the amount in cents;
* write with ``sqlite3`` ``executemany`` into three tables with integer primary keys
  (``transactions``, ``tags``, ``annotations``), in one transaction, WAL, ``synchronous=NORMAL``.

No validation (a malformed line or a repeated id makes it fail or store garbage: the harness
gives it the file's valid rows only), no ledger, no checks, no search index, no accent folding
(the product finds ``TAXI`` in ``tàxi``; this script does not). It imports pyarrow, numpy and
the standard library only.
"""
from __future__ import annotations

import argparse
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

#: The job's four tags, used when no tag list is given.
DEFAULT_TAGS: tuple[str, ...] = ("TATA", "TOTO", "TUTU", "TAXI")
#: Annotation labels by code, as numpy.where picks them below.
LABELS = np.array(["LARGE SALE", "SALE", "SMALL EXPENSE", "EXPENSE"], dtype=object)

SCHEMA = """
CREATE TABLE transactions (id INTEGER PRIMARY KEY, amount_cents INTEGER NOT NULL, wording TEXT NOT NULL);
CREATE TABLE tags (transaction_id INTEGER PRIMARY KEY, tag TEXT NOT NULL);
CREATE TABLE annotations (transaction_id INTEGER PRIMARY KEY, annotation TEXT NOT NULL);
"""


def read_transactions(path: Path) -> pa.Table:
    """The whole CSV as an Arrow table: ``id`` int64, ``amount`` and ``wording`` strings."""
    return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
        column_types={"id": pa.int64(), "amount": pa.string(), "wording": pa.string()},
        include_columns=["id", "amount", "wording"]))


def read_tags(path: Path | None) -> list[str]:
    """The tag list file (one tag a line, ``#`` comments), or the four default tags."""
    if path is None:
        return list(DEFAULT_TAGS)
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def tag_pattern(tag: str) -> str:
    """RE2 pattern finding the lower-cased ``tag`` bounded by non-alphanumerics or the ends."""
    return r"(?:^|[^\pL\pN])\Q" + tag.lower() + r"\E(?:$|[^\pL\pN])"


def find_tags(wordings: pa.ChunkedArray, tags: list[str]) -> np.ndarray:
    """Per row, the index in ``tags`` of the only tag found, or -1 (none, or two or more)."""
    lowered = pc.utf8_lower(wordings)
    found = np.zeros(len(wordings), dtype=np.int32)
    first = np.full(len(wordings), -1, dtype=np.int32)
    for index, tag in enumerate(tags):
        hit = pc.match_substring_regex(lowered, tag_pattern(tag)).to_numpy(zero_copy_only=False)
        found += hit
        first = np.where(hit & (first < 0), index, first)
    return np.where(found == 1, first, -1)


def amounts_in_cents(amounts: pa.ChunkedArray) -> np.ndarray:
    """The decimal amount strings as integer cents."""
    return np.rint(pc.cast(amounts, pa.float64()).to_numpy() * 100).astype(np.int64)


def annotation_codes(cents: np.ndarray) -> np.ndarray:
    """Index into :data:`LABELS` per row, by amount: > 300, (0, 300], [-200, 0), < -200; 0 is -1."""
    return np.where(cents > 30_000, 0, np.where(cents > 0, 1, np.where(
        cents == 0, -1, np.where(cents >= -20_000, 2, 3))))


def write_database(path: Path, table: pa.Table, tag_index: np.ndarray, tags: list[str],
                   codes: np.ndarray, cents: np.ndarray) -> None:
    """Create the three tables and insert every row, tag and annotation in one transaction."""
    connection = sqlite3.connect(path, isolation_level=None)
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=NORMAL")
        connection.executescript(SCHEMA)
        ids = table["id"].to_numpy()
        names = np.array(tags, dtype=object)
        tagged, annotated = tag_index >= 0, codes >= 0
        connection.execute("BEGIN")
        connection.executemany("INSERT INTO transactions VALUES (?, ?, ?)",
                               zip(ids.tolist(), cents.tolist(), table["wording"].to_pylist()))
        connection.executemany("INSERT INTO tags VALUES (?, ?)",
                               zip(ids[tagged].tolist(), names[tag_index[tagged]].tolist()))
        connection.executemany("INSERT INTO annotations VALUES (?, ?)",
                               zip(ids[annotated].tolist(), LABELS[codes[annotated]].tolist()))
        connection.execute("COMMIT")
    finally:
        connection.close()


def run(transactions: Path, database: Path, tags_path: Path | None = None) -> dict[str, int]:
    """The whole job: read, tag, annotate, write; returns the rows, tags and annotations written."""
    table = read_transactions(transactions)
    tags = read_tags(tags_path)
    tag_index = find_tags(table["wording"], tags)
    cents = amounts_in_cents(table["amount"])
    codes = annotation_codes(cents)
    write_database(database, table, tag_index, tags, codes, cents)
    return {"rows": table.num_rows, "tagged": int((tag_index >= 0).sum()),
            "annotated": int((codes >= 0).sum())}


def main(argv: list[str] | None = None) -> int:
    """Command line: ``--transactions FILE --database DB [--tags FILE]``; prints the counts."""
    parser = argparse.ArgumentParser(prog="python -m enrich.bench.plain_script",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--transactions", type=Path, required=True, help="CSV file (id, amount, wording)")
    parser.add_argument("--database", type=Path, required=True, help="SQLite file to create")
    parser.add_argument("--tags", type=Path, default=None, help="tag list file (default: the four tags)")
    args = parser.parse_args(argv)
    counts = run(args.transactions, args.database, args.tags)
    print(" ".join(f"{name}={count}" for name, count in counts.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
