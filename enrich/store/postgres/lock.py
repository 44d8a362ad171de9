"""The run lock in PostgreSQL: a lease row (:mod:`enrich.store.lockrow`) read and written inside one
transaction that first takes ``pg_advisory_xact_lock`` on a constant key, so two runs deciding at
once, from any host, are serialised by the server; the advisory lock ends with the transaction.

Whether a holder is dead is decided by the caller (:func:`enrich.runlock.holder_is_dead`: on the
same host its process, on another host its lease expiry).
"""
from __future__ import annotations

from collections.abc import Callable

from enrich.store import lockrow
from enrich.store.ledger import Dialect
from enrich.store.location import DatabaseLocation
from enrich.store.postgres.connection import connect, transaction
from enrich.store.records import LockClaim, LockHolder, LockOutcome
from enrich.store.adbc import Cursor

DIALECT = Dialect(numbered=True)
#: ``pg_advisory_xact_lock`` key of the run lock ("enrich" "runlock" in ASCII, as two int32s).
RUN_LOCK_KEY = (0x656E7269 << 32) | 0x726C6F63
#: How long a lease renewal waits for a lock before giving up until the next beat.
RENEW_WAIT_MS = 2000


def _serialised(cur: Cursor) -> None:
    cur.execute("SELECT pg_advisory_xact_lock($1)", (RUN_LOCK_KEY,))


def acquire(location: DatabaseLocation, claim: LockClaim, holder_is_dead: Callable[[LockHolder], bool],
            lease_seconds: float) -> LockOutcome:
    """Take the run lock (see :func:`enrich.store.lockrow.take`). A lock this run already holds is
    recognised without a write."""
    with connect(location) as cur:
        held = lockrow.holder(cur, DIALECT)
        if held is not None and held.run_id == claim.run_id:
            return LockOutcome(True, None)
        with transaction(cur):
            _serialised(cur)
            return lockrow.take(cur, DIALECT, claim, holder_is_dead, lease_seconds)


def renew(location: DatabaseLocation, run_id: str, lease_seconds: float) -> bool:
    with connect(location, lock_timeout_ms=RENEW_WAIT_MS) as cur, transaction(cur):
        _serialised(cur)
        return lockrow.renew(cur, DIALECT, run_id, lease_seconds)


def release(location: DatabaseLocation, run_id: str) -> bool:
    with connect(location) as cur:
        if lockrow.holder(cur, DIALECT) is None:
            return False
        with transaction(cur):
            _serialised(cur)
            return lockrow.release(cur, DIALECT, run_id)


def break_lock(location: DatabaseLocation) -> LockHolder | None:
    with connect(location) as cur, transaction(cur):
        _serialised(cur)
        return lockrow.break_(cur, DIALECT)


def holder(cur: Cursor) -> LockHolder | None:
    """The run holding the lock (None when it is free or the database has no schema yet)."""
    if cur.scalar("SELECT to_regclass('run_lock') IS NULL"):
        return None
    return lockrow.holder(cur, DIALECT)
