"""The input contract's value rules and rejection reasons (no CSV mechanics here).

The header must name the :data:`REQUIRED_COLUMNS` (see :mod:`enrich.ingest.header`).

``id``
    A positive integer: ASCII digits only (leading zeros allowed), optional
    surrounding spaces/tabs, from 1 to :data:`MAX_ID`.

``amount``
    A plain decimal number: optional ``+``/``-`` sign, ASCII digits, an
    optional ``.`` decimal point (``12``, ``12.5``, ``-0.99``, ``.5``, ``5.``),
    no thousands separator, no exponent, optional surrounding spaces/tabs.  It
    must be exact in cents (``300.000`` is accepted, ``300.001`` is not) and
    have at most :data:`MAX_AMOUNT_INTEGER_DIGITS` integer digits once leading
    zeros are dropped.  It is returned as integer cents (int64).  With the
    ``decimal_comma`` option the decimal mark is ``,`` instead (``-12,50``), and
    only then.

``wording``
    Any text, possibly empty, kept verbatim (only RFC 4180 unquoting is
    applied: no stripping); a NUL character rejects the record (:data:`REASON_NUL_IN_WORDING`).

A record that breaks the contract is rejected with a reason ``"<prefix>: <detail>"``,
the prefix being one of the ``REASON_*`` constants.  Checks run in this order:
quoting and size (:data:`REASON_UNCLOSED_QUOTE`, :data:`REASON_MALFORMED_QUOTING`,
:data:`REASON_RECORD_TOO_LONG`), then :data:`REASON_INVALID_UTF8` (or, for a file read
in another encoding, :data:`REASON_UNDECODABLE`), then
:data:`REASON_WRONG_FIELD_COUNT`, then :data:`REASON_BAD_ID`, then
:data:`REASON_BAD_AMOUNT`.

The scalar functions here (:func:`id_value`, :func:`amount_cents`) are the rules'
definition, one value at a time; :mod:`enrich.ingest.numbers` applies the same rules
to whole columns with vectorized kernels, and the two must agree.
"""
from __future__ import annotations

import re
from typing import Final

__all__ = [
    "AMOUNT_GRAMMAR",
    "ID_GRAMMAR",
    "MAX_AMOUNT_INTEGER_DIGITS",
    "MAX_ID",
    "REASON_BAD_AMOUNT",
    "REASON_BAD_ID",
    "REASON_INVALID_UTF8",
    "REASON_MALFORMED_QUOTING",
    "REASON_NUL_IN_WORDING",
    "NUL_IN_WORDING_REASON",
    "REASON_RECORD_TOO_LONG",
    "REASON_UNCLOSED_QUOTE",
    "REASON_UNDECODABLE",
    "REASON_WRONG_FIELD_COUNT",
    "REQUIRED_COLUMNS",
    "TOO_LONG_RAW_PREVIEW_BYTES",
    "amount_cents",
    "amount_grammar",
    "bad_amount_reason",
    "bad_id_reason",
    "id_value",
    "invalid_utf8_reason",
    "undecodable_reason",
    "wrong_field_count_reason",
]

#: The columns the header must name (in any order, case-insensitively).
REQUIRED_COLUMNS: tuple[str, ...] = ("id", "amount", "wording")
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
#: Bytes not valid in the encoding given for a file that is not UTF-8.
REASON_UNDECODABLE: Final[str] = "undecodable bytes"
#: A wording holding a NUL character: no database text column of every backend can store it
#: (PostgreSQL's cannot), so it is refused on every backend alike.
REASON_NUL_IN_WORDING: Final[str] = "NUL character"
NUL_IN_WORDING_REASON: Final[str] = (f"{REASON_NUL_IN_WORDING}: the wording holds a NUL (0x00) character, which "
                                     "cannot be stored; remove it from the file and load it again")

#: The id grammar, as a regular expression (RE2 and Python) with a ``digits`` group.
ID_GRAMMAR: Final[str] = r"^[ \t]*(?P<digits>[0-9]+)[ \t]*$"


def amount_grammar(decimal_comma: bool = False) -> str:
    """The amount grammar, as a regular expression with ``sign``, ``int`` and ``frac`` groups."""
    mark = "," if decimal_comma else "."
    return rf"^[ \t]*(?P<sign>[+-]?)(?P<int>[0-9]*)(?:[{mark}](?P<frac>[0-9]*))?[ \t]*$"


#: The amount grammar of the contract's default (decimal point).
AMOUNT_GRAMMAR: Final[str] = amount_grammar()

# Python twins of the grammars ("$" would accept a final "\n").
_ID_RE: Final[re.Pattern[str]] = re.compile(ID_GRAMMAR.replace("$", r"\Z"))
_AMOUNT_RE: Final[dict[bool, re.Pattern[str]]] = {
    comma: re.compile(amount_grammar(comma).replace("$", r"\Z")) for comma in (False, True)
}


def id_value(text: str) -> int | None:
    """The id written ``text``, or None if it breaks the ``id`` rule."""
    match = _ID_RE.match(text)
    if match is None:
        return None
    value = int(match.group("digits"))
    return value if 1 <= value <= MAX_ID else None


def amount_cents(text: str, decimal_comma: bool = False) -> int | None:
    """The amount written ``text`` in integer cents, or None if it breaks the ``amount`` rule
    (with ``decimal_comma``, the decimal mark is ``,``)."""
    match = _AMOUNT_RE[decimal_comma].match(text)
    if match is None:
        return None
    integer, fraction = match.group("int"), match.group("frac") or ""
    if not (integer or fraction) or len(integer.lstrip("0")) > MAX_AMOUNT_INTEGER_DIGITS:
        return None
    if fraction[2:].strip("0"):
        return None  # not exact in cents
    cents = int(integer or "0") * 100 + int((fraction + "00")[:2])
    return -cents if match.group("sign") == "-" else cents


def _shown(text: str, limit: int = 40) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def bad_id_reason(text: str) -> str:
    """The rejection reason for an id text that breaks the rule (see :func:`id_value`)."""
    match = _ID_RE.match(text)
    if match is None:
        return f"{REASON_BAD_ID}: {_shown(text)} is not a positive integer"
    if int(match.group("digits")) == 0:
        return f"{REASON_BAD_ID}: {_shown(text)} is not a positive integer (must be at least 1)"
    return f"{REASON_BAD_ID}: {_shown(text)} is out of range (at most {MAX_ID})"


def bad_amount_reason(text: str, decimal_comma: bool = False) -> str:
    """The rejection reason for an amount text that breaks the rule (see :func:`amount_cents`)."""
    match = _AMOUNT_RE[decimal_comma].match(text)
    if match is None or not (match.group("int") or match.group("frac")):
        example = "-12,34" if decimal_comma else "-12.34"
        return f"{REASON_BAD_AMOUNT}: {_shown(text)} is not a plain decimal number like {example}"
    if len(match.group("int").lstrip("0")) > MAX_AMOUNT_INTEGER_DIGITS:
        return (
            f"{REASON_BAD_AMOUNT}: {_shown(text)} is out of range "
            f"(more than {MAX_AMOUNT_INTEGER_DIGITS} integer digits)"
        )
    return f"{REASON_BAD_AMOUNT}: {_shown(text)} is not exact in cents"


def wrong_field_count_reason(expected: int, got: int) -> str:
    """The rejection reason for a record with ``got`` fields where the header has ``expected``."""
    return f"{REASON_WRONG_FIELD_COUNT}: expected {expected}, got {got}"


def invalid_utf8_reason(record: bytes) -> str | None:
    """The rejection reason for a record whose bytes are not UTF-8, or None if they are."""
    try:
        record.decode("utf-8")
    except UnicodeDecodeError as exc:
        return (
            f"{REASON_INVALID_UTF8}: byte 0x{record[exc.start]:02x} at offset {exc.start} "
            "of the record"
        )
    return None


def undecodable_reason(byte: int, offset: int, encoding: str) -> str:
    """The rejection reason for a record holding ``byte``, not valid in ``encoding``, at
    character ``offset`` of the record (as decoded)."""
    return (
        f"{REASON_UNDECODABLE}: byte 0x{byte:02x} at character {offset} of the record "
        f"is not valid {encoding}"
    )
