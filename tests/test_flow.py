"""The flow end to end through Metaflow's Runner: results, failures, alerts, re-runs.

Each run is a real Metaflow run on small files, with a temporary datastore and
database; Twilio requests are answered locally by the real twilio client's HTTP
being intercepted (tests/support/twilio_intercept), never the network.
"""
from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path

import pytest

from tests.conftest import REFERENCE_CSV
from tests.flow_support import ROOT, SMALL, TOKEN, TWILIO_ENV, run_flow, write_csv
from tests.support.reference import annotation_of, tag_of

pytestmark = pytest.mark.flow

DEFAULT_TAGS = ["TATA", "TOTO", "TUTU", "TAXI"]
GUARDED_STEPS = ["start", "ingest", "plan_tagging", "tag_transactions", "publish_tags", "annotate_transactions",
                 "index_wordings", "join"]
TAGGING_STEPS = ("plan_tagging", "tag_transactions", "publish_tags")



def assert_matches_rules(result, tags=DEFAULT_TAGS, mode="word"):
    stored = result.query("""SELECT t.id, t.amount_cents, t.wording, g.tag, a.annotation FROM transactions t
        LEFT JOIN tags g ON g.transaction_id = t.id LEFT JOIN annotations a ON a.transaction_id = t.id""")
    assert stored
    for _id, cents, wording, tag, annotation in stored:
        assert tag == tag_of(wording, tags, mode), wording
        assert annotation == annotation_of(Decimal(cents) / 100), cents


def test_reference_sample_is_stored_tagged_and_annotated_by_the_rules(tmp_path, flow_database):
    result = run_flow(tmp_path, REFERENCE_CSV, database=flow_database)
    assert result.returncode == 0, result.stderr
    assert result.sms == []
    assert result.count("transactions") == 50
    assert_matches_rules(result)
    assert result.query("SELECT status, rows_read, rows_loaded FROM runs") == [("succeeded", 50, 50)]
    statuses = result.query("SELECT step, status FROM step_runs ORDER BY step")
    assert {status for _, status in statuses} == {"succeeded"}
    assert len(statuses) == 9


def test_bundled_sample_shows_quarantine_at_work(tmp_path):
    result = run_flow(tmp_path)  # the default --transactions: data/transactions.csv
    assert result.returncode == 0, result.stderr
    read, loaded, rejected, duplicate = result.query(
        "SELECT rows_read, rows_loaded, rows_rejected, rows_duplicate FROM runs")[0]
    assert read == loaded + rejected + duplicate
    assert rejected >= 4 and duplicate >= 1
    reasons = [reason for (reason,) in result.query("SELECT reason FROM rejected_rows")]
    assert any(r.startswith("bad amount") for r in reasons)
    assert any(r.startswith("conflicting duplicate id") for r in reasons)
    assert_matches_rules(result)


def test_substring_mode_and_a_tag_file(tmp_path):
    tags = write_csv(tmp_path / "tags.txt", "TAXI\nTOTO\n")
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), tag_list=str(tags), match="substring")
    assert result.returncode == 0, result.stderr
    assert_matches_rules(result, ["TAXI", "TOTO"], "substring")
    assert result.query("SELECT tag FROM tags WHERE transaction_id = 7") == [("TAXI",)]  # TAXIS


@pytest.mark.parametrize("step", GUARDED_STEPS)
def test_a_failure_in_any_guarded_step_alerts_once_and_fails_the_run(tmp_path, step):
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), simulate_failure=step)
    assert result.returncode != 0
    assert len(result.sms) == 1
    sms = result.sms[0]["fields"]
    assert (sms["To"], sms["From"]) == (TWILIO_ENV["TWILIO_TO"], TWILIO_ENV["TWILIO_FROM"])
    run_number = result.run.id
    assert f"run {run_number} FAILED" in sms["Body"] and step in sms["Body"]
    logs = next(line for line in sms["Body"].splitlines() if line.startswith("Logs: "))
    interpreter, command = logs[len("Logs: "):].split(" ", 1)
    assert command == f"algorithm.py logs {run_number}/{step}"
    assert (ROOT / interpreter).is_file() or Path(interpreter).is_file()  # a python that exists, as run
    assert len(sms["Body"]) <= 1600
    assert not result.run.successful
    tags, annotations = result.count("tags"), result.count("annotations")
    if step in TAGGING_STEPS:
        assert (tags, annotations) == (0, 6)  # the other branch still published
    elif step == "annotate_transactions":
        assert (tags, annotations) == (4, 0)
    elif step in ("join", "index_wordings"):
        assert (tags, annotations) == (4, 6)
    else:
        assert (tags, annotations) == (0, 0)
    if step == "index_wordings":  # the rows wait, outside the search index, for the next run's indexing
        assert result.query("SELECT kind FROM pending_enrichment") == [("search",)]
    assert result.query("SELECT status FROM runs") == [("failed",)]
    assert result.query("SELECT COUNT(*) FROM alerts WHERE status = 'sent'") == [(1,)]
    assert TOKEN not in result.stdout + result.stderr


def test_a_crash_in_end_still_alerts_through_the_exit_hook(tmp_path):
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), simulate_failure="end")
    assert result.returncode != 0
    assert len(result.sms) == 1
    assert "end" in result.sms[0]["fields"]["Body"]


def test_twilio_error_is_logged_and_the_run_still_fails(tmp_path):
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), simulate_failure="ingest",
                      twilio_status=401)
    assert result.returncode != 0
    assert len(result.sms) == 1  # a 401 is permanent: not retried
    assert result.query("SELECT status FROM alerts") == [("failed",)]
    assert "401" in result.stdout + result.stderr
    assert TOKEN not in result.stdout + result.stderr


def test_without_twilio_configuration_one_warning_line(tmp_path):
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL), twilio=False,
                      simulate_failure="tag_transactions")
    assert result.returncode != 0
    assert result.sms == []
    output = result.stdout + result.stderr
    assert output.count("SMS alert not sent: Twilio is not configured") == 1


def test_rerunning_the_same_file_changes_nothing(tmp_path, flow_database):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    first = run_flow(tmp_path, csv, database=flow_database)
    snapshot = first.query("SELECT * FROM transactions ORDER BY id"), \
        first.query("SELECT * FROM tags ORDER BY transaction_id"), \
        first.query("SELECT * FROM annotations ORDER BY transaction_id")
    second = run_flow(tmp_path, csv, database=flow_database)
    assert second.returncode == 0, second.stderr
    assert (second.query("SELECT * FROM transactions ORDER BY id"),
            second.query("SELECT * FROM tags ORDER BY transaction_id"),
            second.query("SELECT * FROM annotations ORDER BY transaction_id")) == snapshot
    assert second.query("SELECT rows_new, rows_updated, rows_unchanged FROM runs ORDER BY started_at")[-1] \
        == (0, 0, 7)


def test_a_changed_row_is_rederived_and_its_stale_tag_removed(tmp_path, flow_database):
    run_flow(tmp_path, write_csv(tmp_path / "a.csv", SMALL), database=flow_database)
    changed = SMALL.replace("2,303.28,CARTE 06/10/21 69 TOTO", "2,-12.00,CARTE 06/10/21 69") \
                   .replace("3,-474.99,*COTISATION TATA", "3,-474.99,*COTISATION TUTU")
    result = run_flow(tmp_path, write_csv(tmp_path / "b.csv", "id,amount,wording\n8,1,new TOTO\n"
                                          + changed.split("\n", 1)[1]), database=flow_database)
    assert result.returncode == 0, result.stderr
    assert result.query("SELECT tag FROM tags WHERE transaction_id = 2") == []
    assert result.query("SELECT tag FROM tags WHERE transaction_id = 3") == [("TUTU",)]
    assert result.query("SELECT annotation FROM annotations WHERE transaction_id = 2") == [("SMALL EXPENSE",)]
    assert result.query("SELECT rows_new, rows_updated, rows_unchanged FROM runs ORDER BY started_at")[-1] \
        == (1, 2, 5)
    assert_matches_rules(result)


def test_a_file_missing_a_column_fails_ingest_and_leaves_the_database_as_it_was(tmp_path):
    good = run_flow(tmp_path, write_csv(tmp_path / "a.csv", SMALL))
    before = good.query("SELECT * FROM transactions"), good.query("SELECT * FROM tags")
    bad = write_csv(tmp_path / "bad.csv", "id,montant,wording\n1,2.00,x\n")
    result = run_flow(tmp_path, bad)
    assert result.returncode != 0
    assert (result.query("SELECT * FROM transactions"), result.query("SELECT * FROM tags")) == before
    body = result.sms[0]["fields"]["Body"]
    assert "ingest" in body and "amount" in body


def test_a_tagging_failure_is_caught_up_by_the_next_run(tmp_path):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    failed = run_flow(tmp_path, csv, simulate_failure="tag_transactions")
    assert failed.count("tags") == 0
    again = run_flow(tmp_path, csv)
    assert again.returncode == 0, again.stderr
    assert again.count("tags") == 4
    assert_matches_rules(again)


def test_an_indexing_failure_is_caught_up_by_the_next_run(tmp_path):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    failed = run_flow(tmp_path, csv, simulate_failure="index_wordings")
    search = "SELECT rowid FROM transactions_fts WHERE transactions_fts MATCH 'taxi' ORDER BY rowid"
    assert failed.query(search) == []  # loaded, tagged and annotated, not searchable yet
    again = run_flow(tmp_path, csv)  # the same file: nothing new to load, the waiting rows get indexed
    assert again.returncode == 0, again.stderr
    with_taxi = [(i,) for i, wording in again.query("SELECT id, wording FROM transactions ORDER BY id")
                 if re.search(r"(?<![^\W_])taxi(?![^\W_])", wording, re.I)]
    assert again.query(search) == with_taxi and with_taxi
    assert again.query("SELECT * FROM pending_enrichment") == []
