"""Full-text search of the wordings in SQLite: an FTS5 index (``transactions_fts``).

External content (the text lives once, in transactions), no per-document sizes, the
``unicode61 remove_diacritics 2`` tokenizer. Triggers keep it in step with every insert,
update and delete, whoever writes (an operator's SQL too), except the flow's bulk load,
whose new rows the ``index_wordings`` step indexes in bulk
(:func:`enrich.store.sqlite.enrichment.index_wordings`). Query syntax: FTS5's (words,
"phrases", OR, prefix*).
"""
from __future__ import annotations

from typing import Any

from enrich.store.adbc import Cursor
from enrich.store.records import SEARCH
from enrich.store.sqlite.connection import DriverError, transaction
from enrich.store.sqlite.enrichment import pending_runs
from enrich.store.sqlite.schema import FTS_TABLE


def search_wordings_sql() -> str:
    """Transactions whose wording matches an FTS5 query (``:query``), best match first."""
    return f"""SELECT t.id, t.amount, t.wording FROM {FTS_TABLE} f JOIN transactions t ON t.id = f.rowid
        WHERE {FTS_TABLE} MATCH :query ORDER BY f.rank LIMIT :limit"""


def search_wordings(cur: Cursor, query: str, limit: int) -> list[dict[str, Any]]:
    """Transactions whose wording matches ``query``."""
    return cur.dicts(search_wordings_sql().replace(":query", "?").replace(":limit", "?"), (query, int(limit)))


def rebuild(cur: Cursor) -> None:
    """Re-index every wording from the transactions table, in one transaction (repairs only, e.g.
    after :func:`problem` reported one); no run is left pending search."""
    with transaction(cur):
        cur.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}) VALUES ('rebuild')")
        cur.execute("DELETE FROM pending_enrichment WHERE kind = ?", (SEARCH,))


def problem(cur: Cursor) -> str | None:
    """None when the index matches transactions.wording exactly, else SQLite's complaint (or the
    runs whose rows are still waiting to be indexed)."""
    waiting = pending_runs(cur, SEARCH)
    if waiting:
        return f"the rows of runs {', '.join(waiting)} are not indexed yet (the next run's index_wordings step does it)"
    try:
        cur.execute(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")
    except DriverError as exc:
        return " ".join(str(exc).split())
    return None
