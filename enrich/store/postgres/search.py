"""Full-text search of the wordings in PostgreSQL: a ``tsvector`` per transaction in
``transactions_search`` under a GIN index.

The document is ``to_tsvector('simple', enrich_fold(wording))``: words lower-cased and
without accents (``unaccent``, or a fixed table of letters where the extension is missing),
no stemming and no stop words, like FTS5's ``unicode61 remove_diacritics 2``. Per-statement
triggers (through transition tables: set-based, whatever the number of rows) keep it in step
with every insert, update and delete, whoever writes (an operator's SQL too), except the
flow's bulk load, whose new rows the ``index_wordings`` step indexes in bulk
(:func:`enrich.store.postgres.enrichment.index_wordings`). Query syntax: ``websearch_to_tsquery``'s
(words, "phrases", OR, -word), accents ignored too.
"""
from __future__ import annotations

from typing import Any

from enrich.store.adbc import Cursor
from enrich.store.postgres.connection import transaction
from enrich.store.postgres.enrichment import pending_runs
from enrich.store.postgres.schema import SEARCH_CONFIG, SEARCH_TABLE
from enrich.store.records import SEARCH


def search_wordings_sql() -> str:
    """Transactions whose wording matches a web-search query (``:query``), best match first."""
    return f"""SELECT t.id, t.amount, t.wording
        FROM {SEARCH_TABLE} s JOIN transactions t ON t.id = s.id,
             websearch_to_tsquery('{SEARCH_CONFIG}', enrich_fold(CAST(:query AS text))) q
        WHERE s.document @@ q ORDER BY ts_rank(s.document, q) DESC, t.id LIMIT CAST(:limit AS bigint)"""


def search_wordings(cur: Cursor, query: str, limit: int) -> list[dict[str, Any]]:
    """Transactions whose wording matches ``query``."""
    sql = search_wordings_sql().replace(":query", "$1").replace(":limit", "$2")
    return cur.dicts(sql, (query, int(limit)))


def rebuild(cur: Cursor) -> None:
    """Re-index every wording from the transactions table, in one transaction (repairs only, e.g.
    after :func:`problem` reported one); no run is left pending search."""
    with transaction(cur):
        cur.execute(f"LOCK TABLE {SEARCH_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        cur.execute(f"DELETE FROM {SEARCH_TABLE}")
        cur.execute(f"INSERT INTO {SEARCH_TABLE} (id, document) "
                    f"SELECT id, enrich_search_document(wording) FROM transactions ORDER BY id")
        cur.execute("DELETE FROM pending_enrichment WHERE kind = $1", (SEARCH,))


def problem(cur: Cursor) -> str | None:
    """None when the index matches transactions.wording exactly, else what differs (or the runs
    whose rows are still waiting to be indexed)."""
    waiting = pending_runs(cur, SEARCH)
    if waiting:
        return f"the rows of runs {', '.join(waiting)} are not indexed yet (the next run's index_wordings step does it)"
    missing, stale, orphaned = cur.row(f"""SELECT
            COUNT(*) FILTER (WHERE s.id IS NULL),
            COUNT(*) FILTER (WHERE t.id IS NOT NULL AND s.id IS NOT NULL
                             AND s.document != enrich_search_document(t.wording)),
            COUNT(*) FILTER (WHERE t.id IS NULL)
        FROM transactions t FULL JOIN {SEARCH_TABLE} s ON s.id = t.id""") or (0, 0, 0)
    if not (missing or stale or orphaned):
        return None
    return (f"the full-text index does not match the wordings: {int(missing)} rows not indexed, {int(stale)} "
            f"indexed with an old wording, {int(orphaned)} entries for rows that no longer exist; rebuild it")
