"""The contract's own functions: the id and amount rules one value at a time, the reasons,
and their agreement with the vectorized parsers the package exports."""
from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from enrich.ingest import REASON_BAD_AMOUNT, REASON_BAD_ID, parse_amounts, parse_ids
from enrich.ingest.contract import (
    MAX_ID,
    REASON_INVALID_UTF8,
    REASON_WRONG_FIELD_COUNT,
    amount_cents,
    bad_amount_reason,
    bad_id_reason,
    id_value,
    invalid_utf8_reason,
    wrong_field_count_reason,
)
from tests.ingest.reference import reference_amount, reference_id


@pytest.mark.parametrize(("text", "cents"), [
    ("12", 1200), ("-0.99", -99), (".5", 50), ("5.", 500), ("+3", 300), ("300.000", 30000),
    (" 12.34\t", 1234), ("-0", 0), ("999999999999999.99", 99999999999999999),
    ("300.001", None), ("1e3", None), ("", None), (".", None), ("1 000", None), ("12\n", None),
    ("1000000000000000", None), ("١٢", None),
])
def test_amount_rule(text: str, cents: int | None) -> None:
    assert amount_cents(text) == cents


@pytest.mark.parametrize(("text", "value"), [
    ("1", 1), (" 007\t", 7), (str(MAX_ID), MAX_ID), ("0", None), ("-1", None), ("+1", None),
    (str(MAX_ID + 1), None), ("１", None), ("", None), ("1\n", None),
])
def test_id_rule(text: str, value: int | None) -> None:
    assert id_value(text) == value


texts = st.text(alphabet="0123456789.+- \te,\n", max_size=22) | st.text(max_size=8)


@settings(max_examples=400, deadline=None)
@given(texts)
@example("0" * 30 + "1.50")
@example("9" * 19)
def test_the_scalar_rules_match_an_independent_reading_and_the_vectorized_parsers(text: str) -> None:
    assert amount_cents(text) == reference_amount(text)
    assert id_value(text) == reference_id(text)
    cents, cent_reasons = parse_amounts(pd.Series([text], dtype=object))
    ids, id_reasons = parse_ids(pd.Series([text], dtype=object))
    assert (None if pd.isna(cents[0]) else int(cents[0])) == amount_cents(text)
    assert (None if pd.isna(ids[0]) else int(ids[0])) == id_value(text)
    if amount_cents(text) is None:
        assert cent_reasons[0] == bad_amount_reason(text)
    if id_value(text) is None:
        assert id_reasons[0] == bad_id_reason(text)


@pytest.mark.parametrize(("text", "detail"), [
    ("1e3", "'1e3' is not a plain decimal number like -12.34"),
    ("300.001", "'300.001' is not exact in cents"),
    ("1234567890123456", "'1234567890123456' is out of range (more than 15 integer digits)"),
])
def test_bad_amount_reasons(text: str, detail: str) -> None:
    assert bad_amount_reason(text) == f"{REASON_BAD_AMOUNT}: {detail}"


@pytest.mark.parametrize(("text", "detail"), [
    ("abc", "'abc' is not a positive integer"),
    ("000", "'000' is not a positive integer (must be at least 1)"),
    (str(MAX_ID + 1), f"'{MAX_ID + 1}' is out of range (at most {MAX_ID})"),
])
def test_bad_id_reasons(text: str, detail: str) -> None:
    assert bad_id_reason(text) == f"{REASON_BAD_ID}: {detail}"


def test_long_texts_are_cut_in_reasons() -> None:
    assert bad_id_reason("x" * 100) == f"{REASON_BAD_ID}: '{'x' * 40}...' is not a positive integer"


def test_record_level_reasons() -> None:
    assert wrong_field_count_reason(3, 4) == f"{REASON_WRONG_FIELD_COUNT}: expected 3, got 4"
    assert invalid_utf8_reason("1,1,é".encode()) is None
    assert invalid_utf8_reason(b"1,1,caf\xe9") == (
        f"{REASON_INVALID_UTF8}: byte 0xe9 at offset 7 of the record"
    )


def test_a_wording_with_a_nul_character_is_rejected_on_every_backend_alike(tmp_path) -> None:
    """PostgreSQL's text cannot hold NUL: the contract refuses it for every backend, and a raw line
    keeps it visible as \\x00 (storable everywhere)."""
    from enrich.ingest import read_chunks
    from enrich.ingest.contract import NUL_IN_WORDING_REASON

    path = tmp_path / "nul.csv"
    path.write_bytes(b'id,amount,wording\n1,1.00,a\x00b\n2,-2.50,ok\n3,3.00,"\x00,"\n4,x,\x00\n')
    chunks = list(read_chunks(path))
    valid = [row for chunk in chunks for row in chunk.valid.to_dict("records")]
    rejected = [row for chunk in chunks for row in chunk.rejected.to_dict("records")]
    assert [row["id"] for row in valid] == [2]
    assert [(row["line"], row["raw"]) for row in rejected] == [
        (2, "1,1.00,a\\x00b"), (4, '3,3.00,"\\x00,"'), (5, "4,x,\\x00")]
    assert [row["reason"] for row in rejected[:2]] == [NUL_IN_WORDING_REASON] * 2
    assert rejected[2]["reason"].startswith("bad amount")
    assert all("\x00" not in row["raw"] for row in rejected)
