"""The harness's only read of our run's results: rows read and per-step durations, from the ledger.

Kept to one small function on purpose: it is the one place of the harness that knows the
storage layer (``runs`` and ``step_runs``, read through :mod:`enrich.store`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from enrich.store import open_store


@dataclass(frozen=True)
class LedgerFigures:
    """What the ledger says about the latest run: rows it read, seconds per step (all attempts)."""

    rows_read: int | None = None
    steps_s: dict[str, float] = field(default_factory=dict)


def run_figures(database: Path | str) -> LedgerFigures:
    """Rows read by the latest run of ``database`` and each step's duration summed over its attempts.

    A database without any run (our flow failed before its ledger row) gives empty figures.
    """
    store = open_store(database, read_only=True)
    if not store.exists():
        return LedgerFigures()
    latest = store.latest_run()
    if latest is None:
        return LedgerFigures()
    steps: dict[str, float] = {}
    for attempt in store.step_attempts(latest.run_id):
        steps[attempt.step] = round(steps.get(attempt.step, 0.0) + float(attempt.duration_s or 0), 2)
    return LedgerFigures(rows_read=latest.rows_read, steps_s=steps)
