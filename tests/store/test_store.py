"""The storage interface on every backend: batch loading (upsert, duplicates, quarantine),
publishing tags, annotating in place, reading back, the ledger (the ``any_store`` fixture runs
each test once per backend)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrich.store import (ANNOTATIONS, TAGS, AlertRecord, ConcurrentModification, ConstraintViolation,
                          StepAttempt)
from enrich.store.idorder import IdOrder


def chunk(rows=(), rejected=()):
    valid = pd.DataFrame(list(rows), columns=["line", "id", "amount_cents", "wording"])
    bad = pd.DataFrame(list(rejected), columns=["line", "raw", "reason"])
    return SimpleNamespace(valid=valid.astype({"line": "int64", "id": "int64", "amount_cents": "int64"}),
                           rejected=bad)


def tags_table(ids, tags):
    return pa.table({"transaction_id": pa.array(ids, pa.int64()), "tag": pa.array(tags, pa.large_string())})


NO_AMBIGUOUS = pa.table({"wording": pa.array([], pa.large_string()), "tags_found": pa.array([], pa.int64()),
                         "transactions": pa.array([], pa.int64())})


def publish(any_store, run_id, ids, tags, covered, state=None, expected=None, shards=None):
    """Stage tags (one shard, or the given shards of (ids, tags)) and publish them."""
    for shard, (shard_ids, shard_tags) in enumerate(shards or [(ids, tags)]):
        any_store.stage_tags(run_id, shard, tags_table(shard_ids, shard_tags).to_batches(), NO_AMBIGUOUS)
    return any_store.publish_tags(run_id, covered, state or {}, expected)


def fresh(any_store):
    """Another new, empty database on the same backend as ``store``."""
    return any_store.__class__.fresh() if hasattr(any_store.__class__, "fresh") else None


def test_amount_is_stored_in_cents_with_a_display_column(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, -28366, "PRLV")])])
    assert any_store.rows("SELECT id, amount_cents, amount, wording, first_run_id, last_changed_run_id "
                          "FROM enriched_transactions") == [(1, -28366, -283.66, "PRLV", "F/1", "F/1")]


def test_load_counts_and_upsert(any_store):
    first = any_store.load_batch("F/1", [chunk([(2, 1, 100, "a"), (3, 2, 200, "b")])])
    assert (first.rows_read, first.rows_loaded, first.rows_new, first.rows_updated) == (2, 2, 2, 0)
    again = any_store.load_batch("F/2", [chunk([(2, 1, 100, "a"), (3, 2, 200, "b")])])
    assert (again.rows_new, again.rows_updated, again.rows_unchanged) == (0, 0, 2)
    assert any_store.rows("SELECT id, last_changed_run_id FROM enriched_transactions") == [(1, "F/1"), (2, "F/1")]
    assert any_store.pending_runs(TAGS) == ("F/1",)  # the unchanged batch F/2 left nothing to derive
    changed = any_store.load_batch("F/3", [chunk([(2, 1, 100, "a"), (3, 2, 250, "b"),
                                                         (4, 3, 1, "c")])])
    assert (changed.rows_new, changed.rows_updated, changed.rows_unchanged) == (1, 1, 1)
    assert any_store.rows("SELECT id, amount_cents, first_run_id, last_changed_run_id FROM enriched_transactions") == [
        (1, 100, "F/1", "F/1"), (2, 250, "F/1", "F/3"), (3, 1, "F/3", "F/3")]


def test_rows_absent_from_a_later_batch_are_kept(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "a")])])
    any_store.load_batch("F/2", [chunk([(2, 2, 100, "b")])])
    assert any_store.rows("SELECT id FROM transactions") == [(1,), (2,)]


def test_identical_duplicates_are_loaded_once_and_counted(any_store):
    stats = any_store.load_batch("F/1", [chunk([(2, 1, 100, "a"), (3, 1, 100, "a")]),
                                                 chunk([(4, 1, 100, "a")])])
    assert (stats.rows_read, stats.rows_loaded, stats.rows_duplicate, stats.rows_rejected) == (3, 1, 2, 0)


def test_conflicting_duplicates_are_all_rejected(any_store):
    stats = any_store.load_batch("F/1", [chunk([(2, 1, 100, "a"), (3, 2, 5, "x"),
                                                        (4, 1, 100, 'a "b"'), (5, 1, 100, "a")])])
    assert (stats.rows_loaded, stats.rows_rejected, stats.rows_duplicate) == (1, 3, 0)
    assert any_store.rows("SELECT id FROM transactions") == [(2,)]
    rejected = any_store.rejected_rows("F/1")
    assert [r["line"] for r in rejected] == [2, 4, 5]
    assert all(r["reason"].startswith("conflicting duplicate id: id 1 ") and "lines 2, 4, 5" in r["reason"]
               for r in rejected)
    assert rejected[1]["raw"] == '1,1.00,"a ""b"""'


def test_rejected_rows_are_stored_per_run(any_store):
    any_store.load_batch("F/1", [chunk([], [(7, "x,y", "wrong field count: expected 3, got 2")])])
    assert any_store.rows("SELECT run_id, line, raw, reason FROM rejected_rows") == [
        ("F/1", 7, "x,y", "wrong field count: expected 3, got 2")]


def test_a_failing_read_leaves_the_database_untouched(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "a")])])

    def broken():
        yield chunk([(2, 1, 999, "changed"), (3, 2, 1, "new")])
        raise OSError("disk read error")

    with pytest.raises(OSError):
        any_store.load_batch("F/2", broken())
    assert any_store.rows("SELECT id, amount_cents FROM transactions") == [(1, 100)]
    assert any_store.pending_runs(TAGS) == ("F/1",)


def test_publish_replaces_rows_of_covered_runs_and_clears_them(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "TOTO"), (3, 2, 100, "TATA")])])
    publish(any_store, "F/1", [1, 2], ["TOTO", "TATA"], ("F/1",), state={"k": "v"})
    assert any_store.pending_runs(TAGS) == ()
    assert any_store.pending_runs(ANNOTATIONS) == ("F/1",)
    assert any_store.get_state("k") == "v"
    # id 2 changes and is no longer tagged: its stale tag goes, id 1's stays
    any_store.load_batch("F/2", [chunk([(2, 1, 100, "TOTO"), (3, 2, 100, "nothing")])])
    stats = publish(any_store, "F/2", [], [], ("F/2",))
    assert stats.removed == 1 and stats.written == 0
    assert any_store.rows("SELECT id, tag, tag_run_id FROM enriched_transactions WHERE tag IS NOT NULL") == [
        (1, "TOTO", "F/1")]


def test_publish_is_all_or_nothing(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "TOTO")])])
    with pytest.raises(ConstraintViolation):
        publish(any_store, "F/1", None, None, ("F/1",), shards=[([1], ["TOTO"]), ([42], ["TOTO"])])  # 42: no such row
    assert any_store.rows("SELECT COUNT(*) FROM tags") == [(0,)]
    assert any_store.pending_runs(TAGS) == ("F/1",)


def test_publish_everything_replaces_the_whole_table(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "TOTO"), (3, 2, 5, "TATA")])])
    publish(any_store, "F/1", [1, 2], ["TOTO", "TATA"], None)
    publish(any_store, "F/2", [2], ["TATA"], None)
    assert any_store.rows("SELECT id, tag_run_id FROM enriched_transactions WHERE tag IS NOT NULL") == [(2, "F/2")]


def test_shards_are_published_together_and_staging_is_emptied(any_store):
    any_store.load_batch("F/1", [chunk([(i + 2, i + 1, 100, "TOTO") for i in range(6)])])
    publish(any_store, "F/1", None, None, ("F/1",), shards=[([4, 5, 6], ["TOTO"] * 3), ([1, 2, 3], ["TOTO"] * 3)])
    assert any_store.rows("SELECT transaction_id FROM tags ORDER BY transaction_id") == [(i,) for i in range(1, 7)]
    assert any_store.rows("SELECT COUNT(*) FROM staged_tags") == [(0,)]


def test_publishing_empties_only_its_own_run_staging(any_store):
    """Another run's staged rows (a run that died before publishing) stay until it is discarded."""
    any_store.load_batch("F/1", [chunk([(i + 2, i + 1, 100, "TOTO") for i in range(3)])])
    ambiguous = pa.table({"wording": pa.array(["TOTO TATA"], pa.large_string()),
                          "tags_found": pa.array([2], pa.int64()), "transactions": pa.array([1], pa.int64())})
    any_store.stage_tags("F/0", 0, tags_table([1], ["TATA"]).to_batches(), ambiguous)
    publish(any_store, "F/1", [1, 2, 3], ["TOTO"] * 3, ("F/1",))
    assert any_store.rows("SELECT COUNT(*) FROM staged_tags") == [(1,)]
    assert any_store.rows("SELECT run_id FROM staged_ambiguous") == [("F/0",)]
    any_store.discard_staged("F/0")
    any_store.discard_staged("F/9")  # a run that staged nothing (and has no lineage key)
    assert any_store.rows("SELECT COUNT(*) FROM staged_tags") == [(0,)]
    assert any_store.rows("SELECT COUNT(*) FROM staged_ambiguous") == [(0,)]


def test_a_shard_staged_again_replaces_what_it_staged(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "TOTO"), (3, 2, 100, "TATA")])])
    any_store.stage_tags("F/1", 0, tags_table([1, 2], ["TOTO", "TATA"]).to_batches(), NO_AMBIGUOUS)
    any_store.stage_tags("F/1", 0, tags_table([1], ["TOTO"]).to_batches(), NO_AMBIGUOUS)  # a retried shard
    any_store.publish_tags("F/1", ("F/1",), {}, None)
    assert any_store.rows("SELECT transaction_id, tag FROM tags") == [(1, "TOTO")]


def test_ambiguous_wordings_of_shards_are_summed_per_wording(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "TOTO TATA")])])
    for shard in (0, 1):
        any_store.stage_tags("F/1", shard, iter(()), pa.table({
            "wording": pa.array(["TOTO TATA"], pa.large_string()), "tags_found": pa.array([2 + shard], pa.int64()),
            "transactions": pa.array([3], pa.int64())}))
    any_store.publish_tags("F/1", ("F/1",), {}, None)
    assert any_store.ambiguous_wordings("F/1") == [{"wording": "TOTO TATA", "tags_found": 3, "transactions": 6}]


def test_iter_transactions_by_runs_in_chunks(any_store):
    any_store.load_batch("F/1", [chunk([(i + 2, i + 1, i, f"w{i}") for i in range(5)])])
    any_store.load_batch("F/2", [chunk([(2, 9, 1, "new")])])
    tables = list(any_store.iter_transactions(["id", "wording"], None, chunk_rows=2))
    assert [t.num_rows for t in tables] == [2, 2, 2]
    assert pa.concat_tables(any_store.iter_transactions(["id"], ["F/2"])).column("id").to_pylist() == [9]
    assert list(any_store.iter_transactions(["id"], [])) == []
    assert pa.concat_tables(any_store.iter_transactions(["id"], None, (2, 4))).column("id").to_pylist() == [2, 3, 4]
    assert any_store.scope_id_range(["F/1"]) == (1, 5) and any_store.scope_id_range([]) is None


def test_run_ledger(any_store):
    any_store.record_run("F/1", user="alice", match_mode="word")
    any_store.record_run("F/1", rows_read=10)
    any_store.record_run("F/1", status="succeeded", finished_at="t")
    run = any_store.get_run("F/1")
    assert (run.status, run.user, run.rows_read, run.match_mode) == ("succeeded", "alice", 10, "word")
    with pytest.raises(ValueError):
        any_store.record_run("F/1", password="x")
    with pytest.raises(ValueError):
        any_store.record_run("F/1", status="exploded")


def test_runs_are_listed_resolved_and_closed(any_store):
    for number, started in ((1, "2025-01-01T00:00:00.000+00:00"), (2, "2025-01-02T00:00:00.000+00:00")):
        any_store.record_run(f"F/{number}", started_at=started)
    assert [r.run_id for r in any_store.list_runs(5)] == ["F/2", "F/1"]
    assert any_store.resolve_run("1") == "F/1" and any_store.resolve_run("") == "F/2"
    assert any_store.resolve_run("F/2") == "F/2" and any_store.resolve_run("3") is None
    assert any_store.previous_run("F/2").run_id == "F/1"
    assert any_store.close_runs(["F/1", "F/9"], "interrupted") == ("F/1",)
    assert any_store.get_run("F/1").status == "interrupted" and any_store.get_run("F/1").finished_at


def test_step_attempts_one_row_per_attempt(any_store):
    base = {"run_id": "F/1", "step": "ingest", "task_id": "2"}
    any_store.record_step_attempt(StepAttempt(**base, attempt=0, status="running", started_at="t0"))
    any_store.record_step_attempt(StepAttempt(**base, attempt=0, status="failed", started_at="t0",
                                              finished_at="t1", duration_s=0.5, error_type="OSError",
                                              error_message="boom"))
    any_store.record_step_attempt(StepAttempt(**base, attempt=1, status="succeeded", started_at="t2",
                                              finished_at="t3", duration_s=0.1))
    attempts = any_store.step_attempts("F/1")
    assert [(a.attempt, a.status, a.error_type) for a in attempts] == [(0, "failed", "OSError"), (1, "succeeded", None)]


def test_alerts_ledger(any_store):
    any_store.record_alert(AlertRecord("F/1", "sms", "sent", "+331, +332", "body"))
    assert [(a.status, a.recipients) for a in any_store.alerts_for_run("F/1")] == [("sent", "+331, +332")]


@pytest.mark.parametrize("order", ["ascending", "shuffled"])
def test_ids_in_any_order_load_alike(any_store, order):
    rows = [(line, line * 7, line * 100, f"w{line}") for line in range(2, 500)]
    if order == "shuffled":
        ids = [key for _, key, _, _ in rows][::-1]
        rows = [(line, key, cents, wording) for (line, _, cents, wording), key in zip(rows, ids)]
    split = [chunk(rows[:200]), chunk(rows[200:])]
    stats = any_store.load_batch("F/1", split)
    assert (stats.rows_loaded, stats.rows_new, stats.rows_duplicate) == (498, 498, 0)
    assert any_store.rows("SELECT COUNT(*), CAST(SUM(amount_cents) AS BIGINT) FROM transactions") == [(498, sum(r[2] for r in rows))]
    again = any_store.load_batch("F/2", split)
    assert (again.rows_unchanged, again.rows_new, again.cents_stored) == (498, 0, again.cents_in_file)


def test_an_id_repeated_across_chunks_is_still_a_duplicate(any_store):
    stats = any_store.load_batch("F/1", [chunk([(2, 1, 100, "a"), (3, 2, 5, "b")]),
                                                   chunk([(4, 2, 5, "b"), (5, 3, 9, "c")])])
    assert (stats.rows_loaded, stats.rows_duplicate) == (3, 1)


def test_transaction_amounts_of_runs(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, -500, "a"), (3, 2, 700, "b")])])
    any_store.load_batch("F/2", [chunk([(2, 1, -500, "a"), (3, 2, 701, "b"), (4, 3, 9, "c")])])
    amounts = any_store.transaction_amounts(["F/2"])
    assert sorted(zip(amounts.column("id").to_pylist(), amounts.column("amount_cents").to_pylist())) == [
        (2, 701), (3, 9)]
    assert any_store.transaction_amounts(["F/1"]).column("id").to_pylist() == [1]
    assert any_store.transaction_amounts([]).num_rows == 0


_BOUNDARIES = [30001, 30000, 29999, 1, 0, -1, -19999, -20000, -20001]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(_BOUNDARIES), st.integers(-10**12, 10**12)), min_size=1, max_size=60))
def test_annotations_in_sql_equal_the_pandas_rules(new_store, amounts):
    from enrich import annotation

    store = new_store()
    store.load_batch("F/1", [chunk([(i + 2, i + 1, cents, "w") for i, cents in enumerate(amounts)])])
    stats, classes = store.annotate_in_place("F/1", None, {}, None)
    expected = [None if pd.isna(label) else label for label in annotation.annotate(pd.Series(amounts, dtype="int64"))]
    stored = dict(store.rows("SELECT transaction_id, annotation FROM annotations"))
    assert stored == {i + 1: label for i, label in enumerate(expected) if label}
    assert stats.written == len(stored) and classes.get(None, 0) == amounts.count(0)
    assert {k: v for k, v in classes.items() if k} == pd.Series([v for v in expected if v]).value_counts().to_dict()


def test_annotate_in_place_replaces_only_the_covered_runs_rows(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "a"), (3, 2, -100, "b")])])
    any_store.annotate_in_place("F/1", ("F/1",), {}, None)
    any_store.load_batch("F/2", [chunk([(2, 1, 0, "a"), (3, 2, -100, "b"), (4, 3, 50000, "c")])])
    stats, classes = any_store.annotate_in_place("F/2", ("F/2",), {}, None)
    assert (stats.written, stats.removed, classes) == (1, 1, {None: 1, "LARGE SALE": 1})
    assert any_store.rows("SELECT id, annotation, annotation_run_id FROM enriched_transactions ORDER BY id") == [
        (1, None, None), (2, "SMALL EXPENSE", "F/1"), (3, "LARGE SALE", "F/2")]
    assert any_store.pending_runs(ANNOTATIONS) == ()


def test_annotate_in_place_refuses_a_table_changed_since_it_was_read(any_store):
    any_store.load_batch("F/1", [chunk([(2, 1, 100, "a")])])
    with pytest.raises(ConcurrentModification, match="annotations table changed"):
        any_store.annotate_in_place("F/1", ("F/1",), {}, "not what is there")
    assert any_store.rows("SELECT COUNT(*) FROM annotations") == [(0,)]
    assert any_store.pending_runs(ANNOTATIONS) == ("F/1",)


@pytest.mark.parametrize("late_ids_kept", [1_000_000, 2, 0])
def test_late_ids_are_paired_whether_few_or_many(any_store, monkeypatch, late_ids_kept):
    """Ids in order but for re-sent rows appended: paired from the late ids alone, or, past the
    limit kept, by sorting the whole batch; both give the same result."""
    monkeypatch.setattr(IdOrder, "LATE_IDS_KEPT", late_ids_kept)
    first = chunk([(line, line - 1, line * 10, f"w{line}") for line in range(2, 12)])  # ids 1..10
    appended = chunk([(12, 3, 40, "w4"),  # identical re-send of id 3: a duplicate
                      (13, 5, 51, "w5"),  # id 5 again, different: every line of id 5 rejected
                      (14, 20, 7, "new"), (15, 15, 8, "late but unique"), (16, 3, 40, "w4")])
    stats = any_store.load_batch("F/1", [first, appended])
    assert (stats.rows_read, stats.rows_loaded, stats.rows_duplicate, stats.rows_rejected) == (15, 11, 2, 2)
    assert stats.cents_in_file == stats.cents_stored
    assert any_store.rows("SELECT id FROM transactions ORDER BY id") == [(i,) for i in (1, 2, 3, 4, 6, 7, 8, 9, 10, 15, 20)]
    rejected = any_store.rejected_rows("F/1")
    assert [r["line"] for r in rejected] == [6, 13]
    assert all("id 5 appears with different content on lines 6, 13" in r["reason"] for r in rejected)


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


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(1, 60), gaps=st.sets(st.integers(2, 70), max_size=6),
       changed=st.sets(st.integers(1, 60), max_size=4), repeats=st.lists(st.integers(1, 65), max_size=6),
       cut=st.integers(1, 25), many_late=st.booleans())
def test_a_resent_export_matches_the_reference_model(new_store, monkeypatch, size, gaps, changed, repeats, cut,
                                                     many_late):
    """The usual re-run: ids 1..N in order on consecutive lines (but for a few lines left out, as
    malformed lines are), a few changed, some re-sent lines appended (repeats of unchanged, changed
    or new ids); paired from the late ids or by grouping the batch. The unchanged lines are kept as
    runs, so the repeats must be found inside them."""
    monkeypatch.setattr(IdOrder, "LATE_IDS_KEPT", 0 if many_late else 1_000_000)
    store = new_store()
    stored: dict = {}
    original = [(key, key * 10, f"w{key}") for key in range(1, size + 1)]
    resent = [(key, cents + (1 if key in changed else 0), wording) for key, cents, wording in original]
    resent += [resent[key - 1] if key <= size else (key, 5, "new") for key in repeats]
    for number, rows in enumerate((original, resent), start=1):
        lines = [line for line in range(2, 2 + len(rows) + len(gaps)) if line not in gaps]
        batch = [(line, *row) for line, row in zip(lines, rows)]
        chunks = [chunk(batch[i:i + cut]) for i in range(0, len(batch), cut)]
        stats = store.load_batch(f"F/{number}", chunks)
        expected = reference_load(stored, batch)
        assert {k: getattr(stats, k) for k in expected} == expected
        assert {k: (c, w) for k, c, w in store.rows("SELECT id, amount_cents, wording FROM transactions")} == stored
        variants: dict = {}
        for _, key, cents, wording in batch:
            variants.setdefault(key, set()).add((cents, wording))
        assert [r["line"] for r in store.rejected_rows(f"F/{number}")] == [
            line for line, key, *_ in batch if len(variants[key]) > 1]


def test_unchanged_lines_are_kept_as_runs_of_consecutive_lines_and_ids():
    from enrich.store.batches import unchanged_runs

    lines = np.array([2, 3, 4, 6, 7, 8, 9, 20], dtype=np.int64)
    ids = np.array([1, 2, 3, 4, 5, 7, 8, 9], dtype=np.int64)
    runs = unchanged_runs(lines, ids).to_pylist()
    assert runs == [{"first_id": 1, "first_line": 2, "n": 3}, {"first_id": 4, "first_line": 6, "n": 2},
                    {"first_id": 7, "first_line": 8, "n": 2}, {"first_id": 9, "first_line": 20, "n": 1}]
    expanded = [(run["first_line"] + k, run["first_id"] + k) for run in runs for k in range(run["n"])]
    assert expanded == list(zip(lines.tolist(), ids.tolist()))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(_row, max_size=50), extra=st.lists(_row, max_size=30),
       resend=st.booleans(), ascending=st.booleans(), cut=st.integers(1, 12))
def test_loading_twice_matches_a_reference_model(new_store, first, extra, resend, ascending, cut):
    """Batches with repeats, conflicts and changes, loaded onto an empty then a populated database
    (where rows identical to the stored ones are recognised without being staged); the second
    batch often re-sends the first with rows appended."""
    store = new_store()
    stored: dict = {}
    second = (first + extra) if resend else extra
    for number, rows in enumerate((first, second), start=1):
        if ascending:  # the usual export: ids in order, repeats appended after them
            rows = sorted(rows[: len(rows) // 2], key=lambda r: r[0]) + rows[len(rows) // 2:]
        batch = [(line, key, cents, wording) for line, (key, cents, wording) in enumerate(rows, start=2)]
        chunks = [chunk(batch[i:i + cut]) for i in range(0, len(batch), cut)] or [chunk()]
        stats = store.load_batch(f"F/{number}", chunks)
        expected = reference_load(stored, batch)
        assert {k: getattr(stats, k) for k in expected} == expected
        assert {k: (c, w) for k, c, w in store.rows("SELECT id, amount_cents, wording FROM transactions")} == stored


@pytest.mark.parametrize("late_ids_kept", [1_000_000, 0])
def test_a_resent_batch_pairs_repeats_of_rows_found_unchanged(any_store, monkeypatch, late_ids_kept):
    """The repeats fall inside a run of unchanged lines (ids 1..10 on lines 2..11), paired from the
    late ids or by grouping the whole batch."""
    monkeypatch.setattr(IdOrder, "LATE_IDS_KEPT", late_ids_kept)
    rows = [(line, line - 1, line * 10, f"w{line}") for line in range(2, 12)]  # ids 1..10
    any_store.load_batch("F/1", [chunk(rows)])
    resent = chunk(rows[:4]), chunk(rows[4:] + [(12, 3, 40, "w4"),  # id 3 again, as stored: a duplicate
                                                (13, 5, 51, "w5"),  # id 5 again, different: a conflict
                                                (14, 7, 80, "w8 changed")])  # id 7: late, and a conflict
    stats = any_store.load_batch("F/2", list(resent))
    assert (stats.rows_read, stats.rows_loaded, stats.rows_duplicate, stats.rows_rejected) == (13, 8, 1, 4)
    assert (stats.rows_new, stats.rows_updated, stats.rows_unchanged) == (0, 0, 8)
    assert stats.cents_stored == stats.cents_in_file == sum(r[2] for r in rows if r[1] not in (5, 7))
    rejected = any_store.rejected_rows("F/2")
    assert [r["line"] for r in rejected] == [6, 8, 13, 14]  # the first lines too, though found unchanged
    assert any_store.rows("SELECT id, amount_cents, wording FROM transactions WHERE id IN (5, 7) ORDER BY id") == [
        (5, 60, "w6"), (7, 80, "w8")]  # conflicting ids keep what was stored
    assert any_store.pending_runs(TAGS) == ("F/1",)  # nothing changed: nothing pending
