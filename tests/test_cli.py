"""The operator CLI on a database produced by a real flow run: runs, status, backup, restore.

Backups are consistent while another connection writes; a restore brings back the
rows of a damaged database, keeps the replaced file aside, verifies its source first
and refuses while a run is in progress.
"""
from __future__ import annotations

import io
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from enrich import cli, storage
from tests.flow_support import ROOT, run_once_per_module

STEPS = ["start", "ingest", "tag_transactions", "annotate_transactions", "index_wordings", "join", "end"]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """One real flow run on the bundled sample, for the whole module (tests work on copies)."""
    result = run_once_per_module(tmp_path_factory, "cli-flow")
    return SimpleNamespace(path=result.database, run_id=result.query("SELECT run_id FROM runs")[0][0],
                           counts=counts(result.database))


@pytest.fixture
def db(flow, tmp_path) -> Path:
    """A private copy of the flow's database."""
    path = tmp_path / "database.db"
    storage.copy_database(flow.path, path)
    return path


def counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as conn:
        return {table: conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
                for table in ("transactions", "tags", "annotations", "rejected_rows", "runs", "step_runs")}


def enrich(*argv: str) -> SimpleNamespace:
    """Run ``python -m enrich`` in-process; return its exit code, stdout and stderr."""
    out, err = io.StringIO(), io.StringIO()
    code = cli.main([str(a) for a in argv], out=out, err=err)
    return SimpleNamespace(code=code, out=out.getvalue(), err=err.getvalue())


def integrity(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]


# --------------------------------------------------------------------------- runs and status
def test_runs_lists_the_run_for_people_and_for_scripts(flow, db):
    shown = enrich("runs", "--database", db)
    assert shown.code == 0 and flow.run_id in shown.out and "succeeded" in shown.out
    assert "rows_read" in shown.out and str(flow.counts["transactions"]) in shown.out
    data = json.loads(enrich("runs", "--database", db, "--json").out)
    (run,) = data["runs"]
    with sqlite3.connect(db) as conn:
        read, loaded, rejected = conn.execute("SELECT rows_read, rows_loaded, rows_rejected FROM runs").fetchone()
    assert (run["run_id"], run["status"], run["rows_read"], run["rows_loaded"], run["rows_rejected"]) == (
        flow.run_id, "succeeded", read, loaded, rejected)
    assert run["started_at"] < run["finished_at"] and run["duration_s"] > 0


def test_python_dash_m_enrich_runs_in_a_fresh_process(flow, db):
    shown = subprocess.run([sys.executable, "-m", "enrich", "runs", "--database", str(db)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert flow.run_id in shown.stdout


@pytest.mark.parametrize("ref", ["full", "number", "last"])
def test_status_shows_steps_checks_and_alerts(flow, db, ref):
    run = {"full": flow.run_id, "number": flow.run_id.split("/")[1], "last": "last"}[ref]
    shown = enrich("status", run, "--database", db)
    assert shown.code == 0, shown.err
    assert f"Run {flow.run_id}: SUCCEEDED" in shown.out
    for text in (*STEPS, "accounting", "annotations_complete", "Alerts:", "duration_s"):
        assert text in shown.out
    data = json.loads(enrich("status", run, "--database", db, "--json").out)
    assert data["run"]["run_id"] == flow.run_id
    assert [s["step"] for s in sorted(data["steps"], key=lambda s: s["started_at"])][0] == "start"
    assert {s["step"] for s in data["steps"]} == set(STEPS)
    assert all(s["status"] == "succeeded" and s["duration_s"] >= 0 for s in data["steps"])
    assert {c["check_name"] for c in data["checks"]} >= {"accounting", "control_total", "tags_complete"}
    assert data["alerts"] == []


def test_status_of_a_failed_step_shows_its_error(db):
    conn = storage.connect(db)
    try:
        run_id = storage.resolve_run(conn, "")
        storage.record_step_attempt(conn, run_id, "join", "99", 1, "failed", storage.utc_now(),
                                    storage.utc_now(), 0.5, "OperationalError", "disk I/O error")
    finally:
        conn.close()
    shown = enrich("status", "last", "--database", db)
    assert "OperationalError" in shown.out and "disk I/O error" in shown.out


def test_errors_are_clear_and_exit_2(db, tmp_path):
    missing = enrich("runs", "--database", tmp_path / "nope.db")
    assert missing.code == 2 and "no such database file" in missing.err and "nope.db" in missing.err
    unknown = enrich("status", "123", "--database", db)
    assert unknown.code == 2 and "123: no such run" in unknown.err and "python -m enrich runs" in unknown.err
    assert enrich("bogus").code == 2
    assert enrich("status", "--database", db).code == 2  # RUN missing
    assert enrich("runs", "--limit", "0", "--database", db).code == 2
    assert enrich("backup", "--database", tmp_path / "nope.db", tmp_path / "b.db").code == 2
    assert enrich("restore", "--database", db, tmp_path / "nope.db").code == 2
    (tmp_path / "taken.db").write_bytes(b"")
    taken = enrich("backup", "--database", db, tmp_path / "taken.db")
    assert taken.code == 2 and "never overwrites" in taken.err
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("hello")
    assert enrich("runs", "--database", not_ours).code == 1


def test_reading_never_writes(db):
    before = db.stat().st_mtime_ns, db.read_bytes()
    assert enrich("runs", "--database", db).code == 0 and enrich("status", "last", "--database", db).code == 0
    assert (db.stat().st_mtime_ns, db.read_bytes()) == before


# --------------------------------------------------------------------------- backup
def test_backup_is_a_verified_single_file_copy(flow, db, tmp_path):
    done = enrich("backup", "--database", db, tmp_path / "backup.db", "--json")
    assert done.code == 0, done.err
    result = json.loads(done.out)
    backup = Path(result["backup"])
    assert backup == (tmp_path / "backup.db").resolve() and result["integrity"] == "ok"
    assert counts(backup) == flow.counts and integrity(backup) == "ok"
    assert not Path(f"{backup}-wal").exists() and not list(tmp_path.glob(".*partial"))
    into_dir = enrich("backup", "--database", db, tmp_path)
    assert into_dir.code == 0 and "integrity_check: ok" in into_dir.out
    assert len(list(tmp_path.glob("database-*.db"))) == 1


WRITER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
conn.execute("BEGIN IMMEDIATE")
conn.execute("INSERT INTO transactions (id, amount_cents, wording, first_run, last_changed_run) "
             "SELECT id + 1000000, amount_cents, wording, first_run, first_run FROM transactions")
print("written, not committed", flush=True)
sys.stdin.readline()
conn.execute("COMMIT")
print("committed", flush=True)
"""


def test_backup_while_another_process_writes_holds_the_last_committed_state(flow, db, tmp_path):
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(db)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline().strip() == "written, not committed"
        during = enrich("backup", "--database", db, tmp_path / "during.db")
        writer.stdin.write("go\n")
        writer.stdin.flush()
        assert writer.stdout.readline().strip() == "committed"
    finally:
        writer.stdin.close()
        assert writer.wait(timeout=60) == 0
    assert during.code == 0, during.err
    assert counts(tmp_path / "during.db") == flow.counts and integrity(tmp_path / "during.db") == "ok"
    after = enrich("backup", "--database", db, tmp_path / "after.db")
    assert after.code == 0 and counts(tmp_path / "after.db")["transactions"] == 2 * flow.counts["transactions"]


def test_backups_taken_while_commits_keep_landing_are_each_a_committed_state(flow, db, tmp_path):
    base = flow.counts["transactions"]
    stop = threading.Event()
    committed = []

    def keep_writing() -> None:
        conn = sqlite3.connect(db, isolation_level=None, timeout=30)
        batch = 0
        while not stop.is_set():
            batch += 1
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO transactions (id, amount_cents, wording, first_run, last_changed_run) "
                         "SELECT value, 100, 'TAXI concurrent', (SELECT MIN(run_key) FROM run_keys), "
                         "(SELECT MIN(run_key) FROM run_keys) FROM json_each(?)",
                         (json.dumps(list(range(10_000_000 + batch * 500, 10_000_000 + batch * 500 + 500))),))
            conn.execute("COMMIT")
            committed.append(batch)
        conn.close()

    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        while len(committed) < 3:
            time.sleep(0.01)
        for n in range(3):
            assert enrich("backup", "--database", db, tmp_path / f"b{n}.db").code == 0
    finally:
        stop.set()
        thread.join()
    for n in range(3):
        copy = tmp_path / f"b{n}.db"
        rows = counts(copy)["transactions"]
        assert integrity(copy) == "ok" and (rows - base) % 500 == 0 and rows > base
        with sqlite3.connect(copy) as conn:
            conn.execute(f"INSERT INTO {storage.FTS_TABLE} ({storage.FTS_TABLE}, rank) VALUES ('integrity-check', 1)")


# --------------------------------------------------------------------------- restore
def restore(db: Path, backup: Path, *extra: str) -> SimpleNamespace:
    return enrich("restore", "--database", db, backup, *extra)


def test_restore_over_a_damaged_file_brings_the_rows_back(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    size = db.stat().st_size
    with open(db, "r+b") as handle:  # overwrite bytes in the middle of the file
        handle.seek(size // 2 - (size // 2) % 4096)
        handle.write(os.urandom(3 * 4096))
    assert not _readable(db) or integrity(db) != "ok"  # the damage is real
    done = restore(db, tmp_path / "good.db", "--force", "--json")
    assert done.code == 0, done.err
    result = json.loads(done.out)
    assert counts(db) == flow.counts and integrity(db) == "ok"
    (aside,) = result["replaced"]
    assert Path(aside).name.startswith("database.db.replaced-") and Path(aside).stat().st_size == size
    assert enrich("runs", "--database", db).code == 0


def _readable(path: Path) -> bool:
    try:
        integrity(path)
    except sqlite3.DatabaseError:
        return False
    return True


def test_restore_after_rows_were_deleted_needs_no_force(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    with sqlite3.connect(db) as conn:
        conn.execute("DELETE FROM annotations")
        conn.execute("DELETE FROM tags WHERE transaction_id % 2 = 0")
    assert counts(db)["annotations"] == 0
    wal_before = Path(f"{db}-wal")
    done = restore(db, tmp_path / "good.db")
    assert done.code == 0, done.err
    assert counts(db) == flow.counts and integrity(db) == "ok"
    assert "kept aside" in done.out and not wal_before.exists()
    (kept,) = [p for p in tmp_path.glob("database.db.replaced-*") if not p.name.endswith(("-wal", "-shm"))]
    assert counts(kept)["annotations"] == 0  # the replaced file, as it was


def test_restore_refuses_an_unreadable_database_without_force(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    with open(db, "r+b") as handle:
        handle.write(os.urandom(100))  # the header: no longer recognisable as SQLite
    refused = restore(db, tmp_path / "good.db")
    assert refused.code == 1 and "cannot read" in refused.err and "--force" in refused.err
    assert not list(tmp_path.glob("database.db.replaced-*"))
    assert restore(db, tmp_path / "good.db", "--force").code == 0 and counts(db) == flow.counts


def test_restore_refuses_while_a_run_is_in_progress(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    conn = storage.connect(db)
    try:
        storage.record_run(conn, "TransactionEnrichmentFlow/999", status="running", user="ana")
    finally:
        conn.close()
    refused = restore(db, tmp_path / "good.db")
    assert refused.code == 1 and "TransactionEnrichmentFlow/999 is running" in refused.err
    assert counts(db)["runs"] == 2 and not list(tmp_path.glob("database.db.replaced-*"))
    stale = restore(db, tmp_path / "good.db", "--stale-after-hours", "0")  # a crashed run long ago
    assert stale.code == 0 and counts(db) == flow.counts


def test_restore_refuses_while_the_run_lock_is_held(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    conn = storage.connect(db)
    try:
        taken, _ = storage.acquire_run_lock(conn, {"run_id": "TransactionEnrichmentFlow/7", "user": "ana",
                                                   "host": "elsewhere", "pid": 1, "process_start": None},
                                            lambda holder: False)
    finally:
        conn.close()
    assert taken
    refused = restore(db, tmp_path / "good.db")
    assert refused.code == 1 and "holds the run lock" in refused.err


def test_restore_verifies_its_source_before_touching_anything(flow, db, tmp_path):
    damaged = tmp_path / "damaged-backup.db"
    storage.copy_database(flow.path, damaged)
    size = damaged.stat().st_size
    with open(damaged, "r+b") as handle:
        handle.seek(size // 2 - (size // 2) % 4096)
        handle.write(b"\xff" * 4096 * 4)
    before = db.read_bytes()
    refused = restore(db, damaged)
    assert refused.code == 1 and "integrity check" in refused.err
    assert db.read_bytes() == before and not list(tmp_path.glob("database.db.replaced-*"))
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).execute("CREATE TABLE x (y)").connection.close()
    assert restore(db, empty).code == 1
    assert restore(db, db).code == 1


def test_restore_holds_the_run_lock_so_that_a_run_starting_meanwhile_fails_at_once(flow, db, tmp_path,
                                                                                   monkeypatch):
    from enrich import runlock

    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    seen = {}
    copy = storage._verified_copy

    def copy_while_a_run_starts(source, destination):
        try:
            runlock.hold(Path(db), "TransactionEnrichmentFlow/8", "bob", pid=os.getpid() + 1)
        except storage.RunLockHeld as exc:
            seen["refused"] = str(exc)
        return copy(source, destination)

    monkeypatch.setattr(storage, "_verified_copy", copy_while_a_run_starts)
    restored = restore(db, tmp_path / "good.db")
    assert restored.code == 0, restored.err
    assert "restore/" in seen["refused"]  # the run saw the restore holding the lock and stopped
    assert counts(db) == flow.counts
