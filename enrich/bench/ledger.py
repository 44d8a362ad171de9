"""The harness's only read of our run's results: rows read and per-step durations, from the ledger.

Kept to one small function on purpose: it is the one place of the harness that knows the
storage layer (``runs`` and ``step_runs`` through :mod:`enrich.storage`), so porting the harness
to another storage layer means porting :func:`run_figures` only.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from enrich import storage


@dataclass(frozen=True)
class LedgerFigures:
    """What the ledger says about the latest run: rows it read, seconds per step (all attempts)."""

    rows_read: int | None = None
    steps_s: dict[str, float] = field(default_factory=dict)


def run_figures(database: Path) -> LedgerFigures:
    """Rows read by the latest run of ``database`` and each step's duration summed over its attempts.

    A database without any run (our flow failed before its ledger row) gives empty figures.
    """
    db = storage.connect(database)
    try:
        latest = storage.latest_run(db)
        if latest is None:
            return LedgerFigures()
        steps: dict[str, float] = {}
        for attempt in storage.step_attempts(db, latest["run_id"]):
            steps[attempt["step"]] = round(steps.get(attempt["step"], 0.0) + float(attempt["duration_s"] or 0), 2)
        return LedgerFigures(rows_read=latest["rows_read"], steps_s=steps)
    finally:
        db.close()
