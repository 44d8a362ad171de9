"""The transaction-enrichment flow (see :class:`TransactionEnrichmentFlow`).

Users start it with ``python algorithm.py run``; Metaflow's ``Runner`` (the flow
tests) starts this file directly, hence the few lines that make the project
importable when it runs as a script.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

if __name__ == "__main__":
    _ROOT = str(Path(__file__).resolve().parent.parent)
    sys.path.insert(0, _ROOT)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [_ROOT, os.environ.get("PYTHONPATH")]))

from metaflow import FlowSpec, Parameter, card, current, exit_hook, step

from enrich.paths import BUNDLED_TRANSACTIONS  # noqa: E402
from flows import lazy_module
from flows.card import draw_run_report
from flows.guards import (BRANCH_LOCAL_ARTIFACTS, RunFailed, choose_failing_step, database_of,
                          guarded, inherited_failures)

# the domain package, imported by the steps that use it (not by Metaflow's launcher or card renderer)
checks = lazy_module("enrich.checks")
pipeline = lazy_module("enrich.pipeline")
runlock = lazy_module("enrich.runlock")


@exit_hook(on_error=["flows.guards.alert_on_crash"])
@guarded
class TransactionEnrichmentFlow(FlowSpec):
    """Store, tag and annotate bank transactions in SQLite; check the run; alert by SMS on failure.

    Stages:
      1. start: resolve the parameters, validate the tag list, open the database and the run ledger.
      2. ingest: parse and validate the CSV; load valid rows (upsert by id) and quarantine bad ones
         in rejected_rows, as one transaction.
      3. tag_transactions, annotate_transactions and index_wordings, in parallel: derive the tags
         (read from the database, tagged in pandas) and the annotations (in SQL, in place) of new
         and changed rows, and add new wordings to the full-text index, each written in one
         transaction; the branches are independent, a failure in one never stops the others.
      4. join: gather the three branches, then run the data checks over the whole database
         (accounting, control total, completeness, integrity, reject ratio, volume, drift, outliers).
      5. end: the failure check: one SMS listing every failure and failed critical check,
         then a non-zero exit.

    Every step but end is guarded by @retry and @catch and by a ledger wrapper, all applied in
    one place (flows/guards.py).
    """

    transactions = Parameter("transactions", default=str(BUNDLED_TRANSACTIONS),
                             help="CSV file of transactions (id, amount, wording).")
    database = Parameter("database", default="database.db", help="SQLite database file to write.")
    # "tags" is a name Metaflow reserves: the parameter is --tag-list, and algorithm.py
    # accepts --tags as its alias.
    tag_list = Parameter("tag-list", default="", help="Tag list file, one tag per line "
                                                      "(default: TATA, TOTO, TUTU, TAXI). Alias: --tags.")
    match = Parameter("match", default="word", help="Tag matching: word (default) or substring.")
    simulate_failure = Parameter("simulate-failure", default="",
                                 help="Raise inside this step (or a random one) to exercise alerting.")
    metrics = Parameter("metrics", default="", help="Prometheus textfile to write "
                                                    "(default: metrics.prom beside the database).")
    reject_threshold = Parameter("reject-threshold", default=0.01, type=float,
                                 help="Largest share of rejected rows before the run fails.")

    @step
    def start(self):
        """Resolve and validate the parameters once, so that bad settings fail before any write."""
        self.failing_step = choose_failing_step(self.simulate_failure, list(self._graph.nodes))
        self.settings = pipeline.RunSettings.resolve(
            f"{current.flow_name}/{current.run_id}", self.database, self.transactions,
            self.tag_list, self.match)
        self.database_path = str(self.settings.database)
        self.figures = pipeline.run_started(self.settings, current.username)
        self.next(self.ingest)

    @step
    def ingest(self):
        """Parse and validate the CSV, then load it as one batch: upsert by id, quarantine bad rows."""
        self.load_stats, self.figures = pipeline.ingest_with_figures(self.settings)
        self.next(self.tag_transactions, self.annotate_transactions, self.index_wordings)

    @step
    def tag_transactions(self):
        """Tag the new and changed transactions (read from the database, derived into a scratch
        file without holding a lock), then replace their tags in one short transaction (safe to retry)."""
        self.tags_derived = pipeline.derive_tags(self.settings)
        self.tags_published = pipeline.publish(self.settings, self.tags_derived)
        self.figures = dict(self.tags_derived.counts)
        self.next(self.join)

    @step
    def annotate_transactions(self):
        """Annotate the new and changed transactions by amount and replace their annotations, in one
        transaction inside the database (the rules run as SQL: no row leaves SQLite); independent of
        tagging, so one branch failing never stops the other."""
        self.annotations_derived, self.annotations_published = pipeline.annotate_in_database(self.settings)
        self.figures = dict(self.annotations_derived.counts)
        self.next(self.join)

    @step
    def index_wordings(self):
        """Add the new wordings to the full-text search index in bulk, in one transaction. Out of
        ingest because indexing is a third of a load's cost and runs here beside tagging; rows whose
        indexing failed wait, outside the index, for the next run's."""
        self.search_indexed = pipeline.index_wordings(self.settings)
        self.next(self.join)

    @step
    def join(self, inputs):
        """Gather the three branches, then check the whole database: every transaction accounted for,
        tagged and annotated exactly by the rules (critical), and no unusual volume, drift or
        amounts (warnings)."""
        self.failures = inherited_failures(self, inputs)
        self.merge_artifacts(inputs, exclude=list(BRANCH_LOCAL_ARTIFACTS))
        derived = [getattr(self, name) for name in ("tags_derived", "annotations_derived") if hasattr(self, name)]
        self.checks = pipeline.run_checks(getattr(self, "settings", None), getattr(self, "load_stats", None),
                                          derived, checks.CheckSettings(reject_threshold=self.reject_threshold))
        self.next(self.end)

    @card(type="blank", id="run_report", refresh_interval=0)
    @step
    def end(self):
        """Failure check: on any failure or failed critical check, send one SMS listing them all;
        close the run's ledger row, write its metrics and its report card; then fail the run
        (non-zero exit, marked failed by Metaflow) so that a scheduler sees it."""
        run_id, database = f"{current.flow_name}/{current.run_id}", database_of(self)
        failures = inherited_failures(self, None) + pipeline.check_failures(getattr(self, "checks", []))
        if failures:
            self.alert = pipeline.alert_failures(database, current.flow_name, current.run_id, failures)
        pipeline.finish(database, run_id, "failed" if failures else "succeeded")
        pipeline.publish_run_metrics(database, current.flow_name, run_id,
                                     Path(self.metrics) if self.metrics else pipeline.default_metrics_path(database))
        draw_run_report(database, run_id, task_will_fail=bool(failures))
        runlock.release(database, run_id)  # the next run may start (if end dies first, the exit hook frees it)
        if failures:
            raise RunFailed(pipeline.failure_summary(failures))


if __name__ == "__main__":
    TransactionEnrichmentFlow()
