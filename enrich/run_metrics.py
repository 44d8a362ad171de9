"""The Prometheus view of a finished run, assembled from its ledger and published
(:mod:`enrich.metrics` writes and pushes it)."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from enrich import metrics
from enrich.errors import StorageError
from enrich.figures import FIGURE_NAMES
from enrich.store import Store
from enrich.store.timeutil import parse_time

logger = logging.getLogger(__name__)


def run_metrics(store: Store, flow_name: str, run_id: str) -> metrics.RunMetrics:
    """The metrics of run ``run_id``, read back from its ledger."""
    run = store.get_run(run_id)
    attempts = store.step_attempts(run_id)
    finished = _timestamp(run.finished_at if run else None) or time.time()
    started = _timestamp(run.started_at if run else None) or finished
    rows = {name.removeprefix("rows_"): int(getattr(run, name)) for name in FIGURE_NAMES
            if run is not None and getattr(run, name) is not None}
    return metrics.RunMetrics(
        flow=flow_name, run_id=run_id, succeeded=run is not None and run.status == "succeeded",
        finished_at=finished, duration_s=max(finished - started, 0.0), rows=rows,
        step_durations={a.step: float(a.duration_s or 0.0) for a in attempts},
        step_attempts={step: sum(1 for a in attempts if a.step == step and a.status != "skipped")
                       for step in {a.step for a in attempts}},
        checks=[(c.check_name, c.severity, c.passed) for c in store.check_results(run_id)],
        anomalies=len(store.anomalies(run_id)))


def publish_run_metrics(store: Store, flow_name: str, run_id: str, textfile: Path | None) -> list[str]:
    """Write the textfile (atomically) and push to ``$PROMETHEUS_PUSHGATEWAY``; never raises."""
    try:
        facts = run_metrics(store, flow_name, run_id)
        last_success = _timestamp(store.last_success_finished_at(run_id))
    except (StorageError, ValueError) as exc:
        logger.error("metrics not published: %s", exc)
        return [str(exc)]
    problems = metrics.publish_metrics(facts, textfile, metrics.gateway_url_from_env(), last_success)
    for problem in problems:
        logger.warning("metrics: %s", problem)
    return problems


def default_metrics_path(store: Store) -> Path | None:
    """``metrics.prom`` beside a database file; None for a server database (then ``--metrics PATH``
    or the Pushgateway)."""
    return store.location.path.with_name("metrics.prom") if store.location.is_file else None


def _timestamp(iso: str | None) -> float | None:
    moment = parse_time(iso)
    return moment.timestamp() if moment else None
