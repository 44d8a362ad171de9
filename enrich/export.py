"""Writing CSV files meant for people (opened in a spreadsheet), safely.

A bank wording is text the bank's customers partly control: ``=HYPERLINK(...)``,
``+1``, ``-1+2`` or ``@SUM(...)`` in a cell is run as a formula by Excel,
LibreOffice or Google Sheets when the CSV is opened ("CSV injection"). Following
OWASP's recommendation, every text cell that starts with ``=``, ``+``, ``-``,
``@``, a tab or a carriage return is written with a single quote in front
(``'=HYPERLINK(...)``): spreadsheets then show it as text, and the quote is
visible, so nobody mistakes it for the stored value.

Only text columns are escaped: numbers (``amount = -12.5``) are written as
numbers, since a spreadsheet reads them as values, not formulas. The database
itself always keeps the wording verbatim; escaping happens only here, on the
way out.

Every CSV the project writes *for people* goes through :func:`write_csv`.
:mod:`enrich.generate` does not: it writes *input* files for the pipeline and
its tests, which must hold the exact bytes a bank would send (escaping them
would change the wordings that ingest stores and that the tests compare).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from enrich.files import replace_atomically

logger = logging.getLogger(__name__)

#: First characters that make a spreadsheet evaluate a cell (OWASP "CSV injection").
FORMULA_PREFIXES: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")
#: What is put in front of such a cell.
ESCAPE = "'"


def escape_formula(series: pd.Series) -> pd.Series:
    """``series`` with every text value that starts with a formula character prefixed by ``'``.

    Vectorized (no per-row Python). Missing values and non-text values (numbers
    in an object column) are kept as they are; a numeric series is returned
    unchanged.
    """
    if pd.api.types.is_object_dtype(series.dtype):
        try:
            starts = series.str.startswith(FORMULA_PREFIXES)  # NaN for values that are not text
        except AttributeError:  # no text value at all
            return series
    elif pd.api.types.is_string_dtype(series.dtype):
        starts = series.str.startswith(FORMULA_PREFIXES)
    else:
        return series
    risky = starts.fillna(False).astype(bool)
    if not risky.any():
        return series
    escaped = series.copy()
    escaped[risky] = ESCAPE + series[risky]
    return escaped


def escape_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``frame`` with :func:`escape_formula` applied to every column and to the column names."""
    escaped = pd.DataFrame({column: escape_formula(frame[column]) for column in frame.columns},
                           index=frame.index)
    escaped.columns = list(escape_formula(pd.Series([str(c) for c in frame.columns], dtype=object)))
    return escaped


def write_csv(frame: pd.DataFrame, path: str | os.PathLike[str]) -> Path:
    """Write ``frame`` as a UTF-8 CSV (no index) at ``path``, formula cells escaped, atomically.

    The file is written to a temporary sibling, flushed to disk and renamed
    over ``path``: a reader sees the old file or the whole new one, never a
    half-written one; on any error ``path`` is untouched and the temporary
    file removed.
    """
    target = Path(path)
    replace_atomically(target, escape_frame(frame).to_csv(index=False, lineterminator="\n").encode("utf-8"))
    logger.info("wrote %d rows to %s", len(frame), target)
    return target
