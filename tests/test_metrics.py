"""Run metrics: registry contents, naming, the node_exporter textfile, and pushes to
a fake HTTP gateway and to a REAL Prometheus Pushgateway (loopback only)."""
from __future__ import annotations

import http.server
import math
import os
import re
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from enrich import metrics as m
from enrich.metrics import (
    METRIC_NAMES,
    ROW_OUTCOMES,
    SEVERITIES,
    RunMetrics,
    build_registry,
    gateway_url_from_env,
    publish_metrics,
    push,
    write_textfile,
)
from tests.support.pushgateway import (
    BINARY_ENV,
    SKIP_ENV,
    Pushgateway,
    pushgateway,  # noqa: F401 - pytest fixture
    require_binary,
    running_pushgateway,
)

FLOW = "TransactionEnrichmentFlow"
PREVIOUS_SUCCESS = 1_795_000_000.25
SUCCESS_TIME = 1_795_100_000.5
FAILURE_TIME = 1_795_200_000.75
NAME_RE = re.compile(r"^enrich_[a-z0-9_]+$")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def succeeded_run(**changes: object) -> RunMetrics:
    """A typical successful run."""
    fields: dict[str, object] = dict(
        flow=FLOW,
        run_id=f"{FLOW}/1795100000123456",
        succeeded=True,
        finished_at=SUCCESS_TIME,
        duration_s=42.5,
        rows={"read": 300, "loaded": 296, "new": 290, "updated": 4, "unchanged": 2,
              "rejected": 4, "duplicate": 4, "tagged": 120, "untagged": 168,
              "ambiguous": 8, "annotated": 280, "zero_amount": 16},
        step_durations={"start": 0.5, "ingest": 10.25, "enrich": 20.0, "checks": 3.0, "end": 0.1},
        step_attempts={"start": 1, "ingest": 2, "enrich": 1, "checks": 1, "end": 1},
        checks=[("row_count", "critical", True), ("annotation_complete", "critical", True),
                ("tag_ratio", "warning", True), ("zero_amounts", "info", True)],
        anomalies=1,
    )
    fields.update(changes)
    return RunMetrics(**fields)  # type: ignore[arg-type]


def failed_run(**changes: object) -> RunMetrics:
    """A run that failed in its enrich step, with failing checks."""
    fields: dict[str, object] = dict(
        run_id=f"{FLOW}/1795200000654321",
        succeeded=False,
        finished_at=FAILURE_TIME,
        duration_s=12.0,
        rows={"read": 300, "rejected": 4},
        step_durations={"start": 0.4, "ingest": 9.0, "enrich": 2.5},
        step_attempts={"start": 1, "ingest": 1, "enrich": 3},
        checks=[("row_count", "critical", False), ("annotation_complete", "critical", False),
                ("tag_ratio", "warning", False), ("zero_amounts", "info", True)],
        anomalies=0,
    )
    fields.update(changes)
    return succeeded_run(**fields)


def parse(text: str) -> tuple[dict[str, str], Samples]:
    """(family name -> type, (sample name, labels) -> value) of an exposition text."""
    types: dict[str, str] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        types[family.name] = family.type
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return types, samples


def registry_text(metrics: RunMetrics, last_success: float | None) -> str:
    return generate_latest(build_registry(metrics, last_success)).decode()


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def names_of(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# --------------------------------------------------------------------------- registry

def test_registry_of_a_succeeded_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ENRICH_MAX_SILENCE_SECONDS", raising=False)
    run = succeeded_run()
    types, samples = parse(registry_text(run, last_success=PREVIOUS_SUCCESS))

    assert value(samples, "enrich_last_success_timestamp_seconds") == SUCCESS_TIME  # not the argument
    assert value(samples, "enrich_last_run_timestamp_seconds") == SUCCESS_TIME
    assert value(samples, "enrich_last_run_success") == 1
    assert value(samples, "enrich_run_duration_seconds") == 42.5
    assert value(samples, "enrich_last_run_info", flow=FLOW, run_id=run.run_id) == 1
    for outcome, count in run.rows.items():
        assert value(samples, "enrich_rows", outcome=outcome) == count
    for step, seconds in run.step_durations.items():
        assert value(samples, "enrich_step_duration_seconds", step=step) == seconds
        assert value(samples, "enrich_step_attempts", step=step) == run.step_attempts[step]
    for check, severity, _ in run.checks:
        assert value(samples, "enrich_check_passed", check=check, severity=severity) == 1
    for severity in SEVERITIES:
        assert value(samples, "enrich_checks_failed", severity=severity) == 0
    assert value(samples, "enrich_anomalies") == 1
    assert value(samples, "enrich_max_silence_seconds") == 26 * 3600  # the default
    assert names_of(samples) == set(METRIC_NAMES)
    assert len(samples) == 5 + 12 + 5 + 5 + 4 + 3 + 1 + 1
    assert set(types.values()) == {"gauge"}  # info is a gauge in the 0.0.4 text format


def test_registry_of_a_failed_run_keeps_the_previous_success() -> None:
    run = failed_run()
    _, samples = parse(registry_text(run, last_success=PREVIOUS_SUCCESS))

    assert value(samples, "enrich_last_success_timestamp_seconds") == PREVIOUS_SUCCESS
    assert value(samples, "enrich_last_run_timestamp_seconds") == FAILURE_TIME
    assert value(samples, "enrich_last_run_success") == 0
    assert value(samples, "enrich_run_duration_seconds") == 12.0
    assert value(samples, "enrich_last_run_info", flow=FLOW, run_id=run.run_id) == 1
    # Every outcome is exported, 0 when the run did not count it.
    assert {dict(labels)["outcome"]: v for (name, labels), v in samples.items() if name == "enrich_rows"} \
        == {outcome: run.rows.get(outcome, 0) for outcome in ROW_OUTCOMES}
    assert value(samples, "enrich_step_attempts", step="enrich") == 3
    assert ("enrich_step_duration_seconds", frozenset({("step", "end")})) not in samples
    assert value(samples, "enrich_check_passed", check="row_count", severity="critical") == 0
    assert value(samples, "enrich_check_passed", check="zero_amounts", severity="info") == 1
    assert value(samples, "enrich_checks_failed", severity="critical") == 2
    assert value(samples, "enrich_checks_failed", severity="warning") == 1
    assert value(samples, "enrich_checks_failed", severity="info") == 0
    assert value(samples, "enrich_anomalies") == 0


def test_failed_run_without_previous_success_has_no_last_success_at_all() -> None:
    text = registry_text(failed_run(), last_success=None)
    assert "enrich_last_success_timestamp_seconds" not in text  # not even HELP/TYPE
    _, samples = parse(text)
    assert value(samples, "enrich_last_run_success") == 0


def test_empty_run_still_exports_every_outcome_and_severity() -> None:
    run = failed_run(rows={}, step_durations={}, step_attempts={}, checks=[])
    _, samples = parse(registry_text(run, None))
    assert {dict(labels)["outcome"] for n, labels in samples if n == "enrich_rows"} == set(ROW_OUTCOMES)
    assert {dict(labels)["severity"] for n, labels in samples if n == "enrich_checks_failed"} == set(SEVERITIES)
    assert not any(n.startswith("enrich_step_") or n == "enrich_check_passed" for n in names_of(samples))


def test_metric_names_follow_prometheus_conventions() -> None:
    for run, last in ((succeeded_run(), None), (failed_run(), PREVIOUS_SUCCESS)):
        types, samples = parse(registry_text(run, last))
        for name in set(types) | names_of(samples) | set(METRIC_NAMES):
            assert NAME_RE.match(name), name
            assert not name.endswith("_total"), f"{name}: per-run gauges must not end in _total"
            if any(word in name for word in ("duration", "timestamp", "time")):
                assert name.endswith("_seconds"), f"{name}: time must be in seconds, suffixed _seconds"
            if "timestamp" in name:
                assert name.endswith("_timestamp_seconds"), name
        assert set(types.values()) == {"gauge"}, "per-run values are gauges, never counters"
        assert set(types) == set(METRIC_NAMES)
        for (_, labels) in samples:
            for label, _ in labels:
                assert re.match(r"^[a-z][a-z0-9_]*$", label), label


def test_run_id_is_only_a_label_of_the_info_metric() -> None:
    _, samples = parse(registry_text(succeeded_run(), None))
    label_names = {n: {k for k, _ in labels} for n, labels in samples}
    assert label_names["enrich_last_run_info"] == {"flow", "run_id"}
    assert len([n for n, _ in samples if n == "enrich_last_run_info"]) == 1
    for name, labels in label_names.items():
        if name != "enrich_last_run_info":
            assert "run_id" not in labels and "job" not in labels and "instance" not in labels, name


@pytest.mark.parametrize("raw, expected", [
    (None, 26 * 3600.0), ("", 26 * 3600.0), ("  ", 26 * 3600.0),
    ("3600", 3600.0), (" 90000.5 ", 90000.5), ("1e5", 100000.0),
])
def test_max_silence_comes_from_the_environment(raw: str | None, expected: float) -> None:
    environ = {} if raw is None else {"ENRICH_MAX_SILENCE_SECONDS": raw}
    assert m.max_silence_from_env(environ) == expected


@pytest.mark.parametrize("raw", ["1d", "-5", "0", "nan", "inf"])
def test_invalid_max_silence_falls_back_to_the_default_with_a_warning(
        raw: str, caplog: pytest.LogCaptureFixture) -> None:
    assert m.max_silence_from_env({"ENRICH_MAX_SILENCE_SECONDS": raw}) == m.DEFAULT_MAX_SILENCE_S
    assert any("ENRICH_MAX_SILENCE_SECONDS" in r.getMessage() and repr(raw) in r.getMessage()
               and r.levelname == "WARNING" for r in caplog.records)


def test_max_silence_gauge_follows_the_run_environment_in_every_push(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ENRICH_MAX_SILENCE_SECONDS", "7200")
    for run in (succeeded_run(), failed_run()):
        assert run.max_silence_s == 7200
        path = tmp_path / "enrich.prom"
        write_textfile(path, run, PREVIOUS_SUCCESS)
        _, samples = parse(path.read_text())
        assert value(samples, "enrich_max_silence_seconds") == 7200
    _, samples = parse(registry_text(succeeded_run(max_silence_s=600.0), None))
    assert value(samples, "enrich_max_silence_seconds") == 600


def test_registry_accepts_numpy_numbers() -> None:
    run = succeeded_run(rows={"read": np.int64(7)}, step_durations={"s": np.float64(1.5)},
                        step_attempts={"s": np.int32(2)}, anomalies=np.int64(3))
    _, samples = parse(registry_text(run, None))
    assert value(samples, "enrich_rows", outcome="read") == 7
    assert value(samples, "enrich_step_duration_seconds", step="s") == 1.5
    assert value(samples, "enrich_anomalies") == 3


@pytest.mark.parametrize("changes, message", [
    ({"rows": {"bogus": 1}}, "unknown row outcome"),
    ({"rows": {"read": -1}}, "rows"),
    ({"rows": {"read": 1.5}}, "rows"),
    ({"rows": {"read": True}}, "rows"),
    ({"finished_at": math.nan}, "finished_at"),
    ({"duration_s": -1.0}, "duration_s"),
    ({"duration_s": math.inf}, "duration_s"),
    ({"step_durations": {"s": math.nan}}, "step_durations"),
    ({"step_attempts": {"s": -1}}, "step_attempts"),
    ({"checks": [("c", "fatal", True)]}, "severity"),
    ({"checks": [("c", "critical", 1)]}, "passed"),
    ({"checks": [("c", "critical", True), ("c", "critical", False)]}, "twice"),
    ({"checks": [("c", "critical")]}, "tuple"),
    ({"flow": ""}, "flow"),
    ({"run_id": None}, "run_id"),
    ({"succeeded": 1}, "succeeded"),
    ({"anomalies": -2}, "anomalies"),
    ({"max_silence_s": 0.0}, "max_silence_s"),
    ({"max_silence_s": math.nan}, "max_silence_s"),
])
def test_invalid_run_metrics_are_rejected(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        succeeded_run(**changes)


@pytest.mark.parametrize("bad", [math.nan, -1.0, math.inf])
def test_invalid_last_success_is_rejected(bad: float, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="last_success"):
        build_registry(failed_run(), bad)
    with pytest.raises(ValueError, match="last_success"):
        publish_metrics(failed_run(), tmp_path / "m.prom", None, bad)


def test_module_does_not_import_metaflow() -> None:
    code = "import sys, enrich.metrics; sys.exit('metaflow' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent.parent,
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr


# --------------------------------------------------------------------------- textfile

def test_textfile_parses_and_is_complete(tmp_path: Path) -> None:
    path = tmp_path / "enrich.prom"
    run = succeeded_run()
    write_textfile(path, run, None)

    text = path.read_text()
    assert text == registry_text(run, None)
    assert text.endswith("\n")
    types, samples = parse(text)
    assert set(types) == set(METRIC_NAMES)
    assert value(samples, "enrich_last_run_success") == 1
    assert sorted(os.listdir(tmp_path)) == ["enrich.prom"], "no temporary file may remain"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644, "node_exporter (another user) must read it"


def test_textfile_is_replaced_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "enrich.prom"
    write_textfile(path, succeeded_run(), None)
    old = path.read_text()
    old_inode = path.stat().st_ino
    seen: list[tuple[str, str, str]] = []
    real_replace = os.replace

    def observing_replace(src: str, dst: str | Path) -> None:
        # Just before the rename: the target still holds the old complete file,
        # the new content is complete in a hidden non-.prom temporary file.
        seen.append((Path(src).name, Path(dst).read_text(), Path(src).read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(m.os, "replace", observing_replace)
    run = failed_run()
    write_textfile(path, run, PREVIOUS_SUCCESS)

    assert len(seen) == 1
    tmp_name, target_before, tmp_content = seen[0]
    assert tmp_name.startswith(".enrich.prom.") and tmp_name.endswith(".tmp")
    assert target_before == old
    assert tmp_content == path.read_text() == registry_text(run, PREVIOUS_SUCCESS)
    assert path.stat().st_ino != old_inode, "the file must be renamed over, not rewritten in place"
    assert sorted(os.listdir(tmp_path)) == ["enrich.prom"]


def test_textfile_write_failure_keeps_old_file_and_leaves_no_temp(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "enrich.prom"
    write_textfile(path, succeeded_run(), None)
    old = path.read_text()

    def failing_replace(src: str, dst: str | Path) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(m.os, "replace", failing_replace)
    with pytest.raises(OSError, match="No space left"):
        write_textfile(path, failed_run(), PREVIOUS_SUCCESS)
    assert path.read_text() == old
    assert sorted(os.listdir(tmp_path)) == ["enrich.prom"]

    problems = publish_metrics(failed_run(), path, None, PREVIOUS_SUCCESS)
    assert len(problems) == 1 and "No space left" in problems[0] and str(path) in problems[0]


def test_failed_run_textfile_keeps_last_success(tmp_path: Path) -> None:
    path = tmp_path / "enrich.prom"
    write_textfile(path, succeeded_run(finished_at=PREVIOUS_SUCCESS), None)
    write_textfile(path, failed_run(), PREVIOUS_SUCCESS)
    _, samples = parse(path.read_text())
    assert value(samples, "enrich_last_success_timestamp_seconds") == PREVIOUS_SUCCESS
    assert value(samples, "enrich_last_run_timestamp_seconds") == FAILURE_TIME
    assert value(samples, "enrich_last_run_success") == 0

    write_textfile(path, failed_run(), None)
    assert "enrich_last_success_timestamp_seconds" not in path.read_text()


def test_textfile_with_another_suffix_is_written_with_a_warning(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "metrics.txt"
    write_textfile(path, succeeded_run(), None)
    assert path.read_text() == registry_text(succeeded_run(), None)
    assert any(".prom" in r.getMessage() and r.levelname == "WARNING" for r in caplog.records)


label_text = st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=20)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    steps=st.dictionaries(label_text, st.tuples(st.floats(0, 1e6), st.integers(0, 100)), max_size=5),
    checks=st.dictionaries(st.tuples(label_text, st.sampled_from(SEVERITIES)), st.booleans(), max_size=6),
    rows=st.dictionaries(st.sampled_from(ROW_OUTCOMES), st.integers(0, 10**12)),
    succeeded=st.booleans(),
    last=st.none() | st.floats(0, 4e9),
)
def test_textfile_round_trips_any_names_and_values(tmp_path: Path, steps: dict[str, tuple[float, int]],
                                                   checks: dict[tuple[str, str], bool], rows: dict[str, int],
                                                   succeeded: bool, last: float | None) -> None:
    run = succeeded_run(
        run_id='Flow/1 "quoted" \\ back\nslash', succeeded=succeeded, rows=rows,
        step_durations={s: d for s, (d, _) in steps.items()},
        step_attempts={s: a for s, (_, a) in steps.items()},
        checks=[(name, sev, ok) for (name, sev), ok in checks.items()],
    )
    path = tmp_path / "enrich.prom"
    write_textfile(path, run, last)
    # Decode the bytes: read_text() would turn a raw "\r" (legal inside a label value) into "\n".
    _, samples = parse(path.read_bytes().decode("utf-8"))
    for step, (seconds, attempts) in steps.items():
        assert value(samples, "enrich_step_duration_seconds", step=step) == seconds
        assert value(samples, "enrich_step_attempts", step=step) == attempts
    for (name, severity), ok in checks.items():
        assert value(samples, "enrich_check_passed", check=name, severity=severity) == (1 if ok else 0)
    for outcome in ROW_OUTCOMES:
        assert value(samples, "enrich_rows", outcome=outcome) == rows.get(outcome, 0)
    assert value(samples, "enrich_last_run_info", flow=FLOW, run_id=run.run_id) == 1
    expected_success = SUCCESS_TIME if succeeded else last
    assert samples.get(("enrich_last_success_timestamp_seconds", frozenset())) == expected_success


# --------------------------------------------------------------------------- push (no real gateway)

def closed_port() -> int:
    """A loopback port nobody listens on (bound then closed)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_push_to_unreachable_gateway_is_a_problem_not_an_exception(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    textfile = tmp_path / "enrich.prom"
    started = time.monotonic()
    problems = publish_metrics(succeeded_run(), textfile, url, None)
    assert time.monotonic() - started < 5
    assert len(problems) == 1
    assert url in problems[0] and "refused" in problems[0].lower()
    assert any("refused" in r.getMessage().lower() and r.levelname == "WARNING" for r in caplog.records)
    assert textfile.exists(), "the textfile is written even though the push fails"


def test_push_raises_and_publish_reports_for_malformed_urls() -> None:
    for url in ("http://[::1", "http://127.0.0.1:notaport"):  # both fail before any connection
        problems = publish_metrics(failed_run(), None, url, PREVIOUS_SUCCESS)
        assert len(problems) == 1 and "could not push" in problems[0], url


def test_push_timeout_is_honoured() -> None:
    # A listening socket that never answers: connect succeeds, the read times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(OSError):
            push(url, succeeded_run(), None, timeout=0.5)
        assert time.monotonic() - started < 3


def test_publish_with_no_destination_does_nothing(tmp_path: Path) -> None:
    assert publish_metrics(succeeded_run(), None, None, None) == []
    assert publish_metrics(succeeded_run(), None, "   ", None) == []
    assert os.listdir(tmp_path) == []


def test_publish_reports_both_problems(tmp_path: Path) -> None:
    problems = publish_metrics(succeeded_run(), tmp_path / "missing-dir" / "enrich.prom",
                               f"127.0.0.1:{closed_port()}", None)
    assert len(problems) == 2
    assert "textfile" in problems[0] and "Pushgateway" in problems[1]


def test_credentials_in_the_gateway_url_are_masked(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://user:s3cr3t@127.0.0.1:{closed_port()}"
    problems = publish_metrics(succeeded_run(), None, url, None)
    assert len(problems) == 1 and "s3cr3t" not in problems[0] and "***@127.0.0.1" in problems[0]
    assert all("s3cr3t" not in r.getMessage() for r in caplog.records)


def test_gateway_url_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert gateway_url_from_env({}) is None
    assert gateway_url_from_env({"PROMETHEUS_PUSHGATEWAY": "  "}) is None
    assert gateway_url_from_env({"PROMETHEUS_PUSHGATEWAY": " http://127.0.0.1:9091 "}) == "http://127.0.0.1:9091"
    monkeypatch.setenv("PROMETHEUS_PUSHGATEWAY", "127.0.0.1:9091")
    assert gateway_url_from_env() == "127.0.0.1:9091"


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Records every request; answers with the server's configured status and body."""

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.requests.append((self.command, self.path, self.rfile.read(length).decode()))  # type: ignore[attr-defined]
        status, body = self.server.answer  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PUT = do_POST = do_DELETE = _handle

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - base signature
        pass


@pytest.fixture
def recorder() -> Iterator[http.server.HTTPServer]:
    """A fake gateway on 127.0.0.1 recording the requests it gets."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Recorder)
    server.requests = []  # type: ignore[attr-defined]
    server.answer = (200, b"")  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_push_methods_and_payloads(recorder: http.server.HTTPServer) -> None:
    url = f"http://127.0.0.1:{recorder.server_port}"
    push(url, succeeded_run(), PREVIOUS_SUCCESS)
    push(url, failed_run(), PREVIOUS_SUCCESS)
    (put, put_path, put_body), (post, post_path, post_body) = recorder.requests  # type: ignore[attr-defined]

    assert (put, post) == ("PUT", "POST")
    assert put_path == post_path == f"/metrics/job/{FLOW}"  # grouping key: job=<flow> only
    _, put_samples = parse(put_body)
    assert value(put_samples, "enrich_last_success_timestamp_seconds") == SUCCESS_TIME
    assert "enrich_last_success_timestamp_seconds" not in post_body
    _, post_samples = parse(post_body)
    assert value(post_samples, "enrich_last_run_success") == 0
    assert names_of(post_samples) == set(METRIC_NAMES) - {"enrich_last_success_timestamp_seconds"}


def test_gateway_error_body_is_in_the_problem(recorder: http.server.HTTPServer) -> None:
    recorder.answer = (400, b"pushed metrics are invalid or inconsistent with existing metrics")  # type: ignore[attr-defined]
    problems = publish_metrics(succeeded_run(), None, f"127.0.0.1:{recorder.server_port}", None)
    assert len(problems) == 1
    assert "HTTP 400" in problems[0] and "inconsistent with existing metrics" in problems[0]


# --------------------------------------------------------------------------- real Pushgateway

def gateway_samples(gateway: Pushgateway) -> Samples:
    """Samples of the gateway's /metrics pushed under job=<flow> (grouping labels dropped)."""
    _, samples = parse(gateway.metrics_text())
    ours: Samples = {}
    for (name, labels), v in samples.items():
        labels_dict = dict(labels)
        if labels_dict.pop("job", None) == FLOW and labels_dict.pop("instance", "") == "":
            ours[(name, frozenset(labels_dict.items()))] = v
    return ours


def test_real_pushgateway_keeps_last_success_across_a_failed_run(pushgateway: Pushgateway,  # noqa: F811
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    for proxy in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(proxy, raising=False)
    success = succeeded_run()
    assert publish_metrics(success, None, pushgateway.url, None) == []
    after_success = gateway_samples(pushgateway)
    assert value(after_success, "enrich_last_success_timestamp_seconds") == SUCCESS_TIME
    assert value(after_success, "enrich_last_run_success") == 1
    assert value(after_success, "enrich_step_duration_seconds", step="end") == 0.1

    # A failed run, with a ledger value that differs from the gateway's: the gateway's wins.
    failure = failed_run()
    assert publish_metrics(failure, None, pushgateway.url, PREVIOUS_SUCCESS) == []
    after_failure = gateway_samples(pushgateway)

    assert value(after_failure, "enrich_last_success_timestamp_seconds") == SUCCESS_TIME
    assert value(after_failure, "enrich_last_run_success") == 0
    assert value(after_failure, "enrich_last_run_timestamp_seconds") == FAILURE_TIME
    assert value(after_failure, "enrich_last_run_info", flow=FLOW, run_id=failure.run_id) == 1
    assert ("enrich_last_run_info", frozenset({("flow", FLOW), ("run_id", success.run_id)})) not in after_failure
    assert value(after_failure, "enrich_checks_failed", severity="critical") == 2
    assert value(after_failure, "enrich_rows", outcome="loaded") == 0
    assert value(after_failure, "enrich_step_attempts", step="enrich") == 3
    # POST replaced the whole family: the step the failed run never reached is gone.
    assert ("enrich_step_duration_seconds", frozenset({("step", "end")})) not in after_failure
    assert {n for n in names_of(after_failure) if n.startswith("enrich_")} == set(METRIC_NAMES)
    assert value(after_failure, "push_time_seconds") > 0
    assert value(after_failure, "push_failure_time_seconds") == 0

    # A later success replaces the group whole (PUT).
    later = succeeded_run(finished_at=FAILURE_TIME + 100, checks=[("row_count", "critical", True)])
    assert publish_metrics(later, None, pushgateway.url, SUCCESS_TIME) == []
    after_later = gateway_samples(pushgateway)
    assert value(after_later, "enrich_last_success_timestamp_seconds") == FAILURE_TIME + 100
    assert value(after_later, "enrich_last_run_success") == 1
    assert [labels for n, labels in after_later if n == "enrich_check_passed"] == \
        [frozenset({("check", "row_count"), ("severity", "critical")})]


def test_real_pushgateway_first_run_failed(pushgateway: Pushgateway) -> None:  # noqa: F811
    assert publish_metrics(failed_run(), None, pushgateway.url, None) == []
    samples = gateway_samples(pushgateway)
    assert value(samples, "enrich_last_run_success") == 0
    assert "enrich_last_success_timestamp_seconds" not in names_of(samples)


def test_pushgateway_helper_stops_the_gateway_even_on_failure() -> None:
    binary = require_binary()
    with pytest.raises(RuntimeError, match="boom"):
        with running_pushgateway(binary) as gateway:
            assert "pushgateway_build_info" in gateway.metrics_text()
            port = gateway.port
            raise RuntimeError("boom")
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


def test_missing_pushgateway_fails_unless_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(BINARY_ENV, str(tmp_path / "no-such-pushgateway"))
    monkeypatch.delenv(SKIP_ENV, raising=False)
    with pytest.raises(pytest.fail.Exception, match="make install"):
        require_binary()
    monkeypatch.setenv(SKIP_ENV, "1")
    with pytest.raises(pytest.skip.Exception, match="make install"):
        require_binary()
