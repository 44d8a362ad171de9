"""Measure one process tree: ``python measure.py RESULT.json LOG -- COMMAND...``.

Runs COMMAND (its output to LOG), waits for it with ``os.wait4`` and writes to RESULT.json its
wall time, the peak resident memory of the largest process of its tree (``ru_maxrss``: the
command and every descendant it waited for) and its exit code.

Why a separate small process: Linux starts a child's ``ru_maxrss`` at the peak RSS of the
process that spawned it (``exec`` records the high-water mark of the memory it replaces, which
after ``fork``/``vfork`` is the parent's). Spawned from the harness, which has imported pandas
and generated the input file, every measure would read at least the harness's own peak. This
script imports only the standard library, so that floor is that of a bare Python (about 15 MB).
The harness runs it by path, so that no package ``__init__`` is imported.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time


def measure(command: list[str], log_path: str) -> dict[str, float | int]:
    """Run ``command`` with its output to ``log_path``; its wall time, peak RSS (MiB) and exit code."""
    with open(log_path, "w", encoding="utf-8") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
            "exit_code": process.returncode}


def main(argv: list[str]) -> int:
    """``RESULT LOG -- COMMAND...``: measure COMMAND and write the result as JSON; exit 0 unless misused."""
    if len(argv) < 4 or argv[2] != "--":
        print("usage: python measure.py RESULT.json LOG -- COMMAND...", file=sys.stderr)
        return 2
    result_path, log_path, command = argv[0], argv[1], argv[3:]
    result = measure(command, log_path)
    with open(result_path, "w", encoding="utf-8") as out:
        json.dump(result, out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
