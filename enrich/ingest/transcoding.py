"""Reading a file written in another encoding than UTF-8: transcode it while reading.

The mechanics work on UTF-8 bytes.  Delimiters, quotes and newlines are ASCII, and a
UTF-8 multi-byte sequence never holds an ASCII byte, so once a file is transcoded
to UTF-8 its framing is the same as the original's, whatever the encoding (even one
like Shift JIS, whose multi-byte characters may hold the byte of ``|`` or ``\\``).
Transcoding is incremental, one block at a time: memory stays bounded.

Bytes that are not valid in the encoding must reject their row, not the file.  They
are carried through as lone surrogates (U+DC00 + the byte), written with
``surrogatepass``: that is invalid UTF-8, so the row fails the UTF-8 check like an
invalid byte of a UTF-8 file does, and the byte is recovered for its reason and its
raw text.
"""
from __future__ import annotations

import codecs
import re
from collections.abc import Callable
from typing import Final

from enrich.ingest.exceptions import InputFileError

__all__ = ["first_undecodable", "raw_text", "transcoding_reader"]

#: The codec error handler that keeps undecodable bytes as lone surrogates.
UNDECODABLE_ERRORS: Final[str] = "enrich.ingest.keep-undecodable"
_ESCAPED_BYTE: Final[re.Pattern[str]] = re.compile("[\udc00-\udcff]")


def _keep_undecodable(error: UnicodeError) -> tuple[str, int]:
    """Codec error handler: each undecodable byte ``b`` becomes the lone surrogate U+DC00+b."""
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    return "".join(chr(0xDC00 + byte) for byte in bad), error.end


codecs.register_error(UNDECODABLE_ERRORS, _keep_undecodable)


def transcoding_reader(
    read: Callable[[int], bytes], encoding: str, name: str
) -> Callable[[int], bytes]:
    """A ``read(size)`` giving the UTF-8 transcoding of what ``read`` gives in ``encoding``.

    Like ``read``, it returns ``b""`` only at the end of the file (a block that ends
    inside a multi-byte character is completed by the next one).  A decoder that
    refuses the whole stream (``utf-16`` without a byte order mark) raises
    :class:`InputFileError` about file ``name``.
    """
    decoder = codecs.getincrementaldecoder(encoding)(errors=UNDECODABLE_ERRORS)
    finished = False

    def read_utf8(size: int) -> bytes:
        nonlocal finished
        while not finished:
            data = read(size)
            finished = not data
            try:
                text = decoder.decode(data, final=finished)
            except UnicodeError as exc:
                raise InputFileError(
                    f"{name}: the file cannot be read as {encoding} ({exc}). Check the file's "
                    "encoding and the --encoding option (utf-16-le or utf-16-be for UTF-16 "
                    "without a byte order mark)."
                ) from exc
            if text:
                return text.encode("utf-8", "surrogatepass")
        return b""

    return read_utf8


def first_undecodable(record: bytes) -> tuple[int, int] | None:
    """(byte, character offset) of the first undecodable byte of a transcoded record, if any."""
    text = record.decode("utf-8", "surrogatepass")
    found = _ESCAPED_BYTE.search(text)
    return None if found is None else (ord(found.group()) - 0xDC00, found.start())


def raw_text(record: bytes, transcoded: bool) -> str:
    """A record's text for the ``raw`` column: undecodable bytes, and NUL (which no database
    text column of every backend can hold), written ``\\xNN``."""
    if not transcoded:
        return record.decode("utf-8", "backslashreplace").replace("\x00", "\\x00")
    text = record.decode("utf-8", "surrogatepass")
    return _ESCAPED_BYTE.sub(lambda m: f"\\x{ord(m.group()) - 0xDC00:02x}", text).replace("\x00", "\\x00")
