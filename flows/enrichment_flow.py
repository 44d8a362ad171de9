"""The transaction-enrichment flow (see :class:`TransactionEnrichmentFlow`).

Users start it with ``python algorithm.py run``, which checks the settings first; the flow
tests start this file with Metaflow's ``Runner``. Each step imports the domain modules it
uses (Metaflow's idiom): a task pays only for what it runs.
"""
from __future__ import annotations

import sys

from flows.priority import yield_cpu

yield_cpu(sys.argv)  # first thing in a task's process, so that its imports already yield

from metaflow import FlowSpec, Parameter, card, current, exit_hook, step  # type: ignore[attr-defined]

from enrich.paths import BUNDLED_TRANSACTIONS
from flows.guards import BRANCH_LOCAL_ARTIFACTS, RunFailed, choose_failing_step, guarded, inherited_failures


def run_id() -> str:
    """This run's id, ``Flow/123`` (a resumed run has its own)."""
    return f"{current.flow_name}/{current.run_id}"


@exit_hook(on_error=["flows.guards.alert_on_crash"])
@guarded
class TransactionEnrichmentFlow(FlowSpec):
    """Store, tag and annotate bank transactions; check the run; alert by SMS on failure.

    Stages:
      1. start: resolve and validate the parameters, create or migrate the database, open the ledger.
      2. ingest: parse and validate the CSV; load valid rows (upsert by id) and quarantine bad ones
         in rejected_rows, as one transaction.
      3. three independent branches, each writing in one transaction (a failure in one never
         stops the others): tagging (plan_tagging cuts the rows to tag into --shards id ranges,
         tag_transactions tags each range, publish_tags publishes them together), annotating
         (in SQL, in place) and full-text indexing of the new wordings.
      4. join: gather the branches, then check the whole database (accounting, control total,
         completeness, integrity, reject ratio, volume, drift, outliers).
      5. end: the failure check: one SMS listing every failure and failed critical check,
         then a non-zero exit.

    Every step but end is guarded by @retry and @catch and by a ledger wrapper, all applied in
    one place (flows/guards.py).
    """

    transactions = Parameter("transactions", default=str(BUNDLED_TRANSACTIONS),
                             help="CSV file of transactions (id, amount, wording): a path or an s3:// URL.")
    database = Parameter("database", default="database.db",
                         help="SQLite database file, or postgresql://user@host:port/dbname.")
    # "tags" is a name Metaflow reserves: the parameter is --tag-list, and algorithm.py
    # accepts --tags as its alias.
    tag_list = Parameter("tag-list", default="", help="Tag list file, one tag per line "
                                                      "(default: TATA, TOTO, TUTU, TAXI). Alias: --tags.")
    match = Parameter("match", default="word", help="Tag matching: word (default) or substring.")
    simulate_failure = Parameter("simulate-failure", default="",
                                 help="Raise inside this step (or a random one) to exercise alerting.")
    metrics = Parameter("metrics", default="", help="Prometheus textfile to write "
                                                    "(default: metrics.prom beside a database file).")
    reject_threshold = Parameter("reject-threshold", default=0.01, type=float,
                                 help="Largest share of rejected rows before the run fails.")
    shards = Parameter("shards", default=1, type=int, help="Tag in this many parallel id ranges (default 1).")
    encoding = Parameter("encoding", default="", help="Encoding of the CSV, any Python codec (default UTF-8).")
    delimiter = Parameter("delimiter", default="", help="Field delimiter of the CSV: one character, or tab "
                                                        "(default ,).")
    decimal_comma = Parameter("decimal-comma", default=False, type=bool,
                              help="Amounts written like -12,50 (only with a delimiter other than ,).")

    @step
    def start(self):
        """Resolve and validate the parameters once, so that bad settings fail before any write."""
        from enrich import stages
        from enrich.settings import RunSettings, dialect_from

        self.failing_step = choose_failing_step(self.simulate_failure, list(self._graph.nodes))
        self.settings = RunSettings.resolve(run_id(), self.database, self.transactions, self.tag_list, self.match,
                                            self.shards, dialect_from(self.encoding, self.delimiter,
                                                                      self.decimal_comma))
        self.figures = stages.begin_run(self.settings, current.username)
        self.next(self.ingest)

    @step
    def ingest(self):
        """Parse and validate the CSV, then load it as one batch: upsert by id, quarantine bad rows."""
        from enrich import ingest, stages

        settings = self.settings.for_run(run_id())
        self.load_stats, self.figures = stages.ingest(settings, ingest.read_chunks(settings.transactions,
                                                                                   settings.dialect))
        self.next(self.plan_tagging, self.annotate_transactions, self.index_wordings)

    @step
    def plan_tagging(self):
        """Cut the tagging into --shards id ranges of the rows to tag (each shard finds its range)."""
        self.tag_shards = list(range(self.settings.shards))
        self.next(self.tag_transactions, foreach="tag_shards")

    @step
    def tag_transactions(self):
        """Tag the new and changed transactions of this shard's id range (read from the database)
        and stage the tags in the database, without holding its write lock while tagging."""
        from enrich import stages

        self.tags_derived = stages.tag_shard(self.settings.for_run(run_id()), self.input)
        self.next(self.publish_tags)

    @step
    def publish_tags(self, inputs):
        """Replace the tags of every re-derived transaction by the shards' staged tags, in one
        transaction (safe to retry): a tag that no longer applies is removed."""
        from enrich import stages

        self.failures = inherited_failures(self, inputs)
        self.merge_artifacts(inputs, exclude=[*BRANCH_LOCAL_ARTIFACTS, "tags_derived"])
        shards = [shard.tags_derived for shard in inputs if hasattr(shard, "tags_derived")]
        self.tags_derived, self.tags_published = stages.publish_tags(self.settings.for_run(run_id()), shards)
        self.figures = dict(self.tags_derived.counts)
        self.next(self.join)

    @step
    def annotate_transactions(self):
        """Annotate the new and changed transactions by amount and replace their annotations, in one
        transaction inside the database (the rules run as SQL: no row leaves it)."""
        from enrich import stages

        self.annotations_derived, self.annotations_published = stages.annotate(self.settings.for_run(run_id()))
        self.figures = dict(self.annotations_derived.counts)
        self.next(self.join)

    @step
    def index_wordings(self):
        """Add the new wordings to the full-text search index in bulk, in one transaction; rows whose
        indexing failed wait, outside the index, for the next run's."""
        from enrich import stages

        self.search_indexed = stages.index_wordings(self.settings.for_run(run_id()))
        self.next(self.join)

    @step
    def join(self, inputs):
        """Gather the three branches, then check the whole database: every transaction accounted for,
        tagged and annotated exactly by the rules (critical), and no unusual volume, drift or
        amounts (warnings)."""
        from enrich import stages

        self.failures = inherited_failures(self, inputs)
        self.merge_artifacts(inputs, exclude=list(BRANCH_LOCAL_ARTIFACTS))
        derived = [getattr(self, name) for name in ("tags_derived", "annotations_derived") if hasattr(self, name)]
        self.checks = stages.check_run(getattr(self, "settings", None), run_id(), getattr(self, "load_stats", None),
                                       derived, self.reject_threshold)
        self.figures = stages.run_figures(getattr(self, "load_stats", None), derived)
        self.next(self.end)

    @card(type="blank", id="run_report", refresh_interval=0)
    @step
    def end(self):
        """Failure check: on any failure or failed critical check, send one SMS listing them all;
        close the run's ledger row, write its metrics and its report card; then fail the run
        (non-zero exit, marked failed by Metaflow) so that a scheduler sees it."""
        from enrich import stages
        from flows.card import draw_run_report

        outcome = stages.conclude(self.database if not hasattr(self, "settings") else self.settings.database,
                                  current.flow_name, current.run_id, inherited_failures(self, None),
                                  getattr(self, "checks", []), self.metrics)
        self.alert = outcome.alert
        draw_run_report(outcome.store, run_id(), task_will_fail=bool(outcome.failures))
        if outcome.failures:
            raise RunFailed(outcome.summary)


if __name__ == "__main__":
    TransactionEnrichmentFlow()
