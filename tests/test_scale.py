"""Correctness at scale: a 200,000-row run compared row by row with the rules' reference."""
from __future__ import annotations

import csv
from decimal import Decimal
from functools import lru_cache

import pytest

from enrich.generate import write_csv as generate_csv
from tests.flow_support import run_flow
from tests.support.reference import annotation_of, tag_of

pytestmark = [pytest.mark.flow, pytest.mark.slow]

ROWS = 200_000
TAGS = ["TATA", "TOTO", "TUTU", "TAXI"]


def expected_rows(path) -> dict[int, tuple[int, str]]:
    """Every valid row of the file, parsed by the csv module: id -> (amount in cents, wording)."""
    rows: dict[int, tuple[int, str]] = {}
    with path.open(newline="", encoding="utf-8") as handle:
        for record in csv.DictReader(handle):
            try:
                key, cents = int(record["id"]), int(Decimal(record["amount"]) * 100)
            except (ValueError, ArithmeticError, TypeError):
                continue  # malformed lines: the generator adds none here
            rows[key] = (cents, record["wording"])
    return rows


def test_two_hundred_thousand_rows_match_the_reference_row_by_row(tmp_path):
    source = tmp_path / "200k.csv"
    generate_csv(source, rows=ROWS, seed=2024)
    result = run_flow(tmp_path, source)
    assert result.returncode == 0, result.stderr[-3000:]

    expected = expected_rows(source)
    assert len(expected) == ROWS
    stored = result.query("""SELECT t.id, t.amount_cents, t.wording, g.tag, a.annotation FROM transactions t
        LEFT JOIN tags g ON g.transaction_id = t.id LEFT JOIN annotations a ON a.transaction_id = t.id
        ORDER BY t.id""")
    assert len(stored) == ROWS

    reference_tag = lru_cache(maxsize=None)(lambda wording: tag_of(wording, TAGS))
    wrong = []
    for key, cents, wording, tag, annotation in stored:
        if (cents, wording) != expected[key] or tag != reference_tag(wording) \
                or annotation != annotation_of(Decimal(cents) / 100):
            wrong.append((key, cents, wording, tag, annotation, expected.get(key)))
    assert wrong == []
    tagged = sum(1 for *_, tag, _annotation in stored if tag is not None)
    assert tagged > 10_000  # the generated wordings carry tags, ambiguous ones included
    assert result.query("SELECT rows_read, rows_loaded, tagged FROM runs") == [(ROWS, ROWS, tagged)]
