"""The run lock's row, identical on every backend: at most one row in ``run_lock`` names the run
holding the database, its user, the host and pid of its runtime, and when its lease expires.

Each backend makes the decision atomic its own way (SQLite: a ``BEGIN IMMEDIATE``
transaction; PostgreSQL: ``pg_advisory_xact_lock`` inside the transaction) and calls
:func:`take` inside it. Whether a holder is dead is decided by the caller
(:mod:`enrich.runlock`): the store only reads and writes the row.
"""
from __future__ import annotations

from collections.abc import Callable

from enrich.store.adbc import Cursor
from enrich.store.ledger import Dialect, Ledger
from enrich.store.records import LockClaim, LockHolder, LockOutcome
from enrich.store.timeutil import utc_after, utc_now

HOLDER_COLUMNS = ("run_id", '"user"', "host", "pid", "process_start", "acquired_at", "expires_at")


def holder(cur: Cursor, dialect: Dialect) -> LockHolder | None:
    """The run holding the lock, or None when it is free."""
    rows = cur.dicts(dialect.sql(f"SELECT {', '.join(HOLDER_COLUMNS)} FROM run_lock WHERE id = 1"))
    return LockHolder.from_row(rows[0]) if rows else None


def take(cur: Cursor, dialect: Dialect, claim: LockClaim, holder_is_dead: Callable[[LockHolder], bool],
         lease_seconds: float) -> LockOutcome:
    """Inside the backend's atomic section: take the lock for ``claim`` if it is free or its holder
    is dead (closing the dead run's ledger row as failed). A lock the same run holds is left as it is."""
    held = holder(cur, dialect)
    if held is not None and held.run_id == claim.run_id:
        return LockOutcome(True, None)
    if held is not None and not holder_is_dead(held):
        return LockOutcome(False, held)
    cur.execute(dialect.sql(f"""INSERT INTO run_lock (id, {', '.join(HOLDER_COLUMNS)})
        VALUES (1, ?, ?, ?, ?, ?, ?, ?)
        ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id, "user" = excluded."user",
            host = excluded.host, pid = excluded.pid, process_start = excluded.process_start,
            acquired_at = excluded.acquired_at, expires_at = excluded.expires_at"""),
                (claim.run_id, claim.user, claim.host, claim.pid, claim.process_start, utc_now(),
                 utc_after(lease_seconds)))
    closed = Ledger(cur, dialect).close_runs([held.run_id], "failed") if held is not None else ()
    return LockOutcome(True, held, closed)


def renew(cur: Cursor, dialect: Dialect, run_id: str, lease_seconds: float) -> bool:
    """Extend ``run_id``'s lease; False when it does not hold the lock."""
    if not cur.rows(dialect.sql("SELECT 1 FROM run_lock WHERE id = 1 AND run_id = ?"), (run_id,)):
        return False
    cur.execute(dialect.sql("UPDATE run_lock SET expires_at = ? WHERE id = 1 AND run_id = ?"),
                (utc_after(lease_seconds), run_id))
    return True


def release(cur: Cursor, dialect: Dialect, run_id: str) -> bool:
    """Free the lock if ``run_id`` holds it."""
    if not cur.rows(dialect.sql("SELECT 1 FROM run_lock WHERE id = 1 AND run_id = ?"), (run_id,)):
        return False
    cur.execute(dialect.sql("DELETE FROM run_lock WHERE id = 1 AND run_id = ?"), (run_id,))
    return True


def break_(cur: Cursor, dialect: Dialect) -> LockHolder | None:
    """Free the lock whoever holds it; the holder removed."""
    held = holder(cur, dialect)
    cur.execute("DELETE FROM run_lock")
    return held
