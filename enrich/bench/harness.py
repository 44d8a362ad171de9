"""Benchmark harness: the whole flow on a generated file, timed and measured.

``python -m enrich.bench --rows 1000000`` (or ``make bench ROWS=1000000``):

1. generates (once, then reused) a seeded file with :mod:`enrich.generate`:
   realistic French wordings, the four default tags, some ambiguous wordings;
2. runs ``algorithm.py run`` on a fresh database and measures its wall time and the
   peak resident memory of its largest process (``wait4``'s ``ru_maxrss`` covers the
   whole process tree: the Metaflow runtime, every task, the card renderer);
3. reads each step's duration from the run's ledger (``step_runs``);
4. runs the same file again on the now populated database (nothing changes: the
   idempotent re-run every scheduler retry or double start produces);
5. with ``--tag-count K``, runs once more on a fresh database with a K-tag list
   (multi-word tags included) and reports the tagging step's cost against the
   four-tag run.

Results are printed as a table, appended to ``<workdir>/results.jsonl``, and with
``--markdown`` printed as the README's results-table row. Timings are reported,
never asserted: they depend on the machine.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

from enrich import generate, storage
from enrich.paths import PROJECT_DIR


@dataclass(frozen=True)
class Measure:
    """One timed run of the flow."""

    label: str
    wall_s: float
    peak_rss_mb: float
    exit_code: int
    rows_read: int | None
    steps_s: dict[str, float] = field(default_factory=dict)

    @property
    def rows_per_s(self) -> float:
        return (self.rows_read or 0) / self.wall_s if self.wall_s else 0.0


def machine() -> dict[str, object]:
    """Cores, RAM and Python of this machine, for the results table."""
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    return {"cores": os.cpu_count(), "ram_gb": round(pages * page_size / 2**30),
            "python": platform.python_version(), "date": date.today().isoformat()}


def input_file(workdir: Path, rows: int, seed: int) -> Path:
    """The generated input for ``rows``/``seed``, generated on first use only."""
    path = workdir / f"transactions-{rows}-seed{seed}.csv"
    if not path.exists():
        generate.write_csv(path, rows=rows, seed=seed, malformed=max(rows // 250_000, 1),
                           duplicates=max(rows // 500_000, 2))
    return path


def tag_list_file(workdir: Path, count: int) -> Path:
    """A ``count``-tag list: the four default tags, then single- and multi-word merchant tags."""
    path = workdir / f"tags-{count}.txt"
    extra = [f"MARCHAND{i}" if i % 2 else f"VIR SEPA ENSEIGNE{i}" for i in range(max(count - 4, 0))]
    path.write_text("\n".join(["TATA", "TOTO", "TUTU", "TAXI", *extra]) + "\n", encoding="utf-8")
    return path


def fresh_database(path: Path) -> Path:
    """Delete a database and its side files."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def run_flow(label: str, transactions: Path, database: Path, workdir: Path,
             tags: Path | None = None) -> Measure:
    """Run ``algorithm.py run`` once; wall time, peak RSS of its largest process, ledger durations."""
    command = [sys.executable, str(PROJECT_DIR / "algorithm.py"), "run",
               "--transactions", str(transactions), "--database", str(database)]
    if tags is not None:
        command += ["--tags", str(tags)]
    env = {**os.environ, "USER": os.environ.get("USER") or "bench"}
    log = (workdir / f"{label}.log").open("w")
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    log.close()
    rows_read, steps = _ledger(database)
    return Measure(label=label, wall_s=round(wall, 2), peak_rss_mb=round(usage.ru_maxrss / 1024, 1),
                   exit_code=process.returncode, rows_read=rows_read, steps_s=steps)


def _ledger(database: Path) -> tuple[int | None, dict[str, float]]:
    db = storage.connect(database)
    try:
        latest = storage.latest_run(db)
        if latest is None:
            return None, {}
        steps: dict[str, float] = {}
        for attempt in storage.step_attempts(db, latest["run_id"]):
            steps[attempt["step"]] = round(steps.get(attempt["step"], 0.0) + float(attempt["duration_s"] or 0), 2)
        return latest["rows_read"], steps
    finally:
        db.close()


def benchmark(rows: int, seed: int, workdir: Path, tag_count: int = 0, rerun: bool = True) -> dict[str, object]:
    """Run the measurements of one size and return them with the machine's description."""
    workdir.mkdir(parents=True, exist_ok=True)
    transactions = input_file(workdir, rows, seed)
    database = fresh_database(workdir / f"bench-{rows}.db")
    measures = [run_flow("fresh", transactions, database, workdir)]
    if rerun:
        measures.append(run_flow("rerun", transactions, database, workdir))
    if tag_count:
        many = fresh_database(workdir / f"bench-{rows}-tags{tag_count}.db")
        measures.append(run_flow(f"tags{tag_count}", transactions, many, workdir,
                                 tag_list_file(workdir, tag_count)))
    return {"rows": rows, "seed": seed, "machine": machine(),
            "measures": [{**asdict(m), "rows_per_s": round(m.rows_per_s)} for m in measures]}


def table(result: dict[str, object]) -> str:
    """The measurements as a plain-text table."""
    lines = [f"{result['rows']:,} rows  (machine: {json.dumps(result['machine'])})",
             f"{'run':<12}{'exit':>5}{'wall s':>9}{'rows/s':>11}{'peak MB':>9}  steps (ledger, s)"]
    for m in result["measures"]:
        steps = ", ".join(f"{k} {v}" for k, v in m["steps_s"].items())
        lines.append(f"{m['label']:<12}{m['exit_code']:>5}{m['wall_s']:>9.2f}{m['rows_per_s']:>11,}"
                     f"{m['peak_rss_mb']:>9.0f}  {steps}")
    return "\n".join(lines)


def markdown_row(result: dict[str, object]) -> str:
    """One row of the README's results table."""
    by_label = {m["label"]: m for m in result["measures"]}
    fresh, rerun = by_label["fresh"], by_label.get("rerun")
    many = next((m for label, m in by_label.items() if label.startswith("tags")), None)
    ratio = (f"{many['steps_s'].get('tag_transactions', 0) / fresh['steps_s']['tag_transactions']:.2f}×"
             if many and fresh["steps_s"].get("tag_transactions") else "–")
    return (f"| {result['rows']:,} | {fresh['wall_s']:.1f} s | {fresh['rows_per_s']:,} | "
            f"{fresh['peak_rss_mb']:.0f} MB | {rerun['wall_s']:.1f} s | {ratio} | "
            f"{fresh['steps_s'].get('ingest', 0):.1f} / {fresh['steps_s'].get('tag_transactions', 0):.1f} / "
            f"{fresh['steps_s'].get('annotate_transactions', 0):.1f} / "
            f"{fresh['steps_s'].get('index_wordings', 0):.1f} / {fresh['steps_s'].get('join', 0):.1f} |"
            if rerun else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m enrich.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows to generate (default 1,000,000)")
    parser.add_argument("--seed", type=int, default=42, help="generator seed (default 42)")
    parser.add_argument("--workdir", type=Path, default=PROJECT_DIR / "bench-data",
                        help="where files, databases and logs go (default bench-data/)")
    parser.add_argument("--tag-count", type=int, default=0,
                        help="also run with a tag list of this many tags (e.g. 10000)")
    parser.add_argument("--no-rerun", action="store_true", help="skip the re-run on the populated database")
    parser.add_argument("--markdown", action="store_true", help="also print the README table row")
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    result = benchmark(args.rows, args.seed, args.workdir.resolve(), args.tag_count, not args.no_rerun)
    with (args.workdir / "results.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")
    print(table(result))
    if args.markdown:
        print(markdown_row(result))
    return 0 if all(m["exit_code"] == 0 for m in result["measures"]) else 1


if __name__ == "__main__":
    sys.exit(main())
