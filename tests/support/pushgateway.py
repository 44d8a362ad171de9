"""Start and stop a real Prometheus Pushgateway on a loopback port, for tests.

Use the :func:`running_pushgateway` context manager, or the ``pushgateway``
fixture (import it into a test module or a conftest)::

    from tests.support.pushgateway import pushgateway  # noqa: F401  (fixture)

    def test_push(pushgateway):
        push(pushgateway.url, ...)
        text = pushgateway.metrics_text()

The binary comes from Debian's ``prometheus-pushgateway`` package
(``/usr/bin/prometheus-pushgateway``; ``make install`` installs it). It is
found through ``$PUSHGATEWAY_BIN``, then ``PATH`` (``prometheus-pushgateway``
or upstream's ``pushgateway``), then ``/usr/bin``. When it is missing the
fixture FAILS, telling to run ``make install``, unless
``ENRICH_SKIP_PUSHGATEWAY=1``, in which case it skips.

The gateway listens on ``127.0.0.1`` only, on a free port, keeps metrics in
memory only (``--persistence.file=`` empty: Debian's build defaults it to
``/var/lib/prometheus/pushgateway.data``, which a test must never touch) and
is always stopped (SIGTERM, then SIGKILL) when the block or test ends, even on
failure. On Linux it also gets SIGKILL if the process that started it dies.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.children import die_with_parent, free_port

logger = logging.getLogger(__name__)

#: Environment variable naming the binary explicitly.
BINARY_ENV = "PUSHGATEWAY_BIN"
#: Set to ``1`` to skip (instead of fail) when the binary is missing.
SKIP_ENV = "ENRICH_SKIP_PUSHGATEWAY"
#: Names looked up on ``PATH``: Debian's, then upstream's.
BINARY_NAMES = ("prometheus-pushgateway", "pushgateway")
#: Where Debian's package installs it.
DEBIAN_BINARY = Path("/usr/bin/prometheus-pushgateway")
#: The only address the gateway listens on and is talked to.
HOST = "127.0.0.1"

#: Seconds to wait for ``/-/ready``.
READY_TIMEOUT_S = 5.0
#: Seconds between SIGTERM and SIGKILL when stopping.
STOP_TIMEOUT_S = 3.0

# No proxy: a test talks to 127.0.0.1 directly, whatever http_proxy says.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class PushgatewayUnavailable(RuntimeError):
    """The Pushgateway binary is missing or did not start."""


@dataclass(frozen=True)
class Pushgateway:
    """A running Pushgateway: its base URL and log file."""

    url: str
    port: int
    log_path: Path

    def get(self, path: str, timeout: float = 2.0) -> str:
        """GET ``path`` (e.g. ``/metrics``) from the gateway and return the body as text."""
        with _OPENER.open(self.url + path, timeout=timeout) as response:
            body: bytes = response.read()
        return body.decode("utf-8")

    def metrics_text(self) -> str:
        """The gateway's ``/metrics`` page (pushed groups plus its own metrics)."""
        return self.get("/metrics")

    def log(self) -> str:
        """What the gateway wrote to stdout/stderr so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


def find_binary() -> Path | None:
    """Path of the Pushgateway binary, or ``None`` when it is not installed."""
    explicit = os.environ.get(BINARY_ENV, "").strip()
    if explicit:
        path = Path(explicit)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    for name in BINARY_NAMES:
        found = shutil.which(name)
        if found:
            return Path(found)
    if DEBIAN_BINARY.is_file() and os.access(DEBIAN_BINARY, os.X_OK):
        return DEBIAN_BINARY
    return None


def require_binary() -> Path:
    """The binary's path; otherwise fail the current test (or skip it when ``ENRICH_SKIP_PUSHGATEWAY=1``)."""
    binary = find_binary()
    if binary is not None:
        return binary
    message = ("the Prometheus Pushgateway binary (Debian package prometheus-pushgateway, "
               f"{DEBIAN_BINARY}) is not installed: run `make install` "
               "(CI installs it), or set ENRICH_SKIP_PUSHGATEWAY=1 to skip this test")
    if os.environ.get(SKIP_ENV, "").strip() == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Terminate ``process``, killing it when it does not exit in time; always reaps it."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)


def _wait_ready(gateway: Pushgateway, process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Poll ``/-/ready`` until it answers 200 (True), the process exits or the deadline passes (False)."""
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with _OPENER.open(gateway.url + "/-/ready", timeout=0.5) as response:
                if response.status == 200:
                    return True
        except (OSError, ValueError):
            pass  # not listening yet
        time.sleep(0.05)
    return False


@contextlib.contextmanager
def running_pushgateway(binary: Path | None = None, *, attempts: int = 3) -> Iterator[Pushgateway]:
    """Run a Pushgateway on a free 127.0.0.1 port for the duration of the block.

    ``binary`` defaults to :func:`find_binary`. A start is retried on another
    port (up to ``attempts`` times) when the chosen port was taken in between.

    Raises:
        PushgatewayUnavailable: no binary, or it never became ready.
    """
    binary = binary or find_binary()
    if binary is None:
        raise PushgatewayUnavailable("prometheus-pushgateway is not installed: run `make install`")
    with tempfile.TemporaryDirectory(prefix="pushgateway-") as workdir:
        log_path = Path(workdir) / "pushgateway.log"
        failures: list[str] = []
        for _ in range(attempts):
            port = free_port()
            gateway = Pushgateway(url=f"http://{HOST}:{port}", port=port, log_path=log_path)
            with open(log_path, "wb") as log:
                process = subprocess.Popen(
                    [str(binary), f"--web.listen-address={HOST}:{port}",
                     "--persistence.file=", "--log.level=warn"],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    cwd=workdir, preexec_fn=die_with_parent,  # noqa: PLW1509 - only calls the preloaded prctl
                )
            try:
                if _wait_ready(gateway, process, time.monotonic() + READY_TIMEOUT_S):
                    logger.info("pushgateway %s ready (pid %d)", gateway.url, process.pid)
                    yield gateway
                    return
                failures.append(f"port {port}: exit code {process.poll()}, log: {gateway.log().strip()[-500:]}")
            finally:
                _stop(process)
        raise PushgatewayUnavailable("the Pushgateway did not become ready: " + " | ".join(failures))


@pytest.fixture
def pushgateway() -> Iterator[Pushgateway]:
    """A fresh Pushgateway for one test; fails (or skips, see module doc) when the binary is missing."""
    binary = require_binary()
    with running_pushgateway(binary) as gateway:
        yield gateway
