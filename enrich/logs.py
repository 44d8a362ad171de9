"""Logging set-up shared by the flow's steps and the command-line tools.

Level from ``LOG_LEVEL`` (default INFO). Messages go to standard error, which
Metaflow keeps per task, so ``python algorithm.py logs RUN/STEP`` shows them.
"""
from __future__ import annotations

import logging
import os
import sys
import time

FORMAT = "%(levelname)s %(name)s: %(message)s"  # (Metaflow stamps every line of a task with its time)


def configure_logging(level: str | None = None) -> None:
    """Install one stderr handler on the root logger (idempotent) at ``level`` or ``$LOG_LEVEL``."""
    name = (level or os.environ.get("LOG_LEVEL") or "INFO").upper()
    numeric = logging.getLevelName(name)
    if not isinstance(numeric, int):
        numeric = logging.INFO
    root = logging.getLogger()
    root.setLevel(numeric)
    if not any(getattr(handler, "_enrich", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._enrich = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    for noisy in ("twilio.http_client", "urllib3"):
        logging.getLogger(noisy).setLevel(max(numeric, logging.WARNING))


class Progress:
    """Logs rows done and rows/s of a long stage, at most every ``every_s`` seconds."""

    def __init__(self, stage: str, every_s: float = 5.0) -> None:
        self.stage, self.every_s = stage, every_s
        self.rows, self.started = 0, time.perf_counter()
        self.last = self.started

    def add(self, rows: int) -> None:
        self.rows += rows
        now = time.perf_counter()
        if now - self.last >= self.every_s:
            self.last = now
            logging.getLogger("enrich.progress").info("%s: %s rows done (%s rows/s)", self.stage,
                                                      f"{self.rows:,}", f"{self.rows / (now - self.started):,.0f}")
