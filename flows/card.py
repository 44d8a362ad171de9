"""The run report as a Metaflow card (``@card(type="blank", id="run_report")`` on ``end``).

:func:`draw_run_report` is what ``end`` calls: it reads the run back from the database
(:func:`enrich.report.build_report`) and draws it with :func:`render_run_card`. The card
is self-contained: Metaflow's card bundle inlines its JavaScript and CSS, and the charts
are Vega-Lite specs with inline data, so it renders offline.

Metaflow renders a card only when its task succeeds; ``end`` fails a run (``RunFailed``)
after alerting, so for a failing run the card is rendered right away, while the task
still runs (:func:`_render_before_failing`).
"""
from __future__ import annotations

import logging
from typing import Any

from metaflow import current
from metaflow.cards import Markdown, Table, ValueBox, VegaChart

from enrich import report as run_report
from enrich.errors import EnrichError
from enrich.report import RunReport

logger = logging.getLogger(__name__)

CARD_ID = "run_report"
MAX_CELL_CHARS = 160


def draw_run_report(store: Any, run_id: str, *, task_will_fail: bool = False) -> bool:
    """Draw run ``run_id``'s report on the ``run_report`` card of the current step.

    Never raises for the report's own problems (database unreadable, run not in the
    ledger, a figure a card component refuses): they are logged and shown on the card.
    ``task_will_fail``: the step is about to raise, so render the card now (Metaflow
    would not render it after a failed task). Returns whether the report was drawn.
    """
    cards = getattr(current, "card", None)
    if cards is None:  # the step has no @card decorator
        logger.error("run report not drawn for %s: the step has no @card(id=%r)", run_id, CARD_ID)
        return False
    card = cards[CARD_ID]
    drawn = False
    try:
        if store is None:
            raise run_report.ReportError("the run's database could not be opened")
        render_run_card(card, run_report.build_report(store, run_id))
        drawn = True
    # the report's own errors: database unreadable or locked, run not in the ledger (ReportError),
    # a value a card component refuses (TypeError, ValueError)
    except (EnrichError, OSError, TypeError, ValueError) as exc:
        logger.error("run report not drawn for %s: %s: %s", run_id, type(exc).__name__, exc)
        card.append(Markdown(f"# Run report unavailable\n\n{run_report.markdown_literal(run_id)}: "
                             f"{run_report.markdown_literal(f'{type(exc).__name__}: {exc}')}"))
    if task_will_fail:
        _render_before_failing(card)
    return drawn


def render_run_card(card, report: RunReport) -> None:
    """Append the report's components to ``card`` (``current.card[...]``, or any list)."""
    components = [Markdown(run_report.report_markdown(report)), _value_boxes(report), _run_table(report)]

    components += [Markdown("## Figures, compared with the previous run"), _figures_table(report)]

    components += [Markdown("## Distributions (whole database)"),
                   VegaChart(report.charts["annotations"]), VegaChart(report.charts["tags"])]

    failed = report.failed_checks
    components.append(Markdown(f"## Checks: {len(report.checks) - len(failed)} passed, {len(failed)} failed"))
    components.append(_checks_table(report))

    components += [Markdown("## Steps"), _steps_table(report)]
    if report.charts["steps"]["data"]["values"]:
        components.append(VegaChart(report.charts["steps"]))

    rejected = _sample_title(len(report.rejected_sample), report.rejected_total, report.sample_limit)
    components.append(Markdown(f"## Rejected rows: {rejected}"))
    if report.rejected_sample:
        components.append(Table([[str(r["line"]), _clip(r["raw"]), _clip(r["reason"])]
                                 for r in report.rejected_sample], headers=["line", "raw", "reason"]))

    components.append(Markdown("## Anomalies, largest amounts first: "
                               + _sample_title(len(report.anomalies_sample), None, report.sample_limit)))
    if report.anomalies_sample:
        components.append(Table([[str(a["transaction_id"]), run_report.format_cents(a["amount_cents"]),
                                  _clip(a["wording"]), _clip(a["kind"]), _clip(a["detail"])]
                                 for a in report.anomalies_sample],
                                headers=["id", "amount", "wording", "kind", "detail"]))

    if report.alerts:
        components += [Markdown("## Alerts"),
                       Table([[run_report.format_time(a.created_at), a.channel, a.status, _clip(a.error)]
                              for a in report.alerts],
                             headers=["sent at", "channel", "status", "error"])]
    card.extend(components)


# --------------------------------------------------------------------------- components
def _value_boxes(report: RunReport) -> Table:
    """Key figures as value boxes, two rows of three."""
    failed = report.failed_checks
    critical = sum(1 for check in failed if check.severity == "critical")
    rows_read, loaded, rejected, duration = (report.figure(key) for key in
                                             ("rows_read", "rows_loaded", "rows_rejected", "duration_s"))
    return Table([
        [ValueBox(title="status", value=report.status, change_indicator=_vs_previous_status(report),
                  theme={"succeeded": "success", "failed": "danger"}.get(report.status, "warning")),
         ValueBox(title="checks failed", value=f"{len(failed)} of {len(report.checks)}",
                  change_indicator=f"{critical} critical" if failed else "all passed",
                  theme="danger" if critical else "warning" if failed else "success"),
         ValueBox(title="duration", value=run_report.format_duration(duration.value),
                  change_indicator=_change_text(duration))],
        [ValueBox(title="rows read", value=run_report.format_number(rows_read.value),
                  change_indicator=_change_text(rows_read)),
         ValueBox(title="rows loaded", value=run_report.format_number(loaded.value),
                  change_indicator=_change_text(loaded)),
         ValueBox(title="rows rejected", value=run_report.format_number(rejected.value),
                  change_indicator=_change_text(rejected), theme="warning" if rejected.value else None)],
    ])


def _run_table(report: RunReport) -> Table:
    rows = [["run", report.run_id], ["status", report.status], ["started", run_report.format_time(report.started_at)],
            ["finished", run_report.format_time(report.finished_at)], ["user", _clip(report.user)],
            ["input", _clip(report.input_path)], ["tag matching", _clip(report.match_mode)],
            ["previous run", f"{report.previous_run_id} ({report.previous_status})" if report.previous_run_id
             else "none (first run in this database)"]]
    return Table(rows)  # type: ignore[arg-type]  # (Metaflow's hint wants list[str | component]: str is one)


def _figures_table(report: RunReport) -> Table:
    rows = [[figure.group, figure.label, _fmt(figure, figure.value), _fmt(figure, figure.previous),
             _fmt(figure, figure.delta, signed=True)] for figure in report.figures]
    previous = report.previous_run_id or "no previous run"
    return Table(rows, headers=["", "figure", "this run", f"previous ({previous})", "change"])  # type: ignore[arg-type]


def _checks_table(report: RunReport) -> Table:
    if not report.checks:
        return Table([["no check results were recorded for this run"]], headers=["checks"])
    return Table([["✓ pass" if c.passed else "✗ FAIL", c.name, c.severity, _clip(c.observed), _clip(c.expected),
                   _clip(c.message)] for c in report.checks],
                 headers=["result", "check", "severity", "observed", "expected", "message"])


def _steps_table(report: RunReport) -> Table:
    if not report.steps:
        return Table([["no step attempts were recorded for this run"]], headers=["steps"])
    return Table([[s.step, str(s.retry + 1), "in progress" if s.status == "running" else s.status,
                   run_report.format_duration(s.duration_s), _clip(s.error)]
                  for s in report.steps], headers=["step", "attempt", "status", "duration", "error"])


def _fmt(figure, value, signed: bool = False) -> str:
    if figure.key == "duration_s" and value is not None:
        return ("+" if signed and value > 0 else "-" if value < 0 else "") + run_report.format_duration(abs(value))
    return run_report.format_number(value, signed=signed)


def _change_text(figure) -> str:
    if figure.delta is None:
        return "no previous figure"
    if figure.delta == 0:
        return "same as previous run"
    if figure.key == "duration_s":
        return f"{_fmt(figure, figure.delta, signed=True)} vs previous run"
    return f"{run_report.format_number(figure.delta, signed=True)} vs previous run"


def _vs_previous_status(report: RunReport) -> str:
    return f"previous run {report.previous_status}" if report.previous_status else "first run in this database"


def _sample_title(shown: int, total: int | None, limit: int) -> str:
    if shown == 0:
        return "none"
    if total is not None and total > shown:
        return f"the first {shown} of {total:,}"
    return f"the first {shown} (more may exist)" if total is None and shown >= limit else f"{shown} listed"


def _clip(text: object) -> str:
    if text is None or text == "":
        return "—"
    text = str(text)
    return text if len(text) <= MAX_CELL_CHARS else text[:MAX_CELL_CHARS - 1] + "…"


# --------------------------------------------------------------------------- failed tasks
def _render_before_failing(card) -> None:
    """Render the card now, and wait for it: the step is about to fail, after which Metaflow renders nothing.

    ``refresh(force=True)`` renders a card while its task runs, in a background process.
    The second ``refresh`` asks for a data update synchronously, which first waits for
    that render to finish (``@card(refresh_interval=0)`` lets the two calls through).
    """
    refresh = getattr(card, "refresh", None)
    if refresh is None:  # no @card(id="run_report") on this step
        return
    try:
        refresh(force=True)
        refresh(force=True)
    except OSError as exc:
        logger.error("run report card not rendered before the failure: %s", exc)
