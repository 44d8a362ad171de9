"""Why a transactions file as a whole cannot be read (a bad *row* is rejected, not raised).

:class:`InputFileError` and its subclasses derive from :class:`enrich.errors.InputError`
(the problem is the file) and :class:`enrich.errors.PermanentError` (reading the same
file again fails the same way: a person must fix the file or the path, so the flow does
not retry).  :class:`DialectError` is a :class:`enrich.errors.ConfigurationError`: the
options given to read the file are wrong, whatever the file; permanent too.
"""
from __future__ import annotations

from enrich.errors import ConfigurationError, InputError, PermanentError

__all__ = [
    "DialectError",
    "DuplicateColumnError",
    "EmptyFileError",
    "InputFileError",
    "MalformedHeaderError",
    "MissingColumnError",
]


class InputFileError(InputError, PermanentError):
    """The input file as a whole cannot be ingested (missing, unreadable, bad header...);
    nothing should be stored.  The message names the file, the problem and the fix."""


class EmptyFileError(InputFileError):
    """The file has no header record (it is empty or only blank lines)."""


class MalformedHeaderError(InputFileError):
    """The header record is not valid CSV or not valid UTF-8."""


class MissingColumnError(InputFileError):
    """The header lacks one of the required columns (``id``, ``amount``, ``wording``)."""


class DuplicateColumnError(InputFileError):
    """The header names one of the required columns more than once."""


class DialectError(ConfigurationError, PermanentError):
    """The dialect options (encoding, delimiter, decimal comma) are invalid or contradict
    each other; the message says which and what to pass instead."""
