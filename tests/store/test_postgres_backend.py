"""The PostgreSQL backend through the Store interface, on a real (throwaway) server, compared with the
SQLite backend on the same inputs where the results must be the same."""
from __future__ import annotations

import os
import socket
import threading
import time
import urllib.parse
from types import SimpleNamespace

import pandas as pd
import pyarrow as pa
import pytest

from enrich import runlock, stages
from enrich.ingest import read_chunks
from enrich.settings import RunSettings
from enrich.store import (TAGS, AccessDenied, CheckRecord, ConcurrentModification, ConnectionLost,
                          ConstraintViolation, DatabaseBusy, DatabaseReadOnly, LockClaim, RestoreRefused, SchemaTooNew, StepAttempt, StorageError,
                          open_store)
from enrich.store import AlertRecord
from enrich.store.postgres import PostgresStore
from enrich.store.postgres.connection import DriverError
from enrich.store.queries import QUERIES
from enrich.tagging import load_tag_list


def chunk(rows=(), rejected=()):
    valid = pd.DataFrame(list(rows), columns=["line", "id", "amount_cents", "wording"])
    bad = pd.DataFrame(list(rejected), columns=["line", "raw", "reason"])
    return SimpleNamespace(valid=valid.astype({"line": "int64", "id": "int64", "amount_cents": "int64"}),
                           rejected=bad.astype({"line": "int64"}))


def stored(store) -> list[tuple]:
    table = store.enriched_transactions()
    return list(zip(*(table.column(name).to_pylist() for name in table.column_names)))


def both(sqlite_store, pg_store, call):
    """``call(store)`` on each backend: the two results."""
    return call(sqlite_store), call(pg_store)


def same(sqlite_store, pg_store, call):
    lite, pg = both(sqlite_store, pg_store, call)
    assert lite == pg
    return pg


# ---------------------------------------------------------------------- schema
def test_prepare_creates_version_5_and_is_idempotent(postgres_url):
    store = open_store(postgres_url)
    assert isinstance(store, PostgresStore) and store.backend == "postgresql"
    assert not store.exists()
    store.prepare()
    store.prepare()
    open_store(postgres_url).prepare()
    assert store.exists() and store.schema_version() == 5
    assert store.rows("SELECT COUNT(*) FROM schema_version") == [(1,)]
    tables = {name for (name,) in store.rows("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"transactions", "tags", "annotations", "run_keys", "rejected_rows", "pending_enrichment",
            "enrichment_state", "runs", "step_runs", "alerts", "check_results", "anomalies", "run_distributions",
            "ambiguous_wordings", "run_lock", "staged_tags", "staged_ambiguous", "transactions_search"} <= tables
    views = {name for (name,) in store.rows("SELECT viewname FROM pg_views WHERE schemaname = 'public'")}
    assert {"enriched_transactions", "tag_summary", "annotation_summary", "run_summary"} <= views
    indexes = {name for (name,) in store.rows("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'")}
    assert {"transactions_last_changed_run", "tags_tag", "annotations_annotation", "runs_status", "runs_started",
            "step_runs_step", "alerts_run", "check_results_failed", "ambiguous_wordings_frequency",
            "transactions_search_document"} <= indexes


def test_the_runs_table_is_generated_from_the_run_record(pg_store):
    from enrich.figures import RUN_COLUMNS

    columns = [name for (name,) in pg_store.rows(
        "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs' ORDER BY ordinal_position")]
    assert tuple(columns) == RUN_COLUMNS


def test_concurrent_prepare_migrates_once(postgres_url):
    errors, barrier = [], threading.Barrier(4)

    def prepare():
        try:
            barrier.wait()
            open_store(postgres_url).prepare()
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=prepare) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert open_store(postgres_url).rows("SELECT version FROM schema_version") == [(5,)]


def test_a_newer_schema_is_refused(pg_store, postgres_url):
    pg_store.rows("INSERT INTO schema_version (version, applied_at) VALUES (6, 'later') RETURNING version")
    with pytest.raises(SchemaTooNew, match="newer than this program"):
        open_store(postgres_url).prepare()


def test_a_read_only_store_never_writes(pg_store, postgres_url):
    reader = open_store(postgres_url, read_only=True)
    assert reader.list_runs() == []
    with pytest.raises(DatabaseReadOnly, match="cannot be written"):
        reader.record_run("F/1", user="x")


# ---------------------------------------------------------------------- loading, compared with SQLite
BATCH = [
    chunk([(2, 1, 1000, "CARTE TATA"), (3, 2, -250, "VIR TOTO"), (4, 3, 0, "zero"), (5, 4, 99, "taxi TAXI")],
          [(6, "x,y", "wrong field count: 2 fields, expected 3")]),
    chunk([(7, 5, 5, "Crème brûlée TUTU"), (8, 2, -250, "VIR TOTO"),  # an identical duplicate of line 3
           (9, 6, 70, "a"), (10, 6, 71, "b"), (11, 7, 1, 'quote " inside')]),  # id 6 conflicts
]


def test_load_batch_matches_sqlite(sqlite_store, pg_store):
    stats = same(sqlite_store, pg_store, lambda s: s.load_batch("F/1", iter(BATCH)))
    assert (stats.rows_read, stats.rows_loaded, stats.rows_new, stats.rows_rejected, stats.rows_duplicate) == \
        (10, 6, 6, 3, 1)
    assert stats.cents_in_file == stats.cents_stored
    rejected = same(sqlite_store, pg_store, lambda s: s.rejected_rows("F/1"))
    assert [r["line"] for r in rejected] == [6, 9, 10]
    assert rejected[1]["reason"].startswith("conflicting duplicate id: id 6 appears with different content on "
                                            "lines 9, 10")
    same(sqlite_store, pg_store, stored)
    same(sqlite_store, pg_store, lambda s: [s.pending_runs(kind) for kind in ("tags", "annotations", "search")])
    # the same batch again: unchanged; a changed one: an update and a new row
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/2", iter(BATCH)))
    again = same(sqlite_store, pg_store, lambda s: s.load_batch("F/3", iter([chunk(
        [(2, 1, 1001, "CARTE TATA"), (3, 8, 3, "new"), (4, 8, 3, "new"), (5, 2, -250, "VIR TOTO")])])))
    assert (again.rows_new, again.rows_updated, again.rows_unchanged, again.rows_duplicate) == (1, 1, 1, 1)
    same(sqlite_store, pg_store, lambda s: s.rows("SELECT id, amount_cents, wording FROM transactions ORDER BY id"))
    assert pg_store.rows("SELECT id FROM transactions WHERE last_changed_run = "
                         "(SELECT run_key FROM run_keys WHERE run_id = 'F/3') ORDER BY id") == [(1,), (8,)]
    same(sqlite_store, pg_store, lambda s: s.pending_runs("tags"))


def test_unsorted_ids_and_late_repeats_pair_alike(sqlite_store, pg_store, monkeypatch):
    from enrich.store.idorder import IdOrder

    rows = [(line, line % 97 + 1, line % 5, f"w{line % 97}") for line in range(2, 600)]
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/1", iter([chunk(rows[:300]), chunk(rows[300:])])))
    monkeypatch.setattr(IdOrder, "LATE_IDS_KEPT", 3)  # too many late ids: the batch is grouped instead
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/2", iter([chunk(rows[::-1])])))
    same(sqlite_store, pg_store, lambda s: s.rejected_rows("F/1") + s.rejected_rows("F/2"))
    same(sqlite_store, pg_store, stored)


def test_a_failing_read_leaves_the_database_untouched(pg_store):
    def broken():
        yield BATCH[0]
        raise OSError("disk gone")

    with pytest.raises(OSError):
        pg_store.load_batch("F/1", broken())
    assert pg_store.table_counts() == {"transactions": 0, "tags": 0, "annotations": 0, "rejected_rows": 0}
    assert pg_store.rows("SELECT COUNT(*) FROM run_keys") == [(0,)]


# ---------------------------------------------------------------------- the whole pipeline, compared
def run_pipeline(database: str, csv: str, run_id: str, shards: int = 2) -> dict:
    settings = RunSettings(run_id=run_id, database=open_store(database).location, transactions=csv,
                           tag_list=load_tag_list(None, "word"), shards=shards)
    store = stages.store_of(settings)
    store.record_run(run_id, **stages.begin_run(settings, "tester"), started_at=f"2025-01-0{run_id[-1]}T00:00:00")
    load, figures = stages.ingest(settings, read_chunks(csv))
    tagged, published = stages.publish_tags(settings, [stages.tag_shard(settings, s) for s in range(shards)])
    annotated, written = stages.annotate(settings)
    indexed = stages.index_wordings(settings)
    results = stages.check_run(settings, run_id, load, [tagged, annotated], reject_threshold=0.5)
    store.record_run(run_id, **{**figures, **stages.run_figures(load, [tagged, annotated])})
    stages.finish_run(store, run_id, "succeeded")
    return {"load": load, "published": published, "written": written, "indexed": indexed,
            "tag counts": tagged.counts, "annotation counts": annotated.counts,
            "checks": sorted((r.check_name, r.passed, r.observed) for r in results),
            "stored checks": [(c.check_name, c.passed, c.observed, c.expected) for c in store.check_results(run_id)],
            "anomalies": store.anomalies(run_id),
            "ambiguous": store.ambiguous_wordings(run_id), "rejected": store.rejected_rows(run_id),
            "distribution": store.distribution([run_id], "tagging"),
            "run": {k: v for k, v in store.get_run(run_id).as_dict().items() if k != "finished_at"}}


@pytest.fixture(scope="module")
def generated_csv(tmp_path_factory):
    from enrich.generate import write_csv

    folder = tmp_path_factory.mktemp("csv")
    first, second = folder / "first.csv", folder / "second.csv"
    write_csv(first, rows=3000, seed=7, malformed=20, duplicates=5)
    write_csv(second, rows=3500, seed=8, malformed=3, duplicates=2)
    return str(first), str(second)


def test_the_pipeline_gives_the_same_results_on_both_backends(sqlite_url, postgres_url, generated_csv):
    for number, csv in enumerate(generated_csv, start=1):
        lite = run_pipeline(sqlite_url, csv, f"Flow/{number}")
        pg = run_pipeline(postgres_url, csv, f"Flow/{number}")
        for key in lite:
            assert lite[key] == pg[key], key
    sqlite_store, pg_store = open_store(sqlite_url), open_store(postgres_url)
    same(sqlite_store, pg_store, stored)
    same(sqlite_store, pg_store, lambda s: s.value_counts("tags"))
    same(sqlite_store, pg_store, lambda s: s.value_counts("annotations"))
    same(sqlite_store, pg_store, lambda s: s.table_counts())
    same(sqlite_store, pg_store, lambda s: s.orphan_counts())
    same(sqlite_store, pg_store, lambda s: s.annotation_discrepancies())
    same(sqlite_store, pg_store, lambda s: s.id_range())
    same(sqlite_store, pg_store, lambda s: [t.to_pylist() for t in s.iter_stored_tags((10, 2000), chunk_rows=700)])
    same(sqlite_store, pg_store, lambda s: [(r.run_id, r.status) for r in s.list_runs()])
    same(sqlite_store, pg_store, lambda s: s.pending_runs(TAGS))
    same(sqlite_store, pg_store, lambda s: s.search_problem())
    assert pg_store.search_problem() is None
    # a word of every stored row is found, accents or not, on both
    for query in ("carte", "etienne", "virement loyer", '"la poste"'):
        lite, pg = both(sqlite_store, pg_store, lambda s, q=query: {r["id"] for r in s.search_wordings(q, 10_000)})
        assert pg and lite == pg, query
    for name, query in QUERIES.items():
        lite, pg = both(sqlite_store, pg_store, lambda s, n=name: s.canned_query(n, {}))
        assert [list(r) for r in lite[:1]] == [list(r) for r in pg[:1]], name  # same columns
        assert len(lite) == len(pg), name
    for name in ("run_rejected_rows", "most_ambiguous_wordings"):
        lite, pg = both(sqlite_store, pg_store, lambda s, n=name: s.canned_query(n, {"run_id": "1"}))
        assert lite == pg, name
        assert lite or name == "most_ambiguous_wordings"
    lite, pg = both(sqlite_store, pg_store,
                    lambda s: s.canned_query("runs_between", {"start": "2025-01-02", "end": ""}))
    assert [r["run_id"] for r in lite] == [r["run_id"] for r in pg] == ["Flow/2"]


# ---------------------------------------------------------------------- enrichment
def stage(store, run_id, shard, tags, ambiguous=()):
    batch = pa.RecordBatch.from_pydict({"transaction_id": pa.array([t[0] for t in tags], pa.int64()),
                                        "tag": pa.array([t[1] for t in tags], pa.string())})
    table = pa.table({"wording": pa.array([a[0] for a in ambiguous], pa.string()),
                      "tags_found": pa.array([a[1] for a in ambiguous], pa.int64()),
                      "transactions": pa.array([a[2] for a in ambiguous], pa.int64())})
    return store.stage_tags(run_id, shard, iter([batch]), table)


def test_staging_publishing_and_stale_tags_match_sqlite(sqlite_store, pg_store):
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/1", iter(BATCH)))
    same(sqlite_store, pg_store, lambda s: stage(s, "F/1", 0, [(1, "TATA"), (2, "TOTO")], [("x y", 2, 3)]))
    same(sqlite_store, pg_store, lambda s: stage(s, "F/1", 1, [(4, "TAXI"), (5, "TUTU")]))
    same(sqlite_store, pg_store, lambda s: stage(s, "F/1", 1, [(4, "TAXI")]))  # a shard re-staged: replaced
    fingerprint = same(sqlite_store, pg_store, lambda s: s.table_fingerprint("tags")[1])
    assert fingerprint is None
    published = same(sqlite_store, pg_store, lambda s: s.publish_tags(
        "F/1", ["F/1"], {"tags_fingerprint": "abc"}, s.table_fingerprint("tags")[0]))
    assert (published.written, published.removed) == (3, 0)
    same(sqlite_store, pg_store, lambda s: (s.get_state("tags_fingerprint"), s.pending_runs("tags")))
    same(sqlite_store, pg_store, lambda s: s.ambiguous_wordings("F/1"))
    same(sqlite_store, pg_store, lambda s: s.rows("SELECT COUNT(*) FROM staged_tags"))
    # a later run changes row 1: only its tag is re-derived; row 1 loses its tag (stale)
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/2", iter([chunk([(2, 1, 1000, "CARTE plain")])])))
    same(sqlite_store, pg_store, lambda s: stage(s, "F/2", 0, []))
    again = same(sqlite_store, pg_store, lambda s: s.publish_tags("F/2", ["F/2"], {}, s.table_fingerprint("tags")[0]))
    assert (again.written, again.removed) == (0, 1)
    same(sqlite_store, pg_store, stored)
    # whole table (covered None): replaced whole
    same(sqlite_store, pg_store, lambda s: stage(s, "F/3", 0, [(3, "TATA")]))
    same(sqlite_store, pg_store, lambda s: s.publish_tags("F/3", None, {}, None))
    same(sqlite_store, pg_store, stored)
    same(sqlite_store, pg_store, lambda s: s.table_fingerprint("tags"))


def test_publish_refuses_a_table_changed_since_its_rows_were_derived(pg_store):
    pg_store.load_batch("F/1", iter(BATCH))
    fingerprint = pg_store.table_fingerprint("tags")[0]
    stage(pg_store, "F/1", 0, [(1, "TATA")])
    pg_store.rows("INSERT INTO tags (transaction_id, tag, run) VALUES (2, 'X', 1) RETURNING 1")
    with pytest.raises(ConcurrentModification):
        pg_store.publish_tags("F/1", ["F/1"], {}, fingerprint)
    assert pg_store.rows("SELECT transaction_id, tag FROM tags") == [(2, "X")]
    pg_store.discard_staged("F/1")
    assert pg_store.rows("SELECT COUNT(*) FROM staged_tags") == [(0,)]


def test_annotations_in_place_match_sqlite(sqlite_store, pg_store):
    rows = [(line, line, amount, "w") for line, amount in
            enumerate([0, 1, -1, 5000, -5000, 10**9, -(10**9), 2500, 99999, 3], start=2)]
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/1", iter([chunk(rows)])))
    result = same(sqlite_store, pg_store, lambda s: s.annotate_in_place("F/1", ["F/1"], {"rules": "1"},
                                                                         s.table_fingerprint("annotations")[0]))
    assert result[1][None] == 1
    same(sqlite_store, pg_store, stored)
    same(sqlite_store, pg_store, lambda s: s.annotation_discrepancies())
    same(sqlite_store, pg_store, lambda s: s.annotate_in_place("F/1", None, {}, None))
    before = pg_store.table_fingerprint("annotations")[0]
    pg_store.rows("UPDATE annotations SET annotation = 'WRONG' WHERE transaction_id = 3 RETURNING 1")
    assert pg_store.annotation_discrepancies()["wrong"] == 1
    with pytest.raises(ConcurrentModification):
        pg_store.annotate_in_place("F/1", None, {}, before)


def test_reads_by_runs_ids_and_chunks(sqlite_store, pg_store):
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/1", iter(BATCH)))
    same(sqlite_store, pg_store, lambda s: s.load_batch("F/2", iter([chunk([(2, 10, 5, "ten"), (3, 11, 6, "x")])])))
    same(sqlite_store, pg_store, lambda s: [t.to_pylist() for t in s.iter_transactions(
        ["id", "wording"], ["F/1"], chunk_rows=2)])
    same(sqlite_store, pg_store, lambda s: [t.to_pylist() for t in s.iter_transactions(
        ["id", "amount_cents", "wording"], None, ids=(3, 10))])
    same(sqlite_store, pg_store, lambda s: [t.schema for t in s.iter_transactions(["id"], None)])
    same(sqlite_store, pg_store, lambda s: list(s.iter_transactions(["id"], [])))
    same(sqlite_store, pg_store, lambda s: s.transaction_amounts(["F/2"]).sort_by("id").to_pylist())
    same(sqlite_store, pg_store, lambda s: s.transaction_amounts([]).schema)
    same(sqlite_store, pg_store, lambda s: (s.scope_id_range(["F/2"]), s.scope_id_range(None), s.scope_id_range([])))
    same(sqlite_store, pg_store, lambda s: s.enriched_transactions().column_names)


# ---------------------------------------------------------------------- ledger
def test_the_ledger_matches_sqlite(sqlite_store, pg_store):
    def script(s):
        s.record_run("F/1", user="ann", started_at="2025-01-01T00:00:00.000+00:00", rows_read=10)
        s.record_run("F/2", user="bob", started_at="2025-01-02T00:00:00.000+00:00", input_bytes=5 * 2**40)
        s.record_run("F/1", status="succeeded", finished_at="2025-01-01T00:01:00.000+00:00")
        s.record_run("F/3", started_at="2999-01-03T00:00:00.000+00:00")
        s.record_step_attempt(StepAttempt("F/2", "start", "1", 0, "running", "2025-01-02T00:00:01"))
        s.record_step_attempt(StepAttempt("F/2", "start", "1", 0, "failed", "2025-01-02T00:00:01",
                                          "2025-01-02T00:00:02", 1.25, "ValueError", "bad"), wait=False)
        s.record_alert(AlertRecord("F/2", "sms", "sent", "+33", "hello", None, "2025-01-02T00:00:03"))
        s.save_check_results("F/1", [CheckRecord("a", "critical", False, "1", "0", "m"),
                                     CheckRecord("b", "info", True, None, None, "ok")],
                             pa.table({"transaction_id": [1], "kind": ["outlier"], "amount_cents": [-5],
                                       "detail": ["far"]}))
        s.save_distribution("F/1", "tagging", {"TATA": 3, "UNTAGGED": 1})
        s.save_distribution("F/2", "tagging", {"TATA": 2})
        return [s.get_run("F/1"), s.latest_run(), s.previous_run("F/2"), s.recent_runs("F/3"), s.list_runs(2),
                s.resolve_run("2"), s.resolve_run(""), s.resolve_run("nope"), s.runs_in_progress(10**7),
                s.close_runs(["F/2", "F/1"], "failed"), s.last_success_finished_at("F/9"),
                s.step_attempts("F/2"), s.alerts_for_run("F/2"), s.check_results("F/1"),
                s.distribution(["F/1", "F/2"], "tagging"), s.anomalies("F/1"), s.rejected_rows("F/1", limit=1)]

    same(sqlite_store, pg_store, script)
    same(sqlite_store, pg_store, lambda s: s.rows('SELECT run_id, status, "user" FROM runs ORDER BY run_id'))
    assert pg_store.get_run("F/2").input_bytes == 5 * 2**40


def test_a_courtesy_write_gives_up_at_once_behind_a_lock(pg_store, postgres_server, postgres_url):
    attempt = StepAttempt("F/1", "start", "1", 0, "running", "2025-01-01T00:00:00")
    pg_store.record_step_attempt(attempt)
    blocker = postgres_server.connect(urllib.parse.urlsplit(postgres_url).path.lstrip("/"))
    cursor = blocker.cursor()
    try:
        cursor.execute("BEGIN")
        cursor.execute("LOCK TABLE step_runs IN ACCESS EXCLUSIVE MODE")
        started = time.monotonic()
        with pytest.raises(DatabaseBusy, match="Run again"):
            pg_store.record_step_attempt(attempt, wait=False)
        assert time.monotonic() - started < 5
        cursor.execute("ROLLBACK")
    finally:
        cursor.close()
        blocker.close()


# ---------------------------------------------------------------------- run lock
def claim(run_id, host=None, pid=None):
    return LockClaim(run_id, "tester", host or socket.gethostname(), pid or os.getpid(), None)


def test_lock_take_renew_release_break(pg_store):
    assert pg_store.lock_holder() is None
    outcome = pg_store.acquire_lock(claim("F/1"), runlock.holder_is_dead, 60)
    assert outcome.acquired and outcome.holder is None
    assert pg_store.acquire_lock(claim("F/1"), runlock.holder_is_dead, 60).acquired  # already ours
    refused = pg_store.acquire_lock(claim("F/2"), runlock.holder_is_dead, 60)
    assert not refused.acquired and refused.holder.run_id == "F/1"
    assert pg_store.renew_lock("F/1", 120) and not pg_store.renew_lock("F/2", 120)
    assert not pg_store.release_lock("F/2")
    assert pg_store.release_lock("F/1") and pg_store.lock_holder() is None
    pg_store.acquire_lock(claim("F/3"), runlock.holder_is_dead, 60)
    assert pg_store.break_lock().run_id == "F/3" and pg_store.lock_holder() is None


def test_two_concurrent_acquires_one_wins(pg_store, postgres_url):
    barrier, outcomes = threading.Barrier(2), {}

    def take(run_id):
        store = open_store(postgres_url)
        barrier.wait()
        outcomes[run_id] = store.acquire_lock(claim(run_id), runlock.holder_is_dead, 60)

    threads = [threading.Thread(target=take, args=(f"F/{n}",)) for n in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(o.acquired for o in outcomes.values()) == [False, True]
    winner = next(run for run, o in outcomes.items() if o.acquired)
    loser = next(o for o in outcomes.values() if not o.acquired)
    assert loser.holder.run_id == winner == pg_store.lock_holder().run_id


def test_an_expired_lease_of_another_host_is_taken_over(pg_store):
    pg_store.record_run("F/1", started_at="2025-01-01T00:00:00")
    pg_store.acquire_lock(claim("F/1", host="elsewhere.example", pid=4242), runlock.holder_is_dead, 60)
    assert not pg_store.acquire_lock(claim("F/2"), runlock.holder_is_dead, 60).acquired  # lease still runs
    pg_store.rows("UPDATE run_lock SET expires_at = '2000-01-01T00:00:00.000+00:00' RETURNING 1")
    outcome = pg_store.acquire_lock(claim("F/2"), runlock.holder_is_dead, 60)
    assert outcome.acquired and outcome.holder.run_id == "F/1" and outcome.closed_runs == ("F/1",)
    assert pg_store.get_run("F/1").status == "failed"
    assert pg_store.lock_holder().run_id == "F/2"


def test_a_second_run_fails_at_once_with_the_usual_message(pg_store, postgres_server):
    from enrich.store import RunLockHeld

    runlock.hold(pg_store, "F/1", "ann", pid=os.getpid())
    started = time.monotonic()
    with pytest.raises(RunLockHeld) as caught:
        runlock.hold(pg_store, "F/2", "bob", pid=os.getpid())
    assert time.monotonic() - started < 5
    message = str(caught.value)
    assert "is in use by run F/1 (user ann" in message and "nothing was written" in message
    assert pg_store.location.display in message and postgres_server.password not in message


def test_restore_blockers_name_the_lock_holder(pg_store):
    pg_store.acquire_lock(claim("F/1"), runlock.holder_is_dead, 60)
    assert any("F/1 holds the run lock" in b for b in pg_store.restore_blockers(1))
    assert pg_store.restore_blockers(1, own_lock="F/1") == []


# ---------------------------------------------------------------------- a connection killed mid-publish
def test_a_connection_terminated_mid_publish_rolls_back_and_a_retry_converges(
        pg_store, postgres_server, postgres_url, sqlite_store):
    rows = [(n + 1, n, n * 7 - 30_000, f"CARTE TATA {n}" if n % 3 else f"VIR TOTO {n}") for n in range(1, 20_001)]
    for store in (pg_store, sqlite_store):
        store.load_batch("F/1", iter([chunk(rows)]))
        stage(store, "F/1", 0, [(n, "TATA" if n % 3 else "TOTO") for n in range(1, 20_001)], [("TATA TOTO", 2, 4)])
        store.publish_tags("F/1", ["F/1"], {}, None)
        store.load_batch("F/2", iter([chunk([(n + 1, n, 1, f"TOTO {n}") for n in range(1, 10_001)])]))
        stage(store, "F/2", 0, [(n, "TOTO") for n in range(1, 10_001)])
    before = stored(pg_store)
    expected = sqlite_store.publish_tags("F/2", ["F/2"], {"k": "v"}, sqlite_store.table_fingerprint("tags")[0])

    # a second session holds ambiguous_wordings: the publish stops there, its tags already rewritten
    dbname = urllib.parse.urlsplit(postgres_url).path.lstrip("/")
    blocker = postgres_server.connect(dbname)
    cursor = blocker.cursor()
    cursor.execute("BEGIN")
    cursor.execute("LOCK TABLE ambiguous_wordings IN ACCESS EXCLUSIVE MODE")
    failure = []

    def publish():
        try:
            pg_store.publish_tags("F/2", ["F/2"], {"k": "v"}, pg_store.table_fingerprint("tags")[0])
        except Exception as exc:  # noqa: BLE001 - checked below
            failure.append(exc)

    thread = threading.Thread(target=publish)
    thread.start()
    try:
        killer = postgres_server.connect(dbname)
        kcur = killer.cursor()
        deadline, pid = time.monotonic() + 30, None
        while pid is None and time.monotonic() < deadline:
            kcur.execute("SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                         "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM ambiguous_wordings%'")
            found = kcur.fetchall()
            pid = found[0][0] if found else None
            time.sleep(0.05)
        assert pid is not None, "the publish never reached its wait"
        kcur.execute("SELECT pg_terminate_backend($1::integer)", (pid,))
        kcur.fetchall()
        kcur.close()
        killer.close()
        thread.join(30)
    finally:
        cursor.execute("ROLLBACK")
        cursor.close()
        blocker.close()
    assert len(failure) == 1 and isinstance(failure[0], ConnectionLost), failure
    assert "can be run again" in str(failure[0]) and postgres_server.password not in str(failure[0])
    assert stored(pg_store) == before  # nothing half-written
    assert pg_store.pending_runs(TAGS) == ("F/2",) and pg_store.get_state("k") is None
    again = pg_store.publish_tags("F/2", ["F/2"], {"k": "v"}, pg_store.table_fingerprint("tags")[0])
    assert again == expected
    assert stored(pg_store) == stored(sqlite_store)
    assert pg_store.ambiguous_wordings("F/2") == sqlite_store.ambiguous_wordings("F/2")
    assert pg_store.pending_runs(TAGS) == () and pg_store.get_state("k") == "v"


# ---------------------------------------------------------------------- errors and credentials
def with_netloc(url: str, netloc: str | None = None, path: str | None = None) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc or parts.netloc, path=path or parts.path))


def test_a_wrong_password_is_access_denied_without_the_password(postgres_server, postgres_url):
    parts = urllib.parse.urlsplit(postgres_url)
    url = with_netloc(postgres_url, f"{parts.username}:Wr0ngSecret@{parts.hostname}:{parts.port}")
    with pytest.raises(AccessDenied) as caught:
        open_store(url).prepare()
    message = str(caught.value)
    assert "password authentication failed" in message and "PGPASSWORD" in message
    assert "Wr0ngSecret" not in message and postgres_server.password not in message
    assert f"{parts.username}:***@" in message


def test_a_missing_database_is_access_denied_and_does_not_exist(postgres_server, postgres_url):
    url = with_netloc(postgres_url, path="/no_such_db")
    with pytest.raises(AccessDenied, match="does not exist.*Create it") as caught:
        open_store(url).prepare()
    assert postgres_server.password not in str(caught.value)
    assert open_store(url).exists() is False


def test_an_unreachable_server_is_a_lost_connection(postgres_url):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = with_netloc(postgres_url, f"enrich:pw@127.0.0.1:{port}")
    with pytest.raises(ConnectionLost, match="cannot reach the database server"):
        open_store(url).list_runs()


def test_a_missing_privilege_is_access_denied(pg_store, postgres_server, postgres_url):
    dbname = urllib.parse.urlsplit(postgres_url).path.lstrip("/")
    postgres_server.execute("CREATE ROLE reader LOGIN PASSWORD 'readerpw'", dbname)
    postgres_server.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader", dbname)
    url = with_netloc(postgres_url, f"reader:readerpw@127.0.0.1:{postgres_server.port}")
    store = open_store(url)
    assert store.list_runs() == []
    with pytest.raises(AccessDenied, match="lacks a privilege") as caught:
        store.record_run("F/1")
    assert "readerpw" not in str(caught.value)
    postgres_server.execute("DROP OWNED BY reader", dbname)
    postgres_server.execute("DROP ROLE reader")


def test_a_url_libpq_cannot_use_is_a_bad_location(postgres_url):
    from enrich.store import BadDatabaseLocation

    with pytest.raises(BadDatabaseLocation, match="postgresql://user"):
        open_store(with_netloc(postgres_url, "enrich:pw@127.0.0.1:notaport")).list_runs()


def test_bad_sql_is_a_bug_raised_as_it_is(pg_store):
    with pytest.raises(DriverError) as caught:
        pg_store.rows("SELEC 1")
    assert not isinstance(caught.value, StorageError)


def test_pgpassword_and_pgpass_work_without_a_password_in_the_url(postgres_server, postgres_url, tmp_path,
                                                                 monkeypatch):
    parts = urllib.parse.urlsplit(postgres_url)
    bare = with_netloc(postgres_url, f"{parts.username}@{parts.hostname}:{parts.port}")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "none"))
    with pytest.raises(AccessDenied):
        open_store(bare).prepare()
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    open_store(bare).prepare()
    monkeypatch.delenv("PGPASSWORD")
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"127.0.0.1:{parts.port}:*:{parts.username}:{postgres_server.password}\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    assert open_store(bare).schema_version() == 5


# ---------------------------------------------------------------------- search
def test_search_is_accent_insensitive_and_kept_in_step(pg_store):
    pg_store.load_batch("F/1", iter([chunk([(2, 1, 1, "CARTE SAINT-ÉTIENNE"), (3, 2, 2, "Crème Brûlée"),
                                            (4, 3, 3, "virement loyer")])]))
    assert "not indexed yet" in pg_store.search_problem()
    assert pg_store.search_wordings("etienne") == []  # not indexed before index_wordings
    assert pg_store.index_wordings() == (("F/1",), 3)
    assert pg_store.index_wordings() == ((), 0)
    assert pg_store.search_problem() is None
    assert [r["id"] for r in pg_store.search_wordings("etienne")] == [1]
    assert [r["id"] for r in pg_store.search_wordings("CREME brulee")] == [2]
    assert [r["id"] for r in pg_store.search_wordings("loyer OR creme")] == [2, 3] or \
        sorted(r["id"] for r in pg_store.search_wordings("loyer OR creme")) == [2, 3]
    assert pg_store.search_wordings("loyer -virement") == []
    # an update by a later load, an operator's update, insert and delete: all kept in step
    pg_store.load_batch("F/2", iter([chunk([(2, 3, 3, "prélèvement assurance")])]))
    assert [r["id"] for r in pg_store.search_wordings("prelevement")] == [3]  # an indexed row: re-indexed
    assert pg_store.index_wordings() == (("F/2",), 0)
    pg_store.rows("UPDATE transactions SET wording = 'taxi parisien' WHERE id = 2 RETURNING 1")
    pg_store.rows("INSERT INTO transactions (id, amount_cents, wording, first_run, last_changed_run) "
                  "VALUES (9, 1, 'péage autoroute', 1, 1) RETURNING 1")
    pg_store.rows("DELETE FROM transactions WHERE id = 1 RETURNING 1")
    assert [r["id"] for r in pg_store.search_wordings("taxi")] == [2]
    assert [r["id"] for r in pg_store.search_wordings("peage")] == [9]
    assert pg_store.search_wordings("etienne") == [] and pg_store.search_wordings("creme") == []
    assert pg_store.search_problem() is None
    pg_store.rows("DELETE FROM transactions_search WHERE id = 9 RETURNING 1")
    assert "1 rows not indexed" in pg_store.search_problem()
    pg_store.rebuild_search()
    assert pg_store.search_problem() is None and [r["id"] for r in pg_store.search_wordings("peage")] == [9]


# ---------------------------------------------------------------------- backup and restore
@pytest.mark.skipif(__import__("shutil").which("pg_dump") is None, reason="pg_dump is not installed")
def test_backup_verify_and_restore(pg_store, tmp_path):
    pg_store.load_batch("F/1", iter(BATCH))
    made = pg_store.backup(str(tmp_path / "backups") + "/")
    assert made["schema_version"] == 5 and made["counts"]["transactions"] == 6 and made["integrity"] == "ok"
    assert pg_store.verify_backup(made["backup"]) == 5
    pg_store.load_batch("F/2", iter([chunk([(2, 100, 1, "later")])]))
    pg_store.acquire_lock(claim("F/2"), runlock.holder_is_dead, 60)
    with pytest.raises(RestoreRefused, match="F/2 holds the run lock"):
        pg_store.restore(made["backup"], force=False, stale_after_hours=1, own_lock=None)
    done = pg_store.restore(made["backup"], force=False, stale_after_hours=1, own_lock="F/2")
    assert done["counts"]["transactions"] == 6 and pg_store.table_counts()["transactions"] == 6
    assert len(done["replaced"]) == 1 and os.path.getsize(done["replaced"][0]) > 0
    assert pg_store.search_wordings("TATA") == []  # restored as it was: rows not indexed yet
    assert pg_store.load_batch("F/3", iter(BATCH)).rows_unchanged == 6


def test_a_file_that_is_not_an_archive_is_refused(pg_store, tmp_path):
    from enrich.store import BackupInvalid

    bogus = tmp_path / "x.dump"
    bogus.write_text("not a dump")
    with pytest.raises(BackupInvalid):
        pg_store.verify_backup(str(bogus))


class FakeError(Exception):
    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


@pytest.mark.parametrize("sqlstate, message, expected", [
    ("57P01", "terminating connection due to administrator command", ConnectionLost),
    ("08006", "connection failure", ConnectionLost),
    ("40001", "could not serialize access", ConnectionLost),
    ("40P01", "deadlock detected", ConnectionLost),
    (None, "server closed the connection unexpectedly", ConnectionLost),
    (None, "IO: [libpq] Failed to connect: connection to server at \"h\" failed: Connection refused", ConnectionLost),
    ("28P01", "password authentication failed for user \"u\"", AccessDenied),
    ("28000", "no pg_hba.conf entry", AccessDenied),
    ("3D000", "database \"x\" does not exist", AccessDenied),
    ("42501", "permission denied for table runs", AccessDenied),
    (None, "IO: [libpq] Failed to connect: FATAL: password authentication failed for user", AccessDenied),
    ("53100", "could not extend file: No space left on device", "StorageFull"),
    ("25006", "cannot execute INSERT in a read-only transaction", DatabaseReadOnly),
    ("55P03", "canceling statement due to lock timeout", DatabaseBusy),
    ("57014", "canceling statement due to statement timeout", DatabaseBusy),
    ("23505", "duplicate key value violates unique constraint", "ConstraintViolation"),
    ("42601", "syntax error at or near", None),
    ("42P01", "relation \"x\" does not exist", None),
])
def test_errors_are_mapped_by_sqlstate(sqlstate, message, expected):
    from enrich import store as storage
    from enrich.store.location import parse_location
    from enrich.store.postgres.connection import database_error

    location = parse_location("postgresql://u:S3cret@db.example:5432/enrich")
    error = database_error(location, FakeError(f"{message} S3cret", sqlstate))
    if expected is None:
        assert error is None  # a bug: raised as it is
        return
    expected = getattr(storage, expected) if isinstance(expected, str) else expected
    assert type(error) is expected
    assert "postgresql://u:***@db.example:5432/enrich" in str(error) and "S3cret" not in str(error)


def test_accents_fold_without_unaccent_too(pg_store):
    from enrich.store.postgres.schema import _fold_function_sql

    pg_store.rows(_fold_function_sql(None) + " -- fallback")  # as a server without unaccent gets it
    assert pg_store.rows("SELECT enrich_fold('Crème Brûlée à Saint-Étienne, Łódź')") == \
        [("Creme Brulee a Saint-Etienne, Lodz",)]
    pg_store.load_batch("F/1", iter([chunk([(2, 1, 1, "PÉAGE")])]))
    pg_store.index_wordings()
    assert [r["id"] for r in pg_store.search_wordings("peage")] == [1]


def test_without_pg_dump_backup_says_which_tools_to_use(pg_store, tmp_path, monkeypatch):
    import shutil

    from enrich.store import UnsupportedOperation

    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UnsupportedOperation, match="pg_dump -Fc.*pg_restore --clean"):
        pg_store.backup(str(tmp_path) + "/")


def test_a_read_stopped_early_leaves_no_connection(pg_store):
    pg_store.load_batch("F/1", iter([chunk([(n + 1, n, n, "w") for n in range(1, 5001)])]))
    reads = pg_store.iter_transactions(["id"], None, chunk_rows=100)
    assert next(reads).num_rows == 100
    reads.close()
    assert pg_store.rows("SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database()") == [(1,)]


def test_every_canned_query_runs_in_psql_form(pg_store, postgres_server, postgres_url):
    from enrich.store.postgres.queries import CANNED_QUERIES, psql_sql

    pg_store.record_run("F/1", started_at="2025-01-01T00:00:00")
    for name, query in CANNED_QUERIES.items():
        sql = psql_sql(name)
        for param in query.parameters:  # what psql -v param= substitutes
            sql = sql.replace(f":'{param}'", "''")
        pg_store.rows(sql.rstrip().rstrip(";"))


def test_indexing_many_rows_rebuilds_the_index_whole(pg_store, monkeypatch):
    from enrich.store.postgres import enrichment

    monkeypatch.setattr(enrichment, "REBUILD_ROWS", 2)
    pg_store.load_batch("F/1", iter([chunk([(2, 1, 1, "péage A7"), (3, 2, 2, "taxi")])]))
    pg_store.rows("INSERT INTO transactions_search (id, document) VALUES (1, to_tsvector('old')) RETURNING 1")
    assert pg_store.index_wordings() == (("F/1",), 2)
    assert [r["id"] for r in pg_store.search_wordings("peage")] == [1] and pg_store.search_wordings("old") == []
    assert pg_store.search_problem() is None
    indexes = {name for (name,) in pg_store.rows("SELECT indexname FROM pg_indexes WHERE tablename = "
                                                 "'transactions_search'")}
    assert indexes == {"transactions_search_pkey", "transactions_search_document"}


# --------------------------------------------------------------------------- sessions reused
def backend_pid(store) -> int:
    return int(store.rows("SELECT pg_backend_pid()")[0][0])


def test_short_statements_reuse_one_session_and_a_broken_one_is_replaced(pg_store, postgres_server):
    """A step's ledger rows and queries do not each open a session (a handshake and a password
    exchange); a session the server ended while it was idle is replaced without an error."""
    from enrich.store.postgres.connection import SESSIONS

    first = backend_pid(pg_store)
    pg_store.record_run("F/1", status="running")
    assert backend_pid(pg_store) == first
    assert backend_pid(open_store(pg_store.location.target)) == first  # another store of the same database
    postgres_server.execute(f"SELECT pg_terminate_backend({first})")
    time.sleep(0.2)
    assert pg_store.get_run("F/1").status == "running"  # on a new session
    assert backend_pid(pg_store) != first
    with pytest.raises(ConstraintViolation):  # a block that failed: its session is not given back
        pg_store.record_step_attempt(StepAttempt("F/1", "start", "1", 0, "no such status", "t"))
    assert len(SESSIONS._idle) <= SESSIONS.MAX_IDLE


def test_read_only_sessions_are_kept_apart_and_idle_sessions_are_bounded(pg_store):
    from enrich.store.postgres.connection import SESSIONS

    reader = open_store(pg_store.location.target, read_only=True)
    with pytest.raises(DatabaseReadOnly):
        reader.record_run("F/1", status="running")
    pg_store.record_run("F/1", status="running")  # the writer's session is not the read-only one
    assert reader.get_run("F/1").status == "running"
    blocks = [pg_store._cursor() for _ in range(SESSIONS.MAX_IDLE + 2)]  # more at once than are kept
    pids = [block.__enter__().scalar("SELECT pg_backend_pid()") for block in blocks]
    for block in blocks:
        block.__exit__(None, None, None)
    assert len(set(pids)) == len(blocks) and len(SESSIONS._idle) == SESSIONS.MAX_IDLE
