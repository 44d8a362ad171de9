"""Concurrent runs on one database: the run lock, stale locks, and readers during a publish.

Unit tests take the lock through :mod:`enrich.runlock` on real SQLite files; the
flow tests run the real flow while the lock is held (by this test process) or
stale (held by a process that is gone), and watch a real run's lock from outside.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from enrich import runlock
from enrich.store import RunAbandoned, RunLockHeld, open_store
from enrich.store.timeutil import utc_after
from tests.flow_support import FLOW_FILE, INJECT, ROOT, SMALL, TWILIO_ENV, run_flow, write_csv
from tests.support.tamper import tamper

FLOW = "TransactionEnrichmentFlow"


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# --------------------------------------------------------------------------- unit: the lock, every backend
def test_a_free_lock_is_taken_with_the_holder_identity(any_store):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    held = any_store.lock_holder()
    assert (held.run_id, held.user, held.host, held.pid) == (f"{FLOW}/1", "alice", socket.gethostname(), os.getpid())
    assert held.process_start == runlock.process_start(os.getpid()) is not None
    assert held.acquired_at and held.expires_at > held.acquired_at


def test_a_second_run_fails_at_once_with_a_clear_message(any_store):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    before = any_store.lock_holder()
    started = time.perf_counter()
    with pytest.raises(RunLockHeld) as caught:
        runlock.hold(any_store, f"{FLOW}/2", "bob", pid=os.getpid())
    assert time.perf_counter() - started < 2  # no waiting
    message = str(caught.value)
    for expected in (any_store.location.display, f"{FLOW}/1", "user alice", f"started {before.acquired_at}",
                     f"pid {os.getpid()}", "Wait for that run to finish", "taken over automatically"):
        assert expected in message, expected
    assert caught.value.holder.run_id == f"{FLOW}/1"
    assert any_store.lock_holder() == before


def test_the_same_run_holds_it_again_without_change(any_store):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    first = any_store.lock_holder()
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    assert any_store.lock_holder() == first


def test_a_lock_whose_process_is_gone_is_taken_over_with_a_warning(any_store, caplog):
    gone = dead_pid()
    any_store.record_run(f"{FLOW}/1")
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=gone)
    with caplog.at_level(logging.WARNING, logger="enrich.runlock"):
        outcome = runlock.hold(any_store, f"{FLOW}/2", "bob", pid=os.getpid())
    assert any_store.lock_holder().run_id == f"{FLOW}/2"
    assert outcome.holder.run_id == f"{FLOW}/1" and outcome.closed_runs == (f"{FLOW}/1",)
    assert any_store.get_run(f"{FLOW}/1").status == "failed"  # the dead run's row is closed
    assert f"took over the run lock of run {FLOW}/1" in caplog.text and str(gone) in caplog.text


def test_a_killed_but_unreaped_process_counts_as_gone(any_store):
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        runlock.hold(any_store, f"{FLOW}/1", "alice", pid=child.pid)
        with pytest.raises(RunLockHeld):
            runlock.hold(any_store, f"{FLOW}/2", "bob", pid=os.getpid())
        child.kill()
        for _ in range(100):  # a zombie until reaped: /proc says "Z"
            if not runlock.process_alive(child.pid):
                break
            time.sleep(0.02)
        assert Path(f"/proc/{child.pid}").exists()  # still there, as a zombie
        runlock.hold(any_store, f"{FLOW}/2", "bob", pid=os.getpid())
        assert any_store.lock_holder().run_id == f"{FLOW}/2"
    finally:
        child.kill()
        child.wait()


def test_a_recycled_pid_is_not_mistaken_for_the_holder(any_store):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    tamper(any_store, "UPDATE run_lock SET process_start = 'another-boot:1'")  # same pid, another process
    runlock.hold(any_store, f"{FLOW}/2", "bob", pid=os.getpid())
    assert any_store.lock_holder().run_id == f"{FLOW}/2"


def test_a_live_lease_from_another_host_is_respected(any_store):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=dead_pid())
    tamper(any_store, "UPDATE run_lock SET host = 'other-host'")
    with pytest.raises(RunLockHeld, match="lease expires"):
        runlock.hold(any_store, f"{FLOW}/2", "bob", pid=os.getpid())


def test_an_expired_lease_from_another_host_is_taken_over(any_store, caplog):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    tamper(any_store, f"UPDATE run_lock SET host = 'other-host', expires_at = '{utc_after(-1)}'")
    with caplog.at_level(logging.WARNING, logger="enrich.runlock"):
        outcome = runlock.hold(any_store, f"{FLOW}/2", "bob", pid=os.getpid())
    assert outcome.holder.host == "other-host" and any_store.lock_holder().run_id == f"{FLOW}/2"
    assert "lease expired" in caplog.text


def test_a_heartbeat_keeps_pushing_the_lease_forward(any_store):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    first = any_store.lock_holder().expires_at
    with runlock.Heartbeat(any_store, f"{FLOW}/1", every_s=0.05):
        time.sleep(0.3)
    assert any_store.lock_holder().expires_at > first
    assert not any_store.renew_lock(f"{FLOW}/9", 60)  # not the holder: nothing renewed


def test_a_step_whose_runtime_is_gone_refuses_to_write(any_store):
    """Same run, another parent: the step was re-parented because its runtime was killed."""
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=dead_pid())
    with pytest.raises(RunAbandoned, match="the run was killed"):
        runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())


def test_release_only_frees_the_holders_lock_and_never_raises(any_store, tmp_path):
    runlock.hold(any_store, f"{FLOW}/1", "alice", pid=os.getpid())
    runlock.release(any_store, f"{FLOW}/2")
    assert any_store.lock_holder().run_id == f"{FLOW}/1"
    runlock.release(any_store, f"{FLOW}/1")
    assert any_store.lock_holder() is None
    runlock.release(None, f"{FLOW}/1")
    missing = tmp_path / "nowhere" / "db.db"
    runlock.release(open_store(missing), f"{FLOW}/1")  # does not create it
    assert not missing.exists()
    not_sqlite = tmp_path / "text.db"
    not_sqlite.write_text("not a database " * 100)
    runlock.release(open_store(not_sqlite), f"{FLOW}/1")  # logged, not raised


def test_only_one_of_many_racing_runs_gets_the_lock(any_store):
    results: list[tuple[str, bool]] = []
    barrier = threading.Barrier(8)

    def race(run: str) -> None:
        barrier.wait()
        outcome = any_store.acquire_lock(runlock.claim(run, "u", os.getpid()), runlock.holder_is_dead, 60)
        results.append((run, outcome.acquired))

    threads = [threading.Thread(target=race, args=(f"{FLOW}/{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [run for run, acquired in results if acquired]
    assert len(results) == 8 and len(winners) == 1
    assert any_store.lock_holder().run_id == winners[0]


def test_holder_of_a_database_without_the_lock_table(tmp_path):
    import sqlite3

    path = tmp_path / "v1.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (x)")
    conn.close()
    store = open_store(path)
    store.prepare()  # migrated: the table now exists, empty
    assert store.lock_holder() is None


_ORPHAN = textwrap.dedent("""
    import subprocess, sys, time
    script = "import sys, time; from enrich import runlock; " \\
             "ok = runlock.die_with_parent(); open(sys.argv[1], 'w').write(str(ok)); time.sleep(60)"
    subprocess.Popen([sys.executable, "-c", script, sys.argv[1]])
    time.sleep(60)
""")


def test_a_step_dies_with_its_runtime(tmp_path):
    """A step is a child of the runtime: killing the runtime (kill -9) kills the step at once, so a
    killed run never goes on writing behind the back of the next one."""
    flag = tmp_path / "ready"
    runtime = subprocess.Popen([sys.executable, "-c", _ORPHAN, str(flag)], cwd=ROOT,
                               env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        for _ in range(500):
            if flag.exists() and flag.read_text():
                break
            time.sleep(0.02)
        assert flag.read_text() == "True"
        step = int(subprocess.run(["pgrep", "-P", str(runtime.pid)], capture_output=True, text=True,
                                  check=True).stdout.split()[0])
        assert runlock.process_alive(step)
        runtime.kill()
        runtime.wait()
        for _ in range(250):
            if not runlock.process_alive(step):
                break
            time.sleep(0.02)
        assert not runlock.process_alive(step)
    finally:
        runtime.kill()
        runtime.wait()


# --------------------------------------------------------------------------- readers never see half a write
_READER = textwrap.dedent("""
    import json, sqlite3, sys
    from pathlib import Path
    database, stop, out = sys.argv[1:4]
    seen, polls = {}, 0
    conn = sqlite3.connect(database, timeout=60)
    Path(out + ".ready").write_text("ready")
    while not Path(stop).exists():
        row = conn.execute("SELECT COUNT(*), COALESCE(SUM(amount_cents), 0) FROM transactions").fetchone()
        seen[row] = seen.get(row, 0) + 1
        polls += 1
    conn.close()
    Path(out).write_text(json.dumps({"polls": polls, "seen": [[*k, n] for k, n in seen.items()]}))
""")


def batch(ids: np.ndarray, cents: np.ndarray) -> SimpleNamespace:
    """A parsed chunk (as enrich.ingest yields) of rows ``ids`` on lines ``id + 1``."""
    valid = pd.DataFrame({"line": ids.astype(np.int64) + 1, "id": ids.astype(np.int64),
                          "amount_cents": cents.astype(np.int64),
                          "wording": pd.Series([f"w{i}" for i in range(len(ids))], dtype="str")})
    rejected = pd.DataFrame({"line": np.zeros(0, np.int64), "raw": pd.Series([], dtype="str"),
                             "reason": pd.Series([], dtype="str")})
    return SimpleNamespace(valid=valid, rejected=rejected)


def test_a_reader_sees_the_table_before_or_after_a_load_never_between(store, tmp_path):
    """A plain sqlite3 reader (another process, as datasette would be: two SQLite libraries
    must not share a file inside one process) polls counts and sums while a large batch
    that inserts and updates rows is loaded: it only ever sees the before or after state."""
    first = np.arange(1, 50_001)
    store.load_batch(f"{FLOW}/1", [batch(first, first)])
    before = (50_000, int(first.sum()))
    ids = np.arange(1, 400_001)  # updates the 50,000 (amount doubled) and adds 350,000
    chunks = [batch(ids[i:i + 100_000], ids[i:i + 100_000] * 2) for i in range(0, len(ids), 100_000)]
    after = (400_000, int((ids * 2).sum()))
    stop, out = tmp_path / "stop", tmp_path / "seen"
    reader = subprocess.Popen([sys.executable, "-c", _READER, str(store.path), str(stop), str(out)])
    try:
        while not Path(str(out) + ".ready").exists():
            time.sleep(0.01)
        time.sleep(0.1)
        store.load_batch(f"{FLOW}/2", chunks)
        time.sleep(0.1)
    finally:
        stop.write_text("stop")
        reader.wait(timeout=60)
    report = json.loads(out.read_text())
    polls, seen = report["polls"], {(count, total) for count, total, _ in report["seen"]}
    assert set(seen) <= {before, after}, seen
    assert before in seen and after in seen
    assert polls > 20  # the reader really ran during the load


# --------------------------------------------------------------------------- flow level
@pytest.mark.flow
def test_a_run_on_a_locked_database_fails_at_once_alerts_and_writes_nothing(tmp_path):
    database = tmp_path / "database.db"
    runlock.hold(open_store(database), f"{FLOW}/999", "alice", pid=os.getpid())  # a live holder: this process
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), database=database)
    assert result.returncode != 0
    assert result.count("transactions") == 0 and result.count("rejected_rows") == 0
    assert open_store(database).lock_holder().run_id == f"{FLOW}/999"  # untouched
    run_id = f"{FLOW}/{result.run.id}"
    attempts = result.query("SELECT step, attempt, status, error_type, duration_s FROM step_runs "
                            "WHERE run_id = ? ORDER BY started_at", (run_id,))
    start = [a for a in attempts if a[0] == "start"]
    assert len(start) == 1 and start[0][1:4] == (0, "failed", "RunLockHeld")  # one attempt: not retried
    assert start[0][4] < 5
    assert {status for step, _, status, _, _ in attempts if step not in ("start", "join", "end")} == {"skipped"}
    assert len(result.sms) == 1
    body = result.sms[0]["fields"]["Body"]
    assert "start: RunLockHeld" in body and f"in use by run {FLOW}/999" in body
    output = result.stdout + result.stderr
    assert f"{database} is in use by run {FLOW}/999 (user alice" in output
    assert "Wait for that run to finish" in output
    assert result.query("SELECT COUNT(*) FROM check_results WHERE run_id = ?", (run_id,)) == [(0,)]


@pytest.mark.flow
def test_a_real_run_holds_the_lock_with_its_runtime_pid_and_takes_over_a_stale_one(tmp_path):
    """The lock names the Metaflow runtime process (os.getppid() inside a step is the process
    started as `flow.py run`), a stale lock is taken over, and the run releases it at the end."""
    database = tmp_path / "database.db"
    open_store(database).record_run(f"{FLOW}/998", user="ghost")
    runlock.hold(open_store(database), f"{FLOW}/998", "ghost", pid=dead_pid())
    csv = write_csv(tmp_path / "t.csv", SMALL)
    env = {**os.environ, **TWILIO_ENV, "PYTHONPATH": os.pathsep.join([str(INJECT), str(ROOT)]),
           "ENRICH_TEST_TWILIO_LOG": str(tmp_path / "sms.jsonl")}
    runtime = subprocess.Popen([sys.executable, str(FLOW_FILE), "run", "--transactions", str(csv),
                                "--database", str(database)], cwd=tmp_path, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = set()
    while runtime.poll() is None:
        try:
            with sqlite3.connect(database, timeout=5) as conn:
                seen.update(conn.execute("SELECT run_id, host, pid FROM run_lock").fetchall())
        except sqlite3.Error:
            pass  # the file is being created
        time.sleep(0.02)
    output = runtime.stdout.read()
    assert runtime.returncode == 0, output
    ours = {row for row in seen if row[0] != f"{FLOW}/998"}
    assert len(ours) == 1 and next(iter(ours))[1:] == (socket.gethostname(), runtime.pid)
    assert f"took over the run lock of run {FLOW}/998" in output
    store = open_store(database)
    assert store.lock_holder() is None  # released by end
    assert store.table_counts()["transactions"] == 7
    assert store.get_run(f"{FLOW}/998").status == "failed"  # the dead run's row is closed
    sms = [json.loads(line) for line in (tmp_path / "sms.jsonl").read_text().splitlines()]
    body = sms[0]["fields"]["Body"]
    assert len(sms) == 1 and f"run {FLOW}/998 DIED without finishing" in body  # one SMS names the dead run
    assert f"-m enrich status 998 --database {database}" in body and "FAILED" not in body
