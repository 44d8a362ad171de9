"""Tagging rules: which tag of a list a transaction's wording carries.

A transaction is *tagged* when exactly one distinct tag of the list is found in
its wording; with none it is *untagged*, with two or more *ambiguous* (no tag is
stored for either, both are counted).

Two match modes:

``word`` (default)
    Case- and accent-insensitive: wording and tags are normalized by
    :func:`normalize_text` (Unicode NFKD, combining marks removed, casefold). A tag
    is found when it occurs as a whole word or phrase: bounded by characters that
    are not alphanumeric (``str.isalnum``), or by the ends of the wording. The
    stored tag is its name as written in the list.
``substring``
    Reproduces the original job exactly: case-sensitive ``tag in wording``.

Implementation: a wording is cut into alternating *pieces*, maximal runs of
alphanumeric characters (tokens) and of other characters (separators). A tag of
``L`` tokens occurs as a bounded phrase exactly when the ``2L-1`` pieces starting
at some token concatenate to the normalized tag. Pure-ASCII wordings (nearly all
bank wordings) are cut and joined with vectorized pyarrow kernels and matched by
hash look-ups, so a 10,000-tag list costs about what a 4-tag list does; the rare
accented Latin wordings are first normalized to ASCII with Arrow kernels and take
the same path; only what is left (``œ``, ``ß``, other scripts) goes through the same
algorithm in Python, once per distinct wording, using Python's own Unicode tables.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from enrich.taglists import (DEFAULT_TAGS, MATCH_MODES, MatchMode, TagList, TagListError, build_tag_list,
                             load_tag_list, normalize_text, split_pieces)

if TYPE_CHECKING:
    import pandas as pd

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_TAGS", "MATCH_MODES", "MatchMode", "TagList", "TagListError", "TaggedChunk", "build_tag_list",
           "find_tags", "load_tag_list", "match_tags", "normalize_text", "split_pieces", "tag_frame", "tag_table"]

_ASCII_ALNUM = np.zeros(256, dtype=bool)  # byte -> is an ASCII letter or digit
for _byte in b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789":
    _ASCII_ALNUM[_byte] = True


# --------------------------------------------------------------------------- matching
def match_tags(wordings: pa.Array | pa.ChunkedArray, tags: TagList) -> tuple[np.ndarray, np.ndarray]:
    """For each wording: the number of distinct tags found, and the tag's name when exactly one
    (None otherwise), as numpy arrays (int32, object). Nulls count as empty wordings."""
    array = wordings.combine_chunks() if isinstance(wordings, pa.ChunkedArray) else wordings
    array = array.cast(pa.large_string())
    if array.null_count:  # (a copy of every wording: only when there is a null to fill)
        array = pc.fill_null(array, "")
    if tags.mode == "word":
        rows, tag_ids = _word_matches(array, tags.keys)
    else:
        rows, tag_ids = _substring_matches(array, tags.keys)
    counts, single = _distinct_per_row(len(array), rows, tag_ids, len(tags.names))
    names = np.array(tags.names, dtype=object)
    tag = np.full(len(array), None, dtype=object)
    tagged = counts == 1
    tag[tagged] = names[single[tagged]]
    return counts.astype(np.int32), tag


def find_tags(wordings: pd.Series, tags: TagList) -> pd.DataFrame:
    """:func:`match_tags` for a pandas series: a frame of ``matches`` and ``tag`` on its index."""
    import pandas as pd

    counts, tag = match_tags(pa.array(wordings, type=pa.large_string(), from_pandas=True), tags)
    return pd.DataFrame({"matches": counts, "tag": pd.array(tag, dtype="string")}, index=wordings.index)


@dataclass(frozen=True)
class TaggedChunk:
    """The tags of a chunk of transactions: rows for the tagged ones, the counts, the ambiguous wordings."""

    tags: pa.Table  # transaction_id (int64), tag (string): tagged transactions only
    counts: dict[str, int]  # tagged, untagged, ambiguous
    ambiguous: pa.Table  # wording, tags_found: one row per ambiguous transaction


TAGS_SCHEMA = pa.schema([("transaction_id", pa.int64()), ("tag", pa.large_string())])
AMBIGUOUS_SCHEMA = pa.schema([("wording", pa.large_string()), ("tags_found", pa.int64())])


def tag_table(transactions: pa.Table, tags: TagList) -> TaggedChunk:
    """Tags for an Arrow table with ``id`` and ``wording`` (no pandas)."""
    counts, tag = match_tags(transactions.column("wording"), tags)
    tagged, several = counts == 1, counts >= 2
    ids = transactions.column("id").to_numpy()
    return TaggedChunk(
        tags=pa.table([pa.array(ids[tagged], pa.int64()), pa.array(tag[tagged], pa.large_string())],
                      schema=TAGS_SCHEMA),
        counts={"tagged": int(tagged.sum()), "untagged": int((counts == 0).sum()), "ambiguous": int(several.sum())},
        ambiguous=pa.table([transactions.column("wording").filter(pa.array(several)).cast(pa.large_string()),
                            pa.array(counts[several].astype(np.int64))], schema=AMBIGUOUS_SCHEMA))


def tag_frame(transactions: pd.DataFrame, tags: TagList,
              ambiguous: list[pd.DataFrame] | None = None) -> tuple[pd.DataFrame, dict[str, int]]:
    """Tags for a frame with ``id`` and ``wording``.

    Returns ``(transaction_id, tag)`` rows for tagged transactions only, and the
    counts ``tagged``, ``untagged``, ``ambiguous``. When ``ambiguous`` is a list, the
    ambiguous rows' ``wording`` and ``tags_found`` (distinct tags found) are appended to it.
    """
    import pandas as pd

    found = find_tags(transactions["wording"], tags)
    counts = found["matches"].to_numpy()
    tagged = counts == 1
    if ambiguous is not None:
        several = counts >= 2
        ambiguous.append(pd.DataFrame({"wording": transactions["wording"].to_numpy()[several],
                                       "tags_found": counts[several]}))
    result = pd.DataFrame(
        {
            "transaction_id": transactions["id"].to_numpy(dtype=np.int64)[tagged],
            "tag": found["tag"].to_numpy()[tagged],
        }
    )
    stats = {
        "tagged": int(tagged.sum()),
        "untagged": int((counts == 0).sum()),
        "ambiguous": int((counts >= 2).sum()),
    }
    return result, stats


def _distinct_per_row(n: int, rows: np.ndarray, tag_ids: np.ndarray,
                      n_tags: int) -> tuple[np.ndarray, np.ndarray]:
    """Count distinct tags per row; for rows with one, which one."""
    keys = np.sort(rows.astype(np.int64) * n_tags + tag_ids.astype(np.int64))
    pairs = keys[np.concatenate(([True], keys[1:] != keys[:-1]))] if len(keys) else keys
    pair_rows = pairs // n_tags
    counts = np.bincount(pair_rows, minlength=n)
    single = np.zeros(n, dtype=np.int64)
    single[pair_rows] = pairs % n_tags  # exact wherever counts == 1
    return counts, single


def _substring_matches(array: pa.Array, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    rows, tag_ids = [], []
    for index, key in enumerate(keys):
        hit = np.flatnonzero(pc.match_substring(array, key).to_numpy(zero_copy_only=False))
        rows.append(hit)
        tag_ids.append(np.full(len(hit), index, dtype=np.int64))
    return _concat(rows), _concat(tag_ids)


def _word_matches(array: pa.Array, keys: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    by_length = _keys_by_token_count(keys)
    fast_rows, fast_text, slow_rows = _ascii_normalized(array)
    rows_a, tags_a = _ascii_word_matches(fast_text, by_length)
    rows_u, tags_u = _unicode_word_matches(array.take(pa.array(slow_rows)), by_length)
    return (np.concatenate([fast_rows[rows_a], slow_rows[rows_u]]),
            np.concatenate([tags_a, tags_u]))


#: Latin script up to Latin Extended-B: Unicode has not changed how these decompose in decades,
#: so Arrow's normalization (utf8proc, RE2) agrees with Python's :func:`normalize_text` on them.
_STABLE_LATIN = r"^[\x{0}-\x{24F}]*$"


def _ascii_normalized(array: pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """Split rows into those whose normalized text is ASCII (with that text, vectorized) and the rest.

    ASCII wordings are their own normalization (up to case). Accented Latin ones
    (``é`` -> ``e``) are normalized with Arrow kernels: NFKD, combining marks removed.
    What is left (``œ``, ``ß``, other scripts) goes to the exact Python path.
    """
    is_ascii = pc.string_is_ascii(array).to_numpy(zero_copy_only=False)
    ascii_rows, other_rows = np.flatnonzero(is_ascii), np.flatnonzero(~is_ascii)
    others = array.take(pa.array(other_rows))
    latin = pc.match_substring_regex(others, _STABLE_LATIN).to_numpy(zero_copy_only=False)
    latin_rows = other_rows[latin]
    stripped = pc.replace_substring_regex(pc.utf8_normalize(others.filter(pa.array(latin)), "NFKD"),
                                          r"\p{M}+", "")
    now_ascii = pc.string_is_ascii(stripped).to_numpy(zero_copy_only=False)
    fast_rows = np.concatenate([ascii_rows, latin_rows[now_ascii]])
    fast_text = pa.concat_arrays([array.take(pa.array(ascii_rows)).cast(pa.large_string()),
                                  stripped.filter(pa.array(now_ascii)).cast(pa.large_string())])
    slow_rows = np.sort(np.concatenate([other_rows[~latin], latin_rows[~now_ascii]]))
    return fast_rows, fast_text, slow_rows


def _keys_by_token_count(keys: Sequence[str]) -> dict[int, dict[str, int]]:
    """``{token count: {normalized tag: tag index}}``."""
    by_length: dict[int, dict[str, int]] = {}
    for index, key in enumerate(keys):
        by_length.setdefault(len(split_pieces(key)) // 2 + 1, {})[key] = index
    return by_length


def _ascii_word_matches(array: pa.Array, by_length: dict[int, dict[str, int]]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Vectorized word matching for pure-ASCII wordings.

    The lower-cased wordings' bytes are cut where alphanumeric and other bytes
    meet (and at each wording's start): the cuts are the offsets of a zero-copy
    Arrow array of pieces, which hash look-ups then match against the tags.
    """
    if len(array) == 0:
        return _empty(), _empty()
    lowered = pc.ascii_lower(array).cast(pa.large_string())
    _, offsets_buffer, data_buffer = lowered.buffers()
    row_offsets = np.frombuffer(offsets_buffer, dtype=np.int64)[lowered.offset:lowered.offset + len(lowered) + 1]
    data = np.frombuffer(data_buffer, dtype=np.uint8)[: row_offsets[-1]] if data_buffer else np.empty(0, np.uint8)
    alnum = _ASCII_ALNUM[data]
    cut = np.empty(len(data), dtype=bool)
    if len(data):
        cut[0] = True
        np.not_equal(alnum[1:], alnum[:-1], out=cut[1:])
        cut[row_offsets[:-1][row_offsets[:-1] < len(data)]] = True
    piece_offsets = np.flatnonzero(np.append(cut, True))  # piece starts, then the end of the data
    piece_start = piece_offsets[:-1]
    pieces = pa.LargeStringArray.from_buffers(len(piece_start), pa.py_buffer(piece_offsets), data_buffer)
    rows, tag_ids = [], []
    for length, key_index in by_length.items():
        span = 2 * length - 1
        firsts = pa.array(sorted({split_pieces(key)[0] for key in key_index}), type=pa.large_string())
        # a first token is alphanumeric, so only token pieces can be candidates
        start = np.flatnonzero(pc.is_in(pieces, value_set=firsts).to_numpy(zero_copy_only=False))
        start_row = np.searchsorted(row_offsets, piece_start[start], side="right") - 1
        row_end = np.searchsorted(piece_start, row_offsets[start_row + 1], side="left")
        inside = start + span <= row_end
        start, start_row = start[inside], start_row[inside]
        if len(start) == 0:
            continue
        if span == 1:
            gram = pieces.take(pa.array(start))
        else:
            parts = [pieces.take(pa.array(start + j)) for j in range(span)]
            gram = pc.binary_join_element_wise(*parts, pa.scalar("", pa.large_string()))
        position = pc.index_in(gram, value_set=pa.array(list(key_index), type=pa.large_string()))
        hit = position.is_valid().to_numpy(zero_copy_only=False)
        key_ids = np.fromiter(key_index.values(), dtype=np.int64, count=len(key_index))
        rows.append(start_row[hit])
        tag_ids.append(key_ids[position.drop_null().to_numpy()])
    return _concat(rows), _concat(tag_ids)


def _unicode_word_matches(array: pa.Array, by_length: dict[int, dict[str, int]]
                          ) -> tuple[np.ndarray, np.ndarray]:
    """The same algorithm in Python, once per distinct non-ASCII wording."""
    if len(array) == 0:
        return _empty(), _empty()
    encoded = pc.dictionary_encode(array).combine_chunks() if isinstance(array, pa.ChunkedArray) \
        else pc.dictionary_encode(array)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    pairs = [(code, tag) for code, wording in enumerate(encoded.dictionary.to_pylist())
             for tag in _python_word_match(wording, by_length)]
    if not pairs:
        return _empty(), _empty()
    pair_codes = np.array([code for code, _ in pairs], dtype=np.int64)
    pair_tags = np.array([tag for _, tag in pairs], dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], pair_codes, "left")
    ends = np.searchsorted(codes[order], pair_codes, "right")
    rows = np.concatenate([order[start:end] for start, end in zip(starts, ends)])
    return rows.astype(np.int64), np.repeat(pair_tags, ends - starts)


def _python_word_match(wording: str, by_length: dict[int, dict[str, int]]) -> list[int]:
    pieces = split_pieces(normalize_text(wording))
    found = set()
    for length, key_index in by_length.items():
        span = 2 * length - 1
        for start in range(0, len(pieces) - span + 1, 2):
            index = key_index.get("".join(pieces[start:start + span]))
            if index is not None:
                found.add(index)
    return sorted(found)


def _empty() -> np.ndarray:
    return np.empty(0, dtype=np.int64)


def _concat(parts: list[np.ndarray]) -> np.ndarray:
    return np.concatenate(parts).astype(np.int64) if parts else _empty()
