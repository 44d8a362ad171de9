"""Storage: schema, batch loading (upsert, duplicates, quarantine), publishing, ledger."""
from __future__ import annotations

import sqlite3
from types import SimpleNamespace

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich import storage


def chunk(rows=(), rejected=()):
    valid = pd.DataFrame(list(rows), columns=["line", "id", "amount_cents", "wording"])
    bad = pd.DataFrame(list(rejected), columns=["line", "raw", "reason"])
    return SimpleNamespace(valid=valid.astype({"line": "int64", "id": "int64", "amount_cents": "int64"}),
                           rejected=bad)


def rows(db, sql):
    return [tuple(r) for r in db.execute(sql).fetchall()]


def test_schema_is_versioned_and_wal(fresh_db):
    assert storage.schema_version(fresh_db) == storage.SCHEMA_VERSION
    assert fresh_db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"transactions", "tags", "annotations", "rejected_rows", "runs", "step_runs",
            "alerts"} <= set(fresh_db.table_names())


def test_reopening_does_not_migrate_twice(db_path):
    storage.connect(db_path).close()
    db = storage.connect(db_path)
    assert rows(db, "SELECT version FROM schema_version") == [(v,) for v in range(1, storage.SCHEMA_VERSION + 1)]


def test_newer_schema_is_refused(db_path):
    db = storage.connect(db_path)
    db.execute("INSERT INTO schema_version VALUES (99, 'future')")
    db.close()
    with pytest.raises(storage.StorageError, match="newer than this program"):
        storage.connect(db_path)


def test_missing_directory_is_explained(tmp_path):
    with pytest.raises(storage.StorageError, match="does not exist"):
        storage.connect(tmp_path / "nope" / "db.db")


def test_a_file_that_is_not_sqlite_is_explained(tmp_path):
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not a database, just text" * 100)
    with pytest.raises(storage.StorageError, match="cannot use this file"):
        storage.connect(path)


def test_amount_is_stored_in_cents_with_a_display_column(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, -28366, "PRLV")])])
    assert store.rows("SELECT id, amount_cents, amount, wording, first_run_id, last_changed_run_id "
                          "FROM enriched_transactions") == [(1, -28366, -283.66, "PRLV", "F/1", "F/1")]


def test_load_counts_and_upsert(store):
    first = storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a"), (3, 2, 200, "b")])])
    assert (first.rows_read, first.rows_loaded, first.rows_new, first.rows_updated) == (2, 2, 2, 0)
    again = storage.load_batch(store.path, "F/2", [chunk([(2, 1, 100, "a"), (3, 2, 200, "b")])])
    assert (again.rows_new, again.rows_updated, again.rows_unchanged) == (0, 0, 2)
    assert store.rows("SELECT id, last_changed_run_id FROM enriched_transactions") == [(1, "F/1"), (2, "F/1")]
    assert store(storage.pending_runs, storage.TAGS) == ("F/1",)  # the unchanged batch F/2 left nothing to derive
    changed = storage.load_batch(store.path, "F/3", [chunk([(2, 1, 100, "a"), (3, 2, 250, "b"),
                                                         (4, 3, 1, "c")])])
    assert (changed.rows_new, changed.rows_updated, changed.rows_unchanged) == (1, 1, 1)
    assert store.rows("SELECT id, amount_cents, first_run_id, last_changed_run_id FROM enriched_transactions") == [
        (1, 100, "F/1", "F/1"), (2, 250, "F/1", "F/3"), (3, 1, "F/3", "F/3")]


def test_rows_absent_from_a_later_batch_are_kept(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a")])])
    storage.load_batch(store.path, "F/2", [chunk([(2, 2, 100, "b")])])
    assert store.rows("SELECT id FROM transactions") == [(1,), (2,)]


def test_identical_duplicates_are_loaded_once_and_counted(store):
    stats = storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a"), (3, 1, 100, "a")]),
                                                 chunk([(4, 1, 100, "a")])])
    assert (stats.rows_read, stats.rows_loaded, stats.rows_duplicate, stats.rows_rejected) == (3, 1, 2, 0)


def test_conflicting_duplicates_are_all_rejected(store):
    stats = storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a"), (3, 2, 5, "x"),
                                                        (4, 1, 100, 'a "b"'), (5, 1, 100, "a")])])
    assert (stats.rows_loaded, stats.rows_rejected, stats.rows_duplicate) == (1, 3, 0)
    assert store.rows("SELECT id FROM transactions") == [(2,)]
    rejected = store(storage.rejected_rows, "F/1")
    assert list(rejected["line"]) == [2, 4, 5]
    assert all(r.startswith("conflicting duplicate id: id 1 ") and "lines 2, 4, 5" in r
               for r in rejected["reason"])
    assert rejected["raw"].iloc[1] == '1,1.00,"a ""b"""'


def test_rejected_rows_are_stored_per_run(store):
    storage.load_batch(store.path, "F/1", [chunk([], [(7, "x,y", "wrong field count: expected 3, got 2")])])
    assert store.rows("SELECT run_id, line, raw, reason FROM rejected_rows") == [
        ("F/1", 7, "x,y", "wrong field count: expected 3, got 2")]


def test_a_failing_read_leaves_the_database_untouched(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a")])])

    def broken():
        yield chunk([(2, 1, 999, "changed"), (3, 2, 1, "new")])
        raise OSError("disk read error")

    with pytest.raises(OSError):
        storage.load_batch(store.path, "F/2", broken())
    assert store.rows("SELECT id, amount_cents FROM transactions") == [(1, 100)]
    assert store(storage.pending_runs, storage.TAGS) == ("F/1",)


def test_publish_replaces_rows_of_covered_runs_and_clears_them(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "TOTO"), (3, 2, 100, "TATA")])])
    tags = pd.DataFrame({"transaction_id": [1, 2], "tag": ["TOTO", "TATA"]})
    storage.publish(store.path, storage.TAGS, "F/1", [tags], ("F/1",), state={"k": "v"})
    assert store(storage.pending_runs, storage.TAGS) == ()
    assert store(storage.pending_runs, storage.ANNOTATIONS) == ("F/1",)
    assert store(storage.get_state, "k") == "v"
    # id 2 changes and is no longer tagged: its stale tag goes, id 1's stays
    storage.load_batch(store.path, "F/2", [chunk([(2, 1, 100, "TOTO"), (3, 2, 100, "nothing")])])
    stats = storage.publish(store.path, storage.TAGS, "F/2", [tags.iloc[:0]], ("F/2",))
    assert stats.removed == 1 and stats.written == 0
    assert store.rows("SELECT id, tag, tag_run_id FROM enriched_transactions WHERE tag IS NOT NULL") == [
        (1, "TOTO", "F/1")]


def test_publish_is_all_or_nothing(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "TOTO")])])
    good = pd.DataFrame({"transaction_id": [1], "tag": ["TOTO"]})
    orphan = pd.DataFrame({"transaction_id": [42], "tag": ["TOTO"]})  # no such transaction
    with pytest.raises(storage.ConstraintViolation, match="FOREIGN KEY"):
        storage.publish(store.path, storage.TAGS, "F/1", [good, orphan], ("F/1",))
    assert store.rows("SELECT COUNT(*) FROM tags") == [(0,)]
    assert store(storage.pending_runs, storage.TAGS) == ("F/1",)


def test_publish_everything_replaces_the_whole_table(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "TOTO"), (3, 2, 5, "TATA")])])
    storage.publish(store.path, storage.TAGS, "F/1",
                    [pd.DataFrame({"transaction_id": [1, 2], "tag": ["TOTO", "TATA"]})], None)
    storage.publish(store.path, storage.TAGS, "F/2",
                    [pd.DataFrame({"transaction_id": [2], "tag": ["TATA"]})], None)
    assert store.rows("SELECT id, tag_run_id FROM enriched_transactions WHERE tag IS NOT NULL") == [(2, "F/2")]


def test_iter_transactions_by_runs_in_chunks(store):
    storage.load_batch(store.path, "F/1", [chunk([(i + 2, i + 1, i, f"w{i}") for i in range(5)])])
    storage.load_batch(store.path, "F/2", [chunk([(2, 9, 1, "new")])])
    frames = list(storage.iter_transactions(store.path, ["id", "wording"], None, chunk_rows=2))
    assert [len(f) for f in frames] == [2, 2, 2]
    only = pd.concat(storage.iter_transactions(store.path, ["id"], ["F/2"]))
    assert only["id"].tolist() == [9]
    assert list(storage.iter_transactions(store.path, ["id"], [])) == []


def test_run_ledger(fresh_db):
    storage.record_run(fresh_db, "F/1", user="alice", match_mode="word")
    storage.record_run(fresh_db, "F/1", rows_read=10)
    storage.record_run(fresh_db, "F/1", status="succeeded", finished_at="t")
    run = storage.get_run(fresh_db, "F/1")
    assert (run["status"], run["user"], run["rows_read"], run["match_mode"]) == ("succeeded", "alice", 10, "word")
    with pytest.raises(ValueError):
        storage.record_run(fresh_db, "F/1", password="x")


def test_step_attempts_one_row_per_attempt(fresh_db):
    storage.record_step_attempt(fresh_db, "F/1", "ingest", "2", 0, "running", "t0")
    storage.record_step_attempt(fresh_db, "F/1", "ingest", "2", 0, "failed", "t0", "t1", 0.5,
                                "OSError", "boom")
    storage.record_step_attempt(fresh_db, "F/1", "ingest", "2", 1, "succeeded", "t2", "t3", 0.1)
    attempts = storage.step_attempts(fresh_db, "F/1")
    assert [(a["attempt"], a["status"], a["error_type"]) for a in attempts] == [
        (0, "failed", "OSError"), (1, "succeeded", None)]


def test_alerts_ledger(fresh_db):
    storage.record_alert(fresh_db, "F/1", "sms", "sent", ["+331", "+332"], "body", None)
    assert [(a["status"], a["recipients"]) for a in storage.alerts_for_run(fresh_db, "F/1")] == [
        ("sent", "+331, +332")]


def test_a_new_database_uses_large_pages(fresh_db):
    assert fresh_db.execute("PRAGMA page_size").fetchone()[0] == storage.PAGE_SIZE


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_ids_in_any_order_load_alike(store, order):
    rows = [(line, line * 7, line * 100, f"w{line}") for line in range(2, 500)]
    if order == "shuffled":
        ids = [key for _, key, _, _ in rows][::-1]
        rows = [(line, key, cents, wording) for (line, _, cents, wording), key in zip(rows, ids)]
    split = [chunk(rows[:200]), chunk(rows[200:])]
    stats = storage.load_batch(store.path, "F/1", split)
    assert (stats.rows_loaded, stats.rows_new, stats.rows_duplicate) == (498, 498, 0)
    assert store.rows("SELECT COUNT(*), SUM(amount_cents) FROM transactions") == [(498, sum(r[2] for r in rows))]
    again = storage.load_batch(store.path, "F/2", split)
    assert (again.rows_unchanged, again.rows_new, again.cents_stored) == (498, 0, again.cents_in_file)


def test_an_id_repeated_across_chunks_is_still_a_duplicate(store):
    stats = storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a"), (3, 2, 5, "b")]),
                                                   chunk([(4, 2, 5, "b"), (5, 3, 9, "c")])])
    assert (stats.rows_loaded, stats.rows_duplicate) == (3, 1)


def test_one_process_never_opens_a_file_through_both_sqlite_libraries(store):
    db = storage.connect(store.path)
    try:
        with pytest.raises(storage.MixedSQLiteLibraries, match="open through sqlite3"):
            storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a")])])
    finally:
        db.close()
    frames = storage.iter_transactions(store.path, ["id"], None)
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a")])])
    next(frames)  # the bulk connection is open while the generator is
    with pytest.raises(storage.MixedSQLiteLibraries, match="bulk operation"):
        storage.connect(store.path)
    frames.close()
    storage.connect(store.path).close()  # fine again once the bulk connection closed


def test_transaction_amounts_of_runs(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, -500, "a"), (3, 2, 700, "b")])])
    storage.load_batch(store.path, "F/2", [chunk([(2, 1, -500, "a"), (3, 2, 701, "b"), (4, 3, 9, "c")])])
    amounts = storage.transaction_amounts(store.path, ["F/2"])
    assert sorted(map(tuple, amounts[["id", "amount_cents"]].to_numpy().tolist())) == [(2, 701), (3, 9)]
    assert storage.transaction_amounts(store.path, ["F/1"])["id"].tolist() == [1]
    assert storage.transaction_amounts(store.path, []).empty


_BOUNDARIES = [30001, 30000, 29999, 1, 0, -1, -19999, -20000, -20001]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(_BOUNDARIES), st.integers(-10**12, 10**12)), min_size=1, max_size=60))
def test_annotations_in_sql_equal_the_pandas_rules(tmp_path_factory, amounts):
    from enrich import annotation

    path = tmp_path_factory.mktemp("sql") / "db.db"
    storage.connect(path).close()
    storage.load_batch(path, "F/1", [chunk([(i + 2, i + 1, cents, "w") for i, cents in enumerate(amounts)])])
    stats, classes = storage.annotate_in_place(path, "F/1", None)
    expected = [None if pd.isna(label) else label for label in annotation.annotate(pd.Series(amounts, dtype="int64"))]
    db = storage.connect(path)
    try:
        stored = dict(rows(db, "SELECT transaction_id, annotation FROM annotations"))
    finally:
        db.close()
    assert stored == {i + 1: label for i, label in enumerate(expected) if label}
    assert stats.written == len(stored) and classes.get(None, 0) == amounts.count(0)
    assert {k: v for k, v in classes.items() if k} == pd.Series([v for v in expected if v]).value_counts().to_dict()


def test_annotate_in_place_replaces_only_the_covered_runs_rows(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a"), (3, 2, -100, "b")])])
    storage.annotate_in_place(store.path, "F/1", ("F/1",))
    storage.load_batch(store.path, "F/2", [chunk([(2, 1, 0, "a"), (3, 2, -100, "b"), (4, 3, 50000, "c")])])
    stats, classes = storage.annotate_in_place(store.path, "F/2", ("F/2",))
    assert (stats.written, stats.removed, classes) == (1, 1, {None: 1, "LARGE SALE": 1})
    assert store.rows("SELECT id, annotation, annotation_run_id FROM enriched_transactions ORDER BY id") == [
        (1, None, None), (2, "SMALL EXPENSE", "F/1"), (3, "LARGE SALE", "F/2")]
    assert store(storage.pending_runs, storage.ANNOTATIONS) == ()


def test_annotate_in_place_refuses_a_table_changed_since_it_was_read(store):
    storage.load_batch(store.path, "F/1", [chunk([(2, 1, 100, "a")])])
    with pytest.raises(storage.ConcurrentModification, match="annotations table changed"):
        storage.annotate_in_place(store.path, "F/1", ("F/1",), expected_fingerprint="not what is there")
    assert store.rows("SELECT COUNT(*) FROM annotations") == [(0,)]
    assert store(storage.pending_runs, storage.ANNOTATIONS) == ("F/1",)


@pytest.mark.parametrize("late_ids_kept", [1_000_000, 2, 0])
def test_late_ids_are_paired_whether_few_or_many(store, monkeypatch, late_ids_kept):
    """Ids in order but for re-sent rows appended: paired from the late ids alone, or, past the
    limit kept, by sorting the whole batch; both give the same result."""
    monkeypatch.setattr(storage._IdOrder, "LATE_IDS_KEPT", late_ids_kept)
    first = chunk([(line, line - 1, line * 10, f"w{line}") for line in range(2, 12)])  # ids 1..10
    appended = chunk([(12, 3, 40, "w4"),  # identical re-send of id 3: a duplicate
                      (13, 5, 51, "w5"),  # id 5 again, different: every line of id 5 rejected
                      (14, 20, 7, "new"), (15, 15, 8, "late but unique"), (16, 3, 40, "w4")])
    stats = storage.load_batch(store.path, "F/1", [first, appended])
    assert (stats.rows_read, stats.rows_loaded, stats.rows_duplicate, stats.rows_rejected) == (15, 11, 2, 2)
    assert stats.cents_in_file == stats.cents_stored
    assert store.rows("SELECT id FROM transactions ORDER BY id") == [(i,) for i in (1, 2, 3, 4, 6, 7, 8, 9, 10, 15, 20)]
    rejected = store(storage.rejected_rows, "F/1")
    assert rejected["line"].tolist() == [6, 13]
    assert all("id 5 appears with different content on lines 6, 13" in r for r in rejected["reason"])


def reference_load(stored: dict, batch: list[tuple[int, int, int, str]]) -> dict:
    """What loading ``batch`` (line, id, cents, wording) onto ``stored`` (id -> (cents, wording)) gives."""
    by_id: dict[int, set] = {}
    for _, key, cents, wording in batch:
        by_id.setdefault(key, set()).add((cents, wording))
    loaded = {key: next(iter(values)) for key, values in by_id.items() if len(values) == 1}
    rejected = sum(1 for _, key, _, _ in batch if key not in loaded)
    new = sum(1 for key in loaded if key not in stored)
    updated = sum(1 for key, value in loaded.items() if key in stored and stored[key] != value)
    stats = {"rows_read": len(batch), "rows_loaded": len(loaded), "rows_new": new, "rows_updated": updated,
             "rows_unchanged": len(loaded) - new - updated, "rows_rejected": rejected,
             "rows_duplicate": len(batch) - len(loaded) - rejected,
             "cents_in_file": sum(c for c, _ in loaded.values()), "cents_stored": sum(c for c, _ in loaded.values())}
    stored.update(loaded)
    return stats


_row = st.tuples(st.integers(1, 40), st.sampled_from([100, 250, -300]), st.sampled_from(["a", "b", "TAXI c"]))


@settings(max_examples=60, deadline=None)
@given(first=st.lists(_row, max_size=50), extra=st.lists(_row, max_size=30),
       resend=st.booleans(), ascending=st.booleans(), cut=st.integers(1, 12))
def test_loading_twice_matches_a_reference_model(tmp_path_factory, first, extra, resend, ascending, cut):
    """Batches with repeats, conflicts and changes, loaded onto an empty then a populated database
    (where rows identical to the stored ones are recognised without being staged); the second
    batch often re-sends the first with rows appended."""
    path = tmp_path_factory.mktemp("model") / "db.db"
    storage.connect(path).close()
    stored: dict = {}
    second = (first + extra) if resend else extra
    for number, rows in enumerate((first, second), start=1):
        if ascending:  # the usual export: ids in order, repeats appended after them
            rows = sorted(rows[: len(rows) // 2], key=lambda r: r[0]) + rows[len(rows) // 2:]
        batch = [(line, key, cents, wording) for line, (key, cents, wording) in enumerate(rows, start=2)]
        chunks = [chunk(batch[i:i + cut]) for i in range(0, len(batch), cut)] or [chunk()]
        stats = storage.load_batch(path, f"F/{number}", chunks)
        expected = reference_load(stored, batch)
        assert {k: getattr(stats, k) for k in expected} == expected
        db = storage.connect(path)
        try:
            assert dict((k, (c, w)) for k, c, w in db.execute(
                "SELECT id, amount_cents, wording FROM transactions")) == stored
        finally:
            db.close()


def test_a_resent_batch_pairs_repeats_of_rows_found_unchanged(store):
    rows = [(line, line - 1, line * 10, f"w{line}") for line in range(2, 12)]  # ids 1..10
    storage.load_batch(store.path, "F/1", [chunk(rows)])
    resent = chunk(rows[:4]), chunk(rows[4:] + [(12, 3, 40, "w4"),  # id 3 again, as stored: a duplicate
                                                (13, 5, 51, "w5"),  # id 5 again, different: a conflict
                                                (14, 7, 80, "w8 changed")])  # id 7: late, and a conflict
    stats = storage.load_batch(store.path, "F/2", list(resent))
    assert (stats.rows_read, stats.rows_loaded, stats.rows_duplicate, stats.rows_rejected) == (13, 8, 1, 4)
    assert (stats.rows_new, stats.rows_updated, stats.rows_unchanged) == (0, 0, 8)
    assert stats.cents_stored == stats.cents_in_file == sum(r[2] for r in rows if r[1] not in (5, 7))
    rejected = store(storage.rejected_rows, "F/2")
    assert rejected["line"].tolist() == [6, 8, 13, 14]  # the first lines too, though found unchanged
    assert store.rows("SELECT id, amount_cents, wording FROM transactions WHERE id IN (5, 7) ORDER BY id") == [
        (5, 60, "w6"), (7, 80, "w8")]  # conflicting ids keep what was stored
    assert store(storage.pending_runs, storage.TAGS) == ("F/1",)  # nothing changed: nothing pending
