"""The benchmark harness: a real (small) measured run, and the report formats."""
from __future__ import annotations

import json

import pytest

from enrich import tagging
from enrich.bench import harness as bench


def test_tag_list_of_many_tags_keeps_the_default_four_and_has_multi_word_tags(tmp_path):
    tags = tagging.load_tag_list(bench.tag_list_file(tmp_path, 10_000))
    assert len(tags.names) == 10_000 and tags.names[:4] == ("TATA", "TOTO", "TUTU", "TAXI")
    assert any(" " in name for name in tags.names)


def test_input_file_is_generated_once_and_reused(tmp_path):
    path = bench.input_file(tmp_path, 300, seed=5)
    first = path.stat().st_mtime_ns
    assert bench.input_file(tmp_path, 300, seed=5).stat().st_mtime_ns == first
    assert path.read_text(encoding="utf-8").startswith("id,amount,wording\n")


@pytest.mark.flow
def test_a_measured_run_reports_wall_time_memory_and_ledger_durations(tmp_path, capsys):
    assert bench.main(["--rows", "300", "--workdir", str(tmp_path), "--no-rerun", "--markdown"]) == 0
    (result,) = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    (fresh,) = result["measures"]
    assert fresh["exit_code"] == 0 and fresh["wall_s"] > 0 and fresh["rows_per_s"] > 0
    assert 50 < fresh["peak_rss_mb"] < 4096  # the largest process of the run, not the harness
    assert fresh["rows_read"] >= 300
    assert {"start", "ingest", "tag_transactions", "annotate_transactions", "index_wordings", "join",
            "end"} <= set(fresh["steps_s"])
    assert result["machine"]["cores"] >= 1
    out = capsys.readouterr().out
    assert "fresh" in out and "300 rows" in out


def test_markdown_row_shows_fresh_rerun_and_tag_ratio():
    result = {"rows": 1_000_000, "measures": [
        {"label": "fresh", "wall_s": 18.1, "rows_per_s": 55249, "peak_rss_mb": 556.0,
         "steps_s": {"ingest": 4.7, "tag_transactions": 3.3, "annotate_transactions": 2.6, "index_wordings": 1.9,
                     "join": 1.2}},
        {"label": "rerun", "wall_s": 11.6, "rows_per_s": 85985, "peak_rss_mb": 552.0, "steps_s": {}},
        {"label": "tags10000", "wall_s": 20.7, "rows_per_s": 48403, "peak_rss_mb": 565.0,
         "steps_s": {"tag_transactions": 5.61}}]}
    assert bench.markdown_row(result) == ("| 1,000,000 | 18.1 s | 55,249 | 556 MB | 11.6 s | 1.70× | "
                                          "4.7 / 3.3 / 2.6 / 1.9 / 1.2 |")
