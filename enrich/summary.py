"""What a finished run says last: a few lines read back from its ledger.

A successful run: the rows read, loaded (new, updated, unchanged), rejected with the top
reasons, duplicates, tagged, ambiguous and annotated; the checks (warnings called
warnings); the database; how to browse it and see the card. A failed run: each failed
step or check with its one-line error, and the command to read its log.
"""
from __future__ import annotations

from collections import Counter

from enrich.figures import RunRecord
from enrich.store import StepAttempt, Store

TOP_REASONS = 3


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def _reason(text: str) -> str:
    """A rejection reason without its row-specific details (the part before the first colon)."""
    return text.split(":", 1)[0].strip()


def render(store: Store, run_id: str, command: str) -> str:
    """The run's closing lines. ``command`` is how the reader starts the launcher (for the hints)."""
    run = store.get_run(run_id)
    if run is None:
        return f"Run {run_id}: not found in the ledger of {store.location.display}."
    checks = store.check_results(run_id)
    warnings = [c for c in checks if not c.passed and c.severity != "critical"]
    failed_checks = [c for c in checks if not c.passed and c.severity == "critical"]
    failed_steps = _failed_steps(store.step_attempts(run_id))
    lines = [f"Run {run_id} {run.status.upper()} in {store.location.display}"]
    lines += _figures(store, run)
    lines.append("  checks: none run by this run" if not checks else
                 f"  checks: {len(checks) - len(warnings) - len(failed_checks)} passed"
                 + (f", {len(warnings)} warning(s): " + ", ".join(f"{c.check_name} ({c.message})" for c in warnings)
                    if warnings else "")
                 + (f", {len(failed_checks)} FAILED" if failed_checks else ""))
    if run.status == "succeeded":
        lines.append(f"  browse: make browse DATABASE={store.location.display}   card: {command} card view end"
                     if store.location.is_file else
                     f"  browse: enrich query runs_by_status --database {store.location.display} (psql: docs/postgresql.md)"
                     f"   card: {command} card view end")
        return "\n".join(lines)
    lines.append("Failures:")
    if not failed_steps and not failed_checks:  # e.g. a bare resume: only `end` ran, reporting its origin's
        failed_steps = _failed_steps(store.step_attempts(run_id), include_run_failed=True)
        if not failed_steps:
            lines.append(f"  none recorded by this run: see {command} logs {run_id}/end")
    for attempt in failed_steps:
        lines.append(f"  {attempt.step}: {attempt.error_type}: {_first_line(attempt.error_message)}"
                     f"  (log: {command} logs {run_id}/{attempt.step})")
    for check in failed_checks:
        lines.append(f"  check {check.check_name}: {check.message}")
    return "\n".join(lines)


def _figures(store: Store, run: RunRecord) -> list[str]:
    """The rows and enrichment lines (a stage that never recorded its figures is said so, not shown as blanks)."""
    if run.rows_read is None:
        lines = ["  rows: nothing loaded"]
    else:
        reasons = Counter(_reason(str(row["reason"])) for row in store.rejected_rows(run.run_id, 1000))
        top = ", ".join(f"{reason} ({count})" for reason, count in reasons.most_common(TOP_REASONS))
        lines = [f"  rows: {_n(run.rows_read)} read, {_n(run.rows_loaded)} loaded ({_n(run.rows_new)} new, "
                 f"{_n(run.rows_updated)} updated, {_n(run.rows_unchanged)} unchanged), {_n(run.rows_rejected)} "
                 f"rejected{f' ({top})' if top else ''}, {_n(run.rows_duplicate)} duplicate"]
    if run.tagged is not None or run.annotated is not None:
        lines.append(f"  tags: {_n(run.tagged)} tagged, {_n(run.untagged)} untagged, {_n(run.ambiguous)} ambiguous; "
                     f"annotations: {_n(run.annotated)} annotated, {_n(run.zero_amount)} zero amount"
                     + ("  (figures of re-derived rows only)" if run.rows_new == 0 and run.rows_updated == 0 else ""))
    return lines


def _failed_steps(attempts: list[StepAttempt], include_run_failed: bool = False) -> list[StepAttempt]:
    """The last failed attempt of each step that never succeeded, in run order (without ``end``'s
    report of them, ``RunFailed``, unless asked)."""
    succeeded = {a.step for a in attempts if a.status == "succeeded"}
    last: dict[str, StepAttempt] = {}
    for attempt in attempts:
        if (attempt.status == "failed" and attempt.step not in succeeded
                and (include_run_failed or attempt.error_type != "RunFailed")):
            last[attempt.step] = attempt
    return list(last.values())


def _first_line(text: str | None) -> str:
    return " ".join((text or "").split("\n", 1)[0].split())
