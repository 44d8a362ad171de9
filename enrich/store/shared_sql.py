"""SQL that is identical on every backend, generated from the domain's rule tables."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from enrich.annotation import RULES

#: The annotation labels, each once, in the rules' order.
LABELS = tuple(dict.fromkeys(rule.label for rule in RULES))
#: Prefix of the per-label keys in the result of the annotation discrepancy scan.
_LABEL_KEY = "label:"


def annotation_case_sql(column: str = "amount_cents") -> str:
    """The annotation rules (:data:`enrich.annotation.RULES`) as one SQL CASE expression."""
    branches = []
    for rule in RULES:
        bounds = [f"{column} >= {rule.low_cents}" if rule.low_cents is not None else "",
                  f"{column} <= {rule.high_cents}" if rule.high_cents is not None else ""]
        branches.append(f"WHEN {' AND '.join(b for b in bounds if b)} THEN '{rule.label}'")
    return f"CASE {' '.join(branches)} ELSE NULL END"


def annotation_label_counts_sql(column: str) -> str:
    """One count per annotation label of ``column``, then the rows annotated at all: the discrepancy
    scan gathers the whole database's annotations per label on its way (no second scan)."""
    return ", ".join([f"SUM(CASE WHEN {column} = '{label}' THEN 1 ELSE 0 END)" for label in LABELS]
                     + [f"COUNT({column})"])


def annotation_census_of(row: Sequence[Any] | None) -> dict[str, int]:
    """The annotation scan's row (missing, wrong, unexpected, checked, then
    :func:`annotation_label_counts_sql`'s values) as a census (see :func:`split_annotation_counts`)."""
    values = [int(value or 0) for value in row or ()] or [0] * (5 + len(LABELS))
    missing, wrong, unexpected, checked, *labels, annotated = values
    return {"missing": missing, "wrong": wrong, "unexpected": unexpected, "checked": checked,
            **{_LABEL_KEY + label: n for label, n in zip(LABELS, labels)}, "annotated": annotated}


def split_annotation_counts(found: Mapping[str, int]) -> tuple[dict[str, int], dict[str, int] | None]:
    """The discrepancy scan's result as (discrepancies, rows per label). The counts are None when
    some annotation is not a rule's label (then only counting every value gives them)."""
    counts = {key[len(_LABEL_KEY):]: n for key, n in found.items() if key.startswith(_LABEL_KEY)}
    discrepancies = {key: n for key, n in found.items() if not key.startswith(_LABEL_KEY) and key != "annotated"}
    exact = "annotated" in found and sum(counts.values()) == found["annotated"]
    return discrepancies, ({label: n for label, n in counts.items() if n} if exact else None)


def value_counts_of(rows: Iterable[Sequence[Any]]) -> dict[str, int]:
    """Rows per value from :func:`fingerprint_sql`'s rows."""
    return {str(value): int(count) for value, count, *_ in rows}


#: The enrichment tables and their value column.
ENRICHMENT_TABLES = {"tags": ("tags", "tag"), "annotations": ("annotations", "annotation")}


def fingerprint_sql(kind: str) -> str:
    """Per value of the tags (or annotations) table: row count and two modular sums of the ids.

    Reads the value index only (which holds the id); any insert, delete or change of a row
    moves them. :func:`fingerprint` digests the rows.
    """
    table, value = ENRICHMENT_TABLES[kind]
    return (f"SELECT {value}, COUNT(*), SUM(transaction_id % 1000000007), "
            f"SUM((transaction_id % 65521) * (transaction_id % 65519)) FROM {table} "
            f"GROUP BY {value} ORDER BY {value}")


def fingerprint(rows: Iterable[Sequence[Any]]) -> str:
    """The digest of :func:`fingerprint_sql`'s rows (numbers normalised, so drivers agree)."""
    digest = hashlib.sha256()
    for value, count, sum1, sum2 in rows:
        digest.update(repr((value, int(count), int(sum1 or 0), int(sum2 or 0))).encode())
    return digest.hexdigest()


def fingerprint_key(kind: str) -> str:
    """The enrichment_state key of the fingerprint a publish leaves of its table."""
    return f"{kind}_table_fingerprint"


# ..................................................................... canned queries alike on both backends
def runs_by_status_sql() -> str:
    """How many runs ended in each status, with the latest of each."""
    return """SELECT r.status, COUNT(*) AS runs, MAX(r.started_at) AS last_started_at,
           (SELECT x.run_id FROM runs x WHERE x.status = r.status ORDER BY x.started_at DESC LIMIT 1)
               AS last_run_id
        FROM runs r GROUP BY r.status ORDER BY runs DESC"""


def last_run_failed_checks_sql() -> str:
    """The failed checks of the latest run that ran its checks (critical first)."""
    return """SELECT c.run_id, r.status AS run_status, c.check_name, c.severity, c.observed, c.expected,
               c.message
        FROM check_results c JOIN runs r ON r.run_id = c.run_id
        WHERE c.run_id = (SELECT x.run_id FROM runs x
                          WHERE EXISTS (SELECT 1 FROM check_results y WHERE y.run_id = x.run_id)
                          ORDER BY x.started_at DESC LIMIT 1)
          AND c.passed = 0
        ORDER BY c.severity = 'critical' DESC, c.check_name"""


def run_rejected_rows_sql(run_ref_sql: str) -> str:
    """The quarantined rows of the run that ``run_ref_sql`` (the backend's run reference from
    ``:run_id``: full id, bare number, or blank for the latest) selects."""
    return f"""SELECT run_id, line, reason, raw FROM rejected_rows
        WHERE run_id = {run_ref_sql} ORDER BY line"""


def failed_steps_sql() -> str:
    """The latest failed step attempts, with their errors."""
    return """SELECT run_id, step, attempt, started_at, duration_s, error_type, error_message
        FROM step_runs WHERE status = 'failed' ORDER BY started_at DESC LIMIT 100"""
