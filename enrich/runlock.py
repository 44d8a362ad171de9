"""One run at a time per database: the run lock, its lease, and how a dead holder is recognised.

A run takes the database's run lock before its first write and keeps it until
``end`` (or, when the run crashed, the flow's exit hook) releases it. A second
run started on the same database meanwhile, on any host, fails at once, in
``start``, with a message naming the database, the run holding it, its user and
start time, and what to do. Writes of two runs therefore never interleave.

The lock is a lease: it records the host and the pid of the holder's *Metaflow
runtime* process (the ``python algorithm.py run`` process that launches every
step as a child process: ``os.getppid()`` inside a step), that process's start
time (Linux ``/proc``, so that a recycled pid is not mistaken for the holder),
and an expiry that the working steps keep pushing forward (:class:`Heartbeat`).
A holder is dead when its runtime is gone from this host, or, from any host, when
its lease expired unrenewed (a run killed on another machine, a lost pod). The next
run then takes the lock over with a warning and closes the dead run's ledger row.
``enrich lock --break`` removes a lock by hand once its run is known to be dead.

A step is a child process of the runtime, and does not die with it by itself:
killed with ``kill -9``, the runtime would leave its running step writing on,
maybe after a new run has taken the lock over. So a step that checks the lock
first asks Linux to kill it when its runtime exits (``PR_SET_PDEATHSIG``), and
refuses to write if its runtime is already gone (:class:`RunAbandoned`). A
killed run thus stops writing at once; its open transaction is rolled back.

Each backend makes taking the lock atomic its own way (:mod:`enrich.store`); this
module only decides liveness and words the messages.
"""
from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path

from enrich.store import LockClaim, LockHolder, LockOutcome, RunAbandoned, RunLockHeld, Store, StorageError
from enrich.store.timeutil import parse_time

logger = logging.getLogger(__name__)

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys" / "kernel" / "random" / "boot_id"
_PR_SET_PDEATHSIG = 1


#: How long a lease lasts without renewal (``ENRICH_LOCK_LEASE_SECONDS``); a step renews it every third of that.
LEASE_SECONDS = float(os.environ.get("ENRICH_LOCK_LEASE_SECONDS", "300"))


def die_with_parent() -> bool:
    """Have Linux SIGKILL this process as soon as its parent (the Metaflow runtime) exits.

    Returns whether it is set (False on other systems). A step killed this way
    is like a step killed with ``kill -9``: its open transaction is rolled back.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def process_start(pid: int) -> str | None:
    """An identity of process ``pid``'s start (boot id and start time), or None if unknown.

    Two processes with the same pid on one host never share it, so a pid
    recycled after the holder died is not mistaken for the holder.
    """
    try:
        stat = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
        boot = _BOOT_ID.read_text(encoding="ascii").strip()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()  # after "pid (command)": state is field 3, start time 22
    return f"{boot}:{fields[19]}" if len(fields) > 19 else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this host and is not a zombie (killed, not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        state = (_PROC / str(pid) / "stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return True  # no /proc: existence is all we know
    fields = state.rsplit(")", 1)[-1].split()
    return not fields or fields[0] not in ("Z", "X")


def holder_is_dead(holder: LockHolder, now: datetime | None = None) -> bool:
    """Whether the lock's holder is certainly gone.

    On this host: its runtime process has exited or its pid now belongs to another process
    (a live runtime here is never declared dead, whatever its lease says). On another host:
    its lease expired without renewal.
    """
    if holder.host == socket.gethostname():
        if not process_alive(int(holder.pid)):
            return True
        current = process_start(int(holder.pid))
        return holder.process_start is not None and current is not None and holder.process_start != current
    expires = parse_time(holder.expires_at)
    return expires is not None and expires < (now or datetime.now(timezone.utc))


def claim(run_id: str, user: str | None, pid: int | None = None) -> LockClaim:
    """The lock row this process would write for ``run_id``.

    ``pid`` defaults to the parent process: inside a Metaflow step (a child process of the
    runtime) that is the runtime, alive for the whole run.
    """
    pid = os.getppid() if pid is None else pid
    return LockClaim(run_id=run_id, user=user, host=socket.gethostname(), pid=pid, process_start=process_start(pid))


def held_message(where: str, holder: LockHolder) -> str:
    """Why a run cannot start: who holds the database and what to do."""
    same_host = holder.host == socket.gethostname()
    dead = ("If that run is dead, its lock is taken over automatically on this host once its process is gone"
            if same_host else
            f"If that run is dead, its lock is taken over once its lease expires ({holder.expires_at or 'unknown'}), "
            f"or remove it now with `enrich lock --database {where} --break`")
    return (f"{where} is in use by run {holder.run_id} (user {holder.user or '?'}, started {holder.acquired_at}, "
            f"pid {holder.pid} on host {holder.host}): nothing was written. Wait for that run to finish, then "
            f"run again. {dead}.")


def hold(store: Store, run_id: str, user: str | None, pid: int | None = None) -> LockOutcome:
    """Make sure ``run_id`` holds the run lock of ``store``, taking it if free or its holder is dead.

    Called before every writing step of a run (the first one takes it; later ones, and the
    steps of a resumed run, re-check it). Without ``pid`` the caller is a step: it is tied
    to its runtime first (:func:`die_with_parent`). Returns the outcome: ``holder`` is the
    dead run taken over, if any.

    Raises:
        RunLockHeld: another live run holds the lock.
        RunAbandoned: the lock names this run but another runtime process on this host:
            this step's own runtime was killed (the step was re-parented).
        StorageError: the database cannot be opened or written.
    """
    if pid is None:
        die_with_parent()  # before reading the parent's pid: no window where it could die unseen
    mine = claim(run_id, user, pid)
    outcome = store.acquire_lock(mine, holder_is_dead, LEASE_SECONDS)
    if not outcome.acquired and outcome.holder is not None:
        raise RunLockHeld(held_message(store.location.display, outcome.holder), holder=outcome.holder)
    held = store.lock_holder()
    if held is not None and held.run_id == run_id and held.host == mine.host and held.pid != mine.pid:
        raise RunAbandoned(f"{store.location.display}: run {run_id} was started by process {held.pid}, but this "
                           f"step's parent is now process {mine.pid}: the run was killed. Nothing was written; "
                           "run again (or resume it).")
    if outcome.holder is not None:
        logger.warning("%s: took over the run lock of run %s (user %s, started %s): its process %s on host %s is "
                       "gone or its lease expired", store.location.display, outcome.holder.run_id,
                       outcome.holder.user, outcome.holder.acquired_at, outcome.holder.pid, outcome.holder.host)
    return outcome


def release(store: Store | None, run_id: str) -> None:
    """Free the run lock if ``run_id`` holds it; never raises (it runs while a run ends or has crashed:
    a problem here is logged, and the lock is recovered as stale later)."""
    if store is None or (store.location.is_file and not store.location.path.exists()):
        return
    try:
        released = store.release_lock(run_id)
    except (StorageError, OSError) as exc:
        logger.error("run lock of %s not released (%s): %s", store.location.display, type(exc).__name__, exc)
        return
    if released:
        logger.debug("%s: run lock of run %s released", store.location.display, run_id)


def liveness(holder: LockHolder) -> str:
    """How the holder looks from here: alive, dead (stale lock), or on another host with its lease."""
    if holder_is_dead(holder):
        return "dead (stale lock)"
    if holder.host == socket.gethostname():
        return "alive"
    return f"on another host, lease until {holder.expires_at}"


class Heartbeat:
    """Renews the run's lease every third of :data:`LEASE_SECONDS` while a step works (a daemon thread).

    A renewal that fails (a busy database, a dropped connection) is logged and retried at
    the next beat; one that finds the lock gone stops the beats (the step's own writes
    then find it gone too).
    """

    def __init__(self, store: Store, run_id: str, every_s: float | None = None) -> None:
        self.store, self.run_id = store, run_id
        self.every_s = every_s if every_s is not None else LEASE_SECONDS / 3
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="lease-heartbeat", daemon=True)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _beat(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                if not self.store.renew_lock(self.run_id, LEASE_SECONDS):
                    logger.warning("run %s no longer holds the run lock: lease not renewed", self.run_id)
                    return
            except (StorageError, OSError) as exc:
                logger.warning("lease of run %s not renewed this time (%s)", self.run_id, type(exc).__name__)
