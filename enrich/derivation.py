"""Which transactions a run re-derives, and deriving their tags shard by shard.

A run re-derives the rows of every run still pending (its own new and changed rows, plus
those of an earlier run whose tagging or annotating failed), or every stored row when the
rules changed (a new tag list, new annotation rules) or the table was changed outside the
pipeline (then it is repaired, and what was wrong is reported).

Tagging is split into ``--shards`` id ranges of the rows in scope; each shard tags its
range and stages the result in the database; one publish then replaces the tags of the
whole scope in one transaction (:func:`enrich.stages.publish_tags`).
"""
from __future__ import annotations

import hashlib
import logging
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from typing import TYPE_CHECKING

from enrich import annotation
from enrich.logs import Progress
from enrich.store import ANNOTATIONS, TAGS, ConcurrentModification, Store
from enrich.taglists import TagList

if TYPE_CHECKING:  # the tagging shards import Arrow and the matcher; the other stages do not need them
    import pyarrow as pa

logger = logging.getLogger(__name__)

#: The enrichment_state key of the rules last applied, per kind (a change re-derives every row).
RULES_KEYS = {TAGS: "tags_fingerprint", ANNOTATIONS: "annotation_rules_fingerprint"}
ANNOTATION_RULES_FINGERPRINT = hashlib.sha256(repr(annotation.RULES).encode()).hexdigest()


@dataclass(frozen=True)
class Scope:
    """Which transactions a derive stage covers, and why."""

    covered: tuple[str, ...] | None  # the pending runs; None: every stored transaction
    table_fingerprint: str  # the table's fingerprint when the scope was taken (the publish re-checks it)
    changed_outside: bool = False  # the table differs from its last publish: repaired by re-deriving all

    def describe(self) -> str:
        return "every transaction" if self.covered is None else f"runs {list(self.covered)}"


@dataclass(frozen=True)
class Derived:
    """What a derive stage did: the scope it covered, its figures and shares, what it repaired."""

    kind: str
    covered_runs: tuple[str, ...] | None
    rows: int
    counts: dict[str, int] = field(default_factory=dict)  # ledger figures (runs columns)
    distribution: dict[str, int] = field(default_factory=dict)  # category shares, for drift
    state: dict[str, str] = field(default_factory=dict)  # rules fingerprint to record at publish
    repaired: dict[str, int] = field(default_factory=dict)  # what was wrong before this run repaired it
    table_fingerprint: str | None = None


def scope_of(store: Store, kind: str, rules_fingerprint: str) -> Scope:
    """Every transaction when the rules changed or the table was changed outside the pipeline,
    else the rows of the runs still pending for ``kind``."""
    rules_changed = store.get_state(RULES_KEYS[kind]) != rules_fingerprint
    current, recorded, _ = store.table_fingerprint(kind)
    changed_outside = recorded is not None and current != recorded
    covered = None if rules_changed or changed_outside else store.pending_runs(kind)
    if changed_outside:
        logger.error("the %s table was changed outside the pipeline since its last publish: re-deriving "
                     "every transaction to repair it", kind)
    elif rules_changed and store.get_state(RULES_KEYS[kind]) is None:
        logger.debug("%s: first derivation in this database: every transaction", kind)
    elif rules_changed:
        logger.info("%s rules differ from those last applied: re-deriving every transaction", kind)
    return Scope(covered, current, changed_outside)


def shard_ranges(bounds: tuple[int, int] | None, shards: int) -> list[tuple[int, int] | None]:
    """``bounds`` (smallest, largest id) cut into ``shards`` contiguous ranges; None ranges are empty."""
    if bounds is None:
        return [None] * shards
    low, high = bounds
    width = (high - low + 1 + shards - 1) // shards
    ranges: list[tuple[int, int] | None] = []
    for shard in range(shards):
        start = low + shard * width
        ranges.append((start, min(start + width - 1, high)) if start <= high else None)
    return ranges


def derive_tag_shard(store: Store, run_id: str, tags: TagList, shard: int, shards: int) -> Derived:
    """Tag the rows in scope whose ids fall in this shard's range and stage them (nothing published).

    When the tags table was changed outside the pipeline, also count what is wrong in this
    shard's range (the repair report), before re-deriving it.
    """
    from enrich import checks
    from enrich.tagging import tag_table

    scope = scope_of(store, TAGS, tags.fingerprint)
    ids = shard_ranges(store.scope_id_range(scope.covered), shards)[shard]
    repaired: dict[str, int] = {}
    if scope.changed_outside and ids is not None:
        found = checks.tag_discrepancies(store.iter_stored_tags(ids), tags)
        repaired = {k: v for k, v in found.items() if k != "checked" and v}
    counts: Counter[str] = Counter({"tagged": 0, "untagged": 0, "ambiguous": 0})
    ambiguous: list[pa.Table] = []

    def tagged() -> Iterator[pa.RecordBatch]:
        progress = Progress(f"tag shard {shard + 1}/{shards}")
        chunks = store.iter_transactions(("id", "wording"), scope.covered, ids) if ids is not None else iter(())
        for chunk in chunks:
            result = tag_table(chunk, tags)
            counts.update(result.counts)
            ambiguous.append(result.ambiguous)
            progress.add(chunk.num_rows)
            yield from result.tags.to_batches()

    # tag the whole range first, spilled to a scratch file (memory stays one chunk), and only then
    # take the database's write lock to stage the result: the other branches' writes (indexing,
    # annotating) go ahead while this shard computes, instead of queueing behind it
    with tempfile.TemporaryDirectory(prefix="enrich-tags-") as scratch:
        spilled = Path(scratch) / "tags.arrows"
        _spill(tagged(), spilled)
        staged = store.stage_tags(run_id, shard, _unspill(spilled), _ambiguous_counts(ambiguous))
    logger.info("tag shard %d/%d: %s tagged, %s untagged, %s ambiguous (%s; ids %s)", shard + 1, shards,
                f"{counts['tagged']:,}", f"{counts['untagged']:,}", f"{counts['ambiguous']:,}", scope.describe(), ids)
    return Derived(kind=TAGS, covered_runs=scope.covered, rows=staged, counts=dict(counts),
                   distribution=dict(counts), state={RULES_KEYS[TAGS]: tags.fingerprint},
                   repaired=repaired, table_fingerprint=scope.table_fingerprint)


def _spill(batches: Iterator[pa.RecordBatch], path: Path) -> None:
    """Write a shard's tag batches to an Arrow stream file."""
    import pyarrow as pa

    from enrich.tagging import TAGS_SCHEMA

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_stream(sink, TAGS_SCHEMA) as writer:
        for batch in batches:
            writer.write_batch(batch)


def _unspill(path: Path) -> Iterator[pa.RecordBatch]:
    """The batches :func:`_spill` wrote, read back from the file (memory-mapped: no copy)."""
    import pyarrow as pa

    with pa.memory_map(str(path)) as source:
        yield from pa.ipc.open_stream(source)


def _ambiguous_counts(parts: Sequence[pa.Table]) -> pa.Table:
    """Per distinct ambiguous wording: the most tags found and how many transactions."""
    import pyarrow as pa

    if not parts:
        return pa.table({"wording": pa.array([], pa.large_string()), "tags_found": pa.array([], pa.int64()),
                         "transactions": pa.array([], pa.int64())})
    table = pa.concat_tables(parts)
    grouped = table.group_by("wording").aggregate([("tags_found", "max"), ("tags_found", "count")])
    return pa.table({"wording": grouped.column("wording"), "tags_found": grouped.column("tags_found_max"),
                     "transactions": grouped.column("tags_found_count").cast(pa.int64())})


def merge_shards(parts: Sequence[Derived]) -> Derived:
    """One :class:`Derived` for the shards of one tagging (they share scope, state and fingerprint)."""
    first = parts[0]
    counts: Counter[str] = Counter()
    repaired: Counter[str] = Counter()
    for part in parts:
        counts.update(part.counts)
        repaired.update(part.repaired)
        if (part.covered_runs, part.table_fingerprint) != (first.covered_runs, first.table_fingerprint):
            raise ConcurrentModification("the tag shards saw different scopes (the tags table or the pending "
                                        "runs changed during tagging): the step's retry tags again")
    return replace(first, rows=sum(p.rows for p in parts), counts=dict(counts), distribution=dict(counts),
                   repaired=dict(repaired))
