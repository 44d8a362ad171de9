"""Why a transactions file as a whole cannot be read (a bad row is rejected, not raised)."""
from __future__ import annotations

__all__ = [
    "DuplicateColumnError",
    "EmptyFileError",
    "InputFileError",
    "MalformedHeaderError",
    "MissingColumnError",
]


class InputFileError(Exception):
    """The input file as a whole cannot be ingested; nothing should be stored."""


class EmptyFileError(InputFileError):
    """The file has no header record (it is empty or only blank lines)."""


class MalformedHeaderError(InputFileError):
    """The header record is not valid CSV or not valid UTF-8."""


class MissingColumnError(InputFileError):
    """The header lacks one of the required columns."""


class DuplicateColumnError(InputFileError):
    """The header names one of the required columns more than once."""
