"""A real S3 server on a loopback port (moto in server mode), and Metaflow's settings for it.

Metaflow's S3 datastore does its transfers in subprocesses (``metaflow.plugins.datatools.s3.s3op``),
and a flow's steps run in subprocesses too, so moto's in-process mock (``mock_aws``) cannot
serve them: they need a server they can reach by URL. :class:`MotoServer` runs moto's
``ThreadedMotoServer`` in a child process (``port=0``: the OS picks a free port, so no race)
listening on ``127.0.0.1`` only; it dies with this process (``PR_SET_PDEATHSIG``, and it
also stops when its stdin closes).

moto serves every AWS service on the one endpoint (S3, and also Batch, Step Functions, IAM,
EC2...), so :func:`metaflow_s3_env` points *all* AWS clients at it (``AWS_ENDPOINT_URL``),
with dummy credentials and empty AWS config files: nothing can reach a real AWS endpoint or
read a real credential file.

For tests, use the fixtures of :mod:`tests.support.fixtures` (``s3_server``, ``s3_bucket``,
``metaflow_s3_env``).
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tests.support.children import die_with_parent

#: The only address the server listens on.
HOST = "127.0.0.1"
#: moto accepts any credentials; these are the ones its documentation uses.
ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing"
#: The region of the dummy account (a bucket made in us-east-1 needs no LocationConstraint).
REGION = "us-east-1"
#: Seconds to wait for the child to print its port.
READY_TIMEOUT_S = 30.0
#: How many processes Metaflow's S3 client may use at once (its default is 64).
METAFLOW_S3_WORKERS = 2

#: Environment variables that could lead an AWS SDK to real credentials or a real endpoint;
#: :func:`metaflow_s3_env` removes them (and every ``AWS_ENDPOINT_URL_<SERVICE>``).
AWS_VARIABLES_REMOVED = (
    "AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN",
    "AWS_ROLE_ARN", "AWS_ROLE_SESSION_NAME", "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "AWS_CA_BUNDLE", "AWS_USE_FIPS_ENDPOINT",
    "AWS_USE_DUALSTACK_ENDPOINT", "AWS_S3_US_EAST_1_REGIONAL_ENDPOINT",
)

# The child: moto's threaded server on an OS-chosen port; prints the port, serves until
# its stdin closes (the parent stopped or died) or it gets SIGTERM.
_SERVE = """\
import sys
from moto.server import ThreadedMotoServer
server = ThreadedMotoServer(ip_address=sys.argv[1], port=0, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
"""


class S3Unavailable(RuntimeError):
    """moto's server could not be started."""


class MotoServer:
    """moto's server (all AWS services, S3 included) in a child process on ``127.0.0.1``."""

    def __init__(self, log_path: str | os.PathLike[str] | None = None) -> None:
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path is not None else \
            Path(tempfile.mkstemp(prefix="moto-", suffix=".log")[1])
        self.port: int | None = None
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[str] | None = None

    @property
    def endpoint_url(self) -> str:
        if self.port is None:
            raise S3Unavailable("the moto server is not started")
        return f"http://{HOST}:{self.port}"

    def __enter__(self) -> MotoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> MotoServer:
        """Start the server and wait for its port; returns ``self``. Raises S3Unavailable."""
        started = time.monotonic()
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET_ACCESS_KEY,
                   AWS_DEFAULT_REGION=REGION, PYTHONUNBUFFERED="1")
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-c", _SERVE, HOST], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, env=env, cwd=tempfile.gettempdir(),
                preexec_fn=die_with_parent)  # noqa: PLW1509 - only calls the preloaded prctl
        assert self._process.stdout is not None
        line = _read_line(self._process, READY_TIMEOUT_S)
        if not line.strip().isdigit():
            self.stop()
            raise S3Unavailable(f"moto's server did not start (is moto[server] installed?): {line!r}; "
                                f"log: {self.log()[-1500:]}")
        self.port = int(line)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL). Safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()  # nothing to flush: moto keeps its state in memory
                try:
                    process.wait(timeout=3)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=3)
            for stream in (process.stdin, process.stdout):
                with contextlib.suppress(OSError):
                    if stream is not None:
                        stream.close()
        if self._own_log:
            with contextlib.suppress(OSError):
                self.log_path.unlink()

    def log(self) -> str:
        """What the server wrote so far (one line per request)."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def client(self, service: str = "s3") -> Any:
        """A boto3 client for ``service`` talking to this server with the dummy credentials."""
        import boto3

        return boto3.session.Session().client(
            service, endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=SECRET_ACCESS_KEY)

    def create_bucket(self, name: str | None = None) -> str:
        """Create a bucket (default: a new unique name) and return its name."""
        name = name or f"enrich-test-{uuid.uuid4().hex[:12]}"
        if len(name) < 3:
            raise ValueError("S3 bucket names have at least 3 characters")
        self.client("s3").create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        """Every key in ``bucket`` under ``prefix``."""
        paginator = self.client("s3").get_paginator("list_objects_v2")
        return [item["Key"] for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])]


def _read_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The child's first stdout line, or ``''`` when it exits or ``timeout`` passes first."""
    import selectors

    assert process.stdout is not None
    with selectors.DefaultSelector() as selector:
        selector.register(process.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            return ""
    return process.stdout.readline()


def metaflow_s3_env(endpoint_url: str, bucket: str, config_dir: str | os.PathLike[str],
                    *, prefix: str = "metaflow") -> dict[str, str]:
    """Environment variables that make Metaflow store everything in ``s3://bucket/prefix`` on
    ``endpoint_url``, and that keep every AWS client (boto3, in any process) on that endpoint
    with dummy credentials.

    ``config_dir`` receives empty AWS config/credential files and an empty Metaflow home, so
    that no file of the person running the tests (``~/.aws``, ``~/.metaflowconfig``) is read.
    Variables to *remove* from the environment are :data:`AWS_VARIABLES_REMOVED`, every
    ``AWS_ENDPOINT_URL_<SERVICE>``, and ``METAFLOW_PROFILE`` (see :func:`variables_to_remove`).
    """
    config_dir = Path(config_dir)
    (config_dir / "metaflow-home").mkdir(parents=True, exist_ok=True)
    for name in ("aws-config", "aws-credentials"):
        (config_dir / name).touch()
    return {
        # Metaflow: the S3 datastore on this endpoint, local metadata, few S3 worker processes.
        "METAFLOW_DEFAULT_DATASTORE": "s3",
        "METAFLOW_DATASTORE_SYSROOT_S3": f"s3://{bucket}/{prefix}",
        "METAFLOW_S3_ENDPOINT_URL": endpoint_url,
        "METAFLOW_S3_WORKER_COUNT": str(METAFLOW_S3_WORKERS),
        "METAFLOW_S3_RETRY_COUNT": "1",
        "METAFLOW_DEFAULT_METADATA": "local",
        "METAFLOW_HOME": str(config_dir / "metaflow-home"),
        # AWS SDK: dummy credentials, one region, every service on this endpoint, no files.
        "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
        "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_CONFIG_FILE": str(config_dir / "aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(config_dir / "aws-credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        # Loopback never through a proxy.
        "NO_PROXY": f"{HOST},localhost",
        "no_proxy": f"{HOST},localhost",
    }


def variables_to_remove(environ: Mapping[str, str] | None = None) -> list[str]:
    """Names in ``environ`` (default ``os.environ``) that :func:`metaflow_s3_env` wants gone."""
    environ = os.environ if environ is None else environ
    return [name for name in environ
            if name in AWS_VARIABLES_REMOVED or name.startswith("AWS_ENDPOINT_URL_")
            or name == "METAFLOW_PROFILE"
            or (name.startswith("METAFLOW_") and name not in _METAFLOW_KEPT)]


#: Metaflow settings of the caller kept by :func:`variables_to_remove` (conftest.py sets them).
_METAFLOW_KEPT = frozenset({"METAFLOW_DATASTORE_SYSROOT_LOCAL", "METAFLOW_USER"})
