"""Everything up to the cluster boundary, offline: the flow on Metaflow's S3 datastore (a real S3
server on loopback) with the PostgreSQL backend and an s3:// input, sharded tagging through the
flow, and the deployment specs a scheduler would receive."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest

from enrich.store import open_store
from tests.flow_support import INJECT, ROOT, SMALL, TOKEN, TWILIO_ENV, run_flow, write_csv
from tests.test_flow import assert_matches_rules

pytestmark = pytest.mark.flow

ALGORITHM = ROOT / "algorithm.py"


def _without_password(url: str) -> tuple[str, str]:
    parts = urllib.parse.urlsplit(url)
    netloc = f"{parts.username}@{parts.hostname}:{parts.port}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc)), urllib.parse.unquote(parts.password or "")


def _files(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*") if path.is_file()}


def test_the_flow_runs_on_the_s3_datastore_with_postgresql_and_an_s3_input(
        tmp_path, metaflow_s3_env, s3_server, s3_bucket, postgres_url):
    source = write_csv(tmp_path / "t.csv", SMALL)
    s3_server.client("s3").upload_file(str(source), s3_bucket, "input/transactions.csv")
    url, password = _without_password(postgres_url)
    workdir = tmp_path / "work"
    workdir.mkdir()
    before = _files(tmp_path)
    from metaflow import Runner

    env = {**metaflow_s3_env, "PGPASSWORD": password, **TWILIO_ENV,
           "PYTHONPATH": os.pathsep.join([str(INJECT), str(ROOT)]),
           "ENRICH_TEST_TWILIO_LOG": str(tmp_path / "sms.jsonl")}
    flow_file = ROOT / "flows" / "enrichment_flow.py"
    with Runner(str(flow_file), show_output=False, cwd=str(workdir), env=env) as runner:
        with runner.run(transactions=f"s3://{s3_bucket}/input/transactions.csv", database=url,
                        metrics=str(tmp_path / "metrics.prom")) as running:
            assert running.returncode == 0, running.stderr[-3000:]
            run_number = running.run.id
            assert running.run["end"].task.data.alert is None  # artifacts read back from the bucket

    store = open_store(postgres_url)
    stored = store.rows("SELECT t.id, t.amount_cents, t.wording, g.tag, a.annotation FROM transactions t "
                        "LEFT JOIN tags g ON g.transaction_id = t.id LEFT JOIN annotations a "
                        "ON a.transaction_id = t.id ORDER BY t.id")
    assert len(stored) == 7
    assert_matches_rules(type("Result", (), {"query": lambda self, sql, params=(): store.rows(sql, params)})())
    run = store.get_run(f"TransactionEnrichmentFlow/{run_number}")
    assert run.status == "succeeded" and run.input_path == f"s3://{s3_bucket}/input/transactions.csv"
    assert all(check.passed for check in store.check_results(run.run_id) if check.severity == "critical")
    keys = s3_server.keys(s3_bucket, "metaflow/TransactionEnrichmentFlow/")
    for step in ("start", "ingest", "tag_transactions", "publish_tags", "join", "end"):
        assert any(key.startswith(f"metaflow/TransactionEnrichmentFlow/{run_number}/{step}/") for key in keys), step
    # nothing host-local between steps: no scratch file, no local datastore, only the metrics asked for
    assert _files(tmp_path) - before - {"metrics.prom", "sms.jsonl"} == set(), _files(tmp_path) - before
    assert not (workdir / ".metaflow").exists()
    assert password not in (tmp_path / "metrics.prom").read_text()


@pytest.mark.parametrize("shards", [2, 3])
def test_sharded_tagging_through_the_flow_gives_the_one_shard_result(tmp_path, shards):
    csv = write_csv(tmp_path / "t.csv", SMALL)
    (tmp_path / "one").mkdir()
    (tmp_path / "many").mkdir()
    one = run_flow(tmp_path / "one", csv)
    many = run_flow(tmp_path / "many", csv, shards=shards)
    assert one.returncode == many.returncode == 0, many.stderr[-3000:]
    query = "SELECT transaction_id, tag FROM tags ORDER BY transaction_id"
    assert many.query(query) == one.query(query)
    figures = "SELECT tagged, untagged, ambiguous FROM runs"
    assert many.query(figures) == one.query(figures)
    shard_tasks = [task for task in many.run["tag_transactions"]]
    assert len(shard_tasks) == shards
    assert_matches_rules(many)


def _deploy(tmp_path: Path, env: dict[str, str], *command: str) -> subprocess.CompletedProcess[str]:
    secrets = {"TWILIO_AUTH_TOKEN": TOKEN, "PGPASSWORD": "pg-password-never-in-specs-7f1"}
    return subprocess.run([sys.executable, str(ALGORITHM), "--datastore=s3", *command, "--only-json"],
                          cwd=tmp_path, env={**os.environ, **env, **secrets, "ENRICH_SCHEDULE": "30 3 * * *"},
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def test_the_argo_workflows_spec_has_the_schedule_retries_resources_and_exit_hook_and_no_secret(
        tmp_path, metaflow_s3_env):
    done = _deploy(tmp_path, metaflow_s3_env, "argo-workflows", "create")
    assert done.returncode == 0, done.stderr[-3000:]
    spec = json.loads(done.stdout)
    assert json.loads(spec["metadata"]["annotations"]["metaflow/cron"])["schedule"] == "30 3 * * *"
    templates = {template["name"]: template for template in spec["spec"]["templates"]}
    for step in ("start", "ingest", "tag-transactions", "publish-tags", "annotate-transactions", "index-wordings",
                 "join"):
        assert templates[step]["retryStrategy"]["limit"] >= 2, step
    assert "retryStrategy" not in templates["end"]  # the failure check must be able to fail the run
    requests = templates["tag-transactions"]["container"]["resources"]["requests"]
    assert float(requests["cpu"]) == 4 and requests["memory"].startswith("8000")
    assert spec["spec"]["onExit"] and any("alert-on-crash" in name for name in templates)
    text = done.stdout
    assert TOKEN not in text and "pg-password-never-in-specs-7f1" not in text


def test_step_functions_refuses_the_flow_because_of_its_exit_hook(tmp_path, metaflow_s3_env, s3_server):
    """`step-functions create --only-json` is not offline (it lists state machines and registers AWS
    Batch job definitions: with every AWS endpoint on the local server it gets that far) and then
    refuses this flow: Metaflow does not deploy @exit_hook to Step Functions. The README says so;
    on Step Functions the dead man's switch (monitoring/alerts.yml) is the crash backstop."""
    from tests.test_infra import _moto_batch_queue

    queue = _moto_batch_queue(s3_server, f"enrich-{s3_server.port}-{os.getpid()}")
    role = "arn:aws:iam::123456789012:role/{}"
    env = {**metaflow_s3_env, "METAFLOW_SFN_IAM_ROLE": role.format("sfn"), "METAFLOW_BATCH_JOB_QUEUE": queue,
           "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": role.format("s3-access"),
           "METAFLOW_ECS_FARGATE_EXECUTION_ROLE": role.format("fargate-execution")}
    done = _deploy(tmp_path, env, "step-functions", "create")
    assert done.returncode != 0
    assert "@exit_hook decorator to AWS Step Functions is not currently supported" in done.stdout + done.stderr
    assert TOKEN not in done.stdout + done.stderr
