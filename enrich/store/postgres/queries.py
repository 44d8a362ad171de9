"""The monitoring queries and views in PostgreSQL: what ``enrich query NAME`` runs (and what psql
shows). Their names, titles and descriptions are the backend-neutral
:data:`enrich.store.queries.QUERIES`; the SQL here is PostgreSQL's, with ``:name`` parameters
(turned into ``$1, $2...`` by :func:`enrich.store.queries.positional`). Each returns the same
columns, in the same order, as the SQLite query of the same name."""
from __future__ import annotations

import re

from enrich.store.postgres.lineage import lineage_key_sql as _lineage_key_sql
from enrich.store.queries import CannedQuery, with_sql_of
from enrich.store.shared_sql import (failed_steps_sql, last_run_failed_checks_sql,  # noqa: F401 - by name
                                     runs_by_status_sql)  # (with_sql_of)
from enrich.store.shared_sql import run_rejected_rows_sql as shared_run_rejected_rows_sql

BROWSE_VIEWS: tuple[str, ...] = ("enriched_transactions", "tag_summary", "annotation_summary", "run_summary")


def _param(name: str) -> str:
    return f"CAST(:{name} AS text)"


def _run_number_matches(column: str, param: str) -> str:
    """``column`` (a run id) is the full id or the bare number given in ``:param``."""
    return (f"({column} = {_param(param)} "
            f"OR substr({column}, strpos({column}, '/') + 1) = {_param(param)})")


def _run_ref_sql(param: str = "run_id") -> str:
    """A run id from ``:param``: the full id, its bare number, or blank for the latest run."""
    return (f"(SELECT run_id FROM runs WHERE COALESCE({_param(param)}, '') = '' "
            f"OR {_run_number_matches('run_id', param)} ORDER BY started_at DESC LIMIT 1)")


def step_durations_sql() -> str:
    """Per step, over its succeeded attempts: how many, mean, 95th percentile (nearest rank), max."""
    return """WITH d AS (
            SELECT step, duration_s,
                   ROW_NUMBER() OVER (PARTITION BY step ORDER BY duration_s) AS position,
                   COUNT(*) OVER (PARTITION BY step) AS attempts
            FROM step_runs WHERE status = 'succeeded' AND duration_s IS NOT NULL)
        SELECT step, MAX(attempts) AS attempts, ROUND(AVG(duration_s)::numeric, 3)::double precision AS mean_s,
               ROUND(MIN(CASE WHEN position >= 0.95 * attempts THEN duration_s END)::numeric, 3)::double precision
                   AS p95_s,
               ROUND(MAX(duration_s)::numeric, 3)::double precision AS max_s
        FROM d GROUP BY step ORDER BY mean_s DESC"""


def runs_between_sql() -> str:
    """Runs started in ``[:start, :end)`` (UTC, ISO 8601 text such as 2025-01-31 or
    2025-01-31T12:00; a blank bound is open), newest first."""
    return f"""SELECT run_id, status, started_at, finished_at, "user", rows_read, rows_loaded, rows_new,
               rows_updated, rows_rejected, tagged, ambiguous, annotated
        FROM runs
        WHERE started_at >= COALESCE(NULLIF({_param("start")}, ''), '0000')
          AND started_at < COALESCE(NULLIF({_param("end")}, ''), '9999')
        ORDER BY started_at DESC"""


def _annotations_verdict_sql() -> str:
    # the whole-database annotations_complete verdict of the latest run that checked it
    return """(SELECT c.passed FROM check_results c JOIN runs r ON r.run_id = c.run_id
               WHERE c.check_name = 'annotations_complete' ORDER BY r.started_at DESC LIMIT 1)"""


def unannotated_transactions_sql() -> str:
    """Non-zero transactions without an annotation (should be empty; zero amounts have none by rule).

    While the latest whole-database ``annotations_complete`` verdict is a pass, only rows of
    runs whose annotations are still pending are searched (through the index on
    last_changed_run); otherwise the whole table. The verdict is an uncorrelated subquery:
    PostgreSQL evaluates it once, as a one-time filter that skips the other branch's scan.
    """
    columns = (f"t.id, t.amount, t.wording, {_lineage_key_sql('t.first_run', 'first_run_id')}, "
               f"{_lineage_key_sql('t.last_changed_run', 'last_changed_run_id')}")
    missing = ("t.amount_cents != 0 AND NOT EXISTS "
               "(SELECT 1 FROM annotations a WHERE a.transaction_id = t.id)")
    verdict = _annotations_verdict_sql()
    return f"""SELECT {columns}, 'pending run' AS searched
        FROM transactions t
        WHERE {verdict} IS NOT DISTINCT FROM 1
          AND t.last_changed_run IN (SELECT k.run_key FROM run_keys k
                                     JOIN pending_enrichment p ON p.run_id = k.run_id AND p.kind = 'annotations')
          AND {missing}
        UNION ALL
        SELECT {columns}, 'whole table' AS searched
        FROM transactions t
        WHERE {verdict} IS DISTINCT FROM 1
          AND {missing}"""


def most_ambiguous_wordings_sql() -> str:
    """The wordings a run's tagging found ambiguous, most frequent first (``:run_id``: full id,
    bare number, or blank for the latest run that recorded some)."""
    return f"""SELECT w.run_id, w.wording, w.tags_found, w.transactions FROM ambiguous_wordings w
        WHERE w.run_id = (SELECT r.run_id FROM runs r
                          WHERE (COALESCE({_param("run_id")}, '') = '' OR {_run_number_matches('r.run_id', 'run_id')})
                            AND EXISTS (SELECT 1 FROM ambiguous_wordings x WHERE x.run_id = r.run_id)
                          ORDER BY r.started_at DESC LIMIT 1)
        ORDER BY w.transactions DESC, w.wording LIMIT 100"""


def daily_volume_sql() -> str:
    """Per UTC day: runs (succeeded, failed) and rows read, loaded, new, updated, rejected."""
    return """SELECT substr(started_at, 1, 10) AS day, COUNT(*) AS runs,
               COUNT(*) FILTER (WHERE status = 'succeeded') AS succeeded,
               COUNT(*) FILTER (WHERE status = 'failed') AS failed,
               SUM(rows_read)::bigint AS rows_read, SUM(rows_loaded)::bigint AS rows_loaded,
               SUM(rows_new)::bigint AS rows_new, SUM(rows_updated)::bigint AS rows_updated,
               SUM(rows_rejected)::bigint AS rows_rejected
        FROM runs GROUP BY day ORDER BY day DESC"""


def runs_pending_enrichment_sql() -> str:
    """Runs whose rows still wait for tags or annotations (caught up by the next run)."""
    return """SELECT p.run_id, p.kind, r.status AS run_status, r.started_at, r.rows_new, r.rows_updated
        FROM pending_enrichment p LEFT JOIN runs r ON r.run_id = p.run_id
        ORDER BY r.started_at DESC NULLS LAST, p.kind"""


def run_rejected_rows_sql() -> str:
    return shared_run_rejected_rows_sql(_run_ref_sql())  # (the run reference is this dialect's)


#: Every canned query with its PostgreSQL SQL, by name.
CANNED_QUERIES: dict[str, CannedQuery] = with_sql_of(globals())


def psql_sql(name: str) -> str:
    """Canned query ``name`` for psql: its ``:name`` parameters as psql's quoted variables (``:'name'``),
    given with ``psql -v name=value`` (blank allowed: ``-v run_id=``)."""
    sql = CANNED_QUERIES[name].sql
    return re.sub(r"(?<!:):([A-Za-z_]\w*)", r":'\1'", sql) + ";\n"

