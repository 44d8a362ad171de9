"""The step ledger: one ``step_runs`` row per attempt of every step, and the step's figures on the
run's ``runs`` row. The flow's guard calls it around every step; a ledger problem is logged,
never allowed to hide the step's own outcome."""
from __future__ import annotations

import logging
import time
from collections.abc import Mapping

from enrich.errors import StorageError
from enrich.store import DatabaseBusy, StepAttempt, Store
from enrich.store.timeutil import utc_now

logger = logging.getLogger(__name__)


class StepLedger:
    """The ledger rows of one attempt of one step."""

    def __init__(self, store: Store | None, run_id: str, step: str, task_id: str, attempt: int) -> None:
        self.store, self.run_id, self.step = store, run_id, step
        self.task_id, self.attempt = task_id, attempt
        self.started_at, self.clock = utc_now(), time.perf_counter()

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
        self._write(lambda store: store.record_run(self.run_id, **fields))

    def finished(self, status: str, exc: BaseException | None = None) -> None:
        """The attempt ended: ``succeeded``, ``failed`` (with its error) or ``skipped``."""
        self._write(lambda store: store.record_step_attempt(self._row(status, exc)))

    def figures(self, figures: Mapping[str, object] | None) -> None:
        """The step's figures on the run's row."""
        if figures:
            self._write(lambda store: store.record_run(self.run_id, **figures))

    def _write(self, write) -> None:  # type: ignore[no-untyped-def]
        if self.store is None:
            return
        try:
            write(self.store)
        except (StorageError, OSError, ValueError) as exc:
            logger.error("ledger not updated for %s (%s): %s", self.step, type(exc).__name__, exc)
