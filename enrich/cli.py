"""The operator CLI: ``python -m enrich runs|status|backup|restore``.

* ``runs``: the latest runs (id, status, times, duration, counts);
* ``status RUN``: one run's ledger: its figures, every step attempt with its duration
  and error, its checks and its alerts (``RUN`` is the full id, its number, or ``last``);
* ``backup --database DB DEST``: a consistent online copy (SQLite's backup API, safe
  while a run writes), integrity-checked;
* ``restore --database DB SRC``: replaces DB by a verified copy of the backup SRC,
  keeping the replaced file aside as ``DB.replaced-<UTC time>``; refuses while a run
  is in progress.

Every command prints a readable table for people, or JSON with ``--json`` for
scripts. Exit codes: 0 done; 1 refused or failed (a run in progress, a backup that
fails its checks); 2 bad usage, a missing file or an unknown run. The reads never
write: the database is opened read-only. All SQL is in :mod:`enrich.storage`.
"""
from __future__ import annotations

import argparse
import getpass
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from enrich import runlock, storage

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
DEFAULT_DATABASE = "database.db"


class UnknownRun(LookupError):
    """The run named on the command line is not in the database's ledger."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (every subcommand takes ``--database`` and ``--json``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--database", default=DEFAULT_DATABASE, metavar="DB",
                        help=f"SQLite database file (default: {DEFAULT_DATABASE})")
    common.add_argument("--json", action="store_true", help="print JSON for scripts instead of tables")
    parser = argparse.ArgumentParser(prog="python -m enrich", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    runs = commands.add_parser("runs", parents=[common], help="list the latest runs")
    runs.add_argument("--limit", type=_positive_int, default=20, help="how many runs (default: 20)")
    status = commands.add_parser("status", parents=[common],
                                 help="one run: figures, steps with durations and errors, checks, alerts")
    status.add_argument("run", metavar="RUN", help="run id (TransactionEnrichmentFlow/123), its number, or last")
    backup = commands.add_parser("backup", parents=[common],
                                 help="consistent online copy of the database, integrity-checked")
    backup.add_argument("dest", metavar="DEST", help="new backup file, or a directory to put it in")
    restore = commands.add_parser("restore", parents=[common],
                                  help="replace the database by a verified backup (the old file is kept aside)")
    restore.add_argument("source", metavar="SRC", help="backup file to restore")
    restore.add_argument("--force", action="store_true",
                         help="restore even though a run may be in progress (only once it is known dead)")
    restore.add_argument("--stale-after-hours", type=float, default=storage.RUNNING_STALE_AFTER_HOURS,
                         metavar="H", help="a run marked running for longer is taken as dead "
                                           f"(default: {storage.RUNNING_STALE_AFTER_HOURS:g})")
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text}: must be at least 1")
    return value


# --------------------------------------------------------------------------- commands
def command_runs(args: argparse.Namespace) -> dict[str, object]:
    """The latest runs, newest first."""
    with _reading(args.database) as db:
        return {"database": str(Path(args.database).resolve()), "runs": storage.list_runs(db, args.limit)}


def command_status(args: argparse.Namespace) -> dict[str, object]:
    """One run's ledger: run row, step attempts, checks, alerts."""
    with _reading(args.database) as db:
        run_id = storage.resolve_run(db, "" if args.run == "last" else args.run) if args.run else None
        if run_id is None:
            raise UnknownRun(f"{args.run}: no such run in {Path(args.database).resolve()}. "
                             "List them with: python -m enrich runs")
        return {"run": storage.get_run(db, run_id), "steps": storage.step_attempts(db, run_id),
                "checks": storage.check_results(db, run_id), "alerts": storage.alerts_for_run(db, run_id)}


def command_backup(args: argparse.Namespace) -> dict[str, object]:
    """A consistent, integrity-checked copy of the database."""
    return storage.backup_database(args.database, args.dest)


def command_restore(args: argparse.Namespace) -> dict[str, object]:
    """The database replaced by a verified backup, holding the run lock meanwhile.

    The lock (taken like a run takes it, by this process) makes a run started
    during the restore fail at once instead of writing into the file being moved
    aside. It is taken only on a database with nothing in the way: otherwise
    restoring needs ``--force`` (the operator knows no run is alive), and a damaged
    file is not written to.
    """
    storage.verify_backup(Path(args.source).resolve())  # a bad source is refused before anything is touched
    claim, locked = f"restore/{os.getpid()}", None
    if not args.force and not storage.restore_blockers(args.database, args.stale_after_hours):
        try:
            runlock.hold(Path(args.database), claim, getpass_user(), pid=os.getpid())
            locked = claim
        except storage.RunLockHeld as exc:  # a run started just now
            holder = (exc.holder or {}).get("run_id", "another run")
            raise storage.RestoreRefused(f"{args.database}: not restored: run {holder} holds the run lock. "
                                         f"{exc}") from exc
    try:
        return storage.restore_database(args.database, args.source, force=args.force,
                                        stale_after_hours=args.stale_after_hours, own_lock=locked)
    except BaseException:
        if locked:  # not restored: the database is the one we locked; free it
            runlock.release(Path(args.database), locked)
        raise
    # restored: the lock row went aside with the replaced file; the new file is left untouched


def getpass_user() -> str:
    """The operator's user name for the lock (``USER``/``LOGNAME``, else the account's)."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or getpass.getuser()


class _reading:  # noqa: N801 - a context manager used like a function
    """The database opened read-only, closed on exit."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self):
        self.db = storage.open_readonly(self.path)
        return self.db

    def __exit__(self, *exc_info: object) -> None:
        self.db.close()


# --------------------------------------------------------------------------- output for people
def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    text = str(value).replace("\n", " ")
    return text if len(text) <= 90 else text[:87] + "..."


def _table(rows: Sequence[dict], columns: Sequence[str]) -> str:
    """Rows as an aligned text table (numbers right-aligned), indented by two spaces."""
    if not rows:
        return "  (none)"
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    numeric = [all(isinstance(row.get(column), (int, float)) or row.get(column) is None for row in rows)
               for column in columns]
    widths = [max(len(column), *(len(line[i]) for line in cells)) for i, column in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        return "  " + "  ".join(value.rjust(width) if right else value.ljust(width)
                                for value, width, right in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(columns), line(["-" * width for width in widths]), *map(line, cells)])


def render_runs(result: dict) -> str:
    """The runs as a table."""
    return f"Runs in {result['database']} (newest first):\n" + _table(
        result["runs"], ["run_id", "status", "started_at", "finished_at", "duration_s", "rows_read",
                         "rows_loaded", "rows_new", "rows_updated", "rows_rejected", "tagged", "ambiguous",
                         "annotated"])


def render_status(result: dict) -> str:
    """A run's card in text: figures, steps, checks, alerts."""
    run = result["run"]
    figures = ", ".join(f"{name.removeprefix('rows_')} {run[name]}" for name in storage.RUN_FIELDS
                        if (name.startswith("rows_") or name in ("tagged", "untagged", "ambiguous", "annotated",
                                                                 "zero_amount")) and run.get(name) is not None)
    lines = [f"Run {run['run_id']}: {run['status'].upper()}",
             f"  started {run['started_at']}, finished {run.get('finished_at') or '-'}, user {run.get('user')}",
             f"  input {run.get('input_path')} ({run.get('input_bytes')} bytes, sha256 {run.get('input_sha256')})",
             f"  rows: {figures or '-'}",
             "", "Steps (every attempt):",
             _table(result["steps"], ["step", "attempt", "status", "started_at", "duration_s", "error_type",
                                      "error_message"]),
             "", "Checks:",
             _table([{**c, "passed": "yes" if c["passed"] else "NO"} for c in result["checks"]],
                    ["check_name", "severity", "passed", "observed", "expected", "message"]),
             "", "Alerts:",
             _table(result["alerts"], ["created_at", "channel", "status", "recipients", "error"])]
    return "\n".join(lines)


def render_backup(result: dict) -> str:
    """What a backup did."""
    counts = ", ".join(f"{table} {n}" for table, n in result["counts"].items())
    return (f"Backed up {result['database']}\n       to {result['backup']}\n"
            f"  {result['bytes']} bytes in {result['seconds']} s; integrity_check: {result['integrity']}; "
            f"schema version {result['schema_version']}\n  rows: {counts}")


def render_restore(result: dict) -> str:
    """What a restore did."""
    counts = ", ".join(f"{table} {n}" for table, n in result["counts"].items())
    kept = "\n".join(f"  kept aside: {path}" for path in result["replaced"]) or "  (there was no database to replace)"
    forced = "".join(f"\n  FORCED past: {reason}" for reason in result["forced_past"])
    return (f"Restored {result['database']}\n    from {result['restored_from']}\n{kept}{forced}\n"
            f"  integrity_check: {result['integrity']}; schema version {result['schema_version']}\n"
            f"  rows: {counts}")


COMMANDS: dict[str, tuple[Callable[[argparse.Namespace], dict], Callable[[dict], str]]] = {
    "runs": (command_runs, render_runs),
    "status": (command_status, render_status),
    "backup": (command_backup, render_backup),
    "restore": (command_restore, render_restore),
}


def main(argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None) -> int:
    """Run one command; return the exit code (0 done, 1 refused or failed, 2 bad usage or missing file)."""
    out, err = out or sys.stdout, err or sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed the usage error (or the help)
        return int(exc.code or 0)
    run, render = COMMANDS[args.command]
    try:
        result = run(args)
    except (storage.DatabaseMissing, storage.DatabaseDirectoryMissing, FileExistsError, UnknownRun) as exc:
        print(f"python -m enrich {args.command}: error: {exc}", file=err)
        return EXIT_USAGE
    except storage.StorageError as exc:  # refused, damaged, unreadable, full disk...
        print(f"python -m enrich {args.command}: failed: {exc}", file=err)
        return EXIT_FAILED
    if args.json:
        json.dump(result, out, indent=2, default=str)
        out.write("\n")
    else:
        print(render(result), file=out)
    return EXIT_OK
