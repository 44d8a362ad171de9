"""Crash safety: ``kill -9`` at random points of a 500,000-row run, several times.

After each kill the database passes ``integrity_check`` and each data table is
either as it was before the run or as the run leaves it (never half a load or half
a publish); a plain re-run then converges to exactly the result of an
uninterrupted run.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from enrich.generate import write_csv as generate_csv
from enrich.store import open_store
from tests.flow_support import FLOW_FILE, INJECT, ROOT

pytestmark = [pytest.mark.flow, pytest.mark.slow]

ROWS = 500_000
KILLS = 3
DATA = {"transactions": "SELECT id, amount_cents, wording FROM transactions ORDER BY id",
        "tags": "SELECT transaction_id, tag FROM tags ORDER BY transaction_id",
        "annotations": "SELECT transaction_id, annotation FROM annotations ORDER BY transaction_id"}


def start_run(workdir: Path, source: Path, database: Path) -> subprocess.Popen:
    """The flow as a real process group (the Metaflow runtime and its task processes)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(INJECT), str(ROOT)]), "USER": "tester"}
    return subprocess.Popen([sys.executable, str(FLOW_FILE), "run", "--transactions", str(source),
                             "--database", str(database)], cwd=workdir, env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def finish_run(workdir: Path, source: Path, database: Path) -> float:
    started = time.perf_counter()
    assert start_run(workdir, source, database).wait(timeout=600) == 0
    return time.perf_counter() - started


def snapshot(database: Path) -> dict[str, list[tuple]]:
    store = open_store(database, read_only=True)
    return {table: store.rows(sql) for table, sql in DATA.items()}


def counts(database: Path) -> dict[str, int]:
    store = open_store(database, read_only=True)
    assert store.rows("PRAGMA integrity_check") == [("ok",)]
    return {table: store.rows(f"SELECT COUNT(*) FROM {table}")[0][0] for table in DATA}


def test_kill_minus_nine_anywhere_then_a_plain_rerun_converges(tmp_path):
    source = tmp_path / "500k.csv"
    generate_csv(source, rows=ROWS, seed=99)
    reference_db = tmp_path / "reference.db"
    duration = finish_run(tmp_path, source, reference_db)
    expected = snapshot(reference_db)
    after = {table: len(rows) for table, rows in expected.items()}

    database = tmp_path / "crashed.db"
    draw = random.Random(20261122)
    for kill in range(KILLS):
        before = counts(database) if database.exists() else {table: 0 for table in DATA}
        run = start_run(tmp_path, source, database)
        time.sleep(draw.uniform(0.15, 0.9) * duration)
        os.killpg(run.pid, signal.SIGKILL)
        run.wait(timeout=60)
        time.sleep(0.5)  # steps die with their runtime (PR_SET_PDEATHSIG)
        if database.exists():
            now = counts(database)  # integrity_check passes
            for table in DATA:
                assert now[table] in (before[table], after[table]), (kill, table, before, now, after)

    finish_run(tmp_path, source, database)  # the stale run lock is taken over, nothing to repair by hand
    assert snapshot(database) == expected
    statuses = [status for (status,) in open_store(database).rows("SELECT status FROM runs ORDER BY started_at")]
    assert statuses[-1] == "succeeded"
    assert "running" not in statuses  # killed runs are closed as failed when their lock is taken over
