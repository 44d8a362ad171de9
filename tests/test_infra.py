"""The test infrastructure itself: a throwaway PostgreSQL, a local S3 server (moto), and
Metaflow's S3 datastore and deployment commands working against them, all offline.

The Metaflow tests use a tiny flow written to tmp_path, not the product's flow.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from tests.support.postgres import HOST, ThrowawayPostgres
from tests.support.s3 import MotoServer

ROOT = Path(__file__).resolve().parent.parent

# PyYAML (which moto and kubernetes bring) warns when Metaflow's vendored yaml imports its _yaml.
pytestmark = pytest.mark.filterwarnings("ignore:The _yaml extension module:DeprecationWarning")

TINY_FLOW = '''\
from metaflow import FlowSpec, retry, schedule, step


@schedule(daily=True)
class TinyFlow(FlowSpec):
    """A two-step flow for the infrastructure tests."""

    @retry(times=2)
    @step
    def start(self):
        self.numbers = list(range(5))
        self.next(self.end)

    @step
    def end(self):
        self.total = sum(self.numbers)


if __name__ == "__main__":
    TinyFlow()
'''


@pytest.fixture
def tiny_flow(tmp_path: Path) -> Path:
    path = tmp_path / "tinyflow.py"
    path.write_text(TINY_FLOW, encoding="utf-8")
    return path


def _connect(url: str):
    import adbc_driver_postgresql.dbapi as pg

    return pg.connect(url, autocommit=True)


def _scalar(url: str, sql: str):
    conn = _connect(url)
    try:
        cursor = conn.cursor()
        cursor.execute(sql)
        value = cursor.fetchone()[0]
        cursor.close()
        return value
    finally:
        conn.close()


def _without_password(url: str, password: str) -> str:
    assert f":{password}@" in url
    return url.replace(f":{password}@", "@")


@pytest.fixture
def no_libpq_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No PGPASSWORD, a HOME without .pgpass, PGPASSFILE on a missing file; returns the HOME."""
    home = tmp_path / "home"
    home.mkdir()
    for name in [n for n in os.environ if n.startswith("PG")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("PGPASSFILE", str(tmp_path / "no-such-pgpass"))
    return home


# -- PostgreSQL ----------------------------------------------------------------------------

def test_postgres_password_auth_over_loopback(postgres_server: ThrowawayPostgres, postgres_url: str,
                                              no_libpq_password_sources: Path) -> None:
    assert postgres_url.startswith(f"postgresql://{postgres_server.user}:")
    assert f"@{HOST}:{postgres_server.port}/test_" in postgres_url
    conn = _connect(postgres_url)
    try:
        cursor = conn.cursor()
        cursor.execute("SELECT current_user, host(inet_server_addr()), "
                       "(SELECT rolsuper FROM pg_roles WHERE rolname = current_user)")
        assert cursor.fetchone() == (postgres_server.user, HOST, True)
        cursor.close()
    finally:
        conn.close()
    # The password is checked over TCP: a wrong one and none at all are refused.
    with pytest.raises(Exception, match="password"):
        _connect(postgres_url.replace(f":{postgres_server.password}@", ":wrong-password@"))
    with pytest.raises(Exception, match="password"):
        _connect(_without_password(postgres_url, postgres_server.password))


def test_postgres_pgpassword_replaces_the_password_in_the_url(
        postgres_server: ThrowawayPostgres, postgres_url: str, no_libpq_password_sources: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PGPASSWORD", postgres_server.password)
    assert _scalar(_without_password(postgres_url, postgres_server.password), "SELECT 1") == 1


@pytest.mark.parametrize("where", ["HOME/.pgpass", "PGPASSFILE"])
def test_postgres_pgpass_file_replaces_the_password_in_the_url(
        where: str, postgres_server: ThrowawayPostgres, postgres_url: str,
        no_libpq_password_sources: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if where == "PGPASSFILE":
        pgpass = tmp_path / "pgpass"
        monkeypatch.setenv("PGPASSFILE", str(pgpass))
    else:
        pgpass = no_libpq_password_sources / ".pgpass"
        monkeypatch.delenv("PGPASSFILE")
    # hostname:port:database:username:password; libpq ignores the file unless it is 0600.
    pgpass.write_text(f"{HOST}:{postgres_server.port}:*:{postgres_server.user}:{postgres_server.password}\n")
    pgpass.chmod(0o600)
    assert _scalar(_without_password(postgres_url, postgres_server.password), "SELECT 1") == 1


@pytest.mark.parametrize("turn", [1, 2])
def test_postgres_url_is_a_fresh_database_for_each_test(turn: int, postgres_url: str) -> None:
    # Each turn creates the same table: the second would fail if the database were shared.
    assert _scalar(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    conn = _connect(postgres_url)
    try:
        cursor = conn.cursor()
        cursor.execute("CREATE TABLE marker (turn integer)")
        cursor.close()
    finally:
        conn.close()
    assert _scalar(postgres_url, "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'") == 1


def test_postgres_throwaway_settings(postgres_server: ThrowawayPostgres) -> None:
    settings = dict(postgres_server.execute(
        "SELECT name, setting FROM pg_settings WHERE name IN ('fsync', 'synchronous_commit', "
        "'full_page_writes', 'listen_addresses', 'password_encryption', 'unix_socket_directories')"))
    assert settings == {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                        "listen_addresses": HOST, "password_encryption": "scram-sha-256",
                        "unix_socket_directories": str(postgres_server.socket_dir)}
    rules = postgres_server.execute("SELECT type, address, auth_method FROM pg_hba_file_rules "
                                    "ORDER BY line_number")
    assert rules == [("local", None, "trust"), ("host", HOST, "scram-sha-256")]
    # Its socket is in its own folder (or a short /tmp one when that path is too long for a socket).
    assert postgres_server.socket_dir == postgres_server.base_dir / "run" \
        or postgres_server.socket_dir.name.startswith("enrich-pgsock-")
    # The cluster never runs as root.
    assert os.stat(postgres_server.data_dir).st_uid != 0


def _postgres_pids(data_dir: Path) -> list[int]:
    """Process ids whose command line names ``data_dir`` (the postmaster)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(data_dir).encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                continue
    return found


def test_postgres_dies_with_the_process_that_started_it(tmp_path: Path) -> None:
    """A killed pytest worker leaves no server behind (PR_SET_PDEATHSIG on the postmaster)."""
    script = textwrap.dedent("""\
        import sys, time
        from tests.support.postgres import ThrowawayPostgres
        server = ThrowawayPostgres().start()
        print(server.data_dir, server.base_dir, flush=True)
        time.sleep(120)
        """)
    child = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        data_dir, base_dir = child.stdout.readline().split()
        assert _postgres_pids(Path(data_dir)), "the server did not start"
        child.send_signal(signal.SIGKILL)  # no finaliser runs
        child.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _postgres_pids(Path(data_dir)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _postgres_pids(Path(data_dir)) == []
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()
        shutil.rmtree(base_dir, ignore_errors=True)


def test_make_pg_cli_starts_a_server_for_a_person_and_stops_it(tmp_path: Path) -> None:
    folder = tmp_path / "pg"
    command = [sys.executable, "-m", "tests.support.postgres"]
    started = subprocess.run([*command, "start", "--dir", str(folder)], cwd=ROOT, capture_output=True,
                             text=True, timeout=120, stdin=subprocess.DEVNULL)
    try:
        assert started.returncode == 0, started.stderr
        assert "make pg-stop" in started.stdout
        url = subprocess.run([*command, "url", "--dir", str(folder)], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=True).stdout.strip()
        assert url in started.stdout and url.endswith("/enrich")
        assert _scalar(url, "SELECT current_database()") == "enrich"
        state = folder / "server.json"
        assert state.stat().st_mode & 0o077 == 0
        # pytest's tmp_path is closed to the postgres user, so the data went to a /tmp folder.
        data_dir = Path(json.loads(state.read_text())["data_dir"])
        assert _postgres_pids(data_dir)
    finally:
        stopped = subprocess.run([*command, "stop", "--dir", str(folder)], cwd=ROOT, capture_output=True,
                                 text=True, timeout=120)
    assert stopped.returncode == 0, stopped.stderr
    assert _postgres_pids(data_dir) == []
    assert not data_dir.exists()
    assert not folder.exists()


# -- S3 (moto) and Metaflow ------------------------------------------------------------------

def test_metaflow_runs_with_the_s3_datastore_on_the_local_server(
        tiny_flow: Path, metaflow_s3_env: dict[str, str], s3_server: MotoServer, s3_bucket: str) -> None:
    from metaflow import Runner

    with Runner(str(tiny_flow), show_output=False, cwd=str(tiny_flow.parent), env=metaflow_s3_env) as runner:
        with runner.run() as running:
            assert running.returncode == 0, running.stderr[-3000:]
            run = running.run
            run_id = run.id
            # Read back through Metaflow's client, from the bucket.
            assert run["end"].task.data.total == 10
    keys = s3_server.keys(s3_bucket, "metaflow/TinyFlow/")
    for step_name in ("start", "end"):  # each task's artifact index...
        assert any(key.startswith(f"metaflow/TinyFlow/{run_id}/{step_name}/")
                   and key.endswith("/0.data.json") for key in keys), keys
    assert any(key.startswith("metaflow/TinyFlow/data/") for key in keys)  # ...and the artifacts


def _flow_command(flow: Path, *args: str, env: dict[str, str] | None = None,
                  timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(flow), "--datastore=s3", *args], cwd=flow.parent,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def test_argo_workflows_create_only_json_offline(tiny_flow: Path, metaflow_s3_env: dict[str, str],
                                                 s3_server: MotoServer, s3_bucket: str) -> None:
    if importlib.util.find_spec("kubernetes") is None:  # not imported here: the flow's process does
        pytest.fail("Metaflow's argo-workflows needs the kubernetes package: pip install -e '.[cluster]' "
                    "(make install does)", pytrace=False)
    result = _flow_command(tiny_flow, "argo-workflows", "create", "--only-json",
                           env={"METAFLOW_KUBERNETES_NAMESPACE": "enrich-test"})
    assert result.returncode == 0, result.stderr[-3000:]
    template = json.loads(result.stdout)  # one document: the WorkflowTemplate
    assert template["kind"] == "WorkflowTemplate"
    assert template["metadata"]["namespace"] == "enrich-test"
    annotations = template["metadata"]["annotations"]
    # @schedule(daily=True): the cron is in an annotation (the CronWorkflow itself is only
    # made by a real `create`, not printed by --only-json).
    assert json.loads(annotations["metaflow/cron"])["schedule"] == "0 0 * * ?"
    steps = {t["name"]: t for t in template["spec"]["templates"]}
    assert steps["start"]["retryStrategy"]["limit"] == 2
    assert "retryStrategy" not in steps["end"]
    # The code package was uploaded to the datastore: --only-json needs a reachable S3.
    assert any(key.startswith("metaflow/TinyFlow/data/") for key in s3_server.keys(s3_bucket))


def _moto_batch_queue(server: MotoServer, name: str) -> str:
    """A Fargate compute environment and a job queue in moto's AWS Batch; returns the queue name."""
    ec2 = server.client("ec2")
    subnet = ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    group = ec2.describe_security_groups()["SecurityGroups"][0]["GroupId"]
    role = server.client("iam").create_role(RoleName=name, AssumeRolePolicyDocument="{}")["Role"]["Arn"]
    batch = server.client("batch")
    environment = batch.create_compute_environment(
        computeEnvironmentName=name, type="MANAGED", state="ENABLED", serviceRole=role,
        computeResources={"type": "FARGATE", "maxvCpus": 4, "subnets": [subnet],
                          "securityGroupIds": [group]})
    batch.create_job_queue(jobQueueName=name, state="ENABLED", priority=1, computeEnvironmentOrder=[
        {"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}])
    return name


def test_step_functions_create_only_json_calls_aws_so_only_works_against_moto(
        tiny_flow: Path, metaflow_s3_env: dict[str, str], s3_server: MotoServer) -> None:
    """`step-functions create --only-json` is not offline: it lists Step Functions state machines
    and describes the Batch job queue, compute environment and job definitions, and REGISTERS a
    job definition per step. With every AWS endpoint on moto (AWS_ENDPOINT_URL) it works."""
    queue = _moto_batch_queue(s3_server, f"queue-{s3_server.port}-{time.monotonic_ns()}")
    role = "arn:aws:iam::123456789012:role/{}"
    env = {"METAFLOW_SFN_IAM_ROLE": role.format("sfn"),              # step_functions.py: its partition
           "METAFLOW_BATCH_JOB_QUEUE": queue,                        # batch_client.py: describe_job_queues
           "METAFLOW_ECS_S3_ACCESS_IAM_ROLE": role.format("s3-access"),
           "METAFLOW_ECS_FARGATE_EXECUTION_ROLE": role.format("fargate-execution")}
    before = {d["jobDefinitionName"] for d in s3_server.client("batch").describe_job_definitions()["jobDefinitions"]}
    result = _flow_command(tiny_flow, "step-functions", "create", "--only-json", env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    machine = json.loads(result.stdout)
    start = machine["States"]["start"]
    assert machine["StartAt"] == "start"
    assert start["Resource"] == "arn:aws:states:::batch:submitJob.sync"
    assert start["Parameters"]["JobQueue"] == queue
    assert start["Parameters"]["RetryStrategy"] == {"Attempts": 3}  # @retry(times=2): 1 + 2 tries
    # --only-json wrote to "AWS": job definitions were registered in (moto's) AWS Batch.
    after = {d["jobDefinitionName"] for d in s3_server.client("batch").describe_job_definitions()["jobDefinitions"]}
    assert {name for name in after - before if name.startswith("metaflow_")}
