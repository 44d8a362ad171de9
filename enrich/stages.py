"""The stages of one enrichment run: the functions the flow's steps call, one per step.

Each takes the run's :class:`~enrich.settings.RunSettings`, wires domain functions to the
store, and returns a small summary (never a large frame): large intermediate results stay
in the database (staging tables) so no step reads a file another step wrote.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from enrich import checking, derivation
from enrich.checks import CheckResult, CheckSettings
from enrich.derivation import ANNOTATION_RULES_FINGERPRINT, RULES_KEYS, Derived
from enrich.errors import EnrichError, StorageError
from enrich.failures import Failure
from enrich.files import file_digest
from enrich.logs import Progress
from enrich.settings import RunSettings
from enrich.store import ANNOTATIONS, LoadStats, PublishStats, Store, open_store
from enrich.store.interface import ParsedChunk
from enrich.store.timeutil import utc_now

logger = logging.getLogger(__name__)


def store_of(settings: RunSettings) -> Store:
    """The run's database."""
    return open_store(settings.database)


def begin_run(settings: RunSettings, user: str) -> dict[str, object]:
    """Create or migrate the database; the ledger figures that open the run's row."""
    store_of(settings).prepare()
    return {"status": "running", "user": user, "input_path": settings.transactions,
            "tags_sha256": settings.tag_list.fingerprint, "match_mode": settings.tag_list.mode}


def ingest(settings: RunSettings, chunks: Iterator[ParsedChunk]) -> tuple[LoadStats, dict[str, object]]:
    """Load the parsed chunks as one batch; the batch's ledger figures with the input file's SHA-256
    and size, computed in a thread meanwhile (hashing releases the GIL; the load is mostly the database's)."""
    started, progress = time.perf_counter(), Progress("ingest")

    def counted() -> Iterator[ParsedChunk]:
        for chunk in chunks:
            progress.add(len(chunk.valid) + len(chunk.rejected))
            yield chunk

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="digest") as pool:
        digest = pool.submit(file_digest, settings.transactions)
        stats = store_of(settings).load_batch(settings.run_id, counted())
        sha256, size = digest.result()
    elapsed = time.perf_counter() - started
    logger.info("ingested %s: %s rows in %.2f s (%s rows/s)", settings.transactions, f"{stats.rows_read:,}",
                elapsed, f"{stats.rows_read / elapsed if elapsed else 0:,.0f}")
    figures = {name: getattr(stats, name) for name in ("rows_read", "rows_loaded", "rows_new", "rows_updated",
                                                       "rows_unchanged", "rows_rejected", "rows_duplicate")}
    return stats, {**figures, "input_sha256": sha256, "input_bytes": size}


def tag_shard(settings: RunSettings, shard: int) -> Derived:
    """Tag this shard's id range of the rows in scope and stage the tags (published by :func:`publish_tags`)."""
    return derivation.derive_tag_shard(store_of(settings), settings.run_id, settings.tag_list, shard,
                                       settings.shards)


def publish_tags(settings: RunSettings, shards: Sequence[Derived]) -> tuple[Derived, PublishStats]:
    """Replace the tags of the whole scope by the shards' staged tags, in one transaction (safe to retry).

    Nothing pending and nothing derived (an unchanged re-run): nothing is written.
    """
    derived, store = derivation.merge_shards(shards), store_of(settings)
    if derived.covered_runs == () and derived.rows == 0:
        store.discard_staged(settings.run_id)
        logger.info("tags: nothing pending, nothing to write")
        return derived, PublishStats(written=0, removed=0, pending_runs=())
    return derived, store.publish_tags(settings.run_id, derived.covered_runs, derived.state,
                                       derived.table_fingerprint)


def annotate(settings: RunSettings) -> tuple[Derived, PublishStats]:
    """Annotate the transactions in scope inside the database, in one transaction: the rules are a pure
    function of the amount, so they run as SQL over the stored rows instead of a round trip through Python."""
    store = store_of(settings)
    scope = derivation.scope_of(store, ANNOTATIONS, ANNOTATION_RULES_FINGERPRINT)
    repaired = _bad(store.annotation_discrepancies()) if scope.changed_outside else {}
    state = {RULES_KEYS[ANNOTATIONS]: ANNOTATION_RULES_FINGERPRINT}
    if scope.covered == ():
        logger.info("annotations: nothing pending, nothing to write")
        stats, classes = PublishStats(written=0, removed=0, pending_runs=()), dict[str | None, int]()
    else:
        stats, classes = store.annotate_in_place(settings.run_id, scope.covered, state, scope.table_fingerprint)
    zero = classes.pop(None, 0)
    counts = {"annotated": sum(classes.values()), "zero_amount": zero}
    logger.info("annotations: %s annotated, %s zero amount (%s)", f"{counts['annotated']:,}",
                f"{counts['zero_amount']:,}", scope.describe())
    distribution = {str(label): n for label, n in classes.items()}
    return Derived(kind=ANNOTATIONS, covered_runs=scope.covered, rows=stats.written, counts=counts,
                   distribution={**distribution, "ZERO": zero}, state=state, repaired=repaired,
                   table_fingerprint=scope.table_fingerprint), stats


def _bad(found: dict[str, int]) -> dict[str, int]:
    return {key: value for key, value in found.items() if key != "checked" and value}


def index_wordings(settings: RunSettings) -> dict[str, object]:
    """Add the wordings of newly loaded rows to the full-text index, in bulk and in one transaction
    (rows of an earlier run whose indexing failed included)."""
    runs, rows = store_of(settings).index_wordings()
    return {"runs": list(runs), "rows": rows}


def finish_run(store: Store, run_id: str, status: str) -> None:
    """Close the run's ledger row and drop what it staged. An unusable database is logged, not
    raised: the run has already failed for that reason, and ``end`` must still report it."""
    try:
        store.record_run(run_id, status=status, finished_at=utc_now())
        store.discard_staged(run_id)
    except StorageError as exc:
        logger.error("the run's ledger row could not be closed: %s", exc)



def check_run(settings: RunSettings | None, run_id: str, load_stats: LoadStats | None,
              derived: Sequence[Derived], reject_threshold: float) -> list[CheckResult]:
    """Run every data check of the run over its database and record the verdicts (none when the run
    never got its settings: ``start`` failed, and that failure is what ``end`` reports)."""
    if settings is None:
        return []
    return checking.run_checks(store_of(settings), run_id, settings.tag_list, load_stats, derived,
                               CheckSettings(reject_threshold=reject_threshold))


def run_figures(load_stats: LoadStats | None, derived: Sequence[Derived]) -> dict[str, object]:
    """Every figure the run's artifacts hold (a resumed run re-records those of the steps it did
    not repeat)."""
    figures: dict[str, object] = {}
    if load_stats is not None:
        figures.update({name: getattr(load_stats, name) for name in ("rows_read", "rows_loaded", "rows_new",
                                                                     "rows_updated", "rows_unchanged",
                                                                     "rows_rejected", "rows_duplicate")})
    for result in derived:
        figures.update(result.counts)
    return figures


@dataclass(frozen=True)
class Conclusion:
    """What the failure check found and did."""

    store: Store | None
    failures: tuple[Failure, ...]
    alert: object | None  # the SMS outcome, when one was sent
    summary: str


def conclude(database: object, flow_name: str, run_number: str, failures: Sequence[Failure],
             checks: Sequence[CheckResult], metrics_path: str) -> Conclusion:
    """The failure check: alert once for every failure and failed critical check, close the run's
    ledger row, publish its metrics, free the run lock."""
    from enrich import runlock
    from enrich.alerting import alert_failures, failure_summary
    from enrich.run_metrics import default_metrics_path, publish_run_metrics

    run_id = f"{flow_name}/{run_number}"
    store = _store_or_none(database)
    every = tuple(failures) + tuple(checking.check_failures(checks))
    alert = alert_failures(store, flow_name, run_number, every) if every else None
    if store is not None:
        finish_run(store, run_id, "failed" if every else "succeeded")
        textfile = Path(metrics_path).expanduser() if metrics_path else default_metrics_path(store)
        publish_run_metrics(store, flow_name, run_id, textfile)
        runlock.release(store, run_id)  # the next run may start (if end dies first, the exit hook frees it)
    return Conclusion(store, every, alert, failure_summary(every) if every else "")


def _store_or_none(database: object) -> Store | None:
    try:
        return open_store(database)  # type: ignore[arg-type]
    except EnrichError as exc:
        logger.error("the run's database cannot be used: %s", exc)
        return None
