"""Benchmark harness: our flow against two yardsticks, side by side, reported as ratios.

``python -m enrich.bench --rows 1000000`` (or ``make bench ROWS=1000000``):

1. generates (once, then reused) a seeded file with :mod:`enrich.generate`: realistic French
   wordings, the four default tags, some ambiguous wordings, a few malformed lines and
   duplicate lines appended at the end; and its twin holding only the valid rows, for the plain
   script (which does no validation). With ``--rows 1`` our file is one clean row.
2. runs, alternating, ``--repeat N`` times (default 3):

   * **fresh**: ``algorithm.py run`` on a fresh database;
   * **bare graph**: a FlowSpec of the same graph with empty steps (:mod:`enrich.bench.yardsticks`);
   * **plain script**: the simplest script doing the job (:mod:`enrich.bench.plain_script`);
   * **rerun**: ``algorithm.py run`` of the same file again on the database just populated;
   * with ``--tag-count K``: ``algorithm.py run`` with a K-tag list on a fresh database.

   Each run is one process tree, measured the same way: wall time, and the peak resident memory
   of its largest process (``wait4``'s ``ru_maxrss`` covers the whole tree: for our flow the
   Metaflow runtime, every task and the card renderer), by a small parent process of its own
   (:mod:`enrich.bench.measure`) so that the harness's own memory is not counted. Our runs' step durations and rows read
   come from the ledger (:mod:`enrich.bench.ledger`).
3. takes each run's median over the repeats and prints the ratios against the yardsticks with
   the targets of issue 13 (reported, never asserted: timings belong to the machine).

Results are appended to ``<workdir>/results.jsonl``; ``--markdown`` prints the README's table,
built from the latest result of each size in that file (ratios next to absolute times, with the
machine and the date).
"""
from __future__ import annotations

import json
import os
import platform
import re
import statistics
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from datetime import date
from pathlib import Path

from enrich import generate
from enrich.bench import ledger, yardsticks
from enrich.paths import PROJECT_DIR

#: Labels of the runs, in the order they alternate within one repeat.
FRESH, BARE, PLAIN, RERUN = "fresh", "bare graph", "plain script", "rerun"
#: Our flow's step that the tag-count comparison is about.
TAG_STEP = "tag_transactions"
#: Steps shown in the README table, in graph order.
TABLE_STEPS = ("ingest", "tag_transactions", "annotate_transactions", "index_wordings", "join")
#: The small process that runs and measures each command (see :func:`time_command`).
MEASURE_SCRIPT = Path(__file__).resolve().with_name("measure.py")
#: 1 GiB, the memory target of the largest process at 10M rows, in MiB (ru_maxrss / 1024).
MEMORY_LIMIT_MB = 1024.0
#: Largest wall-time ratio of 10M rows to 1M rows still called linear growth.
LINEAR_GROWTH_LIMIT = 11.0


@dataclass(frozen=True)
class Timing:
    """What one process tree cost: wall time, peak RSS of its largest process, exit code."""

    wall_s: float
    peak_rss_mb: float
    exit_code: int


@dataclass(frozen=True)
class PlannedRun:
    """One run of the plan: a label, its command, the databases deleted just before it, and our
    database whose ledger is read after it (``None`` for the yardsticks)."""

    label: str
    repeat: int
    command: list[str]
    fresh_databases: tuple[Path | str, ...] = ()  # emptied before the run (a file deleted, a URL's schema reset)
    ledger_database: Path | str | None = None


@dataclass(frozen=True)
class Measure:
    """One measured run."""

    label: str
    repeat: int
    wall_s: float
    peak_rss_mb: float
    exit_code: int
    rows_read: int | None
    steps_s: dict[str, float] = field(default_factory=dict)
    log: str = ""

    @property
    def rows_per_s(self) -> float:
        """Rows read per second of wall time (0 when unknown)."""
        return (self.rows_read or 0) / self.wall_s if self.wall_s else 0.0


@dataclass(frozen=True)
class RatioSpec:
    """A ratio to report: ``ours`` / ``yardstick`` wall time (or ``step``'s ledger duration),
    with its target at given sizes (``None`` for any size)."""

    name: str
    ours: str
    yardstick: str
    targets: Mapping[int | None, float]
    step: str | None = None

    def target(self, rows: int) -> float | None:
        """The target at ``rows`` rows, if the issue sets one there."""
        return self.targets.get(rows, self.targets.get(None))


#: The ratios of issue 13 (targets by row count; ``None`` = every size).
RATIOS: tuple[RatioSpec, ...] = (
    RatioSpec("fresh / bare graph", FRESH, BARE, {1: 1.5}),
    RatioSpec("fresh / plain script", FRESH, PLAIN, {1_000_000: 1.5, 10_000_000: 1.0}),
    RatioSpec("rerun / plain script", RERUN, PLAIN, {10_000_000: 0.4}),
)


def tags_label(tag_count: int) -> str:
    """Label of our run with a ``tag_count``-tag list."""
    return f"tags{tag_count}"


def tag_ratio_spec(tag_count: int) -> RatioSpec:
    """The tagging step with ``tag_count`` tags against the 4-tag one: ≤ 2× at every size."""
    return RatioSpec(f"tagging step, {tag_count:,} tags / 4 tags", tags_label(tag_count), FRESH,
                     {None: 2.0}, step=TAG_STEP)


# --------------------------------------------------------------------------- inputs

def machine() -> dict[str, Any]:
    """Cores, RAM, CPU model, Python and today's date, for the results table."""
    pages, page_size = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cores": os.cpu_count(), "ram_gb": round(pages * page_size / 2**30), "cpu": cpu,
            "python": platform.python_version(), "date": date.today().isoformat()}


def input_file(workdir: Path, rows: int, seed: int) -> Path:
    """Our flow's input for ``rows``/``seed``, generated on first use only.

    A few malformed lines and duplicates appended at the end, as a re-sent export has them;
    for ``rows == 1`` a single clean row (the one-row mode measures Metaflow's fixed cost).
    """
    if rows == 1:
        return clean_input_file(workdir, rows, seed)
    path = workdir / f"transactions-{rows}-seed{seed}.csv"
    if not path.exists():
        generate.write_csv(path, rows=rows, seed=seed, malformed=max(rows // 250_000, 1),
                           duplicates=max(rows // 500_000, 2))
    return path


def clean_input_file(workdir: Path, rows: int, seed: int) -> Path:
    """The valid rows of :func:`input_file` only (same generator, seed and ids; no malformed or
    duplicate line), for the plain script, which does no validation. Generated on first use only."""
    path = workdir / f"transactions-{rows}-seed{seed}-clean.csv"
    if not path.exists():
        generate.write_csv(path, rows=rows, seed=seed)
    return path


def tag_list_file(workdir: Path, count: int) -> Path:
    """A ``count``-tag list: the four default tags, then single- and multi-word merchant tags."""
    path = workdir / f"tags-{count}.txt"
    extra = [f"MARCHAND{i}" if i % 2 else f"VIR SEPA ENSEIGNE{i}" for i in range(max(count - 4, 0))]
    path.write_text("\n".join(["TATA", "TOTO", "TUTU", "TAXI", *extra]) + "\n", encoding="utf-8")
    return path


def fresh_database(database: Path | str) -> Path | str:
    """Empty a database: delete a file and its side files, or reset a PostgreSQL database's schema
    (``--database`` must name a scratch database: everything in it is dropped)."""
    if isinstance(database, str) and "://" in database:
        from enrich.store import parse_location
        from enrich.store.postgres.connection import connect, transaction

        with connect(parse_location(database)) as cur, transaction(cur):
            cur.execute("DROP SCHEMA IF EXISTS public CASCADE")
            cur.execute("CREATE SCHEMA public")
        return database
    for suffix in ("", "-wal", "-shm"):
        Path(f"{database}{suffix}").unlink(missing_ok=True)
    return database


def compile_sources(project: Path = PROJECT_DIR) -> None:
    """Byte-compile the project's own modules (``enrich``, ``flows``, ``algorithm.py``) into ``__pycache__``.

    Every Metaflow task is a new Python process that imports them: without cached bytecode each
    process compiles them again (about 40 ms each here), which an installed package never does.
    An editable install leaves them uncompiled, and with ``PYTHONDONTWRITEBYTECODE`` set (some
    shells and containers) Python never caches them itself; it still reads bytecode it finds.
    """
    import compileall

    for directory in ("enrich", "flows"):
        compileall.compile_dir(project / directory, quiet=2)
    compileall.compile_file(project / "algorithm.py", quiet=2)


def warm_up(paths: Iterable[Path]) -> None:
    """Read each file once, so that no contender pays for a cold page cache."""
    for path in paths:
        with path.open("rb") as stream:
            while stream.read(1 << 24):
                pass


# --------------------------------------------------------------------------- plan and runs

def ours_command(transactions: Path, database: Path | str, tags: Path | None = None) -> list[str]:
    """``algorithm.py run`` on ``transactions`` into ``database``."""
    command = [sys.executable, str(PROJECT_DIR / "algorithm.py"), "run",
               "--transactions", str(transactions), "--database", str(database)]
    return command + (["--tags", str(tags)] if tags is not None else [])


def plan(rows: int, seed: int, workdir: Path, repeat: int = 3, tag_count: int = 0,
         rerun: bool = True, database: str | None = None) -> list[PlannedRun]:
    """Every run, in order: per repeat fresh, bare graph, plain script, [rerun], [tags K].

    Generates the inputs and writes the bare flow if needed.
    """
    ours_input = input_file(workdir, rows, seed)
    plain_input = clean_input_file(workdir, rows, seed)
    bare_flow = yardsticks.write_bare_flow(workdir)
    ours_db: Path | str = database or workdir / f"bench-{rows}.db"
    plain_db = workdir / f"plain-{rows}.db"
    tags = tag_list_file(workdir, tag_count) if tag_count else None
    tags_db: Path | str = database or workdir / f"bench-{rows}-tags{tag_count}.db"
    runs: list[PlannedRun] = []
    for number in range(1, repeat + 1):
        runs.append(PlannedRun(FRESH, number, ours_command(ours_input, ours_db), (ours_db,), ours_db))
        runs.append(PlannedRun(BARE, number, yardsticks.bare_graph_command(bare_flow)))
        runs.append(PlannedRun(PLAIN, number, yardsticks.plain_script_command(plain_input, plain_db), (plain_db,)))
        if rerun:
            runs.append(PlannedRun(RERUN, number, ours_command(ours_input, ours_db), (), ours_db))
        if tags is not None:
            runs.append(PlannedRun(tags_label(tag_count), number, ours_command(ours_input, tags_db, tags),
                                   (tags_db,), tags_db))
    return runs


def time_command(command: Sequence[str], cwd: Path, log: Path) -> Timing:
    """Run ``command`` in ``cwd`` (output to ``log``) and measure its process tree with ``wait4``.

    The measuring parent is :mod:`enrich.bench.measure`, a small process of its own: measured
    from this one, every peak would include the harness's own (see that module).

    Raises:
        RuntimeError: the measuring process failed (its output is in ``log``).
    """
    result = log.with_suffix(".timing.json")
    result.unlink(missing_ok=True)
    done = subprocess.run([sys.executable, str(MEASURE_SCRIPT), str(result), str(log), "--", *command],
                          cwd=cwd, env=yardsticks.environment(), capture_output=True, text=True, check=False)
    if done.returncode != 0 or not result.exists():
        raise RuntimeError(f"measuring {command[:3]} failed (exit {done.returncode}): {done.stderr.strip()}")
    timing = json.loads(result.read_text(encoding="utf-8"))
    return Timing(wall_s=float(timing["wall_s"]), peak_rss_mb=float(timing["peak_rss_mb"]),
                  exit_code=int(timing["exit_code"]))


def plain_rows(log: Path) -> int | None:
    """Rows the plain script reports having written (its ``rows=N`` output line)."""
    found = re.search(r"\brows=(\d+)", log.read_text(encoding="utf-8", errors="replace")) if log.exists() else None
    return int(found.group(1)) if found else None


def execute(runs: Sequence[PlannedRun], workdir: Path,
            timer: Callable[[Sequence[str], Path, Path], Timing] = time_command,
            progress: Callable[[str], None] | None = None) -> list[Measure]:
    """Run the plan in order and measure each run (``timer`` is replaceable for tests)."""
    measures = []
    for run in runs:
        for database in run.fresh_databases:
            fresh_database(database)
        log = workdir / f"{run.label.replace(' ', '-')}-{run.repeat}.log"
        timing = timer(run.command, workdir, log)
        figures = ledger.run_figures(run.ledger_database) if run.ledger_database is not None \
            and (isinstance(run.ledger_database, str) or run.ledger_database.exists()) else ledger.LedgerFigures()
        rows_read = plain_rows(log) if run.label == PLAIN else figures.rows_read
        measure = Measure(label=run.label, repeat=run.repeat, wall_s=timing.wall_s, peak_rss_mb=timing.peak_rss_mb,
                          exit_code=timing.exit_code, rows_read=rows_read, steps_s=figures.steps_s, log=str(log))
        measures.append(measure)
        if progress is not None:
            progress(f"  {run.label:<14} #{run.repeat}: {measure.wall_s:.2f} s, {measure.peak_rss_mb:.0f} MB, "
                     f"exit {measure.exit_code}")
    return measures


# --------------------------------------------------------------------------- medians and ratios

def summarize(measures: Sequence[Measure]) -> dict[str, dict[str, Any]]:
    """Per label, in first-seen order: runs, exit codes, and the medians of wall time, peak memory,
    rows/s and each ledger step's duration."""
    labels = list(dict.fromkeys(m.label for m in measures))
    summary: dict[str, dict[str, Any]] = {}
    for label in labels:
        group = [m for m in measures if m.label == label]
        steps = list(dict.fromkeys(step for m in group for step in m.steps_s))
        summary[label] = {
            "runs": len(group),
            "exit_codes": [m.exit_code for m in group],
            "wall_s": round(statistics.median(m.wall_s for m in group), 2),
            "peak_rss_mb": round(statistics.median(m.peak_rss_mb for m in group), 1),
            "rows_read": group[-1].rows_read,
            "rows_per_s": round(statistics.median(m.rows_per_s for m in group)),
            "steps_s": {step: round(statistics.median(m.steps_s.get(step, 0.0) for m in group), 2)
                        for step in steps},
        }
    return summary


def ratios(summary: Mapping[str, Mapping[str, Any]], rows: int, tag_count: int = 0) -> list[dict[str, Any]]:
    """Every ratio of :data:`RATIOS` (and the tag-count one) whose two sides were measured."""
    specs = [*RATIOS, *([tag_ratio_spec(tag_count)] if tag_count else [])]
    found = []
    for spec in specs:
        ours, yardstick = summary.get(spec.ours), summary.get(spec.yardstick)
        if ours is None or yardstick is None:
            continue
        if spec.step is None:
            ours_s, yard_s = float(ours["wall_s"]), float(yardstick["wall_s"])  # type: ignore[arg-type]
        else:
            ours_s = float(ours["steps_s"].get(spec.step, 0.0))  # type: ignore[union-attr]
            yard_s = float(yardstick["steps_s"].get(spec.step, 0.0))  # type: ignore[union-attr]
        value = round(ours_s / yard_s, 2) if yard_s else None
        target = spec.target(rows)
        found.append({"name": spec.name, "ours": spec.ours, "yardstick": spec.yardstick, "step": spec.step,
                      "ours_s": ours_s, "yardstick_s": yard_s, "ratio": value, "target": target,
                      "met": None if target is None or value is None else value <= target})
    return found


def memory_check(summary: Mapping[str, Mapping[str, Any]], rows: int) -> dict[str, Any] | None:
    """The largest process of our fresh and re-run runs against 1 GiB (the target at 10M rows)."""
    peaks = [float(summary[label]["peak_rss_mb"]) for label in (FRESH, RERUN) if label in summary]  # type: ignore[arg-type]
    if not peaks:
        return None
    target = MEMORY_LIMIT_MB if rows == 10_000_000 else None
    return {"peak_rss_mb": max(peaks), "limit_mb": target, "met": None if target is None else max(peaks) <= target}


def benchmark(rows: int, seed: int, workdir: Path, tag_count: int = 0, rerun: bool = True, repeat: int = 3,
              timer: Callable[[Sequence[str], Path, Path], Timing] = time_command,
              progress: Callable[[str], None] | None = None, database: str | None = None) -> dict[str, Any]:
    """Run the alternating measurements of one size; return them with medians, ratios and the machine."""
    workdir.mkdir(parents=True, exist_ok=True)
    runs = plan(rows, seed, workdir, repeat, tag_count, rerun, database)
    warm_up({input_file(workdir, rows, seed), clean_input_file(workdir, rows, seed)})
    compile_sources()
    load_before = os.getloadavg()[0]
    measures = execute(runs, workdir, timer, progress)
    summary = summarize(measures)
    load = {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)}
    return {"rows": rows, "seed": seed, "repeat": repeat, "tag_count": tag_count,
            "machine": {**machine(), "load_1min": load},
            "measures": [{**asdict(m), "rows_per_s": round(m.rows_per_s)} for m in measures],
            "summary": summary, "ratios": ratios(summary, rows, tag_count), "memory": memory_check(summary, rows)}


# --------------------------------------------------------------------------- reports

def _target_text(target: float | None, met: bool | None, unit: str = "×") -> str:
    """``≤ 1.5×: met`` / ``≤ 1.5×: NOT met`` / ``no target at this size``."""
    if target is None:
        return "no target at this size"
    return f"target ≤ {target:g}{unit}: {'met' if met else 'NOT met'}"


def table(result: Mapping[str, Any]) -> str:
    """The medians and the ratios as plain text."""
    lines = [f"{result['rows']:,} rows, median of {result['repeat']} alternating run(s)  "
             f"(machine: {json.dumps(result['machine'])})",
             f"{'run':<15}{'runs':>5}{'exit':>6}{'wall s':>9}{'rows/s':>11}{'peak MB':>9}  steps (ledger, s)"]
    for label, line in result["summary"].items():  # type: ignore[union-attr]
        steps = ", ".join(f"{k} {v}" for k, v in line["steps_s"].items())
        exits = ",".join(str(code) for code in sorted(set(line["exit_codes"])))
        lines.append(f"{label:<15}{line['runs']:>5}{exits:>6}{line['wall_s']:>9.2f}{line['rows_per_s']:>11,}"
                     f"{line['peak_rss_mb']:>9.0f}  {steps}")
    load = result["machine"].get("load_1min")  # type: ignore[union-attr]
    cores = result["machine"].get("cores") or 1  # type: ignore[union-attr]
    # Only the load before the runs tells of other work: during them, the runs themselves load it.
    if load and load["before"] > cores:
        lines.append(f"warning: the machine was busy (1-minute load {load['before']} before the runs, "
                     f"{cores} cores): other processes competed with the runs")
    lines.append("ratios (reported, never asserted):")
    for ratio in result["ratios"]:  # type: ignore[union-attr]
        value = f"{ratio['ratio']:.2f}×" if ratio["ratio"] is not None else "–"
        lines.append(f"  {ratio['name']:<36}{ratio['ours_s']:>8.2f} s / {ratio['yardstick_s']:>7.2f} s = "
                     f"{value:>7}   {_target_text(ratio['target'], ratio['met'])}")
    memory = result.get("memory")
    if memory:
        lines.append(f"  {'largest process (fresh, rerun)':<36}{memory['peak_rss_mb']:>8.0f} MB"
                     f"{'':>22}{_target_text(memory['limit_mb'], memory['met'], ' MB')}")
    return "\n".join(lines)


def latest_results(results: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The last result of each row count that has the ratio format, smallest size first."""
    latest: dict[int, Mapping[str, Any]] = {}
    for result in results:
        if "summary" in result:
            latest[int(result["rows"])] = result  # type: ignore[arg-type]
    return [latest[rows] for rows in sorted(latest)]


def _met(value: bool | None) -> str:
    return "–" if value is None else ("yes" if value else "**no**")


def _bound(target: float | None, unit: str = "×") -> str:
    return "–" if target is None else f"≤ {target:g}{unit}"


def markdown_table(results: Sequence[Mapping[str, Any]]) -> str:
    """The README's table: for each size (latest result), every ratio next to its absolute times,
    the largest process, and linear growth from 1M to 10M rows when both were measured."""
    machines = list(dict.fromkeys(
        f"{r['machine']['cores']} cores, {r['machine']['ram_gb']} GB RAM, {r['machine'].get('cpu', '?')}, "  # type: ignore[index]
        f"Python {r['machine']['python']}" for r in results))  # type: ignore[index]
    lines = [f"Machine: {'; '.join(machines)}. Each line: median of the alternating runs "
             "(ours, bare graph, plain script, ...), one process tree each; seed "
             f"{', '.join(sorted({str(r['seed']) for r in results}))}.", "",
             "| rows | ours | wall (ours) | largest process (ours) | yardstick | wall (yardstick) | ratio | target "
             "| met | measured |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    names = {FRESH: "fresh database", RERUN: "re-run of the same file", BARE: "bare graph", PLAIN: "plain script"}
    for result in results:
        rows, summary = int(result["rows"]), result["summary"]  # type: ignore[arg-type]
        when = f"{result['machine']['date']}, {result['repeat']} run(s)"  # type: ignore[index]
        for ratio in result["ratios"]:  # type: ignore[union-attr]
            ours = summary[ratio["ours"]]  # type: ignore[index]
            if ratio["step"]:
                what, peak = f"{ratio['step']} step, {result['tag_count']:,} tags", "–"
                yard = f"{ratio['step']} step, 4 tags"
            else:
                what = names.get(ratio["ours"], ratio["ours"])
                what = f"one row, {what}" if rows == 1 else what
                peak, yard = f"{ours['peak_rss_mb']:.0f} MB", names.get(ratio["yardstick"], ratio["yardstick"])
            value = f"{ratio['ratio']:.2f}×" if ratio["ratio"] is not None else "–"
            lines.append(f"| {rows:,} | {what} | {ratio['ours_s']:.1f} s | {peak} | {yard} | "
                         f"{ratio['yardstick_s']:.1f} s | {value} | {_bound(ratio['target'])} | "
                         f"{_met(ratio['met'])} | {when} |")
        memory = result.get("memory")
        if memory and memory["limit_mb"] is not None:
            lines.append(f"| {rows:,} | largest process (fresh, re-run) | – | {memory['peak_rss_mb']:.0f} MB | "
                         f"1 GiB | – | {memory['peak_rss_mb'] / memory['limit_mb']:.2f}× | ≤ 1× | "
                         f"{_met(memory['met'])} | {when} |")
    by_rows = {int(r["rows"]): r for r in results}  # type: ignore[arg-type]
    if 1_000_000 in by_rows and 10_000_000 in by_rows:
        small = float(by_rows[1_000_000]["summary"][FRESH]["wall_s"])  # type: ignore[index]
        large = float(by_rows[10_000_000]["summary"][FRESH]["wall_s"])  # type: ignore[index]
        growth = large / small if small else None
        lines.append(f"| 1,000,000 → 10,000,000 | linear growth: fresh database, 10M / 1M | {large:.1f} s | – | "
                     f"1M rows | {small:.1f} s | {f'{growth:.2f}×' if growth else '–'} | "
                     f"{_bound(LINEAR_GROWTH_LIMIT)} | {_met(None if growth is None else growth <= LINEAR_GROWTH_LIMIT)}"
                     f" | {by_rows[10_000_000]['machine']['date']} |")  # type: ignore[index]
    return "\n".join(lines)


def read_results(path: Path) -> list[dict[str, Any]]:
    """Every result recorded in a ``results.jsonl`` file (none when it does not exist)."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def run(rows: int = 1_000_000, seed: int = 42, repeat: int = 3, workdir: Path = PROJECT_DIR / "bench-data",
        tag_count: int = 0, rerun: bool = True, markdown: bool = False, database: str | None = None,
        as_json: bool = False) -> int:
    """``enrich bench``: measure, append to ``<workdir>/results.jsonl``, print the table (and the README's
    with ``markdown``); 1 when a measured run failed, else 0. ``database``: a PostgreSQL URL of a scratch
    database for our runs (reset before each), instead of SQLite files in the work directory."""
    if rows < 1 or repeat < 1:
        raise ValueError("--rows and --repeat must be at least 1")
    workdir = workdir.resolve()
    result = benchmark(rows, seed, workdir, tag_count, rerun, repeat, database=database,
                       progress=None if as_json else (lambda line: print(line, flush=True)))
    if database:
        from enrich.store import redact_url

        result["database"] = redact_url(database)
    with (workdir / "results.jsonl").open("a", encoding="utf-8") as out:
        out.write(json.dumps(result) + "\n")
    if as_json:
        print(json.dumps(result, indent=2))
        return 1 if any(m["exit_code"] != 0 for m in result["measures"]) else 0  # type: ignore[union-attr]
    print(table(result))
    if markdown:
        print()
        print(markdown_table(latest_results(read_results(workdir / "results.jsonl"))))
    failed = [m for m in result["measures"] if m["exit_code"] != 0]  # type: ignore[union-attr]
    for measure in failed:
        print(f"{measure['label']} #{measure['repeat']} exited {measure['exit_code']}: see {measure['log']}",
              file=sys.stderr)
    return 1 if failed else 0
