"""The guards applied to every step from one place, in three pieces:

* :class:`guarded`, the mutator: ``@retry`` and ``@catch`` on every step but ``end`` (the
  failure check must be able to fail the run) and the foreach split (Metaflow refuses
  ``@catch`` there), and :func:`guard` on every step;
* :func:`guard`, the step wrapper: skips a step whose upstream failed, holds the run lock
  (with its lease renewed while the step works), raises in the step ``--simulate-failure``
  names, keeps the step ledger (:class:`enrich.step_ledger.StepLedger`), and records a
  failure for ``end`` to alert. A permanent error (:class:`enrich.errors.PermanentError`)
  is recorded once and not retried; a transient one is retried after a bounded backoff;
* :func:`alert_on_crash`, the ``@exit_hook`` backstop that alerts when the run died before
  ``end`` could, and frees the run lock.
"""
from __future__ import annotations

import logging
import os
import random
import time
from typing import Any

from metaflow import FlowMutator, current, user_step_decorator
from metaflow.exception import MetaflowException

from enrich.errors import EnrichError, PermanentError
from enrich.failures import Failure
from enrich.logs import configure_logging

logger = logging.getLogger(__name__)

RETRY_TIMES = 2
CATCH_VAR = "caught_exception"
UNCAUGHT_STEPS = ("end",)
ALWAYS_RUN_STEPS = ("join", "end")  # they gather and report, whatever failed upstream
LOCK_FREE_STEPS = ALWAYS_RUN_STEPS  # they write only the ledger
LEDGER_BACKLOG = "ledger_backlog"  # the ledger writes a step hands on (enrich.step_ledger)
BRANCH_LOCAL_ARTIFACTS = ("failures", CATCH_VAR, "_catch_exception", "figures", LEDGER_BACKLOG)
SIMULATE_ENV = "ENRICH_SIMULATE_FAILURE"  # the launcher's --simulate-failure for a resumed run
STOP_SIGNAL_ENV = "ENRICH_STOP_SIGNAL"  # set by the launcher when SIGINT or SIGTERM stopped the run
SCHEDULE_ENV = "ENRICH_SCHEDULE"  # the deployed flow's cron (default: daily)
#: What a step asks of a cluster node (honoured by @kubernetes and @batch, ignored by local runs): the
#: tagging shards are CPU work in Arrow; annotating and indexing are statements the database runs.
RESOURCES = {"tag_transactions": {"cpu": int(os.environ.get("ENRICH_TAGGING_CPU", "4")),
                                  "memory": int(os.environ.get("ENRICH_TAGGING_MEMORY_MB", "8000"))}}


class SimulatedFailure(EnrichError):
    """Raised inside the step named by ``--simulate-failure`` (transient: retried like any such error)."""


class RunFailed(MetaflowException):
    """The failure check found failures: the run ends non-zero after alerting."""

    headline = "Run failed"


class AttemptFailed(MetaflowException):
    """A step's attempt failed with a condition the project handles (a transient error): Metaflow's
    ``@retry`` runs the step again. Printed as one line, not as an "Internal error" traceback."""

    headline = "Attempt failed, retrying"


class guarded(FlowMutator):  # noqa: N801 - used as a decorator, named like one
    """Add ``@retry``, ``@catch`` and the :func:`guard` wrapper to every step, from one place; for a
    deployment, ``@schedule`` on the flow and ``@resources`` on the CPU-bound tagging step."""

    def pre_mutate(self, mutable_flow: Any) -> None:
        mutable_flow.add_decorator("schedule", deco_kwargs=schedule(os.environ))

    def mutate(self, mutable_flow: Any) -> None:
        for name, mutable_step in mutable_flow.steps:
            if name in RESOURCES:
                mutable_step.add_decorator("resources", deco_kwargs=RESOURCES[name])
            if name not in UNCAUGHT_STEPS:
                mutable_step.add_decorator("retry", deco_kwargs={"times": RETRY_TIMES, "minutes_between_retries": 0})
                if not _is_foreach_split(mutable_flow._flow_cls, name):
                    mutable_step.add_decorator("catch", deco_kwargs={"var": CATCH_VAR, "print_exception": False})
            mutable_step.add_decorator(guard)


def schedule(environ: Any) -> dict[str, Any]:
    """``@schedule``'s arguments: ``$ENRICH_SCHEDULE`` as a cron expression, else daily. It only
    matters to a scheduler (Argo Workflows, Step Functions); a local run ignores it."""
    cron = (environ.get(SCHEDULE_ENV) or "").strip()
    return {"cron": cron} if cron else {"daily": True}


def _is_foreach_split(flow_cls: Any, name: str) -> bool:
    try:
        return bool(flow_cls._graph[name].type == "foreach")
    except (AttributeError, KeyError, TypeError):
        return False


@user_step_decorator
def guard(step_name, flow, inputs):  # type: ignore[no-untyped-def]
    """Skip after an upstream failure, hold the run lock, simulate failures, keep the ledger."""
    from enrich import runlock
    from enrich.step_ledger import StepLedger

    configure_logging()
    flow.failures = inherited_failures(flow, inputs)
    store, run_id = store_of(flow), f"{current.flow_name}/{current.run_id}"
    backlog = [entry for source in (list(inputs) if inputs else [flow])
               for entry in getattr(source, LEDGER_BACKLOG, None) or []]
    ledger = StepLedger(store, run_id, step_name, str(current.task_id), int(current.retry_count), backlog)
    setattr(flow, LEDGER_BACKLOG, [])  # written below, whatever happens (or handed on again)
    if flow.failures and step_name not in ALWAYS_RUN_STEPS:
        logger.info("skipping %s: upstream failure in %s", step_name, ", ".join(sorted({f.step for f in flow.failures})))
        ledger.finished("skipped")
        fallback_transition(flow, step_name)
        yield {}
        return
    ledger.running()
    if step_name in ALWAYS_RUN_STEPS:  # they read the ledger (checks, report): it must be complete
        ledger.catch_up()
    if getattr(current, "origin_run_id", None) and step_name not in LOCK_FREE_STEPS:
        ledger.resumed(current.username, getattr(flow, "settings", None))  # its own user, input, tag list
    try:
        if step_name not in LOCK_FREE_STEPS and store is not None:
            taken_over = runlock.hold(store, run_id, current.username)
            if taken_over.holder is not None:
                alert_taken_over(store, taken_over)
    except Exception as exc:  # the lock is not ours (or the database cannot be used): nothing is written
        if _failed(flow, step_name, ledger, exc):
            raise
        fallback_transition(flow, step_name)
        yield {}  # the step is skipped, recorded as failed; later steps skip, end alerts
        return
    with _heartbeat(store, run_id, step_name):
        try:
            yield _raise_simulated if simulated_target(flow) == step_name else None
        except Exception as exc:  # every failure is recorded; what happens next depends on its kind
            if _failed(flow, step_name, ledger, exc):
                if isinstance(exc, EnrichError) and step_name not in UNCAUGHT_STEPS:
                    raise AttemptFailed(f"{step_name}: {type(exc).__name__}: {_first_line(exc)}") from exc
                raise  # a bug: its traceback is what a person needs
            fallback_transition(flow, step_name)
            return (None, {})  # recorded: later steps skip, end alerts; @retry does not repeat it
    setattr(flow, LEDGER_BACKLOG, ledger.succeeded(getattr(flow, "figures", None), wait=step_name in UNCAUGHT_STEPS))


def _failed(flow: Any, step_name: str, ledger: Any, exc: Exception) -> bool:
    """Record a step's failure (artifact, ledger, one log line); whether to re-raise it: in ``end``,
    and a transient error while ``@retry`` has attempts left (after a bounded backoff)."""
    flow.failures = flow.failures + [Failure(step_name, type(exc).__name__, str(exc))]
    ledger.finished("failed", exc)
    if step_name in UNCAUGHT_STEPS:
        return True
    retried = not isinstance(exc, PermanentError) and current.retry_count < RETRY_TIMES
    logger.debug("%s failed", step_name, exc_info=exc)  # the traceback, with LOG_LEVEL=DEBUG
    logger.error("%s failed: %s: %s%s", step_name, type(exc).__name__, _first_line(exc),
                 f" (attempt {current.retry_count + 1}, retrying)" if retried else
                 " (permanent: not retried)" if isinstance(exc, PermanentError) else "")
    if retried:
        time.sleep(min(2.0 ** current.retry_count, 30.0))  # bounded backoff before @retry's next attempt
    return retried


def _heartbeat(store: Any, run_id: str, step_name: str) -> Any:
    from contextlib import nullcontext

    from enrich import runlock

    if store is None or step_name in LOCK_FREE_STEPS:
        return nullcontext()
    return runlock.Heartbeat(store, run_id)


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split("\n", 1)[0].split())


def _raise_simulated(flow: Any, inputs: Any = None) -> None:
    raise SimulatedFailure(f"simulated failure in step {current.step_name} (--simulate-failure)")


def fallback_transition(flow: Any, step_name: str) -> None:
    """Before a skipped or failed step's default transition: a foreach split gets one empty item,
    so that its branch goes on (and skips) to the join."""
    node = flow._graph[step_name]
    if node.type == "foreach" and not getattr(flow, node.foreach_param, None):
        setattr(flow, node.foreach_param, [None])


def inherited_failures(flow: Any, inputs: Any) -> list[Failure]:
    """Failures recorded upstream of this step (the union over a join's inputs)."""
    sources = list(inputs) if inputs else [flow]
    seen: dict[Failure, None] = {}
    for source in sources:
        for failure in getattr(source, "failures", None) or []:
            seen.setdefault(failure, None)
        caught = getattr(source, CATCH_VAR, None)
        if caught is not None and not getattr(source, "failures", None):
            # the step failed outside the wrapper's reach (e.g. a crash handled by @catch's fallback)
            seen.setdefault(Failure("upstream", type(caught).__name__, str(caught)), None)
    return list(seen)


def store_of(flow: Any) -> Any:
    """The run's store (None when ``--database`` cannot be used: ``start`` reports why)."""
    from enrich.errors import EnrichError
    from enrich.store import open_store

    settings = getattr(flow, "settings", None)
    try:
        return open_store(settings.database if settings is not None else flow.database)
    except EnrichError:
        return None


def simulated_target(flow: Any) -> str:
    """The step ``--simulate-failure`` names (drawn once in ``start`` for ``random``). A resumed run
    does not inherit it: it simulates only what its launcher was given again."""
    if getattr(current, "origin_run_id", None):
        return os.environ.get(SIMULATE_ENV, "")
    return getattr(flow, "failing_step", None) or getattr(flow, "simulate_failure", "") or ""


def choose_failing_step(choice: str, steps: list[str]) -> str:
    """Validate ``--simulate-failure``; draw a guarded step for ``random``."""
    from enrich.settings import BadSetting

    if choice in ("", *steps):
        return choice
    if choice == "random":
        return random.choice([step for step in steps if step not in UNCAUGHT_STEPS])
    raise BadSetting(f"--simulate-failure {choice!r}: use one of {', '.join(steps)} or random")


def alert_taken_over(store: Any, outcome: Any) -> None:
    """The run lock was taken over from a run that died (killed, its host lost): one SMS names it."""
    from enrich.alerting import alert_run_died

    alert_run_died(store, str(current.flow_name), str(current.run_id), outcome.holder)


def alert_on_crash(run: Any = None) -> None:
    """Exit-hook backstop: alert when the run failed and ``end`` did not send the alert itself."""
    from enrich import runlock
    from enrich.alerting import alert_failures
    from enrich.errors import EnrichError
    from enrich.store import open_store

    configure_logging()
    if run is None:
        logger.error("exit hook: the failed run could not be loaded; no alert sent")
        return
    try:
        start = run["start"].task.data
        store = open_store(start.settings.database if "settings" in start else start.database)
    except (KeyError, AttributeError, EnrichError):
        store = None
    runlock.release(store, run.pathspec)  # end did not get to release it
    stopped = os.environ.get(STOP_SIGNAL_ENV)
    if stopped:
        _close_interrupted(store, run.pathspec, stopped)
        if stopped == "SIGINT":  # an operator's own Ctrl-C: no SMS
            return
    if _alert_sent(run):
        return
    failed = [Failure(step.id, "TaskFailed", f"task {task.id} did not finish")
              for step in run for task in step if not task.successful]
    if stopped:
        failed = [Failure("run", "Terminated", f"the run was stopped by {stopped} (a scheduler or an operator "
                                               "stopped it); it is marked interrupted")]
    failed = failed or [Failure("run", "RunFailed", "the run stopped before its failure check")]
    flow_name, run_number = run.pathspec.split("/")
    alert_failures(store, flow_name, run_number, failed)


def _close_interrupted(store: Any, run_id: str, stopped: str) -> None:
    """Mark a run stopped by a signal ``interrupted`` (its lock is already free)."""
    from enrich.errors import EnrichError

    if store is None:
        return
    try:
        store.close_runs([run_id], "interrupted")
    except EnrichError as exc:
        logger.error("run %s not marked interrupted (%s): the next run closes it", run_id, type(exc).__name__)
        return
    logger.info("run %s stopped by %s: marked interrupted", run_id, stopped)


def _alert_sent(run: Any) -> bool:
    """Whether ``end`` already sent the alert (its artifacts are kept even when it then failed)."""
    try:
        return run["end"].task["alert"] is not None
    except KeyError:
        return False
