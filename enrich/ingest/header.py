"""The header: the first non-blank record, naming the columns.

It must name at least ``id``, ``amount`` and ``wording`` (:data:`REQUIRED_COLUMNS`),
in any order; names are compared after stripping surrounding whitespace,
case-insensitively, and may be quoted.  Other columns are allowed and ignored.
Every record must have as many fields as the header.  An optional UTF-8 byte order
mark before it is dropped.  When the header is not what the dialect expects, the
error says what the file looks like instead (:mod:`enrich.ingest.hints`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

from enrich.ingest import hints
from enrich.ingest.contract import REQUIRED_COLUMNS
from enrich.ingest.dialect import CsvDialect
from enrich.ingest.exceptions import (
    DuplicateColumnError,
    EmptyFileError,
    MalformedHeaderError,
    MissingColumnError,
)
from enrich.ingest.scanning import ScannedRecord, ScanOutcome, scan_record
from enrich.ingest.transcoding import first_undecodable

__all__ = ["REQUIRED_COLUMNS", "ColumnLayout", "HeaderRead", "column_layout", "read_header"]

BOM: Final[bytes] = b"\xef\xbb\xbf"


@dataclass(frozen=True, slots=True)
class ColumnLayout:
    """Where the required columns are in each record."""

    n_columns: int
    positions: tuple[int, ...]  # index of id, amount, wording in a record


def column_layout(path: str, names: list[str], advice: Callable[[], str] = str) -> ColumnLayout:
    """Map the required columns to their positions in the header ``names``, or raise
    :class:`MissingColumnError` (with ``advice()`` appended) or :class:`DuplicateColumnError`."""
    keys = [name.strip().casefold() for name in names]
    found = ", ".join(name.strip() for name in names)
    hint = f"The file needs the columns {', '.join(REQUIRED_COLUMNS)} in any order."
    duplicated = [col for col in REQUIRED_COLUMNS if keys.count(col) > 1]
    if duplicated:
        cols = " and ".join(repr(col) for col in duplicated)
        raise DuplicateColumnError(
            f"{path}: header names column {cols} more than once (found: {found}). "
            f"Keep a single column of each name. {hint}"
        )
    missing = [col for col in REQUIRED_COLUMNS if col not in keys]
    if missing:
        cols = " and ".join(repr(col) for col in missing)
        noun = "column" if len(missing) == 1 else "columns"
        more = advice()
        raise MissingColumnError(
            f"{path}: header has no {cols} {noun} (found: {found}). {hint}" + (f" {more}" if more else "")
        )
    return ColumnLayout(len(keys), tuple(keys.index(col) for col in REQUIRED_COLUMNS))


@dataclass(frozen=True, slots=True)
class HeaderRead:
    """The checked header, and the data read after it."""

    layout: ColumnLayout
    rest: bytes  # the bytes after the header record
    at_eof: bool  # ``rest`` reaches the end of the file
    next_line: int  # line number of the first byte of ``rest``


def read_header(
    name: str, read: Callable[[int], bytes], chunk_bytes: int, max_record_bytes: int,
    dialect: CsvDialect,
) -> HeaderRead:
    """Read and check the header of file ``name`` (``read(size)`` gives its next bytes,
    in UTF-8)."""
    buf, final = _skip_bom(read, chunk_bytes)
    pos, line = 0, 1
    while True:
        if pos >= len(buf) and final:
            raise EmptyFileError(
                f"{name}: the file is empty (no header line). Write a header line with the "
                f"columns {', '.join(REQUIRED_COLUMNS)}, then one line per transaction."
            )
        scanned = scan_record(buf, pos, len(buf), final, max_record_bytes, dialect.delimiter_byte)
        if scanned.outcome is ScanOutcome.NEED_MORE:
            data = read(max(chunk_bytes, len(buf)))
            final = not data
            buf += data
            continue
        if scanned.outcome is ScanOutcome.BLANK:
            line += buf.count(b"\n", pos, scanned.next_pos)
            pos = scanned.next_pos
            continue
        if scanned.outcome is ScanOutcome.ERROR:
            raise MalformedHeaderError(
                f"{name}: the header on line {line} is not valid CSV ({scanned.reason}). "
                f"Fix the header line: column names separated by {dialect.delimiter_plural}, "
                "with balanced quotes."
            )
        record = buf[pos : scanned.content_end]
        names = _decoded_names(name, line, scanned.fields, record, dialect)
        layout = column_layout(name, names, partial(_advice, record, buf, scanned, dialect))
        line += buf.count(b"\n", pos, scanned.next_pos)
        return HeaderRead(layout, buf[scanned.next_pos :], final, line)


def _advice(record: bytes, buf: bytes, scanned: ScannedRecord, dialect: CsvDialect) -> str:
    return hints.missing_columns_advice(record, buf[scanned.next_pos :], dialect)


def _skip_bom(read: Callable[[int], bytes], chunk_bytes: int) -> tuple[bytes, bool]:
    """The first bytes of the file, without a UTF-8 byte order mark, and whether that is all."""
    buf = b""
    final = False
    while len(buf) < len(BOM) and not final:
        data = read(max(chunk_bytes, len(BOM)))
        final = not data
        buf += data
    return (buf[len(BOM) :] if buf.startswith(BOM) else buf), final


def _decoded_names(
    name: str, line: int, fields: list[bytes], record: bytes, dialect: CsvDialect
) -> list[str]:
    try:
        return [f.decode("utf-8") for f in fields]
    except UnicodeDecodeError as exc:
        if dialect.transcoded:
            byte, _ = first_undecodable(record) or (record[exc.start], exc.start)
            message = (f"holds byte 0x{byte:02x}, which is not valid {dialect.encoding}. "
                       "Check the file's encoding and the --encoding option.")
        else:
            message = (f"is not valid UTF-8 ({exc.reason}). "
                       f"{hints.header_encoding_advice(record)}")
        raise MalformedHeaderError(f"{name}: the header on line {line} {message}") from exc
