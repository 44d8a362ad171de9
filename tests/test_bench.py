"""The benchmark harness: the whole harness once at a tiny size (our flow and both yardsticks),
the plain script's database against the rules, the alternation, medians, ratios and tables.
Timings are never asserted: only that they were measured and reported."""
from __future__ import annotations

import ast
import importlib.util
import json
import sqlite3
from collections.abc import Sequence
from decimal import Decimal
from pathlib import Path

import pytest

from click.testing import CliRunner

from enrich import generate, tagging
from enrich.bench import harness as bench
from enrich.cli import cli
from enrich.bench import plain_script, yardsticks
from tests.support import reference

FOUR_TAGS = ["TATA", "TOTO", "TUTU", "TAXI"]


def plain_database_content(path: Path) -> tuple[dict[int, tuple[int, str]], dict[int, str], dict[int, str]]:
    """(id -> (cents, wording), id -> tag, id -> annotation) of a plain-script database."""
    with sqlite3.connect(path) as db:
        rows = {i: (c, w) for i, c, w in db.execute("SELECT id, amount_cents, wording FROM transactions")}
        tags = dict(db.execute("SELECT transaction_id, tag FROM tags"))
        annotations = dict(db.execute("SELECT transaction_id, annotation FROM annotations"))
    return rows, tags, annotations


def assert_plain_database_follows_the_rules(database: Path, csv_rows: Sequence[tuple[int, str, str]]) -> None:
    """Every row stored, tagged and annotated as the reference of the rules says."""
    rows, tags, annotations = plain_database_content(database)
    assert rows == {i: (int(Decimal(a) * 100), w) for i, a, w in csv_rows}
    expected_tags = {i: reference.tag_of(w, FOUR_TAGS) for i, _, w in csv_rows}
    assert tags == {i: t for i, t in expected_tags.items() if t is not None}
    expected_annotations = {i: reference.annotation_of(Decimal(a)) for i, a, _ in csv_rows}
    assert annotations == {i: a for i, a in expected_annotations.items() if a is not None}


# --------------------------------------------------------------------------- inputs

def test_tag_list_of_many_tags_keeps_the_default_four_and_has_multi_word_tags(tmp_path: Path) -> None:
    tags = tagging.load_tag_list(bench.tag_list_file(tmp_path, 10_000))
    assert len(tags.names) == 10_000 and tags.names[:4] == ("TATA", "TOTO", "TUTU", "TAXI")
    assert any(" " in name for name in tags.names)


def test_input_file_is_generated_once_and_reused(tmp_path: Path) -> None:
    path = bench.input_file(tmp_path, 300, seed=5)
    first = path.stat().st_mtime_ns
    assert bench.input_file(tmp_path, 300, seed=5).stat().st_mtime_ns == first
    assert path.read_text(encoding="utf-8").startswith("id,amount,wording\n")


def test_the_clean_twin_holds_exactly_the_valid_rows_and_one_row_mode_is_clean(tmp_path: Path) -> None:
    dirty = bench.input_file(tmp_path, 300, seed=5).read_text(encoding="utf-8").splitlines()
    clean = bench.clean_input_file(tmp_path, 300, seed=5).read_text(encoding="utf-8").splitlines()
    assert len(clean) == 301 and len(dirty) > len(clean)
    assert set(clean) <= set(dirty), "the plain script reads the same valid rows as our flow"
    one_row = bench.input_file(tmp_path, 1, seed=5).read_text(encoding="utf-8").splitlines()
    assert len(one_row) == 2 and one_row[1].startswith("1,")


# --------------------------------------------------------------------------- the plain script

def test_plain_script_database_follows_the_rules_on_a_generated_file(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    generate.write_csv(csv, rows=200, seed=7)
    frame = generate.generate_frame(200, 7)
    database = tmp_path / "plain.db"
    counts = plain_script.run(csv, database)
    assert counts["rows"] == 200 and 0 < counts["tagged"] < 200 and 0 < counts["annotated"] <= 200
    assert_plain_database_follows_the_rules(database, list(frame.itertuples(index=False, name=None)))
    with sqlite3.connect(database) as db:
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_plain_script_on_boundaries_and_word_bounds(tmp_path: Path) -> None:
    csv_rows = [(1, "300", "CARTE TAXI PARIS"), (2, "300.01", "TAXIS G7"), (3, "0", "PRLV toto"),
                (4, "-200", "VIR TATA TOTO"), (5, "-200.01", "taxi-2 à Nice"), (6, "0.01", "TUTU"),
                (7, "-0.01", "x TUTU, TUTU"), (8, "-327.7", "TATAMI"), (9, "12.5", "")]
    csv = tmp_path / "edge.csv"
    lines = ["id,amount,wording"] + [f'{i},{a},"{w}"' for i, a, w in csv_rows]
    csv.write_text("\n".join(lines) + "\n", encoding="utf-8")
    database = tmp_path / "edge.db"
    plain_script.main(["--transactions", str(csv), "--database", str(database)])
    assert_plain_database_follows_the_rules(database, csv_rows)
    _, tags, annotations = plain_database_content(database)
    assert tags == {1: "TAXI", 3: "TOTO", 5: "TAXI", 6: "TUTU", 7: "TUTU"}  # 2, 8: inside a word; 4: two tags
    assert annotations[1] == "SALE" and annotations[2] == "LARGE SALE" and 3 not in annotations
    assert annotations[4] == "SMALL EXPENSE" and annotations[5] == "EXPENSE"


def test_plain_script_imports_only_pyarrow_numpy_and_the_standard_library() -> None:
    tree = ast.parse(yardsticks.PLAIN_SCRIPT.read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported == {"__future__", "argparse", "sqlite3", "sys", "pathlib", "numpy", "pyarrow"}


# --------------------------------------------------------------------------- the bare graph

def test_the_bare_flow_has_our_graph_and_imports_only_metaflow(tmp_path: Path) -> None:
    from metaflow.graph import FlowGraph

    from flows.enrichment_flow import TransactionEnrichmentFlow

    path = yardsticks.write_bare_flow(tmp_path)
    tree = ast.parse(path.read_text(encoding="utf-8"))
    assert {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)} == {"metaflow"}
    assert not any(isinstance(node, ast.Import) for node in ast.walk(tree))
    spec = importlib.util.spec_from_file_location("bare_graph_flow", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    bare = {node.name: node.out_funcs for node in FlowGraph(module.BareGraphFlow)}
    ours = {node.name: node.out_funcs for node in FlowGraph(TransactionEnrichmentFlow)}
    assert bare == ours


def test_environment_gives_metaflow_a_user_name() -> None:
    assert yardsticks.environment({"PATH": "/bin"})["USERNAME"] == "bench"
    assert yardsticks.environment({"USER": "root"})["USERNAME"] == "bench"
    assert "USERNAME" not in yardsticks.environment({"USER": "alice"})
    assert yardsticks.environment({"USERNAME": "bob"})["USERNAME"] == "bob"


# --------------------------------------------------------------------------- measuring one run

def test_peak_memory_is_the_measured_tree_s_not_the_harness_s(tmp_path: Path) -> None:
    import sys

    ballast = bytearray(400 * 2**20)  # the harness is big (pages touched); the measured command is not
    ballast[::4096] = b"1" * len(ballast[::4096])
    small = bench.time_command([sys.executable, "-c", "pass"], tmp_path, tmp_path / "small.log")
    grandchild = ("import subprocess, sys; subprocess.run([sys.executable, '-c', "
                  "'x = bytearray(300 * 2**20); x[::4096] = b\"1\" * len(x[::4096])'], check=True)")
    big = bench.time_command([sys.executable, "-c", grandchild], tmp_path, tmp_path / "big.log")
    failing = bench.time_command([sys.executable, "-c", "print('out'); raise SystemExit(3)"], tmp_path,
                                 tmp_path / "failing.log")
    del ballast
    assert small.exit_code == 0 and small.peak_rss_mb < 100 and small.wall_s > 0
    assert big.exit_code == 0 and big.peak_rss_mb >= 300, "a descendant's peak counts"
    assert failing.exit_code == 3 and (tmp_path / "failing.log").read_text() == "out\n"


# --------------------------------------------------------------------------- plan, medians, ratios

def test_runs_alternate_and_medians_and_ratios_are_reported(tmp_path: Path) -> None:
    walls = {bench.FRESH: [12.0, 14.0, 13.0], bench.BARE: [5.0, 6.0, 4.0], bench.PLAIN: [6.0, 7.0, 6.5],
             bench.RERUN: [9.0, 10.0, 8.0], "tags10": [20.0, 21.0, 22.0]}
    seen: list[tuple[str, bool]] = []

    def fake_timer(command: Sequence[str], cwd: Path, log: Path) -> bench.Timing:
        label = next(label for label in walls if log.name.startswith(label.replace(" ", "-") + "-"))
        our_db = tmp_path / "bench-300.db"
        seen.append((label, our_db.exists()))
        if label == bench.FRESH:
            our_db.touch()  # "populated" by the run, to see that the next fresh run starts without it
        repeat = int(log.stem.rsplit("-", 1)[1])
        return bench.Timing(wall_s=walls[label][repeat - 1], peak_rss_mb=100.0 * repeat, exit_code=0)

    result = bench.benchmark(300, 5, tmp_path, tag_count=10, repeat=3, timer=fake_timer)
    assert [label for label, _ in seen] == [bench.FRESH, bench.BARE, bench.PLAIN, bench.RERUN, "tags10"] * 3
    assert all(not existed for label, existed in seen if label == bench.FRESH)
    assert all(existed for label, existed in seen if label == bench.RERUN)
    summary = result["summary"]
    assert summary[bench.FRESH]["wall_s"] == 13.0 and summary[bench.BARE]["wall_s"] == 5.0
    assert summary[bench.PLAIN]["wall_s"] == 6.5 and summary[bench.FRESH]["peak_rss_mb"] == 200.0
    by_name = {r["name"]: r for r in result["ratios"]}
    assert by_name["fresh / plain script"]["ratio"] == pytest.approx(2.0)
    assert by_name["fresh / bare graph"]["ratio"] == pytest.approx(2.6)
    assert by_name["rerun / plain script"]["ratio"] == pytest.approx(1.38)
    assert by_name["fresh / plain script"]["target"] is None  # no target at 300 rows
    assert set(result["machine"]["load_1min"]) == {"before", "after"}
    result["machine"]["load_1min"] = {"before": 0.5, "after": 3.0}  # "after" counts the runs themselves
    text = bench.table(result)
    assert "fresh / plain script" in text and "2.00×" in text and "bare graph" in text
    assert "busy" not in text
    result["machine"]["load_1min"] = {"before": 9.0, "after": 1.0}
    assert "the machine was busy (1-minute load 9.0 before the runs" in bench.table(result)


def test_targets_follow_the_size() -> None:
    summary = {bench.FRESH: {"wall_s": 12.0, "peak_rss_mb": 700.0, "steps_s": {"tag_transactions": 3.0}},
               bench.BARE: {"wall_s": 8.0, "peak_rss_mb": 90.0, "steps_s": {}},
               bench.PLAIN: {"wall_s": 6.0, "peak_rss_mb": 480.0, "steps_s": {}},
               bench.RERUN: {"wall_s": 2.0, "peak_rss_mb": 1100.0, "steps_s": {}},
               "tags10000": {"wall_s": 14.0, "peak_rss_mb": 700.0, "steps_s": {"tag_transactions": 7.0}}}
    one = {r["name"]: r for r in bench.ratios(summary, 1)}
    assert one["fresh / bare graph"]["target"] == 1.5 and one["fresh / bare graph"]["met"] is True
    million = {r["name"]: r for r in bench.ratios(summary, 1_000_000, tag_count=10_000)}
    assert million["fresh / plain script"]["target"] == 1.5 and million["fresh / plain script"]["met"] is False
    tags = million["tagging step, 10,000 tags / 4 tags"]
    assert tags["ratio"] == pytest.approx(2.33) and tags["target"] == 2.0 and tags["met"] is False
    ten = {r["name"]: r for r in bench.ratios(summary, 10_000_000)}
    assert ten["fresh / plain script"]["target"] == 1.0 and ten["rerun / plain script"]["target"] == 0.4
    assert ten["rerun / plain script"]["met"] is True
    assert bench.memory_check(summary, 10_000_000) == {"peak_rss_mb": 1100.0, "limit_mb": 1024.0, "met": False}


def test_markdown_table_puts_ratios_next_to_absolute_times_with_machine_and_date() -> None:
    def result(rows: int, fresh: float, plain: float) -> dict[str, object]:
        summary = {bench.FRESH: {"wall_s": fresh, "peak_rss_mb": 604.0, "steps_s": {}},
                   bench.BARE: {"wall_s": 7.0, "peak_rss_mb": 90.0, "steps_s": {}},
                   bench.PLAIN: {"wall_s": plain, "peak_rss_mb": 480.0, "steps_s": {}}}
        return {"rows": rows, "seed": 42, "repeat": 3, "tag_count": 0, "summary": summary,
                "ratios": bench.ratios(summary, rows), "memory": bench.memory_check(summary, rows),
                "machine": {"cores": 2, "ram_gb": 24, "cpu": "AMD EPYC", "python": "3.11.7", "date": "2026-11-30"}}

    older = result(1_000_000, 99.0, 1.0)
    table = bench.markdown_table(bench.latest_results(
        [older, result(1_000_000, 12.5, 5.65), result(10_000_000, 55.0, 63.6), {"rows": 5, "measures": []}]))
    lines = table.splitlines()
    assert lines[0].startswith("Machine: 2 cores, 24 GB RAM, AMD EPYC, Python 3.11.7")
    assert "| 1,000,000 | fresh database | 12.5 s | 604 MB | plain script | 5.7 s | 2.21× | ≤ 1.5× | **no** | " \
           "2026-11-30, 3 run(s) |" in lines
    assert "| 10,000,000 | fresh database | 55.0 s | 604 MB | plain script | 63.6 s | 0.86× | ≤ 1× | yes | " \
           "2026-11-30, 3 run(s) |" in lines
    assert any(line.startswith("| 10,000,000 | largest process") and "| yes |" in line for line in lines)
    assert any(line.startswith("| 1,000,000 → 10,000,000 | linear growth") and "4.40×" in line for line in lines)
    assert "99.0 s" not in table, "only the latest result of a size is shown"


# --------------------------------------------------------------------------- the whole harness, once

@pytest.mark.flow
def test_the_whole_harness_runs_ours_and_both_yardsticks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    done = CliRunner().invoke(cli, ["bench", "--rows", "300", "--repeat", "1", "--workdir", str(tmp_path),
                                    "--no-rerun", "--markdown"])
    assert done.exit_code == 0, done.output
    (result,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    measures = {m["label"]: m for m in result["measures"]}
    assert list(measures) == [bench.FRESH, bench.BARE, bench.PLAIN]
    for measure in measures.values():
        assert measure["exit_code"] == 0 and measure["wall_s"] > 0
        assert 20 < measure["peak_rss_mb"] < 4096  # the largest process of the run, not the harness
    fresh = measures[bench.FRESH]
    assert fresh["rows_read"] >= 300 and fresh["rows_per_s"] > 0
    assert {"start", "ingest", "tag_transactions", "annotate_transactions", "index_wordings", "join",
            "end"} <= set(fresh["steps_s"])
    assert measures[bench.PLAIN]["rows_read"] == 300
    assert {r["name"] for r in result["ratios"]} == {"fresh / bare graph", "fresh / plain script"}
    assert all(r["ratio"] > 0 for r in result["ratios"])
    assert result["machine"]["cores"] >= 1
    # The plain script's database: every valid row, tagged and annotated by the rules.
    frame = generate.generate_frame(300, 42)
    assert_plain_database_follows_the_rules(tmp_path / "plain-300.db", list(frame.itertuples(index=False, name=None)))
    out = done.output
    assert "300 rows" in out and "fresh / plain script" in out and "| 300 | fresh database |" in out


def test_a_database_it_cannot_reset_is_one_line_without_a_traceback(tmp_path: Path) -> None:
    url = "postgresql://ana:s3cret-pw@127.0.0.1:1/bench"  # nothing listens on port 1
    done = CliRunner().invoke(cli, ["bench", "--rows", "1", "--repeat", "1", "--workdir", str(tmp_path),
                                    "--database", url])
    assert done.exit_code == 1, done.output
    assert "Traceback" not in done.output and "s3cret-pw" not in done.output
    assert [line for line in done.output.splitlines() if line.startswith("Error:")] == [
        next(line for line in done.output.splitlines() if "127.0.0.1:1" in line)]
