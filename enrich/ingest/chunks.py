"""From a framed block to a :class:`ParsedChunk`: check each record against the contract.

Fields are cut out of the block by pyarrow from offsets computed with numpy; ids and
amounts are parsed by :mod:`enrich.ingest.numbers` straight from the block's bytes.
UTF-8 is validated for the whole block at once, and record by record only where that
fails.  Per-row Python only runs for rejected rows.  The first rejected rows of a
block may also tell what kind of foreign file this is (:mod:`enrich.ingest.hints`).
"""
from __future__ import annotations

import heapq
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from enrich.ingest.contract import (
    bad_amount_reason,
    bad_id_reason,
    invalid_utf8_reason,
    NUL_IN_WORDING_REASON,
    undecodable_reason,
    wrong_field_count_reason,
)
from enrich.ingest.dialect import CsvDialect
from enrich.ingest.framing import BlockFraming, ByteScan, QuoteFraming
from enrich.ingest.header import ColumnLayout
from enrich.ingest.hints import FileHint, decimal_mark_hint, undecodable_rows_hint
from enrich.ingest.numbers import (
    BoolArray,
    IntArray,
    PaddedBytes,
    amount_parsers,
    canonical_ids,
    ids_by_grammar,
    in_row_batches,
    parse_amount_column,
    parse_id_column,
)
from enrich.ingest.scanning import QUOTE
from enrich.ingest.transcoding import first_undecodable, raw_text

__all__ = ["ParsedChunk", "build_chunk"]

_ID, _AMOUNT, _WORDING = 0, 1, 2  # the required columns, in ColumnLayout.positions order


@dataclass(frozen=True, eq=False)
class ParsedChunk:
    """The rows parsed from one block of the file.

    ``valid`` has the columns ``line`` (int64), ``id`` (int64),
    ``amount_cents`` (int64) and ``wording`` (pandas ``str``); ``rejected``
    has ``line`` (int64), ``raw`` (``str``) and ``reason`` (``str``).  Both use
    a RangeIndex and are sorted by line.  ``hints`` are whole sentences starting
    with the file's path.  (``eq=False``: chunks compare and
    hash by identity, since DataFrames cannot be compared with ``==``.)
    """

    valid: pd.DataFrame
    rejected: pd.DataFrame
    #: Advice about the whole file (what it looks like, which option reads it), each
    #: said once per file: on the chunk where it first applies, else empty.
    hints: tuple[str, ...] = ()

    @property
    def rows_read(self) -> int:
        """Number of records in this chunk, valid or not (blank lines excluded)."""
        return len(self.valid) + len(self.rejected)


def valid_frame(line: IntArray, ids: IntArray, cents: IntArray, wording: pa.Array) -> pd.DataFrame:
    """The ``valid`` frame of a chunk."""
    words = wording.to_pandas()
    return pd.DataFrame(
        {
            "line": np.asarray(line, dtype=np.int64),
            "id": np.asarray(ids, dtype=np.int64),
            "amount_cents": np.asarray(cents, dtype=np.int64),
            "wording": words.array if isinstance(words, pd.Series) else words,
        }
    )


def rejected_frame(line: list[int], raw: list[str], reason: list[str]) -> pd.DataFrame:
    """The ``rejected`` frame of a chunk."""
    return pd.DataFrame(
        {
            "line": np.asarray(line, dtype=np.int64),
            "raw": pd.Series(raw, dtype="str").array,
            "reason": pd.Series(reason, dtype="str").array,
        }
    )


# --------------------------------------------------------------------------- records


@dataclass(slots=True)
class _Records:
    """Every record of a block: first those framed vectorized (sorted by position),
    then those of the exact scanner (in file order).

    ``field_starts``/``field_ends`` (per required column) are the positions of the
    required fields, quotes included, of the vectorized records with the right
    field count (in the same order).
    """

    starts: IntArray
    ends: IntArray
    field_counts: IntArray
    lines: IntArray
    n_vectorized: int
    field_starts: list[IntArray]
    field_ends: list[IntArray]


def _vectorized_part(
    framing: QuoteFraming, ranges: list[tuple[int, int]], layout: ColumnLayout, first_line: int
) -> _Records:
    """The non-blank records of ``framing`` numbered in ``ranges`` (all vectorized)."""
    index = _ranges_to_indices(ranges)
    starts, ends = framing.record_starts[index], framing.content_ends[index]
    counts, newlines = framing.field_counts[index], framing.newlines_before[index]
    first = framing.first_delimiter[index]
    nonblank = ends > starts
    if not nonblank.all():
        starts, ends, counts = starts[nonblank], ends[nonblank], counts[nonblank]
        newlines, first = newlines[nonblank], first[nonblank]
    right_count = counts == layout.n_columns
    if not right_count.all():
        first, ok_starts, ok_ends = first[right_count], starts[right_count], ends[right_count]
    else:
        ok_starts, ok_ends = starts, ends
    last = layout.n_columns - 1
    delimiters = framing.delimiters
    field_starts = [ok_starts if c == 0 else delimiters[first + (c - 1)] + 1
                    for c in layout.positions]
    field_ends = [ok_ends if c == last else delimiters[first + c] for c in layout.positions]
    return _Records(starts, ends, counts, first_line + newlines, starts.size, field_starts, field_ends)


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


def _merged(parts: list[_Records], n_columns: int) -> _Records:
    """The vectorized records of both quote parities, in file order (rare: a literal quote
    made the framing switch parity)."""
    starts, ends, counts, lines = (np.concatenate([getattr(p, name) for p in parts])
                                   for name in ("starts", "ends", "field_counts", "lines"))
    order = np.argsort(starts, kind="stable")
    field_order = np.argsort(starts[counts == n_columns], kind="stable")
    field_starts = [np.concatenate(columns)[field_order]
                    for columns in zip(*(p.field_starts for p in parts), strict=True)]
    field_ends = [np.concatenate(columns)[field_order]
                  for columns in zip(*(p.field_ends for p in parts), strict=True)]
    return _Records(starts[order], ends[order], counts[order], lines[order], starts.size,
                    field_starts, field_ends)


def _collect_records(
    scan: ByteScan, framing: BlockFraming, first_line: int, layout: ColumnLayout
) -> _Records:
    """The block's records: vectorized ones then those of the exact scanner."""
    parts = [_vectorized_part(scan.framing(parity), ranges, layout, first_line)
             for parity, ranges in framing.vectorized.items() if ranges]
    if len(parts) == 1:
        records = parts[0]
    elif parts:
        records = _merged(parts, layout.n_columns)
    else:
        nothing = np.zeros(0, np.int64)
        records = _Records(nothing, nothing, nothing, nothing, 0,
                           [nothing] * len(layout.positions), [nothing] * len(layout.positions))
    if not framing.scanned_starts:
        return records
    scanned_starts = np.asarray(framing.scanned_starts, np.int64)
    scanned_counts = np.fromiter((len(fields) for fields in framing.scanned_fields),
                                 dtype=np.int64, count=len(framing.scanned_fields))
    scanned_lines = first_line + np.searchsorted(scan.newlines, scanned_starts)
    return _Records(
        starts=np.concatenate([records.starts, scanned_starts]),
        ends=np.concatenate([records.ends, np.asarray(framing.scanned_ends, np.int64)]),
        field_counts=np.concatenate([records.field_counts, scanned_counts]),
        lines=np.concatenate([records.lines, scanned_lines]),
        n_vectorized=records.n_vectorized,
        field_starts=records.field_starts,
        field_ends=records.field_ends,
    )


def _invalid_utf8_records(
    scan: ByteScan, consumed: int, records: _Records, record_problem: Callable[[bytes], str | None]
) -> dict[int, str]:
    """Records (index -> reason) whose text is not valid UTF-8 (``record_problem`` says why).

    The consumed part of the block is validated at once with pyarrow (records
    are cut at ASCII bytes, so a valid block has only valid records); only if
    that fails are the records holding non-ASCII bytes decoded one by one.
    """
    if consumed == 0 or records.starts.size == 0:
        return {}
    whole = pa.LargeBinaryArray.from_buffers(
        pa.large_binary(),
        1,
        [None, pa.py_buffer(np.array([0, consumed], dtype=np.int64)), pa.py_buffer(scan.buf)],
    )
    try:
        whole.cast(pa.large_string())
    except pa.ArrowInvalid:
        pass
    else:
        return {}
    high = np.flatnonzero(scan.bytes[:consumed] >= 0x80)
    order = np.argsort(records.starts, kind="stable")
    hit = np.unique(np.searchsorted(records.starts[order], high, side="right") - 1)
    found: dict[int, str] = {}
    for j in hit[hit >= 0].tolist():
        i = int(order[j])
        reason = record_problem(scan.buf[int(records.starts[i]) : int(records.ends[i])])
        if reason is not None:
            found[i] = reason
    return found


# --------------------------------------------------------------------------- field values


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


@dataclass(slots=True)
class _Candidates:
    """Records with the right field count and valid UTF-8, whose values are checked.

    The first ``n_vectorized`` were framed vectorized: their required fields are
    positions in the block, quotes included (``field_starts``/``field_ends``, per
    required column).  The others were scanned exactly: their required fields are
    already unquoted (``scanned_values``, per required column).
    """

    scan: ByteScan
    buffer: pa.Buffer
    record_index: IntArray  # candidate -> index in _Records
    field_starts: list[IntArray]
    field_ends: list[IntArray]
    scanned_values: list[pa.Array]

    @property
    def n_vectorized(self) -> int:
        return self.field_starts[0].size

    def unquoted_text(self, column: int, rows: IntArray) -> pa.Array:
        """Text of a required column for vectorized candidates ``rows`` (sorted), unquoted."""
        starts, ends = self.field_starts[column][rows], self.field_ends[column][rows]
        scan = self.scan
        if scan.quotes.size == 0 or starts.size == 0:
            return _gather(self.buffer, starts, ends).view(pa.large_string())
        quoted = (ends > starts) & (scan.bytes[np.minimum(starts, scan.size - 1)] == QUOTE)
        if not quoted.any():
            return _gather(self.buffer, starts, ends).view(pa.large_string())
        starts, ends = starts + quoted, ends - quoted
        text = _gather(self.buffer, starts, ends)
        escaped = (np.searchsorted(scan.quotes, ends) - np.searchsorted(scan.quotes, starts)) > 0
        if escaped.any():
            mask = pa.array(escaped)
            text = pc.replace_with_mask(text, mask, pc.replace_substring(text.filter(mask), b'""', b'"'))
        return text.view(pa.large_string())

    def texts(self, column: int, rows: IntArray) -> list[str]:
        """Text of a required column for any candidates ``rows`` (sorted), as Python strings."""
        vectorized = rows[rows < self.n_vectorized]
        scanned = rows[rows >= self.n_vectorized] - self.n_vectorized
        found: list[str] = self.unquoted_text(column, vectorized).to_pylist() if vectorized.size else []
        if scanned.size:
            found += self.scanned_values[column].take(pa.array(scanned)).to_pylist()
        return found

    def number_positions(self, column: int, padded: PaddedBytes) -> tuple[IntArray, IntArray]:
        """Positions of a number column's vectorized fields, inside their quotes if quoted.

        A quoted field of the vectorized framing is well formed, so it ends with a
        quote; escaped quotes inside make the fast parsers fail over to the grammar,
        which gets the properly unquoted text."""
        starts, ends = self.field_starts[column], self.field_ends[column]
        if self.scan.quotes.size:
            quoted = (ends > starts) & (padded.chars(starts) == QUOTE)
            if quoted.any():
                return starts + quoted, ends - quoted
        return starts, ends


def _candidates(
    scan: ByteScan, framing: BlockFraming, records: _Records, layout: ColumnLayout,
    rejected_records: dict[int, str],
) -> _Candidates:
    """The records not rejected yet (right field count, valid UTF-8)."""
    right_count = records.field_counts == layout.n_columns
    vectorized = np.flatnonzero(right_count[: records.n_vectorized])
    field_starts, field_ends = records.field_starts, records.field_ends
    if rejected_records:
        keep = np.isin(vectorized, np.fromiter(rejected_records, dtype=np.int64), invert=True)
        vectorized = vectorized[keep]
        field_starts = [x[keep] for x in field_starts]
        field_ends = [x[keep] for x in field_ends]
    scanned = [i for i in range(records.n_vectorized, records.starts.size)
               if right_count[i] and i not in rejected_records]
    scanned_values = [
        pa.array([framing.scanned_fields[i - records.n_vectorized][column] for i in scanned],
                 pa.large_binary()).view(pa.large_string())
        for column in layout.positions
    ]
    return _Candidates(
        scan=scan,
        buffer=pa.py_buffer(scan.buf),
        record_index=np.concatenate([vectorized, np.asarray(scanned, dtype=np.int64)]),
        field_starts=field_starts,
        field_ends=field_ends,
        scanned_values=scanned_values,
    )


def _parse_numbers(
    candidates: _Candidates, decimal_comma: bool
) -> tuple[IntArray, BoolArray, IntArray, BoolArray]:
    """(ids, id ok, cents, amount ok) of every candidate."""
    padded = PaddedBytes(candidates.scan.bytes)
    found = []
    for column, (fast, by_grammar) in ((_ID, (canonical_ids, ids_by_grammar)),
                                       (_AMOUNT, amount_parsers(decimal_comma))):
        values, ok = in_row_batches(fast, padded, *candidates.number_positions(column, padded))
        if not ok.all():
            redo = np.flatnonzero(~ok)
            values[redo], ok[redo] = by_grammar(candidates.unquoted_text(column, redo))
        found.append((values, ok))
    (ids, id_ok), (cents, amount_ok) = found
    if len(candidates.scanned_values[_ID]):
        scanned_ids, scanned_id_ok = parse_id_column(candidates.scanned_values[_ID])
        scanned_cents, scanned_amount_ok = parse_amount_column(
            candidates.scanned_values[_AMOUNT], decimal_comma
        )
        ids, id_ok = np.concatenate([ids, scanned_ids]), np.concatenate([id_ok, scanned_id_ok])
        cents = np.concatenate([cents, scanned_cents])
        amount_ok = np.concatenate([amount_ok, scanned_amount_ok])
    return ids, id_ok, cents, amount_ok


# --------------------------------------------------------------------------- the chunk


@dataclass(slots=True)
class _Rejections:
    """Rejected records (index in _Records) and their reasons, in any order."""

    record_index: list[int]
    reasons: list[str]

    def add(self, record_index: list[int], reasons: list[str]) -> None:
        self.record_index.extend(record_index)
        self.reasons.extend(reasons)

    def frame(self, scan: ByteScan, framing: BlockFraming, records: _Records,
              first_line: int, transcoded: bool) -> pd.DataFrame:
        """The rejected frame: these records and the lines the exact scanner rejected, by line."""
        lines = records.lines[self.record_index].tolist() if self.record_index else []
        raw = [raw_text(scan.buf[int(records.starts[i]) : int(records.ends[i])], transcoded)
               for i in self.record_index]
        reasons = list(self.reasons)
        if framing.error_starts:
            error_lines = first_line + np.searchsorted(scan.newlines, np.asarray(framing.error_starts))
            lines.extend(error_lines.tolist())
            raw.extend(raw_text(scan.buf[start:end], transcoded)
                       for start, end in zip(framing.error_starts, framing.error_ends, strict=True))
            reasons.extend(framing.error_reasons)
        order = sorted(range(len(lines)), key=lines.__getitem__)
        return rejected_frame([lines[i] for i in order], [raw[i] for i in order],
                              [reasons[i] for i in order])


def _wordings(candidates: _Candidates, good: IntArray) -> pa.Array:
    """The wordings of candidates ``good``: the vectorized ones, then the scanned ones."""
    n_vectorized = candidates.n_vectorized
    vectorized, scanned = good[good < n_vectorized], good[good >= n_vectorized] - n_vectorized
    wordings = [candidates.unquoted_text(_WORDING, vectorized)]
    if scanned.size:
        wordings.append(candidates.scanned_values[_WORDING].take(pa.array(scanned)))
    return wordings[0] if len(wordings) == 1 else pa.concat_arrays(wordings)


def _with_nul(candidates: _Candidates, good: IntArray) -> BoolArray:
    """Which of candidates ``good`` (sorted: the vectorized ones come first, as in :func:`_wordings`)
    have a NUL character in their wording (one kernel pass)."""
    return pc.match_substring(_wordings(candidates, good), "\x00").to_numpy(zero_copy_only=False)


def _valid_rows(candidates: _Candidates, records: _Records, good: IntArray,
                ids: IntArray, cents: IntArray) -> pd.DataFrame:
    """The valid frame of candidates ``good`` (sorted), whose ids and cents are given."""
    wording = _wordings(candidates, good)
    lines = records.lines[candidates.record_index[good]]
    if (good < candidates.n_vectorized).any() and (good >= candidates.n_vectorized).any():  # merge by line
        order = np.argsort(lines, kind="stable")
        lines, ids, cents, wording = lines[order], ids[order], cents[order], wording.take(pa.array(order))
    return valid_frame(lines, ids, cents, wording)


def _record_problem(dialect: CsvDialect) -> Callable[[bytes], str | None]:
    """Why a record's bytes are not valid text in the dialect's encoding (None if they are)."""
    if not dialect.transcoded:
        return invalid_utf8_reason

    def undecodable(record: bytes) -> str | None:
        found = first_undecodable(record)
        return None if found is None else undecodable_reason(*found, dialect.encoding)

    return undecodable


def _hints(
    scan: ByteScan, records: _Records, not_text: dict[int, str], bad_amounts: list[tuple[int, str]],
    dialect: CsvDialect,
) -> list[FileHint]:
    """Advice from the first rejected rows: records not valid in the encoding, and
    ``bad_amounts`` (line, text) written with the other decimal mark."""
    found: list[FileHint] = []
    if not_text:
        first = min(not_text, key=lambda i: int(records.lines[i]))
        record = scan.buf[int(records.starts[first]) : int(records.ends[first])]
        found.append(undecodable_rows_hint(int(records.lines[first]), record, dialect))
    for line, text in heapq.nsmallest(20, bad_amounts):
        hint = decimal_mark_hint(line, text, dialect)
        if hint is not None:
            found.append(hint)
            break
    return found


def build_chunk(
    scan: ByteScan, framing: BlockFraming, first_line: int, layout: ColumnLayout,
    dialect: CsvDialect,
) -> tuple[ParsedChunk, list[FileHint]]:
    """Check the records framed by :func:`enrich.ingest.framing.frame_block` and build the
    chunk; ``first_line`` is the line number of the block's first byte.  Also returns the
    advice the chunk's rejected rows give about the whole file."""
    records = _collect_records(scan, framing, first_line, layout)
    not_text = _invalid_utf8_records(scan, framing.consumed, records, _record_problem(dialect))
    rejections = _Rejections(list(not_text), list(not_text.values()))
    wrong_count = [i for i in np.flatnonzero(records.field_counts != layout.n_columns).tolist()
                   if i not in not_text]
    rejections.add(wrong_count, [wrong_field_count_reason(layout.n_columns, int(records.field_counts[i]))
                                 for i in wrong_count])
    candidates = _candidates(scan, framing, records, layout, not_text)
    ids, id_ok, cents, amount_ok = _parse_numbers(candidates, dialect.decimal_comma)
    row_ok = id_ok & amount_ok
    bad = np.flatnonzero(~row_ok)
    bad_amount_rows = bad[id_ok[bad]]
    bad_amounts = candidates.texts(_AMOUNT, bad_amount_rows)
    rejections.add(candidates.record_index[bad_amount_rows].tolist(),
                   [bad_amount_reason(text, dialect.decimal_comma) for text in bad_amounts])
    bad_id_rows = bad[~id_ok[bad]]
    rejections.add(candidates.record_index[bad_id_rows].tolist(),
                   [bad_id_reason(text) for text in candidates.texts(_ID, bad_id_rows)])
    good = np.flatnonzero(row_ok)
    nul = _with_nul(candidates, good)
    if nul.any():
        rejections.add(candidates.record_index[good[nul]].tolist(), [NUL_IN_WORDING_REASON] * int(nul.sum()))
        good = good[~nul]
    valid = _valid_rows(candidates, records, good, ids[good], cents[good])
    rejected = rejections.frame(scan, framing, records, first_line, dialect.transcoded)
    amount_lines = records.lines[candidates.record_index[bad_amount_rows]].tolist()
    found = _hints(scan, records, not_text, list(zip(amount_lines, bad_amounts, strict=True)), dialect)
    return ParsedChunk(valid, rejected), found
