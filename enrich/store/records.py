"""The plain values that cross the storage interface (besides Arrow tables and :class:`RunRecord`)."""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, NamedTuple

from enrich.checks import CheckResult

TAGS = "tags"
ANNOTATIONS = "annotations"
SEARCH = "search"  # the full-text index of the wordings
ENRICHMENT_KINDS = (TAGS, ANNOTATIONS)
PENDING_KINDS = (TAGS, ANNOTATIONS, SEARCH)  # what a batch that changed rows leaves to do
#: The ``run_distributions`` dimension holding a table's rows per value over the whole database,
#: as a run's checks found them (the run report reads them instead of counting again).
WHOLE_DATABASE = {TAGS: "whole_database_tags", ANNOTATIONS: "whole_database_annotations"}


class TableFingerprint(NamedTuple):
    """The tags (or annotations) table's fingerprint now, the one its last publish left, and its
    rows per value (read by the same scan)."""

    current: str
    recorded: str | None
    counts: dict[str, int]


class _Record:
    """``from_row`` and ``as_dict`` for the dataclasses below."""

    @classmethod
    def from_row(cls, row: Mapping[str, Any]):  # type: ignore[no-untyped-def]
        return cls(**{f.name: row.get(f.name) for f in fields(cls)})  # type: ignore[arg-type]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)  # type: ignore[call-overload, no-any-return]


@dataclass(frozen=True)
class LoadStats(_Record):
    """What loading one CSV batch did (``rows_read = rows_loaded + rows_rejected + rows_duplicate``)."""

    rows_read: int
    rows_loaded: int
    rows_new: int
    rows_updated: int
    rows_unchanged: int
    rows_rejected: int
    rows_duplicate: int
    cents_in_file: int = 0  # control total: sum of the batch's amounts as read from the file
    cents_stored: int = 0  # the sum stored for those ids once the batch is loaded

    @classmethod
    def of_load(cls, *, rows_read: int, rows_loaded: int, new: int, changed: int, rejected: int,
                cents_in_file: int, cents_stored: int) -> "LoadStats":
        """The figures of a load from what it counted: ``changed`` rows written (new or updated)."""
        updated = changed - new
        return cls(rows_read=rows_read, rows_loaded=rows_loaded, rows_new=new, rows_updated=updated,
                   rows_unchanged=rows_loaded - new - updated, rows_rejected=rejected,
                   rows_duplicate=rows_read - rows_loaded - rejected, cents_in_file=cents_in_file,
                   cents_stored=cents_stored)

    def describe(self) -> str:
        """The batch in one line, for the log."""
        return (f"{self.rows_read:,} rows read: {self.rows_loaded:,} loaded ({self.rows_new:,} new, "
                f"{self.rows_updated:,} updated, {self.rows_unchanged:,} unchanged), {self.rows_rejected:,} "
                f"rejected, {self.rows_duplicate:,} duplicate")


@dataclass(frozen=True)
class PublishStats(_Record):
    """What one publish did: rows written, stale rows removed, and the pending runs it covered."""

    written: int
    removed: int
    pending_runs: tuple[str, ...]


@dataclass(frozen=True)
class StepAttempt(_Record):
    """One attempt of one step (``attempt`` is Metaflow's retry count: 0 for the first)."""

    run_id: str
    step: str
    task_id: str
    attempt: int
    status: str  # running, succeeded, failed, skipped
    started_at: str
    finished_at: str | None = None
    duration_s: float | None = None
    error_type: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class AlertRecord(_Record):
    """An alert attempted for a run (its text holds no secret)."""

    run_id: str
    channel: str
    status: str
    recipients: str  # comma-separated
    message: str
    error: str | None = None
    created_at: str | None = None


#: One data check's verdict for one run (the check functions' own result type).
CheckRecord = CheckResult


@dataclass(frozen=True)
class LockClaim(_Record):
    """Who asks for (or holds) the run lock: the run, its user, and where its runtime lives."""

    run_id: str
    user: str | None
    host: str
    pid: int
    process_start: str | None = None


@dataclass(frozen=True)
class LockHolder(_Record):
    """The run holding the run lock, since when, and until when its lease runs without renewal."""

    run_id: str
    user: str | None
    host: str
    pid: int
    process_start: str | None
    acquired_at: str
    expires_at: str | None = None


@dataclass(frozen=True)
class LockOutcome:
    """The result of asking for the run lock."""

    acquired: bool
    holder: LockHolder | None  # the live holder when refused; the dead one taken over when acquired
    closed_runs: tuple[str, ...] = ()  # runs still marked running that the take-over closed
