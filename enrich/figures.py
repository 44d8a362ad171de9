"""What a run is and what it did: the one description of the ``runs`` ledger row.

:class:`RunRecord` is the single source of the ``runs`` table's columns (each backend
generates its DDL from it), of the ledger writes (:func:`run_fields` validates them), of
the figures the CLI prints, the metrics export and the report shows
(:data:`FIGURES`, with their group and label).
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

#: The statuses a run goes through (``running`` until ``end`` or a later run closes it).
RUN_STATUSES = ("running", "succeeded", "failed", "interrupted")


def _figure(group: str, label: str) -> Any:
    """A count column of the run, shown in group ``group`` as ``label``."""
    return field(default=None, metadata={"group": group, "label": label, "sql": "integer"})


def _text() -> Any:
    return field(default=None, metadata={"sql": "text"})


@dataclass(frozen=True)
class RunRecord:
    """One run of the flow as the ledger records it: identity, status, input, and its figures.

    ``rows_read = rows_loaded + rows_rejected + rows_duplicate``; ``rows_loaded = rows_new +
    rows_updated + rows_unchanged``. A figure is None until the step that counts it finished.
    """

    run_id: str
    status: str = "running"
    started_at: str | None = _text()
    finished_at: str | None = _text()
    user: str | None = _text()
    input_path: str | None = _text()
    input_sha256: str | None = _text()
    input_bytes: int | None = field(default=None, metadata={"sql": "integer"})
    tags_sha256: str | None = _text()
    match_mode: str | None = _text()
    rows_read: int | None = _figure("rows", "read")
    rows_loaded: int | None = _figure("rows", "loaded")
    rows_new: int | None = _figure("rows", "new")
    rows_updated: int | None = _figure("rows", "updated")
    rows_unchanged: int | None = _figure("rows", "unchanged")
    rows_rejected: int | None = _figure("rows", "rejected")
    rows_duplicate: int | None = _figure("rows", "duplicate")
    tagged: int | None = _figure("tagging", "tagged")
    untagged: int | None = _figure("tagging", "untagged")
    ambiguous: int | None = _figure("tagging", "ambiguous")
    annotated: int | None = _figure("annotation", "annotated")
    zero_amount: int | None = _figure("annotation", "zero amount")

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "RunRecord":
        """A record from a ``runs`` row (extra columns, such as a computed duration, are ignored)."""
        return cls(**{name: row.get(name) for name in RUN_COLUMNS})  # type: ignore[arg-type]

    def figure(self, name: str) -> int | None:
        """The value of figure ``name`` (a ``FIGURES`` name)."""
        value = getattr(self, name)
        return None if value is None else int(value)

    def as_dict(self) -> dict[str, Any]:
        """The record as a plain dict (column name to value), for JSON and tables."""
        return {name: getattr(self, name) for name in RUN_COLUMNS}


@dataclass(frozen=True)
class Figure:
    """A count the ledger keeps for every run: its column, group and label."""

    name: str
    group: str  # rows, tagging, annotation
    label: str


#: Every column of ``runs``, in table order (``run_id`` first).
RUN_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(RunRecord))
#: The counts of a run, in table order.
FIGURES: tuple[Figure, ...] = tuple(Figure(f.name, f.metadata["group"], f.metadata["label"])
                                    for f in fields(RunRecord) if "group" in f.metadata)
FIGURE_NAMES: tuple[str, ...] = tuple(f.name for f in FIGURES)
#: SQL type of every column but run_id and status (the backends add those with their constraints).
COLUMN_TYPES: dict[str, str] = {f.name: f.metadata["sql"] for f in fields(RunRecord) if "sql" in f.metadata}


def run_fields(values: Mapping[str, object]) -> dict[str, object]:
    """``values`` checked against the ``runs`` columns (raises ValueError on an unknown name or status)."""
    unknown = set(values) - set(RUN_COLUMNS) - {"run_id"}
    if unknown or "run_id" in values:
        raise ValueError(f"unknown run fields {sorted(unknown | ({'run_id'} & set(values)))}")
    status = values.get("status")
    if status is not None and status not in RUN_STATUSES:
        raise ValueError(f"unknown run status {status!r}: one of {', '.join(RUN_STATUSES)}")
    return dict(values)


def figures_in_groups(groups: tuple[str, ...]) -> tuple[Figure, ...]:
    """The figures of the given groups, in table order."""
    return tuple(f for f in FIGURES if f.group in groups)
