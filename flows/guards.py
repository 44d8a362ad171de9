"""Cross-cutting guards, written once and applied to every step by :class:`guarded`.

* ``@retry`` and ``@catch`` on every step but ``end`` (the failure check must be
  able to fail the run). A retry repeats only idempotent work: every database
  write is one transaction.
* :func:`guard`, a step wrapper that
  - skips a step whose upstream failed (the other branch goes on),
  - raises inside the step named by ``--simulate-failure`` (to exercise alerting),
  - records each attempt in the ``step_runs`` ledger and the step's figures
    (``self.figures``) in the ``runs`` ledger,
  - records a caught failure in the ``failures`` artifact that ``end`` reads,
  - makes sure the run holds the database's run lock before a writing step
    (:mod:`enrich.runlock`: the first step takes it, a second run fails at once),
  - does not let ``@retry`` repeat a permanent error (:func:`permanent_errors`:
    malformed input, bad tag list, an unusable database, a held lock): the
    failure is recorded and the step ends, so the ledger shows one attempt.
* :func:`alert_on_crash`, the ``@exit_hook`` backstop that alerts when the run
  died before ``end`` could.
"""
from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import functools
from typing import TYPE_CHECKING

from metaflow import FlowMutator, current, user_step_decorator
from metaflow.exception import MetaflowException

from enrich.logs import configure_logging
from flows import lazy_module

if TYPE_CHECKING:
    from enrich.alerts import Failure

alerts = lazy_module("enrich.alerts")
ingest = lazy_module("enrich.ingest")
pipeline = lazy_module("enrich.pipeline")
runlock = lazy_module("enrich.runlock")
storage = lazy_module("enrich.storage")
tagging = lazy_module("enrich.tagging")

logger = logging.getLogger(__name__)

RETRY_TIMES = 2
RUNNING_ROW_WAIT_MS = 200  # how long a step waits to write its "running" ledger row
CATCH_VAR = "caught_exception"
UNCAUGHT_STEPS = ("end",)
ALWAYS_RUN_STEPS = ("join", "end")
BRANCH_LOCAL_ARTIFACTS = ("failures", CATCH_VAR, "_catch_exception", "figures")


@functools.cache
def permanent_errors() -> tuple[type[Exception], ...]:
    """Errors that the same attempt repeated a moment later would hit again: not retried."""
    return (ingest.InputFileError, tagging.TagListError, storage.RunLockHeld, runlock.RunAbandoned,
            storage.DatabaseReadOnly, storage.StorageFull, storage.NotADatabase,
            storage.CannotOpenDatabase, storage.DatabaseDirectoryMissing, storage.SchemaTooNew)


class SimulatedFailure(Exception):
    """Raised inside the step named by ``--simulate-failure``."""


class RunFailed(MetaflowException):
    """The failure check found failures: the run ends non-zero after alerting."""

    headline = "Run failed"


class guarded(FlowMutator):  # noqa: N801 - used as a decorator, named like one
    """Add ``@retry``, ``@catch`` and the :func:`guard` wrapper to every step, from one place."""

    def mutate(self, mutable_flow) -> None:
        for name, mutable_step in mutable_flow.steps:
            if name not in UNCAUGHT_STEPS:
                mutable_step.add_decorator("retry", deco_kwargs={"times": RETRY_TIMES,
                                                                 "minutes_between_retries": 0})
                mutable_step.add_decorator("catch", deco_kwargs={"var": CATCH_VAR,
                                                                 "print_exception": True})
            mutable_step.add_decorator(guard)


def inherited_failures(flow, inputs) -> list[Failure]:
    """Failures recorded upstream of this step (the union over a join's inputs)."""
    sources = list(inputs) if inputs else [flow]
    seen: dict[Failure, None] = {}
    for source in sources:
        for failure in getattr(source, "failures", None) or []:
            seen.setdefault(failure, None)
        caught = getattr(source, CATCH_VAR, None)
        if caught is not None and not getattr(source, "failures", None):
            # the step failed outside the wrapper's reach (e.g. a crash handled by @catch's fallback)
            seen.setdefault(alerts.Failure("upstream", type(caught).__name__, str(caught)), None)
    return list(seen)


def database_of(flow) -> Path:
    """The run's database file, even when ``start`` failed before resolving it."""
    return Path(getattr(flow, "database_path", None) or flow.database).expanduser().resolve()


def simulated_target(flow) -> str:
    """The step that ``--simulate-failure`` names (``random`` is drawn once, in ``start``)."""
    return getattr(flow, "failing_step", None) or getattr(flow, "simulate_failure", "") or ""


def choose_failing_step(choice: str, steps: list[str]) -> str:
    """Validate ``--simulate-failure``; draw a guarded step for ``random``."""
    if choice in ("", *steps):
        return choice
    if choice == "random":
        return random.choice([step for step in steps if step not in UNCAUGHT_STEPS])
    raise ValueError(f"--simulate-failure {choice!r}: use one of {', '.join(steps)} or random")


@user_step_decorator
def guard(step_name, flow, inputs):
    """Skip after an upstream failure, simulate failures, keep the ledger, record failures."""
    configure_logging()
    failures = inherited_failures(flow, inputs)
    flow.failures = failures
    ledger = _Ledger(flow, step_name)
    if failures and step_name not in ALWAYS_RUN_STEPS:
        logger.warning("skipping %s: upstream failure in %s", step_name,
                       ", ".join(sorted({f.step for f in failures})))
        ledger.attempt("skipped")
        yield {}
        return
    ledger.attempt("running")
    try:
        if step_name not in ALWAYS_RUN_STEPS:
            runlock.hold(ledger.database, ledger.run_id, current.username)
    except Exception as exc:
        _record_failure(flow, failures, ledger, exc)
        if not isinstance(exc, permanent_errors()):
            raise
        yield {}  # permanent: the step is skipped (nothing written), not retried
        return
    try:
        yield _raise_simulated if simulated_target(flow) == step_name else None
    except Exception as exc:
        _record_failure(flow, failures, ledger, exc)
        if step_name in UNCAUGHT_STEPS or not isinstance(exc, permanent_errors()):
            raise
        return  # permanent: swallowed so that @retry does not repeat it; later steps skip, end alerts
    ledger.attempt("succeeded")
    ledger.figures(getattr(flow, "figures", None))


def _record_failure(flow, failures: list[Failure], ledger: "_Ledger", exc: Exception) -> None:
    """Record the step's failure in the ``failures`` artifact and the ledger."""
    if isinstance(exc, permanent_errors()):
        logger.error("%s failed (%s, permanent: not retried): %s", ledger.step, type(exc).__name__, exc)
    flow.failures = failures + [alerts.Failure(ledger.step, type(exc).__name__, str(exc))]
    ledger.attempt("failed", exc)


def _raise_simulated(flow, inputs=None):
    raise SimulatedFailure(f"simulated failure in step {current.step_name} (--simulate-failure)")


class _Ledger:
    """Writes one step attempt to ``step_runs``; never lets a ledger problem hide the step's own outcome."""

    def __init__(self, flow, step_name: str) -> None:
        self.step = step_name
        self.run_id = f"{current.flow_name}/{current.run_id}"
        self.database = database_of(flow)
        self.started_at = storage.utc_now()
        self.clock = time.perf_counter()

    def attempt(self, status: str, exc: BaseException | None = None) -> None:
        done = status != "running"
        args = (self.run_id, self.step, str(current.task_id), int(current.retry_count), status,
                self.started_at, storage.utc_now() if done else None,
                round(time.perf_counter() - self.clock, 6) if done else None,
                type(exc).__name__ if exc else None, str(exc) if exc else None)
        if done:
            self._write(storage.record_step_attempt, *args)
            return
        try:  # the "running" row is a courtesy: never queue a step behind a parallel branch's publish
            with pipeline.open_database(self.database, busy_timeout_ms=RUNNING_ROW_WAIT_MS) as db:
                storage.record_step_attempt(db, *args)
        except storage.DatabaseBusy:
            logger.info("%s: its 'running' row in step_runs is skipped (a parallel step is writing); "
                        "the attempt is recorded when it ends", self.step)
        except (storage.StorageError, OSError, ValueError) as exc:
            logger.error("ledger not updated for %s (%s): %s", self.step, type(exc).__name__, exc)

    def figures(self, figures: dict | None) -> None:
        if figures:
            self._write(storage.record_run, self.run_id, **figures)

    def _write(self, function, *args, **kwargs) -> None:
        try:
            with pipeline.open_database(self.database) as db:
                function(db, *args, **kwargs)
        except (storage.StorageError, OSError, ValueError) as exc:
            logger.error("ledger not updated for %s (%s): %s", self.step, type(exc).__name__, exc)


def alert_on_crash(run=None) -> None:
    """Exit-hook backstop: alert when the run failed and ``end`` did not send the alert itself."""
    configure_logging()
    if run is None:
        logger.error("exit hook: the failed run could not be loaded; no alert sent")
        return
    try:
        start = run["start"].task.data
        database = Path(getattr(start, "database_path", None) or Path(start.database).resolve())
    except KeyError:
        database = None
    runlock.release(database, run.pathspec)  # end did not get to release it
    if _alert_sent(run):
        return
    failed = [alerts.Failure(step.id, "TaskFailed", f"task {task.id} did not finish")
              for step in run for task in step if not task.successful]
    failed = failed or [alerts.Failure("run", "RunFailed", "the run stopped before its failure check")]
    flow_name, run_number = run.pathspec.split("/")
    pipeline.alert_failures(database, flow_name, run_number, failed)


def _alert_sent(run) -> bool:
    """Whether ``end`` already sent the alert (its artifacts are kept even when it then failed)."""
    try:
        return run["end"].task["alert"] is not None
    except KeyError:
        return False
