"""The stages called directly (no Metaflow), on every backend: the re-derivation rules across runs,
sharded tagging, what each stage records."""
from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrich import ingest, stages
from enrich.settings import RunSettings
from enrich.store import ANNOTATIONS, TAGS


def settings_for(database: str, run: str, csv, tags=None, match: str = "word", shards: int = 1) -> RunSettings:
    return RunSettings.resolve(f"F/{run}", database, str(csv), str(tags) if tags else None, match, shards)


def full_run(s: RunSettings):
    stages.begin_run(s, "tester")
    stats, _ = stages.ingest(s, ingest.read_chunks(s.transactions))
    shards = [stages.tag_shard(s, shard) for shard in range(s.shards)]
    tagged = stages.publish_tags(s, shards)
    annotated = stages.annotate(s)
    stages.index_wordings(s)
    return stats, tagged, annotated


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,amount,wording\n1,10,TOTO\n2,-5,TAXI TATA\n3,0,tata\n", encoding="utf-8")
    return path


@pytest.fixture
def database(new_database):
    return new_database()


def tags_of(s):
    return stages.store_of(s).rows("SELECT transaction_id, tag FROM tags ORDER BY 1")


def test_a_new_tag_list_retags_every_stored_transaction(tmp_path, csv, database):
    first = settings_for(database, "1", csv)
    full_run(first)
    assert tags_of(first) == [(1, "TOTO"), (3, "TATA")]
    only_taxi = tmp_path / "tags.txt"
    only_taxi.write_text("TAXI\n", encoding="utf-8")
    second = settings_for(database, "2", csv, only_taxi)
    derived = stages.tag_shard(second, 0)
    assert derived.covered_runs is None  # every transaction, not only the (empty) batch changes
    stages.publish_tags(second, [derived])
    assert tags_of(second) == [(2, "TAXI")]


def test_an_unchanged_rerun_derives_nothing(csv, database):
    full_run(settings_for(database, "1", csv))
    again = settings_for(database, "2", csv)
    stages.ingest(again, ingest.read_chunks(again.transactions))
    derived = stages.tag_shard(again, 0)
    assert (derived.covered_runs, derived.rows) == ((), 0)  # nothing new or changed: nothing pending
    assert stages.publish_tags(again, [derived])[1].written == 0


def test_shards_stage_their_tags_in_the_database_until_published(csv, database):
    s = settings_for(database, "1", csv, shards=2)
    stages.begin_run(s, "tester")
    stages.ingest(s, ingest.read_chunks(s.transactions))
    shards = [stages.tag_shard(s, shard) for shard in (0, 1)]
    assert sum(d.counts["tagged"] for d in shards) == 2 and sum(d.counts["ambiguous"] for d in shards) == 1
    store = stages.store_of(s)
    assert store.table_counts()["tags"] == 0 and store.rows("SELECT COUNT(*) FROM staged_tags") == [(2,)]
    derived, published = stages.publish_tags(s, shards)
    assert derived.counts == {"tagged": 2, "untagged": 0, "ambiguous": 1} and published.written == 2
    assert store.rows("SELECT COUNT(*) FROM staged_tags") == [(0,)]
    assert store.ambiguous_wordings("F/1") == [{"wording": "TAXI TATA", "tags_found": 2, "transactions": 1}]


def test_annotations_are_derived_inside_the_database_with_their_figures(csv, database):
    s = settings_for(database, "1", csv)
    stages.begin_run(s, "tester")
    stages.ingest(s, ingest.read_chunks(s.transactions))
    derived, published = stages.annotate(s)
    assert published.written == derived.rows == 2
    assert derived.counts == {"annotated": 2, "zero_amount": 1}
    assert derived.distribution == {"SALE": 1, "SMALL EXPENSE": 1, "ZERO": 1}
    store = stages.store_of(s)
    assert store.rows("SELECT transaction_id, annotation FROM annotations ORDER BY 1") == [(1, "SALE"),
                                                                                            (2, "SMALL EXPENSE")]
    assert store.pending_runs(ANNOTATIONS) == ()
    again = settings_for(database, "2", csv)
    stages.ingest(again, ingest.read_chunks(again.transactions))
    derived, published = stages.annotate(again)  # unchanged re-run: nothing to write
    assert (derived.covered_runs, published.written, derived.counts) == ((), 0, {"annotated": 0, "zero_amount": 0})


def test_progress_logs_rows_and_rate(caplog):
    import logging

    from enrich.logs import Progress

    caplog.set_level(logging.INFO)
    progress = Progress("ingest", every_s=0.0)
    progress.add(500)
    assert "ingest: 500 rows done" in caplog.text and "rows/s" in caplog.text


def test_finishing_on_an_unusable_database_logs_instead_of_raising(tmp_path, caplog):
    from enrich.store import open_store

    not_a_database = tmp_path / "notes.db"
    not_a_database.write_bytes(b"not a database" * 200)
    stages.finish_run(open_store(not_a_database), "F/1", "failed")
    assert "could not be closed" in caplog.text and str(not_a_database) in caplog.text
    assert not_a_database.read_bytes() == b"not a database" * 200


def test_ingest_figures_carry_the_input_files_digest_and_size(csv, database):
    s = settings_for(database, "1", csv)
    stages.begin_run(s, "tester")
    stats, figures = stages.ingest(s, ingest.read_chunks(s.transactions))
    data = csv.read_bytes()
    assert figures["input_sha256"] == hashlib.sha256(data).hexdigest() and figures["input_bytes"] == len(data)
    assert (figures["rows_read"], figures["rows_loaded"]) == (stats.rows_read, stats.rows_loaded) == (3, 3)


_WORDINGS = ["CARTE TOTO", "TAXI G7", "TATA TOTO", "prlv tutu", "nothing", "TAXIS", "vir tàxi"]


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(first=st.lists(st.tuples(st.integers(1, 60), st.sampled_from(_WORDINGS)), min_size=1, max_size=40),
       changes=st.lists(st.tuples(st.integers(1, 60), st.sampled_from(_WORDINGS)), max_size=15))
def test_any_shard_count_tags_like_one_shard(tmp_path_factory, new_database, first, changes):
    """The same batches (a first load, then changes that move and drop tags) give the same tags,
    ambiguous wordings and figures with 1, 2 or 3 shards."""
    folder = tmp_path_factory.mktemp("shards")
    batches = []
    for number, rows in enumerate((first, changes or first), start=1):
        path = folder / f"b{number}.csv"
        path.write_text("id,amount,wording\n" + "".join(f"{i},1.00,{w}\n" for i, w in dict(rows).items()),
                        encoding="utf-8")
        batches.append(path)
    outcomes = []
    for shards in (1, 2, 3):
        database = new_database()
        seen = []
        for number, path in enumerate(batches, start=1):
            s = settings_for(database, str(number), path, shards=shards)
            _, (derived, _), _ = full_run(s)
            seen.append((derived.counts, stages.store_of(s).ambiguous_wordings(f"F/{number}")))
        outcomes.append((tags_of(s), seen, stages.store_of(s).pending_runs(TAGS)))
    assert outcomes[0] == outcomes[1] == outcomes[2]
