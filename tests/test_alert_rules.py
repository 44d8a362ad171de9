"""The Prometheus alerting rules (monitoring/alerts.yml): promtool's syntax check, promtool's
unit tests (monitoring/alerts.test.yml), and the rules against what enrich.metrics exports.

promtool comes from Debian's ``prometheus`` package (``make test-deps`` installs it). These
tests FAIL when it is missing, they never skip: CI installs it.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from enrich import metrics
from enrich.metrics import METRIC_NAMES, RunMetrics

MONITORING = Path(__file__).resolve().parent.parent / "monitoring"
RULES = MONITORING / "alerts.yml"
RULE_TESTS = MONITORING / "alerts.test.yml"
#: The alerts issue 12 asks for, plus the absent() companion of the dead man's switch.
EXPECTED_ALERTS = {"EnrichNoRecentSuccess", "EnrichNoSuccessRecorded", "EnrichLastRunFailed",
                   "EnrichCriticalCheckFailed", "EnrichRunSlow"}
#: A metric name as written in an expression or an annotation (alert names are CamelCase).
METRIC_IN_TEXT = re.compile(r"\benrich_[a-z0-9_]+\b")


def promtool() -> str:
    """Path of promtool; fails the test (never skips) when it is not installed."""
    found = shutil.which("promtool") or ("/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        pytest.fail("promtool is not installed: run `make test-deps` (Debian package `prometheus`)")
    return found


def run_promtool(*args: str, cwd: Path = MONITORING) -> subprocess.CompletedProcess[str]:
    """Run promtool with ``args`` in ``cwd``; its output is returned, never raised on."""
    return subprocess.run([promtool(), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def alert_rules() -> list[dict[str, object]]:
    """Every alerting rule of alerts.yml, as parsed YAML."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def test_rules_pass_promtool_check() -> None:
    result = run_promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_rule_unit_tests_pass() -> None:
    result = run_promtool("test", "rules", RULE_TESTS.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_is_shown_firing_and_not_firing() -> None:
    assert {rule["alert"] for rule in alert_rules()} == EXPECTED_ALERTS
    firing: set[str] = set()
    silent: set[str] = set()
    for group in yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]:
        for case in group.get("alert_rule_test", []):
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing == EXPECTED_ALERTS, f"never shown firing: {EXPECTED_ALERTS - firing}"
    assert silent == EXPECTED_ALERTS, f"never shown silent: {EXPECTED_ALERTS - silent}"


def test_rules_use_only_metrics_the_flow_exports() -> None:
    used = set(METRIC_IN_TEXT.findall(RULES.read_text(encoding="utf-8")))
    assert {"enrich_last_success_timestamp_seconds", "enrich_max_silence_seconds", "enrich_last_run_success",
            "enrich_checks_failed", "enrich_run_duration_seconds"} <= used
    assert used <= set(METRIC_NAMES), f"not exported by enrich.metrics: {used - set(METRIC_NAMES)}"


def test_the_rules_default_silence_is_the_flows_default() -> None:
    (rule,) = [r for r in alert_rules() if r["alert"] == "EnrichNoRecentSuccess"]
    assert f"* 0 + {int(metrics.DEFAULT_MAX_SILENCE_S)}" in str(rule["expr"])


def test_a_wrong_rule_fails_the_unit_tests(tmp_path: Path) -> None:
    # The suite is sensitive: a dead man's switch whose default silence is 25 h instead of 26 h fails it.
    broken = RULES.read_text(encoding="utf-8").replace("* 0 + 93600", "* 0 + 90000")
    assert broken != RULES.read_text(encoding="utf-8")
    (tmp_path / RULES.name).write_text(broken, encoding="utf-8")
    suite = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))
    suite["tests"] = [group for group in suite["tests"] if group["name"].startswith("silence, default")]
    assert len(suite["tests"]) == 1
    (tmp_path / RULE_TESTS.name).write_text(yaml.safe_dump(suite), encoding="utf-8")
    result = run_promtool("test", "rules", RULE_TESTS.name, cwd=tmp_path)
    assert result.returncode != 0 and "EnrichNoRecentSuccess" in result.stdout + result.stderr


def series_of(text: str, extra_labels: dict[str, str]) -> list[dict[str, str]]:
    """promtool input series holding every sample of an exposition text, constant for 4 hours."""
    series = []
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {**sample.labels, **extra_labels}
            selector = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
            series.append({"series": f"{sample.name}{{{selector}}}", "values": f"{sample.value!r}x240"})
    return series


def test_the_textfile_of_a_real_failed_run_fires_the_expected_alerts(tmp_path: Path) -> None:
    # What write_textfile produces for a failed run (two critical checks failed, last success
    # at 60 s, 2 h of silence allowed), scraped by node_exporter's textfile collector.
    failed = RunMetrics(
        flow="TransactionEnrichmentFlow", run_id="TransactionEnrichmentFlow/42", succeeded=False,
        finished_at=3600.0, duration_s=30.0, rows={"read": 10}, step_durations={"ingest": 1.0},
        step_attempts={"ingest": 1}, checks=[("accounting", "critical", False),
                                             ("tags_complete", "critical", False), ("volume", "warning", False)],
        max_silence_s=7200.0)
    textfile = tmp_path / "metrics.prom"
    metrics.write_textfile(textfile, failed, last_success=60.0)
    node = {"job": "node", "instance": "host:9100"}
    # promtool compares annotations too (alerts.test.yml checks them): here the expressions
    # are under test, so they run from a copy of the rules without annotations.
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    for group in groups["groups"]:
        for rule in group["rules"]:
            rule.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(groups), encoding="utf-8")
    tests = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": series_of(textfile.read_text(encoding="utf-8"), node),
        "alert_rule_test": [
            {"eval_time": "1h", "alertname": "EnrichNoRecentSuccess", "exp_alerts": []},
            {"eval_time": "2h2m", "alertname": "EnrichNoRecentSuccess",
             "exp_alerts": [{"exp_labels": {**node, "severity": "critical"}}]},
            {"eval_time": "1h", "alertname": "EnrichLastRunFailed",
             "exp_alerts": [{"exp_labels": {**node, "severity": "critical"}}]},
            {"eval_time": "1h", "alertname": "EnrichCriticalCheckFailed",
             "exp_alerts": [{"exp_labels": {**node, "severity": "critical"}}]},
            {"eval_time": "1h", "alertname": "EnrichNoSuccessRecorded", "exp_alerts": []},
            {"eval_time": "1h", "alertname": "EnrichRunSlow", "exp_alerts": []},
        ]}]}
    test_file = tmp_path / "real.test.yml"
    test_file.write_text(yaml.safe_dump(tests), encoding="utf-8")
    result = run_promtool("test", "rules", test_file.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
