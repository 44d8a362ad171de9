"""Tests for the deterministic transaction generator (enrich.generate)."""
from __future__ import annotations

import csv
import io
import re
import shlex
import subprocess
import sys
import unicodedata
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from enrich import generate
from enrich.generate import BLOCK_ROWS, HEADER, GenerationSummary, generate_frame, write_csv

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "transactions.csv"

# Reference tagging: a tag counts when it appears as a whole word, case- and accent-insensitive.
TAG_WORD = re.compile(r"\b(TATA|TOTO|TUTU|TAXI)\b", re.IGNORECASE)
TAG_SUBSTRING = re.compile(r"(TATA|TOTO|TUTU|TAXI)", re.IGNORECASE)
VALID_ID = re.compile(r"[1-9][0-9]*")
VALID_AMOUNT = re.compile(r"-?[0-9]+(\.[0-9]{1,2})?")
REQUIRED_BOUNDARIES = [
    Decimal(v) for v in ("300.00", "300.01", "0.00", "-200.00", "-200.01", "0.01", "-0.01")
]


def fold(text: str) -> str:
    """Strip accents (NFKD, drop combining marks)."""
    return "".join(c for c in unicodedata.normalize("NFKD", text) if not unicodedata.combining(c))


def distinct_tags(wording: str, pattern: re.Pattern[str] = TAG_WORD) -> set[str]:
    return {m.upper() for m in pattern.findall(fold(wording))}


def read_lines(path: Path) -> list[list[str]]:
    """Parse a generated file with the csv module (data lines only, header checked)."""
    text = path.read_text(encoding="utf-8")
    assert text.encode("utf-8").startswith(HEADER)
    return list(csv.reader(io.StringIO(text)))[1:]


def is_valid(fields: list[str]) -> bool:
    return (
        len(fields) == 3
        and VALID_ID.fullmatch(fields[0]) is not None
        and VALID_AMOUNT.fullmatch(fields[1]) is not None
    )


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return generate_frame(20_000, seed=123, truth=True)


def documented_command() -> list[str]:
    """The regeneration command written in the module docstring."""
    doc = generate.__doc__ or ""
    match = re.search(r"^\s*(enrich generate .*data/transactions\.csv.*)$", doc, re.MULTILINE)
    assert match, "module docstring must document the command regenerating data/transactions.csv"
    return shlex.split(match.group(1))


# ----------------------------------------------------------------------------- determinism


def test_same_arguments_give_identical_bytes(tmp_path: Path) -> None:
    a = write_csv(tmp_path / "a.csv", 3_000, seed=5, malformed=6, duplicates=4)
    b = write_csv(tmp_path / "b.csv", 3_000, seed=5, malformed=6, duplicates=4)
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    assert a.bytes == b.bytes == (tmp_path / "a.csv").stat().st_size
    write_csv(tmp_path / "c.csv", 3_000, seed=6, malformed=6, duplicates=4)
    assert (tmp_path / "c.csv").read_bytes() != (tmp_path / "a.csv").read_bytes()


def test_output_does_not_depend_on_chunk_rows(tmp_path: Path) -> None:
    rows = BLOCK_ROWS + 1_234  # crosses a block boundary
    write_csv(tmp_path / "big.csv", rows, seed=9, malformed=5, duplicates=3)
    write_csv(tmp_path / "small.csv", rows, seed=9, malformed=5, duplicates=3, chunk_rows=7_777)
    assert (tmp_path / "big.csv").read_bytes() == (tmp_path / "small.csv").read_bytes()


@settings(max_examples=12, deadline=None)
@given(start=st.integers(1, 400), n=st.integers(0, 60), seed=st.integers(0, 2**32))
def test_generate_frame_is_addressable_by_id(start: int, n: int, seed: int) -> None:
    whole = generate_frame(start - 1 + n, seed)
    part = generate_frame(n, seed, start_id=start)
    expected = whole.iloc[start - 1:].reset_index(drop=True)
    pd.testing.assert_frame_equal(part, expected)


def test_generate_frame_across_block_boundary() -> None:
    part = generate_frame(10, seed=3, start_id=BLOCK_ROWS - 4)
    assert part["id"].tolist() == list(range(BLOCK_ROWS - 4, BLOCK_ROWS + 6))
    again = generate_frame(5, seed=3, start_id=BLOCK_ROWS + 1)
    pd.testing.assert_frame_equal(part.iloc[5:].reset_index(drop=True), again)


# ----------------------------------------------------------------------------- shape


def test_frame_columns_and_types(frame: pd.DataFrame) -> None:
    plain = generate_frame(50, seed=123)
    assert list(plain.columns) == ["id", "amount", "wording"]
    assert str(plain["id"].dtype) == "int64"
    assert str(plain["amount"].dtype) == "str" and str(plain["wording"].dtype) == "str"
    pd.testing.assert_frame_equal(plain, frame.iloc[:50, :3])
    assert frame["id"].tolist() == list(range(1, len(frame) + 1))
    empty = generate_frame(0, seed=1)
    assert len(empty) == 0 and list(empty.columns) == ["id", "amount", "wording"]


def test_amounts_are_decimals_with_at_most_two_places(frame: pd.DataFrame) -> None:
    assert frame["amount"].str.fullmatch(VALID_AMOUNT.pattern).all()
    values = [Decimal(a) for a in frame["amount"]]
    assert all(v.as_tuple().exponent >= -2 for v in values)
    assert all(v == v.quantize(Decimal("0.01")) for v in values)
    assert not any(a in ("-0", "-0.0", "-0.00") for a in frame["amount"])
    # realistic mix: mostly within +-500, some larger amounts, both signs, both print styles
    inside = sum(-500 <= v <= 500 for v in values) / len(values)
    assert 0.85 < inside < 0.95
    assert max(values) > 1000 and min(values) < -1000
    assert frame["amount"].str.fullmatch(r"-?\d+\.\d0").any()  # trailing zero kept (300.00)
    assert frame["amount"].str.fullmatch(r"-?\d+\.\d").any()  # short form (-327.7)


def test_boundary_values_present(frame: pd.DataFrame) -> None:
    values = {Decimal(a) for a in frame["amount"]}
    assert set(REQUIRED_BOUNDARIES) <= values
    # and also in the first few hundred rows (the bundled sample size)
    assert set(REQUIRED_BOUNDARIES) <= {Decimal(a) for a in frame["amount"].iloc[:300]}


def test_tag_shares(frame: pd.DataFrame) -> None:
    counts = frame["wording"].map(lambda w: len(distinct_tags(w)))
    one, two = (counts == 1).mean(), (counts >= 2).mean()
    assert 0.35 <= one <= 0.45, one
    assert 0.03 <= two <= 0.05, two
    # word mode and substring mode must disagree on a visible share of rows
    substring = frame["wording"].map(lambda w: len(distinct_tags(w, TAG_SUBSTRING)))
    assert (substring != counts).mean() > 0.03
    assert frame["wording"].str.contains(r"\bTAXIS\b").any()
    # various cases of the tags
    for form in ("TAXI", "Taxi", "taxi", "TOTO", "toto"):
        assert frame["wording"].str.contains(rf"\b{form}\b", regex=True).any(), form


def test_truth_columns_match_reference(frame: pd.DataFrame) -> None:
    found = frame["wording"].map(distinct_tags)
    assert (found.map(len) == frame["tag_count"]).all()
    single = found.map(lambda s: next(iter(s)) if len(s) == 1 else None)
    assert single.fillna("").tolist() == frame["tag"].fillna("").tolist()


def test_wordings_are_realistic(frame: pd.DataFrame) -> None:
    w = frame["wording"]
    assert w.str.len().gt(0).all()
    assert not w.str.contains("[\r\n]").any()
    assert w.nunique() > 5_000
    for prefix in ("PRLV SEPA", "CARTE ", "CB ", "VIR SEPA", "VIREMENT EMIS WEB", "CHEQUE ",
                   "RETRAIT DAB", "*COTISATION", "*FRAIS"):
        assert w.str.startswith(prefix).any(), prefix
    assert w.str.fullmatch(r"CHEQUE \d{7}").any()
    assert w.str.fullmatch(r"CARTE \d\d/\d\d/\d\d .+").any()
    assert w.str.contains("[éèêàçÉ]").mean() > 0.05  # accents
    assert (w == w.str.lower()).mean() > 0.02  # lower-case variants
    assert w.str.contains(",").mean() > 0.01 and w.str.contains('"').mean() > 0.003


# ----------------------------------------------------------------------------- files


def test_row_counts_ids_and_header(tmp_path: Path) -> None:
    rows, bad, dups = 2_000, 10, 4
    summary = write_csv(tmp_path / "t.csv", rows, seed=1, malformed=bad, duplicates=dups)
    assert isinstance(summary, GenerationSummary)
    assert (summary.rows, summary.malformed, summary.duplicates, summary.conflicting) == (rows, bad, dups, 1)
    assert summary.path == tmp_path / "t.csv"
    raw = (tmp_path / "t.csv").read_bytes()
    assert raw.startswith(b"id,amount,wording\n") and raw.endswith(b"\n")
    assert raw.count(b"\n") == 1 + summary.lines == 1 + rows + bad + dups + 1
    lines = read_lines(tmp_path / "t.csv")
    valid = [f for f in lines if is_valid(f)]
    invalid = [f for f in lines if not is_valid(f)]
    assert len(invalid) == bad
    assert len(valid) == rows + dups + 1
    first = valid[:rows]
    assert [int(f[0]) for f in first] == list(range(1, rows + 1))  # unique, sequential
    for f in invalid:  # malformed ids never collide with valid ones
        if VALID_ID.fullmatch(f[0]):
            assert int(f[0]) > rows


def test_malformed_kinds(tmp_path: Path) -> None:
    write_csv(tmp_path / "m.csv", 500, seed=2, malformed=10)
    lines = read_lines(tmp_path / "m.csv")
    invalid = [f for f in lines if not is_valid(f)]
    assert len(invalid) == 10
    amounts = {f[1] for f in invalid if len(f) == 3}
    assert {"12,50", "abc", "1e3", "300.001", ""} <= amounts
    assert {"-4", "x1", "0"} <= {f[0] for f in invalid}
    assert sorted({len(f) for f in invalid}) == [2, 3, 4]
    raw = (tmp_path / "m.csv").read_text()
    assert '"12,50"' in raw
    assert raw.count('"') % 2 == 0  # no unclosed quote
    # positions are spread over the file, not all at the end
    positions = [i for i, f in enumerate(lines) if not is_valid(f)]
    assert positions[0] < len(lines) - 10


def test_duplicates(tmp_path: Path) -> None:
    rows = 1_000
    write_csv(tmp_path / "d.csv", rows, seed=4, duplicates=3)
    raw_lines = (tmp_path / "d.csv").read_text().splitlines()[1:]
    original, appended = raw_lines[:rows], raw_lines[rows:]
    assert len(appended) == 4
    assert all(line in original for line in appended[:3])  # byte-identical copies
    parsed = {int(f[0]): f for f in csv.reader(original)}
    conflict = next(csv.reader([appended[3]]))
    earlier = parsed[int(conflict[0])]
    assert conflict[2] == earlier[2] and Decimal(conflict[1]) != Decimal(earlier[1])
    # a single duplicate has no conflicting companion
    one = write_csv(tmp_path / "d1.csv", rows, seed=4, duplicates=1)
    assert one.conflicting == 0 and one.lines == rows + 1


def test_file_round_trips_through_pandas(tmp_path: Path) -> None:
    """Quoting is exactly right: a CSV reader gives back the generated values."""
    write_csv(tmp_path / "r.csv", 3_000, seed=11)
    back = pd.read_csv(tmp_path / "r.csv", dtype={"id": "int64", "amount": "str", "wording": "str"},
                       keep_default_na=False)
    expected = generate_frame(3_000, seed=11)
    pd.testing.assert_frame_equal(back, expected, check_dtype=False)
    raw = (tmp_path / "r.csv").read_text()
    assert "\n1," in raw or raw.startswith("id,amount,wording\n1,")
    # only wordings with a comma or quote are quoted
    for line in raw.splitlines()[1:]:
        if '"' in line:
            assert re.fullmatch(r'\d+,-?[\d.]+,".*"', line), line


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        write_csv(tmp_path / "x.csv", -1, seed=1)
    with pytest.raises(ValueError):
        write_csv(tmp_path / "x.csv", 0, seed=1, duplicates=1)
    with pytest.raises(ValueError):
        generate_frame(5, seed=-1)
    with pytest.raises(ValueError):
        generate_frame(5, seed=1, start_id=0)
    summary = write_csv(tmp_path / "empty.csv", 0, seed=1, malformed=2)
    assert summary.lines == 2 and (tmp_path / "empty.csv").read_bytes().startswith(HEADER)


# ----------------------------------------------------------------------------- CLI and sample


def run_cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "enrich", "generate", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
    )


def test_cli_writes_the_file(tmp_path: Path) -> None:
    out = tmp_path / "sub" / "cli.csv"
    result = run_cli(
        ["--rows", "250", "--out", str(out), "--seed", "8", "--malformed", "2", "--duplicates", "2"]
    )
    assert result.returncode == 0, result.stderr
    assert "250 rows" in result.stderr
    write_csv(tmp_path / "api.csv", 250, seed=8, malformed=2, duplicates=2)
    assert out.read_bytes() == (tmp_path / "api.csv").read_bytes()
    bad = run_cli(["--rows", "-3", "--out", str(out), "--seed", "1"])
    assert bad.returncode != 0


def test_bundled_sample_matches_documented_command(tmp_path: Path) -> None:
    command = documented_command()
    assert command[:2] == ["enrich", "generate"]
    args = command[2:]
    out_index = args.index("--out") + 1
    assert args[out_index] == "data/transactions.csv"
    args[out_index] = str(tmp_path / "regenerated.csv")
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    assert BUNDLED.read_bytes() == (tmp_path / "regenerated.csv").read_bytes()
    lines = read_lines(BUNDLED)
    assert 200 <= len(lines) <= 1_000
    assert sum(not is_valid(f) for f in lines) == int(args[args.index("--malformed") + 1])
