"""The ledger's SQL, identical on every backend: runs, step attempts, alerts, check verdicts,
distributions, anomalies, rejected rows and ambiguous wordings read back.

Written once with ``?`` placeholders; :class:`Dialect` renders them in the backend's style
(``?`` for SQLite, ``$1, $2...`` for PostgreSQL). Timestamps are ISO 8601 text in UTC on
both (:mod:`enrich.store.timeutil`), so comparisons and ordering are the same. ``"user"``
is quoted: it is a reserved word in PostgreSQL.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from enrich.figures import RUN_COLUMNS, RunRecord, run_fields
from enrich.store.adbc import Cursor
from enrich.store.records import AlertRecord, CheckRecord, StepAttempt
from enrich.store.timeutil import utc_now

if TYPE_CHECKING:
    import pyarrow as pa

_PLACEHOLDER = re.compile(r"\?")


@dataclass(frozen=True)
class Dialect:
    """How a backend writes the ledger's SQL: its placeholder style."""

    numbered: bool  # $1, $2... (PostgreSQL) instead of ? (SQLite)

    def sql(self, text: str) -> str:
        if not self.numbered:
            return text
        count = iter(range(1, 10_000))
        return _PLACEHOLDER.sub(lambda _: f"${next(count)}", text)


def _column(name: str) -> str:
    return '"user"' if name == "user" else name


#: Every transaction with its tag and annotation, by id (the same on every backend).
ENRICHED_SQL = """SELECT t.id, t.amount_cents, t.wording, g.tag, a.annotation
    FROM transactions t LEFT JOIN tags g ON g.transaction_id = t.id
    LEFT JOIN annotations a ON a.transaction_id = t.id ORDER BY t.id"""
_RUN_SELECT = "SELECT " + ", ".join(_column(c) for c in RUN_COLUMNS) + " FROM runs"


class Ledger:
    """The ledger reads and writes on one cursor. Each write is its own statement; the caller's
    transaction (if any) makes several of them one."""

    def __init__(self, cur: Cursor, dialect: Dialect) -> None:
        self.cur, self.dialect = cur, dialect

    def _execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self.cur.execute(self.dialect.sql(sql), params)

    def _dicts(self, sql: str, params: Sequence[object] = ()) -> list[dict[str, Any]]:
        return self.cur.dicts(self.dialect.sql(sql), params)

    def _runs(self, where: str, params: Sequence[object] = ()) -> list[RunRecord]:
        return [RunRecord.from_row(row) for row in self._dicts(f"{_RUN_SELECT} {where}", params)]

    # ..................................................................... runs
    def record_run(self, run_id: str, fields: Mapping[str, object]) -> None:
        """Create or update the ledger row of a run (only the given fields change)."""
        values = {"status": "running", "started_at": utc_now(), **run_fields(fields), "run_id": run_id}
        columns = ", ".join(_column(name) for name in values)
        update = ", ".join(f"{_column(name)} = excluded.{_column(name)}" for name in fields)
        conflict = f"DO UPDATE SET {update}" if update else "DO NOTHING"
        self._execute(f"INSERT INTO runs ({columns}) VALUES ({', '.join('?' for _ in values)}) "
                      f"ON CONFLICT (run_id) {conflict}", list(values.values()))

    def get_run(self, run_id: str) -> RunRecord | None:
        found = self._runs("WHERE run_id = ?", (run_id,))
        return found[0] if found else None

    def latest_run(self) -> RunRecord | None:
        found = self._runs("ORDER BY started_at DESC LIMIT 1")
        return found[0] if found else None

    def previous_run(self, run_id: str) -> RunRecord | None:
        found = self._runs("WHERE started_at < COALESCE((SELECT started_at FROM runs WHERE run_id = ?), '9999') "
                           "ORDER BY started_at DESC LIMIT 1", (run_id,))
        return found[0] if found else None

    def recent_runs(self, before_run: str, limit: int) -> list[RunRecord]:
        return self._runs("WHERE status = 'succeeded' AND started_at < "
                          "COALESCE((SELECT started_at FROM runs WHERE run_id = ?), '9999') "
                          "ORDER BY started_at DESC LIMIT ?", (before_run, int(limit)))

    def list_runs(self, limit: int) -> list[RunRecord]:
        return self._runs("ORDER BY started_at DESC LIMIT ?", (int(limit),))

    def resolve_run(self, ref: str) -> str | None:
        """The run id ``ref`` names: the full id, its number, or blank for the latest run."""
        ref = ref.strip()
        if not ref:
            latest = self.latest_run()
            return latest.run_id if latest else None
        rows = self._dicts("SELECT run_id FROM runs WHERE run_id = ? OR run_id LIKE ('%/' || ?) "
                           "ORDER BY started_at DESC LIMIT 1", (ref, ref))
        return str(rows[0]["run_id"]) if rows else None

    def runs_in_progress(self, since: str) -> list[RunRecord]:
        return self._runs("WHERE status = 'running' AND started_at >= ? ORDER BY started_at", (since,))

    def close_runs(self, run_ids: Sequence[str], status: str) -> tuple[str, ...]:
        """Mark those of ``run_ids`` still running as ``status``; returns them."""
        run_fields({"status": status})
        if not run_ids:
            return ()
        marks = ", ".join("?" for _ in run_ids)
        running = [str(row["run_id"]) for row in self._dicts(
            f"SELECT run_id FROM runs WHERE status = 'running' AND run_id IN ({marks})", list(run_ids))]
        if running:
            self._execute(f"UPDATE runs SET status = ?, finished_at = ? WHERE status = 'running' "
                          f"AND run_id IN ({', '.join('?' for _ in running)})", [status, utc_now(), *running])
        return tuple(running)

    def last_success_finished_at(self, excluding: str) -> str | None:
        rows = self._dicts("SELECT MAX(finished_at) AS finished FROM runs WHERE status = 'succeeded' "
                           "AND run_id != ?", (excluding,))
        return rows[0]["finished"] if rows else None

    # ..................................................................... steps and alerts
    def record_step_attempt(self, a: StepAttempt) -> None:
        self._execute("""INSERT INTO step_runs (run_id, step, task_id, attempt, status, started_at,
                              finished_at, duration_s, error_type, error_message)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
            ON CONFLICT (run_id, step, task_id, attempt) DO UPDATE SET
                status = excluded.status, finished_at = excluded.finished_at,
                duration_s = excluded.duration_s, error_type = excluded.error_type,
                error_message = excluded.error_message""",
                      (a.run_id, a.step, a.task_id, a.attempt, a.status, a.started_at, a.finished_at,
                       a.duration_s, a.error_type, a.error_message))

    def step_attempts(self, run_id: str) -> list[StepAttempt]:
        return [StepAttempt.from_row({**row, "task_id": str(row["task_id"])}) for row in self._dicts(
            "SELECT * FROM step_runs WHERE run_id = ? ORDER BY started_at, step, attempt", (run_id,))]

    def record_alert(self, a: AlertRecord) -> None:
        self._execute("INSERT INTO alerts (run_id, created_at, channel, status, recipients, message, error) "
                      "VALUES (?, ?, ?, ?, ?, ?, ?)",
                      (a.run_id, a.created_at or utc_now(), a.channel, a.status, a.recipients, a.message, a.error))

    def alerts_for_run(self, run_id: str) -> list[AlertRecord]:
        return [AlertRecord.from_row(row) for row in
                self._dicts("SELECT * FROM alerts WHERE run_id = ? ORDER BY created_at", (run_id,))]

    # ..................................................................... checks
    def save_check_results(self, run_id: str, results: Sequence[CheckRecord], anomalies: pa.Table | None) -> None:
        self._execute("DELETE FROM check_results WHERE run_id = ?", (run_id,))
        self.cur.executemany(self.dialect.sql(
            "INSERT INTO check_results (run_id, check_name, severity, passed, observed, expected, message) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)"),
            [(run_id, r.check_name, r.severity, int(r.passed), r.observed, r.expected, r.message) for r in results])
        if anomalies is not None:
            self._execute("DELETE FROM anomalies WHERE run_id = ?", (run_id,))
            columns = [anomalies.column(name).to_pylist()
                       for name in ("transaction_id", "kind", "amount_cents", "detail")]
            self.cur.executemany(self.dialect.sql(
                "INSERT INTO anomalies (run_id, transaction_id, kind, amount_cents, detail) VALUES (?, ?, ?, ?, ?)"),
                [(run_id, *row) for row in zip(*columns)])

    def check_results(self, run_id: str) -> list[CheckRecord]:
        return [CheckRecord.from_row(row) for row in
                self._dicts("SELECT * FROM check_results WHERE run_id = ? ORDER BY check_name", (run_id,))]

    def save_distribution(self, run_id: str, dimension: str, counts: Mapping[str, int]) -> None:
        self._execute("DELETE FROM run_distributions WHERE run_id = ? AND dimension = ?", (run_id, dimension))
        self.cur.executemany(self.dialect.sql(
            "INSERT INTO run_distributions (run_id, dimension, category, count) VALUES (?, ?, ?, ?)"),
            [(run_id, dimension, category, int(n)) for category, n in counts.items()])

    def distribution(self, run_ids: Sequence[str], dimension: str) -> dict[str, int]:
        if not run_ids:
            return {}
        marks = ", ".join("?" for _ in run_ids)
        rows = self._dicts(f"SELECT category, SUM(count) AS n FROM run_distributions WHERE dimension = ? "
                           f"AND run_id IN ({marks}) GROUP BY category", [dimension, *run_ids])
        return {str(row["category"]): int(row["n"]) for row in rows}

    # ..................................................................... read-back
    def rejected_rows(self, run_id: str, limit: int | None) -> list[dict[str, Any]]:
        return self._dicts("SELECT line, raw, reason FROM rejected_rows WHERE run_id = ? ORDER BY line"
                           + (" LIMIT ?" if limit is not None else ""),
                           (run_id, int(limit)) if limit is not None else (run_id,))

    def anomalies(self, run_id: str, limit: int | None) -> list[dict[str, Any]]:
        return self._dicts("""SELECT a.transaction_id, a.kind, a.amount_cents, a.detail, t.wording
            FROM anomalies a LEFT JOIN transactions t ON t.id = a.transaction_id
            WHERE a.run_id = ? ORDER BY abs(a.amount_cents) DESC, a.transaction_id"""
                           + (" LIMIT ?" if limit is not None else ""),
                           (run_id, int(limit)) if limit is not None else (run_id,))

    def ambiguous_wordings(self, run_id: str) -> list[dict[str, Any]]:
        return self._dicts("SELECT wording, tags_found, transactions FROM ambiguous_wordings WHERE run_id = ? "
                           "ORDER BY transactions DESC, wording", (run_id,))

    def table_counts(self) -> dict[str, int]:
        return {table: int(self.cur.scalar(f"SELECT COUNT(*) FROM {table}"))
                for table in ("transactions", "tags", "annotations", "rejected_rows")}

    def value_counts(self, kind: str) -> dict[str, int]:
        column = {"tags": "tag", "annotations": "annotation"}[kind]
        rows = self._dicts(f"SELECT {column} AS value, COUNT(*) AS n FROM {kind} GROUP BY {column} ORDER BY 2 DESC")
        return {str(row["value"]): int(row["n"]) for row in rows}
