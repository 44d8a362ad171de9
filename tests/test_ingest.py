"""Tests for enrich.ingest: the CSV parser/validator of bank transactions.

Everything goes through the package's public names (read_chunks, parse_ids,
parse_amounts, the constants and errors); the fast paths are checked against an
independent reading of the contract (tests/ingest/reference.py), not by reaching
into them."""
from __future__ import annotations

import ast
import builtins
import csv
import io
import itertools
import re
import threading
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from enrich import ingest
from enrich.ingest import (
    DEFAULT_CHUNK_BYTES,
    REASON_BAD_AMOUNT,
    REASON_BAD_ID,
    REASON_INVALID_UTF8,
    REASON_MALFORMED_QUOTING,
    REASON_NUL_IN_WORDING,
    REASON_RECORD_TOO_LONG,
    REASON_UNCLOSED_QUOTE,
    REASON_WRONG_FIELD_COUNT,
    REQUIRED_COLUMNS,
    DuplicateColumnError,
    EmptyFileError,
    InputFileError,
    MalformedHeaderError,
    MissingColumnError,
    ParsedChunk,
    parse_amounts,
    parse_ids,
    read_chunks,
)
from tests.ingest import reference
from tests.ingest.reference import reference_amount, reference_id

MAX_ID = 9223372036854775807
HEADER = b"id,amount,wording\n"

# --------------------------------------------------------------------------- helpers


def write(tmp_path: Path, content: bytes | str, name: str = "transactions.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


def parse(path: Path, **kwargs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """All chunks of a file, concatenated: (valid, rejected)."""
    chunks = list(read_chunks(path, **kwargs))
    for chunk in chunks:
        check_chunk_shape(chunk)
        assert chunk.rows_read > 0
    valid = [c.valid for c in chunks]
    rejected = [c.rejected for c in chunks]
    return (
        pd.concat(valid, ignore_index=True) if valid else empty_valid(),
        pd.concat(rejected, ignore_index=True) if rejected else empty_rejected(),
    )


def empty_valid() -> pd.DataFrame:
    """What concatenating no valid frame stands for (compared only by content)."""
    ints = np.zeros(0, np.int64)
    return pd.DataFrame({"line": ints, "id": ints, "amount_cents": ints,
                         "wording": pd.Series([], dtype="str").array})


def empty_rejected() -> pd.DataFrame:
    return pd.DataFrame({"line": np.zeros(0, np.int64), "raw": pd.Series([], dtype="str").array,
                         "reason": pd.Series([], dtype="str").array})


def parse_bytes(
    tmp_path: Path, content: bytes | str, **kwargs: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return parse(write(tmp_path, content), **kwargs)


def rows(valid: pd.DataFrame) -> list[tuple[int, int, int, str]]:
    return [
        (int(line), int(id_), int(cents), str(word))
        for line, id_, cents, word in valid[["line", "id", "amount_cents", "wording"]].itertuples(
            index=False
        )
    ]


def rejects(rejected: pd.DataFrame) -> list[tuple[int, str, str]]:
    """(line, raw, reason prefix) of each rejected row."""
    return [
        (int(line), str(raw), str(reason).split(":", 1)[0])
        for line, raw, reason in rejected[["line", "raw", "reason"]].itertuples(index=False)
    ]


def check_chunk_shape(chunk: ParsedChunk) -> None:
    valid, rejected = chunk.valid, chunk.rejected
    assert list(valid.columns) == ["line", "id", "amount_cents", "wording"]
    assert list(rejected.columns) == ["line", "raw", "reason"]
    for col in ("line", "id", "amount_cents"):
        assert valid[col].dtype == np.int64, col
    assert rejected["line"].dtype == np.int64
    for series in (valid["wording"], rejected["raw"], rejected["reason"]):
        assert pd.api.types.is_string_dtype(series.dtype) or series.dtype == object
    assert isinstance(valid.index, pd.RangeIndex) and valid.index.start == 0
    assert isinstance(rejected.index, pd.RangeIndex) and rejected.index.start == 0
    assert valid["line"].is_monotonic_increasing
    assert rejected["line"].is_monotonic_increasing
    assert chunk.rows_read == len(valid) + len(rejected)
    for reason in rejected["reason"]:
        prefix, _, detail = reason.partition(": ")
        assert prefix in REASONS and detail, reason


REASONS = {
    REASON_WRONG_FIELD_COUNT, REASON_INVALID_UTF8, REASON_BAD_ID, REASON_BAD_AMOUNT,
    REASON_UNCLOSED_QUOTE, REASON_MALFORMED_QUOTING, REASON_RECORD_TOO_LONG, REASON_NUL_IN_WORDING,
}


# --------------------------------------------------------------------------- basics


def test_public_constants() -> None:
    assert REQUIRED_COLUMNS == ("id", "amount", "wording")
    assert DEFAULT_CHUNK_BYTES == 16 * 1024 * 1024
    assert issubclass(MissingColumnError, InputFileError)
    for exc in (EmptyFileError, MalformedHeaderError, DuplicateColumnError):
        assert issubclass(exc, InputFileError)


def test_simple_file_lf(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + b"1,-283.66,PRLV SEPA\n2,303.28,CARTE 06/10\n")
    valid, rejected = parse(str(path))  # type: ignore[arg-type]
    assert rows(valid) == [(2, 1, -28366, "PRLV SEPA"), (3, 2, 30328, "CARTE 06/10")]
    assert rejected.empty


def test_crlf_and_bom(tmp_path: Path) -> None:
    content = b"\xef\xbb\xbfid,amount,wording\r\n1,1.5,a b\r\n2,2,\r\n3,3,last"
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [(2, 1, 150, "a b"), (3, 2, 200, ""), (4, 3, 300, "last")]
    assert rejected.empty


def test_missing_final_newline_and_final_cr(tmp_path: Path) -> None:
    valid, _ = parse_bytes(tmp_path, HEADER + b"1,1,x\r")
    assert rows(valid) == [(2, 1, 100, "x")]
    valid, _ = parse_bytes(tmp_path, HEADER + b'1,1,"x"\r')
    assert rows(valid) == [(2, 1, 100, "x")]


def test_only_one_trailing_cr_is_a_terminator(tmp_path: Path) -> None:
    valid, _ = parse_bytes(tmp_path, HEADER + b"1,1,x\r\r\n2,1,a\rb\n")
    assert rows(valid) == [(2, 1, 100, "x\r"), (3, 2, 100, "a\rb")]


def test_quoted_fields(tmp_path: Path) -> None:
    content = (
        HEADER
        + b'1,"12.50","a, b"\n'
        + b'"2",-1,"say ""hi"""\n'
        + b'3,1,"multi\nline\r\nwording"\n'
        + b'4,1,""\n'
        + b'5,1,""""\n'
        + b'6,1,"""quoted"" at start, end"\n'
    )
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [
        (2, 1, 1250, "a, b"),
        (3, 2, -100, 'say "hi"'),
        (4, 3, 100, "multi\nline\r\nwording"),
        (7, 4, 100, ""),
        (8, 5, 100, '"'),
        (9, 6, 100, '"quoted" at start, end'),
    ]
    assert rejected.empty


def test_multiline_wording_keeps_line_numbers(tmp_path: Path) -> None:
    content = HEADER + b'1,1,"a\nb\nc"\n2,2,x\n3,3,"d\r\ne"\n4,4,bad\n5,x,y\n'
    valid, rejected = parse_bytes(tmp_path, content)
    assert [r[:2] for r in rows(valid)] == [(2, 1), (5, 2), (6, 3), (8, 4)]
    assert rejects(rejected) == [(9, "5,x,y", REASON_BAD_AMOUNT)]


def test_header_reordered_extra_columns_case_spaces_quotes(tmp_path: Path) -> None:
    content = b'extra," Wording ",AMOUNT,"id",more\n' b"x,hello,12.5,7,y\n" b"x,,-3,8,y\n"
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [(2, 7, 1250, "hello"), (3, 8, -300, "")]
    assert rejected.empty


def test_header_only(tmp_path: Path) -> None:
    for content in (HEADER, b"id,amount,wording", b"id,amount,wording\r\n\r\n\n"):
        assert list(read_chunks(write(tmp_path, content))) == []


def test_blank_lines_are_skipped(tmp_path: Path) -> None:
    content = b"\n\r\nid,amount,wording\n\n1,1,a\n\r\n\n2,2,b\n\n"
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [(5, 1, 100, "a"), (8, 2, 200, "b")]
    assert rejected.empty


def test_whitespace_only_line_is_a_record(tmp_path: Path) -> None:
    _, rejected = parse_bytes(tmp_path, HEADER + b" \n")
    assert rejects(rejected) == [(2, " ", REASON_WRONG_FIELD_COUNT)]


def test_empty_and_verbatim_wording(tmp_path: Path) -> None:
    valid, _ = parse_bytes(tmp_path, HEADER + b"1,1,\n2,1,  padded  \n3,1,\tx\t\n")
    assert [r[3] for r in rows(valid)] == ["", "  padded  ", "\tx\t"]


def test_nul_bytes_in_wording_are_refused_and_shown_escaped(tmp_path: Path) -> None:
    valid, rejected = parse_bytes(tmp_path, HEADER + b'1,1,a\x00b\n2,1,"\x00"\n3,1,ok\n')
    assert rows(valid) == [(4, 3, 100, "ok")]
    assert rejected["line"].tolist() == [2, 3] and rejected["raw"].tolist() == ["1,1,a\\x00b", '2,1,"\\x00"']
    assert all(reason.startswith(REASON_NUL_IN_WORDING) for reason in rejected["reason"])


def test_unicode_wording(tmp_path: Path) -> None:
    content = 'id,amount,wording\n1,1,ÉCHÉANCE PRÊT 🙂\n2,2,"日本, 語"\n'
    valid, _ = parse_bytes(tmp_path, content)
    assert [r[3] for r in rows(valid)] == ["ÉCHÉANCE PRÊT 🙂", "日本, 語"]


def test_literal_quote_inside_unquoted_field(tmp_path: Path) -> None:
    content = HEADER + b'1,1,12" TV\n2,2,"quoted, comma"\n3,3,a"b"c\n4,4,plain\n'
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [
        (2, 1, 100, '12" TV'),
        (3, 2, 200, "quoted, comma"),
        (4, 3, 300, 'a"b"c'),
        (5, 4, 400, "plain"),
    ]
    assert rejected.empty


# --------------------------------------------------------------------------- amounts and ids


@pytest.mark.parametrize(
    ("text", "cents"),
    [
        ("12", 1200), ("12.5", 1250), ("12.50", 1250), ("-0.99", -99), (".5", 50), ("5.", 500),
        ("+3", 300), ("-0.5", -50), ("300.000", 30000), ("0", 0), ("-0", 0), ("007.10", 710),
        (" 12.34\t", 1234), ("\t-1 ", -100), ("-.05", -5), ("+.5", 50),
        ("999999999999999.99", 99999999999999999), ("-999999999999999", -99999999999999900),
        ("0000000000000000001.5", 150), ("1234567890.12", 123456789012), ("12345678.9", 1234567890),
    ],
)
def test_valid_amounts(tmp_path: Path, text: str, cents: int) -> None:
    valid, rejected = parse_bytes(tmp_path, f'id,amount,wording\n1,{text},x\n2,"{text}",y\n')
    assert rejected.empty, rejected
    assert valid["amount_cents"].tolist() == [cents, cents]
    parsed, reasons = parse_amounts(pd.Series([text]))
    assert parsed.tolist() == [cents] and reasons.isna().all()


@pytest.mark.parametrize(
    "text",
    [
        "300.001", "1e3", "1E3", "1 000", "", " ", "-", "+", ".", "-.", "abc", "12a", "1.2.3",
        "--1",
        "1-", "0x10", "١٢", "１２", "1_000", "+-1", "1000000000000000", "1234567890123456.5",
        "0.001", "5.5.", "∞", "NaN", "inf",
    ],
)
def test_bad_amounts(tmp_path: Path, text: str) -> None:
    valid, rejected = parse_bytes(tmp_path, f'id,amount,wording\n1,"{text}",x\n2,1,ok\n')
    assert rows(valid) == [(3, 2, 100, "ok")]
    assert rejects(rejected) == [(2, f'1,"{text}",x', REASON_BAD_AMOUNT)]
    parsed, reasons = parse_amounts(pd.Series([text]))
    assert parsed.isna().all() and reasons.str.startswith(REASON_BAD_AMOUNT + ": ").all()


def test_quoted_numbers_with_escaped_quotes_are_bad(tmp_path: Path) -> None:
    valid, rejected = parse_bytes(tmp_path, HEADER + b'1,"""5",x\n"2""",1,x\n"3","4",y\n')
    assert rows(valid) == [(4, 3, 400, "y")]
    assert rejects(rejected) == [
        (2, '1,"""5",x', REASON_BAD_AMOUNT),
        (3, '"2""",1,x', REASON_BAD_ID),
    ]
    assert rejected["reason"].tolist() == [
        "bad amount: '\"5' is not a plain decimal number like -12.34",
        "bad id: '2\"' is not a positive integer",
    ]


def test_amount_reason_details(tmp_path: Path) -> None:
    _, rejected = parse_bytes(tmp_path, HEADER + b"1,300.001,a\n2,1234567890123456,b\n3,1e3,c\n")
    reasons = rejected["reason"].tolist()
    assert "not exact in cents" in reasons[0]
    assert "out of range" in reasons[1]
    assert "not a plain decimal" in reasons[2]


def test_thousands_separator_breaks_field_count(tmp_path: Path) -> None:
    valid, rejected = parse_bytes(tmp_path, HEADER + b"1,1,000.00,x\n2,1 000,x\n3,1,ok\n")
    assert rows(valid) == [(4, 3, 100, "ok")]
    assert rejects(rejected) == [
        (2, "1,1,000.00,x", REASON_WRONG_FIELD_COUNT),
        (3, "2,1 000,x", REASON_BAD_AMOUNT),
    ]
    assert rejected["reason"][0] == "wrong field count: expected 3, got 4"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1", 1), ("007", 7), (" 42\t", 42), (str(MAX_ID), MAX_ID), ("000" + str(MAX_ID), MAX_ID),
        ("1234567890123456", 1234567890123456), ("12345678901234567", 12345678901234567),
    ],
)
def test_valid_ids(tmp_path: Path, text: str, expected: int) -> None:
    valid, rejected = parse_bytes(tmp_path, f'id,amount,wording\n{text},1,x\n"{text}",1,x\n')
    assert rejected.empty
    assert valid["id"].tolist() == [expected, expected]


@pytest.mark.parametrize(
    "text",
    [
        "0", "000", "-1", "+1", "1.5", "1e3", "", "abc", str(MAX_ID + 1), "99999999999999999999",
        "1 2", "１", "0x1",
    ],
)
def test_bad_ids(tmp_path: Path, text: str) -> None:
    valid, rejected = parse_bytes(tmp_path, f'id,amount,wording\n"{text}",1,x\n5,1,ok\n')
    assert rows(valid) == [(3, 5, 100, "ok")]
    assert rejects(rejected) == [(2, f'"{text}",1,x', REASON_BAD_ID)]
    ids, reasons = parse_ids(pd.Series([text]))
    assert ids.isna().all() and reasons.str.startswith(REASON_BAD_ID + ": ").all()


def test_bad_id_is_reported_before_bad_amount(tmp_path: Path) -> None:
    _, rejected = parse_bytes(tmp_path, HEADER + b"x,y,z\n")
    assert rejects(rejected) == [(2, "x,y,z", REASON_BAD_ID)]


def test_parse_amounts_series_api() -> None:
    text = pd.Series(["1.5", None, "x", " -2 "], index=[10, 11, 12, 13], name="amount")
    cents, reasons = parse_amounts(text)
    assert str(cents.dtype) == "Int64"
    assert cents.index.tolist() == [10, 11, 12, 13]
    assert cents.tolist() == [150, pd.NA, pd.NA, -200]
    assert reasons.isna().tolist() == [True, False, False, True]
    assert reasons[11] == "bad amount: missing value"
    empty_cents, empty_reasons = parse_amounts(pd.Series([], dtype=object))
    assert len(empty_cents) == 0 and len(empty_reasons) == 0


number_texts = st.text(alphabet="0123456789.+- \te,\n", max_size=22)


@settings(max_examples=300, deadline=None)
@given(st.lists(number_texts, max_size=40))
@example(["1234567890123456", "12345678901234567.", "-123456789012345.67", "12\n", "9" * 17])
def test_value_parsers_agree_with_an_independent_reading(texts: list[str]) -> None:
    """parse_amounts / parse_ids (fast digit kernels, then regexes for the rest) agree with
    Decimal and int on any mix of texts, short or long, canonical or not."""
    cents, amount_reasons = parse_amounts(pd.Series(texts, dtype=object))
    ids, id_reasons = parse_ids(pd.Series(texts, dtype=object))
    for i, text in enumerate(texts):
        expected = reference_amount(text)
        assert (None if pd.isna(cents[i]) else int(cents[i])) == expected, text
        assert pd.isna(amount_reasons[i]) == (expected is not None), text
        expected_id = reference_id(text)
        assert (None if pd.isna(ids[i]) else int(ids[i])) == expected_id, text
        assert pd.isna(id_reasons[i]) == (expected_id is not None), text


# --------------------------------------------------------------------------- rejections


def test_wrong_field_count(tmp_path: Path) -> None:
    valid, rejected = parse_bytes(tmp_path, HEADER + b"1,1\n2,2,x,extra\n3,3,ok\n")
    assert rows(valid) == [(4, 3, 300, "ok")]
    assert rejects(rejected) == [
        (2, "1,1", REASON_WRONG_FIELD_COUNT),
        (3, "2,2,x,extra", REASON_WRONG_FIELD_COUNT),
    ]
    assert rejected["reason"].tolist() == [
        "wrong field count: expected 3, got 2",
        "wrong field count: expected 3, got 4",
    ]


def test_invalid_utf8_rejects_only_that_record(tmp_path: Path) -> None:
    content = (
        HEADER + "1,1,é\n".encode() + b"2,1,caf\xe9\n" + b'3,1,"x\n\xff"\n' + b"4,1,\xc3\n5,1,ok\n"
    )
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [(2, 1, 100, "é"), (7, 5, 100, "ok")]
    assert rejects(rejected) == [
        (3, "2,1,caf\\xe9", REASON_INVALID_UTF8),
        (4, '3,1,"x\n\\xff"', REASON_INVALID_UTF8),
        (6, "4,1,\\xc3", REASON_INVALID_UTF8),
    ]
    assert rejected["reason"][0] == "invalid UTF-8: byte 0xe9 at offset 7 of the record"


def test_invalid_utf8_in_an_ignored_column_rejects_the_record(tmp_path: Path) -> None:
    _, rejected = parse_bytes(tmp_path, b"id,amount,wording,note\n1,1,x,\xff\n")
    assert rejects(rejected) == [(2, "1,1,x,\\xff", REASON_INVALID_UTF8)]


def test_invalid_utf8_comes_before_field_count(tmp_path: Path) -> None:
    _, rejected = parse_bytes(tmp_path, HEADER + b"1,\xff\n")
    assert rejects(rejected) == [(2, "1,\\xff", REASON_INVALID_UTF8)]


def test_malformed_quoting(tmp_path: Path) -> None:
    content = HEADER + b'1,1,"abc"x\n2,"2"3,y\n3,1,"ok"\n4,1,"a"\r\r\n5,1,ok\n'
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [(4, 3, 100, "ok"), (6, 5, 100, "ok")]
    assert rejects(rejected) == [
        (2, '1,1,"abc"x', REASON_MALFORMED_QUOTING),
        (3, '2,"2"3,y', REASON_MALFORMED_QUOTING),
        (5, '4,1,"a"\r', REASON_MALFORMED_QUOTING),
    ]


def test_unclosed_quote_at_end_rejects_only_its_line(tmp_path: Path) -> None:
    content = HEADER + b"1,1,a\n2,2,\"never closed\n3,3,b\n4,4,c\r\n"
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [(2, 1, 100, "a"), (4, 3, 300, "b"), (5, 4, 400, "c")]
    assert rejects(rejected) == [(3, '2,2,"never closed', REASON_UNCLOSED_QUOTE)]


def test_unclosed_quote_followed_by_quoted_fields(tmp_path: Path) -> None:
    content = HEADER + b'1,1,"oops\n2,2,"fine"\n3,3,"multi\nline"\n4,4,x\n'
    valid, rejected = parse_bytes(tmp_path, content)
    assert rows(valid) == [(3, 2, 200, "fine"), (4, 3, 300, "multi\nline"), (6, 4, 400, "x")]
    assert rejects(rejected) == [(2, '1,1,"oops', REASON_UNCLOSED_QUOTE)]


def test_unclosed_quote_in_a_big_file(tmp_path: Path) -> None:
    """With more than max_record_bytes after it, an open quote is a too-long record."""
    lines = [b"%d,1,w%d\n" % (i, i) for i in range(3, 2000)]
    content = HEADER + b'1,1,"oops\n' + b"".join(lines)
    valid, rejected = parse_bytes(tmp_path, content, chunk_bytes=512, max_record_bytes=1000)
    assert len(valid) == len(lines) and valid["line"].tolist() == list(range(3, 2000))
    assert rejects(rejected) == [(2, '1,1,"oops', REASON_RECORD_TOO_LONG)]
    assert "closing quote missing" in rejected["reason"][0]


def test_record_too_long(tmp_path: Path) -> None:
    long_line = b"1,1," + b"x" * 100
    content = HEADER + long_line + b"\n2,2,short\n" + b'3,3,"' + b"y\n" * 60 + b'"\n4,4,end\n'
    valid, rejected = parse_bytes(tmp_path, content, max_record_bytes=50)
    # the 3rd record spans 61 lines: only its first line is rejected, parsing resumes on the
    # next line (inside the quoted text), which yields one more bad line per line.
    assert rows(valid)[0] == (3, 2, 200, "short")
    assert rows(valid)[-1] == (65, 4, 400, "end")
    got = rejects(rejected)
    assert got[0] == (2, long_line[:50].decode(), REASON_RECORD_TOO_LONG)
    assert got[1] == (4, '3,3,"y', REASON_RECORD_TOO_LONG)
    assert all(line > 4 for line, _, _ in got[2:])
    assert rejected["reason"][0].startswith("record too long: ")


def test_line_longer_than_buffer_and_limit_is_skipped(tmp_path: Path) -> None:
    content = HEADER + b"1,1," + b"z" * 5000 + b"\n2,2,after\n"
    for chunk_bytes in (16, 100, 1 << 20):
        valid, rejected = parse_bytes(
            tmp_path, content, chunk_bytes=chunk_bytes, max_record_bytes=300
        )
        assert rows(valid) == [(3, 2, 200, "after")]
        assert rejects(rejected) == [(2, "1,1," + "z" * 296, REASON_RECORD_TOO_LONG)]


def test_rejected_raw_text_keeps_the_record_verbatim(tmp_path: Path) -> None:
    _, rejected = parse_bytes(tmp_path, HEADER + b'"x",1,"a\r\nb ""c"""\r\n')
    assert rejects(rejected) == [(2, '"x",1,"a\r\nb ""c"""', REASON_BAD_ID)]


# --------------------------------------------------------------------------- sizes and chunks


def test_two_megabyte_wording(tmp_path: Path) -> None:
    big = "é" + "x" * (2 * 1024 * 1024) + "\n,\"\" end"
    quoted = '"' + big.replace('"', '""') + '"'
    content = f"id,amount,wording\n1,1,{quoted}\n2,2,after\n"
    for chunk_bytes in (DEFAULT_CHUNK_BYTES, 64 * 1024):
        valid, rejected = parse_bytes(tmp_path, content, chunk_bytes=chunk_bytes)
        assert rejected.empty
        assert valid["wording"][0] == big
        assert rows(valid)[1] == (4, 2, 200, "after")


def test_many_rows_across_chunks(tmp_path: Path) -> None:
    n = 30_000
    lines = []
    for i in range(1, n + 1):
        word = f'"w{i}, quoted\nline"' if i % 7 == 0 else f"w{i}"
        amount = f"{(i * 37) % 100000 - 50000}.{i % 100:02d}" if i % 5 else str(i)
        lines.append(f"{i},{amount},{word}\n")
    lines.insert(500, "bad,1,x\n")
    bad_line = 2 + sum(line.count("\n") for line in lines[:500])
    path = write(tmp_path, "id,amount,wording\n" + "".join(lines))
    chunks = list(read_chunks(path, chunk_bytes=64 * 1024))
    assert len(chunks) > 5
    valid = pd.concat([c.valid for c in chunks], ignore_index=True)
    rejected = pd.concat([c.rejected for c in chunks], ignore_index=True)
    assert valid["id"].tolist() == list(range(1, n + 1))
    assert rejected["line"].tolist() == [bad_line] and rejected["raw"].tolist() == ["bad,1,x"]
    assert valid["line"].is_monotonic_increasing
    expected_cents = [
        reference_amount(line.split(",")[1]) for line in lines if not line.startswith("bad")
    ]
    assert valid["amount_cents"].tolist() == expected_cents
    quoted = valid[valid["id"] % 7 == 0]
    assert (quoted["wording"] == "w" + quoted["id"].astype(str) + ", quoted\nline").all()


def test_one_big_block_of_messy_rows_matches_the_reference_reading(tmp_path: Path) -> None:
    """A block of several hundred kilobytes and tens of thousands of rows (scanned in
    several slices, parsed in several row batches), where literal quotes flip the quote
    parity and broken lines send records to the exact scanner here and there."""
    rng = np.random.default_rng(7)
    kinds = [
        b'%d,%d.%02d,plain text\n', b'%d,-%d.%02d,"quoted, with comma"\n',
        b'%d,%d.%02d,"multi\nline ""quoted"" text"\r\n', b'%d,%d.%02d,12" TV\n',
        b'%d,%d.%02d,"bad"x\n', b'%d,%d.%02d,"never closed\n', b'%d,%d.%02d,caf\xe9\n',
        b'"%d","%d.%02d",""\n', b'%d,%d.%02d\n', b"%d,%d.%02d,a\xc3\xa9\x00\n",
    ]
    weights = np.array([60, 10, 8, 5, 1, 1, 1, 8, 1, 5], dtype=float)
    choice = rng.choice(len(kinds), size=40_000, p=weights / weights.sum())
    body = b"".join(kinds[k] % (i + 1, i % 9973, i % 100) for i, k in enumerate(choice.tolist()))
    content = HEADER + body
    assert len(content) > 3 * 256 * 1024  # more than a few scan slices in one block
    valid, rejected = parse_bytes(tmp_path, content)
    expected = reference.read(content)
    assert rows(valid) == expected.valid
    assert rejects(rejected) == expected.rejected
    assert len(valid) > 30_000 and {p for _, _, p in expected.rejected} >= {
        REASON_MALFORMED_QUOTING, REASON_UNCLOSED_QUOTE, REASON_INVALID_UTF8, REASON_WRONG_FIELD_COUNT,
    }


def test_chunks_are_streamed(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + b"".join(b"%d,1,x\n" % i for i in range(1, 5001)))
    gen = read_chunks(path, chunk_bytes=1000)
    first = next(gen)
    assert 0 < first.rows_read < 5000
    gen.close()


def reader_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("ingest-framing", "ingest_"))]


def test_a_caller_that_stops_early_stops_the_reading_thread(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + b"".join(b"%d,1,x\n" % i for i in range(1, 50001)))
    gen = read_chunks(path, chunk_bytes=1000)
    next(gen)
    assert reader_threads()  # framing the next chunks meanwhile
    gen.close()
    assert reader_threads() == []  # stopped, its file and workers closed


class FailingAfter(io.RawIOBase):
    """A file whose reads fail (as a dying disk would) once ``limit`` bytes were read."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.data, self.limit, self.pos = data, limit, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        if self.pos >= self.limit:
            raise OSError(5, "Input/output error (simulated)")
        size = min(len(buffer), self.limit - self.pos, len(self.data) - self.pos)
        buffer[:size] = self.data[self.pos : self.pos + size]
        self.pos += size
        return size


def test_a_read_error_midway_reaches_the_caller_after_the_good_chunks(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + b"".join(b"%d,1,x\n" % i for i in range(1, 5001)))
    data, real_open = path.read_bytes(), builtins.open

    def open_failing(file, mode="r", *args, **kwargs):  # type: ignore[no-untyped-def]
        if str(file) == str(path):
            return FailingAfter(data, limit=20_000)  # well after the first chunks
        return real_open(file, mode, *args, **kwargs)

    with mock.patch.object(builtins, "open", open_failing):
        gen = read_chunks(path, chunk_bytes=1000)
        good = [next(gen), next(gen)]
        with pytest.raises(InputFileError, match=r"read error \(.*simulated\)") as caught:
            list(gen)
    assert str(caught.value).startswith(str(path))
    assert all(chunk.rows_read for chunk in good) and reader_threads() == []


# --------------------------------------------------------------------------- file-level errors


def expect_error(path: Path, exc_type: type[Exception], *fragments: str) -> str:
    """The error is raised by the read_chunks() call itself, before any iteration."""
    with pytest.raises(exc_type) as info:
        read_chunks(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


def test_missing_file(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.csv", InputFileError, "not found")


def test_directory(tmp_path: Path) -> None:
    expect_error(tmp_path, InputFileError, "directory")


def test_empty_file(tmp_path: Path) -> None:
    for content in (b"", b"\xef\xbb\xbf", b"\n\r\n\n"):
        expect_error(write(tmp_path, content), EmptyFileError, "empty", "id, amount, wording")


def test_missing_column(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,montant,wording\n1,2,3\n", name="x.csv")
    message = expect_error(path, MissingColumnError)
    assert message == (
        f"{path}: header has no 'amount' column (found: id, montant, wording). "
        "The file needs the columns id, amount, wording in any order."
    )
    path = write(tmp_path, b"libelle\n")
    expect_error(path, MissingColumnError, "'id' and 'amount' and 'wording' columns")


def test_duplicate_required_column(tmp_path: Path) -> None:
    path = write(tmp_path, b"id,amount,ID ,wording\n")
    expect_error(path, DuplicateColumnError, "'id'", "more than once")


def test_duplicate_other_column_is_fine(tmp_path: Path) -> None:
    valid, _ = parse_bytes(tmp_path, b"x,id,x,amount,wording\n0,1,0,2,w\n")
    assert rows(valid) == [(2, 1, 200, "w")]


def test_header_not_utf8(tmp_path: Path) -> None:
    expect_error(write(tmp_path, b"id,amount,libell\xe9,wording\n"), MalformedHeaderError, "UTF-8")


def test_header_malformed(tmp_path: Path) -> None:
    path = write(tmp_path, b'id,"amount"x,wording\n')
    expect_error(path, MalformedHeaderError, "malformed quoting")
    expect_error(write(tmp_path, b'id,"amount,wording\n'), MalformedHeaderError, "unclosed quote")


def test_bad_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER)
    with pytest.raises(ValueError):
        next(read_chunks(path, chunk_bytes=0))
    with pytest.raises(ValueError):
        next(read_chunks(path, max_record_bytes=0))


@pytest.mark.parametrize(
    "module", sorted(Path(ingest.__file__).parent.glob("*.py")), ids=lambda path: path.name
)
def test_package_has_no_metaflow_sqlite_or_print(module: Path) -> None:
    tree = ast.parse(module.read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            assert node.func.id != "print"
        elif isinstance(node, ast.ExceptHandler):
            assert node.type is not None, "bare except"
    assert not imported & {"metaflow", "sqlite3", "sqlite_utils"}


# --------------------------------------------------------------------------- properties

HEADERS = [
    b"id,amount,wording\n",
    b"wording,id,amount,extra\r\n",
    b'\xef\xbb\xbf"ID", Amount ,wording\n',
]
TOKENS = [
    b"1", b"23", b"0", b"-", b".", b",", b",", b",", b'"', b'"', b'""', b"\n", b"\n", b"\r\n",
    b"\r", b"a", b" ", b"\xc3\xa9", b"\xff", b"\x00", b"12.5", b"\t", b"7,3.25,x\n",
    b'8,1,"q,\n"\n', b'9,-1,"a""b"\r\n', b'"\n', b"x" * 40,
]

messy_files = st.builds(
    lambda header, body: header + b"".join(body),
    st.sampled_from(HEADERS),
    st.lists(st.sampled_from(TOKENS), max_size=60),
)


def frames(path: Path, **kwargs: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    valid, rejected = parse(path, **kwargs)
    return valid.reset_index(drop=True), rejected.reset_index(drop=True)


def assert_same(a: tuple[pd.DataFrame, pd.DataFrame], b: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    pd.testing.assert_frame_equal(a[0], b[0])
    pd.testing.assert_frame_equal(a[1], b[1])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=messy_files,
    chunk_bytes=st.integers(1, 80),
    max_record_bytes=st.sampled_from([DEFAULT_CHUNK_BYTES, 40, 55, 90]),
)
@example(content=HEADER + b'1,1,"a\n', chunk_bytes=1, max_record_bytes=DEFAULT_CHUNK_BYTES)
@example(content=HEADER + b'1,1,"ab"\r', chunk_bytes=3, max_record_bytes=40)
@example(content=HEADER + b'"1' + b"x" * 40, chunk_bytes=1, max_record_bytes=40)  # fills the window to EOF
def test_fast_path_and_small_blocks_match_the_reference_reading(
    tmp_path: Path, content: bytes, chunk_bytes: int, max_record_bytes: int
) -> None:
    """Block size never changes the result, which is the contract's (messy inputs)."""
    path = write(tmp_path, content)
    big = frames(path, max_record_bytes=max_record_bytes)
    small = frames(path, chunk_bytes=chunk_bytes, max_record_bytes=max_record_bytes)
    assert_same(big, small)
    expected = reference.read(content, max_record_bytes=max_record_bytes)
    assert rows(big[0]) == expected.valid
    assert rejects(big[1]) == expected.rejected
    # every non-blank line of the body is accounted for: rows never overlap
    lines = sorted(big[0]["line"].tolist() + big[1]["line"].tolist())
    assert len(lines) == len(set(lines))


# ---- reference parser for well-formed files, built on Python's csv module

def reference_parse(text: str) -> tuple[list[tuple[int, int, int, str]], list[tuple[int, str]]]:
    # Physical lines end with "\n" only (a CR inside a quoted field is not a line end).
    physical = re.findall(r"[^\n]*\n|[^\n]+$", text)
    reader = csv.reader(physical)
    header = [name.strip().lower() for name in next(reader)]
    where = [header.index(col) for col in REQUIRED_COLUMNS]
    valid: list[tuple[int, int, int, str]] = []
    rejected: list[tuple[int, str]] = []
    while True:
        line = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        if not row:
            continue
        if len(row) != len(header):
            rejected.append((line, REASON_WRONG_FIELD_COUNT))
            continue
        id_, cents = reference_id(row[where[0]]), reference_amount(row[where[1]])
        if id_ is None:
            rejected.append((line, REASON_BAD_ID))
        elif cents is None:
            rejected.append((line, REASON_BAD_AMOUNT))
        elif "\x00" in row[where[2]]:
            rejected.append((line, REASON_NUL_IN_WORDING))
        else:
            valid.append((line, id_, cents, row[where[2]]))
    return valid, rejected


def csv_field(value: str, force_quotes: bool) -> str:
    if force_quotes or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def amount_texts(cents: int) -> st.SearchStrategy[str]:
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    forms = [
        f"{sign}{whole}.{frac:02d}", f"{sign}{whole}.{frac:02d}000", f"{sign}00{whole}.{frac:02d}"
    ]
    if frac % 10 == 0:
        forms.append(f"{sign}{whole}.{frac // 10}")
    if frac == 0:
        forms += [f"{sign}{whole}", f"{sign}{whole}.", f" {sign}{whole}\t"]
    if whole == 0:
        forms.append(f"{sign}.{frac:02d}")
    if cents > 0:
        forms.append(f"+{whole}.{frac:02d}")
    return st.sampled_from(forms)


valid_amounts = st.integers(-(10**17) + 1, 10**17 - 1).flatmap(amount_texts)
bad_amounts = st.sampled_from(
    ["1e3", "300.001", "1 000", "", "x", "1.2.3", "١", "-", "1234567890123456"]
)
valid_ids = st.one_of(
    st.integers(1, MAX_ID).map(str),
    st.integers(1, 10**6).map(lambda i: f"00{i}"),
    st.integers(1, 10**6).map(lambda i: f" {i}\t"),
)
bad_ids = st.sampled_from(["0", "-1", "1.5", str(MAX_ID + 1), "", "a", "１"])
wordings = st.text(
    alphabet=st.one_of(
        st.sampled_from(list(',"\n\r \t\x00éß€🙂')),
        st.characters(blacklist_categories=("Cs",)),
    ),
    max_size=30,
)
records = st.tuples(
    st.one_of(valid_ids, valid_ids, valid_ids, bad_ids),
    st.one_of(valid_amounts, valid_amounts, valid_amounts, bad_amounts),
    wordings,
    st.booleans(),  # quote everything
    st.sampled_from(["", "", "", "extra", "extra,more"]),  # extra trailing fields (bad count)
    st.booleans(),  # blank line after
)


@settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    records=st.lists(records, max_size=25),
    order=st.permutations([0, 1, 2, 3]),
    terminator=st.sampled_from(["\n", "\r\n"]),
    final_terminator=st.booleans(),
    chunk_bytes=st.sampled_from([DEFAULT_CHUNK_BYTES, 7, 64]),
)
def test_matches_reference_csv_parser(
    tmp_path: Path,
    records: list[tuple[str, str, str, bool, str, bool]],
    order: list[int],
    terminator: str,
    final_terminator: bool,
    chunk_bytes: int,
) -> None:
    names = ["id", "amount", "wording", "other"]
    header = ",".join(names[i] for i in order)
    lines = [header]
    for id_text, amount_text, wording, quote_all, extra, blank_after in records:
        values = {"id": id_text, "amount": amount_text, "wording": wording, "other": "o"}
        fields = [csv_field(values[names[i]], quote_all) for i in order]
        line = ",".join(fields) + ("," + extra if extra else "")
        lines.append(line)
        if blank_after:
            lines.append("")
    text = terminator.join(lines) + (terminator if final_terminator else "")
    assume(not text.endswith("\r"))  # a lone final CR is a terminator for us, text for csv
    expected_valid, expected_rejected = reference_parse(text)
    valid, rejected = frames(write(tmp_path, text), chunk_bytes=chunk_bytes)
    assert rows(valid) == expected_valid
    assert [(line, prefix) for line, _, prefix in rejects(rejected)] == expected_rejected


def test_reference_parser_sanity() -> None:
    valid, rejected = reference_parse('id,amount,wording\n1,2.5,"a\nb"\n\n2,x,y\n')
    assert valid == [(2, 1, 250, "a\nb")] and rejected == [(5, REASON_BAD_AMOUNT)]


def test_chunks_cover_every_line_once(tmp_path: Path) -> None:
    body = b"".join(
        itertools.islice(
            itertools.cycle([b"1,1,a\n", b"x\n", b'2,2,"b\nc"\n', b"\n", b'3,"3"x,z\n']), 400
        )
    )
    path = write(tmp_path, HEADER + body)
    valid, rejected = parse(path, chunk_bytes=50)
    lines = sorted(valid["line"].tolist() + rejected["line"].tolist())
    assert len(lines) == len(set(lines)) == 80 * 4
