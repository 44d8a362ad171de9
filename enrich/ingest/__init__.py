"""Parse and validate the bank-transaction CSV file, in bounded-memory chunks.

The package only reads and checks; it never imports Metaflow and never opens a
database (the storage module stores what :func:`read_chunks` yields).

Input contract
==============

Encoding and framing
    UTF-8, with an optional UTF-8 byte order mark at the very start of the
    file.  Records end with LF or CRLF (``\\n`` / ``\\r\\n``); exactly one
    ``\\r`` before the ``\\n`` (or before the end of the file) is dropped.
    Fields are separated by commas.  Quoting follows RFC 4180: a field that
    *starts* with ``"`` is quoted, runs to the matching closing ``"``, may
    contain commas, CR and LF, and writes a quote as ``""``.  A ``"`` inside an
    unquoted field (``12" TV``) is kept as literal text, like Python's
    :mod:`csv` module does.  Blank physical lines (empty, or only ``\\r``) are
    skipped and are not rows.

Other dialects (:mod:`enrich.ingest.dialect`)
    A :class:`CsvDialect` passed to :func:`read_chunks` reads a file in another
    encoding (transcoded to UTF-8 while it is read), with another delimiter
    (``;``, a tab...) or with decimal-comma amounts (``-12,50``); everything
    else holds as above.

Header (:mod:`enrich.ingest.header`)
    The first non-blank record; it names at least ``id``, ``amount`` and
    ``wording``, in any order, case-insensitively; other columns are ignored.
    Every record must have as many fields as the header.

``id``, ``amount``, ``wording`` (:mod:`enrich.ingest.contract`)
    A positive integer; a plain decimal number exact in cents, returned as
    integer cents; any text, kept verbatim.

What happens to bad input
=========================

A record that breaks the contract is *not* fatal: it is returned in
:attr:`ParsedChunk.rejected` with the 1-based physical line where it starts
(the header is line 1), its raw text (the record's bytes without the line
terminator, decoded with undecodable bytes written ``\\xNN``) and a reason
starting with one of the ``REASON_*`` prefixes, then parsing goes on (see
:mod:`enrich.ingest.contract` for the order of the checks).  For the three
quoting/size problems (``unclosed quote``, ``malformed quoting``, ``record too
long``) the framing of the record itself is in doubt, so only the *physical line*
where the record starts is rejected and parsing resumes on the next physical line:
an unclosed quote cannot swallow the rest of the file.  For ``record too long`` the
raw text is cut to its first :data:`TOO_LONG_RAW_PREVIEW_BYTES` bytes.

Problems with the file as a whole raise :class:`InputFileError` (or a
subclass) from the :func:`read_chunks` call itself, before any chunk exists:
missing, unreadable or directory path, empty file, header that is not valid
CSV or not valid UTF-8, missing or duplicated required column.  The messages
name the file, the problem and the fix.  (A read error in the middle of the
file, e.g. a disk failure, also raises :class:`InputFileError`, during the
iteration.)

A file that seems written in another dialect than the one given (a ``;`` or tab
header, rows that read as Windows-1252, decimal commas) gets advice naming the
options that read it: in the error message for a header, else once per file in
:attr:`ParsedChunk.hints` (and the log), never repeated in every row's reason
(:mod:`enrich.ingest.hints`).

Duplicate ids are *not* detected here: the storage layer does that over the
whole file.  Every valid row is returned with its line number.

Known limits
============

* Line ends are LF or CRLF; a lone CR (old Mac files) is ordinary text.
* A quoted field still open ``max_record_bytes`` after its line starts is
  reported as ``record too long`` (with a hint about a missing closing quote),
  because telling it apart from a genuinely huge field would mean reading on
  to the end of the file.
* A quote opened on one line whose "closing" quote on a later line is followed
  by text is reported as ``unclosed quote`` for the first line; the following
  lines are then parsed on their own.

The package
===========

The contract (what is accepted, why a row is rejected) and the CSV mechanics are
apart:

* contract: :mod:`~enrich.ingest.contract` (id and amount rules, rejection reasons),
  :mod:`~enrich.ingest.header` (required columns), :mod:`~enrich.ingest.dialect`
  (the options), :mod:`~enrich.ingest.exceptions`, :mod:`~enrich.ingest.hints`
  (advice for foreign files);
* mechanics: :mod:`~enrich.ingest.scanning` (exact record scanner),
  :mod:`~enrich.ingest.framing` (vectorized framing), :mod:`~enrich.ingest.numbers`
  (vectorized id and amount parsing), :mod:`~enrich.ingest.chunks` (checking a framed
  block), :mod:`~enrich.ingest.transcoding` (other encodings),
  :mod:`~enrich.ingest.reading` (blocks, threads, prefetch).

Why the CSV mechanics are hand-written
======================================

``pyarrow.csv`` (it has ``invalid_row_handler``) was tried as a user would set it
up: ``ReadOptions(block_size=16 MiB, column_names=<the header, read by hand>,
skip_rows=1)``, ``ParseOptions(newlines_in_values=True,
invalid_row_handler=<record, skip>)``, ``ConvertOptions(column_types=<strings>,
include_columns=["id", "amount", "wording"], strings_can_be_null=False)``, then the
id and amount rules of this package's kernels over the string columns.  On the
hostile corpus (the 17 cases of ``tests/test_hostile_input.py`` and 10 framing
cases) and on the generated 1M-row file, it gets wrong what the contract is about:

* Line numbers: none for valid rows; ``InvalidRow.number`` is None with threads or
  streaming, and single-threaded it counts records, not lines (blank lines and
  multi-line fields shift it).  Rows failing the id or amount rule come out of
  the conversion with neither line nor raw text.
* An unclosed quote swallows the rest of the file into one *valid* wording
  (``'never closed\\n2,2.00,fine\\n3,3.00,also fine"'``): the rows after it are
  lost without a word.
* Text after a closing quote is accepted: ``"abc"x`` loads as ``abcx``.
* A lone CR ends a record: ``a\\rb`` loads as ``a`` plus a wrong-field-count row.
* Invalid UTF-8: with string columns the whole read fails ("CSV conversion error
  to string: invalid UTF8 data"); with binary columns the bad rows load unchecked,
  and a short row holding an invalid byte still aborts the read (the handler gets
  its text as ``str``: UnicodeDecodeError, then "CSV parse error").
* Conversions are all or nothing: int64 ids and decimal128(17, 2) amounts abort
  the 1M-row file on its one ``"12,50"``; ``decimal_point=","`` infers float64
  (``12,345`` becomes 12.345) or, as decimal128, aborts on it;
  ``ReadOptions(encoding="cp1252")`` aborts the whole file on one undefined byte
  (0x81).
* Header: ``include_columns`` wants the exact names (``" AMOUNT "`` fails), and a
  header-only file without a final newline fails ("Could not skip initial 1
  rows").

Speed on the 1M-row file (``python -m enrich.generate --rows 1000000 --seed 42
--malformed 4 --duplicates 3``, 43 MB, in the page cache; pyarrow 26, numpy 2.4;
2 vCPUs shared with other jobs, load average about 3; 21 interleaved runs each; CPU
time is the process's, all threads; rows/s from the median):

====================================================  =========  ===========  ======  ==========
reader                                                wall best  wall median  rows/s  CPU median
====================================================  =========  ===========  ======  ==========
``read_chunks`` (this package, all checks)            0.19 s     0.29 s       3.5 M   0.30 s
pyarrow ``read_csv``, strings, no checks              0.08 s     0.13 s       7.9 M   0.13 s
the same + this package's id/amount kernels           0.13 s     0.18 s       5.6 M   0.18 s
pyarrow ``open_csv`` (streaming), strings, no checks  0.09 s     0.09 s       10.6 M  0.09 s
====================================================  =========  ===========  ======  ==========

pyarrow splits a file 2 to 3 times faster.  What the hand-written mechanics buy for
about 0.15 s per million rows is the contract itself: the physical line of every
row, each bad line rejected alone with its raw text and a reason, and bounded
memory with every check.  (Python's :mod:`csv` module takes 0.32 s only to split
the same file, one row at a time.)  The measuring script is kept out of the product.
"""
from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from enrich.ingest.contract import (
    MAX_AMOUNT_INTEGER_DIGITS,
    MAX_ID,
    REASON_BAD_AMOUNT,
    REASON_BAD_ID,
    REASON_INVALID_UTF8,
    REASON_MALFORMED_QUOTING,
    REASON_NUL_IN_WORDING,
    REASON_RECORD_TOO_LONG,
    REASON_UNCLOSED_QUOTE,
    REASON_UNDECODABLE,
    REASON_WRONG_FIELD_COUNT,
    REQUIRED_COLUMNS,
    TOO_LONG_RAW_PREVIEW_BYTES,
)
from enrich.ingest.dialect import CsvDialect
from enrich.ingest.exceptions import (
    DialectError,
    DuplicateColumnError,
    EmptyFileError,
    InputFileError,
    MalformedHeaderError,
    MissingColumnError,
)

if TYPE_CHECKING:
    from enrich.ingest.chunks import ParsedChunk
    from enrich.ingest.numbers import parse_amounts, parse_ids
    from enrich.ingest.reading import PREFETCH_CHUNKS

#: The names exported from the reading machinery (numpy, pyarrow, pandas): imported on first use, so
#: that a process needing only the contract (the flow's settings: the dialect) does not pay for them.
_FROM_MACHINERY = {"ParsedChunk": "enrich.ingest.chunks", "parse_amounts": "enrich.ingest.numbers",
                   "parse_ids": "enrich.ingest.numbers", "PREFETCH_CHUNKS": "enrich.ingest.reading"}


def __getattr__(name: str) -> Any:
    if name in _FROM_MACHINERY:
        return getattr(importlib.import_module(_FROM_MACHINERY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

__all__ = [
    "CsvDialect",
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_RECORD_BYTES",
    "DialectError",
    "DuplicateColumnError",
    "EmptyFileError",
    "InputFileError",
    "MAX_AMOUNT_INTEGER_DIGITS",
    "MAX_ID",
    "MalformedHeaderError",
    "MissingColumnError",
    "PREFETCH_CHUNKS",
    "ParsedChunk",
    "REASON_BAD_AMOUNT",
    "REASON_NUL_IN_WORDING",
    "REASON_BAD_ID",
    "REASON_INVALID_UTF8",
    "REASON_MALFORMED_QUOTING",
    "REASON_RECORD_TOO_LONG",
    "REASON_UNCLOSED_QUOTE",
    "REASON_UNDECODABLE",
    "REASON_WRONG_FIELD_COUNT",
    "REQUIRED_COLUMNS",
    "TOO_LONG_RAW_PREVIEW_BYTES",
    "parse_amounts",
    "parse_ids",
    "read_chunks",
]

DEFAULT_CHUNK_BYTES: int = 16 * 1024 * 1024
DEFAULT_MAX_RECORD_BYTES: int = 16 * 1024 * 1024
#: Bytes read by the up-front header check of :func:`read_chunks` (more if needed).
_HEADER_PROBE_BYTES: int = 64 * 1024


def read_chunks(
    path: str | os.PathLike[str],
    dialect: CsvDialect | None = None,
    *,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[ParsedChunk]:
    """Stream the file in chunks of about ``chunk_bytes``; memory is bounded by the
    chunk size and ``max_record_bytes``, not by the file size.

    ``dialect`` says how the file is written (encoding, delimiter, decimal comma);
    None is the contract's default, ``CsvDialect()``.  File-level problems raise
    :class:`InputFileError` (or a subclass such as :class:`MissingColumnError`): the
    path and the header are checked by this call itself, before it returns the
    iterator, so nothing is ever yielded for a file with a bad header.  Chunks
    without any record are not yielded.  Advice about the whole file found on the
    way (e.g. rows that read as Windows-1252) is logged once and given once, in
    :attr:`ParsedChunk.hints` of the chunk where it first applies.  While the caller
    handles a chunk, the next ones are framed and validated in background threads
    (numpy and pyarrow release the GIL), at most :data:`PREFETCH_CHUNKS` framed
    chunks ahead.
    """
    if dialect is None:
        dialect = CsvDialect()
    elif not isinstance(dialect, CsvDialect):
        raise TypeError(f"dialect must be a CsvDialect, got {dialect!r}")
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    if max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}")
    from enrich.ingest.header import read_header
    from enrich.ingest.reading import PREFETCH_CHUNKS, input_reader, iter_chunks, open_input, prefetch

    name = os.fsdecode(os.fspath(path))
    with open_input(name) as stream:
        read_header(name, input_reader(name, stream, dialect), _HEADER_PROBE_BYTES, max_record_bytes,
                    dialect)
    return prefetch(iter_chunks(name, dialect, chunk_bytes, max_record_bytes), PREFETCH_CHUNKS)
