"""The stages of one enrichment run, as plain functions the flow's steps call.

Each function takes a :class:`RunSettings` (resolved once, in the flow's
``start``), opens the database through :mod:`enrich.storage`, does one stage and
returns a small summary (never a large frame): large intermediate results travel
as Parquet files in the run's scratch directory (:mod:`enrich.scratch`).
"""
from __future__ import annotations

import hashlib
from datetime import datetime
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pyarrow as pa
import sqlite_utils

from enrich import annotation, checks, ingest, metrics, scratch, storage, tagging
from enrich.alerts import AlertResult, Failure, compose_failure_message, load_twilio_config, send_sms
from enrich.paths import BUNDLED_TRANSACTIONS, PROJECT_DIR  # noqa: F401 - BUNDLED_TRANSACTIONS re-exported

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSettings:
    """Everything the stages of one run need, resolved once."""

    run_id: str  # Metaflow's pathspec, e.g. "TransactionEnrichmentFlow/1795..."
    database: Path
    transactions: Path
    tag_list: tagging.TagList
    work_dir: Path

    @classmethod
    def resolve(cls, run_id: str, database: str, transactions: str, tags: str | None,
                match: str) -> "RunSettings":
        """Resolve paths to absolute ones and load (validate) the tag list."""
        database_path = Path(database).expanduser().resolve()
        return cls(run_id=run_id, database=database_path,
                   transactions=Path(transactions).expanduser().resolve(),
                   tag_list=tagging.load_tag_list(tags or None, match),
                   work_dir=scratch.work_dir(database_path, run_id))


@contextmanager
def open_database(path: Path, busy_timeout_ms: int = storage.BUSY_TIMEOUT_MS) -> Iterator[sqlite_utils.Database]:
    """The run's database, closed on exit (see :func:`storage.connect` for ``busy_timeout_ms``)."""
    db = storage.connect(path, busy_timeout_ms)
    try:
        yield db
    finally:
        db.close()


# --------------------------------------------------------------------------- stages
def ingest_batch(settings: RunSettings) -> storage.LoadStats:
    """Parse the CSV and load it into the database as one batch (one transaction)."""
    started = time.perf_counter()
    progress = Progress("ingest")

    def chunks() -> Iterator[ingest.ParsedChunk]:
        for chunk in ingest.read_chunks(settings.transactions):
            progress.add(chunk.rows_read)
            yield chunk

    stats = storage.load_batch(settings.database, settings.run_id, chunks())
    elapsed = time.perf_counter() - started
    logger.info("ingested %s: %d rows in %.2f s (%.0f rows/s)", settings.transactions, stats.rows_read,
                elapsed, stats.rows_read / elapsed if elapsed else 0.0)
    return stats


def index_wordings(settings: RunSettings) -> dict[str, object]:
    """Index the wordings of newly loaded rows for full-text search, in bulk and in one transaction
    (rows of an earlier run whose indexing failed included); the step's duration is in the ledger."""
    runs, rows = storage.index_wordings(settings.database)
    return {"runs": list(runs), "rows": rows}


class Progress:
    """Logs rows done and rows/s of a long stage, at most every few seconds."""

    def __init__(self, stage: str, every_s: float = 5.0) -> None:
        self.stage, self.every_s = stage, every_s
        self.rows, self.started = 0, time.perf_counter()
        self.last = self.started

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            logger.info("%s: %d rows done (%.0f rows/s)", self.stage, self.rows,
                        self.rows / (now - self.started))


@dataclass(frozen=True)
class Derived:
    """The result of a derive stage: where the rows are and which runs they cover."""

    kind: str
    path: str | None  # the scratch file of the derived rows (None: derived inside the database)
    covered_runs: tuple[str, ...] | None  # None: every stored transaction was re-derived
    rows: int
    counts: dict[str, int] = field(default_factory=dict)  # ledger figures (runs columns)
    distribution: dict[str, int] = field(default_factory=dict)  # category shares, for drift
    state: dict[str, str] = field(default_factory=dict)
    #: what was wrong in the table before this run repaired it (empty: nothing was)
    repaired: dict[str, int] = field(default_factory=dict)
    #: the table's fingerprint when derived: the publish refuses a table changed meanwhile
    table_fingerprint: str | None = None


#: The enrichment_state key of the rules last applied, per kind (a change re-derives every row).
_RULES_KEYS = {storage.TAGS: "tags_fingerprint", storage.ANNOTATIONS: "annotation_rules_fingerprint"}
_TAG_COLUMNS = ("id", "wording")
_TAG_SCHEMA = pa.schema([("transaction_id", pa.int64()), ("tag", pa.string())])

ANNOTATION_RULES_FINGERPRINT = hashlib.sha256(repr(annotation.RULES).encode()).hexdigest()


def derive_tags(settings: RunSettings) -> Derived:
    """Tag every transaction that needs it (see :func:`_derive`), and record this run's ambiguous
    wordings (two or more tags found, so none stored) for the ``most_ambiguous_wordings`` query."""
    tags = settings.tag_list
    ambiguous: list[pd.DataFrame] = []

    def compute(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
        return tagging.tag_frame(frame, tags, ambiguous)

    derived = _derive(settings, storage.TAGS, tags.fingerprint, compute)
    wordings = (pd.concat(ambiguous) if ambiguous else pd.DataFrame({"wording": [], "tags_found": []}))
    counts = (wordings.groupby("wording", sort=False)
              .agg(tags_found=("tags_found", "max"), transactions=("tags_found", "size")).reset_index())
    with open_database(settings.database) as db:
        storage.save_ambiguous_wordings(db, settings.run_id, counts)
    return derived


def annotate_in_database(settings: RunSettings) -> tuple[Derived, storage.PublishStats]:
    """Annotate every transaction that needs it (the scope as in :func:`_derive`) inside the
    database, in one transaction: the rules are a pure function of the amount, so they run as
    SQL over the stored rows (:func:`storage.annotate_in_place`) instead of a round trip
    through Python."""
    scope = _scope(settings, storage.ANNOTATIONS, ANNOTATION_RULES_FINGERPRINT)
    state = {_RULES_KEYS[storage.ANNOTATIONS]: ANNOTATION_RULES_FINGERPRINT}
    if scope.covered == ():
        logger.info("annotations: nothing pending, nothing to write")
        stats, classes = storage.PublishStats(written=0, removed=0, pending_runs=()), {}
    else:
        stats, classes = storage.annotate_in_place(settings.database, settings.run_id, scope.covered, state,
                                                   expected_fingerprint=scope.table_fingerprint)
    zero = classes.pop(None, 0)
    counts = {"annotated": sum(classes.values()), "zero_amount": zero}
    logger.info("annotations: %d rows, %s, covering %s", stats.written, counts, scope.describe())
    return Derived(kind=storage.ANNOTATIONS, path=None, covered_runs=scope.covered, rows=stats.written,
                   counts=counts, distribution={**classes, "ZERO": zero}, state=state,
                   repaired=scope.repaired, table_fingerprint=scope.table_fingerprint), stats


@dataclass(frozen=True)
class _Scope:
    """Which transactions a derive stage covers, and why."""

    covered: tuple[str, ...] | None  # the pending runs; None: every stored transaction
    repaired: dict[str, int]  # what was wrong in the table, when it was changed outside the pipeline
    table_fingerprint: str

    def describe(self) -> str:
        return "every transaction" if self.covered is None else f"runs {list(self.covered)}"


def _scope(settings: RunSettings, kind: str, fingerprint: str) -> _Scope:
    """Every transaction when the rules changed or the table was changed outside the pipeline
    (then repaired), else the rows of the runs still pending for ``kind``."""
    with open_database(settings.database) as db:
        rules_changed = storage.get_state(db, _RULES_KEYS[kind]) != fingerprint
        current, recorded = storage.table_fingerprint(db, kind)
        changed_outside = recorded is not None and current != recorded
        repaired = _discrepancies(db, kind, settings.tag_list) if changed_outside else {}
        covered = None if rules_changed or changed_outside else storage.pending_runs(db, kind)
    if changed_outside:
        logger.error("the %s table was changed outside the pipeline since its last publish (%s): "
                     "re-deriving every transaction to repair it", kind, repaired)
    elif rules_changed:
        logger.info("%s rules differ from those last applied: re-deriving every transaction", kind)
    return _Scope(covered, {k: v for k, v in repaired.items() if k != "checked" and v}, current)


def _derive(settings: RunSettings, kind: str, fingerprint: str,
            compute: Callable[[pd.DataFrame], tuple[pd.DataFrame, dict[str, int]]]) -> Derived:
    """Re-derive ``kind`` (tags) for the rows of every pending run, or for all rows when the rules
    changed (see :func:`_scope`).

    Reads the transactions from the database chunk by chunk and streams the
    result to a Parquet file; nothing is written to the database here.
    """
    counts: Counter[str] = Counter()
    path = settings.work_dir / f"{kind}.parquet"
    scope = _scope(settings, kind, fingerprint)

    def results() -> Iterator[pd.DataFrame]:
        progress = Progress(f"derive {kind}")
        for frame in storage.iter_transactions(settings.database, _TAG_COLUMNS, scope.covered):
            result, stats = compute(frame)
            counts.update(stats)
            progress.add(len(frame))
            yield result

    rows = scratch.write_frames(path, results(), _TAG_SCHEMA)
    logger.info("derived %s: %d rows, %s, covering %s", kind, rows, dict(counts), scope.describe())
    return Derived(kind=kind, path=str(path), covered_runs=scope.covered, rows=rows, counts=dict(counts),
                   distribution=dict(counts), state={_RULES_KEYS[kind]: fingerprint},
                   repaired=scope.repaired, table_fingerprint=scope.table_fingerprint)


def _discrepancies(db: sqlite_utils.Database, kind: str, tags: tagging.TagList) -> dict[str, int]:
    """How the stored tags (or annotations) differ from the rules, over the whole database."""
    if kind == storage.TAGS:
        return checks.tag_discrepancies(storage.iter_stored_tags(db), tags)
    return storage.annotation_discrepancies(db)


def publish(settings: RunSettings, derived: Derived) -> storage.PublishStats:
    """Write a derive stage's result to the database in one transaction (safe to retry).

    Nothing pending and nothing derived (an unchanged re-run): nothing to write, and the
    table is left as it is, without even a transaction.
    """
    if derived.covered_runs == () and derived.rows == 0:
        logger.info("published %s: nothing pending, nothing to write", derived.kind)
        return storage.PublishStats(written=0, removed=0, pending_runs=())
    return storage.publish(settings.database, derived.kind, settings.run_id,
                           scratch.read_frames(Path(derived.path)), derived.covered_runs, state=derived.state,
                           expected_fingerprint=derived.table_fingerprint)


# --------------------------------------------------------------------------- checks
def run_checks(settings: RunSettings | None, load_stats: storage.LoadStats | None,
               derived: list[Derived], limits: checks.CheckSettings) -> list[checks.CheckResult]:
    """Run every data check after publishing and store the verdicts (and anomalies) in the ledger."""
    if settings is None:
        return []
    amounts = storage.transaction_amounts(settings.database, [settings.run_id])
    with open_database(settings.database) as db:
        history = storage.recent_runs(db, settings.run_id, limits.history_runs)
        results = []
        if load_stats is not None:
            results += [
                checks.check_accounting(load_stats.rows_read, load_stats.rows_loaded,
                                        load_stats.rows_rejected, load_stats.rows_duplicate),
                checks.check_control_total(load_stats.cents_in_file, load_stats.cents_stored),
                checks.check_reject_ratio(load_stats.rows_read, load_stats.rows_rejected,
                                          limits.reject_threshold),
                checks.check_volume(load_stats.rows_read, [r["rows_read"] for r in history
                                                           if r["rows_read"] is not None],
                                    limits.volume_tolerance),
            ]
        repaired = {result.kind: result.repaired for result in derived if result.repaired}
        results += _whole_database_checks(settings, repaired)
        for result in derived:
            dimension = "tagging" if result.kind == storage.TAGS else "annotations"
            storage.save_distribution(db, settings.run_id, dimension, result.distribution)
            baseline = storage.distribution(db, [r["run_id"] for r in history], dimension)
            results.append(checks.check_drift(dimension, result.distribution, baseline, limits.psi_threshold))
        outliers, bounds = checks.amount_outliers(amounts, limits.mad_factor)
        listed = outliers.head(limits.anomalies_listed)
        results.append(checks.check_outliers(len(outliers), len(listed), bounds))
        storage.save_check_results(db, settings.run_id, [r.as_row() for r in results], listed)
    for result in results:
        log = logger.info if result.passed else (logger.error if result.severity == "critical" else logger.warning)
        log("check %s (%s): %s", result.check_name, "passed" if result.passed else "FAILED", result.message)
    return results


def _whole_database_checks(settings: RunSettings, repaired: dict[str, dict[str, int]]) -> list[checks.CheckResult]:
    """Annotations complete, tags complete, referential integrity: three scans of the whole
    database, each on its own connection in its own thread (SQLite releases the GIL while it
    scans, so they share the cores); the longest, annotations, as two halves of the ids. A table
    this run repaired reports what it found wrong."""

    def annotations_between(ids: tuple[int, int]) -> dict[str, int]:
        with open_database(settings.database) as db:
            return storage.annotation_discrepancies(db, ids)

    def tags() -> checks.CheckResult:
        if storage.TAGS in repaired:
            return checks.check_tags_complete(repaired[storage.TAGS], repaired=True)
        with open_database(settings.database) as db:
            return _check_tags(db, settings.tag_list)

    def integrity() -> checks.CheckResult:
        with open_database(settings.database) as db:
            return checks.check_referential_integrity(storage.orphan_counts(db))

    with open_database(settings.database) as db:
        ids = storage.id_range(db)
    halves = [] if ids is None else [(ids[0], (ids[0] + ids[1]) // 2), ((ids[0] + ids[1]) // 2 + 1, ids[1])]
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="check") as pool:
        # the longest scan, annotations, in two halves of the ids
        parts = [] if storage.ANNOTATIONS in repaired else [pool.submit(annotations_between, h) for h in halves]
        others = [pool.submit(check) for check in (tags, integrity)]
        if storage.ANNOTATIONS in repaired:
            annotations = checks.check_annotations_complete(repaired[storage.ANNOTATIONS], repaired=True)
        else:
            found = Counter({"missing": 0, "wrong": 0, "unexpected": 0, "checked": 0})
            for part in parts:
                found.update(part.result())
            annotations = checks.check_annotations_complete(dict(found))
        return [annotations, *(future.result() for future in others)]


def _check_tags(db: sqlite_utils.Database, tags: tagging.TagList) -> checks.CheckResult:
    """Tags complete: every transaction was tagged when it was published and nothing changed since.

    Each publish tags exactly the rows it re-derives and leaves a fingerprint of the
    tags table; when the fingerprint still matches, no run is pending and the tag list
    is the one last applied, the whole table is known good without re-tagging it.
    Otherwise every stored transaction is re-tagged and compared (slower, but exact).
    """
    current, recorded = storage.table_fingerprint(db, storage.TAGS)
    pending = storage.pending_runs(db, storage.TAGS)
    rules_applied = storage.get_state(db, _RULES_KEYS[storage.TAGS]) == tags.fingerprint
    if current == recorded and not pending and rules_applied:
        return checks.check_tags_complete({"checked": storage.table_counts(db)["transactions"]},
                                          method="tags table unchanged since tagged at publish")
    logger.warning("tags table differs from its last publish or runs are pending (%s): re-tagging "
                   "every stored transaction to compare", list(pending))
    found = checks.tag_discrepancies(storage.iter_stored_tags(db), tags)
    if not rules_applied and found["checked"]:
        found["tag_list_not_applied"] = 1
    return checks.check_tags_complete({**found, "pending_runs": len(pending)},
                                      method="every transaction re-tagged")


def check_failures(results: list[checks.CheckResult]) -> list[Failure]:
    """Failed critical checks as failures for the alert."""
    return [Failure(f"check:{r.check_name}", "CheckFailed", r.message) for r in checks.critical_failures(results)]


# --------------------------------------------------------------------------- metrics
def run_metrics(db: sqlite_utils.Database, flow_name: str, run_id: str) -> metrics.RunMetrics:
    """The Prometheus view of a finished run, read back from its ledger."""
    run = storage.get_run(db, run_id) or {}
    attempts = storage.step_attempts(db, run_id)
    finished = _timestamp(run.get("finished_at")) or time.time()
    started = _timestamp(run.get("started_at")) or finished
    rows = {name.removeprefix("rows_"): int(run[name]) for name in storage.RUN_FIELDS
            if name not in ("status", "started_at", "finished_at", "user", "input_path", "input_sha256",
                            "input_bytes", "tags_sha256", "match_mode") and run.get(name) is not None}
    return metrics.RunMetrics(
        flow=flow_name, run_id=run_id, succeeded=run.get("status") == "succeeded",
        finished_at=finished, duration_s=max(finished - started, 0.0), rows=rows,
        step_durations={a["step"]: float(a["duration_s"] or 0.0) for a in attempts},
        step_attempts={step: sum(1 for a in attempts if a["step"] == step and a["status"] != "skipped")
                       for step in {a["step"] for a in attempts}},
        checks=[(c["check_name"], c["severity"], bool(c["passed"])) for c in storage.check_results(db, run_id)],
        anomalies=storage.anomaly_count(db, run_id))


def publish_run_metrics(database: Path, flow_name: str, run_id: str, textfile: Path | None) -> list[str]:
    """Write ``metrics.prom`` (atomically) and push to ``$PROMETHEUS_PUSHGATEWAY``; never raises."""
    try:
        with open_database(database) as db:
            facts = run_metrics(db, flow_name, run_id)
            last_success = _timestamp(storage.last_success_finished_at(db, run_id))
    except (storage.StorageError, ValueError) as exc:
        logger.error("metrics not published: %s", exc)
        return [str(exc)]
    problems = metrics.publish_metrics(facts, textfile, metrics.gateway_url_from_env(), last_success)
    for problem in problems:
        logger.warning("metrics: %s", problem)
    return problems


def default_metrics_path(database: Path) -> Path:
    """``metrics.prom`` beside the database."""
    return database.with_name("metrics.prom")


def _timestamp(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


# --------------------------------------------------------------------------- failure check
def alert_failures(database: Path | None, flow_name: str, run_number: str,
                   failures: list[Failure]) -> AlertResult:
    """Send one SMS listing every failure of the run, and record it in the ledger when possible."""
    body = compose_failure_message(flow_name, run_number, failures)
    result = send_sms(load_twilio_config(PROJECT_DIR), body)
    logger.error("run %s failed (%d failure(s)); SMS alert: %s%s", run_number, len(failures),
                 result.status, f" ({result.error})" if result.error else "")
    if database is not None:
        try:
            with open_database(database) as db:
                storage.record_alert(db, f"{flow_name}/{run_number}", "sms", result.status,
                                     result.recipients, body, result.error)
        except storage.StorageError as exc:
            logger.error("could not record the alert in the ledger: %s", exc)
    return result


def failure_summary(failures: list[Failure]) -> str:
    """One line per failure, for the run's final error message."""
    return f"{len(failures)} failure(s): " + "; ".join(f"{f.step}: {f.error_type}: {f.message}" for f in failures)


def run_started(settings: RunSettings, user: str) -> dict[str, object]:
    """Open the run's ledger row (creating the database and its schema if needed)."""
    with open_database(settings.database):
        pass
    return {"status": "running", "user": user, "input_path": str(settings.transactions),
            "tags_sha256": settings.tag_list.fingerprint, "match_mode": settings.tag_list.mode}


def load_figures(stats: storage.LoadStats, input_file: tuple[str, int] | None = None) -> dict[str, object]:
    """The ledger figures of a loaded batch, with the input file's SHA-256 and size when given."""
    figures: dict[str, object] = {name: value for name, value in vars(stats).items()
                                  if name in storage.RUN_FIELDS}
    if input_file is None:
        return figures
    return {**figures, "input_sha256": input_file[0], "input_bytes": input_file[1]}


def file_digest(path: Path) -> tuple[str, int]:
    """SHA-256 (hex) and size of a file, read in 8 MiB blocks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def ingest_with_figures(settings: RunSettings) -> tuple[storage.LoadStats, dict[str, object]]:
    """:func:`ingest_batch`, and the ledger figures of the batch and of its file, whose SHA-256 is
    computed in a thread meanwhile (hashing releases the GIL; the load is mostly SQLite's)."""
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest") as pool:
        digest = pool.submit(file_digest, settings.transactions)
        stats = ingest_batch(settings)
        return stats, load_figures(stats, digest.result())


def finish(database: Path, run_id: str, status: str) -> None:
    """Close the run's ledger row and, on success, remove its scratch files.

    An unusable database (read-only, missing, not SQLite) is logged, not raised: the
    run has already failed for that reason, and ``end`` must still write its metrics
    and card and fail the run with the full list of failures.
    """
    try:
        with open_database(database) as db:
            storage.record_run(db, run_id, status=status, finished_at=storage.utc_now())
    except storage.StorageError as exc:
        logger.error("the run's ledger row could not be closed: %s", exc)
        return
    if status == "succeeded":
        scratch.remove(scratch.work_dir(database, run_id))
