"""Lineage keys: the small integer each run id gets in ``run_keys`` (as on SQLite)."""
from __future__ import annotations

from collections.abc import Sequence

from enrich.store.adbc import Cursor


def run_key(cur: Cursor, run_id: str) -> int:
    """The lineage key of ``run_id``, created on first use (inside the caller's transaction)."""
    cur.execute("INSERT INTO run_keys (run_id) VALUES ($1) ON CONFLICT (run_id) DO NOTHING", (run_id,))
    return int(cur.scalar("SELECT run_key FROM run_keys WHERE run_id = $1", (run_id,)))


def keys_of_runs_sql(count: int, first: int = 1) -> str:
    """The lineage keys of ``count`` run ids, bound as parameters ``$first`` onwards."""
    marks = ", ".join(f"${first + i}" for i in range(count))
    return f"SELECT run_key FROM run_keys WHERE run_id IN ({marks})"


def lineage_key_sql(key: str, alias: str) -> str:
    """The run id of a lineage key column, for views and read-back."""
    return f"(SELECT k.run_id FROM run_keys k WHERE k.run_key = {key}) AS {alias}"


def run_keys_of(cur: Cursor, runs: Sequence[str]) -> tuple[int, ...]:
    """The lineage keys of those of ``runs`` that have one."""
    if not runs:
        return ()
    marks = ", ".join(f"${i + 1}" for i in range(len(runs)))
    return tuple(int(key) for (key,) in cur.rows(f"SELECT run_key FROM run_keys WHERE run_id IN ({marks}) "
                                                 "ORDER BY run_key", list(runs)))


def keys_in_sql(column: str, keys: Sequence[int]) -> str:
    """``column`` is one of ``keys`` (integers read from run_keys, written as literals: a statement
    without parameters reports its row count)."""
    return f"{column} IN ({', '.join(str(int(key)) for key in keys)})" if keys else "false"
