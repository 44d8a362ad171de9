"""The Twilio auth token never leaves the process: scan everything a failing run produced.

A run fails on purpose (``--simulate-failure tag_transactions``) with the token in
``TWILIO_AUTH_TOKEN``, once with Twilio accepting the SMS and once answering 401 (bad
credentials: the error path, where a careless client logs its request). Then every
byte the run left behind is searched for the token, raw and as the HTTP Basic value
Twilio receives: the run's stdout and stderr, every file of the Metaflow datastore
(artifacts are gzip-compressed pickles: decompressed first; task logs), the working
directory (the report card's HTML under ``.metaflow/mf.cards``, ``metrics.prom``,
scratch files, the database file and its WAL, raw, so that deleted pages count too), a dump of every table of
the database, and the SMS requests themselves.

Positive controls make sure each place is really read: the account SID (not a
secret) must be found in the SMS requests, the database path in the artifacts, the
SMS text in the database dump, and a card and metrics file must exist.
"""
from __future__ import annotations

import base64
import gzip
import sqlite3
import zlib
from pathlib import Path

import pytest

from tests.flow_support import SMALL, TOKEN, TWILIO_ENV, run_flow, write_csv

BASIC = base64.b64encode(f"{TWILIO_ENV['TWILIO_ACCOUNT_SID']}:{TOKEN}".encode()).decode()
NEEDLES = {"token": TOKEN.encode(), "basic auth value": BASIC.encode(),
           "token in base64": base64.b64encode(TOKEN.encode())}


def readable_forms(path: Path) -> list[bytes]:
    """The file's bytes, plus their decompressed form when they are gzip or zlib data."""
    data = path.read_bytes()
    forms = [data]
    if data[:2] == b"\x1f\x8b":
        try:
            forms.append(gzip.decompress(data))
        except (OSError, EOFError, zlib.error):
            pass
    return forms


def scan_tree(root: Path) -> tuple[dict[str, list[str]], dict[str, int]]:
    """Where each needle occurs under ``root``, and how many files of each kind were read."""
    found: dict[str, list[str]] = {name: [] for name in NEEDLES}
    seen = {"files": 0, "decompressed": 0, "html": 0}
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        forms = readable_forms(path)
        seen["files"] += 1
        seen["decompressed"] += len(forms) - 1
        seen["html"] += path.suffix == ".html" or any(b"<html" in form[:2000].lower() for form in forms)
        for name, needle in NEEDLES.items():
            if any(needle in form for form in forms):
                found[name].append(str(path))
    return found, seen


def contains(root: Path, text: str) -> bool:
    return any(text.encode() in form for path in root.rglob("*") if path.is_file()
               for form in readable_forms(path))


def database_dump(database: Path) -> str:
    conn = sqlite3.connect(database)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


def test_the_scanner_finds_a_planted_token(tmp_path):
    """Negative control: a token hidden in a gzip-pickled artifact, a log line or a database is found."""
    import pickle

    (tmp_path / "artifact").write_bytes(gzip.compress(pickle.dumps({"settings": ("x", TOKEN)})))
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "0.task_stderr.log").write_text(f"Authorization: Basic {BASIC}\n")
    conn = sqlite3.connect(tmp_path / "db.db")
    conn.execute("CREATE TABLE t (x)")
    conn.execute("INSERT INTO t VALUES (?)", (base64.b64encode(TOKEN.encode()).decode(),))
    conn.commit()
    conn.close()
    found, seen = scan_tree(tmp_path)
    assert found["token"] == [str(tmp_path / "artifact")]
    assert found["basic auth value"] == [str(tmp_path / "logs" / "0.task_stderr.log")]
    assert found["token in base64"] == [str(tmp_path / "db.db")]
    assert seen["decompressed"] == 1
    assert "'" + base64.b64encode(TOKEN.encode()).decode() + "'" in database_dump(tmp_path / "db.db")


@pytest.mark.flow
@pytest.mark.parametrize("twilio_status", [201, 401])
def test_a_failing_run_leaves_the_token_nowhere(tmp_path, monkeypatch, twilio_status):
    datastore = tmp_path / "datastore"
    datastore.mkdir()
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(datastore))  # this run's files only
    work = tmp_path / "work"
    work.mkdir()
    result = run_flow(work, write_csv(work / "t.csv", SMALL), simulate_failure="tag_transactions",
                      twilio_status=twilio_status)
    assert result.returncode != 0
    assert len(result.sms) == 1  # the alert was attempted with the real client

    for name, needle in NEEDLES.items():
        assert needle.decode() not in result.stdout, f"{name} in stdout"
        assert needle.decode() not in result.stderr, f"{name} in stderr"
    for root in (datastore, work):
        found, _ = scan_tree(root)
        assert found == {name: [] for name in NEEDLES}, found
    dump = database_dump(result.database)
    assert all(needle.decode() not in dump for needle in NEEDLES.values())
    for request in result.sms:
        assert all(needle.decode() not in str(request) for needle in NEEDLES.values())

    # positive controls: each place scanned is really read
    _, in_datastore = scan_tree(datastore)
    _, in_work = scan_tree(work)
    assert in_datastore["decompressed"] > 10, in_datastore  # artifacts and logs, decompressed
    assert in_work["html"] >= 1, in_work  # the report card (Metaflow keeps cards under ./.metaflow)
    assert contains(datastore, str(result.database))  # the run's settings, inside gzip-pickled artifacts
    assert result.sms[0]["auth_user"] == TWILIO_ENV["TWILIO_ACCOUNT_SID"]
    assert contains(work, TWILIO_ENV["TWILIO_ACCOUNT_SID"])  # the SMS requests log
    assert (result.database.parent / "metrics.prom").exists()
    assert "tag_transactions" in dump and "SimulatedFailure" in dump  # the alert's text
    expected = "sent" if twilio_status == 201 else "failed"
    assert result.query("SELECT status FROM alerts") == [(expected,)]
    if twilio_status == 401:
        assert "authentication failed" in result.query("SELECT error FROM alerts")[0][0]


@pytest.mark.flow
def test_a_database_password_in_the_url_appears_nowhere(tmp_path, postgres_url):
    """`--database postgresql://user:PASSWORD@...` through the launcher, on a failing run: the password
    is handed to the tasks as PGPASSWORD, and shows in no output, log, artifact, card, metrics file,
    the SMS or the database."""
    import os
    import subprocess
    import sys
    from urllib.parse import unquote, urlsplit

    from enrich.store import open_store
    from tests.flow_support import INJECT, ROOT

    password = unquote(urlsplit(postgres_url).password or "")
    assert len(password) >= 8
    datastore, work = tmp_path / "datastore", tmp_path / "work"
    datastore.mkdir()
    work.mkdir()
    sms_log = work / "sms.jsonl"
    env = {**os.environ, **TWILIO_ENV, "METAFLOW_DATASTORE_SYSROOT_LOCAL": str(datastore),
           "PYTHONPATH": os.pathsep.join([str(INJECT), str(ROOT)]), "ENRICH_TEST_TWILIO_LOG": str(sms_log)}
    env.pop("PGPASSWORD", None)
    done = subprocess.run([sys.executable, str(ROOT / "algorithm.py"), "run", "--transactions",
                           str(write_csv(work / "t.csv", SMALL)), "--database", postgres_url,
                           "--metrics", str(work / "metrics.prom"), "--simulate-failure", "tag_transactions"],
                          cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "SimulatedFailure" in done.stdout
    assert password not in done.stdout + done.stderr
    for root in (datastore, work):
        assert not contains(root, password), root
    assert contains(work, "enrich_last_run_success")  # positive control: the metrics file was read
    store = open_store(postgres_url)
    for table in ("runs", "step_runs", "alerts", "check_results", "rejected_rows", "enrichment_state"):
        assert password not in str(store.rows(f"SELECT * FROM {table}")), table
    assert password not in sms_log.read_text()
    assert store.get_run(store.latest_run().run_id).status == "failed"
