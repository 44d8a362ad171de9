"""Monitoring end to end: the ledger, the checks catching loss and tampering, and alerts."""
from __future__ import annotations


import pytest

from enrich.generate import write_csv as generate_csv
from tests.conftest import REFERENCE_CSV
from tests.support.tamper import tamper
from tests.flow_support import run_flow

pytestmark = pytest.mark.flow

CRITICAL_CHECKS = {"accounting", "control_total", "annotations_complete", "tags_complete",
                   "referential_integrity", "reject_ratio"}


def test_a_clean_run_records_the_ledger_and_passes_every_check(tmp_path):
    result = run_flow(tmp_path, REFERENCE_CSV)
    assert result.returncode == 0, result.stderr
    (run_id, status, started, finished, read, loaded, tagged, annotated), = result.query(
        "SELECT run_id, status, started_at, finished_at, rows_read, rows_loaded, tagged, annotated FROM runs")
    assert run_id == result.run.pathspec and status == "succeeded" and started < finished
    assert (read, loaded, tagged, annotated) == (50, 50, 12, 50)
    import hashlib
    assert result.query("SELECT input_sha256, input_bytes FROM runs") == [
        (hashlib.sha256(REFERENCE_CSV.read_bytes()).hexdigest(), REFERENCE_CSV.stat().st_size)]
    checks = dict(result.query("SELECT check_name, passed FROM check_results WHERE run_id = ?", (run_id,)))
    assert CRITICAL_CHECKS <= set(checks) and all(checks.values())
    assert {"volume", "drift_tagging", "drift_annotations", "amount_outliers"} <= set(checks)
    steps = result.query("SELECT step, status, duration_s FROM step_runs WHERE run_id = ?", (run_id,))
    assert len(steps) == 9 and all(status == "succeeded" and duration >= 0 for _, status, duration in steps)


def test_annotations_deleted_between_two_runs_fail_the_next_run_and_alert(tmp_path):
    first = run_flow(tmp_path, REFERENCE_CSV)
    assert first.returncode == 0, first.stderr
    tamper(first.store, "DELETE FROM annotations WHERE transaction_id IN (3, 17, 42)")
    second = run_flow(tmp_path, REFERENCE_CSV)
    assert second.returncode != 0
    assert len(second.sms) == 1
    body = second.sms[0]["fields"]["Body"]
    assert "annotations_complete" in body and "3 missing" in body
    assert second.query("SELECT passed, observed FROM check_results WHERE run_id = ? AND "
                        "check_name = 'annotations_complete'", (second.run.pathspec,)) == [(0, "3 missing")]
    assert second.query("SELECT status FROM runs WHERE run_id = ?", (second.run.pathspec,)) == [("failed",)]


def test_a_tampered_tag_is_caught_reported_and_repaired(tmp_path, flow_database):
    first = run_flow(tmp_path, REFERENCE_CSV, database=flow_database)
    published = first.query("SELECT * FROM tags ORDER BY transaction_id")
    tamper(first.store, "UPDATE tags SET tag = 'TAXI' WHERE transaction_id = 2")
    second = run_flow(tmp_path, REFERENCE_CSV, database=flow_database)
    assert second.returncode != 0
    assert "tags_complete" in second.sms[0]["fields"]["Body"]
    (passed, observed, message), = second.query(
        "SELECT passed, observed, message FROM check_results WHERE run_id = ? AND check_name = 'tags_complete'",
        (second.run.pathspec,))
    assert (passed, observed) == (0, "1 wrong") and "changed outside the pipeline" in message
    repaired = second.query("SELECT transaction_id, tag FROM tags ORDER BY transaction_id")
    assert repaired == [(key, tag) for key, tag, _run in published]  # re-derived whole: as published


@pytest.mark.slow
def test_the_original_jobs_lost_annotations_are_caught_at_one_million_rows(tmp_path):
    """Inject the reference defect (about 1 annotation in 10,000 dropped) into a 1M-row run."""
    csv = tmp_path / "1m.csv"
    generate_csv(csv, rows=1_000_000, seed=11)
    result = run_flow(tmp_path, csv, fault="drop_annotations")
    assert result.returncode != 0
    (observed,), = result.query("SELECT observed FROM check_results WHERE check_name = 'annotations_complete'")
    missing = int(observed.split()[0])
    assert 20 <= missing <= 250, observed  # about 100 of ~994,000 annotations
    assert len(result.sms) == 1 and "annotations_complete" in result.sms[0]["fields"]["Body"]
    assert result.count("tags") == result.query("SELECT tagged FROM runs")[0][0]  # the other branch is whole
