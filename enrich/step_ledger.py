"""The step ledger: one ``step_runs`` row per attempt of every step, and the step's figures on the
run's ``runs`` row. The flow's guard calls it around every step; a ledger problem is logged,
never allowed to hide the step's own outcome.

A step that succeeded does not wait for the write lock to say so: on SQLite, a parallel branch may
hold it for seconds (annotating or indexing millions of rows in one transaction), and a step that
waited would hold up the steps after it. What it cannot write at once is handed to the next step
as its *backlog* (a few small records, carried as an artifact), which writes it with its own rows;
``join`` and ``end``, which read the ledger, write theirs waiting. The rows keep the times they were
taken at, so a late write changes nothing but when the row appears.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from enrich.errors import StorageError
from enrich.store import DatabaseBusy, StepAttempt, Store
from enrich.store.timeutil import utc_now

logger = logging.getLogger(__name__)

#: A ledger write not made yet: ``{"attempt": <StepAttempt fields>}`` or ``{"run_id": ..., "figures": {...}}``
#: (the run's row, only the given fields).
Entry = Mapping[str, Any]


class StepLedger:
    """The ledger rows of one attempt of one step; ``backlog``: the writes earlier steps handed on."""

    def __init__(self, store: Store | None, run_id: str, step: str, task_id: str, attempt: int,
                 backlog: Iterable[Entry] = ()) -> None:
        self.store, self.run_id, self.step = store, run_id, step
        self.task_id, self.attempt = task_id, attempt
        self.started_at, self.clock = utc_now(), time.perf_counter()
        # each entry once: a join's branches hand on what they inherited from the same step
        self.backlog: list[Entry] = list({repr(entry): entry for entry in backlog}.values())

    def _row(self, status: str, exc: BaseException | None = None) -> StepAttempt:
        done = status != "running"
        return StepAttempt(run_id=self.run_id, step=self.step, task_id=self.task_id, attempt=self.attempt,
                           status=status, started_at=self.started_at, finished_at=utc_now() if done else None,
                           duration_s=round(time.perf_counter() - self.clock, 6) if done else None,
                           error_type=type(exc).__name__ if exc else None,
                           error_message=" ".join(str(exc).split()) if exc else None)

    def running(self) -> None:
        """The attempt started: a courtesy row that never queues behind a parallel branch's write."""
        if self.store is None:
            return
        try:
            self.store.record_step_attempt(self._row("running"), wait=False)
        except DatabaseBusy:
            logger.debug("%s: its 'running' row is skipped (a parallel step is writing)", self.step)
        except (StorageError, OSError, ValueError) as exc:
            logger.warning("ledger not updated for %s (%s)", self.step, type(exc).__name__)

    def resumed(self, user: str, settings: object | None) -> None:
        """A resumed run (its earlier steps cloned, not run again): its own ledger row, with its own
        user and the input and tag list it carries over from the run it resumes."""
        fields: dict[str, object] = {"status": "running", "user": user}
        if settings is not None:
            tags = getattr(settings, "tag_list", None)
            fields.update(input_path=getattr(settings, "transactions", None),
                          tags_sha256=getattr(tags, "fingerprint", None), match_mode=getattr(tags, "mode", None))
        self._write_entries([{"run_id": self.run_id, "figures": fields}], wait=True)

    def catch_up(self) -> None:
        """Write the backlog now, waiting for the write lock (before a step that reads the ledger)."""
        self.backlog = self._write_entries(self.backlog, wait=True)

    def finished(self, status: str, exc: BaseException | None = None) -> None:
        """The attempt ended ``failed`` (with its error) or ``skipped``: the backlog and the row are
        written, waiting for the write lock if need be."""
        self.backlog = self._write_entries([*self.backlog, self._entry(status, exc)], wait=True)

    def succeeded(self, figures: Mapping[str, object] | None, *, wait: bool) -> list[Entry]:
        """The attempt succeeded: write the backlog, its row and the step's figures on the run's row.
        Unless ``wait``, only what can be written without waiting for another writer is; the rest is
        returned, for the next step to write (see the module's docstring)."""
        entries = [*self.backlog, self._entry("succeeded")]
        if figures:
            entries.append({"run_id": self.run_id, "figures": dict(figures)})
        self.backlog = self._write_entries(entries, wait=wait)
        return self.backlog

    def _entry(self, status: str, exc: BaseException | None = None) -> Entry:
        return {"attempt": self._row(status, exc).as_dict()}

    def _write_entries(self, entries: Sequence[Entry], *, wait: bool) -> list[Entry]:
        """Write ``entries`` in order; return those left when another writer holds the lock (only
        when not ``wait``). An entry that cannot be written for another reason is logged and dropped."""
        if self.store is None:
            return []
        for i, entry in enumerate(entries):
            try:
                if "attempt" in entry:
                    self.store.record_step_attempt(StepAttempt(**entry["attempt"]), wait=wait)
                else:
                    self.store.record_run(str(entry["run_id"]), wait=wait, **entry["figures"])
            except DatabaseBusy as exc:
                if wait:  # (after the busy timeout: minutes)
                    logger.error("ledger not updated for %s (%s): %s", self.step, type(exc).__name__, exc)
                    continue
                logger.debug("%s: %d ledger write(s) handed to the next step (a parallel step is writing)",
                             self.step, len(entries) - i)
                return list(entries[i:])
            except (StorageError, OSError, ValueError) as exc:
                logger.error("ledger not updated for %s (%s): %s", self.step, type(exc).__name__, exc)
        return []
