"""How a file is written, when it is not the contract's UTF-8, comma and decimal point.

A :class:`CsvDialect` is passed to :func:`enrich.ingest.read_chunks`:

``encoding``
    Any Python text codec (``cp1252``, ``latin-1``, ``utf-16``...).  A file in
    another encoding than UTF-8 is transcoded to UTF-8 while it is read, block by
    block (memory stays bounded); bytes that are not valid in that encoding reject
    their row (``undecodable bytes``), like invalid UTF-8 does for a UTF-8 file.
``delimiter``
    The one character separating fields (``;``, a tab...): an ASCII character
    other than a letter, a digit, a quote, CR, LF, ``.``, ``+`` or ``-``.
``decimal_comma``
    Amounts are written with a decimal comma (``-12,50``).  Only with another
    delimiter than ``,``.

Everything else in the contract holds unchanged (RFC 4180 quoting, LF/CRLF, header
rules, amounts exact in cents and stored as integer cents).
"""
from __future__ import annotations

import codecs
from dataclasses import dataclass
from typing import Final

from enrich.ingest.exceptions import DialectError

__all__ = ["CsvDialect"]

_UTF8_CODECS: Final[frozenset[str]] = frozenset({"utf-8", "utf-8-sig"})
#: Characters that would make ids or amounts ambiguous, or break the framing, as delimiters.
_FORBIDDEN_DELIMITERS: Final[str] = '"\r\n.+-'
#: What the command line may say for a tab.
_TAB_WORDS: Final[frozenset[str]] = frozenset({"tab", "\\t", "TAB"})


@dataclass(frozen=True)
class CsvDialect:
    """The encoding, delimiter and decimal mark of a transactions file (see the module doc).

    ``CsvDialect()`` is the contract's default: UTF-8, ``,`` and a decimal point.
    Invalid combinations raise :class:`DialectError` when the dialect is made.
    """

    encoding: str = "utf-8"
    delimiter: str = ","
    decimal_comma: bool = False

    def __post_init__(self) -> None:
        _check_encoding(self.encoding)
        _check_delimiter(self.delimiter)
        if self.decimal_comma and self.delimiter == ",":
            raise DialectError(
                "decimal comma with the comma delimiter: a value like 12,50 would be two fields. "
                "Pass the file's delimiter too (e.g. --delimiter ';' --decimal-comma)."
            )

    @classmethod
    def from_options(
        cls, encoding: str | None = None, delimiter: str | None = None, decimal_comma: bool = False
    ) -> CsvDialect:
        """A dialect from command-line options: None means the default, and the delimiter
        may be written ``tab`` or ``\\t`` for a tab character."""
        if delimiter is not None and delimiter in _TAB_WORDS:
            delimiter = "\t"
        return cls(encoding or "utf-8", delimiter or ",", decimal_comma)

    @property
    def transcoded(self) -> bool:
        """Whether the file is decoded from another encoding than UTF-8 while it is read."""
        return codecs.lookup(self.encoding).name not in _UTF8_CODECS

    @property
    def delimiter_byte(self) -> int:
        """The delimiter as a byte (it is ASCII)."""
        return ord(self.delimiter)

    @property
    def decimal_mark(self) -> str:
        """``,`` or ``.``."""
        return "," if self.decimal_comma else "."

    @property
    def delimiter_plural(self) -> str:
        """The delimiter for messages: ``commas``, ``tabs``, ``';'``..."""
        return {",": "commas", "\t": "tabs", " ": "spaces"}.get(self.delimiter, repr(self.delimiter))


def _check_encoding(encoding: str) -> None:
    try:
        codecs.lookup(encoding)  # LookupError for unknown codecs
        b"a".decode(encoding, "ignore")  # LookupError for bytes-to-bytes ones (base64...)
    except LookupError as exc:
        raise DialectError(
            f"unknown text encoding {encoding!r} ({exc}). Pass a Python codec name such as "
            "utf-8, cp1252, latin-1 or utf-16."
        ) from exc


def _check_delimiter(delimiter: str) -> None:
    if not isinstance(delimiter, str) or len(delimiter) != 1:
        raise DialectError(f"the delimiter must be one character, got {delimiter!r}.")
    if not delimiter.isascii() or delimiter.isalnum() or delimiter in _FORBIDDEN_DELIMITERS:
        raise DialectError(
            f"{delimiter!r} cannot be the delimiter: pass an ASCII character other than a letter, "
            'a digit, a quote, CR, LF, ".", "+" or "-" (e.g. "," ";" "|" or a tab).'
        )
