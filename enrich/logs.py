"""Logging set-up shared by the flow's steps and the command-line tools.

Level from ``LOG_LEVEL`` (default INFO). Messages go to standard error, which
Metaflow keeps per task, so ``python algorithm.py logs RUN/STEP`` shows them.
"""
from __future__ import annotations

import logging
import os
import sys

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


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
