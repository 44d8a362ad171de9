"""Lineage keys: the small integer each run id gets in ``run_keys`` (schema version 4)."""
from __future__ import annotations

from enrich.store.adbc import Cursor


def run_key(cur: Cursor, run_id: str) -> int:
    """The lineage key of ``run_id``, created on first use (inside the caller's transaction)."""
    cur.execute("INSERT OR IGNORE INTO run_keys (run_id) VALUES (?)", (run_id,))
    return int(cur.scalar("SELECT run_key FROM run_keys WHERE run_id = ?", (run_id,)))


def keys_of_runs_sql(count: int) -> str:
    """The lineage keys of ``count`` run ids (bound as parameters)."""
    return f"SELECT run_key FROM run_keys WHERE run_id IN ({', '.join('?' for _ in range(count))})"


def lineage_key_sql(key: str, alias: str) -> str:
    """The run id of a lineage key column, for views and read-back."""
    return f"(SELECT k.run_id FROM run_keys k WHERE k.run_key = {key}) AS {alias}"
