"""Measure the store's bulk operations on SQLite and PostgreSQL with the same input (not a test).

    .venv/bin/python -m enrich.generate --rows 1000000 --out /tmp/t1m.csv --seed 42
    .venv/bin/python -m tests.store.measure_backends /tmp/t1m.csv [--postgres URL]

Without ``--postgres``, a throwaway server is started (:mod:`tests.support.postgres`). Each
backend runs in a process of its own, so that its peak memory (``ru_maxrss``) is its own.
Prints one line of seconds per operation and backend, and the peak memory.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def measure(database: str, csv: str, shards: int) -> dict[str, float]:
    from enrich import derivation
    from enrich.ingest import read_chunks
    from enrich.store import open_store
    from enrich.tagging import load_tag_list

    store, times = open_store(database), {}
    store.prepare()

    def timed(name, function, *args):  # type: ignore[no-untyped-def]
        started = time.perf_counter()
        result = function(*args)
        times[name] = round(time.perf_counter() - started, 3)
        return result

    stats = timed("load 1st", store.load_batch, "Bench/1", read_chunks(csv))
    assert stats.rows_new == stats.rows_loaded, stats
    timed("index_wordings", store.index_wordings)
    tags = load_tag_list(None, "word")
    derived = timed("derive+stage tags", lambda: [derivation.derive_tag_shard(store, "Bench/1", tags, shard, shards)
                                                  for shard in range(shards)])
    merged = derivation.merge_shards(derived)
    timed("publish_tags", store.publish_tags, "Bench/1", merged.covered_runs, merged.state, merged.table_fingerprint)
    fingerprint = store.table_fingerprint("annotations")[0]
    timed("annotate_in_place", store.annotate_in_place, "Bench/1", ["Bench/1"], {}, fingerprint)
    timed("read all (iter_transactions)", lambda: sum(t.num_rows for t in store.iter_transactions(
        ["id", "amount_cents", "wording"], None)))
    again = timed("load again (unchanged)", store.load_batch, "Bench/2", read_chunks(csv))
    assert again.rows_unchanged == stats.rows_loaded, again
    timed("checks: annotation_discrepancies", store.annotation_discrepancies)
    times["peak RSS MiB"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return times


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("csv")
    parser.add_argument("--postgres", help="URL of an empty database (default: a throwaway server)")
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="rounds, alternating the backends; the best kept")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # child: measure this database, print JSON
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.csv, args.shards)))
        return 0
    server = None
    if args.postgres is not None and args.repeat > 1:
        parser.error("--repeat needs a fresh database per round: leave --postgres out (a throwaway server)")
    if args.postgres is None:
        from tests.support.postgres import ThrowawayPostgres

        server = ThrowawayPostgres().start()
    results: dict[str, dict[str, float]] = {}
    try:
        for round_ in range(args.repeat):
            with tempfile.TemporaryDirectory() as folder:
                for name, database in (("sqlite", str(Path(folder) / "bench.db")), ("postgresql", args.postgres)):
                    if name == "postgresql" and server is not None:
                        database = server.create_database()
                    out = subprocess.run([sys.executable, "-m", "tests.store.measure_backends", args.csv, "--one",
                                          database, "--shards", str(args.shards)], check=True, capture_output=True,
                                         text=True).stdout
                    got = json.loads(out.strip().splitlines()[-1])
                    best = results.setdefault(name, got)
                    for key, value in got.items():
                        best[key] = min(best[key], value)
    finally:
        if server is not None:
            server.stop()
    print(f"{'operation':36} {'sqlite':>9} {'postgresql':>11} {'ratio':>6}")
    totals = {name: sum(v for k, v in r.items() if "RSS" not in k) for name, r in results.items()}
    for key in results["sqlite"]:
        lite, pg = results["sqlite"][key], results["postgresql"][key]
        print(f"{key:36} {lite:>9} {pg:>11} {pg / lite if lite else 0:>6.2f}")
    lite, pg = round(totals["sqlite"], 3), round(totals["postgresql"], 3)
    print(f"{'total seconds':36} {lite:>9} {pg:>11} {pg / lite:>6.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
