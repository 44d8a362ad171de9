"""Database faults: read-only file or disk, full disk, missing directory, a file that is not
SQLite, an older or newer schema; and which failures are retried.

For each fault: a clear :class:`enrich.errors.StorageError` naming the file and what to do,
nothing stored lost, the input untouched, and (through the flow) an SMS alert. The
tests run as root in CI, where ``chmod`` does not stop writes: a read-only file is made
immutable with ``chattr +i``, a read-only or full disk is a real small tmpfs mount
(remounted read-only); those tests are skipped, with the reason, where that is not possible.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from enrich import runlock
from enrich.errors import PermanentError, StorageError
from enrich.generate import write_csv as generate_csv
from enrich.store import (CannotOpenDatabase, DatabaseBusy, DatabaseDirectoryMissing, DatabaseReadOnly,
                          NotADatabase, RunLockHeld, SchemaTooNew, StepAttempt, StorageFull, open_store)
from enrich.store.records import AlertRecord
from enrich.store.sqlite import schema
from tests.flow_support import SMALL, run_flow, write_csv

FLOW = "TransactionEnrichmentFlow"


# --------------------------------------------------------------------------- fault makers
@contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """``path`` made immutable (``chattr +i``): not even root can write, rename or delete it."""
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True) \
        if shutil.which("chattr") else None
    if done is None or done.returncode != 0:
        pytest.skip(f"chattr +i is not available here ({done.stderr.strip() if done else 'no chattr'})")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


@contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` mounted at ``where`` (root only), unmounted afterwards."""
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], check=True)


def remount_read_only(where: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)


def chunk(ids, cents, words=None) -> SimpleNamespace:
    """A parsed chunk as enrich.ingest yields it (rows on lines id + 1)."""
    ids = np.asarray(ids, dtype=np.int64)
    words = words if words is not None else [f"PAIEMENT CB {i}" for i in ids]
    valid = pd.DataFrame({"line": ids + 1, "id": ids, "amount_cents": np.asarray(cents, dtype=np.int64),
                          "wording": pd.Series(words, dtype="str")})
    rejected = pd.DataFrame({"line": np.zeros(0, np.int64), "raw": pd.Series([], dtype="str"),
                             "reason": pd.Series([], dtype="str")})
    return SimpleNamespace(valid=valid, rejected=rejected)


def rows(path: Path, sql: str) -> list[tuple]:
    """Read through a read-only store (nothing created, migrated or written)."""
    return open_store(path, read_only=True).rows(sql)


def seed(path: Path, n: int = 3) -> list[tuple]:
    """A database with ``n`` transactions and a ledger row; returns its transactions."""
    store = open_store(path)
    store.load_batch(f"{FLOW}/1", [chunk(range(1, n + 1), [100 * i for i in range(1, n + 1)])])
    store.record_run(f"{FLOW}/1", status="succeeded", user="alice")
    return rows(path, "SELECT * FROM transactions ORDER BY id")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def assert_clear(error: BaseException, path: Path, *hints: str) -> None:
    message = str(error)
    assert isinstance(error, StorageError)
    assert str(path) in message, message
    for hint in hints:
        assert hint in message, (hint, message)


# --------------------------------------------------------------------------- read-only
def test_a_read_only_database_file_is_refused_clearly_and_kept(tmp_path):
    path = tmp_path / "bank.db"
    kept = seed(path)
    with immutable(path):
        store = open_store(path)
        assert store.rows("SELECT * FROM transactions ORDER BY id") == kept  # SQLite falls back to reading
        with pytest.raises(DatabaseReadOnly) as caught:
            store.record_run(f"{FLOW}/2", user="bob")
        with pytest.raises(DatabaseReadOnly):
            runlock.hold(store, f"{FLOW}/2", "bob", pid=os.getpid())
        with pytest.raises(StorageError) as bulk:  # the bulk load path too
            store.load_batch(f"{FLOW}/2", [chunk([9], [1])])
        assert str(path) in str(bulk.value)
    assert_clear(caught.value, path, "cannot be written", "nothing was written", "writable")
    assert rows(path, "SELECT * FROM transactions ORDER BY id") == kept
    assert rows(path, "SELECT run_id FROM runs") == [(f"{FLOW}/1",)]
    assert rows(path, "PRAGMA integrity_check") == [("ok",)]


def test_a_read_only_disk_is_refused_clearly_and_kept(tmp_path):
    with tmpfs(tmp_path / "ro", "4m") as mount:
        path = mount / "bank.db"
        kept = seed(path)
        remount_read_only(mount)
        for target in (path, mount / "new.db"):
            with pytest.raises(StorageError) as caught:
                open_store(target).record_run(f"{FLOW}/2")
            assert isinstance(caught.value, PermanentError)
            assert_clear(caught.value, target, "read-only")
        with pytest.raises(StorageError):
            runlock.hold(open_store(path), f"{FLOW}/2", "bob", pid=os.getpid())
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)  # to read it back
        assert rows(path, "SELECT * FROM transactions ORDER BY id") == kept
        assert rows(path, "PRAGMA integrity_check") == [("ok",)]


# --------------------------------------------------------------------------- full disk
def test_a_full_disk_rolls_the_write_back_and_says_so(tmp_path):
    with tmpfs(tmp_path / "small", "4m") as mount:  # the schema alone takes ~1 MB in 16 KiB pages
        path = mount / "bank.db"
        kept = seed(path)
        big = [chunk(np.arange(10, 120_010), np.arange(120_000), ["PRLV SEPA " + "X" * 40] * 120_000)]
        store = open_store(path)
        with pytest.raises(StorageFull) as caught:
            store.load_batch(f"{FLOW}/2", big)
        assert str(path) in str(caught.value) and "Free" in str(caught.value)
        with pytest.raises(StorageFull) as ledger:  # the ledger's write path too
            for _ in range(10_000):
                store.record_alert(AlertRecord(f"{FLOW}/2", "sms", "sent", "+33", "x" * 4000))
        assert_clear(ledger.value, path, "disk is full", "nothing stored was lost", "Free disk space")
        assert rows(path, "SELECT * FROM transactions ORDER BY id") == kept  # nothing of the batch
        assert rows(path, "SELECT COUNT(*) FROM rejected_rows") == [(0,)]
        assert rows(path, "PRAGMA integrity_check") == [("ok",)]


# --------------------------------------------------------------------------- wrong or missing file
def test_a_missing_directory_is_explained(tmp_path):
    path = tmp_path / "no" / "such" / "bank.db"
    with pytest.raises(DatabaseDirectoryMissing) as caught:
        open_store(path).prepare()
    assert_clear(caught.value, path, "does not exist", "--database")
    assert not path.parent.exists()


@pytest.mark.parametrize("content", [b"id,amount,wording\n1,2,x\n" * 200, b"\0" * 4096 * 3,
                                     b"SQLite format 3\0" + b"\xff" * 5000])
def test_a_file_that_is_not_sqlite_is_explained_and_untouched(tmp_path, content):
    path = tmp_path / "bank.db"
    path.write_bytes(content)
    with pytest.raises(NotADatabase) as caught:
        open_store(path).prepare()
    assert_clear(caught.value, path, "not an SQLite database", "left untouched")
    assert path.read_bytes() == content
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.db"]  # no -wal / -shm left behind


def test_a_directory_given_as_the_database_is_explained(tmp_path):
    with pytest.raises(CannotOpenDatabase) as caught:
        open_store(tmp_path).prepare()
    assert_clear(caught.value, tmp_path, "cannot open or create")


_WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
    open(sys.argv[2], "w").write("locked")
    time.sleep(30)
""")


def test_a_database_still_locked_after_the_busy_timeout_is_a_transient_error(db_path, tmp_path):
    """Writers wait for each other (busy_timeout, 10 minutes in production); past it the error
    names the file and is transient: @retry repeats the step. The other writer is another process,
    as it would be."""
    store = open_store(db_path)
    store.prepare()
    flag = tmp_path / "locked"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(db_path), str(flag)])
    try:
        while not flag.exists():
            time.sleep(0.01)
        with pytest.raises(DatabaseBusy) as caught:  # a courtesy write waits 200 ms only
            store.record_step_attempt(StepAttempt(f"{FLOW}/1", "start", "1", 0, "running", "t"), wait=False)
    finally:
        writer.kill()
        writer.wait()
    assert_clear(caught.value, db_path, "stayed locked by another writer", "Run again")
    assert not isinstance(caught.value, PermanentError)


# --------------------------------------------------------------------------- schema versions
def version_1_database(path: Path) -> None:
    """A database as the first release left it: migration 1 only, with data."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN")
    conn.execute("CREATE TABLE schema_version (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)")
    for statement in dict(schema.MIGRATIONS)[1]:
        conn.execute(statement)
    conn.execute("INSERT INTO schema_version VALUES (1, '2024-01-01T00:00:00.000+00:00')")
    conn.execute("INSERT INTO transactions (id, amount_cents, wording, first_run_id, last_changed_run_id) "
                 "VALUES (1, -28366, 'PRLV CE PROVENCE', 'F/1', 'F/1')")
    conn.execute("INSERT INTO tags VALUES (1, 'TATA', 'F/1')")
    conn.execute("COMMIT")
    conn.close()


def test_an_older_schema_is_migrated_up_with_its_data_kept(db_path):
    version_1_database(db_path)
    store = open_store(db_path)
    assert store.schema_version() == schema.SCHEMA_VERSION
    assert store.rows("SELECT version FROM schema_version ORDER BY version") == [(v,) for v, _ in schema.MIGRATIONS]
    assert store.rows("SELECT id, amount_cents, amount, wording FROM transactions") == [
        (1, -28366, -283.66, "PRLV CE PROVENCE")]
    # version 4 rebuilt the tables with integer lineage keys: the run ids are carried over
    assert store.rows("SELECT id, tag, first_run_id, last_changed_run_id, tag_run_id FROM enriched_transactions") \
        == [(1, "TATA", "F/1", "F/1", "F/1")]
    assert store.rows("PRAGMA foreign_key_check") == []
    assert store.rows("SELECT rowid FROM transactions_fts WHERE transactions_fts MATCH 'provence'") == [(1,)]
    runlock.hold(store, f"{FLOW}/2", "bob", pid=os.getpid())  # the lock table (v3, lease v5) works
    assert store.lock_holder().expires_at


def test_a_version_4_ledger_row_keeps_its_figures_through_version_5(db_path):
    """Version 5 rebuilds runs from the run record (and allows the "interrupted" status)."""
    version_1_database(db_path)
    with sqlite3.connect(db_path, isolation_level=None) as conn:  # (closed before the store opens it)
        conn.execute("INSERT INTO runs (run_id, status, started_at, user, rows_read) "
                     "VALUES ('F/1', 'succeeded', '2024-01-01', 'ana', 7)")
    conn.close()
    store = open_store(db_path)
    run = store.get_run("F/1")
    assert (run.status, run.user, run.rows_read) == ("succeeded", "ana", 7)
    store.close_runs(["F/1"], "interrupted")  # no-op: not running
    store.record_run("F/2", status="interrupted")
    assert store.get_run("F/2").status == "interrupted"


def test_a_newer_schema_is_refused_and_left_untouched(db_path):
    open_store(db_path).prepare()
    with sqlite3.connect(db_path) as conn:
        conn.execute("INSERT INTO schema_version VALUES (99, 'future')")
    conn.close()
    before = digest(db_path)
    with pytest.raises(SchemaTooNew) as caught:
        open_store(db_path).prepare()
    assert_clear(caught.value, db_path, "version 99 is newer than this program", "Upgrade the program")
    assert digest(db_path) == before


def test_every_unusable_database_condition_is_permanent():
    """The guard does not let @retry repeat these (see flows/guards.py): they are marked permanent."""
    for error in (DatabaseReadOnly, StorageFull, NotADatabase, CannotOpenDatabase, DatabaseDirectoryMissing,
                  SchemaTooNew, RunLockHeld):
        assert issubclass(error, StorageError) and issubclass(error, PermanentError)
    assert not issubclass(DatabaseBusy, PermanentError)


# --------------------------------------------------------------------------- through the flow
def assert_alerted(result, step: str, error: str) -> str:
    assert result.returncode != 0
    assert len(result.sms) == 1, result.sms
    body = result.sms[0]["fields"]["Body"]
    assert f"- {step}: {error}" in body, body
    return body


@pytest.mark.flow
def test_a_flow_run_on_a_file_that_is_not_sqlite_alerts_and_touches_nothing(tmp_path):
    database = tmp_path / "bank.db"
    database.write_bytes(b"id,amount,wording\n" * 500)
    before = digest(database)
    csv = write_csv(tmp_path / "t.csv", SMALL)
    result = run_flow(tmp_path, csv, database=database)
    assert_alerted(result, "start", "NotADatabase")
    assert str(database) in result.stdout + result.stderr
    assert digest(database) == before
    assert csv.read_text(encoding="utf-8") == SMALL


@pytest.mark.flow
def test_a_flow_run_on_a_read_only_database_alerts_and_loses_nothing(tmp_path):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    first = run_flow(tmp_path, csv)
    assert first.returncode == 0, first.stderr
    kept = first.query("SELECT * FROM transactions ORDER BY id"), first.query("SELECT * FROM tags ORDER BY 1")
    with immutable(first.database):
        result = run_flow(tmp_path, write_csv(tmp_path / "u.csv", SMALL + "8,1.00,NEW TOTO\n"))
    body = assert_alerted(result, "start", "DatabaseReadOnly")
    assert "cannot be written" in body
    assert (result.query("SELECT * FROM transactions ORDER BY id"),
            result.query("SELECT * FROM tags ORDER BY 1")) == kept
    assert result.query("PRAGMA integrity_check") == [("ok",)]


@pytest.mark.flow
def test_a_flow_run_on_a_full_disk_alerts_and_loses_nothing(tmp_path):
    with tmpfs(tmp_path / "small", "3m") as mount:  # room for the schema (16 KiB pages) and a small run
        database = mount / "bank.db"
        first = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), database=database)
        assert first.returncode == 0, first.stderr
        kept = first.query("SELECT * FROM transactions ORDER BY id")
        big = generate_csv(tmp_path / "big.csv", 100_000, seed=3).path
        big_digest = digest(big)
        result = run_flow(tmp_path, big, database=database)
        body = assert_alerted(result, "ingest", "StorageFull")
        assert "disk is full" in body
        attempts = result.query("SELECT attempt, status FROM step_runs WHERE step = 'ingest' AND run_id = ?",
                                (result.run.pathspec,))
        assert attempts in ([], [(0, "failed")])  # one attempt (if the ledger row itself fit)
        assert result.query("SELECT * FROM transactions ORDER BY id") == kept
        assert result.query("PRAGMA integrity_check") == [("ok",)]
        assert digest(big) == big_digest


# --------------------------------------------------------------------------- retries
@pytest.mark.flow
def test_a_transient_fault_is_retried_and_every_attempt_recorded(tmp_path):
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), simulate_failure="ingest")
    attempts = result.query("SELECT attempt, status, error_type FROM step_runs WHERE step = 'ingest' "
                            "ORDER BY attempt")
    assert attempts == [(0, "failed", "SimulatedFailure"), (1, "failed", "SimulatedFailure"),
                        (2, "failed", "SimulatedFailure")]
    assert len(result.sms) == 1


@pytest.mark.flow
def test_a_malformed_file_is_not_retried(tmp_path):
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", "id,montant,wording\n1,2.00,x\n"))
    attempts = result.query("SELECT attempt, status, error_type FROM step_runs WHERE step = 'ingest'")
    assert attempts == [(0, "failed", "MissingColumnError")]
    body = assert_alerted(result, "ingest", "MissingColumnError")
    assert "t.csv" in body
    assert "not retried" in result.stdout + result.stderr
