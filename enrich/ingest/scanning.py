"""The exact record scanner: one record at a time, in pure Python, by the full grammar.

It is the reference the vectorized framing (:mod:`enrich.ingest.framing`) hands over
to wherever quotes are misplaced or a record is too long, and it reads the header.

Grammar (RFC 4180, as Python's :mod:`csv` reads it): a field that *starts* with
``"`` is quoted, runs to the matching closing ``"``, may contain delimiters, CR and
LF, and writes a quote as ``""``; a ``"`` inside an unquoted field (``12" TV``) is
literal text.  The delimiter is a comma unless the dialect says otherwise.  A record
ends at LF or CRLF (one CR before the LF, or before the end of the file, is dropped).
A record whose content is empty is a blank line.

Only ``buf[start:start + max_record_bytes + 2]`` is looked at for a record, so
the outcome never depends on how the file was cut into blocks.  When the framing
of the record itself is in doubt (unclosed quote, text after a closing quote, too
long), only its first *physical line* is rejected and scanning resumes on the
next one: an unclosed quote cannot swallow the rest of the file.
"""
from __future__ import annotations

import enum
import functools
import re
from dataclasses import dataclass, field
from typing import Final

from enrich.ingest.contract import (
    REASON_MALFORMED_QUOTING,
    REASON_RECORD_TOO_LONG,
    REASON_UNCLOSED_QUOTE,
    TOO_LONG_RAW_PREVIEW_BYTES,
)

__all__ = ["ScanOutcome", "ScannedRecord", "scan_record"]

NEWLINE: Final[int] = 0x0A
CR: Final[int] = 0x0D
COMMA: Final[int] = 0x2C
QUOTE: Final[int] = 0x22


@functools.cache
def _unquoted_field_pattern(delimiter: int) -> re.Pattern[bytes]:
    return re.compile(b"[^" + re.escape(bytes((delimiter,))) + b"\n]*")


def _delimiter_words(delimiter: int) -> str:
    return {COMMA: "a comma", 0x09: "a tab"}.get(delimiter, repr(chr(delimiter)))


class ScanOutcome(enum.Enum):
    """What the scanner found at a physical line start."""

    RECORD = "record"
    BLANK = "blank"
    ERROR = "error"
    NEED_MORE = "need more"


@dataclass(slots=True)
class ScannedRecord:
    """Outcome of scanning one record.

    ``RECORD``: ``fields`` are unquoted and ``content_end`` ends the record text
    (line terminator excluded).  ``ERROR``: ``content_end`` ends the raw text to
    report and ``reason`` is set; ``next_pos == -1`` means the rejected line goes
    on past the end of the buffer.  ``next_pos`` is where the next record starts.
    """

    outcome: ScanOutcome
    next_pos: int = -1
    content_end: int = -1
    fields: list[bytes] = field(default_factory=list)
    reason: str = ""


_NEED_MORE: Final[ScannedRecord] = ScannedRecord(ScanOutcome.NEED_MORE)


@dataclass(frozen=True, slots=True)
class _RecordEnd:
    """The record ends with its content at ``content_end``; the next starts at ``next_pos``."""

    content_end: int
    next_pos: int


@dataclass(frozen=True, slots=True)
class _Window:
    """The bytes a record starting at ``start`` may use: ``buf[start:end]``.

    ``final``: the file ends at ``end``; ``exhausted``: the record's limit, not the
    data at hand, ends the window (so reading more cannot help).
    """

    buf: bytes
    start: int
    available: int  # buf[:available] is the data at hand
    at_eof: bool  # ...and it reaches the end of the file
    max_record_bytes: int
    delimiter: int
    end: int
    final: bool
    exhausted: bool

    @classmethod
    def at(
        cls, buf: bytes, start: int, n: int, final: bool, max_record_bytes: int, delimiter: int
    ) -> _Window:
        limit = start + max_record_bytes + 2
        end = min(n, limit)
        window_final = final and n <= limit
        # exhausted: data beyond the window proves the record outgrows it (data that merely fills
        # the window may still be the whole rest of the file: then more is read first)
        return cls(buf, start, n, final, max_record_bytes, delimiter, end, window_final,
                   not window_final and n > limit)

    def need_more(self, open_field: int = 0) -> ScannedRecord:
        """More data is needed, unless the window is exhausted: then the record is too long."""
        return self.too_long(open_field) if self.exhausted else _NEED_MORE

    def too_long(self, open_field: int = 0) -> ScannedRecord:
        """Reject the physical line at ``start`` as too long (raw text cut to a preview).

        ``open_field`` is the number of the quoted field still open when the limit
        was hit, if any: then a missing closing quote is the likely cause.
        """
        preview = min(TOO_LONG_RAW_PREVIEW_BYTES, self.max_record_bytes)
        newline = self.buf.find(b"\n", self.start, self.available)
        if newline >= 0:
            end, next_pos = newline, newline + 1
        else:
            end, next_pos = self.available, (self.available if self.at_eof else -1)
        if next_pos >= 0 and end > self.start and self.buf[end - 1] == CR:
            end -= 1
        hint = (
            f"; quoted field {open_field} is still open there: is its closing quote missing?"
            if open_field
            else ""
        )
        reason = (
            f"{REASON_RECORD_TOO_LONG}: the record starting on this line is longer than "
            f"{self.max_record_bytes} bytes{hint} (raw text cut to its first {preview} bytes)"
        )
        return ScannedRecord(ScanOutcome.ERROR, next_pos, min(end, self.start + preview),
                             reason=reason)

    def line_error(self, reason: str) -> ScannedRecord:
        """Reject the physical line at ``start`` with ``reason``."""
        newline = self.buf.find(b"\n", self.start, self.end)
        if newline >= 0:
            end, next_pos = newline, newline + 1
        elif self.final:
            end, next_pos = self.end, self.end
        else:
            return self.need_more()
        if end > self.start and self.buf[end - 1] == CR:
            end -= 1
        return ScannedRecord(ScanOutcome.ERROR, next_pos, end, reason=reason)

    def record(self, ending: _RecordEnd, fields: list[bytes]) -> ScannedRecord:
        """The record (or blank line) ending there, unless it is too long."""
        if ending.content_end == self.start:
            return ScannedRecord(ScanOutcome.BLANK, ending.next_pos, ending.content_end)
        if ending.content_end - self.start > self.max_record_bytes:
            return self.too_long()
        return ScannedRecord(ScanOutcome.RECORD, ending.next_pos, ending.content_end, fields)


def scan_record(
    buf: bytes, start: int, n: int, final: bool, max_record_bytes: int, delimiter: int = COMMA
) -> ScannedRecord:
    """Scan the record starting at ``start`` (a physical line start) with the exact grammar.

    ``buf[:n]`` is the data at hand and ``final`` says it reaches the end of the file;
    ``delimiter`` is the byte separating fields.
    """
    window = _Window.at(buf, start, n, final, max_record_bytes, delimiter)
    plain = _plain_line(window)
    if plain is not None:
        return plain
    pos = start
    fields: list[bytes] = []
    while True:
        if pos < window.end and buf[pos] == QUOTE:
            step = _quoted_field(window, pos, fields)
        else:
            step = _unquoted_field(window, pos, fields)
        if isinstance(step, ScannedRecord):
            return step
        if isinstance(step, _RecordEnd):
            return window.record(step, fields)
        pos = step


def _plain_line(window: _Window) -> ScannedRecord | None:
    """Shortcut for a whole line where no field starts with a quote (e.g. a literal
    ``12" TV``): the record is that line, split on delimiters.  None if it does not apply."""
    buf, start = window.buf, window.start
    newline = buf.find(b"\n", start, window.end)
    line_end = newline if newline >= 0 else (window.end if window.final else -1)
    delimiter = bytes((window.delimiter,))
    if (line_end < 0 or buf[start : start + 1] == b'"'
            or buf.find(delimiter + b'"', start, line_end) >= 0):
        return None
    content_end = line_end - 1 if line_end > start and buf[line_end - 1] == CR else line_end
    next_pos = line_end + 1 if newline >= 0 else line_end
    return window.record(_RecordEnd(content_end, next_pos), buf[start:content_end].split(delimiter))


def _quoted_field(
    window: _Window, field_start: int, fields: list[bytes]
) -> int | _RecordEnd | ScannedRecord:
    """Scan the quoted field at ``field_start`` into ``fields``: the next field's position,
    the end of the record, or the outcome that stops the scan."""
    buf, end = window.buf, window.end
    number = len(fields) + 1
    chunk_start = field_start + 1
    parts: list[bytes] = []
    while True:
        close = buf.find(b'"', chunk_start, end)
        if close < 0:
            if window.final:
                return window.line_error(
                    f"{REASON_UNCLOSED_QUOTE}: field {number} opens a quote "
                    "that is never closed before the end of the file"
                )
            return window.need_more(number)
        if close + 1 < end and buf[close + 1] == QUOTE:
            parts.append(buf[chunk_start : close + 1])
            chunk_start = close + 2
            continue
        if close + 1 >= end and not window.final:
            return window.need_more()
        parts.append(buf[chunk_start:close])
        break
    fields.append(parts[0] if len(parts) == 1 else b"".join(parts))
    return _after_closing_quote(window, field_start, close + 1, number)


def _after_closing_quote(
    window: _Window, field_start: int, pos: int, number: int
) -> int | _RecordEnd | ScannedRecord:
    """What follows the closing quote of field ``number``, at ``pos``."""
    buf, end = window.buf, window.end
    if pos >= end:  # only reached when the window is final
        return _RecordEnd(pos, pos)
    char = buf[pos]
    if char == window.delimiter:
        return pos + 1
    if char == NEWLINE:
        return _RecordEnd(pos, pos + 1)
    if char == CR:
        if pos + 1 < end:
            if buf[pos + 1] == NEWLINE:
                return _RecordEnd(pos, pos + 2)
        elif window.final:
            return _RecordEnd(pos, pos + 1)
        else:
            return window.need_more()
    if buf.find(b"\n", field_start, pos) >= 0:
        # The quote opened on this line "closes" on a later line, followed by text:
        # most likely this line lacks its closing quote.
        return window.line_error(
            f"{REASON_UNCLOSED_QUOTE}: field {number} opens a quote that is not "
            "closed on this line, and the next quote (on a later line) is followed by text"
        )
    return window.line_error(
        f"{REASON_MALFORMED_QUOTING}: text after the closing quote of field {number} "
        f"(a quoted field must be followed by {_delimiter_words(window.delimiter)} "
        "or the end of the line)"
    )


def _unquoted_field(window: _Window, pos: int, fields: list[bytes]) -> int | _RecordEnd | ScannedRecord:
    """Scan the unquoted field at ``pos`` into ``fields`` (same results as :func:`_quoted_field`)."""
    buf = window.buf
    match = _unquoted_field_pattern(window.delimiter).match(buf, pos, window.end)
    stop = match.end() if match is not None else pos
    if stop < window.end:
        if buf[stop] == window.delimiter:
            fields.append(buf[pos:stop])
            return stop + 1
        next_pos = stop + 1
    elif window.final:
        next_pos = stop
    else:
        return window.need_more()
    content_end = stop - 1 if stop > pos and buf[stop - 1] == CR else stop
    fields.append(buf[pos:content_end])
    return _RecordEnd(content_end, next_pos)
