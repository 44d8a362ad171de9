"""Vectorized framing: which bytes of a block are records and fields.

On each block numpy finds the quote, delimiter (comma unless the dialect says
otherwise) and newline bytes.  The parity of the number of quotes before a
delimiter or newline says whether it is inside a quoted
field (RFC 4180 escaped quotes ``""`` keep the parity right).  That only holds
when quotes are well placed, which is checked vectorized too: an opening quote
must start a field and a closing quote must end one (or be doubled).  The record
around a misplaced quote, or a too-long record, is handed to the exact scanner
(:func:`enrich.ingest.scanning.scan_record`) and the vectorized framing resumes
right after it, so the slow path costs one record, not one block.  After the exact
scanner consumed an odd number of quotes (a literal ``12" TV``), the framing goes
on under the other quote parity.

The block is cut after its last complete record; the rest is carried over to the
next block.
"""
from __future__ import annotations

from bisect import bisect_left, bisect_right
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from enrich.ingest.numbers import BoolArray, ByteArray, IntArray
from enrich.ingest.scanning import COMMA, CR, NEWLINE, QUOTE, ScanOutcome, scan_record

__all__ = ["BlockFraming", "ByteScan", "QuoteFraming", "frame_block"]

#: Bytes scanned per numpy call: cache-sized slices are about 1.5x faster than whole blocks.
SCAN_SLICE: Final[int] = 256 * 1024
_NO_INTS: Final[IntArray] = np.zeros(0, np.int64)
_NO_BOOLS: Final[BoolArray] = np.zeros(0, np.bool_)


class ByteScan:
    """Where the delimiters, newlines and quotes of one buffer are.

    The buffer starts at the start of a physical line and holds whole records plus
    maybe the start of one more (all of the rest of the file when ``final``).
    """

    def __init__(self, buf: bytes, final: bool, max_record_bytes: int, delimiter: int = COMMA) -> None:
        self.buf = buf
        self.size = len(buf)
        self.final = final
        self.max_record_bytes = max_record_bytes
        self.delimiter = delimiter
        self.bytes: ByteArray = np.frombuffer(buf, dtype=np.uint8)
        #: positions of the delimiters and newlines, whether each is a newline
        self.delimiters: IntArray
        self.delimiter_is_newline: BoolArray
        #: for each delimiter, the parity of the number of quotes before it
        self.quote_parity: npt.NDArray[np.int8] = np.zeros(0, np.int8)
        #: positions of the quotes; whether each could open / close a quoted field there
        self.quotes: IntArray = _NO_INTS
        self.quote_can_open: BoolArray = _NO_BOOLS
        self.quote_can_close: BoolArray = _NO_BOOLS
        if buf.find(b'"') < 0:
            self._find_delimiters()
        else:
            self._find_delimiters_and_quotes()
        self.newlines: IntArray = self.delimiters[self.delimiter_is_newline]
        self._framings: dict[int, QuoteFraming] = {}

    def _find_delimiters(self) -> None:
        positions, is_newline = [_NO_INTS], [_NO_BOOLS]
        for lo in range(0, self.size, SCAN_SLICE):
            piece = self.bytes[lo : lo + SCAN_SLICE]
            newline = piece == NEWLINE
            found = np.flatnonzero(newline | (piece == self.delimiter))
            is_newline.append(newline[found])
            positions.append(found + lo)
        self.delimiters = np.concatenate(positions)
        self.delimiter_is_newline = np.concatenate(is_newline)

    def _find_delimiters_and_quotes(self) -> None:
        slices = [_QuoteSlice.scan(self.bytes, lo, self.size, self.delimiter)
                  for lo in range(0, self.size, SCAN_SLICE)]
        quotes_before = np.cumsum([0] + [s.quotes.size for s in slices])
        self.delimiters = np.concatenate([_NO_INTS] + [s.delimiters for s in slices])
        self.delimiter_is_newline = np.concatenate([_NO_BOOLS] + [s.is_newline for s in slices])
        parities = [((s.quotes_before + before) & 1).astype(np.int8)
                     for s, before in zip(slices, quotes_before[:-1], strict=True)]
        self.quote_parity = np.concatenate([np.zeros(0, np.int8)] + parities)
        self.quotes = np.concatenate([_NO_INTS] + [s.quotes for s in slices])
        self.quote_can_open = np.concatenate([_NO_BOOLS] + [s.can_open for s in slices])
        self.quote_can_close = np.concatenate([_NO_BOOLS] + [s.can_close for s in slices])

    def framing(self, parity: int) -> QuoteFraming:
        """The framing where quote number ``k`` opens a field exactly when ``k % 2 == parity``."""
        found = self._framings.get(parity)
        if found is None:
            found = self._framings[parity] = QuoteFraming(self, parity)
        return found


@dataclass(slots=True)
class _QuoteSlice:
    """Delimiters and quotes of ``data[lo:hi]``, and the bytes around each quote."""

    delimiters: IntArray
    is_newline: BoolArray
    quotes_before: IntArray  # quotes of the slice before each delimiter
    quotes: IntArray
    can_open: BoolArray
    can_close: BoolArray

    @classmethod
    def scan(cls, data: ByteArray, lo: int, size: int, delimiter: int) -> _QuoteSlice:
        hi = min(lo + SCAN_SLICE, size)
        piece = data[lo:hi]
        found = np.flatnonzero((piece == NEWLINE) | (piece == delimiter) | (piece == QUOTE))
        chars = piece[found]
        is_quote = chars == QUOTE
        is_delimiter = ~is_quote
        quotes = found[is_quote] + lo
        # bytes around each quote, from a small (cache-hot) window of the block
        window_lo = max(lo - 1, 0)
        window = data[window_lo : min(hi + 2, size)]
        rel = quotes - window_lo
        last = window.size - 1
        before = window[np.maximum(rel - 1, 0)]
        after = window[np.minimum(rel + 1, last)]
        after2 = window[np.minimum(rel + 2, last)]
        can_open = (quotes == 0) | (before == delimiter) | (before == NEWLINE) | (before == QUOTE)
        can_close = (
            (quotes + 1 >= size) | (after == delimiter) | (after == NEWLINE) | (after == QUOTE)
            | ((after == CR) & ((quotes + 2 >= size) | (after2 == NEWLINE)))
        )
        return cls(
            delimiters=found[is_delimiter] + lo,
            is_newline=chars[is_delimiter] == NEWLINE,
            quotes_before=np.cumsum(is_quote, dtype=np.int64)[is_delimiter],
            quotes=quotes,
            can_open=can_open,
            can_close=can_close,
        )


class QuoteFraming:
    """Records and fields of a block if quote number ``k`` opens a quoted field exactly
    when ``k % 2 == parity`` (parity 1 is used after the exact scanner consumed an
    odd number of quotes, e.g. a literal ``12" TV``)."""

    def __init__(self, scan: ByteScan, parity: int) -> None:
        if scan.quotes.size == 0:
            delimiters, is_newline = scan.delimiters, scan.delimiter_is_newline
            newline_rank = np.arange(scan.newlines.size, dtype=np.int64)
        else:
            outside = scan.quote_parity == parity
            delimiters, is_newline = scan.delimiters[outside], scan.delimiter_is_newline[outside]
            newline_rank = (np.cumsum(scan.delimiter_is_newline) - 1)[outside][is_newline]
        terminator_index = np.flatnonzero(is_newline)
        terminators = delimiters[terminator_index]
        starts = np.empty(terminators.size + 1, dtype=np.int64)
        starts[0] = 0
        starts[1:] = terminators + 1
        trailing = int(starts[-1])
        if scan.final and trailing < scan.size:  # last record without a line terminator
            delimiters = np.append(delimiters, scan.size)
            terminator_index = np.append(terminator_index, delimiters.size - 1)
            terminators = np.append(terminators, scan.size)
        complete = terminators.size
        #: every record start, including the one of a trailing partial record
        self.record_starts: IntArray = starts
        #: the delimiters outside quoted fields (plus the end of a final unterminated record)
        self.delimiters: IntArray = delimiters
        #: number of complete records, and where the bytes after them start
        self.complete: int = complete
        self.end_of_complete: int = scan.size if complete == starts.size else trailing
        self._fields(scan, terminators, terminator_index, newline_rank)
        self.suspect_positions: IntArray = self._suspects(scan, parity, trailing)

    def _fields(
        self, scan: ByteScan, terminators: IntArray, terminator_index: IntArray,
        newline_rank: IntArray,
    ) -> None:
        complete = self.complete
        record_starts = self.record_starts[:complete]
        has_cr = (terminators > record_starts) & (scan.bytes[np.maximum(terminators - 1, 0)] == CR)
        #: where each complete record's content ends (its CR or LF excluded)
        self.content_ends: IntArray = terminators - has_cr
        first = np.empty(complete, dtype=np.int64)
        if complete:
            first[0] = 0
            first[1:] = terminator_index[:-1] + 1
        #: index in ``delimiters`` of each record's first delimiter, and its number of fields
        self.first_delimiter: IntArray = first
        self.field_counts: IntArray = terminator_index - first + 1
        newlines_before = np.empty(newline_rank.size + 1, dtype=np.int64)
        newlines_before[0] = 0
        newlines_before[1:] = newline_rank + 1
        #: number of newlines of the block before each complete record
        self.newlines_before: IntArray = newlines_before[:complete]

    def _suspects(self, scan: ByteScan, parity: int, trailing: int) -> IntArray:
        """Sorted positions where this framing cannot be trusted: misplaced quotes, the
        start of a too-long record, a trailing partial record already too long."""
        suspects: list[IntArray] = []
        if scan.quotes.size:
            opening = (np.arange(scan.quotes.size) & 1) == parity
            misplaced = np.where(opening, ~scan.quote_can_open, ~scan.quote_can_close)
            if scan.final and opening[-1]:
                misplaced[-1] = True  # opened and never closed before the end of the file
            suspects.append(scan.quotes[misplaced])
        starts = self.record_starts[: self.complete]
        too_long = (self.content_ends - starts) > scan.max_record_bytes
        if too_long.any():
            suspects.append(starts[too_long])
        if not scan.final and scan.size - trailing > scan.max_record_bytes + 2:  # (see _Window.at)
            suspects.append(np.array([trailing], dtype=np.int64))
        return np.unique(np.concatenate(suspects)) if suspects else _NO_INTS


@dataclass(slots=True)
class BlockFraming:
    """How a block splits into records.

    ``vectorized``: per quote parity, ranges of record numbers of that
    :class:`QuoteFraming` that hold; ``scanned_*``: records of the exact scanner
    (start, content end, unquoted fields); ``error_*``: physical lines it rejected.
    ``consumed`` bytes are done with; ``skip_rest_of_line``: the last rejected line
    goes on past the block, and the reader must drop it up to the next newline.
    """

    consumed: int = 0
    skip_rest_of_line: bool = False
    vectorized: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: {0: [], 1: []})
    scanned_starts: list[int] = field(default_factory=list)
    scanned_ends: list[int] = field(default_factory=list)
    scanned_fields: list[list[bytes]] = field(default_factory=list)
    error_starts: list[int] = field(default_factory=list)
    error_ends: list[int] = field(default_factory=list)
    error_reasons: list[str] = field(default_factory=list)


def frame_block(scan: ByteScan) -> BlockFraming:
    """Split the block into records: vectorized framing up to each suspect position,
    the exact scanner for the record there, then vectorized again."""
    framing = BlockFraming()
    first = scan.framing(0)
    if first.suspect_positions.size == 0:  # the common case: no per-record work at all
        framing.vectorized[0].append((0, first.complete))
        framing.consumed = first.end_of_complete
        return framing
    # Python lists + bisect: much cheaper than numpy calls for one position at a time.
    quotes = scan.quotes.tolist()
    as_lists: dict[int, tuple[list[int], list[int]]] = {}
    pos = parity = 0
    while True:
        quote_framing = scan.framing(parity)
        if parity not in as_lists:
            as_lists[parity] = (quote_framing.record_starts.tolist(),
                                quote_framing.suspect_positions.tolist())
        starts, suspects = as_lists[parity]
        first_record = bisect_left(starts, pos, 0, quote_framing.complete)
        k = bisect_left(suspects, pos)
        if k == len(suspects):
            framing.vectorized[parity].append((first_record, quote_framing.complete))
            framing.consumed = quote_framing.end_of_complete
            return framing
        record = bisect_right(starts, suspects[k]) - 1
        framing.vectorized[parity].append((first_record, record))
        pos = _scan_exactly(scan, starts[record], framing)
        if pos < 0:
            return framing
        parity = bisect_left(quotes, pos) & 1


def _scan_exactly(scan: ByteScan, start: int, framing: BlockFraming) -> int:
    """Scan the record at ``start`` exactly into ``framing``: where framing resumes, or -1
    when the block is done with (``framing.consumed`` set)."""
    scanned = scan_record(scan.buf, start, scan.size, scan.final, scan.max_record_bytes,
                          scan.delimiter)
    if scanned.outcome is ScanOutcome.NEED_MORE:
        framing.consumed = start
        return -1
    if scanned.outcome is ScanOutcome.RECORD:
        framing.scanned_starts.append(start)
        framing.scanned_ends.append(scanned.content_end)
        framing.scanned_fields.append(scanned.fields)
    elif scanned.outcome is ScanOutcome.ERROR:
        framing.error_starts.append(start)
        framing.error_ends.append(scanned.content_end)
        framing.error_reasons.append(scanned.reason)
        if scanned.next_pos < 0:
            framing.consumed = scan.size
            framing.skip_rest_of_line = True
            return -1
    if scanned.next_pos >= scan.size:
        framing.consumed = scan.size
        return -1
    return scanned.next_pos
