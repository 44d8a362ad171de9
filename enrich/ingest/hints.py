"""Recognising a foreign file, and naming the options that read it.

A French bank export (``;`` separators, ``12,50`` amounts) or a Windows-1252 file read
with the default dialect fails with a message about missing columns, or loses its rows
to ``invalid UTF-8``.  These functions look at the header, the first rows or the first
rejected rows, say what the file seems to be, and name the command-line options that
read it (``--delimiter``, ``--decimal-comma``, ``--encoding``; see
:class:`enrich.ingest.dialect.CsvDialect`).  They only run once something already
failed, never on the fast path.
"""
from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from typing import Final

from enrich.ingest.contract import REQUIRED_COLUMNS
from enrich.ingest.dialect import CsvDialect

__all__ = [
    "FileHint",
    "decimal_mark_hint",
    "header_encoding_advice",
    "missing_columns_advice",
    "undecodable_rows_hint",
]

_OTHER_DELIMITERS: Final[tuple[str, ...]] = (";", "\t", ",", "|")
_ROWS_LOOKED_AT: Final[int] = 20
_COMMA_DECIMAL: Final[re.Pattern[str]] = re.compile(r"[ \t]*[+-]?[0-9]*,[0-9]+[ \t]*")
_POINT_DECIMAL: Final[re.Pattern[str]] = re.compile(r"[ \t]*[+-]?[0-9]*\.[0-9]+[ \t]*")
_TEXT_SYMBOLS: Final[str] = "€£¥¢§°±²³µ¹º«»¼½¾×÷‘’‚“”„–—…•·©®™\u00a0"


@dataclass(frozen=True)
class FileHint:
    """Advice about the whole file; one of each ``kind`` is given per file."""

    kind: str
    message: str


def _option(delimiter: str) -> str:
    return "--delimiter '\\t'" if delimiter == "\t" else f"--delimiter {delimiter!r}"


def _described(delimiter: str) -> str:
    return "tab" if delimiter == "\t" else repr(delimiter)


def _rows(text: str, delimiter: str) -> list[list[str]]:
    """The records of ``text`` by Python's csv module; what it read before any error."""
    found: list[list[str]] = []
    try:
        found.extend(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error:
        pass  # a hint is a guess: what could be read is enough
    return found


def _split(text: str, delimiter: str) -> list[str]:
    rows = _rows(text, delimiter)
    return rows[0] if rows else []


def _keys(names: list[str]) -> list[str]:
    return [name.strip().casefold() for name in names]


def missing_columns_advice(header_record: bytes, following: bytes, dialect: CsvDialect) -> str:
    """For a header without the required columns: the delimiter (and decimal mark, from
    the first rows) the file seems to use instead, as a sentence; "" if nothing fits."""
    header = header_record.decode("utf-8", "replace")
    for delimiter in _OTHER_DELIMITERS:
        if delimiter == dialect.delimiter:
            continue
        keys = _keys(_split(header, delimiter))
        if all(column in keys for column in REQUIRED_COLUMNS):
            found = [f"the header looks {_described(delimiter)}-separated"]
            options = [_option(delimiter)]
            amounts = _first_values(following, delimiter, keys.index("amount"), len(keys))
            example = next((a for a in amounts if _COMMA_DECIMAL.fullmatch(a)), None)
            if example is not None and delimiter != ",":
                found.append(f"amounts like {example.strip()!r} have a decimal comma")
                options.append("--decimal-comma")
            if not dialect.transcoded and _reads_as_cp1252(following):
                found.append("the rows read as Windows-1252")
                options.append("--encoding cp1252")
            sentence = "; ".join(found)
            return f"{sentence[0].upper()}{sentence[1:]}: pass {' '.join(options)}."
    if len(_split(header, dialect.delimiter)) == 1:
        for delimiter in _OTHER_DELIMITERS:
            if delimiter != dialect.delimiter and len(_split(header, delimiter)) >= 3:
                return (f"The header looks {_described(delimiter)}-separated: pass "
                        f"{_option(delimiter)} if it is.")
    return _utf16_advice(header_record)


def _first_values(data: bytes, delimiter: str, column: int, n_columns: int) -> list[str]:
    """Values of ``column`` in the first rows of ``data`` that have ``n_columns`` fields."""
    lines = data.split(b"\n", _ROWS_LOOKED_AT + 1)[:_ROWS_LOOKED_AT]
    text = b"\n".join(lines).decode("utf-8", "replace")
    return [row[column] for row in _rows(text, delimiter) if len(row) == n_columns]


def _reads_as_cp1252(data: bytes) -> bool:
    """Whether the first rows of ``data`` are not UTF-8 but plausible Windows-1252 text."""
    lines = data.split(b"\n", _ROWS_LOOKED_AT + 1)[:_ROWS_LOOKED_AT]
    for line in lines:
        try:
            line.decode("utf-8")
        except UnicodeDecodeError:
            if _as_cp1252_text(line) is not None:
                return True
    return False


def header_encoding_advice(header: bytes) -> str:
    """For a header that is not UTF-8: the encoding it seems to be in, as a sentence."""
    utf16 = _utf16_advice(header)
    if utf16:
        return utf16
    text = _as_cp1252_text(header)
    if text is not None:
        return (f"It reads as Windows-1252 ({text!r}): if the file is Windows-1252 or Latin-1, "
                "pass --encoding cp1252, or save the file as UTF-8.")
    return "If the file is in another encoding, pass it with --encoding, or save it as UTF-8."


def _utf16_advice(header: bytes) -> str:
    if b"\x00" not in header and not header.startswith((b"\xff\xfe", b"\xfe\xff")):
        return ""
    with_bom = header.startswith((b"\xff\xfe", b"\xfe\xff"))
    for encoding in ("utf-16",) if with_bom else ("utf-16-le", "utf-16-be"):
        data = header if len(header) % 2 == 0 else header + b"\x00"
        text = data.decode(encoding, "replace").strip("\r\n\x00")
        if all(any(column in _keys(_split(text, d)) for d in _OTHER_DELIMITERS)
               for column in REQUIRED_COLUMNS):
            return f"The file looks UTF-16 encoded: pass --encoding {encoding}."
    return ""


def _as_cp1252_text(data: bytes) -> str | None:
    """``data`` read as Windows-1252 if that gives plausible text (letters and usual
    symbols beyond ASCII), else None."""
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError:
        return None
    beyond_ascii = [char for char in text if ord(char) > 0x7F]
    if not beyond_ascii or not all(char.isalpha() or char in _TEXT_SYMBOLS for char in beyond_ascii):
        return None
    return text if len(text) <= 60 else text[:60] + "..."


def undecodable_rows_hint(line: int, record: bytes, dialect: CsvDialect) -> FileHint:
    """Advice for a file whose rows (the first on ``line``) are not valid in its encoding."""
    if dialect.transcoded:
        return FileHint("encoding", (
            f"rows hold bytes that are not valid {dialect.encoding} (first on line {line}): "
            "check the file's encoding and the --encoding option."))
    text = _as_cp1252_text(record)
    if text is not None:
        return FileHint("encoding", (
            f"rows are not valid UTF-8 but read as Windows-1252 (line {line}: {text!r}): "
            "if the file is Windows-1252 or Latin-1, pass --encoding cp1252."))
    return FileHint("encoding", (
        f"rows are not valid UTF-8 (first on line {line}): if the file is in another "
        "encoding, pass it with --encoding (e.g. --encoding cp1252)."))


def decimal_mark_hint(line: int, amount: str, dialect: CsvDialect) -> FileHint | None:
    """Advice if a rejected ``amount`` (on ``line``) is written with the other decimal mark."""
    if not dialect.decimal_comma and dialect.delimiter != "," and _COMMA_DECIMAL.fullmatch(amount):
        return FileHint("decimal mark", (
            f"amounts like {amount.strip()!r} (line {line}) have a decimal comma: "
            "pass --decimal-comma."))
    if dialect.decimal_comma and _POINT_DECIMAL.fullmatch(amount):
        return FileHint("decimal mark", (
            f"amounts like {amount.strip()!r} (line {line}) have a decimal point: "
            "drop --decimal-comma."))
    return None
