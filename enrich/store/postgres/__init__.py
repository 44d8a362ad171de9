"""The PostgreSQL backend: a database on a PostgreSQL server, named by a ``postgresql://`` URL.

Modules by concern, as for SQLite: :mod:`.connection` (the one driver, ADBC's, transactions,
errors by SQLSTATE), :mod:`.schema` (versioned migrations under an advisory lock),
:mod:`.loading` (the batch load: COPY into staging tables, then set-based SQL),
:mod:`.enrichment` (pending work, tags, annotations, search indexing), :mod:`.checks` (the
checks' scans), :mod:`.lock` (the run lock: a lease row under ``pg_advisory_xact_lock``),
:mod:`.search` (``tsvector`` + GIN), :mod:`.queries` (views and canned queries),
:mod:`.backup` (``pg_dump``/``pg_restore``). The ledger's SQL is shared with SQLite
(:mod:`enrich.store.ledger`, numbered placeholders).

Each call opens its own connection (closed on return), so a store can be shared by threads.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from enrich.figures import RunRecord
from enrich.store.adbc import Cursor
from enrich.store.errors import AccessDenied, StorageError
from enrich.store.interface import ParsedChunk
from enrich.store.ledger import ENRICHED_SQL, Ledger
from enrich.store.location import POSTGRESQL, DatabaseLocation
from enrich.store.postgres import backup as backups
from enrich.store.postgres import checks, enrichment, lock, schema, search
from enrich.store.postgres.connection import DriverError, connect, missing_database, transaction
from enrich.store.postgres.lock import DIALECT
from enrich.store.postgres.queries import CANNED_QUERIES
from enrich.store.queries import positional
from enrich.store.records import (AlertRecord, CheckRecord, LoadStats, LockClaim, LockHolder, LockOutcome,
                                  PublishStats, StepAttempt)
from enrich.store.timeutil import utc_after

if TYPE_CHECKING:
    import pyarrow as pa

READ_CHUNK_ROWS = 500_000
NO_WAIT_MS = 200  # how long a courtesy write waits for another writer


class PostgresStore:
    """A database on a PostgreSQL server. ``read_only`` stores never create, migrate or write it
    (their sessions refuse writes)."""

    backend = POSTGRESQL

    def __init__(self, location: DatabaseLocation, *, read_only: bool = False) -> None:
        self.location = location
        self.read_only = read_only
        self._prepared = False

    def __repr__(self) -> str:
        return f"PostgresStore({self.location.display!r}, read_only={self.read_only})"

    # ------------------------------------------------------------------ connections
    @contextmanager
    def _cursor(self, **options: Any) -> Iterator[Cursor]:
        """A connection for work on the database, migrated on first use."""
        if self.read_only:
            with connect(self.location, read_only=True, **options) as cur:
                yield cur
            return
        self.prepare()
        with connect(self.location, **options) as cur:
            yield cur

    @contextmanager
    def _ledger(self, write: bool = False) -> Iterator[Ledger]:
        with self._cursor() as cur:
            if write:
                with transaction(cur):
                    yield Ledger(cur, DIALECT)
            else:
                yield Ledger(cur, DIALECT)

    def _bulk(self) -> DatabaseLocation:
        self.prepare()
        return self.location

    # ------------------------------------------------------------------ schema
    def prepare(self) -> None:
        if self._prepared or self.read_only:
            return
        with connect(self.location) as cur:
            if schema.schema_version(cur) != schema.SCHEMA_VERSION:
                schema.migrate(cur, self.location.display)
        self._prepared = True

    def exists(self) -> bool:
        try:
            with connect(self.location, read_only=True) as cur:
                return not cur.scalar("SELECT to_regclass('runs') IS NULL")
        except AccessDenied as exc:
            if missing_database(exc.__cause__):
                return False
            raise

    def schema_version(self) -> int:
        with self._cursor() as cur:
            return schema.schema_version(cur)

    # ------------------------------------------------------------------ loading and enrichment
    def load_batch(self, run_id: str, chunks: Iterable[ParsedChunk]) -> LoadStats:
        from enrich.store.postgres import loading  # (pandas: only the loading step pays for it)

        return loading.load_batch(self._bulk(), run_id, chunks)

    def pending_runs(self, kind: str) -> tuple[str, ...]:
        with self._cursor() as cur:
            return enrichment.pending_runs(cur, kind)

    def get_state(self, key: str) -> str | None:
        with self._cursor() as cur:
            return enrichment.get_state(cur, key)

    def table_fingerprint(self, kind: str) -> tuple[str, str | None]:
        with self._cursor() as cur:
            return enrichment.table_fingerprint(cur, kind)

    def scope_id_range(self, runs: Sequence[str] | None) -> tuple[int, int] | None:
        with self._cursor() as cur:
            return enrichment.scope_id_range(cur, runs)

    def iter_transactions(self, columns: Sequence[str], runs: Sequence[str] | None,
                          ids: tuple[int, int] | None = None, chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pa.Table]:
        return enrichment.iter_transactions(self._bulk(), columns, runs, ids, chunk_rows)

    def transaction_amounts(self, runs: Sequence[str]) -> pa.Table:
        return enrichment.transaction_amounts(self._bulk(), runs)

    def stage_tags(self, run_id: str, shard: int, tags: Iterable[pa.RecordBatch],
                   ambiguous: pa.Table | Callable[[], pa.Table]) -> int:
        return enrichment.stage_tags(self._bulk(), run_id, shard, tags, ambiguous)

    def publish_tags(self, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                     expected_fingerprint: str | None) -> PublishStats:
        return enrichment.publish_tags(self._bulk(), run_id, covered_runs, state, expected_fingerprint)

    def discard_staged(self, run_id: str) -> None:
        enrichment.discard_staged(self._bulk(), run_id)

    def annotate_in_place(self, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                          expected_fingerprint: str | None) -> tuple[PublishStats, dict[str | None, int]]:
        return enrichment.annotate_in_place(self._bulk(), run_id, covered_runs, state, expected_fingerprint)

    def index_wordings(self) -> tuple[tuple[str, ...], int]:
        return enrichment.index_wordings(self._bulk())

    # ------------------------------------------------------------------ checks' queries
    def annotation_discrepancies(self, ids: tuple[int, int] | None = None) -> dict[str, int]:
        with self._cursor() as cur:
            return checks.annotation_discrepancies(cur, ids)

    def id_range(self) -> tuple[int, int] | None:
        with self._cursor() as cur:
            return checks.id_range(cur)

    def iter_stored_tags(self, ids: tuple[int, int] | None = None,
                         chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pa.Table]:
        return checks.iter_stored_tags(self._bulk(), ids, chunk_rows)

    def orphan_counts(self) -> dict[str, int]:
        with self._cursor() as cur:
            return checks.orphan_counts(cur)

    def table_counts(self) -> dict[str, int]:
        with self._ledger() as ledger:
            return ledger.table_counts()

    def value_counts(self, kind: str) -> dict[str, int]:
        with self._ledger() as ledger:
            return ledger.value_counts(kind)

    def save_distribution(self, run_id: str, dimension: str, counts: Mapping[str, int]) -> None:
        with self._ledger(write=True) as ledger:
            ledger.save_distribution(run_id, dimension, counts)

    def distribution(self, run_ids: Sequence[str], dimension: str) -> dict[str, int]:
        with self._ledger() as ledger:
            return ledger.distribution(run_ids, dimension)

    def save_check_results(self, run_id: str, results: Sequence[CheckRecord],
                           anomalies: pa.Table | None = None) -> None:
        with self._ledger(write=True) as ledger:
            ledger.save_check_results(run_id, results, anomalies)

    def check_results(self, run_id: str) -> list[CheckRecord]:
        with self._ledger() as ledger:
            return ledger.check_results(run_id)

    # ------------------------------------------------------------------ ledger
    def record_run(self, run_id: str, **fields: object) -> None:
        with self._ledger(write=True) as ledger:
            ledger.record_run(run_id, fields)

    def get_run(self, run_id: str) -> RunRecord | None:
        with self._ledger() as ledger:
            return ledger.get_run(run_id)

    def latest_run(self) -> RunRecord | None:
        with self._ledger() as ledger:
            return ledger.latest_run()

    def previous_run(self, run_id: str) -> RunRecord | None:
        with self._ledger() as ledger:
            return ledger.previous_run(run_id)

    def recent_runs(self, before_run: str, limit: int = 7) -> list[RunRecord]:
        with self._ledger() as ledger:
            return ledger.recent_runs(before_run, limit)

    def list_runs(self, limit: int = 20) -> list[RunRecord]:
        with self._ledger() as ledger:
            return ledger.list_runs(limit)

    def resolve_run(self, ref: str) -> str | None:
        with self._ledger() as ledger:
            return ledger.resolve_run(ref)

    def runs_in_progress(self, stale_after_hours: float) -> list[RunRecord]:
        with self._ledger() as ledger:
            return ledger.runs_in_progress(utc_after(-stale_after_hours * 3600))

    def close_runs(self, run_ids: Sequence[str], status: str) -> tuple[str, ...]:
        with self._ledger(write=True) as ledger:
            return ledger.close_runs(run_ids, status)

    def last_success_finished_at(self, excluding: str) -> str | None:
        with self._ledger() as ledger:
            return ledger.last_success_finished_at(excluding)

    def record_step_attempt(self, attempt: StepAttempt, *, wait: bool = True) -> None:
        with self._cursor(**({} if wait else {"lock_timeout_ms": NO_WAIT_MS})) as cur, transaction(cur):
            Ledger(cur, DIALECT).record_step_attempt(attempt)

    def step_attempts(self, run_id: str) -> list[StepAttempt]:
        with self._ledger() as ledger:
            return ledger.step_attempts(run_id)

    def record_alert(self, alert: AlertRecord) -> None:
        with self._ledger(write=True) as ledger:
            ledger.record_alert(alert)

    def alerts_for_run(self, run_id: str) -> list[AlertRecord]:
        with self._ledger() as ledger:
            return ledger.alerts_for_run(run_id)

    # ------------------------------------------------------------------ read-back
    def rejected_rows(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        with self._ledger() as ledger:
            return ledger.rejected_rows(run_id, limit)

    def anomalies(self, run_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        with self._ledger() as ledger:
            return ledger.anomalies(run_id, limit)

    def ambiguous_wordings(self, run_id: str) -> list[dict[str, Any]]:
        with self._ledger() as ledger:
            return ledger.ambiguous_wordings(run_id)

    def enriched_transactions(self) -> pa.Table:
        from enrich.store.batches import ENRICHED_SCHEMA, plain

        with self._cursor(bulk=True) as cur:
            return plain(cur.table(ENRICHED_SQL), ENRICHED_SCHEMA)

    def search_wordings(self, query: str, limit: int = 100) -> list[dict[str, Any]]:
        with self._cursor() as cur:
            return search.search_wordings(cur, query, limit)

    def search_problem(self) -> str | None:
        with self._cursor() as cur:
            return search.problem(cur)

    def rebuild_search(self) -> None:
        with self._cursor(bulk=True) as cur:
            search.rebuild(cur)

    def canned_query(self, name: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        sql, values = positional(CANNED_QUERIES[name].sql, dict(params or {}), placeholder="$")
        with self._cursor() as cur:
            return cur.dicts(sql, values)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            return cur.rows(sql, params)

    # ------------------------------------------------------------------ run lock
    def acquire_lock(self, claim: LockClaim, holder_is_dead: Callable[[LockHolder], bool],
                     lease_seconds: float) -> LockOutcome:
        return lock.acquire(self._bulk(), claim, holder_is_dead, lease_seconds)

    def renew_lock(self, run_id: str, lease_seconds: float) -> bool:
        return lock.renew(self._bulk(), run_id, lease_seconds)

    def release_lock(self, run_id: str) -> bool:
        return lock.release(self._bulk(), run_id)

    def break_lock(self) -> LockHolder | None:
        return lock.break_lock(self._bulk())

    def lock_holder(self) -> LockHolder | None:
        with self._cursor() as cur:
            return lock.holder(cur)

    # ------------------------------------------------------------------ backup and restore
    def backup(self, dest: str) -> dict[str, Any]:
        return backups.backup(self.location, dest)

    def restore_blockers(self, stale_after_hours: float, own_lock: str | None = None) -> list[str]:
        reader = PostgresStore(self.location, read_only=True)
        try:
            if not reader.exists():
                return []
            blockers = []
            holder = reader.lock_holder()
            if holder and holder.run_id != own_lock:
                blockers.append(f"run {holder.run_id} holds the run lock (user {holder.user}, host {holder.host}, "
                                f"pid {holder.pid}, since {holder.acquired_at})")
            for run in reader.runs_in_progress(stale_after_hours):
                blockers.append(f"run {run.run_id} is running (started {run.started_at} by {run.user})")
        except (StorageError, DriverError) as exc:  # unreadable: a run cannot be ruled out
            return [f"cannot read {self.location.display} to rule out a run in progress ({' '.join(str(exc).split())})"]
        return blockers

    def restore(self, source: str, *, force: bool, stale_after_hours: float,
                own_lock: str | None) -> dict[str, Any]:
        backup_file = Path(source).expanduser().resolve()
        backups.verify_backup(self.location, backup_file)
        return backups.restore(self.location, backup_file, self.restore_blockers(stale_after_hours, own_lock), force)

    def verify_backup(self, source: str) -> int:
        return backups.verify_backup(self.location, Path(source).expanduser().resolve())
