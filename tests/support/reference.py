"""A tiny independent reference of the job's rules, for tests only."""
from __future__ import annotations

import re
import unicodedata
from decimal import Decimal


def normalize(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.category(c).startswith("M")).casefold()


def word_tags(wording: str, tags: list[str]) -> set[str]:
    normalized = normalize(wording)
    return {tag for tag in tags
            if re.search(r"(?<![^\W_])" + re.escape(normalize(tag)) + r"(?![^\W_])", normalized)}


def substring_tags(wording: str, tags: list[str]) -> set[str]:
    """The original job's algorithm."""
    return {tag for tag in tags if tag in wording}


def tag_of(wording: str, tags: list[str], mode: str = "word") -> str | None:
    found = word_tags(wording, tags) if mode == "word" else substring_tags(wording, tags)
    return next(iter(found)) if len(found) == 1 else None


def annotation_of(amount: Decimal) -> str | None:
    if amount > 300:
        return "LARGE SALE"
    if 0 < amount <= 300:
        return "SALE"
    if -200 <= amount < 0:
        return "SMALL EXPENSE"
    if amount < -200:
        return "EXPENSE"
    return None
