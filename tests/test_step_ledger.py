"""The step ledger (:mod:`enrich.step_ledger`): a succeeded step never waits behind a parallel
branch's write; what it could not write is handed on, and written by the next step."""
from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from contextlib import contextmanager

from enrich.step_ledger import StepLedger
from enrich.store import open_store

RUN = "TransactionEnrichmentFlow/1"

_WRITER = textwrap.dedent("""
    import sqlite3, sys, time
    conn = sqlite3.connect(sys.argv[1], isolation_level=None)
    conn.execute("BEGIN IMMEDIATE")  # a parallel branch's long write transaction
    open(sys.argv[2], "w").write("locked")
    time.sleep(60)
""")


@contextmanager
def write_lock_held(path, tmp_path):
    """Another process holds the database's write lock (as annotating 10M rows does for seconds)."""
    flag = tmp_path / "locked"
    writer = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(flag)])
    try:
        while not flag.exists():
            time.sleep(0.01)
        yield
    finally:
        writer.kill()
        writer.wait()


def steps(store):
    return {(a.step, a.status) for a in store.step_attempts(RUN)}


def test_a_succeeded_step_hands_on_what_it_cannot_write_at_once(db_path, tmp_path):
    store = open_store(db_path)
    store.prepare()
    store.record_run(RUN, status="running")
    plan = StepLedger(store, RUN, "plan_tagging", "3", 0)
    with write_lock_held(db_path, tmp_path):
        started = time.monotonic()
        handed_on = plan.succeeded({"rows_read": 5}, wait=False)
        assert time.monotonic() - started < 5  # not the busy timeout (minutes)
    assert [sorted(entry) for entry in handed_on] == [["attempt"], ["figures", "run_id"]]
    assert steps(store) == set() and store.get_run(RUN).rows_read is None  # not written yet

    tag = StepLedger(store, RUN, "tag_transactions", "4", 0, backlog=handed_on)
    assert tag.succeeded(None, wait=False) == []  # the lock is free: the backlog, then its own row
    assert steps(store) == {("plan_tagging", "succeeded"), ("tag_transactions", "succeeded")}
    assert store.get_run(RUN).rows_read == 5
    plan_row = next(a for a in store.step_attempts(RUN) if a.step == "plan_tagging")
    assert plan_row.finished_at <= tag.started_at  # the row keeps the time it was taken at


def test_steps_that_read_the_ledger_catch_up_first_and_failures_are_written_at_once(db_path):
    store = open_store(db_path)
    store.prepare()
    plan = StepLedger(store, RUN, "plan_tagging", "3", 0)
    backlog = [plan._entry("succeeded")]
    join = StepLedger(store, RUN, "join", "8", 0, backlog=backlog)
    join.catch_up()
    assert steps(store) == {("plan_tagging", "succeeded")} and join.backlog == []
    failing = StepLedger(store, RUN, "publish_tags", "7", 0, backlog=[StepLedger(store, RUN, "tag_transactions", "6", 0)
                                                                      ._entry("succeeded")])
    failing.finished("failed", ValueError("bad"))
    assert ("tag_transactions", "succeeded") in steps(store) and ("publish_tags", "failed") in steps(store)


def test_a_join_writes_each_inherited_entry_once():
    """The branches of a join (the tagging shards) hand on what they inherited from the same step."""
    shared = {"attempt": {"step": "plan_tagging"}}
    backlog = [shared, {"attempt": {"step": "tag_transactions"}}, dict(shared)]
    assert StepLedger(None, RUN, "publish_tags", "7", 0, backlog).backlog == backlog[:2]
