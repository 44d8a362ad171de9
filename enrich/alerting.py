"""Alerting a run's failures: compose one SMS, send it, record it in the ledger.

The Twilio side (configuration, message text, sending with retries) is
:mod:`enrich.alerts`, imported only when there is something to send.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

from enrich.errors import StorageError
from enrich.failures import Failure
from enrich.paths import PROJECT_DIR
from enrich.store import AlertRecord, Store

if TYPE_CHECKING:
    from enrich.alerts import AlertResult

logger = logging.getLogger(__name__)


def alert_failures(store: Store | None, flow_name: str, run_number: str,
                   failures: Sequence[Failure]) -> "AlertResult":
    """Send one SMS listing every failure of the run, and record it in the ledger when possible."""
    from enrich.alerts import compose_failure_message, send_alert

    body = compose_failure_message(flow_name, run_number, list(failures))
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
