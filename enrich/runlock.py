"""One run at a time per database: the run lock, and how a dead holder is recognised.

A run takes the database's run lock before its first write and keeps it until
``end`` (or, when the run crashed, the flow's exit hook) releases it. A second
run started on the same database meanwhile fails at once, in ``start``, with a
message naming the database, the run holding it, its user and start time, and
what to do. Writes of two runs therefore never interleave.

The lock records the host and the pid of the holder's *Metaflow runtime*
process (the ``python algorithm.py run`` process that launches every step as a
child process: ``os.getppid()`` inside a step), plus that process's start time
(Linux ``/proc``) so that a recycled pid is not mistaken for the holder. A lock
whose runtime is gone from this host (killed, machine rebooted) is stale: the
next run logs a warning and takes it over. A lock held from another host cannot
be checked from here; ``python -m enrich.runlock --database PATH --break``
removes it by hand once that run is known to be dead.

A step is a child process of the runtime, and does not die with it by itself:
killed with ``kill -9``, the runtime would leave its running step writing on,
maybe after a new run has taken the lock over. So a step that checks the lock
first asks Linux to kill it when its runtime exits (``PR_SET_PDEATHSIG``), and
refuses to write if its runtime is already gone (:class:`RunAbandoned`). A
killed run thus stops writing at once; its open transaction is rolled back.

The SQL lives in :mod:`enrich.storage` (table ``run_lock``); this module only
decides liveness and words the messages.
"""
from __future__ import annotations

import argparse
import ctypes
import logging
import os
import signal
import socket
import sys
from collections.abc import Sequence
from pathlib import Path

from enrich import storage

logger = logging.getLogger(__name__)

_PROC = Path("/proc")
_BOOT_ID = _PROC / "sys" / "kernel" / "random" / "boot_id"
_PR_SET_PDEATHSIG = 1


class RunAbandoned(Exception):
    """This step's run was killed (its runtime process is gone): the step must not write."""


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


def holder_is_dead(holder: dict) -> bool:
    """Whether the lock's holder is certainly gone: same host, and its runtime process has
    exited or its pid now belongs to another process. A holder on another host is
    never declared dead (it cannot be checked from here)."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = int(holder["pid"])
    if not process_alive(pid):
        return True
    recorded, current = holder.get("process_start"), process_start(pid)
    return recorded is not None and current is not None and recorded != current


def claim(run_id: str, user: str | None, pid: int | None = None) -> dict:
    """The lock row this process would write for ``run_id``.

    ``pid`` defaults to the parent process: inside a Metaflow step (a child
    process of the runtime) that is the runtime, alive for the whole run.
    """
    pid = os.getppid() if pid is None else pid
    return {"run_id": run_id, "user": user, "host": socket.gethostname(), "pid": pid,
            "process_start": process_start(pid)}


def held_message(database: Path, holder: dict) -> str:
    """Why a run cannot start: who holds ``database`` and what to do."""
    same_host = holder.get("host") == socket.gethostname()
    where = f"pid {holder['pid']} on host {holder['host']}"
    dead = ("If that run is dead, its lock is taken over automatically on this host once its "
            "process is gone" if same_host else
            "That host cannot be checked from here: if that run is dead, remove its lock with "
            f"`python -m enrich.runlock --database {database} --break`")
    return (f"{database} is in use by run {holder['run_id']} (user {holder.get('user') or '?'}, "
            f"started {holder['acquired_at']}, {where}): nothing was written. Wait for that run to "
            f"finish, then run again. {dead}.")


def hold(database: Path, run_id: str, user: str | None, pid: int | None = None) -> None:
    """Make sure ``run_id`` holds the run lock of ``database``, taking it if free or stale.

    Called before every writing step of a run (the first one takes it; later
    ones, and the steps of a resumed run, re-check it). Without ``pid`` the
    caller is a step: it is tied to its runtime first (:func:`die_with_parent`).

    Raises:
        storage.RunLockHeld: another live run holds the lock.
        RunAbandoned: the lock names this run but another runtime process: this
            step's own runtime was killed (the step was re-parented).
        storage.StorageError: the database cannot be opened or written.
    """
    if pid is None:
        die_with_parent()  # before reading the parent's pid: no window where it could die unseen
    mine = claim(run_id, user, pid)
    db = storage.connect(database)
    try:
        acquired, other = storage.acquire_run_lock(db, mine, holder_is_dead)
        held = storage.run_lock_holder(db) if acquired else None
    finally:
        db.close()
    if not acquired:
        raise storage.RunLockHeld(held_message(database, other), holder=other)
    if held is not None and held["host"] == mine["host"] and held["pid"] != mine["pid"]:
        raise RunAbandoned(f"{database}: run {run_id} was started by process {held['pid']}, but this step's "
                           f"parent is now process {mine['pid']}: the run was killed. Nothing was written; "
                           "run again (or `python algorithm.py resume`).")
    if other is not None:
        logger.warning("%s: took over the run lock of run %s (user %s, started %s): its process %s on "
                       "host %s is gone", database, other["run_id"], other.get("user"),
                       other["acquired_at"], other["pid"], other["host"])


def release(database: Path | None, run_id: str) -> None:
    """Free ``database``'s run lock if ``run_id`` holds it; never raises (it runs while a run
    ends or has crashed: a problem here is logged, and the lock is recovered as stale later)."""
    if database is None or not Path(database).exists():
        return
    try:
        db = storage.connect(database)
        try:
            released = storage.release_run_lock(db, run_id)
        finally:
            db.close()
    except (storage.StorageError, OSError) as exc:
        logger.error("run lock of %s not released (%s): %s", database, type(exc).__name__, exc)
        return
    if released:
        logger.info("%s: run lock of run %s released", database, run_id)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m enrich.runlock --database PATH [--break]``: show (or remove) the run lock."""
    parser = argparse.ArgumentParser(prog="python -m enrich.runlock",
                                     description="Show the run holding a database's run lock, or remove it.")
    parser.add_argument("--database", type=Path, default=Path("database.db"))
    parser.add_argument("--break", dest="break_lock", action="store_true",
                        help="remove the lock (only once the run holding it is known to be dead)")
    args = parser.parse_args(argv)
    database = args.database.expanduser().resolve()
    if not database.exists():
        parser.error(f"{database}: no such database")
    db = storage.connect(database)
    try:
        holder = storage.break_run_lock(db) if args.break_lock else storage.run_lock_holder(db)
    finally:
        db.close()
    if holder is None:
        print(f"{database}: no run holds the lock")
        return 0
    state = "dead (stale lock)" if holder_is_dead(holder) else (
        "alive" if holder["host"] == socket.gethostname() else "on another host: cannot check")
    print(f"{database}: {'removed the lock of' if args.break_lock else 'locked by'} run {holder['run_id']} "
          f"(user {holder['user']}, since {holder['acquired_at']}, pid {holder['pid']} on host "
          f"{holder['host']}: {state})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
