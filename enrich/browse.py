"""Browsing the database with datasette: the metadata (descriptions, sorts, facets, canned queries).

``enrich browse --database DB --port PORT`` (``make browse``) brings the database's
schema up to date (views, full-text index), writes the metadata below to a temporary
JSON file and runs ``python -m datasette serve`` with it (:func:`serve`). datasette
loads the project's plugin (:mod:`enrich.datasette_csv`: CSV downloads have their
formula cells escaped) through its entry point; :func:`serve` refuses to start without
it. ``enrich browse --metadata`` prints the metadata only. datasette serves an SQLite
file: a PostgreSQL database is read with ``enrich query`` or ``psql`` instead.

The canned queries come from :data:`enrich.store.sqlite.queries.CANNED_QUERIES` (all SQL
lives in the store); every table, view and column of the schema has a description here,
which ``tests/test_browse.py`` enforces against a freshly migrated database, so the
metadata cannot drift from the schema.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import tempfile
from importlib.metadata import entry_points
from pathlib import Path
from types import FrameType

from enrich.datasette_csv import PLUGIN_NAME
from enrich.store import DatabaseMissing, open_store
from enrich.store.sqlite.queries import CANNED_QUERIES
from enrich.store.sqlite.schema import FTS_TABLE

TITLE = "Transaction enrichment"
DESCRIPTION = (
    "Bank transactions stored, tagged and annotated by the enrichment flow, with the ledger "
    "of every run (steps, checks, alerts). Amounts are in EUR (amount_cents: the same in cents). "
    "Search wordings with the search box on transactions or enriched_transactions; the canned "
    "queries below answer the usual monitoring questions."
)
#: datasette settings for ``serve``: the whole-table aggregate views (tag_summary,
#: annotation_summary) join millions of rows and take several seconds on 10 million
#: transactions, far beyond datasette's default 1 s limit; the canned queries answer in
#: milliseconds whatever the size.
DATASETTE_SETTINGS: dict[str, int] = {"sql_time_limit_ms": 30_000, "facet_time_limit_ms": 500}
#: Module run as ``python -m`` to serve the database: datasette's own command line, which loads the
#: project's plugin (:mod:`enrich.datasette_csv`) through its entry point.
DATASETTE_LAUNCHER = "datasette"

_RUN_ID = "run id: TransactionEnrichmentFlow/<Metaflow run number>"
_TAG = "the one tag of the tag list found in the wording (TATA, TOTO, TUTU, TAXI by default)"
_ANNOTATION = ("by amount: LARGE SALE (> 300 EUR), SALE (0 to 300 EUR), SMALL EXPENSE (-200 to 0 EUR), "
               "EXPENSE (< -200 EUR); zero amounts have none")
_AGGREGATE_COLUMNS = {
    "transactions": "number of transactions",
    "total_eur": "sum of their amounts, in EUR",
    "mean_eur": "mean amount, in EUR",
    "min_eur": "smallest amount, in EUR",
    "max_eur": "largest amount, in EUR",
}
_RUN_COUNTS = {
    "rows_read": "data rows read from the CSV file",
    "rows_loaded": "distinct rows loaded (new + updated + unchanged)",
    "rows_new": "rows whose id was not stored yet",
    "rows_updated": "stored rows whose amount or wording changed",
    "rows_unchanged": "stored rows loaded again unchanged",
    "rows_rejected": "rows quarantined in rejected_rows",
    "rows_duplicate": "repeated identical rows, loaded once",
    "tagged": "re-derived rows with exactly one tag",
    "untagged": "re-derived rows with no tag",
    "ambiguous": "re-derived rows with two or more different tags (no tag stored)",
    "annotated": "re-derived rows given an annotation",
    "zero_amount": "re-derived rows with a zero amount (no annotation by rule)",
}

#: Per table or view: description, column descriptions and datasette options.
TABLES: dict[str, dict[str, object]] = {
    "transactions": {
        "description": "Every stored transaction, upserted by id (files are batches: rows absent from a "
                       "later file are kept).",
        "columns": {
            "id": "transaction id from the CSV (positive integer)",
            "amount_cents": "amount in cents (integer, exact), as stored",
            "amount": "amount in EUR (amount_cents / 100, computed)",
            "wording": "bank wording, verbatim (full-text searchable)",
            "first_run": "run that first loaded this transaction (run_keys.run_key)",
            "last_changed_run": "last run that inserted it or changed its amount or wording (run_keys.run_key)",
        },
        "sort": "id", "fts_table": FTS_TABLE, "fts_pk": "id", "label_column": "wording",
    },
    "tags": {
        "description": "The tag of each transaction whose wording holds exactly one tag of the list.",
        "columns": {"transaction_id": "transactions.id", "tag": _TAG,
                    "run": "run that derived this tag (run_keys.run_key)"},
        "facets": ["tag"],
    },
    "annotations": {
        "description": "The annotation of every non-zero transaction, by exact amount.",
        "columns": {"transaction_id": "transactions.id", "annotation": _ANNOTATION,
                    "run": "run that derived this annotation (run_keys.run_key)"},
        "facets": ["annotation"],
    },
    "run_keys": {
        "description": "The small integer key of each run id, used for lineage on every transaction, tag "
                       "and annotation (the enriched_transactions view shows the run ids).",
        "columns": {"run_key": "lineage key", "run_id": _RUN_ID},
        "sort": "run_key", "label_column": "run_id",
    },
    "rejected_rows": {
        "description": "Quarantined input rows: line, raw text and why each was rejected.",
        "columns": {"run_id": _RUN_ID, "line": "line number in the CSV file (header = 1)",
                    "raw": "the line as read", "reason": "why it was rejected and what to fix"},
        "facets": ["run_id"],
    },
    "pending_enrichment": {
        "description": "Runs whose new or changed rows still need tags, annotations or full-text "
                       "indexing; the next run catches them up.",
        "columns": {"run_id": _RUN_ID, "kind": "tags, annotations or search (the full-text index)"},
        "facets": ["kind"],
    },
    "enrichment_state": {
        "description": "Bookkeeping: fingerprints of the rules and tables last applied.",
        "columns": {"key": "what the value is", "value": "fingerprint (SHA-256)"},
    },
    "runs": {
        "description": "The run ledger: one row per run with its status, times, input and counts.",
        "columns": {
            "run_id": _RUN_ID, "status": "running, succeeded, failed or interrupted (Ctrl-C or SIGTERM)",
            "started_at": "start time (UTC, ISO 8601)", "finished_at": "end time (UTC, ISO 8601)",
            "user": "who started the run", "input_path": "CSV file loaded",
            "input_sha256": "SHA-256 of the CSV file", "input_bytes": "size of the CSV file in bytes",
            "tags_sha256": "fingerprint of the tag list and match mode",
            "match_mode": "tag matching: word or substring", **_RUN_COUNTS,
        },
        "sort_desc": "started_at", "facets": ["status", "user"], "label_column": "run_id",
    },
    "step_runs": {
        "description": "Every attempt of every step of every run, with its duration and error.",
        "columns": {
            "run_id": _RUN_ID, "step": "flow step", "task_id": "Metaflow task id",
            "attempt": "attempt number (0 = first; retries count up)",
            "status": "running, succeeded, failed or skipped (after an upstream failure)",
            "started_at": "start time (UTC)", "finished_at": "end time (UTC)",
            "duration_s": "duration in seconds", "error_type": "exception class of a failed attempt",
            "error_message": "error message of a failed attempt",
        },
        "sort_desc": "started_at", "facets": ["status", "step"],
    },
    "alerts": {
        "description": "Every SMS alert attempted, with its text and outcome (never the auth token).",
        "columns": {
            "run_id": _RUN_ID, "created_at": "when it was attempted (UTC)", "channel": "sms",
            "status": "sent, partial (some recipients failed), failed or not_configured", "recipients": "phone numbers, comma-separated",
            "message": "the SMS text", "error": "why it was not sent",
        },
        "sort_desc": "created_at", "facets": ["status"],
    },
    "check_results": {
        "description": "The data checks of each run: verdict, observed and expected values.",
        "columns": {
            "run_id": _RUN_ID, "check_name": "which check (see the README's Monitoring section)",
            "severity": "critical (fails the run and alerts) or warning", "passed": "1 passed, 0 failed",
            "observed": "what was found", "expected": "what was expected", "message": "the verdict in words",
        },
        "facets": ["passed", "severity", "check_name"],
    },
    "anomalies": {
        "description": "Amounts far outside their batch's usual range (median ± 10 MAD), per run.",
        "columns": {"run_id": _RUN_ID, "transaction_id": "transactions.id", "kind": "kind of anomaly",
                    "amount_cents": "amount in cents", "detail": "the bounds it broke"},
        "facets": ["kind"],
    },
    "run_distributions": {
        "description": "Each run's category counts (annotation classes, tagged/untagged/ambiguous), the "
                       "baseline of the drift checks; and the whole database's tags and annotations per "
                       "value as the run's checks found them (whole_database_tags, whole_database_annotations).",
        "columns": {"run_id": _RUN_ID, "dimension": "annotations or tagging (the run's rows); "
                    "whole_database_tags or whole_database_annotations", "category": "the category",
                    "count": "rows in it"},
        "facets": ["dimension"],
    },
    "ambiguous_wordings": {
        "description": "The wordings in which a run's tagging found two or more different tags (such a "
                       "transaction gets no tag); per run they add up to runs.ambiguous.",
        "columns": {"run_id": _RUN_ID, "wording": "the wording",
                    "tags_found": "how many different tags it holds (2 or more)",
                    "transactions": "rows of the run with this wording"},
        "sort_desc": "transactions",
    },
    "schema_version": {
        "description": "Schema migrations applied to this database.",
        "columns": {"version": "migration number", "applied_at": "when it was applied (UTC)"},
    },
    "run_lock": {
        "description": "The run holding the database's run lock (one run writes at a time); empty when free.",
        "columns": {"id": "always 1 (one lock)", "run_id": _RUN_ID, "user": "who started the run",
                    "host": "host of the run's Metaflow process", "pid": "its process id",
                    "process_start": "its start identity (tells a recycled pid apart)",
                    "acquired_at": "when the lock was taken (UTC)",
                    "expires_at": "end of its lease (UTC), pushed forward while its steps work; a holder on "
                                  "another host whose lease expired is taken as dead"},
    },
    "staged_tags": {
        "description": "Tags a run's tagging shards derived, waiting for its publish step (emptied when it "
                       "publishes or gives up).",
        "columns": {"run": "run that derived them (run_keys.run_key)", "shard": "tagging shard number",
                    "transaction_id": "transactions.id", "tag": _TAG},
    },
    "staged_ambiguous": {
        "description": "Ambiguous wordings a run's tagging shards found, waiting for its publish step (then "
                       "summed into ambiguous_wordings).",
        "columns": {"run_id": _RUN_ID, "shard": "tagging shard number", "wording": "the wording",
                    "tags_found": "how many different tags it holds (2 or more)",
                    "transactions": "rows of the shard with this wording"},
    },
    FTS_TABLE: {
        "description": "Full-text index of transactions.wording (SQLite FTS5, accents and case ignored), "
                       "kept in step by triggers; search it from transactions or enriched_transactions.",
        "columns": {"wording": "indexed wording", FTS_TABLE: "FTS5 hidden column",
                    "rank": "FTS5 relevance (lower is better)"},
    },
    "enriched_transactions": {
        "description": "View: each transaction with its tag, annotation and lineage (which runs loaded, "
                       "changed, tagged and annotated it); always in step with the tables.",
        "columns": {
            "id": "transaction id", "amount": "amount in EUR", "amount_cents": "amount in cents",
            "wording": "bank wording", "tag": _TAG + "; empty when none or ambiguous",
            "annotation": _ANNOTATION, "first_run_id": "run that first loaded it",
            "last_changed_run_id": "last run that inserted or changed it",
            "tag_run_id": "run that derived its tag", "annotation_run_id": "run that derived its annotation",
        },
        "fts_table": FTS_TABLE, "fts_pk": "id", "facets": ["tag", "annotation"],
    },
    "tag_summary": {
        "description": "View: per tag, transactions and their amounts (count, sum, mean, min, max in EUR).",
        "columns": {"tag": "the tag", **_AGGREGATE_COLUMNS},
    },
    "annotation_summary": {
        "description": "View: per annotation, transactions and their amounts (count, sum, mean, min, max "
                       "in EUR).",
        "columns": {"annotation": "the annotation", **_AGGREGATE_COLUMNS},
    },
    "run_summary": {
        "description": "View: per run, its ledger row with duration, failed steps, failed checks, "
                       "anomalies and alerts.",
        "columns": {
            "run_id": _RUN_ID, "status": "running, succeeded, failed or interrupted (Ctrl-C or SIGTERM)", "started_at": "start time (UTC)",
            "finished_at": "end time (UTC)", "duration_s": "wall-clock duration in seconds",
            "user": "who started the run", "input_path": "CSV file loaded",
            "match_mode": "tag matching: word or substring", **_RUN_COUNTS,
            "failed_attempts": "step attempts that failed (retries included)",
            "failed_steps": "steps with a failed attempt, comma-separated",
            "critical_checks_failed": "critical checks that failed", "warnings": "warning checks that failed",
            "anomalies": "amount anomalies listed", "alerts": "SMS alerts attempted",
        },
        "facets": ["status"],
    },
}


def metadata(database_name: str) -> dict[str, object]:
    """datasette metadata for a database served under ``database_name`` (its file name's stem)."""
    queries = {q.name: {"title": q.title, "description": q.description, "sql": q.sql}
               for q in CANNED_QUERIES.values()}
    return {
        "title": TITLE,
        "description": DESCRIPTION,
        "databases": {database_name: {"description": DESCRIPTION, "tables": TABLES, "queries": queries}},
    }


def database_name(path: str | Path) -> str:
    """The name datasette serves a database file under (``database.db`` -> ``database``)."""
    return Path(path).stem


def prepare(path: str | Path) -> Path:
    """Bring an existing database's schema up to date (views, full-text index); return its path."""
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise DatabaseMissing(f"{path}: no such database file. Create it with a run (`make run`), "
                              "or pass --database path/to/file.db (make browse DATABASE=...).")
    open_store(path).prepare()
    return path


def plugin_installed() -> bool:
    """Whether datasette will load the project's CSV plugin: its entry point is installed
    (``pip install -e .``, which ``make install`` runs)."""
    return any(point.name == PLUGIN_NAME for point in entry_points(group="datasette"))


def datasette_command(path: Path, metadata_file: Path, port: int, host: str) -> list[str]:
    """The ``datasette serve`` command line for ``path``, run by this Python (its plugins included)."""
    command = [sys.executable, "-m", DATASETTE_LAUNCHER, "serve", str(path), "--metadata", str(metadata_file),
               "--port", str(port), "--host", host]
    for name, value in DATASETTE_SETTINGS.items():
        command += ["--setting", name, str(value)]
    return command


def serve(path: Path, port: int, host: str) -> int:
    """Serve the prepared database ``path`` with datasette until Ctrl-C or SIGTERM; datasette's exit code.

    datasette runs in a process of its own: it reads the file with Python's ``sqlite3``,
    while this process has used the store's SQLite library (:func:`prepare`); one
    process never holds a file open through both. The temporary metadata is removed on
    the way out, whichever way datasette stops.
    """
    with tempfile.TemporaryDirectory(prefix="enrich-datasette-") as scratch:
        metadata_file = Path(scratch) / "metadata.json"
        metadata_file.write_text(json.dumps(metadata(database_name(path)), indent=2), encoding="utf-8")
        command = datasette_command(path, metadata_file, port, host)
        print(f"serving {path} on http://{host}:{port}/{database_name(path)} (Ctrl-C stops)", file=sys.stderr)
        # SIGTERM ends this process like Ctrl-C does: subprocess.run then stops datasette, and
        # the temporary metadata is removed on the way out
        previous = signal.signal(signal.SIGTERM, _exit_on_signal)
        try:
            return subprocess.run(command, check=False).returncode
        except KeyboardInterrupt:  # Ctrl-C reached datasette too, which stops
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_signal(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: leave like Ctrl-C (the ``finally`` clauses run)."""
    raise SystemExit(128 + signum)
