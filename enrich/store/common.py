"""What the backends do alike: each :class:`~enrich.store.interface.Store` operation opens a
connection (or hands the backend's bulk path its target) and calls the backend's module for
that concern. A backend subclass names its modules and says how it connects; the SQL stays in
the backend's modules (or in :mod:`enrich.store.ledger` where it is identical)."""
from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar

from enrich.figures import RunRecord
from enrich.store.adbc import Cursor
from enrich.store.errors import StorageError
from enrich.store.interface import ParsedChunk
from enrich.store.ledger import ENRICHED_SQL, Dialect, Ledger
from enrich.store.location import DatabaseLocation
from enrich.store.queries import CannedQuery, positional
from enrich.store.records import (AlertRecord, CheckRecord, LoadStats, LockClaim, LockHolder, LockOutcome,
                                  PublishStats, StepAttempt, TableFingerprint)
from enrich.store.shared_sql import split_annotation_counts
from enrich.store.timeutil import utc_after

if TYPE_CHECKING:
    import pyarrow as pa

READ_CHUNK_ROWS = 500_000
NO_WAIT_MS = 200  # how long a courtesy write waits for another writer


class BackendStore:
    """The operations both backends implement the same way, over the backend's own modules.

    A subclass sets the class attributes below (its modules) and implements :meth:`_connect`,
    :meth:`_bulk` (what the bulk modules connect to: a path or a location), :meth:`_loading`,
    :meth:`exists`, :meth:`lock_holder` and backup.
    """

    backend: str  # the location's backend (enrich.store.location)
    _connection: ModuleType
    _schema: ModuleType
    _enrichment: ModuleType
    _checks: ModuleType
    _lock: ModuleType
    _search: ModuleType
    _dialect: ClassVar[Dialect]
    _canned_queries: ClassVar[Mapping[str, CannedQuery]]
    _placeholder: ClassVar[str]  # "?" or "$" (numbered) in canned queries
    _no_wait_option: ClassVar[str]  # the connect option that bounds a wait for another writer
    _driver_errors: ClassVar[tuple[type[Exception], ...]]

    def __init__(self, location: DatabaseLocation, *, read_only: bool = False) -> None:
        self.location = location
        self.read_only = read_only
        self._prepared = False

    # ------------------------------------------------------------------ what a backend provides
    def _connect(self, *, read_only: bool = False, **options: Any) -> AbstractContextManager[Cursor]:
        """A connection (read-only: one that never creates, migrates or writes the database)."""
        raise NotImplementedError

    def _bulk(self) -> Any:
        raise NotImplementedError

    def _loading(self) -> ModuleType:
        raise NotImplementedError

    def exists(self) -> bool:
        raise NotImplementedError

    def lock_holder(self) -> LockHolder | None:
        raise NotImplementedError

    # ------------------------------------------------------------------ connections
    @contextmanager
    def _cursor(self, **options: Any) -> Iterator[Cursor]:
        """A connection for work on the database, created (SQLite) and migrated on first use."""
        if self.read_only:
            with self._connect(read_only=True, **options) as cur:
                yield cur
            return
        self.prepare()
        with self._connect(**options) as cur:
            yield cur

    def prepare(self) -> None:
        """Create or migrate the schema, once per store (never for a read-only one)."""
        if self._prepared or self.read_only:
            return
        with self._connect() as cur:
            if self._schema.schema_version(cur) != self._schema.SCHEMA_VERSION:
                self._schema.migrate(cur, self.location.display)
        self._prepared = True

    def _transaction(self, cur: Cursor) -> AbstractContextManager[Cursor]:
        return self._connection.transaction(cur)  # type: ignore[no-any-return]

    @contextmanager
    def _ledger_write(self, wait: bool) -> Iterator[Ledger]:
        """A ledger write in one transaction; unless ``wait``, given up with :class:`DatabaseBusy`
        after :data:`NO_WAIT_MS` behind another writer."""
        with self._cursor(**({} if wait else {self._no_wait_option: NO_WAIT_MS})) as cur, self._transaction(cur):
            yield Ledger(cur, self._dialect)

    @contextmanager
    def _ledger(self, write: bool = False) -> Iterator[Ledger]:
        with self._cursor() as cur:
            if write:
                with self._transaction(cur):
                    yield Ledger(cur, self._dialect)
            else:
                yield Ledger(cur, self._dialect)

    def schema_version(self) -> int:
        with self._cursor() as cur:
            return int(self._schema.schema_version(cur))

    # ------------------------------------------------------------------ loading and enrichment
    def load_batch(self, run_id: str, chunks: Iterable[ParsedChunk]) -> LoadStats:
        return self._loading().load_batch(self._bulk(), run_id, chunks)

    def pending_runs(self, kind: str) -> tuple[str, ...]:
        with self._cursor() as cur:
            return self._enrichment.pending_runs(cur, kind)

    def get_state(self, key: str) -> str | None:
        with self._cursor() as cur:
            return self._enrichment.get_state(cur, key)

    def table_fingerprint(self, kind: str) -> TableFingerprint:
        with self._cursor() as cur:
            return self._enrichment.table_fingerprint(cur, kind)

    def scope_id_range(self, runs: Sequence[str] | None) -> tuple[int, int] | None:
        with self._cursor() as cur:
            return self._enrichment.scope_id_range(cur, runs)

    def iter_transactions(self, columns: Sequence[str], runs: Sequence[str] | None,
                          ids: tuple[int, int] | None = None, chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pa.Table]:
        return self._enrichment.iter_transactions(self._bulk(), columns, runs, ids, chunk_rows)

    def transaction_amounts(self, runs: Sequence[str]) -> pa.Table:
        return self._enrichment.transaction_amounts(self._bulk(), runs)

    def stage_tags(self, run_id: str, shard: int, tags: Iterable[pa.RecordBatch],
                   ambiguous: pa.Table | Callable[[], pa.Table]) -> int:
        return self._enrichment.stage_tags(self._bulk(), run_id, shard, tags, ambiguous)

    def publish_tags(self, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                     expected_fingerprint: str | None) -> PublishStats:
        return self._enrichment.publish_tags(self._bulk(), run_id, covered_runs, state, expected_fingerprint)

    def discard_staged(self, run_id: str) -> None:
        self._enrichment.discard_staged(self._bulk(), run_id)

    def annotate_in_place(self, run_id: str, covered_runs: Sequence[str] | None, state: Mapping[str, str],
                          expected_fingerprint: str | None) -> tuple[PublishStats, dict[str | None, int]]:
        return self._enrichment.annotate_in_place(self._bulk(), run_id, covered_runs, state, expected_fingerprint)

    def index_wordings(self) -> tuple[tuple[str, ...], int]:
        return self._enrichment.index_wordings(self._bulk())

    # ------------------------------------------------------------------ checks' queries
    def annotation_discrepancies(self, ids: tuple[int, int] | None = None) -> dict[str, int]:
        return split_annotation_counts(self.annotation_census(ids))[0]

    def annotation_census(self, ids: tuple[int, int] | None = None) -> dict[str, int]:
        with self._cursor() as cur:
            return self._checks.annotation_census(cur, ids)

    def id_range(self) -> tuple[int, int] | None:
        with self._cursor() as cur:
            return self._checks.id_range(cur)

    def iter_stored_tags(self, ids: tuple[int, int] | None = None,
                         chunk_rows: int = READ_CHUNK_ROWS) -> Iterator[pa.Table]:
        return self._checks.iter_stored_tags(self._bulk(), ids, chunk_rows)

    def orphan_counts(self) -> dict[str, int]:
        with self._cursor() as cur:
            return self._checks.orphan_counts(cur)

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
    def record_run(self, run_id: str, *, wait: bool = True, **fields: object) -> None:
        with self._ledger_write(wait) as ledger:
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
        with self._ledger_write(wait) as ledger:
            ledger.record_step_attempt(attempt)

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
            return self._search.search_wordings(cur, query, limit)

    def search_problem(self) -> str | None:
        with self._cursor() as cur:
            return self._search.problem(cur)

    def rebuild_search(self) -> None:
        with self._cursor(bulk=True) as cur:
            self._search.rebuild(cur)

    def canned_query(self, name: str, params: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
        sql, values = positional(self._canned_queries[name].sql, dict(params or {}),
                                  placeholder=self._placeholder)
        with self._cursor() as cur:
            return cur.dicts(sql, values)

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self._cursor() as cur:
            return cur.rows(sql, params)

    # ------------------------------------------------------------------ run lock
    def acquire_lock(self, claim: LockClaim, holder_is_dead: Callable[[LockHolder], bool],
                     lease_seconds: float) -> LockOutcome:
        return self._lock.acquire(self._bulk(), claim, holder_is_dead, lease_seconds)

    def renew_lock(self, run_id: str, lease_seconds: float) -> bool:
        return self._lock.renew(self._bulk(), run_id, lease_seconds)

    def release_lock(self, run_id: str) -> bool:
        return self._lock.release(self._bulk(), run_id)

    def break_lock(self) -> LockHolder | None:
        return self._lock.break_lock(self._bulk())


    # ------------------------------------------------------------------ restore's guard
    def _occupied(self) -> bool:
        """Whether restoring would replace something (for a server database: this program's tables)."""
        return self.exists()

    def _read_errors(self) -> tuple[type[Exception], ...]:
        return (StorageError, *self._driver_errors)

    def restore_blockers(self, stale_after_hours: float, own_lock: str | None = None) -> list[str]:
        """Why restoring now could destroy a run's work: a lock held by another run, or runs in
        progress. A database that cannot be read cannot rule one out, so it blocks too."""
        reader = type(self)(self.location, read_only=True)
        try:
            if not reader._occupied():
                return []
            blockers = []
            holder = reader.lock_holder()
            if holder and holder.run_id != own_lock:
                blockers.append(f"run {holder.run_id} holds the run lock (user {holder.user}, host {holder.host}, "
                                f"pid {holder.pid}, since {holder.acquired_at})")
            for run in reader.runs_in_progress(stale_after_hours):
                blockers.append(f"run {run.run_id} is running (started {run.started_at} by {run.user})")
        except self._read_errors() as exc:  # unreadable: a run cannot be ruled out
            return [f"cannot read {self.location.display} to rule out a run in progress "
                    f"({' '.join(str(exc).split())})"]
        return blockers
