"""Pipeline stages called directly (no Metaflow): the re-derivation rules across runs."""
from __future__ import annotations

from pathlib import Path

import pytest

from enrich import pipeline, storage


def settings(tmp_path: Path, run: str, csv: Path, tags: Path | None = None, match: str = "word"):
    return pipeline.RunSettings.resolve(f"F/{run}", str(tmp_path / "db.db"), str(csv),
                                        str(tags) if tags else None, match)


def full_run(s: pipeline.RunSettings) -> None:
    pipeline.ingest_batch(s)
    pipeline.publish(s, pipeline.derive_tags(s))
    pipeline.annotate_in_database(s)


@pytest.fixture
def csv(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("id,amount,wording\n1,10,TOTO\n2,-5,TAXI TATA\n3,0,tata\n", encoding="utf-8")
    return path


def tags_of(s):
    with pipeline.open_database(s.database) as db:
        return db.execute("SELECT transaction_id, tag FROM tags ORDER BY 1").fetchall()


def test_a_new_tag_list_retags_every_stored_transaction(tmp_path, csv):
    first = settings(tmp_path, "1", csv)
    full_run(first)
    assert tags_of(first) == [(1, "TOTO"), (3, "TATA")]
    only_taxi = tmp_path / "tags.txt"
    only_taxi.write_text("TAXI\n", encoding="utf-8")
    second = settings(tmp_path, "2", csv, only_taxi)
    derived = pipeline.derive_tags(second)
    assert derived.covered_runs is None  # every transaction, not only the (empty) batch changes
    pipeline.publish(second, derived)
    assert tags_of(second) == [(2, "TAXI")]


def test_an_unchanged_rerun_derives_nothing(tmp_path, csv):
    full_run(settings(tmp_path, "1", csv))
    again = settings(tmp_path, "2", csv)
    pipeline.ingest_batch(again)
    derived = pipeline.derive_tags(again)
    assert (derived.covered_runs, derived.rows) == ((), 0)  # nothing new or changed: nothing pending
    assert pipeline.publish(again, derived).written == 0


def test_derived_results_go_to_scratch_files_not_the_database(tmp_path, csv):
    s = settings(tmp_path, "1", csv)
    pipeline.ingest_batch(s)
    derived = pipeline.derive_tags(s)
    assert Path(derived.path).is_file() and Path(derived.path).parent == s.work_dir
    assert derived.counts == {"tagged": 2, "untagged": 0, "ambiguous": 1}
    with pipeline.open_database(s.database) as db:
        assert storage.table_counts(db)["tags"] == 0


def test_annotations_are_derived_inside_the_database_with_their_figures(tmp_path, csv):
    s = settings(tmp_path, "1", csv)
    pipeline.ingest_batch(s)
    derived, published = pipeline.annotate_in_database(s)
    assert derived.path is None and published.written == derived.rows == 2
    assert derived.counts == {"annotated": 2, "zero_amount": 1}
    assert derived.distribution == {"SALE": 1, "SMALL EXPENSE": 1, "ZERO": 1}
    with pipeline.open_database(s.database) as db:
        assert db.execute("SELECT transaction_id, annotation FROM annotations ORDER BY 1").fetchall() == [
            (1, "SALE"), (2, "SMALL EXPENSE")]
        assert storage.pending_runs(db, storage.ANNOTATIONS) == ()
    again = settings(tmp_path, "2", csv)
    pipeline.ingest_batch(again)
    derived, published = pipeline.annotate_in_database(again)  # unchanged re-run: nothing to write
    assert (derived.covered_runs, published.written, derived.counts) == ((), 0, {"annotated": 0, "zero_amount": 0})


def test_finish_removes_the_scratch_directory_of_a_succeeded_run(tmp_path, csv):
    s = settings(tmp_path, "1", csv)
    full_run(s)
    assert s.work_dir.exists()
    pipeline.finish(s.database, s.run_id, "succeeded")
    assert not s.work_dir.exists()


def test_progress_logs_rows_and_rate(caplog):
    import logging
    caplog.set_level(logging.INFO)
    progress = pipeline.Progress("ingest", every_s=0.0)
    progress.add(500)
    assert "ingest: 500 rows done" in caplog.text and "rows/s" in caplog.text


def test_finish_on_an_unusable_database_logs_instead_of_raising(tmp_path, caplog):
    not_a_database = tmp_path / "notes.db"
    not_a_database.write_bytes(b"not a database" * 200)
    pipeline.finish(not_a_database, "F/1", "failed")
    assert "could not be closed" in caplog.text and str(not_a_database) in caplog.text
    assert not_a_database.read_bytes() == b"not a database" * 200


def test_ingest_figures_carry_the_input_files_digest_and_size(tmp_path, csv):
    import hashlib

    stats, figures = pipeline.ingest_with_figures(settings(tmp_path, "1", csv))
    data = csv.read_bytes()
    assert figures["input_sha256"] == hashlib.sha256(data).hexdigest() and figures["input_bytes"] == len(data)
    assert (figures["rows_read"], figures["rows_loaded"]) == (stats.rows_read, stats.rows_loaded) == (3, 3)
