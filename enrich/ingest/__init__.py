"""Parse and validate the bank-transaction CSV file, in bounded-memory chunks.

This module only reads and checks; it never imports Metaflow and never opens
a database (the storage module stores what :func:`read_chunks` yields).

Input contract
==============

Encoding and framing
    UTF-8, with an optional UTF-8 byte order mark at the very start of the
    file.  Records end with LF or CRLF (``\\n`` / ``\\r\\n``); exactly one
    ``\\r`` before the ``\\n`` (or before the end of the file) is dropped.
    Quoting follows RFC 4180: a field that *starts* with ``"`` is quoted, runs
    to the matching closing ``"``, may contain commas, CR and LF, and writes a
    quote as ``""``.  A ``"`` inside an unquoted field (``12" TV``) is kept as
    literal text, like Python's :mod:`csv` module does.  Blank physical lines
    (empty, or only ``\\r``) are skipped and are not rows.

Header
    The first non-blank record.  It must name at least ``id``, ``amount`` and
    ``wording``, in any order; names are compared after stripping surrounding
    whitespace, case-insensitively, and may be quoted.  Other columns are
    allowed and ignored.  Every record must have as many fields as the header.

``id``
    A positive integer: ASCII digits only (leading zeros allowed), optional
    surrounding spaces/tabs, from 1 to 9223372036854775807.

``amount``
    A plain decimal number: optional ``+``/``-`` sign, ASCII digits, an
    optional ``.`` decimal point (``12``, ``12.5``, ``-0.99``, ``.5``, ``5.``),
    no thousands separator, no exponent, optional surrounding spaces/tabs.  It
    must be exact in cents (``300.000`` is accepted, ``300.001`` is not) and
    have at most 15 integer digits once leading zeros are dropped.  It is
    returned as integer cents (int64).

``wording``
    Any text, possibly empty, kept verbatim (only RFC 4180 unquoting is
    applied: no stripping, NUL characters are kept).

What happens to bad input
=========================

A record that breaks the contract is *not* fatal: it is returned in
:attr:`ParsedChunk.rejected` with the 1-based physical line where it starts
(the header is line 1), its raw text (the record's bytes without the line
terminator, decoded as UTF-8 with ``errors="backslashreplace"``) and a reason
starting with one of the ``REASON_*`` prefixes below, then parsing goes on.
Checks run in this order: quoting and size (``unclosed quote``,
``malformed quoting``, ``record too long``), then ``invalid UTF-8``, then
``wrong field count``, then ``bad id``, then ``bad amount``.

For the three quoting/size problems the framing of the record itself is in
doubt, so only the *physical line* where the record starts is rejected and
parsing resumes on the next physical line: an unclosed quote cannot swallow
the rest of the file.  For ``record too long`` the raw text is cut to its
first :data:`TOO_LONG_RAW_PREVIEW_BYTES` bytes.

Problems with the file as a whole raise :class:`InputFileError` (or a
subclass) from the :func:`read_chunks` call itself, before any chunk exists:
missing, unreadable or directory path, empty file, header that is not valid
CSV or not valid UTF-8, missing or duplicated required column.  The messages
name the file, the problem and the fix.  (A read error in the middle of the
file, e.g. a disk failure, also raises :class:`InputFileError`, during the
iteration.)

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

Implementation
==============

:func:`read_chunks` reads binary blocks of about ``chunk_bytes``.  On each
block numpy finds the quote, comma and newline bytes; the parity of the number
of quotes before a comma or newline says whether it is inside a quoted field
(RFC 4180 escaped quotes keep the parity right).  That only holds when quotes
are well placed, which is checked vectorized: an opening quote must start a
field and a closing quote must end one (or be doubled).  The record around a
misplaced quote, or a too-long record, is handed to an exact pure-Python
record parser (:func:`_scan_record`) implementing the same grammar, and the
vectorized framing resumes right after it, so the slow path costs one record,
not one block.  The block is cut after its last complete record and the rest
is carried over (the buffer grows geometrically for records longer than a
block, up to ``max_record_bytes``).

Fields are cut out of the block by pyarrow from offsets computed with numpy.  Ids and amounts in
their plain forms are parsed with SWAR arithmetic on uint64 words (eight
digits per multiply-shift step); other forms go through pyarrow regexes.
UTF-8 is validated for the whole block at once, and record by record only
where that fails.  Validation of a block runs in a worker thread (numpy and
pyarrow release the GIL) while the next block is read and framed.  Per-row
Python only runs for rejected rows and for records around misplaced quotes.
"""
from __future__ import annotations

import logging
import os
import queue
import re
import threading
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import BinaryIO, Final

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_CHUNK_BYTES",
    "DEFAULT_MAX_RECORD_BYTES",
    "DuplicateColumnError",
    "EmptyFileError",
    "InputFileError",
    "MAX_AMOUNT_INTEGER_DIGITS",
    "MAX_ID",
    "MalformedHeaderError",
    "MissingColumnError",
    "ParsedChunk",
    "REASON_BAD_AMOUNT",
    "REASON_BAD_ID",
    "REASON_INVALID_UTF8",
    "REASON_MALFORMED_QUOTING",
    "REASON_RECORD_TOO_LONG",
    "REASON_UNCLOSED_QUOTE",
    "REASON_WRONG_FIELD_COUNT",
    "REQUIRED_COLUMNS",
    "TOO_LONG_RAW_PREVIEW_BYTES",
    "parse_amounts",
    "parse_ids",
    "read_chunks",
]

REQUIRED_COLUMNS: tuple[str, ...] = ("id", "amount", "wording")
DEFAULT_CHUNK_BYTES: int = 16 * 1024 * 1024
DEFAULT_MAX_RECORD_BYTES: int = 16 * 1024 * 1024

MAX_ID: Final[int] = 9223372036854775807
MAX_AMOUNT_INTEGER_DIGITS: Final[int] = 15
#: Raw text kept for a ``record too long`` rejection (the record may be huge).
TOO_LONG_RAW_PREVIEW_BYTES: Final[int] = 1024

# Rejection reasons: every reason is "<prefix>: <detail>".
REASON_WRONG_FIELD_COUNT: Final[str] = "wrong field count"
REASON_INVALID_UTF8: Final[str] = "invalid UTF-8"
REASON_BAD_ID: Final[str] = "bad id"
REASON_BAD_AMOUNT: Final[str] = "bad amount"
REASON_UNCLOSED_QUOTE: Final[str] = "unclosed quote"
REASON_MALFORMED_QUOTING: Final[str] = "malformed quoting"
REASON_RECORD_TOO_LONG: Final[str] = "record too long"

#: Blocks validated concurrently (numpy and pyarrow release the GIL).
_WORKERS: Final[int] = 2
#: Bytes read by the up-front header check of :func:`read_chunks` (more if needed).
_HEADER_PROBE_BYTES: Final[int] = 64 * 1024
#: Bytes scanned per numpy call when looking for quotes, commas and newlines.
_SCAN_SLICE: Final[int] = 256 * 1024

_BOM: Final[bytes] = b"\xef\xbb\xbf"
_NL: Final[int] = 0x0A
_CR: Final[int] = 0x0D
_COMMA: Final[int] = 0x2C
_QUOTE: Final[int] = 0x22
_MAX_ID_DIGITS: Final[str] = str(MAX_ID)
_ID_PATTERN: Final[str] = r"^[ \t]*(?P<digits>[0-9]+)[ \t]*$"
_AMOUNT_PATTERN: Final[str] = (
    r"^[ \t]*(?P<sign>[+-]?)(?P<int>[0-9]*)(?:\.(?P<frac>[0-9]*))?[ \t]*$"
)
_UNQUOTED_FIELD: Final[re.Pattern[bytes]] = re.compile(rb"[^,\n]*")
# Python twins of the patterns above, used to explain rejections ("$" would accept a final "\n").
_ID_RE: Final[re.Pattern[str]] = re.compile(_ID_PATTERN.replace("$", r"\Z"))
_AMOUNT_RE: Final[re.Pattern[str]] = re.compile(_AMOUNT_PATTERN.replace("$", r"\Z"))

IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ByteArray = npt.NDArray[np.uint8]


# --------------------------------------------------------------------------- errors


class InputFileError(Exception):
    """The input file as a whole cannot be ingested; nothing should be stored."""


class EmptyFileError(InputFileError):
    """The file has no header record (it is empty or only blank lines)."""


class MalformedHeaderError(InputFileError):
    """The header record is not valid CSV or not valid UTF-8."""


class MissingColumnError(InputFileError):
    """The header lacks one of :data:`REQUIRED_COLUMNS`."""


class DuplicateColumnError(InputFileError):
    """The header names one of :data:`REQUIRED_COLUMNS` more than once."""


# --------------------------------------------------------------------------- result


@dataclass(frozen=True, eq=False)
class ParsedChunk:
    """The rows parsed from one block of the file.

    ``valid`` has the columns ``line`` (int64), ``id`` (int64),
    ``amount_cents`` (int64) and ``wording`` (pandas ``str``); ``rejected``
    has ``line`` (int64), ``raw`` (``str``) and ``reason`` (``str``).  Both use
    a RangeIndex and are sorted by line.  (``eq=False``: chunks compare and
    hash by identity, since DataFrames cannot be compared with ``==``.)
    """

    valid: pd.DataFrame
    rejected: pd.DataFrame

    @property
    def rows_read(self) -> int:
        """Number of records in this chunk, valid or not (blank lines excluded)."""
        return len(self.valid) + len(self.rejected)


def _valid_frame(line: IntArray, ids: IntArray, cents: IntArray, wording: pa.Array) -> pd.DataFrame:
    words = wording.to_pandas()
    return pd.DataFrame(
        {
            "line": np.asarray(line, dtype=np.int64),
            "id": np.asarray(ids, dtype=np.int64),
            "amount_cents": np.asarray(cents, dtype=np.int64),
            "wording": words.array if isinstance(words, pd.Series) else words,
        }
    )


def _rejected_frame(line: list[int], raw: list[str], reason: list[str]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "line": np.asarray(line, dtype=np.int64),
            "raw": pd.Series(raw, dtype="str").array,
            "reason": pd.Series(reason, dtype="str").array,
        }
    )


# --------------------------------------------------------------------------- value parsing


def _trunc(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _id_problem(text: str) -> str:
    """Reason (with prefix) why ``text`` is not a valid id."""
    match = _ID_RE.match(text)
    if match is None:
        return f"{REASON_BAD_ID}: {_trunc(text)} is not a positive integer"
    if int(match.group(1)) == 0:
        return f"{REASON_BAD_ID}: {_trunc(text)} is not a positive integer (must be at least 1)"
    return f"{REASON_BAD_ID}: {_trunc(text)} is out of range (at most {MAX_ID})"


def _amount_problem(text: str) -> str:
    """Reason (with prefix) why ``text`` is not a valid amount."""
    match = _AMOUNT_RE.match(text)
    if match is None or not (match.group(2) or match.group(3)):
        return f"{REASON_BAD_AMOUNT}: {_trunc(text)} is not a plain decimal number like -12.34"
    if len(match.group(2).lstrip("0")) > MAX_AMOUNT_INTEGER_DIGITS:
        return (
            f"{REASON_BAD_AMOUNT}: {_trunc(text)} is out of range "
            f"(more than {MAX_AMOUNT_INTEGER_DIGITS} integer digits)"
        )
    return f"{REASON_BAD_AMOUNT}: {_trunc(text)} is not exact in cents"


def _to_large_string(values: pa.Array) -> pa.Array:
    if pa.types.is_large_string(values.type):
        return values
    return values.cast(pa.large_string())


def _ids_regex(values: pa.Array) -> tuple[IntArray, BoolArray]:
    """Full-grammar id parsing of a string array with pyarrow regexes: (ids, ok), 0 where not ok."""
    values = _to_large_string(values)
    if len(values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.bool_)
    digits = pc.struct_field(pc.extract_regex(values, _ID_PATTERN), [0])
    significant = pc.ascii_ltrim(digits, characters="0")
    length = pc.binary_length(significant)
    ok = pc.and_(
        pc.greater(length, 0),
        pc.or_(
            pc.less(length, len(_MAX_ID_DIGITS)),
            pc.and_(
                pc.equal(length, len(_MAX_ID_DIGITS)),
                pc.less_equal(significant, _MAX_ID_DIGITS),
            ),
        ),
    )
    ok_np = np.asarray(ok.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.bool_)
    zero = pa.scalar("0", pa.large_string())
    cleaned = pc.if_else(ok, significant, zero).fill_null(zero)
    ids = pc.cast(cleaned, pa.int64()).to_numpy(zero_copy_only=False)
    return np.array(ids, dtype=np.int64), ok_np


def _amounts_regex(values: pa.Array) -> tuple[IntArray, BoolArray]:
    """Full-grammar amount parsing of a string array with pyarrow regexes: (cents, ok)."""
    values = _to_large_string(values)
    if len(values) == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.bool_)
    parts = pc.extract_regex(values, _AMOUNT_PATTERN)
    sign = pc.struct_field(parts, [0])
    integer = pc.struct_field(parts, [1])
    frac = pc.struct_field(parts, [2])
    significant = pc.ascii_ltrim(integer, characters="0")
    has_digit = pc.or_(
        pc.greater(pc.binary_length(integer), 0), pc.greater(pc.binary_length(frac), 0)
    )
    in_range = pc.less_equal(pc.binary_length(significant), MAX_AMOUNT_INTEGER_DIGITS)
    # Digits after the second decimal must all be zeros.
    tail = pc.utf8_slice_codeunits(frac, 2)
    exact = pc.equal(pc.binary_length(pc.ascii_rtrim(tail, characters="0")), 0)
    ok = pc.and_(pc.and_(has_digit, in_range), exact)
    ok_np = np.asarray(ok.fill_null(False).to_numpy(zero_copy_only=False), dtype=np.bool_)
    zero, zeros, empty = (pa.scalar(t, pa.large_string()) for t in ("0", "00", ""))
    int_text = pc.if_else(ok, pc.binary_join_element_wise(zero, significant, empty), zero)
    frac_text = pc.if_else(
        ok, pc.utf8_slice_codeunits(pc.binary_join_element_wise(frac, zeros, empty), 0, 2), zero
    )
    whole = pc.cast(int_text.fill_null(zero), pa.int64()).to_numpy(zero_copy_only=False)
    cents = pc.cast(frac_text.fill_null(zero), pa.int64()).to_numpy(zero_copy_only=False)
    negative = pc.equal(sign, "-").fill_null(False).to_numpy(zero_copy_only=False)
    total = np.asarray(whole, dtype=np.int64) * 100 + np.asarray(cents, dtype=np.int64)
    return np.where(negative, -total, total).astype(np.int64), ok_np


# Fast path: SWAR ("SIMD within a register") decimal parsing on uint64 words.
_WINDOW: Final[int] = 16
_U64: Final[np.dtype[np.uint64]] = np.dtype("<u8")
_ASCII_ZEROS: Final[np.uint64] = np.uint64(0x3030303030303030)
_HIGH_NIBBLES: Final[np.uint64] = np.uint64(0xF0F0F0F0F0F0F0F0)
_LOW_NIBBLES: Final[np.uint64] = np.uint64(0x0F0F0F0F0F0F0F0F)
_SIXES: Final[np.uint64] = np.uint64(0x0606060606060606)
_TOP_BYTES: Final[npt.NDArray[np.uint64]] = np.array(
    [((1 << 64) - 1) ^ ((1 << (8 * (8 - k))) - 1) for k in range(9)], dtype=np.uint64
)


class _Padded:
    """A byte array padded with 16 ``'0'`` bytes in front and 16 NUL bytes behind,
    so that fixed-width windows and lookarounds never leave the array."""

    def __init__(self, data: ByteArray) -> None:
        padded = np.empty(data.size + 2 * _WINDOW, dtype=np.uint8)
        padded[:_WINDOW] = 0x30
        padded[_WINDOW : _WINDOW + data.size] = data
        padded[_WINDOW + data.size :] = 0
        self.padded = padded
        self.size = data.size

    def chars(self, pos: IntArray) -> ByteArray:
        """``data[pos]``, for ``-16 <= pos < len(data) + 16`` (padding outside)."""
        return self.padded[pos + _WINDOW]

    def words(self, ends: IntArray) -> npt.NDArray[np.uint64]:
        """The 8 bytes before each end, as little-endian uint64 (``-8 <= end <= len + 16``)."""
        every_offset = np.ndarray(  # element j: the 8 (unaligned) bytes padded[j:j+8]
            shape=(self.padded.size - 7,), dtype=_U64, buffer=self.padded, offset=0, strides=(1,)
        )
        return every_offset[ends + (_WINDOW - 8)]


def _eight_digits(
    word: npt.NDArray[np.uint64], n_digits: IntArray
) -> tuple[npt.NDArray[np.uint64], BoolArray]:
    """Value of the last ``n_digits`` (0..8) bytes of each little-endian word,
    and whether they are all ASCII digits."""
    mask = _TOP_BYTES[n_digits]
    x = (word & mask) | (_ASCII_ZEROS & ~mask)
    ok = ((x & _HIGH_NIBBLES) == _ASCII_ZEROS) & (((x + _SIXES) & _HIGH_NIBBLES) == _ASCII_ZEROS)
    x &= _LOW_NIBBLES
    x *= np.uint64(2561)
    x >>= np.uint64(8)
    x &= np.uint64(0x00FF00FF00FF00FF)
    x *= np.uint64(6553601)
    x >>= np.uint64(16)
    x &= np.uint64(0x0000FFFF0000FFFF)
    x *= np.uint64(42949672960001)
    x >>= np.uint64(32)
    return x, ok


def _digit_words(
    low: npt.NDArray[np.uint64], high: npt.NDArray[np.uint64] | None, length: IntArray
) -> tuple[IntArray, BoolArray]:
    """Value of the last ``length`` (0..16) bytes of the 16-byte strings ``high + low``
    (8 bytes each, little-endian), if they are all ASCII digits: (value, ok)."""
    ok = (length >= 0) & (length <= _WINDOW)
    length = np.clip(length, 0, _WINDOW)
    value, low_ok = _eight_digits(low, np.minimum(length, 8))
    ok &= low_ok
    if high is not None:
        high_value, high_ok = _eight_digits(high, np.maximum(length - 8, 0))
        value += high_value * np.uint64(100_000_000)
        ok &= high_ok
    return value.view(np.int64), ok


def _digits(data: _Padded, ends: IntArray, length: IntArray) -> tuple[IntArray, BoolArray]:
    """Parse ``data[ends-length:ends]`` as 0 to 16 ASCII digits: (value, ok)."""
    wide = length.size > 0 and int(length.max()) > 8
    return _digit_words(data.words(ends), data.words(ends - 8) if wide else None, length)


def _ids_canonical(data: _Padded, starts: IntArray, ends: IntArray) -> tuple[IntArray, BoolArray]:
    """Fast parse of ids written as 1 to 16 plain digits with a value >= 1.

    Returns (ids, ok); ``ok`` is False for anything else, which may still be
    valid (spaces, 19 digits, quotes...) and must go through :func:`_ids_regex`.
    """
    length = ends - starts
    value, ok = _digits(data, ends, length)
    return value, ok & (length >= 1) & (value > 0)


_BYTE: Final[np.uint64] = np.uint64(8)
#: mask of the bytes below the dot, by number of digits after the dot (0, 1, 2)
_BELOW_DOT: Final[npt.NDArray[np.uint64]] = np.array(
    [(1 << (8 * (7 - k))) - 1 for k in range(3)], dtype=np.uint64
)
#: mask of the bytes above the dot, by number of digits after the dot
_ABOVE_DOT: Final[npt.NDArray[np.uint64]] = np.array(
    [((1 << 64) - 1) ^ ((1 << (8 * (8 - k))) - 1) for k in range(3)], dtype=np.uint64
)
_CENTS_SCALE: Final[IntArray] = np.array([100, 10, 1], dtype=np.int64)


def _amounts_canonical(
    data: _Padded, starts: IntArray, ends: IntArray
) -> tuple[IntArray, BoolArray]:
    """Fast parse of amounts like ``-12``, ``+12.5``, ``.05``, ``5.`` (no spaces, at
    most 2 decimals, at most 15 integer digits, at most 16 characters): (cents, ok).
    ``ok`` is False for anything else, which must go through :func:`_amounts_regex`.

    The last 16 bytes of each field are loaded as two uint64 words; a dot among
    the last three characters is squeezed out by shifting the bytes before it,
    which leaves a plain digit string worth ``cents / 10**(2 - decimals)``.
    """
    length = ends - starts
    low = data.words(ends)
    high = data.words(ends - 8) if length.size and int(length.max()) > 8 else None
    first = data.chars(starts)
    negative = (first == 0x2D) & (length >= 1)
    signed = negative | ((first == 0x2B) & (length >= 1))
    last3 = low >> np.uint64(40)  # bytes 5, 6, 7 of the word: the last three characters
    dot2 = ((last3 & np.uint64(0xFF)) == 0x2E) & (length >= 3)
    dot1 = (((last3 >> _BYTE) & np.uint64(0xFF)) == 0x2E) & (length >= 2) & ~dot2
    dot0 = ((last3 >> np.uint64(16)) == 0x2E) & (length >= 1) & ~dot2 & ~dot1
    has_dot = dot0 | dot1 | dot2
    decimals = dot2.astype(np.int64) * 2 + dot1
    if has_dot.any():
        squeezed = ((low & _BELOW_DOT[decimals]) << _BYTE) | (low & _ABOVE_DOT[decimals])
        if high is not None:
            squeezed |= high >> np.uint64(56)
            high = np.where(has_dot, high << _BYTE, high)
        low = np.where(has_dot, squeezed, low)
    n_digits = length - has_dot - signed
    value, ok = _digit_words(low, high, n_digits)
    ok &= (length <= _WINDOW) & (n_digits >= 1) & (n_digits - decimals <= MAX_AMOUNT_INTEGER_DIGITS)
    cents = value * _CENTS_SCALE[decimals]
    return np.where(negative, -cents, cents), ok


_BATCH_ROWS: Final[int] = 16384


def _in_batches(
    parse: Callable[[_Padded, IntArray, IntArray], tuple[IntArray, BoolArray]],
    data: _Padded,
    starts: IntArray,
    ends: IntArray,
) -> tuple[IntArray, BoolArray]:
    """Run a fast parser over cache-sized batches of rows (about 1.5x faster)."""
    if starts.size <= _BATCH_ROWS:
        return parse(data, starts, ends)
    values = np.empty(starts.size, dtype=np.int64)
    ok = np.empty(starts.size, dtype=np.bool_)
    for lo in range(0, starts.size, _BATCH_ROWS):
        hi = lo + _BATCH_ROWS
        values[lo:hi], ok[lo:hi] = parse(data, starts[lo:hi], ends[lo:hi])
    return values, ok


def _arrow_positions(values: pa.Array) -> tuple[ByteArray, IntArray, IntArray]:
    """(data, starts, ends) of a large_string array, zero-copy."""
    _, offsets_buf, data_buf = values.buffers()
    count = len(values)
    if offsets_buf is None:
        zeros = np.zeros(count, np.int64)
        return np.zeros(0, np.uint8), zeros, zeros
    offsets = np.frombuffer(offsets_buf, dtype=np.int64)[values.offset : values.offset + count + 1]
    if data_buf is None:
        return np.zeros(0, np.uint8), offsets[:-1], offsets[1:]
    data = np.frombuffer(data_buf, dtype=np.uint8)
    return data, offsets[:-1], offsets[1:]


def _ids_text(values: pa.Array) -> tuple[IntArray, BoolArray]:
    """Parse a string array of ids: numpy fast path, regexes for the rest; nulls are not ok."""
    return _parse_text(values, _ids_canonical, _ids_regex)


def _amounts_text(values: pa.Array) -> tuple[IntArray, BoolArray]:
    """Parse a string array of amounts (in cents): numpy fast path, regexes for the rest; nulls are not ok."""
    return _parse_text(values, _amounts_canonical, _amounts_regex)


def _parse_text(
    values: pa.Array,
    canonical: Callable[[_Padded, IntArray, IntArray], tuple[IntArray, BoolArray]],
    regex: Callable[[pa.Array], tuple[IntArray, BoolArray]],
) -> tuple[IntArray, BoolArray]:
    """The canonical spellings with numpy, then the regex parser for whatever it did not take."""
    values = _to_large_string(values)
    data, starts, ends = _arrow_positions(values)
    parsed, ok = _in_batches(canonical, _Padded(data), starts, ends)
    ok &= np.asarray(values.is_valid().to_numpy(zero_copy_only=False), dtype=np.bool_)
    if not ok.all():
        redo = np.flatnonzero(~ok)
        parsed[redo], ok[redo] = regex(values.take(pa.array(redo)))
    return parsed, ok


def _series_to_arrow(text: pd.Series) -> pa.Array:
    arr = pa.array(text, from_pandas=True)
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.large_string())
    return arr.cast(pa.large_string())


def parse_amounts(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse decimal amount texts to integer cents, vectorized.

    Follows the ``amount`` rules of the module docstring.  Returns
    ``(cents, reasons)`` aligned on ``text.index``: ``cents`` is an ``Int64``
    series (NA where invalid) and ``reasons`` a ``string`` series holding the
    ``bad amount: ...`` reason where invalid and NA where valid.  Missing
    values (None/NA) are invalid.
    """
    arr = _series_to_arrow(text)
    cents, ok = _amounts_text(arr)
    reasons: list[str | None] = [None] * len(arr)
    for i in np.flatnonzero(~ok).tolist():
        value = arr[i].as_py()
        reasons[i] = (
            f"{REASON_BAD_AMOUNT}: missing value" if value is None else _amount_problem(value)
        )
    return (
        pd.Series(pd.arrays.IntegerArray(cents, ~ok), index=text.index, name=text.name),
        pd.Series(reasons, index=text.index, dtype="string", name=text.name),
    )


def parse_ids(text: pd.Series) -> tuple[pd.Series, pd.Series]:
    """Parse id texts to int64, vectorized; same conventions as :func:`parse_amounts`."""
    arr = _series_to_arrow(text)
    ids, ok = _ids_text(arr)
    reasons: list[str | None] = [None] * len(arr)
    for i in np.flatnonzero(~ok).tolist():
        value = arr[i].as_py()
        reasons[i] = f"{REASON_BAD_ID}: missing value" if value is None else _id_problem(value)
    return (
        pd.Series(pd.arrays.IntegerArray(ids, ~ok), index=text.index, name=text.name),
        pd.Series(reasons, index=text.index, dtype="string", name=text.name),
    )


# --------------------------------------------------------------------------- exact record scanner

_RECORD: Final[int] = 0
_BLANK: Final[int] = 1
_ERROR: Final[int] = 2
_NEED_MORE: Final[int] = 3


@dataclass(slots=True)
class _Scan:
    """Outcome of scanning one record with the exact (slow) parser.

    ``_RECORD``: ``fields`` are unquoted and ``content_end`` ends the record
    text.  ``_ERROR``: ``content_end`` ends the raw text to report and
    ``reason`` is set; ``next_pos == -1`` means the rejected line goes on past
    the end of the buffer.
    """

    kind: int
    next_pos: int = -1
    content_end: int = -1
    fields: list[bytes] = field(default_factory=list)
    reason: str = ""


_SCAN_NEED_MORE: Final[_Scan] = _Scan(_NEED_MORE)


def _too_long(
    buf: bytes, start: int, n: int, final: bool, max_record_bytes: int, open_field: int = 0
) -> _Scan:
    """Reject the physical line at ``start`` as too long (raw text cut to a preview).

    ``open_field`` is the number of the quoted field still open when the limit
    was hit, if any: then a missing closing quote is the likely cause.
    """
    preview = min(TOO_LONG_RAW_PREVIEW_BYTES, max_record_bytes)
    newline = buf.find(b"\n", start, n)
    if newline >= 0:
        end, next_pos = newline, newline + 1
    elif final:
        end, next_pos = n, n
    else:
        end, next_pos = n, -1
    if next_pos >= 0 and end > start and buf[end - 1] == _CR:
        end -= 1
    hint = (
        f"; quoted field {open_field} is still open there: is its closing quote missing?"
        if open_field
        else ""
    )
    reason = (
        f"{REASON_RECORD_TOO_LONG}: the record starting on this line is longer than "
        f"{max_record_bytes} bytes{hint} (raw text cut to its first {preview} bytes)"
    )
    return _Scan(_ERROR, next_pos=next_pos, content_end=min(end, start + preview), reason=reason)


def _scan_record(buf: bytes, start: int, n: int, final: bool, max_record_bytes: int) -> _Scan:
    """Scan the record starting at ``start`` (a physical line start) with the exact grammar.

    ``buf[:n]`` is the data at hand and ``final`` says it reaches the end of
    the file.  Only ``buf[start:start + max_record_bytes + 2]`` is looked at
    for the record itself, so the outcome never depends on how the file was
    cut into blocks.
    """
    limit = start + max_record_bytes + 2
    vend = min(n, limit)
    vfinal = final and n <= limit
    exhausted = not vfinal and vend == limit

    # Shortcut for a line where no field starts with a quote (e.g. a literal 12" TV):
    # the record is that line, split on commas.
    newline = buf.find(b"\n", start, vend)
    line_end = newline if newline >= 0 else (vend if vfinal else -1)
    if line_end >= 0 and buf[start : start + 1] != b'"' and buf.find(b',"', start, line_end) < 0:
        content_end = line_end - 1 if line_end > start and buf[line_end - 1] == _CR else line_end
        next_pos = line_end + 1 if newline >= 0 else line_end
        if content_end == start:
            return _Scan(_BLANK, next_pos=next_pos, content_end=content_end)
        if content_end - start > max_record_bytes:
            return _too_long(buf, start, n, final, max_record_bytes)
        return _Scan(
            _RECORD,
            next_pos=next_pos,
            content_end=content_end,
            fields=buf[start:content_end].split(b","),
        )

    def line_error(reason: str) -> _Scan:
        newline = buf.find(b"\n", start, vend)
        if newline >= 0:
            end, next_pos = newline, newline + 1
        elif vfinal:
            end, next_pos = vend, vend
        elif exhausted:
            return _too_long(buf, start, n, final, max_record_bytes)
        else:
            return _SCAN_NEED_MORE
        if end > start and buf[end - 1] == _CR:
            end -= 1
        return _Scan(_ERROR, next_pos=next_pos, content_end=end, reason=reason)

    def more(open_field: int = 0) -> _Scan:
        if exhausted:
            return _too_long(buf, start, n, final, max_record_bytes, open_field)
        return _SCAN_NEED_MORE

    pos = start
    fields: list[bytes] = []
    while True:
        if pos < vend and buf[pos] == _QUOTE:
            field_start = pos
            chunk_start = pos + 1
            parts: list[bytes] = []
            while True:
                close = buf.find(b'"', chunk_start, vend)
                if close < 0:
                    if vfinal:
                        return line_error(
                            f"{REASON_UNCLOSED_QUOTE}: field {len(fields) + 1} opens a quote "
                            "that is never closed before the end of the file"
                        )
                    return more(len(fields) + 1)
                if close + 1 < vend:
                    if buf[close + 1] == _QUOTE:
                        parts.append(buf[chunk_start : close + 1])
                        chunk_start = close + 2
                        continue
                elif not vfinal:
                    return more()
                parts.append(buf[chunk_start:close])
                pos = close + 1
                break
            fields.append(parts[0] if len(parts) == 1 else b"".join(parts))
            if pos >= vend:
                content_end = next_pos = pos
                break
            char = buf[pos]
            if char == _COMMA:
                pos += 1
                continue
            if char == _NL:
                content_end, next_pos = pos, pos + 1
                break
            if char == _CR:
                if pos + 1 < vend:
                    if buf[pos + 1] == _NL:
                        content_end, next_pos = pos, pos + 2
                        break
                elif vfinal:
                    content_end, next_pos = pos, pos + 1
                    break
                else:
                    return more()
            if buf.find(b"\n", field_start, pos) >= 0:
                # The quote opened on this line "closes" on a later line, followed by text:
                # most likely this line lacks its closing quote.
                return line_error(
                    f"{REASON_UNCLOSED_QUOTE}: field {len(fields)} opens a quote that is not "
                    "closed on this line, and the next quote (on a later line) is followed by text"
                )
            return line_error(
                f"{REASON_MALFORMED_QUOTING}: text after the closing quote of field {len(fields)} "
                "(a quoted field must be followed by a comma or the end of the line)"
            )
        match = _UNQUOTED_FIELD.match(buf, pos, vend)
        stop = match.end() if match is not None else pos
        if stop < vend:
            if buf[stop] == _COMMA:
                fields.append(buf[pos:stop])
                pos = stop + 1
                continue
            next_pos = stop + 1
        elif vfinal:
            next_pos = stop
        else:
            return more()
        end = stop
        if end > pos and buf[end - 1] == _CR:
            end -= 1
        fields.append(buf[pos:end])
        content_end = end
        break
    if content_end == start:
        return _Scan(_BLANK, next_pos=next_pos, content_end=content_end)
    if content_end - start > max_record_bytes:
        return _too_long(buf, start, n, final, max_record_bytes)
    return _Scan(_RECORD, next_pos=next_pos, content_end=content_end, fields=fields)


# --------------------------------------------------------------------------- vectorized framing


class _Block:
    """Byte-level analysis of one buffer: whole records plus maybe a trailing partial one.

    The buffer always starts at the start of a physical line.
    """

    def __init__(self, buf: bytes, final: bool, max_record_bytes: int) -> None:
        self.buf = buf
        self.n = n = len(buf)
        self.final = final
        self.max_record_bytes = max_record_bytes
        arr = np.frombuffer(buf, dtype=np.uint8)
        self.arr: ByteArray = arr
        # Scanned in cache-sized slices: about 1.5x faster than whole-block arrays.
        if buf.find(b'"') < 0:
            delims: list[IntArray] = [np.zeros(0, np.int64)]
            is_nl: list[BoolArray] = [np.zeros(0, np.bool_)]
            for lo in range(0, n, _SCAN_SLICE):
                piece = arr[lo : lo + _SCAN_SLICE]
                newline = piece == _NL
                found = np.flatnonzero(newline | (piece == _COMMA))
                is_nl.append(newline[found])
                delims.append(found + lo)
            self.delims: IntArray = np.concatenate(delims)
            self.delim_is_nl: BoolArray = np.concatenate(is_nl)
            self.quotes: IntArray = np.zeros(0, np.int64)
        else:
            self._scan_with_quotes(arr, n)
        self.newlines: IntArray = self.delims[self.delim_is_nl]
        self._interpretations: dict[int, _Interpretation] = {}

    def _scan_with_quotes(self, arr: ByteArray, n: int) -> None:
        """Find delimiters and quotes, the quote parity before each delimiter, and
        whether each quote is well placed as an opening / as a closing quote."""
        delims: list[IntArray] = [np.zeros(0, np.int64)]
        is_nl: list[BoolArray] = [np.zeros(0, np.bool_)]
        parity: list[npt.NDArray[np.int8]] = [np.zeros(0, np.int8)]
        quotes: list[IntArray] = [np.zeros(0, np.int64)]
        opens_ok: list[BoolArray] = [np.zeros(0, np.bool_)]
        closes_ok: list[BoolArray] = [np.zeros(0, np.bool_)]
        quotes_so_far = 0
        for lo in range(0, n, _SCAN_SLICE):
            hi = min(lo + _SCAN_SLICE, n)
            piece = arr[lo:hi]
            found = np.flatnonzero((piece == _NL) | (piece == _COMMA) | (piece == _QUOTE))
            chars = piece[found]
            is_quote = chars == _QUOTE
            is_delim = ~is_quote
            delims.append(found[is_delim] + lo)
            is_nl.append(chars[is_delim] == _NL)
            before = np.cumsum(is_quote, dtype=np.int64)[is_delim] + quotes_so_far
            parity.append((before & 1).astype(np.int8))
            here = found[is_quote] + lo
            quotes_so_far += here.size
            quotes.append(here)
            # bytes around each quote, from a small (cache-hot) window of the block
            window_lo = max(lo - 1, 0)
            window = arr[window_lo : min(hi + 2, n)]
            rel = here - window_lo
            last = window.size - 1
            prev = window[np.maximum(rel - 1, 0)]
            nxt = window[np.minimum(rel + 1, last)]
            nxt2 = window[np.minimum(rel + 2, last)]
            opens_ok.append((here == 0) | (prev == _COMMA) | (prev == _NL) | (prev == _QUOTE))
            closes_ok.append(
                (here + 1 >= n)
                | (nxt == _COMMA)
                | (nxt == _NL)
                | (nxt == _QUOTE)
                | ((nxt == _CR) & ((here + 2 >= n) | (nxt2 == _NL)))
            )
        self.delims = np.concatenate(delims)
        self.delim_is_nl = np.concatenate(is_nl)
        self.delim_parity: npt.NDArray[np.int8] = np.concatenate(parity)
        self.quotes = np.concatenate(quotes)
        self.quote_opens_ok: BoolArray = np.concatenate(opens_ok)
        self.quote_closes_ok: BoolArray = np.concatenate(closes_ok)

    def interpretation(self, parity: int) -> _Interpretation:
        found = self._interpretations.get(parity)
        if found is None:
            found = self._interpretations[parity] = _Interpretation(self, parity)
        return found


class _Interpretation:
    """Record and field framing of a block if quote number ``k`` opens a quoted
    field exactly when ``k % 2 == parity`` (parity 1 is used after the exact
    parser consumed an odd number of quotes, e.g. a literal ``12" TV``)."""

    def __init__(self, block: _Block, parity: int) -> None:
        arr, n = block.arr, block.n
        if block.quotes.size == 0:
            delims, is_nl = block.delims, block.delim_is_nl
            term_rank = np.arange(block.newlines.size, dtype=np.int64)
        else:
            keep = block.delim_parity == parity
            delims, is_nl = block.delims[keep], block.delim_is_nl[keep]
            term_rank = (np.cumsum(block.delim_is_nl) - 1)[keep][is_nl]
        term_idx = np.flatnonzero(is_nl)
        term = delims[term_idx]
        starts = np.empty(term.size + 1, dtype=np.int64)
        starts[0] = 0
        starts[1:] = term + 1
        trailing = int(starts[-1])
        if block.final and trailing < n:  # last record without a line terminator
            delims = np.append(delims, n)
            term_idx = np.append(term_idx, delims.size - 1)
            term = np.append(term, n)
        complete = term.size
        #: every record start, including the one of a trailing partial record
        self.starts: IntArray = starts
        self.delims: IntArray = delims
        self.complete: int = complete
        self.end_of_complete: int = n if complete == starts.size else trailing
        record_starts = starts[:complete]
        has_cr = (term > record_starts) & (arr[np.maximum(term - 1, 0)] == _CR)
        self.content_ends: IntArray = term - has_cr
        first = np.empty(complete, dtype=np.int64)
        if complete:
            first[0] = 0
            first[1:] = term_idx[:-1] + 1
        self.first_delim: IntArray = first
        self.field_counts: IntArray = term_idx - first + 1
        line_offsets = np.empty(term_rank.size + 1, dtype=np.int64)
        line_offsets[0] = 0
        line_offsets[1:] = term_rank + 1
        #: number of '\n' of the block before each complete record
        self.line_offsets: IntArray = line_offsets[:complete]

        problems: list[IntArray] = []
        if block.quotes.size:
            opening = (np.arange(block.quotes.size) & 1) == parity
            bad = np.where(opening, ~block.quote_opens_ok, ~block.quote_closes_ok)
            if block.final and opening[-1]:
                bad[-1] = True  # opened and never closed before the end of the file
            problems.append(block.quotes[bad])
        too_long = (self.content_ends - record_starts) > block.max_record_bytes
        if too_long.any():
            problems.append(record_starts[too_long])
        if not block.final and n - trailing >= block.max_record_bytes + 2:
            problems.append(np.array([trailing], dtype=np.int64))
        #: sorted positions where this framing cannot be trusted
        self.problems: IntArray = (
            np.unique(np.concatenate(problems)) if problems else np.zeros(0, np.int64)
        )


@dataclass(slots=True)
class _Framing:
    """How a block splits into records: vectorized ranges and exact-parser results."""

    consumed: int
    skip_rest_of_line: bool
    segments: dict[int, list[tuple[int, int]]]
    py_starts: list[int]
    py_ends: list[int]
    py_fields: list[list[bytes]]
    err_starts: list[int]
    err_ends: list[int]
    err_reasons: list[str]


def _frame_block(block: _Block) -> _Framing:
    """Split the block into records: vectorized framing up to each problem position,
    exact parser for the record at the problem, then vectorized again."""
    buf, n = block.buf, block.n
    framing = _Framing(0, False, {0: [], 1: []}, [], [], [], [], [], [])
    interp = block.interpretation(0)
    if interp.problems.size == 0:  # the common case: no per-record work at all
        framing.segments[0].append((0, interp.complete))
        framing.consumed = interp.end_of_complete
        return framing
    # Python lists + bisect: much cheaper than numpy calls for one position at a time.
    quotes = block.quotes.tolist()
    lists: dict[int, tuple[list[int], list[int]]] = {}
    pos = 0
    parity = 0
    while True:
        interp = block.interpretation(parity)
        if parity not in lists:
            lists[parity] = (interp.starts.tolist(), interp.problems.tolist())
        starts, problems = lists[parity]
        first = bisect_left(starts, pos, 0, interp.complete)
        k = bisect_left(problems, pos)
        if k == len(problems):
            framing.segments[parity].append((first, interp.complete))
            framing.consumed = interp.end_of_complete
            return framing
        record = bisect_right(starts, problems[k]) - 1
        record_start = starts[record]
        framing.segments[parity].append((first, record))
        scan = _scan_record(buf, record_start, n, block.final, block.max_record_bytes)
        if scan.kind == _NEED_MORE:
            framing.consumed = record_start
            return framing
        if scan.kind == _RECORD:
            framing.py_starts.append(record_start)
            framing.py_ends.append(scan.content_end)
            framing.py_fields.append(scan.fields)
        elif scan.kind == _ERROR:
            framing.err_starts.append(record_start)
            framing.err_ends.append(scan.content_end)
            framing.err_reasons.append(scan.reason)
            if scan.next_pos < 0:
                framing.consumed = n
                framing.skip_rest_of_line = True
                return framing
        pos = scan.next_pos
        if pos >= n:
            framing.consumed = n
            return framing
        parity = bisect_left(quotes, pos) & 1


# --------------------------------------------------------------------------- chunk building


@dataclass(slots=True)
class _Layout:
    """Where the required columns are in each record."""

    n_columns: int
    positions: tuple[int, ...]  # index of id, amount, wording in a record


@dataclass(slots=True)
class _FastPart:
    """Records framed vectorized under one interpretation (all sorted by start)."""

    starts: IntArray
    ends: IntArray
    counts: IntArray
    line_offsets: IntArray
    field_starts: list[IntArray]  # per required column, for records with the right count
    field_ends: list[IntArray]


def _ranges_to_indices(ranges: list[tuple[int, int]]) -> IntArray | slice:
    """Concatenate ``arange(lo, hi)`` for all ranges, vectorized (a slice for one range)."""
    if len(ranges) == 1:
        return slice(ranges[0][0], ranges[0][1])
    lo = np.fromiter((r[0] for r in ranges), dtype=np.int64, count=len(ranges))
    hi = np.fromiter((r[1] for r in ranges), dtype=np.int64, count=len(ranges))
    lengths = hi - lo
    keep = lengths > 0
    lo, lengths = lo[keep], lengths[keep]
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, np.int64)
    offsets = np.cumsum(lengths) - lengths
    return np.repeat(lo - offsets, lengths) + np.arange(total, dtype=np.int64)


def _fast_part(interp: _Interpretation, idx: IntArray | slice, layout: _Layout) -> _FastPart:
    starts = interp.starts[idx]
    ends = interp.content_ends[idx]
    counts = interp.field_counts[idx]
    lines = interp.line_offsets[idx]
    first = interp.first_delim[idx]
    nonblank = ends > starts
    if not nonblank.all():
        starts, ends, counts = starts[nonblank], ends[nonblank], counts[nonblank]
        lines, first = lines[nonblank], first[nonblank]
    ok = counts == layout.n_columns
    all_ok = bool(ok.all())
    ok_first = first if all_ok else first[ok]
    ok_starts = starts if all_ok else starts[ok]
    ok_ends = ends if all_ok else ends[ok]
    delims = interp.delims
    last = layout.n_columns - 1
    field_starts = [
        ok_starts if c == 0 else delims[ok_first + (c - 1)] + 1 for c in layout.positions
    ]
    field_ends = [ok_ends if c == last else delims[ok_first + c] for c in layout.positions]
    return _FastPart(starts, ends, counts, lines, field_starts, field_ends)


def _gather(buffer: pa.Buffer, starts: IntArray, ends: IntArray) -> pa.Array:
    """Binary array of ``buffer[starts[i]:ends[i]]``; slices must be increasing and disjoint."""
    count = starts.size
    if count == 0:
        return pa.array([], pa.large_binary())
    offsets = np.empty(2 * count, dtype=np.int64)
    offsets[0::2] = starts
    offsets[1::2] = ends
    interleaved = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(), 2 * count - 1, [None, pa.py_buffer(offsets), buffer]
    )
    return interleaved.take(pa.array(np.arange(0, 2 * count - 1, 2, dtype=np.int64)))


def _unquoted_column(
    block: _Block, buffer: pa.Buffer, starts: IntArray, ends: IntArray
) -> pa.Array:
    """Cut fields out of the block and undo RFC 4180 quoting (known to be well formed)."""
    if block.quotes.size == 0 or starts.size == 0:
        return _gather(buffer, starts, ends)
    quoted = (ends > starts) & (block.arr[np.minimum(starts, block.n - 1)] == _QUOTE)
    if not quoted.any():
        return _gather(buffer, starts, ends)
    starts = starts + quoted
    ends = ends - quoted
    column = _gather(buffer, starts, ends)
    escaped = (np.searchsorted(block.quotes, ends) - np.searchsorted(block.quotes, starts)) > 0
    if escaped.any():
        mask = pa.array(escaped)
        replaced = pc.replace_substring(column.filter(mask), b'""', b'"')
        column = pc.replace_with_mask(column, mask, replaced)
    return column


def _first_invalid_utf8(raw: bytes) -> str | None:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        byte = raw[exc.start]
        return f"{REASON_INVALID_UTF8}: byte 0x{byte:02x} at offset {exc.start} of the record"
    return None


def _invalid_utf8_records(
    block: _Block, consumed: int, rec_starts: IntArray, rec_ends: IntArray
) -> dict[int, str]:
    """Records (index -> reason) whose text is not valid UTF-8.

    The consumed part of the block is validated at once with pyarrow (records
    are cut at ASCII bytes, so a valid block has only valid records); only if
    that fails are the records holding non-ASCII bytes decoded one by one.
    """
    if consumed == 0 or rec_starts.size == 0:
        return {}
    whole = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        1,
        [None, pa.py_buffer(np.array([0, consumed], dtype=np.int64)), pa.py_buffer(block.buf)],
    )
    try:
        whole.cast(pa.large_string())
    except pa.ArrowInvalid:
        pass
    else:
        return {}
    high = np.flatnonzero(block.arr[:consumed] >= 0x80)
    order = np.argsort(rec_starts, kind="stable")
    hit = np.unique(np.searchsorted(rec_starts[order], high, side="right") - 1)
    found: dict[int, str] = {}
    for j in hit[hit >= 0].tolist():
        i = int(order[j])
        problem = _first_invalid_utf8(block.buf[int(rec_starts[i]) : int(rec_ends[i])])
        if problem is not None:
            found[i] = problem
    return found


def _concat(arrays: list[pa.Array], type_: pa.DataType) -> pa.Array:
    if not arrays:
        return pa.array([], type_)
    return arrays[0] if len(arrays) == 1 else pa.concat_arrays(arrays)


def _build_chunk(block: _Block, framing: _Framing, base_line: int, layout: _Layout) -> ParsedChunk:
    """Validate the records framed by :func:`_frame_block` and build the chunk."""
    buf = block.buf
    n_cols = len(layout.positions)
    parts: list[_FastPart] = []
    for parity, ranges in framing.segments.items():
        if ranges:
            part = _fast_part(block.interpretation(parity), _ranges_to_indices(ranges), layout)
            if part.starts.size:
                parts.append(part)

    # ---- all records: the vectorized parts, then those of the exact parser
    py_count = len(framing.py_starts)
    rec_starts = np.concatenate(
        [p.starts for p in parts] + [np.asarray(framing.py_starts, np.int64)]
    )
    rec_ends = np.concatenate([p.ends for p in parts] + [np.asarray(framing.py_ends, np.int64)])
    py_counts = np.fromiter((len(f) for f in framing.py_fields), dtype=np.int64, count=py_count)
    rec_counts = np.concatenate([p.counts for p in parts] + [py_counts])
    py_lines = base_line + np.searchsorted(block.newlines, np.asarray(framing.py_starts, np.int64))
    rec_lines = np.concatenate([base_line + p.line_offsets for p in parts] + [py_lines])
    n_fast = rec_starts.size - py_count
    count_ok = rec_counts == layout.n_columns

    bad_utf8 = _invalid_utf8_records(block, framing.consumed, rec_starts, rec_ends)
    rej_idx: list[int] = list(bad_utf8)
    rej_reason: list[str] = list(bad_utf8.values())
    for i in np.flatnonzero(~count_ok).tolist():
        if i not in bad_utf8:
            rej_idx.append(i)
            rej_reason.append(
                f"{REASON_WRONG_FIELD_COUNT}: expected {layout.n_columns}, got {int(rec_counts[i])}"
            )

    # ---- candidates: right field count and valid UTF-8
    fast_cand = np.flatnonzero(count_ok[:n_fast])
    none = [np.zeros(0, np.int64)]
    fs = [np.concatenate([p.field_starts[c] for p in parts] or none) for c in range(n_cols)]
    fe = [np.concatenate([p.field_ends[c] for p in parts] or none) for c in range(n_cols)]
    part_bounds = np.cumsum([0] + [p.field_starts[0].size for p in parts])
    if bad_utf8:
        keep = np.isin(fast_cand, np.fromiter(bad_utf8, dtype=np.int64), invert=True)
        fast_cand = fast_cand[keep]
        fs = [x[keep] for x in fs]
        fe = [x[keep] for x in fe]
        kept_before = np.concatenate([[0], np.cumsum(keep)])
        part_bounds = kept_before[part_bounds]
    py_cand = [i for i in range(n_fast, rec_starts.size) if count_ok[i] and i not in bad_utf8]
    py_values = [
        pa.array(
            [framing.py_fields[i - n_fast][col] for i in py_cand], pa.large_binary()
        ).view(pa.large_string())
        for col in layout.positions
    ]
    buffer = pa.py_buffer(buf)

    def fast_text(col: int, rows: IntArray) -> pa.Array:
        """Unquoted text of column ``col`` for candidate rows (sorted indices)."""
        pieces = []
        for lo, hi in zip(part_bounds[:-1], part_bounds[1:]):
            sub = rows[(rows >= lo) & (rows < hi)] if len(parts) > 1 else rows
            if sub.size:
                pieces.append(_unquoted_column(block, buffer, fs[col][sub], fe[col][sub]))
        return _concat(pieces, pa.large_binary()).view(pa.large_string())

    padded = _Padded(block.arr)
    # The fast parsers look inside quoted ids and amounts too (a quoted field of the
    # vectorized framing is well formed, so it ends with a quote); escaped quotes
    # inside make them fail over to the regex parsers, on the properly unquoted text.
    num_fs, num_fe = fs[:2], fe[:2]
    if block.quotes.size:
        for col in (0, 1):
            quoted = (fe[col] > fs[col]) & (padded.chars(fs[col]) == _QUOTE)
            if quoted.any():
                num_fs[col], num_fe[col] = fs[col] + quoted, fe[col] - quoted
    ids, id_ok = _in_batches(_ids_canonical, padded, num_fs[0], num_fe[0])
    if not id_ok.all():
        redo = np.flatnonzero(~id_ok)
        ids[redo], id_ok[redo] = _ids_regex(fast_text(0, redo))
    cents, amount_ok = _in_batches(_amounts_canonical, padded, num_fs[1], num_fe[1])
    if not amount_ok.all():
        redo = np.flatnonzero(~amount_ok)
        cents[redo], amount_ok[redo] = _amounts_regex(fast_text(1, redo))
    del padded
    cand = fast_cand
    if py_cand:
        py_ids, py_id_ok = _ids_text(py_values[0])
        py_cents, py_amount_ok = _amounts_text(py_values[1])
        ids = np.concatenate([ids, py_ids])
        id_ok = np.concatenate([id_ok, py_id_ok])
        cents = np.concatenate([cents, py_cents])
        amount_ok = np.concatenate([amount_ok, py_amount_ok])
        cand = np.concatenate([fast_cand, np.asarray(py_cand, dtype=np.int64)])
    n_fast_cand = fast_cand.size
    row_ok = id_ok & amount_ok
    bad_rows = np.flatnonzero(~row_ok)
    for col, rows_of_col, explain in (
        (0, bad_rows[~id_ok[bad_rows]], _id_problem),
        (1, bad_rows[id_ok[bad_rows]], _amount_problem),
    ):
        fast_rows = rows_of_col[rows_of_col < n_fast_cand]
        py_rows = rows_of_col[rows_of_col >= n_fast_cand] - n_fast_cand
        texts = fast_text(col, fast_rows).to_pylist() if fast_rows.size else []
        if py_rows.size:
            texts += py_values[col].take(pa.array(py_rows)).to_pylist()
        rej_idx.extend(cand[rows_of_col].tolist())
        rej_reason.extend(explain(text) for text in texts)

    # ---- valid rows
    if row_ok.all():
        good_fast = np.arange(n_fast_cand, dtype=np.int64)
        good_py = py_values[2]
    else:
        good = np.flatnonzero(row_ok)
        good_fast = good[good < n_fast_cand]
        good_py = py_values[2].take(pa.array(good[good >= n_fast_cand] - n_fast_cand))
        cand, ids, cents = cand[good], ids[good], cents[good]
    wording = _concat(
        [a for a in (fast_text(2, good_fast), good_py) if len(a)], pa.large_string()
    )
    valid_lines = rec_lines[cand]
    if len(parts) + bool(py_cand) > 1 and cand.size:
        order = np.argsort(valid_lines, kind="stable")
        valid_lines, ids, cents = valid_lines[order], ids[order], cents[order]
        wording = wording.take(pa.array(order))
    valid = _valid_frame(valid_lines, ids, cents, wording)

    # ---- rejected rows
    rej_lines = [int(rec_lines[i]) for i in rej_idx]
    rej_raw = [
        buf[int(rec_starts[i]) : int(rec_ends[i])].decode("utf-8", "backslashreplace")
        for i in rej_idx
    ]
    if framing.err_starts:
        err_lines = base_line + np.searchsorted(block.newlines, np.asarray(framing.err_starts))
        rej_lines.extend(err_lines.tolist())
        rej_raw.extend(
            buf[s:e].decode("utf-8", "backslashreplace")
            for s, e in zip(framing.err_starts, framing.err_ends)
        )
        rej_reason.extend(framing.err_reasons)
    order_list = sorted(range(len(rej_lines)), key=rej_lines.__getitem__)
    rejected = _rejected_frame(
        [rej_lines[i] for i in order_list],
        [rej_raw[i] for i in order_list],
        [rej_reason[i] for i in order_list],
    )
    return ParsedChunk(valid, rejected)


# --------------------------------------------------------------------------- file level


def _layout_from_header(path: str, names: list[str]) -> _Layout:
    """Map the required columns to their positions in the header, or raise."""
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
        raise MissingColumnError(f"{path}: header has no {cols} {noun} (found: {found}). {hint}")
    return _Layout(len(keys), tuple(keys.index(col) for col in REQUIRED_COLUMNS))


def _open(path: str) -> BinaryIO:
    try:
        return open(path, "rb")  # noqa: SIM115 - closed by the caller's with-block
    except FileNotFoundError as exc:
        raise InputFileError(
            f"{path}: file not found. Check the path, or create the file first."
        ) from exc
    except IsADirectoryError as exc:
        raise InputFileError(
            f"{path}: is a directory, not a CSV file. Pass the path of the CSV file itself."
        ) from exc
    except PermissionError as exc:
        raise InputFileError(
            f"{path}: permission denied. Make the file readable by this user."
        ) from exc
    except OSError as exc:
        raise InputFileError(f"{path}: cannot open the file ({exc}). Check the path.") from exc


def _read_header(
    name: str, read: Callable[[int], bytes], chunk_bytes: int, max_record_bytes: int
) -> tuple[bytes, bool, int, _Layout]:
    """Read and check the header; return (rest of the data, at EOF, line of that rest, layout)."""
    buf = b""
    final = False
    while len(buf) < len(_BOM) and not final:
        data = read(max(chunk_bytes, len(_BOM)))
        final = not data
        buf += data
    if buf.startswith(_BOM):
        buf = buf[len(_BOM) :]
    pos = 0
    line = 1
    while True:
        if pos >= len(buf) and final:
            raise EmptyFileError(
                f"{name}: the file is empty (no header line). Write a header line with the "
                f"columns {', '.join(REQUIRED_COLUMNS)}, then one line per transaction."
            )
        scan = _scan_record(buf, pos, len(buf), final, max_record_bytes)
        if scan.kind == _NEED_MORE:
            data = read(max(chunk_bytes, len(buf)))
            final = not data
            buf += data
            continue
        if scan.kind == _BLANK:
            line += buf.count(b"\n", pos, scan.next_pos)
            pos = scan.next_pos
            continue
        if scan.kind == _ERROR:
            raise MalformedHeaderError(
                f"{name}: the header on line {line} is not valid CSV ({scan.reason}). "
                "Fix the header line: column names separated by commas, with balanced quotes."
            )
        try:
            names = [f.decode("utf-8") for f in scan.fields]
        except UnicodeDecodeError as exc:
            raise MalformedHeaderError(
                f"{name}: the header on line {line} is not valid UTF-8 ({exc.reason}). "
                "Save the file as UTF-8."
            ) from exc
        layout = _layout_from_header(name, names)
        line += buf.count(b"\n", pos, scan.next_pos)
        return buf[scan.next_pos :], final, line, layout


def read_chunks(
    path: str | os.PathLike[str],
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
) -> Iterator[ParsedChunk]:
    """Stream the file in chunks of about ``chunk_bytes``; memory is bounded by the
    chunk size and ``max_record_bytes``, not by the file size.

    File-level problems raise :class:`InputFileError` (or a subclass such as
    :class:`MissingColumnError`): the path and the header are checked by this
    call itself, before it returns the iterator, so nothing is ever yielded
    for a file with a bad header.  Chunks without any record are not yielded.
    While the caller handles a chunk, the next ones are framed and validated in
    background threads (numpy and pyarrow release the GIL), at most
    :data:`PREFETCH_CHUNKS` framed chunks ahead.
    """
    if chunk_bytes < 1:
        raise ValueError(f"chunk_bytes must be at least 1, got {chunk_bytes}")
    if max_record_bytes < 1:
        raise ValueError(f"max_record_bytes must be at least 1, got {max_record_bytes}")
    name = os.fsdecode(os.fspath(path))
    with _open(name) as stream:
        _read_header(name, _reader(name, stream), _HEADER_PROBE_BYTES, max_record_bytes)
    return _prefetch(_iter_chunks(name, chunk_bytes, max_record_bytes), PREFETCH_CHUNKS)


#: Parsed chunks kept ready ahead of the caller (memory: that many chunks more; one is enough
#: to keep the load busy).
PREFETCH_CHUNKS = 1
_DONE = object()


def _prefetch(chunks: Iterator[ParsedChunk], depth: int) -> Iterator[ParsedChunk]:
    """``chunks``, produced in a thread up to ``depth`` ahead of the caller.

    Framing a block (finding its records' bounds) is Python-driven numpy work: in a
    thread of its own it overlaps with what the caller does with the previous chunk
    (the database load, in SQLite, releases the GIL). An error of the producer is
    raised in the caller; a caller that stops early stops the producer, which closes
    ``chunks`` (its file and workers) in its own thread.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for chunk in chunks:
                if not offer(chunk):
                    return
            offer(_DONE)
        except Exception as exc:  # noqa: BLE001 - handed over to the caller, raised there
            offer(exc)
        finally:
            chunks.close()

    producer = threading.Thread(target=produce, name="ingest-framing", daemon=True)
    producer.start()
    try:
        while (item := handoff.get()) is not _DONE:
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        producer.join()


def _reader(name: str, stream: BinaryIO) -> Callable[[int], bytes]:
    """``stream.read`` turning OS errors into :class:`InputFileError`."""

    def read(size: int) -> bytes:
        try:
            return stream.read(size)
        except IsADirectoryError as exc:
            raise InputFileError(
                f"{name}: is a directory, not a CSV file. Pass the path of the CSV file itself."
            ) from exc
        except OSError as exc:
            raise InputFileError(f"{name}: read error ({exc}). Check the file and retry.") from exc

    return read


def _iter_chunks(name: str, chunk_bytes: int, max_record_bytes: int) -> Iterator[ParsedChunk]:
    """The generator behind :func:`read_chunks`."""
    with _open(name) as stream:
        read = _reader(name, stream)
        buf, final, base_line, layout = _read_header(name, read, chunk_bytes, max_record_bytes)
        logger.info(
            "%s: header OK (%d columns; id, amount, wording are columns %s)",
            name, layout.n_columns, ", ".join(str(p + 1) for p in layout.positions),
        )
        totals = [0, 0]

        def finish(chunk: ParsedChunk) -> ParsedChunk:
            totals[0] += len(chunk.valid)
            totals[1] += len(chunk.rejected)
            logger.debug(
                "%s: chunk with %d valid and %d rejected rows",
                name, len(chunk.valid), len(chunk.rejected),
            )
            return chunk

        with ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ingest") as pool:
            pending: deque[Future[ParsedChunk]] = deque()
            skipping = False
            while True:
                if buf and not skipping:
                    block = _Block(buf, final, max_record_bytes)
                    framing = _frame_block(block)
                    if framing.consumed or framing.err_starts:
                        while len(pending) >= _WORKERS:
                            chunk = pending.popleft().result()
                            if chunk.rows_read:
                                yield finish(chunk)
                        pending.append(pool.submit(_build_chunk, block, framing, base_line, layout))
                    base_line += int(np.searchsorted(block.newlines, framing.consumed))
                    del block
                    if framing.skip_rest_of_line:
                        skipping = True
                        buf = b""
                    else:
                        buf = buf[framing.consumed :]
                if final:
                    break
                data = read(max(chunk_bytes, len(buf)))
                if not data:
                    final = True
                elif skipping:
                    newline = data.find(b"\n")
                    if newline < 0:
                        continue
                    data = data[newline + 1 :]
                    base_line += 1
                    skipping = False
                buf = buf + data if buf else data
            while pending:
                chunk = pending.popleft().result()
                if chunk.rows_read:
                    yield finish(chunk)
        logger.info("%s: %d valid rows, %d rejected rows", name, totals[0], totals[1])
