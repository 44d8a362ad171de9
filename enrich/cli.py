"""The operator CLI: one command group, ``enrich`` (the same as ``python -m enrich``).

* ``runs``: the latest runs (id, status, start, duration and every figure of :data:`FIGURES`);
* ``status RUN``: one run's ledger: its figures, every step attempt with its duration
  and error, its checks and its alerts (``RUN`` is the full id, its number, or ``last``);
* ``backup DEST``: a consistent online copy, integrity-checked, safe while a run writes;
* ``restore SRC``: replaces the database by a verified copy of a backup, holding the run
  lock meanwhile; refuses while a run is in progress;
* ``lock``: who holds the run lock; ``--break`` removes it once its run is known dead;
* ``query NAME``: one of the canned monitoring queries, on any backend (``--list``);
* ``browse``: datasette on an SQLite database;
* ``generate`` and ``bench``: the test-data generator and the benchmark harness.

Every command that reads a database takes ``--database`` (a file path or a
``postgresql://`` URL, default ``database.db``; messages show it without its password),
and every command that prints a table takes ``--json``. Reading commands open the store
read-only and never wait for a run. Exit codes: 0 done; 1 refused or failed (a run in
progress, a backup that fails its checks, a damaged file); 2 bad usage, a missing file or
an unknown run, with a message saying what to pass. Output cut short by a closed pipe
(``enrich runs | head``) ends the command quietly with the shell's usual 141.
"""
from __future__ import annotations

import getpass
import json
import os
import sys
import textwrap
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from enrich import runlock
from enrich.figures import FIGURES, RunRecord
from enrich.paths import PROJECT_DIR
from enrich.store import (POSTGRESQL, BadDatabaseLocation, DatabaseDirectoryMissing, DatabaseMissing, LockHolder,
                          NotADatabase, RestoreRefused, RunLockHeld, Store, StorageError, UnsupportedOperation,
                          open_store, parse_location)
from enrich.store.queries import QUERIES
from enrich.store.timeutil import parse_time

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
#: A command whose output pipe closed (``enrich runs | head``) ends like a process killed by SIGPIPE.
EXIT_BROKEN_PIPE = 128 + 13
#: Characters written to stdout at a time: a reader that stops early is noticed at the next piece.
OUTPUT_PIECE = 16384
DEFAULT_DATABASE = "database.db"
#: A run still marked running after this long is taken as dead by ``restore``.
RUNNING_STALE_AFTER_HOURS = 24.0
#: Errors that mean the command line named something that is not there or cannot be used as given.
USAGE_ERRORS: tuple[type[BaseException], ...] = (DatabaseMissing, DatabaseDirectoryMissing, BadDatabaseLocation,
                                                 UnsupportedOperation, FileExistsError)

F = TypeVar("F", bound=Callable[..., Any])


class Failed(click.ClickException):
    """The command was refused or failed (exit 1); the message says why and what to do."""

    exit_code = EXIT_FAILED


# --------------------------------------------------------------------------- options shared by the commands
def database_option(function: F) -> F:
    """``--database``: the same option, help and default on every command that reads a database."""
    return click.option("--database", "database", default=DEFAULT_DATABASE, show_default=True, metavar="DB",
                        help="the database: a file path (SQLite) or a postgresql://user@host/dbname URL")(function)


def json_option(function: F) -> F:
    """``--json``: on every command that prints a table."""
    return click.option("--json", "as_json", is_flag=True, help="print JSON for scripts instead of a table")(function)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
def cli() -> None:
    """Operate the transaction-enrichment database: look at runs, back up and restore, the run lock,
    monitoring queries, datasette, test data and the benchmark.

    The flow itself runs with `python algorithm.py run`. Every command that reads a database
    takes --database (a file path or a postgresql:// URL; default database.db), every command
    that prints a table takes --json. `enrich COMMAND --help` describes each.

    Exit codes: 0 done; 1 refused or failed (a run in progress, a backup that fails its
    checks, a damaged file); 2 bad usage, a missing file or an unknown run.
    """


# --------------------------------------------------------------------------- errors and output
def usage_error(message: str) -> NoReturn:
    """Stop with exit code 2: ``message`` says what to pass instead."""
    raise click.UsageError(message, ctx=click.get_current_context(silent=True))


@contextmanager
def storage_errors() -> Iterator[None]:
    """The store's errors as exit codes: 2 for what the command line named wrongly (a missing file or
    folder, an unusable location, an operation this backend lacks, a backup that would overwrite a
    file), 1 for the rest (refused, damaged, unreadable, full...)."""
    try:
        yield
    except USAGE_ERRORS as exc:
        usage_error(_one_line(exc))
    except (StorageError, OSError) as exc:
        raise Failed(_one_line(exc)) from exc


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def emit(text: str) -> None:
    """Print ``text`` on stdout, a piece at a time. A reader that went away (``| head``) ends the
    command quietly with exit code 141, as a process killed by SIGPIPE does; stdout is pointed
    at /dev/null first, so that nothing complains when Python flushes it at exit."""
    out = sys.stdout
    try:
        for start in range(0, len(text), OUTPUT_PIECE):
            out.write(text[start:start + OUTPUT_PIECE])
        out.write("\n")
        out.flush()
    except BrokenPipeError:
        _silence_stdout()
        raise click.exceptions.Exit(EXIT_BROKEN_PIPE) from None


def _silence_stdout() -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, sys.stdout.fileno())
        finally:
            os.close(devnull)
    except (OSError, ValueError, AttributeError):  # not a real file (a test's capture): nothing to silence
        pass


def emit_json(data: object) -> None:
    """``data`` as indented JSON on stdout (dates and paths as text)."""
    emit(json.dumps(data, indent=2, default=str))


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "NO"
    if isinstance(value, float):
        return f"{value:.3f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))
    text = str(value).replace("\n", " ")
    return text if len(text) <= 90 else text[:87] + "..."


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str],
          headers: Mapping[str, str] | None = None) -> str:
    """Rows as an aligned text table (numbers right-aligned), indented by two spaces; ``headers``
    renames columns for people."""
    if not rows:
        return "  (none)"
    titles = [(headers or {}).get(column, column) for column in columns]
    cells = [[_cell(row.get(column)) for column in columns] for row in rows]
    numeric = [all(isinstance(row.get(column), (int, float)) and not isinstance(row.get(column), bool)
                   or row.get(column) is None for row in rows) for column in columns]
    widths = [max(len(title), *(len(line[i]) for line in cells)) for i, title in enumerate(titles)]

    def line(values: Sequence[str]) -> str:
        return "  " + "  ".join(value.rjust(width) if right else value.ljust(width)
                                for value, width, right in zip(values, widths, numeric)).rstrip()

    return "\n".join([line(titles), line(["-" * width for width in widths]), *map(line, cells)])


def _time(text: str | None) -> str | None:
    """A stored UTC timestamp for people: to the second, without the zone."""
    moment = parse_time(text)
    return None if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def duration_s(run: RunRecord) -> float | None:
    """Seconds from the run's start to its end (None while it runs)."""
    started, finished = parse_time(run.started_at), parse_time(run.finished_at)
    return None if started is None or finished is None else round((finished - started).total_seconds(), 3)


def run_dict(run: RunRecord) -> dict[str, Any]:
    """A run's ledger row with its duration, for JSON and tables."""
    return {**run.as_dict(), "duration_s": duration_s(run)}


# --------------------------------------------------------------------------- opening the database
def reader(database: str) -> Store:
    """The database of ``--database`` opened read-only (never created, migrated or waited for);
    exit 2 when it does not exist, 1 when it is not a database of this program."""
    with storage_errors():
        store = open_store(database, read_only=True)
        if not store.exists():
            where = store.location.display
            if store.location.is_file and not store.location.path.exists():
                raise DatabaseMissing(f"{where}: no such database file. Pass an existing database with "
                                      f"--database (default: {DEFAULT_DATABASE} in the working directory).")
            raise NotADatabase(f"{where}: not a database of this program (it holds no run ledger). Check "
                               "--database.")
    return store


def writer(database: str) -> Store:
    """The database of ``--database`` opened for writing (restore, lock --break)."""
    with storage_errors():
        return open_store(database)


def operator() -> str:
    """The operator's user name for the run lock (``USER``/``LOGNAME``, else the account's)."""
    return os.environ.get("USER") or os.environ.get("LOGNAME") or getpass.getuser()


# --------------------------------------------------------------------------- runs and status
#: Figure columns for people: their labels (see :data:`enrich.figures.FIGURES`).
FIGURE_HEADERS: dict[str, str] = {figure.name: figure.label for figure in FIGURES}
RUN_COLUMNS = ("run_id", "status", "started", "duration_s", *FIGURE_HEADERS)


@cli.command()
@database_option
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, metavar="N",
              help="how many runs, newest first")
@json_option
def runs(database: str, limit: int, as_json: bool) -> None:
    """The latest runs, newest first: id, status, start (UTC), duration and every figure
    (rows read, loaded, new, updated, unchanged, rejected, duplicate; tagged, untagged,
    ambiguous; annotated, zero amount)."""
    store = reader(database)
    with storage_errors():
        records = [run_dict(run) for run in store.list_runs(limit)]
    if as_json:
        emit_json({"database": store.location.display, "runs": records})
        return
    shown = [{**row, "started": _time(row["started_at"])} for row in records]
    emit(f"Runs in {store.location.display} (newest first, times in UTC):\n"
         + table(shown, RUN_COLUMNS, FIGURE_HEADERS))


@cli.command()
@click.argument("run", metavar="RUN")
@database_option
@json_option
def status(run: str, database: str, as_json: bool) -> None:
    """One run: its figures, every step attempt with its duration and error, its checks and alerts.

    RUN is the full run id (TransactionEnrichmentFlow/123), its number (123), or `last`.
    """
    if not run.strip():
        usage_error("RUN is blank: pass a run id (TransactionEnrichmentFlow/123), its number, or last.")
    store = reader(database)
    with storage_errors():
        run_id = store.resolve_run("" if run == "last" else run)
        record = store.get_run(run_id) if run_id is not None else None
        if record is None:
            usage_error(f"{run}: no such run in {store.location.display}. Pass a run listed by "
                        f"`enrich runs --database {store.location.display}`: its id, its number, or last.")
        result = {"database": store.location.display, "run": run_dict(record),
                  "steps": [step.as_dict() for step in store.step_attempts(record.run_id)],
                  "checks": [check.as_row() for check in store.check_results(record.run_id)],
                  "alerts": [alert.as_dict() for alert in store.alerts_for_run(record.run_id)]}
    if as_json:
        emit_json(result)
    else:
        emit(render_status(record, result))


def render_status(run: RunRecord, result: Mapping[str, Any]) -> str:
    """A run in text: identity, figures by group, steps, checks, alerts."""
    groups: dict[str, list[str]] = {}
    for figure in FIGURES:
        value = run.figure(figure.name)
        if value is not None:
            groups.setdefault(figure.group, []).append(f"{figure.label} {value:,}")
    figures = [f"  {group}: {', '.join(values)}" for group, values in groups.items()] or ["  figures: -"]
    duration = result["run"]["duration_s"]
    lines = [f"Run {run.run_id}: {run.status.upper()}",
             f"  started {run.started_at}, finished {run.finished_at or '-'}"
             + (f" ({duration:g} s)" if duration is not None else "") + f", user {run.user or '-'}",
             f"  input {run.input_path or '-'} ({run.input_bytes if run.input_bytes is not None else '?'} bytes, "
             f"sha256 {run.input_sha256 or '-'}), match {run.match_mode or '-'}",
             *figures,
             "", "Steps (every attempt):",
             table(result["steps"], ["step", "attempt", "status", "started_at", "duration_s", "error_type",
                                     "error_message"]),
             "", "Checks:",
             table(result["checks"], ["check_name", "severity", "passed", "observed", "expected", "message"]),
             "", "Alerts:",
             table(result["alerts"], ["created_at", "channel", "status", "recipients", "error"])]
    return "\n".join(lines)


# --------------------------------------------------------------------------- backup and restore
@cli.command()
@click.argument("dest", metavar="DEST")
@database_option
@json_option
def backup(dest: str, database: str, as_json: bool) -> None:
    """A consistent copy of the database, integrity-checked, taken while runs go on.

    DEST is a new file (SQLite: ending in .db, .sqlite, .sqlite3 or .bak; PostgreSQL, a
    pg_dump archive: .dump, .pgdump, .backup or .bak), or a folder to put
    <name>-<UTC time>.db (.dump) in: one that exists, or a DEST ending with / or without such
    a suffix (created with its parents if missing). An existing file is never overwritten.
    """
    store = reader(database)
    with storage_errors():
        result = {**store.backup(dest), "database": store.location.display}
    if as_json:
        emit_json(result)
        return
    counts = ", ".join(f"{name} {n:,}" for name, n in result["counts"].items())
    emit(f"Backed up {result['database']}\n       to {result['backup']}\n"
         f"  {result['bytes']:,} bytes in {result['seconds']} s; integrity_check: {result['integrity']}; "
         f"schema version {result['schema_version']}\n  rows: {counts}")


@cli.command()
@click.argument("source", metavar="SRC")
@database_option
@click.option("--force", is_flag=True,
              help="restore even though a run may be in progress or the database cannot be read "
                   "(only once no run can be writing)")
@click.option("--stale-after-hours", type=click.FloatRange(min=0), default=RUNNING_STALE_AFTER_HOURS,
              show_default=True, metavar="H", help="a run marked running for longer is taken as dead")
@json_option
def restore(source: str, database: str, force: bool, stale_after_hours: float, as_json: bool) -> None:
    """Replace the database by a verified copy of the backup SRC; the replaced file is kept aside
    as DB.replaced-<UTC time>.

    Refused (exit 1) while a run is in progress: the run lock is held, or a run is marked
    running since less than --stale-after-hours. Otherwise the restore holds the run lock
    itself, as a run does, so that a run started meanwhile fails at once.
    """
    if not Path(source).expanduser().is_file():
        usage_error(f"{source}: no such backup file. Pass a file written by `enrich backup` (a .db file "
                    "in the backup folder).")
    store = writer(database)
    with storage_errors():
        store.verify_backup(source)  # a bad source is refused before anything is touched
        claim = f"restore/{os.getpid()}"
        locked = None
        exists = not store.location.is_file or store.location.path.exists()
        if exists and not force and not store.restore_blockers(stale_after_hours):
            try:
                runlock.hold(store, claim, operator(), pid=os.getpid())
            except RunLockHeld as exc:  # a run started just now
                holder = getattr(exc.holder, "run_id", "another run")
                raise RestoreRefused(f"{store.location.display}: not restored: run {holder} holds the run "
                                     f"lock. {exc}") from exc
            locked = claim
        try:
            result = store.restore(source, force=force, stale_after_hours=stale_after_hours, own_lock=locked)
        except BaseException:
            if locked:  # not restored: the database is still the one locked; free it
                runlock.release(store, locked)
            raise
        # restored: the lock row went aside with the replaced file; the new file holds none of ours
    result = {**result, "database": store.location.display}
    if as_json:
        emit_json(result)
        return
    counts = ", ".join(f"{name} {n:,}" for name, n in result["counts"].items())
    kept = "\n".join(f"  kept aside: {path}" for path in result["replaced"]) or "  (there was no database to replace)"
    forced = "".join(f"\n  FORCED past: {reason}" for reason in result["forced_past"])
    emit(f"Restored {result['database']}\n    from {result['restored_from']}\n{kept}{forced}\n"
         f"  integrity_check: {result['integrity']}; schema version {result['schema_version']}\n  rows: {counts}")


# --------------------------------------------------------------------------- the run lock
@cli.command()
@database_option
@click.option("--break", "break_lock", is_flag=True,
              help="remove the lock, once the run holding it is known to be dead (refused while its "
                   "process is alive on this host); that run is marked failed")
@json_option
def lock(database: str, break_lock: bool, as_json: bool) -> None:
    """Who holds the run lock: run, user, host and pid of its runtime, since when, lease, and
    whether it looks alive from here.

    A run killed on this host has its lock taken over by the next run by itself; a lock
    taken on another host lasts until its lease expires, or until `--break` removes it.
    """
    store = writer(database) if break_lock else reader(database)
    where = store.location.display
    with storage_errors():
        if break_lock and not store.exists():
            reader(database)  # the same refusal as a reading command: missing, or not ours
        holder = store.lock_holder()
        state = runlock.liveness(holder) if holder is not None else None
        removed, closed = False, tuple[str, ...]()
        if break_lock and holder is not None:
            removed, closed = _break(store, holder, state)
    result: dict[str, Any] = {"database": where, "holder": holder.as_dict() if holder else None, "state": state,
                              "removed": removed, "closed_runs": list(closed)}
    if as_json:
        emit_json(result)
    elif holder is None:
        emit(f"{where}: no run holds the lock")
    else:
        lease = f", lease until {holder.expires_at}" if holder.expires_at else ""
        emit(f"{where}: {'removed the lock of' if removed else 'locked by'} run {holder.run_id} "
             f"(user {holder.user or '?'}, since {holder.acquired_at}{lease}, pid {holder.pid} on host "
             f"{holder.host}): {state}" + "".join(f"\n  run {run} marked failed" for run in closed))


def _break(store: Store, holder: LockHolder, state: str | None) -> tuple[bool, tuple[str, ...]]:
    """Remove the lock ``holder`` holds unless it is alive on this host; mark its run failed. Returns
    whether a lock was removed and the runs marked failed."""
    where = store.location.display
    if state == "alive":
        raise Failed(f"{where}: not removed: run {holder.run_id} is alive on this host (pid {holder.pid}). Wait "
                     "for it to finish; a run killed on this host has its lock taken over by the next run.")
    gone = store.break_lock()
    if gone is None:
        return False, ()
    if gone.run_id != holder.run_id:  # a run took the lock over between the look and the break
        raise Failed(f"{where}: removed the lock of run {gone.run_id}, which took it over from {holder.run_id} "
                     "meanwhile: that run may be alive. Check it with `enrich status` and `enrich lock`.")
    return True, store.close_runs([gone.run_id], "failed")


# --------------------------------------------------------------------------- monitoring queries
def _params(ctx: click.Context, param: click.Parameter, values: Sequence[str]) -> dict[str, str]:
    pairs: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{value!r}: write KEY=VALUE, e.g. run_id=123", ctx=ctx, param=param)
        pairs[key.strip()] = text
    return pairs


@cli.command()
@click.argument("name", metavar="[NAME]", required=False)
@click.option("--param", "-p", "params", multiple=True, callback=_params, metavar="KEY=VALUE",
              help="a parameter of the query (repeat for several); a parameter left out is blank")
@click.option("--list", "list_queries", is_flag=True, help="list the queries, their parameters and what they answer")
@database_option
@json_option
def query(name: str | None, params: dict[str, str], list_queries: bool, database: str, as_json: bool) -> None:
    """Run the canned monitoring query NAME and print its rows (on any backend).

    `enrich query --list` names them, e.g. `enrich query run_rejected_rows -p run_id=123`.
    """
    if list_queries:
        if as_json:
            emit_json([{"name": q.name, "parameters": list(_parameters(q.name)), "title": q.title,
                        "description": q.description} for q in QUERIES.values()])
        else:
            emit("\n\n".join(q.name + "".join(f" [-p {p}=...]" for p in _parameters(q.name)) + "\n"
                              + textwrap.fill(f"{q.title}. {q.description}", width=96, initial_indent="  ",
                                              subsequent_indent="  ") for q in QUERIES.values()))
        return
    if name is None:
        usage_error("name the query to run (enrich query --list shows them), or pass --list.")
    if name not in QUERIES:
        usage_error(f"{name}: no such query. Pass one of: {', '.join(QUERIES)}.")
    unknown = sorted(set(params) - set(_parameters(name)))
    if unknown:
        accepted = ", ".join(_parameters(name)) or "none"
        usage_error(f"{name} has no parameter {', '.join(unknown)}; it takes: {accepted}.")
    store = reader(database)
    with storage_errors():
        rows = store.canned_query(name, params)
    if as_json:
        emit_json({"database": store.location.display, "query": name, "params": params, "rows": rows})
        return
    columns = list(rows[0]) if rows else []
    emit(f"{QUERIES[name].title} ({store.location.display}):\n" + table(rows, columns))


def _parameters(name: str) -> tuple[str, ...]:
    """The parameters query ``name`` takes (the same on every backend; read from the SQLite SQL,
    the reference dialect)."""
    from enrich.store.sqlite.queries import CANNED_QUERIES

    return CANNED_QUERIES[name].parameters


# --------------------------------------------------------------------------- datasette
@cli.command()
@database_option
@click.option("--port", type=click.IntRange(0, 65535), metavar="PORT", default=8001, show_default=True,
              help="port to serve on")
@click.option("--host", default="127.0.0.1", metavar="HOST", show_default=True, help="address to serve on")
@click.option("--metadata", "print_metadata", is_flag=True,
              help="print datasette's metadata for the database (JSON) instead of serving it")
def browse(database: str, port: int, host: str, print_metadata: bool) -> None:
    """Serve an SQLite database with datasette: tables, views, facets, full-text search, the
    canned monitoring queries, CSV and JSON exports (formula cells escaped).

    The database's schema is brought up to date first (views, search index). datasette
    serves files only: for a postgresql:// database use `enrich query` or psql.
    """
    from enrich import browse as browsing

    with storage_errors():
        location = parse_location(database)
    if location.backend == POSTGRESQL:
        usage_error(f"{location.display} is a PostgreSQL database; datasette serves SQLite files only. "
                    f"Run the monitoring queries with `enrich query NAME --database URL` (`enrich query --list` "
                    "names them), or connect with psql.")
    if print_metadata:
        emit_json(browsing.metadata(browsing.database_name(location.path)))
        return
    if not browsing.plugin_installed():
        raise Failed("the project's datasette plugin (CSV formula escaping) is not installed in this Python "
                     "environment: run `make install` (pip install -e .) and try again.")
    with storage_errors():
        path = browsing.prepare(location.path)
    code = browsing.serve(path, port, host)
    if code:
        raise Failed(f"datasette stopped with exit code {code}")


# --------------------------------------------------------------------------- test data and benchmark
@cli.command()
@click.option("--rows", type=click.IntRange(min=0), required=True, metavar="N", help="number of valid rows (ids 1..N)")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="CSV file to write (its folder is created)")
@click.option("--seed", type=click.IntRange(min=0), required=True, metavar="N",
              help="random seed (same seed, same bytes)")
@click.option("--malformed", type=click.IntRange(min=0), metavar="N", default=0, show_default=True,
              help="malformed lines to insert")
@click.option("--duplicates", type=click.IntRange(min=0), metavar="N", default=0, show_default=True,
              help="exact duplicate lines to append; 2 or more also append one conflicting duplicate")
@click.option("--chunk-rows", type=click.IntRange(min=1), metavar="N", default=500_000, show_default=True,
              help="rows generated per chunk held in memory")
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
def generate(rows: int, out: Path, seed: int, malformed: int, duplicates: int, chunk_rows: int,
             verbose: bool) -> None:
    """Write a deterministic CSV of realistic French bank transactions (id,amount,wording).

    The bundled sample is `enrich generate --rows 800 --out data/transactions.csv --seed 42
    --malformed 4 --duplicates 3`.
    """
    import logging

    from enrich import generate as generator

    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        summary = generator.write_csv(out, rows, seed, malformed=malformed, duplicates=duplicates,
                                      chunk_rows=chunk_rows)
    except ValueError as exc:
        usage_error(str(exc))
    except OSError as exc:
        raise Failed(f"{out}: cannot write the file ({exc})") from exc
    click.echo(f"wrote {summary.path}: {summary.rows} rows, {summary.malformed} malformed, "
               f"{summary.duplicates} duplicates, {summary.conflicting} conflicting, {summary.bytes} bytes",
               err=True)


@cli.command()
@click.option("--rows", type=click.IntRange(min=1), metavar="N", default=1_000_000, show_default=True,
              help="rows to generate")
@click.option("--seed", type=click.IntRange(min=0), default=42, metavar="N", show_default=True, help="generator seed")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=PROJECT_DIR / "bench-data",
              show_default="bench-data/", help="where the files, databases, logs and results.jsonl go")
@click.option("--tag-count", type=click.IntRange(min=0), metavar="N", default=0, show_default=True,
              help="also run with a tag list of this many tags (e.g. 10000)")
@click.option("--no-rerun", is_flag=True, help="skip the re-run on the populated database")
@click.option("--repeat", type=click.IntRange(min=1), metavar="N", default=3, show_default=True,
              help="alternating rounds of ours, the bare graph and the plain script (medians reported)")
@click.option("--database", metavar="URL", default=None,
              help="a scratch PostgreSQL database for our runs, reset before each (default: SQLite files)")
@click.option("--markdown", is_flag=True, help="also print the README's results table")
@json_option
def bench(rows: int, seed: int, workdir: Path, tag_count: int, no_rerun: bool, repeat: int, database: str | None,
          markdown: bool, as_json: bool) -> None:
    """Measure the flow on a generated file against two yardsticks run alternately: a bare Metaflow
    graph of the same shape and a plain script; print each ratio. Exit 1 when a measured run failed."""
    from enrich.bench import harness

    with storage_errors():  # e.g. a --database it cannot reset: one line, not a traceback
        code = harness.run(rows, seed, repeat, workdir, tag_count, rerun=not no_rerun, markdown=markdown,
                           database=database, as_json=as_json)
    if code:
        raise Failed("a measured run of the flow failed: see its log in the work directory")
