"""The operator CLI (``enrich``, ``python -m enrich``) on a database produced by a real flow run.

runs, status, lock and query read without writing; backups are consistent while another
process writes, and a folder named as DEST is created (never a file named like it); a
restore brings back the rows of a damaged database, keeps the replaced file aside,
verifies its source first, refuses while a run is in progress and holds the run lock
while it swaps the files. Every subcommand has a help naming its options, exit codes
follow one rule (0 done, 1 refused or failed, 2 bad usage), and output cut short by a
closed pipe ends quietly.

The test process opens databases through the store only (the project's SQLite library);
a concurrent writer with Python's sqlite3 runs in a process of its own.
"""
from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import click
import pytest
from click.testing import CliRunner

from enrich import cli as enrich_cli
from enrich import runlock
from enrich.figures import FIGURES
from enrich.store import LockClaim, RunLockHeld, StepAttempt, StorageError, open_store
from enrich.store.queries import QUERIES
from enrich.store.sqlite import backup as sqlite_backup
from enrich.store.sqlite.schema import FTS_TABLE
from enrich.store.timeutil import utc_now
from tests.flow_support import ROOT, run_once_per_module

COUNTED = ("transactions", "tags", "annotations", "rejected_rows", "runs", "step_runs")


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """One real flow run on the bundled sample, for the whole module (tests work on copies)."""
    result = run_once_per_module(tmp_path_factory, "cli-flow")
    (run_id,), = result.query("SELECT run_id FROM runs")
    steps = {step for (step,) in result.query("SELECT DISTINCT step FROM step_runs")}
    return SimpleNamespace(path=result.database, run_id=run_id, counts=counts(result.database), steps=steps)


@pytest.fixture
def db(flow, tmp_path) -> Path:
    """A private copy of the flow's database."""
    path = tmp_path / "database.db"
    open_store(flow.path, read_only=True).backup(str(path))
    return path


def rows(path: Path, sql: str, params=()) -> list[tuple]:
    return open_store(path, read_only=True).rows(sql, params)


def counts(path: Path) -> dict[str, int]:
    return {table: rows(path, f"SELECT COUNT(*) FROM {table}")[0][0] for table in COUNTED}


def integrity(path: Path) -> str:
    return rows(path, "PRAGMA integrity_check")[0][0]


def enrich(*argv: object) -> SimpleNamespace:
    """Run the CLI in this process (click's test runner); its exit code, stdout and stderr."""
    result = CliRunner().invoke(enrich_cli.cli, [str(a) for a in argv], catch_exceptions=False)
    return SimpleNamespace(code=result.exit_code, out=result.stdout, err=result.stderr)


def run_lock_is_free(path: Path) -> bool:
    return json.loads(enrich("lock", "--database", path, "--json").out)["holder"] is None


# --------------------------------------------------------------------------- the command group
def test_every_subcommand_has_a_help_naming_its_options():
    group = enrich_cli.cli
    shown = enrich("--help")
    assert shown.code == 0 and "Exit codes" in shown.out
    assert set(group.commands) == {"runs", "status", "backup", "restore", "lock", "query", "browse", "generate",
                                   "bench"}
    for name, command in group.commands.items():
        assert name in shown.out
        helped = enrich(name, "--help")
        assert helped.code == 0, (name, helped.err)
        assert (command.help or "").split("\n")[0].split()[0] in helped.out, name
        for param in command.params:
            if isinstance(param, click.Option):
                assert any(opt in helped.out for opt in param.opts), (name, param.opts)
            else:
                assert (param.metavar or param.name.upper()).strip("[]") in helped.out, (name, param.name)
    for name in ("runs", "status", "backup", "restore", "lock", "query", "browse"):
        assert "--database" in enrich(name, "-h").out, name
    for name in ("runs", "status", "backup", "restore", "lock", "query", "bench"):
        assert "--json" in enrich(name, "--help").out, name


def test_python_dash_m_enrich_and_the_enrich_command_are_the_same_cli(flow, db):
    script = Path(sys.executable).with_name("enrich")  # installed by pip from [project.scripts]
    for command in ([sys.executable, "-m", "enrich"], [str(script)]):
        shown = subprocess.run([*command, "runs", "--database", str(db)], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        assert shown.returncode == 0, shown.stderr
        assert flow.run_id in shown.stdout
        usage = subprocess.run([*command, "runs", "--limit", "zero"], cwd=ROOT, capture_output=True, text=True,
                               timeout=120)
        assert usage.returncode == 2 and "--limit" in usage.stderr


# --------------------------------------------------------------------------- runs and status
def test_runs_lists_the_run_with_every_figure_for_people_and_for_scripts(flow, db):
    shown = enrich("runs", "--database", db)
    assert shown.code == 0, shown.err
    assert flow.run_id in shown.out and "succeeded" in shown.out and str(db) in shown.out
    header = shown.out.splitlines()[1]
    assert all(figure.label in header for figure in FIGURES)
    data = json.loads(enrich("runs", "--database", db, "--json").out)
    assert data["database"] == str(db)
    (run,) = data["runs"]
    names = [figure.name for figure in FIGURES]
    stored = rows(db, f"SELECT run_id, status, {', '.join(names)} FROM runs")[0]
    assert (run["run_id"], run["status"], *(run[name] for name in names)) == stored
    assert run["started_at"] < run["finished_at"] and run["duration_s"] > 0
    assert run["rows_read"] == run["rows_loaded"] + run["rows_rejected"] + run["rows_duplicate"]


@pytest.mark.parametrize("ref", ["full", "number", "last"])
def test_status_shows_figures_steps_checks_and_alerts(flow, db, ref):
    run = {"full": flow.run_id, "number": flow.run_id.split("/")[1], "last": "last"}[ref]
    shown = enrich("status", run, "--database", db)
    assert shown.code == 0, shown.err
    assert f"Run {flow.run_id}: SUCCEEDED" in shown.out
    data = json.loads(enrich("status", run, "--database", db, "--json").out)
    for figure in FIGURES:
        assert f"{figure.label} {data['run'][figure.name]:,}" in shown.out, figure.name
    for text in (*flow.steps, "accounting", "annotations_complete", "Alerts:", "duration_s"):
        assert text in shown.out
    assert data["run"]["run_id"] == flow.run_id
    assert data["steps"][0]["step"] == "start" and {s["step"] for s in data["steps"]} == flow.steps
    assert {"start", "ingest", "join", "end"} <= flow.steps
    assert all(s["status"] == "succeeded" and s["duration_s"] >= 0 for s in data["steps"])
    assert {c["check_name"] for c in data["checks"]} >= {"accounting", "control_total", "tags_complete"}
    assert data["alerts"] == []


def test_status_of_a_failed_step_shows_its_error(flow, db):
    open_store(db).record_step_attempt(StepAttempt(flow.run_id, "join", "99", 1, "failed", utc_now(), utc_now(),
                                                   0.5, "OperationalError", "disk I/O error"))
    shown = enrich("status", "last", "--database", db)
    assert "OperationalError" in shown.out and "disk I/O error" in shown.out


def test_mistakes_exit_2_saying_what_to_pass_and_refusals_exit_1(db, tmp_path):
    missing = enrich("runs", "--database", tmp_path / "nope.db")
    assert missing.code == 2 and "no such database file" in missing.err and "nope.db" in missing.err
    assert "--database" in missing.err
    unknown = enrich("status", "123", "--database", db)
    assert unknown.code == 2 and "123: no such run" in unknown.err and "enrich runs" in unknown.err
    assert enrich("bogus").code == 2
    assert enrich("status", "--database", db).code == 2  # RUN missing
    assert enrich("status", " ", "--database", db).code == 2
    assert enrich("runs", "--limit", "0", "--database", db).code == 2
    assert enrich("runs", "--database", "ftp://host/db").code == 2
    assert enrich("backup", "--database", tmp_path / "nope.db", tmp_path / "b.db").code == 2
    assert enrich("backup", "--database", db, tmp_path / "no-such-folder" / "b.db").code == 2
    no_source = enrich("restore", "--database", db, tmp_path / "nope.db")
    assert no_source.code == 2 and "no such backup file" in no_source.err and "enrich backup" in no_source.err
    (tmp_path / "taken.db").write_bytes(b"")
    taken = enrich("backup", "--database", db, tmp_path / "taken.db")
    assert taken.code == 2 and "never overwrites" in taken.err
    assert enrich("query", "--database", db).code == 2  # no NAME
    assert enrich("query", "nope", "--database", db).code == 2
    assert enrich("query", "runs_between", "-p", "bogus=1", "--database", db).code == 2
    assert enrich("query", "runs_between", "-p", "start", "--database", db).code == 2
    not_ours = tmp_path / "notes.txt"
    not_ours.write_text("hello")
    for command in (["runs"], ["status", "last"], ["lock"], ["query", "daily_volume"], ["backup", tmp_path / "x/"]):
        refused = enrich(*command, "--database", not_ours)
        assert refused.code == 1 and "notes.txt" in refused.err, command


def test_reading_never_writes(db):
    before = sorted(p.name for p in db.parent.iterdir()), db.stat().st_mtime_ns, db.read_bytes()
    for command in (["runs"], ["status", "last"], ["lock"], *(["query", name] for name in QUERIES)):
        assert enrich(*command, "--database", db).code == 0, command
    assert (sorted(p.name for p in db.parent.iterdir()), db.stat().st_mtime_ns, db.read_bytes()) == before


def test_a_postgresql_password_is_never_printed(tmp_path):
    postgres = pytest.importorskip("enrich.store.postgres")
    if not hasattr(postgres, "PostgresStore"):
        pytest.skip("the PostgreSQL backend is not in this tree yet")
    url = "postgresql://ana:s3cret-pw@127.0.0.1:1/bank"  # nothing listens on port 1: fails at once
    for command in (["runs"], ["status", "last"], ["lock"], ["query", "daily_volume"], ["backup", tmp_path / "b/"],
                    ["restore", tmp_path / "none.db"], ["browse"]):
        done = subprocess.run([sys.executable, "-m", "enrich", *map(str, command), "--database", url], cwd=ROOT,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode in (1, 2), (command, done.stderr)
        assert "s3cret-pw" not in done.stdout + done.stderr, command


# --------------------------------------------------------------------------- output into a closed pipe
@pytest.mark.parametrize("json_flag", ["--json", ""])
def test_output_into_a_pipe_closed_early_ends_quietly(db, json_flag):
    store = open_store(db)
    store.rows("""WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000)
        INSERT INTO runs (run_id, status, started_at, finished_at, rows_read)
        SELECT 'TransactionEnrichmentFlow/' || i, 'succeeded', '2020-01-01T00:00:00.000+00:00',
               '2020-01-01T00:01:00.000+00:00', i FROM n""")  # about 1 MB of output: more than a pipe holds
    command = " ".join(shlex.quote(part) for part in [sys.executable, "-m", "enrich", "runs", "--limit", "5000",
                                                        "--database", str(db), *json_flag.split()])
    piped = subprocess.run(["bash", "-c", f'{command} | head -1; exit "${{PIPESTATUS[0]}}"'], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == enrich_cli.EXIT_BROKEN_PIPE == 141
    assert piped.stderr == ""  # no traceback, no "Exception ignored"
    assert len(piped.stdout.splitlines()) == 1


# --------------------------------------------------------------------------- backup
def test_backup_is_a_verified_single_file_copy(flow, db, tmp_path):
    done = enrich("backup", "--database", db, tmp_path / "backup.db", "--json")
    assert done.code == 0, done.err
    result = json.loads(done.out)
    backup = Path(result["backup"])
    assert backup == (tmp_path / "backup.db").resolve() and result["integrity"] == "ok"
    assert result["database"] == str(db)
    assert counts(backup) == flow.counts and integrity(backup) == "ok"
    assert not Path(f"{backup}-wal").exists() and not list(tmp_path.glob(".*partial"))
    into_dir = enrich("backup", "--database", db, tmp_path)
    assert into_dir.code == 0 and "integrity_check: ok" in into_dir.out
    assert len(list(tmp_path.glob("database-*.db"))) == 1


@pytest.mark.parametrize("dest", ["backups", "backups/", "nested/deeper/", "backups.d"])
def test_backup_to_a_folder_that_does_not_exist_creates_it_and_a_file_inside(flow, db, tmp_path, dest):
    folder = tmp_path / dest
    assert not folder.exists()
    for _ in range(2):  # again into the folder now there
        done = enrich("backup", "--database", db, str(tmp_path / dest) + ("/" if dest.endswith("/") else ""))
        assert done.code == 0, done.err
    assert folder.is_dir()  # never a regular file named like the folder
    copies = sorted(folder.iterdir())
    assert len(copies) == 2 and all(p.name.startswith("database-") and p.suffix == ".db" for p in copies)
    assert all(counts(p) == flow.counts for p in copies)


def test_backup_as_the_readme_writes_it(flow, db):
    work = db.parent
    done = subprocess.run([sys.executable, "-m", "enrich", "backup", "--database", "database.db", "backups/"],
                          cwd=work, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (work / "backups").is_dir()
    (copy,) = (work / "backups").iterdir()
    assert counts(copy) == flow.counts


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


KEEP_WRITING = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
batch = 0
while True:
    batch += 1
    ids = list(range(10_000_000 + batch * 500, 10_000_000 + batch * 500 + 500))
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("INSERT INTO transactions (id, amount_cents, wording, first_run, last_changed_run) "
                 "SELECT value, 100, 'TAXI concurrent', (SELECT MIN(run_key) FROM run_keys), "
                 "(SELECT MIN(run_key) FROM run_keys) FROM json_each(?)", (json.dumps(ids),))
    conn.execute("COMMIT")
    print(batch, flush=True)
"""


def test_backups_taken_while_commits_keep_landing_are_each_a_committed_state(flow, db, tmp_path):
    base = flow.counts["transactions"]
    writer = subprocess.Popen([sys.executable, "-c", KEEP_WRITING, str(db)], stdout=subprocess.PIPE, text=True)
    try:
        while int(writer.stdout.readline()) < 3:
            pass
        for n in range(3):
            assert enrich("backup", "--database", db, tmp_path / f"b{n}.db").code == 0
    finally:
        writer.kill()
        writer.wait(timeout=60)
    for n in range(3):
        copy = tmp_path / f"b{n}.db"
        copied = counts(copy)["transactions"]
        assert integrity(copy) == "ok" and (copied - base) % 500 == 0 and copied > base
        open_store(copy).rows(f"INSERT INTO {FTS_TABLE} ({FTS_TABLE}, rank) VALUES ('integrity-check', 1)")


# --------------------------------------------------------------------------- restore
def restore(db: Path, backup: Path, *extra: str) -> SimpleNamespace:
    return enrich("restore", "--database", db, backup, *extra)


def _readable(path: Path) -> bool:
    try:
        return integrity(path) == "ok"
    except StorageError:
        return False


def test_restore_over_a_damaged_file_brings_the_rows_back(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    size = db.stat().st_size
    with open(db, "r+b") as handle:  # overwrite pages in the middle of the file
        handle.seek(size // 2 - (size // 2) % 4096)
        handle.write(os.urandom(3 * 4096))
    assert not _readable(db)  # the damage is real
    done = restore(db, tmp_path / "good.db", "--force", "--json")
    assert done.code == 0, done.err
    result = json.loads(done.out)
    assert counts(db) == flow.counts and integrity(db) == "ok"
    (aside,) = result["replaced"]
    assert Path(aside).name.startswith("database.db.replaced-") and Path(aside).stat().st_size == size
    assert enrich("runs", "--database", db).code == 0


def test_restore_after_rows_were_deleted_needs_no_force(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    store = open_store(db)
    store.rows("DELETE FROM annotations")
    store.rows("DELETE FROM tags WHERE transaction_id % 2 = 0")
    assert counts(db)["annotations"] == 0
    done = restore(db, tmp_path / "good.db")
    assert done.code == 0, done.err
    assert counts(db) == flow.counts and integrity(db) == "ok"
    assert "kept aside" in done.out and run_lock_is_free(db)
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


def test_restore_refuses_while_a_run_is_marked_running(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    open_store(db).record_run("TransactionEnrichmentFlow/999", status="running", user="ana")
    refused = restore(db, tmp_path / "good.db")
    assert refused.code == 1 and "TransactionEnrichmentFlow/999 is running" in refused.err
    assert counts(db)["runs"] == 2 and not list(tmp_path.glob("database.db.replaced-*"))
    assert run_lock_is_free(db)
    stale = restore(db, tmp_path / "good.db", "--stale-after-hours", "0")  # a crashed run long ago
    assert stale.code == 0 and counts(db) == flow.counts


def test_restore_refuses_while_the_run_lock_is_held(flow, db, tmp_path):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    taken = open_store(db).acquire_lock(LockClaim("TransactionEnrichmentFlow/7", "ana", "elsewhere", 1, None),
                                        lambda holder: False, 300)
    assert taken.acquired
    refused = restore(db, tmp_path / "good.db")
    assert refused.code == 1 and "holds the run lock" in refused.err and "TransactionEnrichmentFlow/7" in refused.err
    assert not list(tmp_path.glob("database.db.replaced-*"))


def test_restore_verifies_its_source_before_touching_anything(flow, db, tmp_path):
    damaged = tmp_path / "damaged-backup.db"
    open_store(flow.path, read_only=True).backup(str(damaged))
    size = damaged.stat().st_size
    with open(damaged, "r+b") as handle:
        handle.seek(size // 2 - (size // 2) % 4096)
        handle.write(b"\xff" * 4096 * 4)
    before = db.read_bytes()
    refused = restore(db, damaged)
    assert refused.code == 1 and "integrity check" in refused.err
    assert db.read_bytes() == before and not list(tmp_path.glob("database.db.replaced-*"))
    empty = tmp_path / "empty.db"  # an SQLite file, but not a database of ours (made in a process of its own)
    subprocess.run([sys.executable, "-c", "import sqlite3, sys; sqlite3.connect(sys.argv[1]).execute("
                    "'CREATE TABLE x (y)').connection.close()", str(empty)], check=True, timeout=60)
    not_ours = restore(db, empty)
    assert not_ours.code == 1 and "not a transaction-enrichment database" in not_ours.err
    same = restore(db, db)
    assert same.code == 1 and "same file" in same.err
    assert run_lock_is_free(db)  # taken for the attempt, released when it was refused


def test_restore_holds_the_run_lock_so_that_a_run_starting_meanwhile_fails_at_once(flow, db, tmp_path,
                                                                                   monkeypatch):
    assert enrich("backup", "--database", db, tmp_path / "good.db").code == 0
    seen = {}
    copy = sqlite_backup.verified_copy

    def copy_while_a_run_starts(source, destination):
        try:
            runlock.hold(open_store(db), "TransactionEnrichmentFlow/8", "bob", pid=os.getpid() + 1)
        except RunLockHeld as exc:
            seen["refused"] = str(exc)
        return copy(source, destination)

    monkeypatch.setattr(sqlite_backup, "verified_copy", copy_while_a_run_starts)
    restored = restore(db, tmp_path / "good.db")
    assert restored.code == 0, restored.err
    assert "restore/" in seen["refused"]  # the run saw the restore holding the lock and stopped
    assert counts(db) == flow.counts and run_lock_is_free(db)


# --------------------------------------------------------------------------- the run lock
def test_lock_shows_the_holder_and_break_removes_a_dead_ones_lock(flow, db):
    free = enrich("lock", "--database", db)
    assert free.code == 0 and "no run holds the lock" in free.out
    store = open_store(db)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)  # a process of this host that has exited
    store.record_run("TransactionEnrichmentFlow/41", status="running", user="ana")
    assert store.acquire_lock(runlock.claim("TransactionEnrichmentFlow/41", "ana", pid=dead_pid),
                              lambda holder: False, 300).acquired
    shown = enrich("lock", "--database", db)
    assert shown.code == 0 and "locked by run TransactionEnrichmentFlow/41" in shown.out
    assert "dead (stale lock)" in shown.out and f"pid {dead_pid}" in shown.out
    assert json.loads(enrich("lock", "--database", db, "--json").out)["holder"]["run_id"] == \
        "TransactionEnrichmentFlow/41"
    broken = enrich("lock", "--database", db, "--break", "--json")
    assert broken.code == 0, broken.err
    result = json.loads(broken.out)
    assert result["removed"] and result["closed_runs"] == ["TransactionEnrichmentFlow/41"]
    assert run_lock_is_free(db)
    assert rows(db, "SELECT status FROM runs WHERE run_id = 'TransactionEnrichmentFlow/41'") == [("failed",)]
    assert enrich("lock", "--database", db, "--break").code == 0  # nothing to remove: done


def test_lock_break_refuses_a_run_alive_on_this_host_and_removes_one_elsewhere(db):
    store = open_store(db)
    store.acquire_lock(runlock.claim("TransactionEnrichmentFlow/42", "ana", pid=os.getpid()), lambda holder: False,
                       300)
    alive = enrich("lock", "--database", db)
    assert alive.code == 0 and ": alive" in alive.out
    refused = enrich("lock", "--database", db, "--break")
    assert refused.code == 1 and "is alive on this host" in refused.err
    assert not run_lock_is_free(db)
    store.break_lock()
    store.acquire_lock(LockClaim("TransactionEnrichmentFlow/43", "bob", "elsewhere", 7, None), lambda holder: False,
                       300)
    elsewhere = enrich("lock", "--database", db)
    assert "on another host, lease until" in elsewhere.out
    assert enrich("lock", "--database", db, "--break").code == 0 and run_lock_is_free(db)


# --------------------------------------------------------------------------- canned queries
def test_query_list_names_every_query_with_its_description():
    listed = enrich("query", "--list")
    assert listed.code == 0
    text = " ".join(listed.out.split())
    for query in QUERIES.values():
        assert query.name in listed.out and " ".join(query.description.split()) in text
    assert "run_rejected_rows [-p run_id=...]" in listed.out
    data = json.loads(enrich("query", "--list", "--json").out)
    assert [q["name"] for q in data] == list(QUERIES)
    assert next(q for q in data if q["name"] == "runs_between")["parameters"] == ["start", "end"]


def test_query_runs_a_canned_query_with_its_parameters(flow, db):
    number = flow.run_id.split("/")[1]
    expected = [(line, reason) for line, reason in rows(db, "SELECT line, reason FROM rejected_rows ORDER BY line")]
    assert expected
    for params in (["-p", f"run_id={flow.run_id}"], ["--param", f"run_id={number}"], []):
        data = json.loads(enrich("query", "run_rejected_rows", *params, "--database", db, "--json").out)
        assert [(r["line"], r["reason"]) for r in data["rows"]] == expected, params
    assert json.loads(enrich("query", "run_rejected_rows", "-p", "run_id=Nope/1", "--database", db,
                             "--json").out)["rows"] == []
    shown = enrich("query", "runs_by_status", "--database", db)
    assert shown.code == 0 and "succeeded" in shown.out and flow.run_id in shown.out
    assert "(none)" in enrich("query", "failed_steps", "--database", db).out


# --------------------------------------------------------------------------- browse, generate
def test_browse_refuses_a_postgresql_database_without_showing_its_password():
    refused = enrich("browse", "--database", "postgresql://ana:s3cret-pw@db.example/bank")
    assert refused.code == 2
    assert "enrich query" in refused.err and "psql" in refused.err
    assert "s3cret-pw" not in refused.out + refused.err and "ana:***@db.example" in refused.err


def test_browse_refuses_a_missing_database_and_prints_the_metadata(tmp_path):
    missing = enrich("browse", "--database", tmp_path / "none.db")
    assert missing.code == 2 and "make run" in missing.err and "none.db" in missing.err
    meta = json.loads(enrich("browse", "--database", tmp_path / "bank.db", "--metadata").out)
    assert "bank" in meta["databases"] and meta["title"]


def test_generate_writes_the_file_and_refuses_bad_numbers(tmp_path):
    out = tmp_path / "sub" / "t.csv"
    done = enrich("generate", "--rows", 50, "--out", out, "--seed", 3, "--malformed", 1, "--duplicates", 2)
    assert done.code == 0, done.err
    assert "50 rows" in done.err and out.read_text(encoding="utf-8").startswith("id,amount,wording\n")
    assert enrich("generate", "--rows", -3, "--out", out, "--seed", 1).code == 2
    assert enrich("generate", "--rows", 3, "--out", out).code == 2  # --seed missing


def test_the_run_lock_module_has_no_command_line_of_its_own():
    assert not hasattr(runlock, "main")
    for module in ("runlock", "browse", "bench/harness", "generate", "datasette_csv"):
        text = (ROOT / "enrich" / f"{module}.py").read_text(encoding="utf-8")
        assert "argparse" not in text and '__name__ == "__main__"' not in text, module
    # (the bench's plain script and measuring process are programs it runs by path, not entry points)
    assert not (ROOT / "enrich" / "bench" / "__main__.py").exists()
