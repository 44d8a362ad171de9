"""Prometheus metrics of one flow run: a node_exporter textfile and/or a Pushgateway push.

The flow describes a finished run with a :class:`RunMetrics` and calls
:func:`publish_metrics`, which

* rewrites a textfile for node_exporter's textfile collector
  (:func:`write_textfile`, atomic: temporary file + ``os.replace``), and/or
* pushes the same metrics to a Prometheus Pushgateway (:func:`push`), the URL
  normally coming from the ``PROMETHEUS_PUSHGATEWAY`` environment variable
  (:func:`gateway_url_from_env`),

and returns the problems it met as human-readable strings instead of raising:
monitoring must never turn a good run into a failed one.

Metric names
------------
Every name has the ``enrich_`` prefix, is snake_case, and ends with its unit
(``_seconds``, ``_timestamp_seconds``) when it has one. All metrics are
**gauges**, none ends in ``_total``: each describes *the last run* and is
replaced whole by the next one (a new process, a new textfile, a new push),
it never accumulates across runs. A counter would be wrong here: Prometheus
would read every run's fresh value as a counter reset, and ``rate()`` /
``increase()`` over them would be meaningless. ``_total`` is reserved for
counters by the naming conventions, so these names do not use it.

============================================  ===============================  ================================
metric                                        labels                           value
============================================  ===============================  ================================
``enrich_last_success_timestamp_seconds``     \\-                               unix time the last successful run
                                                                               finished (see below)
``enrich_last_run_timestamp_seconds``         \\-                               unix time this run finished
``enrich_last_run_success``                   \\-                               1 if this run succeeded, else 0
``enrich_run_duration_seconds``               \\-                               wall time of the whole run
``enrich_last_run_info``                      ``flow``, ``run_id``             always 1 (identifies the run)
``enrich_rows``                               ``outcome``                      rows per outcome (every outcome of
                                                                               :data:`ROW_OUTCOMES`, 0 if absent)
``enrich_step_duration_seconds``              ``step``                         last attempt's wall time
``enrich_step_attempts``                      ``step``                         attempts of the step
``enrich_check_passed``                       ``check``, ``severity``          1 passed, 0 failed
``enrich_checks_failed``                      ``severity``                     failed checks (every severity of
                                                                               :data:`SEVERITIES`, 0 if none)
``enrich_anomalies``                          \\-                               anomalies found by the run
``enrich_max_silence_seconds``                \\-                               longest time without a successful
                                                                               run before the dead man's switch
                                                                               fires (see below)
============================================  ===============================  ================================

The run id is a label of the single-series info metric only, never of the
other metrics: a label value that changes every run would create a new series
per run (unbounded cardinality). On the Pushgateway the grouping key is
``job=<flow name>``, with no other label, so each flow has exactly one group
that every run overwrites.

Last success across failed runs
-------------------------------
``enrich_last_success_timestamp_seconds`` must survive failed runs, otherwise
"how long since the last good run" alerts lose their reference point:

* **succeeded run**: its value is the run's own ``finished_at``; the push uses
  ``PUT`` (:func:`prometheus_client.push_to_gateway`), which replaces the
  whole ``job=<flow>`` group, so series of steps or checks that no longer
  exist disappear.
* **failed run, textfile**: the file is rewritten whole, so the previous
  success time (the ``last_success`` argument, read by the caller from its
  ledger) is written again; when it is ``None`` the metric is left out.
* **failed run, Pushgateway**: a ``PUT`` would wipe the group, including the
  old success time. The push therefore uses ``POST``
  (:func:`prometheus_client.pushadd_to_gateway`), which replaces only the
  metric *names* present in the push, and the push never contains
  ``enrich_last_success_timestamp_seconds``: the gateway keeps the value of
  the last successful push, which is authoritative, rather than whatever the
  caller's ledger says. Caveat of ``POST``: a metric family with no sample
  (say ``enrich_step_duration_seconds`` of a run that failed before its first
  step) is not sent at all, so the gateway keeps the previous run's series
  of that family; ``enrich_last_run_info`` and
  ``enrich_last_run_timestamp_seconds`` always tell which run is shown.
  ``enrich_rows`` and ``enrich_checks_failed`` always carry all their label
  values for that reason.

Alert on ``absent(enrich_last_success_timestamp_seconds)`` as well as on its
age: before the first success there is no sample at all.

Allowed silence (dead man's switch)
-----------------------------------
``monitoring/alerts.yml`` fires ``EnrichNoRecentSuccess`` when
``time() - enrich_last_success_timestamp_seconds`` exceeds
``enrich_max_silence_seconds``. That gauge is exported beside the timestamp by
every run, successful or not, from ``ENRICH_MAX_SILENCE_SECONDS`` in the run's
environment (:data:`MAX_SILENCE_ENV`; default :data:`DEFAULT_MAX_SILENCE_S`,
26 hours: a daily job plus two hours of slack). So the period is set where the
schedule is set, without editing the rules; the rule falls back to 26 hours
when the gauge is absent. A value that is not a number of seconds > 0 is
logged as a warning and replaced by the default: monitoring never fails a run.
"""
from __future__ import annotations

import http.client
import logging
import math
import numbers
import os
import re
import urllib.error
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, Info, generate_latest
from prometheus_client import push_to_gateway, pushadd_to_gateway

from enrich.figures import FIGURE_NAMES
from enrich.files import replace_atomically

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MAX_SILENCE_S",
    "MAX_SILENCE_ENV",
    "METRIC_NAMES",
    "PUSHGATEWAY_ENV",
    "ROW_OUTCOMES",
    "RunMetrics",
    "SEVERITIES",
    "build_registry",
    "gateway_url_from_env",
    "max_silence_from_env",
    "publish_metrics",
    "push",
    "write_textfile",
]

#: Environment variable holding the Pushgateway URL (read by the caller).
PUSHGATEWAY_ENV = "PROMETHEUS_PUSHGATEWAY"

#: Environment variable holding the allowed silence, in seconds (see "Allowed silence").
MAX_SILENCE_ENV = "ENRICH_MAX_SILENCE_SECONDS"
#: Allowed silence when :data:`MAX_SILENCE_ENV` is unset or invalid: a daily job plus 2 hours.
DEFAULT_MAX_SILENCE_S = 26 * 3600.0

#: Every row outcome the flow counts; ``enrich_rows`` always exports all of them.
ROW_OUTCOMES: tuple[str, ...] = tuple(name.removeprefix("rows_") for name in FIGURE_NAMES)
#: Check severities, most severe first; ``enrich_checks_failed`` exports all of them.
SEVERITIES: tuple[str, ...] = ("critical", "warning", "info")

LAST_SUCCESS = "enrich_last_success_timestamp_seconds"
LAST_RUN_TIMESTAMP = "enrich_last_run_timestamp_seconds"
LAST_RUN_SUCCESS = "enrich_last_run_success"
RUN_DURATION = "enrich_run_duration_seconds"
LAST_RUN_INFO = "enrich_last_run_info"
ROWS = "enrich_rows"
STEP_DURATION = "enrich_step_duration_seconds"
STEP_ATTEMPTS = "enrich_step_attempts"
CHECK_PASSED = "enrich_check_passed"
CHECKS_FAILED = "enrich_checks_failed"
ANOMALIES = "enrich_anomalies"
MAX_SILENCE = "enrich_max_silence_seconds"

#: Every metric name (as exposed) this module can produce.
METRIC_NAMES: tuple[str, ...] = (
    LAST_SUCCESS, LAST_RUN_TIMESTAMP, LAST_RUN_SUCCESS, RUN_DURATION, LAST_RUN_INFO,
    ROWS, STEP_DURATION, STEP_ATTEMPTS, CHECK_PASSED, CHECKS_FAILED, ANOMALIES, MAX_SILENCE,
)

#: The ``user:password@`` part of a URL (with or without scheme).
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)?[^/?#]*@")
#: Bytes of a Pushgateway error response quoted in a problem message.
_MAX_ERROR_BODY = 300


def max_silence_from_env(environ: Mapping[str, str] | None = None) -> float:
    """The allowed silence in seconds from ``ENRICH_MAX_SILENCE_SECONDS``, else :data:`DEFAULT_MAX_SILENCE_S`.

    Unset or blank gives the default silently; a value that is not a finite
    number > 0 (``"1d"``, ``"-5"``, ``"nan"``) gives the default with a warning
    naming the value, never an exception: a monitoring setting must not fail a run.
    """
    raw = (os.environ if environ is None else environ).get(MAX_SILENCE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_SILENCE_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        logger.warning("%s=%r is not a number of seconds > 0; using the default %d s",
                       MAX_SILENCE_ENV, raw, DEFAULT_MAX_SILENCE_S)
        return DEFAULT_MAX_SILENCE_S
    return seconds


@dataclass(frozen=True)
class RunMetrics:
    """What one finished flow run reports to Prometheus.

    Validated on creation (:class:`ValueError` for anything Prometheus could
    not represent or that is surely a bug: unknown outcome or severity,
    negative count, non-finite time, duplicate check).

    Attributes:
        flow: flow name, e.g. ``"TransactionEnrichmentFlow"``; the Pushgateway ``job``.
        run_id: full run id, e.g. ``"TransactionEnrichmentFlow/1795..."``.
        succeeded: whether the run succeeded.
        finished_at: unix time (seconds) the run finished.
        duration_s: wall time of the whole run, in seconds.
        rows: outcome -> row count; keys among :data:`ROW_OUTCOMES`.
        step_durations: step -> seconds of its last attempt.
        step_attempts: step -> number of attempts.
        checks: ``(check name, severity, passed)``; severity among :data:`SEVERITIES`.
        anomalies: anomalies found by the run.
        max_silence_s: longest time, in seconds, without a successful run before
            the dead man's switch alert fires; by default read from
            ``ENRICH_MAX_SILENCE_SECONDS`` (:func:`max_silence_from_env`).
    """

    flow: str
    run_id: str
    succeeded: bool
    finished_at: float
    duration_s: float
    rows: Mapping[str, int]
    step_durations: Mapping[str, float]
    step_attempts: Mapping[str, int]
    checks: Sequence[tuple[str, str, bool]]
    anomalies: int = 0
    max_silence_s: float = field(default_factory=max_silence_from_env)

    def __post_init__(self) -> None:
        """Check every field; raise :class:`ValueError` on the first bad one."""
        _require_text("flow", self.flow)
        _require_text("run_id", self.run_id)
        if not isinstance(self.succeeded, bool):
            raise ValueError(f"succeeded must be a bool, got {self.succeeded!r}")
        _require_seconds("finished_at", self.finished_at)
        _require_seconds("duration_s", self.duration_s)
        for outcome, count in self.rows.items():
            if outcome not in ROW_OUTCOMES:
                raise ValueError(f"unknown row outcome {outcome!r}; expected one of {ROW_OUTCOMES}")
            _require_count(f"rows[{outcome!r}]", count)
        for step, seconds in self.step_durations.items():
            _require_text("step name", step)
            _require_seconds(f"step_durations[{step!r}]", seconds)
        for step, attempts in self.step_attempts.items():
            _require_text("step name", step)
            _require_count(f"step_attempts[{step!r}]", attempts)
        seen: set[tuple[str, str]] = set()
        for entry in self.checks:
            if not isinstance(entry, tuple) or len(entry) != 3:
                raise ValueError(f"a check must be a (name, severity, passed) tuple, got {entry!r}")
            name, severity, passed = entry
            _require_text("check name", name)
            if severity not in SEVERITIES:
                raise ValueError(f"check {name!r}: unknown severity {severity!r}; expected one of {SEVERITIES}")
            if not isinstance(passed, bool):
                raise ValueError(f"check {name!r}: passed must be a bool, got {passed!r}")
            if (name, severity) in seen:
                raise ValueError(f"check {name!r} with severity {severity!r} is listed twice")
            seen.add((name, severity))
        _require_count("anomalies", self.anomalies)
        _require_seconds("max_silence_s", self.max_silence_s)
        if not self.max_silence_s > 0:
            raise ValueError(f"max_silence_s must be > 0, got {self.max_silence_s!r}")


def _require_text(what: str, value: object) -> None:
    """Raise :class:`ValueError` unless ``value`` is a non-empty string."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, got {value!r}")


def _require_seconds(what: str, value: object) -> None:
    """Raise :class:`ValueError` unless ``value`` is a finite real number >= 0."""
    if (isinstance(value, bool) or not isinstance(value, numbers.Real)
            or not math.isfinite(value) or value < 0):
        raise ValueError(f"{what} must be a finite number of seconds >= 0, got {value!r}")


def _require_count(what: str, value: object) -> None:
    """Raise :class:`ValueError` unless ``value`` is an integer >= 0 (numpy integers accepted)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"{what} must be an integer >= 0, got {value!r}")


def build_registry(metrics: RunMetrics, last_success: float | None) -> CollectorRegistry:
    """Return a fresh registry holding every metric of ``metrics`` (see the module doc).

    ``enrich_last_success_timestamp_seconds`` is ``metrics.finished_at`` for a
    succeeded run (``last_success`` is then ignored), ``last_success`` for a
    failed one, and absent (not even declared) for a failed run when
    ``last_success`` is ``None``.

    Raises:
        ValueError: ``last_success`` is negative or not finite.
    """
    if last_success is not None:
        _require_seconds("last_success", last_success)
    registry = CollectorRegistry()
    success_time = metrics.finished_at if metrics.succeeded else last_success
    if success_time is not None:
        Gauge(LAST_SUCCESS, "Unix time the last successful run of the flow finished.",
              registry=registry).set(float(success_time))
    Gauge(LAST_RUN_TIMESTAMP, "Unix time the last run of the flow finished, successful or not.",
          registry=registry).set(float(metrics.finished_at))
    Gauge(LAST_RUN_SUCCESS, "1 if the last run of the flow succeeded, 0 if it failed.",
          registry=registry).set(1 if metrics.succeeded else 0)
    Gauge(RUN_DURATION, "Wall time of the last run of the flow, in seconds.",
          registry=registry).set(float(metrics.duration_s))
    # Info appends "_info" to its name when exposed.
    Info(LAST_RUN_INFO.removesuffix("_info"), "Identity of the last run of the flow (always 1).",
         registry=registry).info({"flow": metrics.flow, "run_id": metrics.run_id})

    rows = Gauge(ROWS, "Rows of the last run, by outcome (0 when the run counted none).",
                 ["outcome"], registry=registry)
    for outcome in ROW_OUTCOMES:
        rows.labels(outcome=outcome).set(int(metrics.rows.get(outcome, 0)))

    durations = Gauge(STEP_DURATION, "Wall time of the last attempt of each step of the last run, in seconds.",
                      ["step"], registry=registry)
    for step, seconds in sorted(metrics.step_durations.items()):
        durations.labels(step=step).set(float(seconds))
    attempts = Gauge(STEP_ATTEMPTS, "Attempts of each step of the last run (1 = no retry).",
                     ["step"], registry=registry)
    for step, count in sorted(metrics.step_attempts.items()):
        attempts.labels(step=step).set(int(count))

    passed = Gauge(CHECK_PASSED, "1 if the check passed in the last run, 0 if it failed.",
                   ["check", "severity"], registry=registry)
    failed_by_severity = dict.fromkeys(SEVERITIES, 0)
    for name, severity, ok in metrics.checks:
        passed.labels(check=name, severity=severity).set(1 if ok else 0)
        if not ok:
            failed_by_severity[severity] += 1
    failed = Gauge(CHECKS_FAILED, "Checks that failed in the last run, by severity.",
                   ["severity"], registry=registry)
    for severity, count in failed_by_severity.items():
        failed.labels(severity=severity).set(count)

    Gauge(ANOMALIES, "Anomalies found by the last run.", registry=registry).set(int(metrics.anomalies))
    Gauge(MAX_SILENCE, "Longest time without a successful run before the dead man's switch alert "
          f"fires, in seconds (${MAX_SILENCE_ENV}).", registry=registry).set(float(metrics.max_silence_s))
    return registry


def write_textfile(path: Path, metrics: RunMetrics, last_success: float | None) -> None:
    """Atomically (re)write ``path`` in node_exporter's textfile-collector format.

    The whole exposition is written to a temporary file in the same directory
    (named ``.<name>.<random>.tmp``: hidden and not ending in ``.prom``, so the
    collector never reads it), flushed and fsynced, made readable by other
    users (node_exporter usually runs as its own user; the metrics hold no
    secret), then renamed over ``path`` with :func:`os.replace`. A reader sees
    either the old complete file or the new complete file, never a partial
    one; on any error the temporary file is removed and ``path`` is untouched.
    ``prometheus_client.write_to_textfile`` does the same rename but without
    fsync, hence this implementation. The collector only reads files whose
    name ends in ``.prom``; another name is written all the same, with a warning.

    Raises:
        OSError: the directory does not exist or is not writable, disk full...
        ValueError: bad ``last_success`` (see :func:`build_registry`).
    """
    path = Path(path)
    data = generate_latest(build_registry(metrics, last_success))
    if path.suffix != ".prom":
        logger.warning("metrics textfile %s does not end in .prom: node_exporter will ignore it", path)
    replace_atomically(path, data)
    logger.debug("wrote %d bytes of run metrics to %s", len(data), path)


def push(gateway_url: str, metrics: RunMetrics, last_success: float | None, *,
         timeout: float = 10.0) -> None:
    """Push the run's metrics to the Pushgateway at ``gateway_url``, grouping key ``job=<flow>``.

    A succeeded run is pushed with ``PUT`` (replaces the whole group); a failed
    run with ``POST`` and *without* ``enrich_last_success_timestamp_seconds``,
    so that the gateway keeps the last successful run's value;
    ``last_success`` is ignored here and accepted only for symmetry with
    :func:`write_textfile` (see the module doc for why). ``gateway_url`` may
    omit the scheme (``http://`` is assumed). ``timeout`` bounds each socket
    operation (connect, each read), in seconds.

    Raises:
        OSError: unreachable gateway, timeout, or an HTTP error status
            (:class:`urllib.error.HTTPError` is an ``OSError``).
        http.client.HTTPException: malformed HTTP answer.
        ValueError: malformed URL.
    """
    if last_success is not None:
        _require_seconds("last_success", last_success)
    # Never pass last_success on: for a succeeded run the value is finished_at,
    # for a failed one build_registry(..., None) leaves the metric out.
    registry = build_registry(metrics, None)
    if metrics.succeeded:
        push_to_gateway(gateway_url, job=metrics.flow, registry=registry, timeout=timeout)
        method = "PUT"
    else:
        pushadd_to_gateway(gateway_url, job=metrics.flow, registry=registry, timeout=timeout)
        method = "POST"
    logger.info("pushed metrics of %s (%s) to %s with %s",
                metrics.run_id, "succeeded" if metrics.succeeded else "failed",
                _display_url(gateway_url), method)


def publish_metrics(metrics: RunMetrics, textfile: Path | None, gateway_url: str | None,
                    last_success: float | None) -> list[str]:
    """Write the textfile and/or push to the gateway; return the problems met, never raise for them.

    ``textfile`` / ``gateway_url`` set to ``None`` (or an empty URL) skip that
    destination. Both destinations are tried even if the first fails. Every
    problem is logged as a warning (with its reason) and returned as one
    human-readable string; an empty list means everything requested was
    published. Only a bad ``last_success`` (negative, NaN...) still raises
    :class:`ValueError`, being a programming error rather than an outage.
    """
    if last_success is not None:
        _require_seconds("last_success", last_success)
    problems: list[str] = []
    if textfile is not None:
        try:
            write_textfile(Path(textfile), metrics, last_success)
        except OSError as exc:
            problem = f"could not write metrics textfile {textfile}: {_reason(exc)}"
            logger.warning("%s", problem)
            problems.append(problem)
    if gateway_url is not None and gateway_url.strip():
        url = gateway_url.strip()
        try:
            push(url, metrics, last_success)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            problem = f"could not push metrics to Pushgateway {_display_url(url)}: {_reason(exc)}"
            logger.warning("%s", problem)
            problems.append(problem)
    return problems


def gateway_url_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """The Pushgateway URL from ``PROMETHEUS_PUSHGATEWAY`` (stripped), or ``None`` when unset or blank."""
    value = (os.environ if environ is None else environ).get(PUSHGATEWAY_ENV, "").strip()
    return value or None


def _display_url(url: str) -> str:
    """``url`` with any ``user:password@`` part masked, for logs and problem messages."""
    return _USERINFO.sub(r"\1***@", url)


def _reason(exc: BaseException) -> str:
    """A one-line reason for ``exc``, with the body of a Pushgateway HTTP error when there is one."""
    if isinstance(exc, urllib.error.HTTPError):
        reason = f"HTTP {exc.code} {exc.reason}"
        try:
            body = exc.read(_MAX_ERROR_BODY).decode("utf-8", "replace").strip()
        except (OSError, http.client.HTTPException, ValueError):
            body = ""
        return f"{reason}: {' '.join(body.split())}" if body else reason
    if isinstance(exc, urllib.error.URLError):
        return f"{type(exc.reason).__name__}: {exc.reason}" if isinstance(exc.reason, BaseException) \
            else str(exc.reason)
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
