"""The monitoring queries every backend offers: their names, titles, descriptions and parameters.

Each backend writes their SQL in its own dialect (``enrich/store/<backend>/queries.py``).
On SQLite, datasette publishes them (``make browse``); on every backend,
``enrich query NAME`` runs one and prints its rows.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class CannedQuery:
    """A monitoring query (``/database/<name>`` in datasette, ``enrich query <name>``).

    ``full_scan_when`` names the exceptional condition under which the query may scan a
    large table (transactions, tags, annotations); otherwise it never does. ``sql`` is the
    backend's, with ``:name`` parameters.
    """

    name: str
    title: str
    description: str
    sql: str
    full_scan_when: str | None = None

    @property
    def parameters(self) -> tuple[str, ...]:
        """The ``:name`` parameters of the SQL, in order of first appearance."""
        return tuple(dict.fromkeys(re.findall(r"(?<!:):([A-Za-z_]\w*)", self.sql)))

    def with_sql(self, sql: str) -> "CannedQuery":
        return replace(self, sql=sql)


def positional(sql: str, values: dict[str, str | None], placeholder: str = "?") -> tuple[str, list[object]]:
    """``sql`` with its ``:name`` parameters as positional ones, and their values in order (a
    missing value is NULL). ``placeholder`` is ``?``, or ``$`` for numbered ones ($1, $2...)."""
    params: list[object] = []

    def mark(match: re.Match[str]) -> str:
        params.append(values.get(match.group(1)))
        return f"${len(params)}" if placeholder == "$" else "?"

    return re.sub(r"(?<!:):([A-Za-z_]\w*)", mark, sql), params


QUERIES: dict[str, CannedQuery] = {q.name: q for q in (
    CannedQuery("runs_by_status", "Runs by status",
                "How many runs succeeded, failed or are still running, with the latest of each.",
                ""),
    CannedQuery("last_run_failed_checks", "Failed checks of the last run",
                "The checks that failed in the latest run that ran its checks, critical ones first "
                "(empty when everything passed).", ""),
    CannedQuery("run_rejected_rows", "Rejected rows of a run",
                "The rows a run quarantined, by line, with the reason and the raw text. run_id: the full "
                "id (TransactionEnrichmentFlow/123), its number (123), or blank for the latest run.",
                ""),
    CannedQuery("step_durations", "Step durations: mean and 95th percentile",
                "Per step, over its succeeded attempts in every run: attempts, mean, 95th percentile "
                "(nearest rank) and maximum duration in seconds.", ""),
    CannedQuery("runs_between", "Runs in a time range",
                "Runs started from start (included) to end (excluded), UTC, as 2025-01-31 or "
                "2025-01-31T12:00; leave a bound blank to leave it open.", ""),
    CannedQuery("unannotated_transactions", "Transactions without an annotation",
                "Non-zero transactions that have no annotation: should be empty (zero amounts have none "
                "by rule). While the latest whole-database annotations check passed, only rows of runs "
                "whose annotations are still pending are searched; otherwise the whole table.",
                "",
                full_scan_when="the latest annotations_complete check failed or no run has checked yet"),
    CannedQuery("most_ambiguous_wordings", "Most frequent ambiguous wordings",
                "Wordings in which tagging found two or more different tags (so the transaction got no "
                "tag), most frequent first, for one run (run_id: full id, number, or blank for the "
                "latest run that recorded some).", ""),
    CannedQuery("daily_volume", "Daily volume",
                "Per UTC day: runs, succeeded, failed, and rows read, loaded, new, updated, rejected.",
                ""),
    CannedQuery("failed_steps", "Failed step attempts",
                "The latest 100 failed step attempts with their error (a retried step that then "
                "succeeded shows here too).", ""),
    CannedQuery("runs_pending_enrichment", "Runs waiting for tags, annotations or search indexing",
                "Runs whose new or changed rows still need tags, annotations or search indexing; the "
                "next run catches them up. Empty when every run's enrichment was published.", ""),
)}


def with_sql_of(functions: Mapping[str, Callable[[], str]]) -> dict[str, CannedQuery]:
    """Every query of :data:`QUERIES` with its SQL from ``functions`` (a backend module's
    namespace), where query ``name``'s SQL is ``<name>_sql()``."""
    return {name: query.with_sql(functions[f"{name}_sql"]()) for name, query in QUERIES.items()}
