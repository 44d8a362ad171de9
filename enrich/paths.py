"""Where the project's own files are. Imports nothing heavy: the flow file reads it when
Metaflow defines the flow's parameters, in processes that run no step."""
from __future__ import annotations

from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
BUNDLED_TRANSACTIONS = PROJECT_DIR / "data" / "transactions.csv"
