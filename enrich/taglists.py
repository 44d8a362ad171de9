"""Tag lists: reading, validating and normalizing the tags a run looks for (no numpy, no Arrow).

A tag list is plain data every step carries (it is part of the run's settings), so this module
imports nothing heavy; the matching itself is :mod:`enrich.tagging`.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from enrich.errors import ConfigurationError, PermanentError

MatchMode = Literal["word", "substring"]
MATCH_MODES: tuple[str, ...] = ("word", "substring")
DEFAULT_TAGS: tuple[str, ...] = ("TATA", "TOTO", "TUTU", "TAXI")

_SEPARATORS = re.compile(r"([\W_]+)")  # maximal runs of non-alphanumeric characters


class TagListError(ConfigurationError, PermanentError, ValueError):
    """The tag list cannot be used; the message names the file, the line and the fix."""


def normalize_text(text: str) -> str:
    """Unicode NFKD, combining marks (categories Mn, Mc, Me) removed, then casefold."""
    decomposed = unicodedata.normalize("NFKD", text)
    if decomposed.isascii():
        return decomposed.lower()
    # character by character: only the rare wordings Arrow's kernels do not normalize come here
    # (a regex class of every mark would cost a second to build in each process)
    return "".join(char for char in decomposed if unicodedata.category(char)[0] != "M").casefold()


def split_pieces(normalized: str) -> list[str]:
    """Alternating tokens and separators; tokens are at even positions (maybe empty)."""
    return _SEPARATORS.split(normalized)


@dataclass(frozen=True)
class TagList:
    """An ordered list of distinct tags and how to match them."""

    names: tuple[str, ...]
    mode: MatchMode = "word"

    @property
    def keys(self) -> tuple[str, ...]:
        """What is looked for in a wording: normalized tags (word) or the names (substring)."""
        if self.mode == "word":
            return tuple(normalize_text(name) for name in self.names)
        return self.names

    @property
    def fingerprint(self) -> str:
        """SHA-256 of the mode and the tags: a change means stored tags must be re-derived."""
        payload = "\n".join((self.mode, *self.names)).encode("utf-8")
        return hashlib.sha256(payload).hexdigest()


def build_tag_list(names: Iterable[str], mode: str = "word", source: str = "tag list",
                   lines: Sequence[int] | None = None) -> TagList:
    """Validate tags and return a :class:`TagList`; raise :class:`TagListError` naming the culprit."""
    if mode not in MATCH_MODES:
        raise TagListError(f"unknown match mode {mode!r}: use one of {', '.join(MATCH_MODES)}")
    names = tuple(names)
    lines = tuple(lines) if lines is not None else tuple(range(1, len(names) + 1))
    if not names:
        raise TagListError(f"{source}: no tags found. Write one tag per line.")
    seen: dict[str, tuple[str, int]] = {}
    for name, line in zip(names, lines):
        where = f"{source}, line {line}"
        if any(unicodedata.category(c) == "Cc" for c in name):
            raise TagListError(f"{where}: tag {name!r} contains a control character. Remove it.")
        key = normalize_text(name) if mode == "word" else name
        if mode == "word" and not (key[:1].isalnum() and key[-1:].isalnum()):
            raise TagListError(
                f"{where}: tag {name!r} must start and end with a letter or digit in word mode. "
                "Fix the tag or use --match substring."
            )
        if key in seen:
            other, other_line = seen[key]
            raise TagListError(
                f"{where}: tag {name!r} duplicates {other!r} (line {other_line}) once normalized. "
                "Keep only one of them."
            )
        seen[key] = (name, line)
    return TagList(names=names, mode=mode)  # type: ignore[arg-type]


def load_tag_list(path: str | Path | None, mode: str = "word") -> TagList:
    """Read a tag list file (UTF-8, one tag per line, ``#`` comments and blank lines ignored).

    ``path=None`` gives the job's default tags: TATA, TOTO, TUTU, TAXI.
    """
    if path is None:
        return build_tag_list(DEFAULT_TAGS, mode, source="default tags")
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TagListError(f"{path}: tag list file not found. Pass an existing file to --tags.") from None
    except UnicodeDecodeError as exc:
        raise TagListError(f"{path}: not valid UTF-8 ({exc.reason} at byte {exc.start}). "
                           "Save the tag list as UTF-8.") from None
    except OSError as exc:
        raise TagListError(f"{path}: cannot read the tag list ({exc.strerror}).") from None
    names, lines = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        tag = raw.strip()
        if tag and not tag.startswith("#"):
            names.append(tag)
            lines.append(number)
    return build_tag_list(names, mode, source=str(path), lines=lines)
