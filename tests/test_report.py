"""The run report: the data model read back from the database, its card, and the card of real runs."""
from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import pyarrow as pa

from enrich import checks, report
from enrich.report import NO_ANNOTATION, NO_TAG, ReportError, build_report, report_markdown
from enrich.store import AlertRecord, CheckRecord, StepAttempt, open_store
from tests.support.tamper import tamper
from tests.flow_support import SMALL, TOKEN, run_flow, write_csv

PHONE = "+33600000001"


def chunk(rows=(), rejected=()):
    valid = pd.DataFrame(list(rows), columns=["line", "id", "amount_cents", "wording"])
    bad = pd.DataFrame(list(rejected), columns=["line", "raw", "reason"])
    return SimpleNamespace(valid=valid.astype({"line": "int64", "id": "int64", "amount_cents": "int64"}),
                           rejected=bad)


def load_run(store, run_id, rows, rejected=(), *, started, finished, status="succeeded", **figures):
    store.record_run(run_id, status="running", started_at=started, user="ana", input_path="/data/t.csv",
                     match_mode="word")
    stats = store.load_batch(run_id, [chunk(rows, rejected)])
    store.record_run(run_id, **{k: v for k, v in stats.as_dict().items() if k.startswith("rows_")}, **figures)
    store.record_run(run_id, status=status, finished_at=finished)
    return stats


def publish_all(store, run_id, tags, annotations):
    """The given tags and annotations, as a run's publish would leave them (whole tables replaced)."""
    store.stage_tags(run_id, 0, pa.table({"transaction_id": pa.array(list(tags), pa.int64()),
                                          "tag": pa.array(list(tags.values()), pa.large_string())}).to_batches(),
                     pa.table({"wording": pa.array([], pa.large_string()), "tags_found": pa.array([], pa.int64()),
                               "transactions": pa.array([], pa.int64())}))
    store.publish_tags(run_id, None, {}, None)
    tamper(store, "DELETE FROM annotations",
           *(f"INSERT INTO annotations (transaction_id, annotation, run) VALUES ({i}, '{label}', "
             f"(SELECT run_key FROM run_keys WHERE run_id = '{run_id}'))" for i, label in annotations.items()))


def attempt(run_id, step, task, number, status, started, finished=None, duration=None, error=None):
    return StepAttempt(run_id, step, task, number, status, started, finished, duration, *(error or (None, None)))


@pytest.fixture
def two_runs(any_store):
    """F/1 (3 rows, succeeded, 10 s), then F/2 (1 unchanged, 1 updated, 2 new, 2 rejected; 12.5 s)."""
    store = any_store
    load_run(store, "F/1", [(2, 1, -28366, "PRLV TATA"), (3, 2, 30328, "CARTE TOTO"), (4, 3, -47499, "COTISATION")],
             started="2025-01-01T10:00:00.000+00:00", finished="2025-01-01T10:00:10.000+00:00",
             tagged=2, untagged=1, ambiguous=0, annotated=3, zero_amount=0)
    store.record_step_attempt(attempt("F/1", "start", "1", 0, "succeeded", "2025-01-01T10:00:00.100+00:00",
                                      "2025-01-01T10:00:00.200+00:00", 0.1))
    load_run(store, "F/2", [(2, 1, -28366, "PRLV TATA"), (3, 2, 1000, "CARTE TOTO"), (4, 4, 0, "VIR TAXI"),
                            (5, 5, -500, "TUTU remb")],
             [(6, "x,abc,BAD", "bad id: 'x' is not a positive integer"), (7, "6,1.2.3,OOPS", "bad amount: '1.2.3'")],
             started="2025-01-02T11:00:00.000+00:00", finished="2025-01-02T11:00:12.500+00:00", status="failed",
             tagged=3, untagged=1, ambiguous=0, annotated=3, zero_amount=1)
    publish_all(store, "F/2", {1: "TATA", 2: "TOTO", 4: "TAXI", 5: "TUTU"},
                {1: "EXPENSE", 2: "SALE", 3: "EXPENSE", 5: "SMALL EXPENSE"})
    for step, number, status, started, duration, error in (
            ("start", 0, "succeeded", "2025-01-02T11:00:00.100+00:00", 0.5, None),
            ("ingest", 0, "failed", "2025-01-02T11:00:01.000+00:00", 1.25, ("OSError", "disk full")),
            ("ingest", 1, "succeeded", "2025-01-02T11:00:03.000+00:00", 2.0, None),
            ("end", 0, "running", "2025-01-02T11:00:12.000+00:00", None, None)):
        store.record_step_attempt(attempt("F/2", step, "7", number, status, started,
                                          None if duration is None else "2025-01-02T11:00:12.000+00:00", duration,
                                          error))
    results = [checks.check_accounting(6, 4, 2, 0), checks.check_reject_ratio(6, 2, 0.01),
               checks.check_volume(6, [3], 0.5), checks.check_outliers(1, 1, (-100, 100))]
    anomalies = pa.table({"transaction_id": [2], "kind": ["amount_outlier"], "amount_cents": [1000],
                          "detail": ["outside -1.00 EUR..1.00 EUR"]})
    store.save_check_results("F/2", [CheckRecord(**r.as_row()) for r in results], anomalies)
    store.record_alert(AlertRecord("F/2", "sms", "sent", PHONE, "TransactionEnrichmentFlow run 2 failed"))
    return store


# --------------------------------------------------------------------------- the data model
def test_headline_figures_and_deltas_from_the_previous_run(two_runs):
    built = build_report(two_runs, "F/2")
    assert (built.run_id, built.status, built.user, built.input_path) == ("F/2", "failed", "ana", "/data/t.csv")
    assert (built.previous_run_id, built.previous_status) == ("F/1", "succeeded")
    figures = {f.key: (f.value, f.previous, f.delta) for f in built.figures}
    assert figures == {
        "rows_read": (6, 3, 3), "rows_loaded": (4, 3, 1), "rows_new": (2, 3, -1), "rows_updated": (1, 0, 1),
        "rows_unchanged": (1, 0, 1), "rows_rejected": (2, 0, 2), "rows_duplicate": (0, 0, 0),
        "tagged": (3, 2, 1), "untagged": (1, 1, 0), "ambiguous": (0, 0, 0),
        "annotated": (3, 3, 0), "zero_amount": (1, 0, 1), "duration_s": (12.5, 10.0, 2.5),
    }
    assert built.duration_s == 12.5


def test_the_first_run_has_nothing_to_compare_with(two_runs):
    built = build_report(two_runs, "F/1")
    assert built.previous_run_id is None
    assert built.figure("rows_read").value == 3
    assert all(f.previous is None and f.delta is None for f in built.figures)
    assert "nothing to compare with" in report_markdown(built)


def test_checks_failed_first_then_by_severity(two_runs):
    built = build_report(two_runs, "F/2")
    assert [(c.name, c.severity, c.passed) for c in built.checks] == [
        ("reject_ratio", "critical", False), ("amount_outliers", "warning", False),
        ("volume", "warning", False), ("accounting", "critical", True)]
    reject = built.checks[0]
    assert (reject.observed, reject.expected) == ("33.3333%", "<= 1.00%")
    assert reject.message.startswith("2 of 6 rows rejected")
    assert [c.name for c in built.failed_checks] == ["reject_ratio", "amount_outliers", "volume"]


def test_steps_of_this_run_only_in_start_order(two_runs):
    built = build_report(two_runs, "F/2")
    assert [(s.step, s.retry, s.status, s.duration_s, s.error) for s in built.steps] == [
        ("start", 0, "succeeded", 0.5, None), ("ingest", 0, "failed", 1.25, "OSError: disk full"),
        ("ingest", 1, "succeeded", 2.0, None), ("end", 0, "running", None, None)]
    assert [v["attempt"] for v in built.charts["steps"]["data"]["values"]] == ["start", "ingest", "ingest #2"]


def test_whole_database_distributions_and_samples(two_runs):
    built = build_report(two_runs, "F/2")
    assert built.tag_counts == {"TATA": 1, "TAXI": 1, "TOTO": 1, "TUTU": 1, NO_TAG: 1}
    assert built.annotation_counts == {"LARGE SALE": 0, "SALE": 1, "SMALL EXPENSE": 1, "EXPENSE": 2,
                                       NO_ANNOTATION: 1}
    assert [r["line"] for r in built.rejected_sample] == [6, 7]
    assert built.rejected_sample[0]["reason"].startswith("bad id")
    assert built.rejected_total == 2
    assert built.anomalies_sample == ({"transaction_id": 2, "kind": "amount_outlier", "amount_cents": 1000,
                                       "detail": "outside -1.00 EUR..1.00 EUR", "wording": "CARTE TOTO"},)
    assert [(a.channel, a.status) for a in built.alerts] == [("sms", "sent")]


def test_the_whole_database_counts_are_the_ones_the_checks_read(two_runs):
    """The run's checks count the tags and annotations on their way and record them; the report
    reads those (no second scan), and counts the tables itself only for a run that has none."""
    from enrich.checking import whole_database_checks
    from enrich.tagging import build_tag_list

    _, counted = whole_database_checks(two_runs, build_tag_list(["TATA", "TOTO", "TUTU", "TAXI"]), {})
    assert counted == {"tags": two_runs.value_counts("tags"), "annotations": two_runs.value_counts("annotations")}
    recorded = {"tags": {"TATA": 7}, "annotations": {"SALE": 5}}
    for kind, counts in recorded.items():
        two_runs.save_distribution("F/2", f"whole_database_{kind}", counts)
    built = build_report(two_runs, "F/2")
    assert (built.tag_counts["TATA"], built.annotation_counts["SALE"]) == (7, 5)  # what was recorded
    assert build_report(two_runs, "F/1").tag_counts["TATA"] == 1  # nothing recorded: counted now


def test_samples_are_limited(two_runs):
    built = build_report(two_runs, "F/2", sample_rows=1)
    assert [r["line"] for r in built.rejected_sample] == [6]
    assert built.rejected_total == 2


def test_charts_are_self_contained_vega_lite(two_runs):
    built = build_report(two_runs, "F/2")
    assert set(built.charts) == {"annotations", "tags", "steps"}
    tags = built.charts["tags"]
    assert {(v["tag"], v["count"]) for v in tags["data"]["values"]} == set(built.tag_counts.items())
    assert [v["kind"] for v in tags["data"]["values"]][-1] == "muted"
    for spec in built.charts.values():
        text = json.dumps(spec)
        assert "$schema" not in spec and "http" not in text and '"url"' not in text


def test_a_run_missing_from_the_ledger_is_an_error(any_store):
    with pytest.raises(ReportError, match="F/9 is not in the ledger"):
        build_report(any_store, "F/9")


def test_a_run_with_few_figures_still_reports(any_store):
    any_store.record_run("F/1", status="failed")  # e.g. start failed: no figures, no checks, no steps
    built = build_report(any_store, "F/1")
    assert built.duration_s is None and built.checks == () and built.steps == ()
    assert built.figure("rows_read").value is None
    text = report_markdown(built)
    assert "No check results were recorded" in text and "none recorded" in text


def test_markdown_headline(two_runs):
    text = report_markdown(build_report(two_runs, "F/2"))
    assert text.startswith("# Run F/2: FAILED\n")
    assert "took **12.5 s**" in text and "Started 2025-01-02 11:00:00 UTC" in text
    assert "**6** rows read: 4 loaded (2 new, 1 updated, 1 unchanged), 2 rejected, 0 duplicate." in text
    assert "Tagging: 3 tagged, 1 untagged, 0 ambiguous." in text
    assert "**3 of 4 checks failed** (1 critical): reject_ratio, amount_outliers, volume." in text
    assert "previous run F/1 (succeeded)" in text
    assert "\\" not in text  # the card's Markdown renderer drops backslash-escaped characters


def test_markdown_literal_never_lets_markup_through():
    assert report.markdown_literal("TransactionEnrichmentFlow/17953") == "TransactionEnrichmentFlow/17953"
    assert report.markdown_literal("reject_ratio") == "reject_ratio"
    assert report.markdown_literal("<img src=x> **b** __c__") == "`<img src=x> **b** __c__`"
    assert report.markdown_literal("a`b\nc") == "`a'b c`"


def test_formatting():
    assert report.format_duration(0.0123) == "12 ms"
    assert report.format_duration(12.46) == "12.5 s"
    assert report.format_duration(125) == "2 min 05 s"
    assert report.format_number(12345) == "12,345" and report.format_number(3, signed=True) == "+3"
    assert report.format_number(None) == "—"
    assert report.format_cents(-28366) == "-283.66 EUR"
    assert report.duration_seconds("2025-01-01T10:00:00+00:00", "not a time") is None
    assert report.duration_seconds(None, "2025-01-01T10:00:00+00:00") is None


# --------------------------------------------------------------------------- the card
class FakeCard(list):
    """Stands in for ``current.card["run_report"]``: collects components, records refreshes."""

    def __init__(self):
        super().__init__()
        self.refreshes = []

    def refresh(self, data=None, force=False):
        self.refreshes.append(force)


def rendered(components) -> str:
    return json.dumps([component.render() for component in components])


def test_render_run_card_shows_figures_checks_steps_and_samples(two_runs):
    from metaflow.cards import Markdown, Table, VegaChart

    from flows.card import render_run_card

    card = []
    render_run_card(card, build_report(two_runs, "F/2"))
    assert isinstance(card[0], Markdown)
    assert {type(c) for c in card} == {Markdown, Table, VegaChart}
    text = rendered(card)
    for expected in ("reject_ratio", "amount_outliers", "volume", "accounting", "OSError: disk full",
                     "x,abc,BAD", "CARTE TOTO", "valueBox", "Annotations (whole database)", "Tags (whole database)",
                     "Step durations (s)", '"+3"', '"+2.5 s"', "F/1 (succeeded)"):
        assert expected in text, expected
    assert PHONE not in text  # alert recipients are left out


def test_render_run_card_with_few_figures(any_store):
    from flows.card import render_run_card

    any_store.record_run("F/1", status="failed")
    card = []
    render_run_card(card, build_report(any_store, "F/1"))
    assert "no check results were recorded" in rendered(card)


def test_draw_run_report_on_the_step_card(two_runs, monkeypatch):
    import flows.card

    card = FakeCard()
    monkeypatch.setattr(flows.card, "current", SimpleNamespace(card={"run_report": card}))
    assert flows.card.draw_run_report(two_runs, "F/2") is True
    assert "reject_ratio" in rendered(card)
    assert card.refreshes == []  # a succeeding task's card is rendered by Metaflow when the task ends


def test_a_failing_task_renders_its_card_before_raising(two_runs, monkeypatch):
    import flows.card

    card = FakeCard()
    monkeypatch.setattr(flows.card, "current", SimpleNamespace(card={"run_report": card}))
    assert flows.card.draw_run_report(two_runs, "F/2", task_will_fail=True) is True
    assert card.refreshes == [True, True]


@pytest.mark.parametrize("where", ["unknown run", "missing directory"])
def test_report_problems_are_logged_and_shown_never_raised(any_store, tmp_path, monkeypatch, caplog, where):
    import flows.card

    card = FakeCard()
    monkeypatch.setattr(flows.card, "current", SimpleNamespace(card={"run_report": card}))
    store = any_store if where == "unknown run" else open_store(tmp_path / "nope" / "db.db")
    assert flows.card.draw_run_report(store, "F/9", task_will_fail=True) is False
    assert "Run report unavailable" in rendered(card)
    assert card.refreshes == [True, True]
    assert "run report not drawn for F/9" in caplog.text


def test_a_step_without_the_card_decorator_is_left_alone(two_runs, monkeypatch, caplog):
    import flows.card

    monkeypatch.setattr(flows.card, "current", SimpleNamespace())
    assert flows.card.draw_run_report(two_runs, "F/2", task_will_fail=True) is False
    assert "has no @card" in caplog.text


# --------------------------------------------------------------------------- real runs
CHECK_NAMES = ("accounting", "control_total", "reject_ratio", "volume", "annotations_complete", "tags_complete",
               "referential_integrity", "drift_tagging", "drift_annotations", "amount_outliers")
#: Metaflow's card stylesheet imports the Roboto web font; offline the card falls back to a system font.
METAFLOW_FONT_IMPORT = "https://fonts.googleapis.com/css2?family=Roboto:wght@300;400;500;700&display=swap"


def card_html(result) -> str:
    from metaflow.cards import get_cards

    cards = get_cards(result.run["end"].task, id="run_report")
    assert len(cards) == 1
    return cards[0].get()


def card_text(html: str) -> str:
    """The card's components (Metaflow stores them base64-encoded in the page), as JSON text."""
    payloads = re.findall(r'window\.__MF_DATA__\["[^"]+"\] = "([A-Za-z0-9+/=]+)"', html)
    assert len(payloads) == 1
    return base64.b64decode(payloads[0]).decode("utf-8")


def assert_offline(html: str) -> None:
    assert not re.search(r"<script[^>]*\ssrc\s*=", html, re.I), "external script"
    assert not re.search(r"<link[^>]*\shref\s*=\s*[\"']?(https?:)?//", html, re.I), "external stylesheet"
    imports = set(re.findall(r"@import\s*(?:url\()?\s*[\"']?(https?://[^\"')\s]+)", html))
    assert imports <= {METAFLOW_FONT_IMPORT}, imports
    assert "vega-lite" in html  # the chart library is inlined


@pytest.fixture
def cards_beside_the_datastore(tmp_path):
    """Have the runs in ``tmp_path`` write their cards where the Metaflow client reads them.

    With METAFLOW_DATASTORE_SYSROOT_LOCAL set (tests/conftest.py), Metaflow 2.19 reads a task's
    cards under that root (``<root>/.metaflow/mf.cards``), but writes them under the .metaflow
    directory nearest to the run's working directory (METAFLOW_CARD_LOCALROOT is not honoured:
    ``CardDatastore.get_storage_root`` returns None for it). Linking the working directory's
    .metaflow to the datastore's makes both the same place.
    """
    datastore = Path(os.environ["METAFLOW_DATASTORE_SYSROOT_LOCAL"]) / ".metaflow"
    datastore.mkdir(parents=True, exist_ok=True)
    (tmp_path / ".metaflow").symlink_to(datastore, target_is_directory=True)


@pytest.mark.flow
@pytest.mark.usefixtures("cards_beside_the_datastore")
def test_the_end_step_card_of_a_real_run(tmp_path):
    result = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL))
    assert result.returncode == 0, result.stderr
    html = card_html(result)
    assert_offline(html)
    text = card_text(html)
    assert f"# Run {result.run.pathspec}: SUCCEEDED" in text
    assert "**7** rows read: 7 loaded (7 new, 0 updated, 0 unchanged), 0 rejected, 0 duplicate." in text
    for name in CHECK_NAMES:
        assert f'"{name}"' in text, name
    assert "Annotations (whole database)" in text and "Step durations (s)" in text
    assert TOKEN not in html and TOKEN not in text


@pytest.mark.flow
@pytest.mark.usefixtures("cards_beside_the_datastore")
def test_a_failed_run_has_its_card_with_the_change_from_the_previous_run(tmp_path):
    first = run_flow(tmp_path, write_csv(tmp_path / "t.csv", SMALL))
    assert first.returncode == 0, first.stderr
    result = run_flow(tmp_path, write_csv(tmp_path / "bad.csv", SMALL + "8,abc,BAD AMOUNT\n"))
    assert result.returncode != 0
    assert len(result.sms) == 1  # the alert went out (before the card was drawn)
    html = card_html(result)
    assert_offline(html)
    text = card_text(html)
    assert f"# Run {result.run.pathspec}: FAILED" in text
    assert "(1 critical): reject_ratio" in text
    assert f"previous run {first.run.pathspec} (succeeded)" in text
    assert '["rows", "read", "8", "7", "+1"]' in text and '["rows", "rejected", "1", "0", "+1"]' in text
    assert "8,abc,BAD AMOUNT" in text
    assert TOKEN not in html and TOKEN not in text



# --------------------------------------------------------------------------- the closing summary
def test_the_closing_summary_on_each_backend(any_store):
    from enrich import summary

    load_run(any_store, "F/1", [(2, 1, 1250, "TAXI"), (3, 2, -300, "x")], [(4, "1,x,y", "bad amount: 'x'")],
             started="2026-01-01T00:00:00.000+00:00", finished="2026-01-01T00:00:05.000+00:00",
             tagged=1, untagged=1, ambiguous=0, annotated=2, zero_amount=0)
    text = summary.render(any_store, "F/1", "python algorithm.py")
    lines = text.splitlines()
    assert lines[0] == f"Run F/1 SUCCEEDED in {any_store.location.display}"
    assert "3 read, 2 loaded (2 new, 0 updated, 0 unchanged), 1 rejected (bad amount (1))" in lines[1]
    assert "1 tagged, 1 untagged, 0 ambiguous; annotations: 2 annotated" in lines[2]
    if any_store.backend == "sqlite":
        assert f"make browse DATABASE={any_store.location.display}" in lines[-1]
    else:
        assert f"enrich query runs_by_status --database {any_store.location.display}" in lines[-1]
    assert "card view end" in lines[-1]


def test_a_failed_run_that_loaded_nothing_says_so(any_store):
    from enrich import summary

    any_store.record_run("F/2", status="failed")
    text = summary.render(any_store, "F/2", "python algorithm.py")
    assert "rows: nothing loaded" in text and "?" not in text and "tags:" not in text


def test_a_bare_resume_that_only_reran_end_says_what_end_reported(any_store):
    from enrich import summary
    from enrich.store import StepAttempt

    any_store.record_run("F/3", status="failed")
    any_store.record_step_attempt(StepAttempt(
        run_id="F/3", step="end", task_id="9", attempt=0, status="failed", started_at="2026-01-01T00:00:00.000+00:00",
        finished_at="2026-01-01T00:00:01.000+00:00", duration_s=1.0, error_type="RunFailed",
        error_message="1 failure(s): tag_transactions: SimulatedFailure: simulated"))
    text = summary.render(any_store, "F/3", "python algorithm.py")
    assert "checks: none run by this run" in text
    assert "  end: RunFailed: 1 failure(s): tag_transactions: SimulatedFailure: simulated" in text
    assert "logs F/3/end" in text
