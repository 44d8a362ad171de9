"""The run lock in SQLite: the lock row (:mod:`enrich.store.lockrow`) read and written inside one
``BEGIN IMMEDIATE`` transaction, so that two runs deciding at once are serialised by SQLite."""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from enrich.store import lockrow
from enrich.store.ledger import Dialect
from enrich.store.records import LockClaim, LockHolder, LockOutcome
from enrich.store.sqlite.connection import connect, transaction

DIALECT = Dialect(numbered=False)
#: How long a lease renewal waits for another writer before giving up until the next beat.
RENEW_WAIT_MS = 2000


def acquire(path: Path, claim: LockClaim, holder_is_dead: Callable[[LockHolder], bool],
            lease_seconds: float) -> LockOutcome:
    """Take the run lock (see :func:`enrich.store.lockrow.take`). A lock this run already holds is
    recognised without a write, so a step never queues behind a parallel branch's long publish."""
    with connect(path) as cur:
        held = lockrow.holder(cur, DIALECT)
        if held is not None and held.run_id == claim.run_id:
            return LockOutcome(True, None)
        with transaction(cur):
            return lockrow.take(cur, DIALECT, claim, holder_is_dead, lease_seconds)


def renew(path: Path, run_id: str, lease_seconds: float) -> bool:
    with connect(path, busy_timeout_ms=RENEW_WAIT_MS) as cur, transaction(cur):
        return lockrow.renew(cur, DIALECT, run_id, lease_seconds)


def release(path: Path, run_id: str) -> bool:
    with connect(path) as cur:
        if lockrow.holder(cur, DIALECT) is None:
            return False
        with transaction(cur):
            return lockrow.release(cur, DIALECT, run_id)


def break_lock(path: Path) -> LockHolder | None:
    with connect(path) as cur, transaction(cur):
        return lockrow.break_(cur, DIALECT)
