"""Timestamps as the ledger stores them: ISO 8601 text in UTC, to the millisecond."""
from __future__ import annotations

from datetime import datetime, timezone


def utc_now() -> str:
    """The current UTC time as ISO 8601 text (the format of every timestamp in the database)."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def utc_after(seconds: float) -> str:
    """The UTC time ``seconds`` from now, as :func:`utc_now` writes it."""
    return datetime.fromtimestamp(datetime.now(timezone.utc).timestamp() + seconds,
                                  timezone.utc).isoformat(timespec="milliseconds")


def parse_time(text: str | None) -> datetime | None:
    """A stored timestamp as an aware datetime (None when absent)."""
    if not text:
        return None
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
