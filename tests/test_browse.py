"""Browsing: datasette's own test client against a database produced by a real flow run.

Every table, view and canned query answers with the expected rows; full-text search
works from datasette and follows upserts; the metadata describes every table, view
and column of the schema; each canned query's plan avoids full scans of the large
tables (EXPLAIN QUERY PLAN), except a declared guarded one that a healthy database
never executes. Every CSV datasette serves has its formula cells escaped (the
project's plugin, enrich.datasette_csv, loaded by datasette through its entry point),
while JSON and numbers stay as stored.

datasette reads the files it serves with Python's sqlite3 in this process, so the tests
read those files with sqlite3 too (:func:`read`); files datasette never opens are
written and read through the store.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import re
import sqlite3
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import pandas as pd
import pytest
from datasette.app import Datasette

from enrich import browse, datasette_csv
from enrich.store import DatabaseMissing, open_store
from enrich.store.sqlite.queries import BROWSE_VIEWS, CANNED_QUERIES
from enrich.store.sqlite.schema import FTS_AUTOMERGE, FTS_TABLE
from tests.flow_support import run_once_per_module

BIG_TABLES = ("transactions", "tags", "annotations")


# --------------------------------------------------------------------------- fixtures
def read(path: Path, sql: str, params=()) -> list[tuple]:
    """Rows of one statement on ``path``, opened read-only with sqlite3 (the library datasette uses)."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        return [tuple(row) for row in conn.execute(sql, params)]


@pytest.fixture(scope="module")
def flow(tmp_path_factory):
    """One real flow run on the bundled sample (800 rows, a few malformed), for the whole module."""
    result = run_once_per_module(tmp_path_factory, "browse-flow")

    def query(sql: str, params=()) -> list[tuple]:
        return read(result.database, sql, params)

    return SimpleNamespace(path=result.database, run_id=query("SELECT run_id FROM runs")[0][0], query=query)


@pytest.fixture(scope="module")
def site(flow):
    """datasette on the flow's database with our metadata, driven by its in-process test client."""
    loop = asyncio.new_event_loop()
    name = browse.database_name(flow.path)
    ds = Datasette([str(flow.path)], metadata=browse.metadata(name), settings=browse.DATASETTE_SETTINGS)
    loop.run_until_complete(ds.invoke_startup())

    def get(path: str):
        response = loop.run_until_complete(ds.client.get(path))
        assert response.status_code == 200, (path, response.status_code, response.text[:2000])
        return response

    yield SimpleNamespace(get=get, name=name, ds=ds)
    loop.close()


SCHEMA_OBJECTS = ("SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') "
                  "AND name NOT LIKE 'sqlite_%'")


def schema_objects(rows: list[tuple]) -> dict[str, str]:
    """Tables and views of a database (name -> type), without SQLite's and FTS5's internal tables."""
    return {name: kind for name, kind in rows if not name.startswith(f"{FTS_TABLE}_")}


# --------------------------------------------------------------------------- metadata
def test_every_table_view_and_column_of_the_schema_is_described(db_path):
    store = open_store(db_path)
    store.prepare()  # every migration applied
    objects = schema_objects(store.rows(SCHEMA_OBJECTS))
    assert set(BROWSE_VIEWS) <= {name for name, kind in objects.items() if kind == "view"}
    assert set(objects) == set(browse.TABLES), "metadata and schema disagree on the tables and views"
    for name in objects:
        described = browse.TABLES[name]
        assert len(str(described["description"])) > 20, name
        columns = {row[1] for row in store.rows(f"PRAGMA table_xinfo([{name}])")}
        assert columns == set(described["columns"]), f"columns of {name}"
        assert all(len(text) > 2 for text in described["columns"].values()), name


def test_metadata_has_title_sorts_facets_search_and_every_canned_query(flow):
    meta = browse.metadata("database")
    assert meta["title"] and "EUR" in meta["description"]
    tables = meta["databases"]["database"]["tables"]
    assert tables["annotations"]["facets"] == ["annotation"]
    assert tables["tags"]["facets"] == ["tag"]
    assert "status" in tables["runs"]["facets"] and tables["runs"]["sort_desc"] == "started_at"
    assert "EUR" in tables["transactions"]["columns"]["amount"]
    assert "cents" in tables["transactions"]["columns"]["amount_cents"]
    assert tables["enriched_transactions"]["fts_table"] == FTS_TABLE
    queries = meta["databases"]["database"]["queries"]
    assert set(queries) == set(CANNED_QUERIES) and len(queries) >= 8
    assert not set(queries) & set(tables), "a canned query named like a table hides that table in datasette"
    assert all(q["sql"] == CANNED_QUERIES[name].sql for name, q in queries.items())


def test_serve_refuses_a_missing_database_and_builds_the_datasette_command(tmp_path):
    with pytest.raises(DatabaseMissing, match="make run"):
        browse.prepare(tmp_path / "none.db")
    assert not (tmp_path / "none.db").exists()
    command = browse.datasette_command(tmp_path / "x.db", tmp_path / "m.json", 8123, "127.0.0.1")
    assert command[:5] == [sys.executable, "-m", "datasette", "serve", str(tmp_path / "x.db")]
    assert command[command.index("--port") + 1] == "8123" and "sql_time_limit_ms" in command


# --------------------------------------------------------------------------- tables and views
def test_every_table_and_view_answers_with_all_its_rows(flow, site):
    for name in schema_objects(flow.query(SCHEMA_OBJECTS)):
        if name == FTS_TABLE:
            continue  # browsed through transactions' search box
        data = site.get(f"/{site.name}/{name}.json?_size=max&_shape=objects").json()
        expected = flow.query(f"SELECT COUNT(*) FROM [{name}]")[0][0]
        assert data["filtered_table_rows_count"] == expected, name
        assert len(data["rows"]) == min(expected, 1000), name
    assert flow.query("SELECT COUNT(*) FROM transactions")[0][0] > 700
    assert flow.query("SELECT COUNT(*) FROM rejected_rows")[0][0] > 0


def test_enriched_transactions_joins_tag_annotation_and_lineage(flow, site):
    rows = site.get(f"/{site.name}/enriched_transactions.json?_size=max&_shape=objects").json()["rows"]
    view = pd.DataFrame(rows).set_index("id")
    tags = dict(flow.query("SELECT transaction_id, tag FROM tags"))
    annotations = dict(flow.query("SELECT transaction_id, annotation FROM annotations"))
    stored = flow.query("SELECT id, amount_cents, wording FROM transactions ORDER BY id")
    assert list(view.index) == [row[0] for row in stored][:1000]
    for tid, cents, wording in stored[:1000]:
        row = view.loc[tid]
        assert (row["amount_cents"], row["wording"], row["amount"]) == (cents, wording, cents / 100)
        assert (row["tag"] if isinstance(row["tag"], str) else None) == tags.get(tid)
        assert (row["annotation"] if isinstance(row["annotation"], str) else None) == annotations.get(tid)
        assert row["first_run_id"] == row["last_changed_run_id"] == flow.run_id
        if tid in tags:
            assert row["tag_run_id"] == flow.run_id
    assert set(view["annotation_run_id"].dropna()) == {flow.run_id}


@pytest.mark.parametrize("view, table, column", [("tag_summary", "tags", "tag"),
                                                 ("annotation_summary", "annotations", "annotation")])
def test_aggregate_views_count_sum_and_average_in_euros(flow, site, view, table, column):
    rows = site.get(f"/{site.name}/{view}.json?_shape=objects").json()["rows"]
    joined = pd.DataFrame(flow.query(f"SELECT x.{column}, t.amount_cents FROM {table} x "
                                     "JOIN transactions t ON t.id = x.transaction_id"), columns=[column, "cents"])
    expected = joined.groupby(column)["cents"].agg(["count", "sum", "mean", "min", "max"])
    assert {r[column] for r in rows} == set(expected.index) and len(rows) >= 3
    for row in rows:
        want = expected.loc[row[column]]
        assert row["transactions"] == want["count"]
        assert row["total_eur"] == pytest.approx(want["sum"] / 100, abs=0.005)
        assert row["mean_eur"] == pytest.approx(want["mean"] / 100, abs=0.005)
        assert (row["min_eur"], row["max_eur"]) == (want["min"] / 100, want["max"] / 100)
    assert sum(r["transactions"] for r in rows) == flow.query(f"SELECT COUNT(*) FROM {table}")[0][0]


def test_run_summary_has_the_run_with_its_duration_and_no_failures(flow, site):
    rows = site.get(f"/{site.name}/run_summary.json?_shape=objects").json()["rows"]
    assert len(rows) == 1
    row = rows[0]
    read, rejected = flow.query("SELECT rows_read, rows_rejected FROM runs")[0]
    assert (row["run_id"], row["status"], row["rows_read"], row["rows_rejected"]) == (
        flow.run_id, "succeeded", read, rejected)
    assert row["duration_s"] > 0 and row["failed_attempts"] == 0 and row["failed_steps"] is None
    assert row["critical_checks_failed"] == 0 and row["alerts"] == 0


# --------------------------------------------------------------------------- canned queries
def canned(site, name: str, **params: str) -> list[dict]:
    query = "&".join(f"{key}={value}" for key, value in {"_shape": "objects", **params}.items())
    return site.get(f"/{site.name}/{name}.json?{query}").json()["rows"]


def test_every_canned_query_answers(flow, site):
    for name in CANNED_QUERIES:
        page = site.get(f"/{site.name}/{name}").text
        assert CANNED_QUERIES[name].title in page
        canned(site, name, run_id="", start="", end="")


def test_canned_monitoring_queries_return_the_expected_rows(flow, site):
    number = flow.run_id.split("/")[1]
    day = flow.query("SELECT substr(started_at, 1, 10) FROM runs")[0][0]
    assert canned(site, "runs_by_status") == [{"status": "succeeded", "runs": 1, "last_run_id": flow.run_id,
                                                 "last_started_at": flow.query("SELECT started_at FROM runs")[0][0]}]
    failed = flow.query("SELECT check_name FROM check_results WHERE passed = 0 ORDER BY check_name")
    assert [r["check_name"] for r in canned(site, "last_run_failed_checks")] == [c for (c,) in failed]
    rejected = flow.query("SELECT line, reason FROM rejected_rows ORDER BY line")
    for ref in (flow.run_id, number, ""):
        assert [(r["line"], r["reason"]) for r in canned(site, "run_rejected_rows", run_id=ref)] == rejected
    assert canned(site, "run_rejected_rows", run_id="Nope/1") == []
    steps = {r["step"]: r for r in canned(site, "step_durations")}
    assert set(steps) == {step for (step,) in flow.query("SELECT step FROM step_runs")}
    assert {"start", "ingest", "tag_transactions", "annotate_transactions", "index_wordings", "join",
            "end"} <= set(steps)
    for step, row in steps.items():
        durations = sorted(d for (d,) in flow.query("SELECT duration_s FROM step_runs WHERE step = ? "
                                                     "AND status = 'succeeded'", (step,)))
        assert row["attempts"] == len(durations)
        assert row["mean_s"] == pytest.approx(sum(durations) / len(durations), abs=0.001)
        assert row["p95_s"] == pytest.approx(durations[-1], abs=0.001)  # one attempt: p95 = max
    assert [r["run_id"] for r in canned(site, "runs_between", start=day, end="")] == [flow.run_id]
    assert canned(site, "runs_between", start="2000-01-01", end=day) == []
    assert canned(site, "unannotated_transactions") == []
    (volume,) = canned(site, "daily_volume")
    read, loaded, rejected = flow.query("SELECT rows_read, rows_loaded, rows_rejected FROM runs")[0]
    assert (volume["day"], volume["runs"], volume["succeeded"], volume["rows_read"], volume["rows_loaded"],
            volume["rows_rejected"]) == (day, 1, 1, read, loaded, rejected)
    assert canned(site, "failed_steps") == [] and canned(site, "runs_pending_enrichment") == []


def test_ambiguous_wordings_add_up_to_the_runs_ambiguous_count(flow, site):
    rows = canned(site, "most_ambiguous_wordings", run_id="")
    assert rows and all(r["run_id"] == flow.run_id and r["tags_found"] >= 2 for r in rows)
    assert [r["transactions"] for r in rows] == sorted((r["transactions"] for r in rows), reverse=True)
    total = flow.query("SELECT SUM(transactions) FROM ambiguous_wordings")[0][0]
    assert total == flow.query("SELECT ambiguous FROM runs")[0][0] > 0
    for row in rows:
        assert flow.query("SELECT COUNT(*) FROM transactions t WHERE wording = ? AND NOT EXISTS "
                          "(SELECT 1 FROM tags g WHERE g.transaction_id = t.id)", (row["wording"],))[0][0] \
            == row["transactions"]


def test_canned_query_plans_never_scan_the_large_tables_unguarded(flow):
    with closing(sqlite3.connect(f"{flow.path.as_uri()}?mode=ro", uri=True)) as conn:
        for query in CANNED_QUERIES.values():
            aliases = set(BIG_TABLES) | {alias for alias in re.findall(
                r"\b(?:transactions|tags|annotations)\s+(?:AS\s+)?(\w+)", query.sql)
                if alias.upper() not in ("WHERE", "ON", "JOIN", "LEFT", "GROUP", "ORDER", "CROSS")}
            plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {query.sql}",
                                                   {"run_id": "", "start": "", "end": ""})]
            scans = [step for step in plan if re.match(r"SCAN (\w+)", step)
                     and re.match(r"SCAN (\w+)", step).group(1) in aliases]
            if query.full_scan_when is None:
                assert scans == [], (query.name, plan)
            else:
                assert len(scans) == 1, (query.name, plan)  # the guarded branch only


def vm_steps(path: Path, sql: str) -> tuple[int, list[tuple]]:
    """SQLite virtual-machine instructions (in hundreds) a query executes, and its rows."""
    steps = 0

    def count() -> int:
        nonlocal steps
        steps += 1
        return 0

    with closing(sqlite3.connect(path)) as conn:
        conn.set_progress_handler(count, 100)
        rows = conn.execute(sql, {"run_id": "", "start": "", "end": ""}).fetchall()
    return steps, rows


def test_unannotated_transactions_searches_the_whole_table_only_after_a_failed_check(flow, tmp_path):
    sql = CANNED_QUERIES["unannotated_transactions"].sql
    transactions = flow.query("SELECT COUNT(*) FROM transactions")[0][0]
    healthy_steps, rows = vm_steps(flow.path, sql)
    assert rows == [] and healthy_steps * 100 < transactions  # far less work than one pass over the rows
    copy = tmp_path / "copy.db"
    with closing(sqlite3.connect(f"{flow.path.as_uri()}?mode=ro", uri=True)) as source, \
            closing(sqlite3.connect(copy)) as target:
        source.backup(target)
    (victim,) = flow.query("SELECT MIN(transaction_id) FROM annotations")[0]
    zero = flow.query("SELECT MIN(id) FROM transactions WHERE amount_cents = 0")[0][0]
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("DELETE FROM annotations WHERE transaction_id = ?", (victim,))
        conn.execute("INSERT INTO pending_enrichment (run_id, kind) VALUES (?, 'annotations')", (flow.run_id,))
    steps, rows = vm_steps(copy, sql)  # healthy verdict, but the run's annotations are pending
    assert [(r[0], r[-1]) for r in rows] == [(victim, "pending run")]
    with closing(sqlite3.connect(copy)) as conn, conn:
        conn.execute("DELETE FROM pending_enrichment")
        conn.execute("UPDATE check_results SET passed = 0 WHERE check_name = 'annotations_complete'")
    steps, rows = vm_steps(copy, sql)
    assert [(r[0], r[-1]) for r in rows] == [(victim, "whole table")]
    assert zero is not None and zero not in [r[0] for r in rows]  # zero amounts have none by rule
    assert steps * 100 > transactions > healthy_steps * 100


# --------------------------------------------------------------------------- full-text search
def test_search_box_finds_words_whatever_their_case_and_accents(flow, site):
    wordings = dict(flow.query("SELECT id, wording FROM transactions"))
    with_taxi = {tid for tid, w in wordings.items() if re.search(r"(?<![^\W_])taxi(?![^\W_])", w, re.I)}
    found = site.get(f"/{site.name}/transactions.json?_search=taxi&_size=max&_shape=objects").json()
    assert {r["id"] for r in found["rows"]} == with_taxi and with_taxi
    view = site.get(f"/{site.name}/enriched_transactions.json?_search=TAXI&_size=max&_shape=objects").json()
    assert {r["id"] for r in view["rows"]} == with_taxi
    accented = {tid for tid, w in wordings.items() if re.search(r"(?<!\w)générale(?!\w)", w, re.I)}
    plain = site.get(f"/{site.name}/transactions.json?_search=GENERALE&_size=max&_shape=objects").json()
    assert accented and {r["id"] for r in plain["rows"]} == accented


def batch(rows: list[tuple]) -> SimpleNamespace:
    """One parsed CSV chunk (line, id, amount_cents, wording), as the loader takes it."""
    frame = pd.DataFrame(rows, columns=["line", "id", "amount_cents", "wording"])
    return SimpleNamespace(valid=frame.astype({"line": "int64", "id": "int64", "amount_cents": "int64"}),
                           rejected=pd.DataFrame(columns=["line", "raw", "reason"]), rows_read=len(frame))


def test_full_text_index_follows_upserts_from_the_bulk_load(store):
    def load(run_id, rows):
        return store.load_batch(run_id, [batch(rows)])

    def search(text):
        return sorted(r["id"] for r in store.search_wordings(text))

    load("F/1", [(2, 1, 100, "CARTE TAXI Paris"), (3, 2, -500, "PRLV Société Générale"), (4, 3, 0, "VIR TOTO")])
    assert search("taxi") == [] and "F/1" in store.search_problem()  # new rows: indexed in bulk, next
    assert store.index_wordings() == (("F/1",), 3)
    # segment merging, paused for the bulk insert, is back to FTS5's default for every other writer
    assert store.rows(f"SELECT v FROM {FTS_TABLE}_config WHERE k = 'automerge'") == [(FTS_AUTOMERGE,)]
    assert search("taxi") == [1] and search("generale") == [2] and search("toto") == [3]
    stats = load("F/2", [(2, 1, 100, "CARTE UBER Paris"), (3, 2, -900, "PRLV Société Générale"),
                         (4, 3, 0, "VIR TOTO"), (5, 4, 7, "taxi retour")])
    assert (stats.rows_new, stats.rows_updated, stats.rows_unchanged) == (1, 2, 1)
    # an indexed row's change is followed at once (trigger); the new row waits for the bulk index
    assert search("uber") == [1] and search("taxi") == [] and search("generale") == [2]
    assert store.index_wordings() == (("F/2",), 1)
    assert search("taxi") == [4] and store.search_problem() is None
    # a row changed again before its indexing: indexed once, as it is by then
    load("F/3", [(6, 5, 1, "alpha")])
    load("F/4", [(6, 5, 1, "beta")])
    assert store.index_wordings() == (("F/3", "F/4"), 1)
    assert search("beta") == [5] and search("alpha") == [] and store.search_problem() is None
    # an operator's own SQL is indexed by the triggers at once
    store.rows("INSERT INTO transactions (id, amount_cents, wording, first_run, last_changed_run) "
               "VALUES (9, 1, 'gamma', 1, 1)")
    assert search("gamma") == [9] and store.search_problem() is None
    load("F/5", [(7, 10, 1, "delta")])
    store.rebuild_search()
    assert store.search_problem() is None and search("paris") == [1] and search("delta") == [10]
    assert store.index_wordings() == ((), 0)


# --------------------------------------------------------------------------- CSV formula escaping
#: Stored wordings (id -> amount in cents, wording) and how a CSV download must show them.
HOSTILE = {
    1: (-1250, "=1+2", "'=1+2"),
    2: (4200, "+33 6 12 34 56 78", "'+33 6 12 34 56 78"),
    3: (-1, "-x", "'-x"),
    4: (99, "@SUM(A1)", "'@SUM(A1)"),
    5: (100, '=HYPERLINK("http://x","clic")', '\'=HYPERLINK("http://x","clic")'),
    6: (-5, "\tTAB", "'\tTAB"),
    7: (0, "CARTE TAXI Paris", "CARTE TAXI Paris"),
    8: (2, 'ligne une\n=2+3 "cite"', 'ligne une\n=2+3 "cite"'),  # a line of a cell, not a cell
    9: (3, "-12.5", "-12.5"),  # spelled like a number: left alone, a spreadsheet reads a number
    10: (-123456789, "PRLV Société Générale", "PRLV Société Générale"),
}
HOSTILE_QUERY = "hostile_wordings"


def csv_rows(text: str) -> list[list[str]]:
    return list(csv.reader(io.StringIO(text, newline="")))


@pytest.fixture(scope="module")
def csv_sites(tmp_path_factory, flow):
    """datasette without and with the plugin (registered as ``serve`` does), on a database of
    hostile wordings and on the flow's database."""
    path = tmp_path_factory.mktemp("csv-escape") / "hostile.db"
    # written through the store, whose connections are all closed before datasette opens the file
    open_store(path).load_batch("F/1", [batch([(tid + 1, tid, cents, wording)
                                              for tid, (cents, wording, _) in HOSTILE.items()])])
    name = browse.database_name(path)
    meta = browse.metadata(name)
    meta["databases"][name]["queries"][HOSTILE_QUERY] = {
        "sql": "SELECT id, amount, wording FROM transactions WHERE id >= :from_id ORDER BY id"}
    flow_meta = browse.metadata(browse.database_name(flow.path))
    loop = asyncio.new_event_loop()

    def build(database: Path, metadata: dict) -> Datasette:
        ds = Datasette([str(database)], metadata=metadata, settings=browse.DATASETTE_SETTINGS)
        loop.run_until_complete(ds.invoke_startup())
        return ds

    datasette_csv.unregister()
    raw, flow_raw = build(path, meta), build(flow.path, flow_meta)  # datasette's own CSV
    datasette_csv.register()
    escaped, flow_escaped = build(path, meta), build(flow.path, flow_meta)

    def getter(ds: Datasette):
        def get(url: str):
            response = loop.run_until_complete(ds.client.get(url))
            assert response.status_code == 200, (url, response.status_code, response.text[:2000])
            return response
        return get

    yield SimpleNamespace(name=name, raw=getter(raw), get=getter(escaped), flow_raw=getter(flow_raw),
                          flow_get=getter(flow_escaped), flow_name=browse.database_name(flow.path))
    datasette_csv.unregister()
    loop.close()


def test_every_csv_datasette_serves_escapes_formula_wordings_and_keeps_numbers(csv_sites):
    name = csv_sites.name
    sql = urlencode({"sql": "SELECT id, amount, wording FROM transactions ORDER BY id"})
    urls = [f"/{name}/transactions.csv", f"/{name}/transactions.csv?_stream=on",
            f"/{name}/transactions.csv?_dl=1", f"/{name}/enriched_transactions.csv?_sort=id",
            f"/{name}.csv?{sql}", f"/{name}.csv?{sql}&_stream=on", f"/{name}/{HOSTILE_QUERY}.csv?from_id=0",
            f"/{name}/{HOSTILE_QUERY}.csv?from_id=0&_stream=on"]
    for url in urls:
        response = csv_sites.get(url)
        rows = csv_rows(response.text)
        header, body = rows[0], rows[1:]
        assert header == csv_rows(csv_sites.raw(url).text)[0] and header[0] == "id", url  # header intact
        cells = {int(row[header.index("id")]): (row[header.index("amount")], row[header.index("wording")])
                 for row in body}
        assert cells == {tid: (str(cents / 100), shown) for tid, (cents, _, shown) in HOSTILE.items()}, url
        assert cells[1][0] == "-12.5" and cells[10][0] == "-1234567.89", url
    row = csv_rows(csv_sites.get(f"/{name}/transactions/5.csv").text)  # a row page
    assert row[1][:4] == ["5", "100", "1.0", HOSTILE[5][2]]
    download = csv_sites.get(f"/{name}/transactions.csv?_dl=1")
    assert download.headers["content-type"].startswith("text/csv")
    assert "attachment" in download.headers["content-disposition"]
    assert "content-length" not in download.headers  # streamed as datasette streams it
    # datasette's own CSV: the formulas are live, which is what the plugin prevents
    raw = {int(row[0]): row[3] for row in csv_rows(csv_sites.raw(f"/{name}/transactions.csv").text)[1:]}
    assert raw == {tid: wording for tid, (_, wording, _) in HOSTILE.items()}


def test_json_and_html_show_the_wordings_as_stored(csv_sites):
    name = csv_sites.name
    rows = csv_sites.get(f"/{name}/transactions.json?_shape=array").json()
    assert {r["id"]: (r["amount_cents"], r["amount"], r["wording"]) for r in rows} == {
        tid: (cents, cents / 100, wording) for tid, (cents, wording, _) in HOSTILE.items()}
    query = csv_sites.get(f"/{name}/{HOSTILE_QUERY}.json?from_id=0&_shape=array").json()
    assert [r["wording"] for r in query] == [wording for _, wording, _ in HOSTILE.values()]
    for url in (f"/{name}/transactions.json?_shape=array", f"/{name}/{HOSTILE_QUERY}.json?from_id=0&_shape=array"):
        assert csv_sites.get(url).content == csv_sites.raw(url).content, url
    page = csv_sites.get(f"/{name}/transactions").text
    assert "&gt;=1+2" in page or ">=1+2<" in page
    assert "&#39;=1+2" not in page and "'=1+2" not in page


def test_small_batches_cut_only_between_records(csv_sites, monkeypatch):
    """A multi-line quoted wording, a doubled quote and accented text across batch edges."""
    url = f"/{csv_sites.name}/transactions.csv?_stream=on"
    whole = csv_sites.get(url).content
    for size in (1, 7, 40):
        monkeypatch.setattr(datasette_csv, "BATCH_BYTES", size)
        assert csv_sites.get(url).content == whole, size


def test_a_csv_with_nothing_to_escape_is_datasettes_own_byte_for_byte(csv_sites):
    name = csv_sites.flow_name
    for url in (f"/{name}/enriched_transactions.csv?_stream=on", f"/{name}/runs.csv",
                f"/{name}/transactions.csv?_size=max"):
        escaped, raw = csv_sites.flow_get(url).content, csv_sites.flow_raw(url).content
        assert escaped == raw, url
    rows = csv_rows(csv_sites.flow_get(f"/{name}/enriched_transactions.csv?_stream=on").text)
    assert len(rows) > 700 and any(row[1].startswith("-") for row in rows[1:])  # negative amounts kept


def answer(status: int, content_type: bytes, chunks: list[bytes], length: bool = False):
    """A stand-in ASGI application answering every request with ``chunks``."""
    async def app(scope, receive, send):
        headers = [(b"content-type", content_type)]
        if length:
            headers.append((b"content-length", str(sum(map(len, chunks))).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        for index, chunk in enumerate(chunks):
            await send({"type": "http.response.body", "body": chunk, "more_body": index < len(chunks) - 1})
    return app


def through_plugin(app, path: str, query: bytes = b"") -> tuple[list[dict], bytes]:
    """The messages ``app`` wrapped by the plugin sends for a GET of ``path``, and the whole body."""
    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "GET", "path": path, "query_string": query, "headers": []}
    asyncio.run(datasette_csv.EscapeCsvFormulas(app)(scope, receive, send))
    return sent, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_a_declared_content_length_is_corrected_and_other_responses_pass_unchanged():
    chunks = [b'id,amount,wording\r\n1,-12.5,=1', b'+2\r\n2,0,"@A\r\nB"\r\n']
    sent, body = through_plugin(answer(200, b"text/plain; charset=utf-8", chunks, length=True), "/db/t.csv")
    assert body == b'id,amount,wording\r\n1,-12.5,\'=1+2\r\n2,0,"\'@A\r\nB"\r\n'
    start = sent[0]
    assert start["type"] == "http.response.start"
    assert dict(start["headers"])[b"content-length"] == str(len(body)).encode()
    assert [m.get("more_body", False) for m in sent[1:]] == [False]
    sent, body = through_plugin(answer(200, b"text/csv; charset=utf-8", chunks), "/db/t", b"_format=csv&_dl=1")
    assert b"'=1+2" in body and b"'@A" in body and sent[-1]["more_body"] is False
    for app, path, query in [(answer(200, b"application/json", chunks), "/db/t.json", b""),  # not a CSV
                             (answer(200, b"text/plain", chunks), "/db/t", b""),  # not asked as CSV
                             (answer(400, b"text/plain", chunks), "/db/t.csv", b""),  # an error page
                             (answer(200, b"text/html", chunks), "/db/t.csv", b"_trace=1")]:  # debug page
        assert through_plugin(app, path, query)[1] == b"".join(chunks), (path, query)


def test_datasette_loads_the_plugin_through_its_entry_point(tmp_path):
    """``enrich browse`` runs ``python -m datasette serve``: a fresh datasette process of this
    environment has the plugin, and browse checks its entry point before serving."""
    command = browse.datasette_command(tmp_path / "x.db", tmp_path / "m.json", 8123, "127.0.0.1")
    plugins = subprocess.run([*command[:3], "plugins"], capture_output=True, text=True, timeout=120, check=True)
    assert command[0] == sys.executable
    (ours,) = [p for p in json.loads(plugins.stdout) if "asgi_wrapper" in p["hooks"]]
    assert ours["name"] == "transaction-enrichment"
    assert browse.plugin_installed()
