"""Running a run's data checks against its database, and recording the verdicts.

The check functions themselves are pure (:mod:`enrich.checks`); this module reads what
they need through the store, runs the three whole-database scans in parallel threads
(the database does the work; each thread on its own connection), and records every
verdict, the anomalies and the run's distributions in the ledger.
"""
from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

from enrich import checks
from enrich.checks import CheckResult, CheckSettings
from enrich.derivation import RULES_KEYS, Derived
from enrich.failures import Failure
from enrich.store import ANNOTATIONS, TAGS, WHOLE_DATABASE, LoadStats, Store, split_annotation_counts
from enrich.taglists import TagList

logger = logging.getLogger(__name__)


def run_checks(store: Store, run_id: str, tags: TagList, load_stats: LoadStats | None,
               derived: Sequence[Derived], limits: CheckSettings) -> list[CheckResult]:
    """Run every data check after publishing and store the verdicts (and anomalies) in the ledger."""
    history = store.recent_runs(run_id, limits.history_runs)
    results = batch_checks(load_stats, [r.rows_read for r in history if r.rows_read is not None], limits)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="amounts") as pool:
        amounts = pool.submit(store.transaction_amounts, [run_id])  # read while the scans run
        whole, counted = whole_database_checks(store, tags, {d.kind: d.repaired for d in derived if d.repaired})
        run_amounts = amounts.result()
    results += whole
    for kind, counts in counted.items():  # for the run report, which would count them again otherwise
        store.save_distribution(run_id, WHOLE_DATABASE[kind], counts)
    for done in derived:
        dimension = "tagging" if done.kind == TAGS else "annotations"
        store.save_distribution(run_id, dimension, done.distribution)
        baseline = store.distribution([r.run_id for r in history], dimension)
        results.append(checks.check_drift(dimension, done.distribution, baseline, limits.psi_threshold))
    outliers, bounds = checks.amount_outliers(run_amounts, limits.mad_factor)
    listed = outliers.slice(0, limits.anomalies_listed)
    results.append(checks.check_outliers(outliers.num_rows, listed.num_rows, bounds))
    store.save_check_results(run_id, results, listed)
    for result in results:
        log = logger.debug if result.passed else (logger.error if result.severity == "critical" else logger.warning)
        log("check %s (%s): %s", result.check_name, verdict(result), result.message)
    return results


def verdict(result: CheckResult) -> str:
    """``passed``, ``FAILED`` (a critical check) or ``warning``."""
    if result.passed:
        return "passed"
    return "FAILED" if result.severity == "critical" else "warning"


def batch_checks(stats: LoadStats | None, volumes: Sequence[int], limits: CheckSettings) -> list[CheckResult]:
    """The checks of the loaded batch: accounting, control total, reject ratio, volume."""
    if stats is None:
        return []
    return [checks.check_accounting(stats.rows_read, stats.rows_loaded, stats.rows_rejected, stats.rows_duplicate),
            checks.check_control_total(stats.cents_in_file, stats.cents_stored),
            checks.check_reject_ratio(stats.rows_read, stats.rows_rejected, limits.reject_threshold),
            checks.check_volume(stats.rows_read, volumes, limits.volume_tolerance)]


def whole_database_checks(store: Store, tags: TagList, repaired: dict[str, dict[str, int]]
                          ) -> tuple[list[CheckResult], dict[str, dict[str, int]]]:
    """Annotations complete, tags complete, referential integrity: three scans of the whole database,
    in parallel threads; the longest, annotations, as two halves of the ids. A table this run repaired
    reports what it found wrong. Also returns the tables' rows per value that the scans read on the
    way (tags, annotations; a table is absent when its scan did not give them exactly)."""
    ids = store.id_range()
    halves = [] if ids is None else [(ids[0], (ids[0] + ids[1]) // 2), ((ids[0] + ids[1]) // 2 + 1, ids[1])]
    counted: dict[str, dict[str, int]] = {}
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="check") as pool:
        parts = [] if ANNOTATIONS in repaired else [pool.submit(store.annotation_census, h) for h in halves]
        tags_done = pool.submit(check_tags, store, tags, repaired.get(TAGS))
        orphans = pool.submit(store.orphan_counts)
        if ANNOTATIONS in repaired:
            annotations = checks.check_annotations_complete(repaired[ANNOTATIONS], repaired=True)
        else:
            found: Counter[str] = Counter({"missing": 0, "wrong": 0, "unexpected": 0, "checked": 0, "annotated": 0})
            for part in parts:
                found.update(part.result())
            discrepancies, by_label = split_annotation_counts(found)
            annotations = checks.check_annotations_complete(discrepancies)
            if by_label is not None and not orphans.result()[ANNOTATIONS]:  # (the scan joins transactions)
                counted[ANNOTATIONS] = by_label
        tags_result, tag_counts = tags_done.result()
        if tag_counts is not None:
            counted[TAGS] = tag_counts
        return [annotations, tags_result, checks.check_referential_integrity(orphans.result())], counted


def check_tags(store: Store, tags: TagList, repaired: dict[str, int] | None
               ) -> tuple[CheckResult, dict[str, int] | None]:
    """Tags complete: every transaction was tagged when it was published and nothing changed since.

    Each publish tags exactly the rows it re-derives and leaves a fingerprint of the tags table;
    when the fingerprint still matches, no run is pending and the tag list is the one last
    applied, the whole table is known good without re-tagging it. Otherwise every stored
    transaction is re-tagged and compared (slower, but exact). Also returns the tags table's rows
    per tag, read with its fingerprint (None when this run repaired the table).
    """
    if repaired is not None:
        return checks.check_tags_complete(repaired, repaired=True), None
    current, recorded, counts = store.table_fingerprint(TAGS)
    pending = store.pending_runs(TAGS)
    rules_applied = store.get_state(RULES_KEYS[TAGS]) == tags.fingerprint
    if current == recorded and not pending and rules_applied:
        return checks.check_tags_complete({"checked": store.table_counts()["transactions"]},
                                          method="tags table unchanged since tagged at publish"), counts
    logger.warning("tags table differs from its last publish or runs are pending (%s): re-tagging every "
                   "stored transaction to compare", list(pending))
    found = checks.tag_discrepancies(store.iter_stored_tags(), tags)
    if not rules_applied and found["checked"]:
        found["tag_list_not_applied"] = 1
    return checks.check_tags_complete({**found, "pending_runs": len(pending)},
                                      method="every transaction re-tagged"), counts


def check_failures(results: Sequence[CheckResult]) -> list[Failure]:
    """Failed critical checks as failures for the alert."""
    return [Failure(f"check:{r.check_name}", "CheckFailed", r.message) for r in checks.critical_failures(results)]
