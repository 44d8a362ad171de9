"""The storage interface: what the stages, checks, report, ledger and CLI may ask of a database.

One implementation per backend (:mod:`enrich.store.sqlite`, :mod:`enrich.store.postgres`),
chosen by :func:`enrich.store.open_store` from ``--database``. Callers see this protocol,
plain dataclasses (:mod:`enrich.store.records`, :class:`enrich.figures.RunRecord`) and
Arrow tables: never a driver, a connection or SQL.

Write discipline, on every backend: each write is one transaction; it lands whole or not
at all, so a retry repeats it safely. Parallel writers wait for each other.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import pyarrow as pa

from enrich.figures import RunRecord
from enrich.store.location import DatabaseLocation
from enrich.store.records import (AlertRecord, CheckRecord, LoadStats, LockClaim, LockHolder, LockOutcome,
                                  PublishStats, StepAttempt, TableFingerprint)


class ParsedChunk(Protocol):
    """What the loader takes from the CSV reader (see :mod:`enrich.ingest`)."""

    @property
    def valid(self) -> Any: ...  # frame: line, id, amount_cents, wording

    @property
    def rejected(self) -> Any: ...  # frame: line, raw, reason


class Store(Protocol):
    """A database of this program, on one backend."""

    location: DatabaseLocation
    backend: str

    # ------------------------------------------------------------------ schema
    def prepare(self) -> None:
        """Create the database if needed and migrate its schema to this program's version."""

    def exists(self) -> bool:
        """Whether the database exists and holds this program's schema (no write, no wait)."""

    def schema_version(self) -> int:
        """The schema version recorded in the database (0 when it has none)."""

    # ------------------------------------------------------------------ loading
    def load_batch(self, run_id: str, chunks: Iterable[ParsedChunk]) -> LoadStats:
        """Load parsed CSV chunks as one batch, in one transaction: upsert by id, quarantine bad rows,
        drop identical duplicates and reject conflicting ones, mark the changed rows pending."""

    # ------------------------------------------------------------------ enrichment
    def pending_runs(self, kind: str) -> tuple[str, ...]:
        """Runs whose new or changed rows still wait for ``kind`` (tags, annotations, search)."""

    def get_state(self, key: str) -> str | None:
        """A value of the enrichment state (e.g. the fingerprint of the tag list last applied)."""

    def table_fingerprint(self, kind: str) -> TableFingerprint:
        """The current fingerprint of the tags (or annotations) table, the one its last publish left, and
        the table's rows per value."""

    def scope_id_range(self, runs: Sequence[str] | None) -> tuple[int, int] | None:
        """Smallest and largest id of the transactions last changed by ``runs`` (None: all)."""

    def iter_transactions(self, columns: Sequence[str], runs: Sequence[str] | None,
                          ids: tuple[int, int] | None = None, chunk_rows: int = ...) -> Iterator[pa.Table]:
        """Stored transactions in id order, ``chunk_rows`` at a time: those last changed by ``runs``
        (None: every one), with ids from ``ids[0]`` to ``ids[1]`` when given."""

    def transaction_amounts(self, runs: Sequence[str]) -> pa.Table:
        """``id`` and ``amount_cents`` of the transactions last changed by ``runs``, in one read."""

    def stage_tags(self, run_id: str, shard: int, tags: Iterable[pa.RecordBatch],
                   ambiguous: pa.Table | Callable[[], pa.Table]) -> int:
        """Stage one shard's derived tags (transaction_id, tag) and ambiguous wordings (wording,
        tags_found, transactions) for :meth:`publish_tags`, in one transaction, replacing what the
        shard staged before. ``ambiguous`` may be a function, called once ``tags`` is exhausted
        (when the wordings are collected while the tags stream)."""

    def publish_tags(self, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                     expected_fingerprint: str | None) -> PublishStats:
        """Replace the tags of the covered transactions by the staged ones, in one transaction: clear
        the covered runs from pending, save ``state`` and the table's new fingerprint. A table changed
        since ``expected_fingerprint`` was read raises :class:`ConcurrentModification`."""

    def discard_staged(self, run_id: str) -> None:
        """Drop what ``run_id`` staged (after a publish, or when the run gives up)."""

    def annotate_in_place(self, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                          expected_fingerprint: str | None) -> tuple[PublishStats, dict[str | None, int]]:
        """Derive and replace the annotations of the covered transactions inside the database, in
        one transaction; returns what was written and the count per class (None: zero amounts)."""

    def index_wordings(self) -> tuple[tuple[str, ...], int]:
        """Add the wordings of the rows of the runs pending search to the full-text index, in bulk and
        in one transaction; returns the runs covered and the rows indexed."""

    # ------------------------------------------------------------------ checks' queries
    def annotation_discrepancies(self, ids: tuple[int, int] | None = None) -> dict[str, int]:
        """Annotations missing, wrong, or present on a zero amount (over ``ids`` or the whole table)."""

    def annotation_census(self, ids: tuple[int, int] | None = None) -> dict[str, int]:
        """:meth:`annotation_discrepancies` with the annotations per label, read by the same scan; the
        results of id ranges add up, and :func:`split_annotation_counts` separates the two."""

    def id_range(self) -> tuple[int, int] | None:
        """The smallest and largest transaction id (None when there is none)."""

    def iter_stored_tags(self, ids: tuple[int, int] | None = None, chunk_rows: int = ...) -> Iterator[pa.Table]:
        """Every transaction's id and wording with its stored tag (null if untagged), by id."""

    def orphan_counts(self) -> dict[str, int]:
        """Tags and annotations whose transaction does not exist (referential integrity)."""

    def table_counts(self) -> dict[str, int]:
        """Row counts of transactions, tags, annotations and rejected_rows."""

    def value_counts(self, kind: str) -> dict[str, int]:
        """Rows per tag (``tags``) or per annotation (``annotations``) over the whole database."""

    def save_distribution(self, run_id: str, dimension: str, counts: Mapping[str, int]) -> None:
        """Store one run's category counts for a dimension (tagging, annotations)."""

    def distribution(self, run_ids: Sequence[str], dimension: str) -> dict[str, int]:
        """Category counts of a dimension, summed over ``run_ids``."""

    def save_check_results(self, run_id: str, results: Sequence[CheckRecord],
                           anomalies: pa.Table | None = None) -> None:
        """Replace a run's check verdicts (and its anomalies: transaction_id, kind, amount_cents, detail)."""

    def check_results(self, run_id: str) -> list[CheckRecord]:
        """A run's check verdicts, by name."""

    # ------------------------------------------------------------------ ledger
    def record_run(self, run_id: str, *, wait: bool = True, **fields: object) -> None:
        """Create or update the ledger row of a run (only the given :class:`RunRecord` fields change).
        ``wait=False``: as for :meth:`record_step_attempt`."""

    def get_run(self, run_id: str) -> RunRecord | None:
        """The ledger row of a run."""

    def latest_run(self) -> RunRecord | None:
        """The run that started last."""

    def previous_run(self, run_id: str) -> RunRecord | None:
        """The latest run (any status) that started before ``run_id``."""

    def recent_runs(self, before_run: str, limit: int = 7) -> list[RunRecord]:
        """The last ``limit`` succeeded runs that started before ``before_run``, newest first."""

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        """The latest ``limit`` runs, newest first."""

    def resolve_run(self, ref: str) -> str | None:
        """The run id ``ref`` names: the full id (``Flow/123``), its number, or blank for the latest."""

    def runs_in_progress(self, stale_after_hours: float) -> list[RunRecord]:
        """Runs still marked running that started less than ``stale_after_hours`` ago."""

    def close_runs(self, run_ids: Sequence[str], status: str) -> tuple[str, ...]:
        """Mark those of ``run_ids`` still ``running`` as ``status`` (finished now); returns them."""

    def last_success_finished_at(self, excluding: str) -> str | None:
        """When the latest succeeded run other than ``excluding`` finished."""

    def record_step_attempt(self, attempt: StepAttempt, *, wait: bool = True) -> None:
        """Insert or update one attempt of one step. ``wait=False``: give up at once with
        :class:`DatabaseBusy` rather than queue behind another writer's long transaction."""

    def step_attempts(self, run_id: str) -> list[StepAttempt]:
        """Every recorded step attempt of a run, in start order."""

    def record_alert(self, alert: AlertRecord) -> None:
        """Remember an alert attempted for a run."""

    def alerts_for_run(self, run_id: str) -> list[AlertRecord]:
        """The alerts recorded for a run."""

    # ------------------------------------------------------------------ read-back
    def rejected_rows(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The rejected rows of a run (line, raw, reason), by line."""

    def anomalies(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """A run's anomalies with their wording, largest amounts first."""

    def ambiguous_wordings(self, run_id: str) -> list[dict[str, Any]]:
        """The wordings a run's tagging found ambiguous, most frequent first."""

    def enriched_transactions(self) -> pa.Table:
        """Every transaction (id, amount_cents, wording) with its tag and annotation, by id."""

    def search_wordings(self, query: str, limit: int = 100) -> list[dict[str, Any]]:
        """Transactions whose wording matches a full-text query, best match first."""

    def search_problem(self) -> str | None:
        """None when the full-text index matches the wordings, else what is wrong."""

    def rebuild_search(self) -> None:
        """Re-index every wording (repairs only)."""

    def canned_query(self, name: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        """Run one of the monitoring queries (see :data:`enrich.store.queries.CANNED_QUERIES`)."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """One statement in this backend's SQL (read-back for tests and operators), its rows as tuples."""

    # ------------------------------------------------------------------ run lock
    def acquire_lock(self, claim: LockClaim, holder_is_dead: Callable[[LockHolder], bool],
                     lease_seconds: float) -> LockOutcome:
        """Take the run lock for ``claim`` if it is free, already ours, or held by a dead holder."""

    def renew_lock(self, run_id: str, lease_seconds: float) -> bool:
        """Extend ``run_id``'s lease; False when it no longer holds the lock."""

    def release_lock(self, run_id: str) -> bool:
        """Free the run lock if ``run_id`` holds it."""

    def break_lock(self) -> LockHolder | None:
        """Free the run lock whoever holds it (manual recovery); the holder removed, if any."""

    def lock_holder(self) -> LockHolder | None:
        """The run holding the run lock, or None."""

    # ------------------------------------------------------------------ backup and restore
    def backup(self, dest: str) -> dict[str, Any]:
        """A consistent, verified copy of the database at ``dest`` (a new file, or into a directory)."""

    def restore(self, source: str, *, force: bool, stale_after_hours: float,
                own_lock: str | None) -> dict[str, Any]:
        """Replace the database by a verified copy of the backup ``source``."""

    def restore_blockers(self, stale_after_hours: float, own_lock: str | None = None) -> list[str]:
        """Why restoring now could lose a run's writes ([] when nothing stands in the way)."""

    def verify_backup(self, source: str) -> int:
        """Check that ``source`` is a sound backup this program can restore; its schema version."""
