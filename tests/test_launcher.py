"""The launcher (algorithm.py) as a user meets it: settings checked before any task starts, a summary
at the end of a run, a failed run that ends with its cause, Ctrl-C and SIGTERM that leave the
ledger true, and resume."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enrich.store import open_store
from tests.flow_support import INJECT, ROOT, SMALL, TWILIO_ENV, write_csv

ALGORITHM = ROOT / "algorithm.py"


def launch(workdir: Path, *args: str, env: dict | None = None, sms_log: Path | None = None,
           timeout: float = 300) -> subprocess.CompletedProcess:
    """``python algorithm.py ARGS`` in ``workdir``, as a user would, Twilio intercepted."""
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join([str(INJECT), str(ROOT)]),
               "METAFLOW_DATASTORE_SYSROOT_LOCAL": os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"], **(env or {})}
    if sms_log is not None:
        environ.update({**TWILIO_ENV, "ENRICH_TEST_TWILIO_LOG": str(sms_log)})
    return subprocess.run([sys.executable, str(ALGORITHM), *args], cwd=workdir, env=environ,
                          capture_output=True, text=True, timeout=timeout)


# --------------------------------------------------------------------------- bad settings
@pytest.mark.parametrize("case", ["missing input", "missing database directory", "bad tag list", "bad match",
                                  "bad simulate-failure", "unreadable twilio config", "bad shards"])
def test_bad_settings_fail_at_once_with_one_message_and_touch_nothing(tmp_path, case):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    database = tmp_path / "database.db"
    args = ["run", "--transactions", str(csv), "--database", str(database)]
    env = {}
    expected = {
        "missing input": ("--transactions", "no such file"),
        "missing database directory": ("--database", "does not exist"),
        "bad tag list": ("tags.txt", "line 2"),
        "bad match": ("--match", "word"),
        "bad simulate-failure": ("--simulate-failure", "random"),
        "unreadable twilio config": ("twilio", "JSON"),
        "bad shards": ("--shards", "at least 1"),
    }[case]
    if case == "missing input":
        args[2] = str(tmp_path / "absent.csv")
    elif case == "missing database directory":
        args[4] = str(tmp_path / "no" / "such" / "database.db")
    elif case == "bad tag list":
        (tmp_path / "tags.txt").write_text("TOTO\n  \x01bad\n", encoding="utf-8")
        args += ["--tags", str(tmp_path / "tags.txt")]
    elif case == "bad match":
        args += ["--match", "fuzzy"]
    elif case == "bad simulate-failure":
        args += ["--simulate-failure", "nowhere"]
    elif case == "unreadable twilio config":
        (tmp_path / "twilio.json").write_text("{not json", encoding="utf-8")
        env["TWILIO_CONFIG"] = str(tmp_path / "twilio.json")
    else:
        args += ["--shards", "0"]
    started = time.perf_counter()
    done = launch(tmp_path, *args, env=env)
    elapsed = time.perf_counter() - started
    assert done.returncode == 2, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "not started (nothing was written)" in output
    for text in expected:
        assert text.lower() in output.lower(), (text, output)
    assert "Traceback" not in output and "Task is starting" not in output
    assert len(output.strip().splitlines()) <= 4  # said once
    assert not database.exists() and not (tmp_path / ".metaflow").exists()
    assert elapsed < 10  # (well under a second of work here; the interpreter and Metaflow's import dominate)


def test_a_database_password_is_handed_over_as_pgpassword_never_as_an_argument(tmp_path, monkeypatch):
    sys.path.insert(0, str(ROOT))
    import algorithm

    environ: dict[str, str] = {}
    argv = algorithm.hide_database_password(["run", "--database", "postgresql://ana:s%40cret@db:5432/bank"],
                                            environ)
    assert argv == ["run", "--database", "postgresql://ana@db:5432/bank"] and environ["PGPASSWORD"] == "s@cret"
    assert algorithm.hide_database_password(["run", "--database=bank.db"], environ) == ["run", "--database=bank.db"]


# --------------------------------------------------------------------------- how a run ends
@pytest.mark.flow
def test_a_successful_run_ends_with_a_summary(tmp_path):
    done = launch(tmp_path, "run", "--database", str(tmp_path / "database.db"))  # the bundled sample
    assert done.returncode == 0, done.stderr[-3000:]
    tail = done.stdout.strip().splitlines()[-5:]
    text = "\n".join(tail)
    assert tail[0].startswith("Run TransactionEnrichmentFlow/") and "SUCCEEDED" in tail[0], done.stdout[-3000:]
    assert "808 read, 799 loaded (799 new, 0 updated, 0 unchanged), 6 rejected" in text
    assert "conflicting duplicate id (2)" in text and "3 duplicate" in text
    assert "327 tagged" in text and "36 ambiguous" in text and "795 annotated" in text
    assert "1 warning(s): amount_outliers" in text and "FAILED" not in text
    assert "make browse" in text and "card view end" in text
    assert "LoadStats(" not in done.stdout + done.stderr
    headless = {"DISPLAY": "", "WAYLAND_DISPLAY": "", "BROWSER": ""}  # (empty: webbrowser ignores them)
    card = launch(tmp_path, "card", "view", "end", env=headless)
    written = tmp_path / "card-end.html"
    assert card.returncode == 0 and written.is_file(), card.stderr[-2000:]
    assert f"No web browser on this machine: the card is in {written}" in card.stderr
    assert "808" in written.read_text(encoding="utf-8")


@pytest.mark.flow
def test_a_failed_run_ends_with_its_cause_said_once(tmp_path):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    done = launch(tmp_path, "run", "--transactions", str(csv), "--database", str(tmp_path / "database.db"),
                  "--simulate-failure", "tag_transactions", sms_log=tmp_path / "sms.jsonl")
    assert done.returncode != 0
    output = done.stdout + done.stderr
    tail = "\n".join(done.stdout.strip().splitlines()[-4:])
    assert "FAILED" in tail and "tag_transactions: SimulatedFailure: simulated failure" in tail
    assert "logs TransactionEnrichmentFlow/" in tail and "/tag_transactions" in tail
    assert "Internal error" not in output
    assert output.count("Traceback") == 0
    assert output.count("tag_transactions failed: SimulatedFailure") == 3  # once per attempt, not more


@pytest.mark.flow
def test_a_permanent_error_is_said_once_without_a_traceback(tmp_path):
    bad = write_csv(tmp_path / "bad.csv", "id,montant,wording\n1,2.00,x\n")
    done = launch(tmp_path, "run", "--transactions", str(bad), "--database", str(tmp_path / "database.db"))
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Traceback" not in output and "Internal error" not in output
    assert output.count("ingest failed: MissingColumnError") == 1
    assert "ingest: MissingColumnError" in "\n".join(done.stdout.strip().splitlines()[-3:])


# --------------------------------------------------------------------------- Ctrl-C and SIGTERM
def _ingest_started(database: Path) -> bool:
    from enrich.errors import EnrichError
    from enrich.store.adbc import DriverError

    try:
        return bool(open_store(database, read_only=True).rows(
            "SELECT COUNT(*) FROM step_runs WHERE step = 'ingest'")[0][0])
    except (EnrichError, DriverError):  # not created yet, or its schema not yet
        return False


def _interrupted(tmp_path: Path, sig: signal.Signals, sms_log: Path) -> tuple[int, str, Path]:
    from enrich.generate import write_csv as generate_csv

    source = tmp_path / "big.csv"
    generate_csv(source, rows=300_000, seed=5)
    database = tmp_path / "database.db"
    environ = {**os.environ, **TWILIO_ENV, "ENRICH_TEST_TWILIO_LOG": str(sms_log),
               "PYTHONPATH": os.pathsep.join([str(INJECT), str(ROOT)])}
    run = subprocess.Popen([sys.executable, str(ALGORITHM), "run", "--transactions", str(source), "--database",
                            str(database)], cwd=tmp_path, env=environ, start_new_session=True,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait for ingest to be under way
        if _ingest_started(database):
            break
        time.sleep(0.1)
    time.sleep(0.5)
    if sig == signal.SIGINT:
        os.killpg(run.pid, sig)  # a terminal's Ctrl-C reaches the whole process group
    else:
        os.kill(run.pid, sig)  # a scheduler stops the launcher
    output, _ = run.communicate(timeout=120)
    return run.returncode, output, database


@pytest.mark.flow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_stopped_run_is_marked_interrupted_its_lock_freed_and_says_what_next(tmp_path, sig):
    sms_log = tmp_path / "sms.jsonl"
    code, output, database = _interrupted(tmp_path, sig, sms_log)
    assert code == 128 + sig.value, output[-3000:]
    store = open_store(database, read_only=True)
    (run,) = store.list_runs(5)
    assert run.status == "interrupted"
    assert store.lock_holder() is None
    count = store.table_counts()["transactions"]
    assert count == 0 or count == run.rows_loaded  # the load landed whole or not at all
    assert store.rows("PRAGMA integrity_check") == [("ok",)]
    last = output.strip().splitlines()[-1]
    assert f"stopped by {sig.name}" in last and "Run the same command again" in last
    sms = [json.loads(line) for line in sms_log.read_text().splitlines()] if sms_log.exists() else []
    assert len(sms) == (0 if sig == signal.SIGINT else 1)  # no SMS for an operator's own Ctrl-C


# --------------------------------------------------------------------------- resume
@pytest.mark.flow
def test_resume_does_not_inherit_the_simulated_failure_and_records_its_own_run(tmp_path):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    database = tmp_path / "database.db"
    failed = launch(tmp_path, "run", "--transactions", str(csv), "--database", str(database),
                    "--simulate-failure", "tag_transactions")
    assert failed.returncode != 0
    resumed = launch(tmp_path, "resume", "tag_transactions", env={"USERNAME": "resumer", "USER": "resumer"})
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    store = open_store(database, read_only=True)
    runs = store.list_runs(5)
    assert [r.status for r in runs] == ["succeeded", "failed"]
    latest = runs[0]
    assert latest.user == "resumer" and latest.input_path == str(csv)
    assert latest.rows_read == 7 and latest.tagged == 4
    checks = store.check_results(latest.run_id)
    assert len(checks) == 10 and all(c.passed for c in checks if c.severity == "critical")
    assert store.table_counts()["tags"] == 4
    assert "SUCCEEDED" in resumed.stdout.strip().splitlines()[-5]


@pytest.mark.flow
def test_resume_simulates_again_only_when_asked(tmp_path):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    launch(tmp_path, "run", "--transactions", str(csv), "--database", str(tmp_path / "database.db"),
           "--simulate-failure", "tag_transactions")
    again = launch(tmp_path, "resume", "tag_transactions", "--simulate-failure", "tag_transactions")
    assert again.returncode != 0 and "SimulatedFailure" in again.stdout + again.stderr


def test_card_view_without_a_browser_writes_the_card_to_a_file(tmp_path, monkeypatch):
    import algorithm

    monkeypatch.chdir(tmp_path)
    argv, target = algorithm.headless_card_view(["card", "view", "1234/end", "--type", "default"], has_browser=False)
    assert argv == ["card", "get", "1234/end", str(tmp_path / "card-1234-end.html"), "--type", "default"]
    assert target == tmp_path / "card-1234-end.html"
    assert algorithm.headless_card_view(["card", "view", "end"], has_browser=True) == (["card", "view", "end"], None)
    assert algorithm.headless_card_view(["card", "get", "end", "x.html"], has_browser=False)[1] is None


# --------------------------------------------------------------------------- foreign files
FRENCH_EXPORT = ("id;amount;wording\r\n1;-12,50;CB TAXI ÉPINAL\r\n2;1500,00;\"VIR; LOYER TOTO\"\r\n"
                 "3;0,01;Intérêts\r\n").encode("cp1252")


@pytest.mark.flow
def test_a_french_bank_export_loads_exactly_with_its_options_and_is_hinted_without(tmp_path):
    export = tmp_path / "releve.csv"
    export.write_bytes(FRENCH_EXPORT)
    database = tmp_path / "database.db"
    plain = launch(tmp_path, "run", "--transactions", str(export), "--database", str(database))
    assert plain.returncode != 0
    said = plain.stdout + plain.stderr
    hinted = [line for line in said.splitlines() if "pass --delimiter ';' --decimal-comma" in line]
    assert hinted and "/ingest/" in hinted[0], said[-3000:]
    assert len(hinted) <= 3  # once by the failing step, once in end's report, once in the closing summary
    assert "rows: nothing loaded" in plain.stdout and "? read" not in plain.stdout

    done = launch(tmp_path, "run", "--transactions", str(export), "--database", str(database),
                  "--encoding", "cp1252", "--delimiter", ";", "--decimal-comma")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "3 read, 3 loaded" in done.stdout
    store = open_store(database, read_only=True)
    assert sorted(store.rows("SELECT id, amount_cents, wording FROM transactions")) == [
        (1, -1250, "CB TAXI ÉPINAL"), (2, 150000, "VIR; LOYER TOTO"), (3, 1, "Intérêts")]
    assert sorted(store.rows("SELECT transaction_id, tag FROM tags")) == [(1, "TAXI"), (2, "TOTO")]
