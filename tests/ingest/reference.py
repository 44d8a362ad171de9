"""An independent, deliberately slow reading of the input contract, for differential tests.

It follows the rules written in :mod:`enrich.ingest` byte by byte, with none of the
package's machinery (no blocks, no numpy, no fast paths): records are scanned one
physical line start after another, with the RFC 4180 grammar, inside the window of
``max_record_bytes + 2`` bytes the contract allows a record.  Tests compare what
:func:`enrich.ingest.read_chunks` yields against it on messy files.

Only the reason *prefixes* are compared: the details are the package's wording.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal

MAX_ID = 9223372036854775807
REQUIRED = ("id", "amount", "wording")
PREVIEW = 1024
BOM = b"\xef\xbb\xbf"

AMOUNT_SHAPE = {mark: re.compile(rf"[+-]?([0-9]+([{mark}][0-9]*)?|[{mark}][0-9]+)") for mark in ".,"}
ID_SHAPE = re.compile(r"[0-9]+")


def reference_amount(text: str, decimal_mark: str = ".") -> int | None:
    """Cents of a valid amount text, else None (Decimal arithmetic, no float)."""
    stripped = text.strip(" \t")
    if not AMOUNT_SHAPE[decimal_mark].fullmatch(stripped):
        return None
    value = Decimal(stripped.replace(decimal_mark, "."))
    cents = value * 100
    if cents != cents.to_integral_value() or abs(value) >= Decimal(10) ** 15:
        return None
    return int(cents)


def reference_id(text: str) -> int | None:
    """A valid id's value, else None."""
    stripped = text.strip(" \t")
    if not ID_SHAPE.fullmatch(stripped):
        return None
    value = int(stripped)
    return value if 1 <= value <= MAX_ID else None


@dataclass
class Outcome:
    """What reading a file must give: valid (line, id, cents, wording), rejected (line, raw, prefix)."""

    valid: list[tuple[int, int, int, str]] = field(default_factory=list)
    rejected: list[tuple[int, str, str]] = field(default_factory=list)


class _LineError(Exception):
    """The record's own line is rejected with this reason prefix."""


class _TooLong(Exception):
    """The record does not end inside its window."""


def _scan(data: bytes, i: int, size: int, final: bool, delimiter: int) -> tuple[list[bytes], int, int]:
    """(fields, content end, next position) of the record at ``i``, which must end before
    ``size`` (its window's end; ``final``: the file ends there too)."""
    fields: list[bytes] = []
    while True:
        if i < size and data[i] == 0x22:
            opened_at = i
            value, i = _quoted(data, i, size, final)
            fields.append(value)
            if i >= size:
                return fields, i, i
            char = data[i]
            if char == delimiter:
                i += 1
                continue
            if char == 0x0A:
                return fields, i, i + 1
            if char == 0x0D and i + 1 < size and data[i + 1] == 0x0A:
                return fields, i, i + 2
            if char == 0x0D and i + 1 >= size:
                if not final:
                    raise _TooLong
                return fields, i, i + 1
            if data.find(b"\n", opened_at, i) >= 0:  # the "closing" quote is on a later line
                raise _LineError("unclosed quote")
            raise _LineError("malformed quoting")
        ends = (data.find(bytes([delimiter]), i, size), data.find(b"\n", i, size))
        stop = min((at for at in ends if at >= 0), default=size)
        if stop < size and data[stop] == delimiter:
            fields.append(data[i:stop])
            i = stop + 1
            continue
        if stop >= size and not final:
            raise _TooLong
        end = stop - 1 if stop > i and data[stop - 1] == 0x0D else stop
        fields.append(data[i:end])
        return fields, end, stop + 1 if stop < size else stop


def _quoted(data: bytes, i: int, size: int, final: bool) -> tuple[bytes, int]:
    """The unquoted value of the quoted field at ``i`` and the position after its closing quote."""
    value = bytearray()
    j = i + 1
    while True:
        quote = data.find(b'"', j, size)
        if quote < 0:
            if final:
                raise _LineError("unclosed quote")
            raise _TooLong
        value += data[j:quote]
        if quote + 1 < size and data[quote + 1] == 0x22:
            value += b'"'
            j = quote + 2
            continue
        if quote + 1 >= size and not final:
            raise _TooLong
        return bytes(value), quote + 1


def _physical_line(data: bytes, start: int) -> tuple[bytes, int]:
    """The physical line at ``start`` without its terminator, and where the next one starts."""
    newline = data.find(b"\n", start)
    end = len(data) if newline < 0 else newline
    text = data[start:end]
    if text.endswith(b"\r"):
        text = text[:-1]
    return text, end + 1 if newline >= 0 else end


def _raw(data: bytes) -> str:
    return data.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")


def _records(data: bytes, start: int, max_record_bytes: int, delimiter: int):
    """Yield (start, fields or None, content end, rejection prefix or None) for each record."""
    pos = start
    while pos < len(data):
        limit = pos + max_record_bytes + 2
        size, final = min(limit, len(data)), len(data) <= limit
        try:
            fields, content_end, after = _scan(data, pos, size, final, delimiter)
            content, after = content_end - pos, after - pos
        except _LineError as error:
            text, pos_next = _physical_line(data, pos)
            if data.find(b"\n", pos, size) < 0 and not final:  # the line outgrows the window
                yield pos, None, text[: min(PREVIEW, max_record_bytes)], "record too long"
            else:
                yield pos, None, text, str(error)
            pos = pos_next
            continue
        except _TooLong:
            text, pos_next = _physical_line(data, pos)
            yield pos, None, text[: min(PREVIEW, max_record_bytes)], "record too long"
            pos = pos_next
            continue
        if content == 0:
            pos += after
            continue
        if content > max_record_bytes:
            text, pos_next = _physical_line(data, pos)
            yield pos, None, text[: min(PREVIEW, max_record_bytes)], "record too long"
            pos = pos_next
            continue
        yield pos, fields, data[pos : pos + content], None
        pos += after


def read(content: bytes, max_record_bytes: int = 16 * 1024 * 1024, delimiter: str = ",",
         decimal_mark: str = ".") -> Outcome:
    """What the contract says reading ``content`` gives (the header must be well formed)."""
    data = content[len(BOM):] if content.startswith(BOM) else content
    records = _records(data, 0, max_record_bytes, ord(delimiter))
    start, header, _, problem = next(records)
    assert problem is None and header is not None, "the reference needs a well-formed header"
    names = [name.decode("utf-8").strip().casefold() for name in header]
    where = [names.index(column) for column in REQUIRED]
    outcome = Outcome()
    line, counted_to = 1, 0
    for start, fields, text, problem in records:
        line += data.count(b"\n", counted_to, start)
        counted_to = start
        if problem is None:
            problem = _row_problem(text, fields, len(names), where, decimal_mark)
        if problem is not None:
            outcome.rejected.append((line, _raw(text), problem))
            continue
        id_text, amount_text, wording = (fields[i].decode("utf-8") for i in where)
        outcome.valid.append(
            (line, reference_id(id_text), reference_amount(amount_text, decimal_mark), wording)
        )
    return outcome


def _row_problem(text: bytes, fields: list[bytes], n_columns: int, where: list[int],
                 decimal_mark: str) -> str | None:
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return "invalid UTF-8"
    if len(fields) != n_columns:
        return "wrong field count"
    if reference_id(fields[where[0]].decode("utf-8")) is None:
        return "bad id"
    if reference_amount(fields[where[1]].decode("utf-8"), decimal_mark) is None:
        return "bad amount"
    if b"\x00" in fields[where[2]]:
        return "NUL character"
    return None
