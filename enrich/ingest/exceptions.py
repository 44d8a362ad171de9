"""Why a transactions file as a whole cannot be read (a bad *row* is rejected, not raised).

Every class derives from :class:`enrich.errors.InputError` (the problem is the file)
and :class:`enrich.errors.PermanentError` (reading the same file again fails the same
way: a person must fix the file or the path, so the flow does not retry).
"""
from __future__ import annotations

from enrich.errors import InputError, PermanentError

__all__ = [
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
