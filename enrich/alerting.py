"""Alerting a run's failures: compose one SMS, send it, record it in the ledger.

The Twilio side (configuration, message text, sending with retries) is
:mod:`enrich.alerts`, imported only when there is something to send.
"""
from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

from enrich.errors import StorageError
from enrich.failures import Failure
from enrich.paths import PROJECT_DIR
from enrich.store import AlertRecord, LockHolder, Store

if TYPE_CHECKING:
    from enrich.alerts import AlertResult

logger = logging.getLogger(__name__)


def alert_failures(store: Store | None, flow_name: str, run_number: str,
                   failures: Sequence[Failure]) -> "AlertResult":
    """Send one SMS listing every failure of the run, and record it in the ledger when possible."""
    from enrich.alerts import compose_failure_message

    return _send_and_record(store, flow_name, run_number,
                            compose_failure_message(flow_name, run_number, list(failures), logs_command()))


def alert_run_died(store: Store | None, flow_name: str, run_number: str, dead: LockHolder) -> "AlertResult":
    """One SMS naming a run that died without finishing (killed, its host lost), sent by the run
    that took over its lock: no process of the dead run was left to send it."""
    from enrich.alerts import MAX_SMS_CHARS

    database = f" --database {store.location.display}" if store is not None else ""
    body = (f"[{flow_name}] run {dead.run_id} DIED without finishing (user {dead.user}, started "
            f"{dead.acquired_at}, pid {dead.pid} on host {dead.host}). Its ledger row is closed as failed; run "
            f"{run_number} took over its lock and catches up its pending rows.\n"
            f"See: {interpreter()} -m enrich status {dead.run_id.rsplit('/', 1)[-1]}{database}")
    return _send_and_record(store, flow_name, run_number, body[:MAX_SMS_CHARS])


def interpreter() -> str:
    """This Python, as an operator on this host starts it: relative to the project when inside it
    (such as ``.venv/bin/python``), else its full path."""
    relative = os.path.relpath(sys.executable, PROJECT_DIR)
    return sys.executable if relative.startswith("..") else relative


def logs_command() -> str:
    """How an operator reads a step's log on this host (run from the project folder)."""
    return f"{interpreter()} algorithm.py logs"


def _send_and_record(store: Store | None, flow_name: str, run_number: str, body: str) -> "AlertResult":
    from enrich.alerts import send_alert

    result = send_alert(body, PROJECT_DIR)
    logger.info("SMS alert for run %s: %s%s", run_number, result.status, f" ({result.error})" if result.error else "")
    if store is not None:
        try:
            store.record_alert(AlertRecord(run_id=f"{flow_name}/{run_number}", channel="sms", status=result.status,
                                           recipients=", ".join(result.recipients), message=body, error=result.error))
        except StorageError as exc:
            logger.error("could not record the alert in the ledger: %s", exc)
    return result


def failure_summary(failures: Sequence[Failure]) -> str:
    """One line per failure, for the run's final error message."""
    return f"{len(failures)} failure(s): " + "; ".join(f.line() for f in failures)
