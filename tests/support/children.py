"""What every test server started as a child process needs: a free loopback port, and death with
the test process (so a crashed or killed test run leaves no server behind)."""
from __future__ import annotations

import ctypes
import signal
import socket
import sys
from typing import Any

HOST = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _load_prctl() -> Any:
    """libc's ``prctl`` (Linux), looked up once in the parent: the child must not dlopen after fork."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def die_with_parent() -> None:
    """``preexec_fn`` of a server: SIGKILL when the parent dies (Linux, best effort). It only calls
    the preloaded ``prctl``, which is safe between fork and exec."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
