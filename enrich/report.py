"""The visual run report, as plain data: what one run did, read back from the database.

:func:`build_report` composes the ledger (``runs``, ``step_runs``, ``check_results``,
``alerts``), the samples (rejected rows, anomalies) and the whole-database counts
(tags, annotations) into a :class:`RunReport`: frozen dataclasses, plain values and
Vega-Lite chart specs as dicts. It knows nothing of Metaflow (``flows/card.py`` turns a
report into card components) and never reads the configuration, so no secret can reach it.
Every read goes through :mod:`enrich.storage`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from enrich.annotation import ANNOTATIONS
from enrich.errors import EnrichError
from enrich.figures import FIGURES
from enrich.store import TAGS, WHOLE_DATABASE, CheckRecord, StepAttempt, Store
from enrich.store import ANNOTATIONS as ANNOTATIONS_TABLE

#: Rows listed in each sample (rejected rows, anomalies).
SAMPLE_ROWS = 20


NO_TAG = "(no tag)"
NO_ANNOTATION = "(no annotation)"
_SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


class ReportError(EnrichError):
    """The run cannot be reported (e.g. it is not in the ledger)."""


@dataclass(frozen=True)
class Figure:
    """One headline figure of the run, with the previous run's value for comparison."""

    key: str  # ledger column, or "duration_s"
    label: str
    group: str  # rows, tagging, annotation, timing
    value: int | float | None
    previous: int | float | None = None

    @property
    def delta(self) -> int | float | None:
        """This run's value minus the previous run's (None when either is unknown)."""
        if self.value is None or self.previous is None:
            return None
        return self.value - self.previous


@dataclass(frozen=True)
class CheckRow:
    """One data check's verdict for the run."""

    name: str
    severity: str
    passed: bool
    observed: str
    expected: str
    message: str


@dataclass(frozen=True)
class StepRow:
    """One recorded attempt of one step (``retry`` is Metaflow's retry count: 0 for the first attempt)."""

    step: str
    task_id: str
    retry: int
    status: str
    started_at: str | None
    duration_s: float | None
    error: str | None


@dataclass(frozen=True)
class AlertRow:
    """An alert sent for the run (recipients and message left out: the card shows the outcome only)."""

    channel: str
    status: str
    created_at: str
    error: str | None


@dataclass(frozen=True)
class RunReport:
    """Everything the run report shows, as plain data."""

    run_id: str
    status: str
    started_at: str | None
    finished_at: str | None
    duration_s: float | None
    user: str | None
    input_path: str | None
    match_mode: str | None
    figures: tuple[Figure, ...]
    previous_run_id: str | None
    previous_status: str | None
    annotation_counts: dict[str, int]  # whole database, rule order, then NO_ANNOTATION
    tag_counts: dict[str, int]  # whole database, most frequent first, then NO_TAG
    checks: tuple[CheckRow, ...]  # failed first, then by severity and name
    steps: tuple[StepRow, ...]  # in start order
    rejected_sample: tuple[dict[str, Any], ...]  # line, raw, reason
    rejected_total: int | None
    anomalies_sample: tuple[dict[str, Any], ...]  # transaction_id, kind, amount_cents, detail, wording
    alerts: tuple[AlertRow, ...]
    sample_limit: int = SAMPLE_ROWS  # rows asked for in each sample
    charts: dict[str, dict[str, Any]] = field(default_factory=dict)  # name -> Vega-Lite spec

    def figure(self, key: str) -> Figure:
        """The headline figure of ledger column ``key`` (or ``duration_s``)."""
        for figure in self.figures:
            if figure.key == key:
                return figure
        raise KeyError(key)

    @property
    def failed_checks(self) -> tuple[CheckRow, ...]:
        return tuple(check for check in self.checks if not check.passed)


# --------------------------------------------------------------------------- building
def build_report(store: Store, run_id: str, sample_rows: int = SAMPLE_ROWS) -> RunReport:
    """Read run ``run_id`` (a ``Flow/run-number`` pathspec) back from the database as a :class:`RunReport`.

    Raises :class:`ReportError` when the run is not in the ledger.
    """
    run = store.get_run(run_id)
    if run is None:
        raise ReportError(f"run {run_id} is not in the ledger of this database")
    previous = store.previous_run(run_id)
    duration = duration_seconds(run.started_at, run.finished_at)
    previous_duration = duration_seconds(previous.started_at, previous.finished_at) if previous else None

    figures = [Figure(f.name, f.label, f.group, run.figure(f.name), previous.figure(f.name) if previous else None)
               for f in FIGURES]
    figures.append(Figure("duration_s", "duration (s)", "timing", duration, previous_duration))

    totals = store.table_counts()
    annotation_counts = _annotation_counts(database_counts(store, run_id, ANNOTATIONS_TABLE), totals["transactions"])
    tag_counts = _tag_counts(database_counts(store, run_id, TAGS), totals["transactions"])
    steps = tuple(_step_row(attempt) for attempt in store.step_attempts(run_id))

    return RunReport(
        run_id=run_id, status=run.status, started_at=run.started_at, finished_at=run.finished_at,
        duration_s=duration, user=run.user, input_path=run.input_path, match_mode=run.match_mode,
        figures=tuple(figures), previous_run_id=previous.run_id if previous else None,
        previous_status=previous.status if previous else None,
        annotation_counts=annotation_counts, tag_counts=tag_counts,
        checks=_check_rows(store.check_results(run_id)),
        steps=steps,
        rejected_sample=tuple(store.rejected_rows(run_id, sample_rows)),
        rejected_total=run.rows_rejected,
        anomalies_sample=tuple(store.anomalies(run_id, sample_rows)),
        alerts=tuple(AlertRow(a.channel, a.status, a.created_at or "", a.error) for a in store.alerts_for_run(run_id)),
        sample_limit=sample_rows,
        charts={"annotations": bar_chart(annotation_counts, "Annotations (whole database)", "annotation",
                                         sort=None, muted=NO_ANNOTATION),
                "tags": bar_chart(tag_counts, "Tags (whole database)", "tag", sort=None, muted=NO_TAG),
                "steps": step_chart(steps)},
    )


def database_counts(store: Store, run_id: str, kind: str) -> dict[str, int]:
    """Rows per value of the tags (or annotations) table: as the run's checks found them, else
    (the checks did not run, or could not count exactly) counted now."""
    return store.distribution([run_id], WHOLE_DATABASE[kind]) or store.value_counts(kind)


def duration_seconds(started_at: str | None, finished_at: str | None) -> float | None:
    """Seconds between two ledger timestamps (ISO 8601), or None when either is missing or unreadable."""
    if not started_at or not finished_at:
        return None
    try:
        return round((datetime.fromisoformat(finished_at) - datetime.fromisoformat(started_at)).total_seconds(), 3)
    except (TypeError, ValueError):
        return None


def _annotation_counts(counts: dict[str, int], transactions: int) -> dict[str, int]:
    ordered = {label: int(counts.get(label, 0)) for label in ANNOTATIONS}
    ordered.update({label: int(n) for label, n in counts.items() if label not in ordered})
    ordered[NO_ANNOTATION] = max(transactions - sum(counts.values()), 0)
    return ordered


def _tag_counts(counts: dict[str, int], transactions: int) -> dict[str, int]:
    ordered = {tag: int(n) for tag, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))}
    ordered[NO_TAG] = max(transactions - sum(counts.values()), 0)
    return ordered


def _check_rows(rows: list[CheckRecord]) -> tuple[CheckRow, ...]:
    checks = [CheckRow(row.check_name, row.severity, row.passed, row.observed or "", row.expected or "",
                       row.message) for row in rows]
    return tuple(sorted(checks, key=lambda c: (c.passed, _SEVERITY_RANK.get(c.severity, 9), c.name)))


def _step_row(attempt: StepAttempt) -> StepRow:
    error = ": ".join(part for part in (attempt.error_type, attempt.error_message) if part) or None
    return StepRow(attempt.step, attempt.task_id, int(attempt.attempt), attempt.status, attempt.started_at,
                   attempt.duration_s, error)


# --------------------------------------------------------------------------- charts (Vega-Lite)
def bar_chart(counts: dict[str, int], title: str, category: str, *, sort: str | None = "-x",
              muted: str | None = None) -> dict[str, Any]:
    """A horizontal bar chart of ``counts`` with the value printed at the end of each bar.

    ``sort=None`` keeps the order of ``counts``; the ``muted`` category (e.g. "no tag") is drawn in grey.
    Self-contained (inline data, no ``$schema`` URL), so it renders offline.
    """
    values = [{category: name, "count": int(n), "kind": "muted" if name == muted else "value"}
              for name, n in counts.items()]
    y_sort = sort if sort is not None else [name for name in counts]
    return {
        "title": title,
        "data": {"values": values},
        "height": {"step": 24},
        "encoding": {
            "y": {"field": category, "type": "nominal", "sort": y_sort, "title": None},
            "x": {"field": "count", "type": "quantitative", "title": "transactions",
                  "axis": {"tickMinStep": 1, "tickCount": 8, "format": ",.0f"}},
        },
        "layer": [
            {"mark": {"type": "bar", "tooltip": True},
             "encoding": {"color": {"field": "kind", "type": "nominal", "legend": None,
                                    "scale": {"domain": ["value", "muted"], "range": ["#4c78a8", "#bab0ac"]}}}},
            {"mark": {"type": "text", "align": "left", "dx": 3},
             "encoding": {"text": {"field": "count", "type": "quantitative", "format": ",.0f"}}},
        ],
    }


def step_chart(steps: tuple[StepRow, ...]) -> dict[str, Any]:
    """Duration of every finished step attempt, in start order, coloured by status."""
    values = [{"attempt": f"{s.step} #{s.retry + 1}" if s.retry else s.step, "seconds": s.duration_s,
               "status": s.status} for s in steps if s.duration_s is not None]
    return {
        "title": "Step durations (s)",
        "data": {"values": values},
        "height": {"step": 24},
        "mark": {"type": "bar", "tooltip": True},
        "encoding": {
            "y": {"field": "attempt", "type": "nominal", "sort": None, "title": None},
            "x": {"field": "seconds", "type": "quantitative", "title": "seconds", "axis": {"tickCount": 6}},
            "color": {"field": "status", "type": "nominal",
                      "scale": {"domain": ["succeeded", "failed", "skipped"],
                                "range": ["#54a24b", "#e45756", "#bab0ac"]}},
        },
    }


# --------------------------------------------------------------------------- text
def format_number(value: int | float | None, *, signed: bool = False) -> str:
    """``1,234`` / ``1.23`` (``+``/``-`` when ``signed``); ``—`` for an unknown value."""
    if value is None:
        return "—"
    sign = "+" if signed and value > 0 else ""
    if isinstance(value, float) and not value.is_integer():
        return f"{sign}{value:,.2f}"
    return f"{sign}{int(value):,}"


def format_duration(seconds: float | None) -> str:
    """``85 ms`` / ``12.3 s`` / ``4 min 05 s``; ``—`` when unknown."""
    if seconds is None:
        return "—"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(round(seconds)), 60)
    return f"{minutes} min {rest:02d} s"


def format_time(timestamp: str | None) -> str:
    """A ledger timestamp as ``2025-11-22 03:28:19 UTC`` (as stored when it cannot be read)."""
    if not timestamp:
        return "—"
    try:
        moment = datetime.fromisoformat(timestamp)
    except (TypeError, ValueError):
        return str(timestamp)
    if moment.utcoffset() is not None:
        moment = moment.astimezone(timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S") + (" UTC" if moment.tzinfo else "")


def format_cents(cents: int | None) -> str:
    """``-283.66 EUR``."""
    if cents is None:
        return "—"
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(int(cents)) // 100:,}.{abs(int(cents)) % 100:02d} EUR"


_PLAIN = re.compile(r"[A-Za-z0-9 /:.,+@()-]*(?:(?<=[A-Za-z0-9])_(?=[A-Za-z0-9])[A-Za-z0-9 /:.,+@()-]*)*")


def markdown_literal(text: object) -> str:
    """``text`` shown as is in Markdown: plain when it holds no markup character, else a code span.

    Backslash escapes are not used: the card's Markdown renderer drops escaped characters.
    """
    text = " ".join(str(text).split())
    if _PLAIN.fullmatch(text):
        return text
    return "`" + text.replace("`", "'") + "`"


def _figures_sentence(report: RunReport, keys: tuple[str, ...]) -> str:
    figures = [report.figure(key) for key in keys]
    if all(figure.value is None for figure in figures):
        return "none recorded (no row re-derived, or the step did not finish)."
    return ", ".join(f"{format_number(figure.value)} {figure.label}" for figure in figures) + "."


def report_markdown(report: RunReport) -> str:
    """The headline of the report as Markdown: status, timing, figures, checks, previous run."""
    failed = report.failed_checks
    critical = sum(1 for c in failed if c.severity == "critical")
    f = {figure.key: format_number(figure.value) for figure in report.figures}
    lines = [
        f"# Run {markdown_literal(report.run_id)}: {markdown_literal(report.status.upper())}",
        "",
        f"Started {format_time(report.started_at)}, finished {format_time(report.finished_at)}: "
        f"took **{format_duration(report.duration_s)}**.",
        "",
        f"**{f['rows_read']}** rows read: {f['rows_loaded']} loaded ({f['rows_new']} new, {f['rows_updated']} "
        f"updated, {f['rows_unchanged']} unchanged), {f['rows_rejected']} rejected, {f['rows_duplicate']} "
        f"duplicate.",
        "",
        "Tagging: " + _figures_sentence(report, ("tagged", "untagged", "ambiguous"))
        + " Annotation: " + _figures_sentence(report, ("annotated", "zero_amount")),
        "",
    ]
    if not report.checks:
        lines.append("No check results were recorded for this run.")
    elif failed:
        lines.append(f"**{len(failed)} of {len(report.checks)} checks failed** ({critical} critical): "
                     + ", ".join(markdown_literal(c.name) for c in failed) + ".")
    else:
        lines.append(f"All {len(report.checks)} checks passed.")
    lines.append("")
    if report.previous_run_id:
        lines.append(f"Compared with the previous run {markdown_literal(report.previous_run_id)} "
                     f"({markdown_literal(report.previous_status)}).")
    else:
        lines.append("First run recorded in this database: nothing to compare with.")
    return "\n".join(lines) + "\n"
