"""Foreign files read with the wrong options: the error or the result says what the file
looks like and which option reads it, once."""
from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrich.ingest import (
    REASON_INVALID_UTF8,
    CsvDialect,
    InputFileError,
    MalformedHeaderError,
    MissingColumnError,
    ParsedChunk,
    read_chunks,
)

FRENCH = "id;amount;wording\n1;-12,50;CB CARREFOUR\n2;300,00;VIR\n"


def write(tmp_path: Path, content: bytes, name: str = "bank.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def missing_columns_message(path: Path, dialect: CsvDialect | None = None) -> str:
    with pytest.raises(MissingColumnError) as caught:
        read_chunks(path, dialect)
    message = str(caught.value)
    assert message.startswith(f"{path}: header has no ")  # the usual message comes first
    return message


def all_hints(chunks: list[ParsedChunk]) -> list[str]:
    return [hint for chunk in chunks for hint in chunk.hints]


# --------------------------------------------------------------------------- the header


def test_a_semicolon_header_with_decimal_commas(tmp_path: Path) -> None:
    path = write(tmp_path, FRENCH.encode())
    message = missing_columns_message(path)
    assert "(found: id;amount;wording)" in message
    assert message.endswith(
        "The header looks ';'-separated; amounts like '-12,50' have a decimal comma: "
        "pass --delimiter ';' --decimal-comma."
    )


def test_a_semicolon_header_with_decimal_points(tmp_path: Path) -> None:
    message = missing_columns_message(write(tmp_path, b"id;amount;wording\n1;-12.50;x\n"))
    assert message.endswith("The header looks ';'-separated: pass --delimiter ';'.")
    assert "--decimal-comma" not in message


def test_a_tab_header(tmp_path: Path) -> None:
    message = missing_columns_message(write(tmp_path, b"ID\tAmount\tWording\tNote\n1\t1,5\tx\t\n"))
    assert "The header looks tab-separated" in message
    assert "pass --delimiter '\\t' --decimal-comma." in message


def test_a_semicolon_export_in_windows_1252(tmp_path: Path) -> None:
    content = "id;amount;wording\n1;-12,50;CB ÉPICERIE\n".encode("cp1252")
    message = missing_columns_message(write(tmp_path, content))
    assert message.endswith("pass --delimiter ';' --decimal-comma --encoding cp1252.")
    assert "the rows read as Windows-1252" in message


def test_a_comma_file_read_with_a_semicolon(tmp_path: Path) -> None:
    message = missing_columns_message(write(tmp_path, b"id,amount,wording\n1,2.5,x\n"),
                                      CsvDialect(delimiter=";"))
    assert message.endswith("The header looks ','-separated: pass --delimiter ','.")


def test_another_header_gets_no_invented_advice(tmp_path: Path) -> None:
    message = missing_columns_message(write(tmp_path, b"id,montant,wording\n1,2,3\n"))
    assert message.endswith("The file needs the columns id, amount, wording in any order.")


def test_a_windows_1252_header(tmp_path: Path) -> None:
    path = write(tmp_path, "id,amount,wording,libellé\n1,1,x,y\n".encode("cp1252"))
    with pytest.raises(MalformedHeaderError) as caught:
        read_chunks(path)
    message = str(caught.value)
    assert "is not valid UTF-8" in message
    assert "It reads as Windows-1252 ('id,amount,wording,libellé')" in message
    assert "pass --encoding cp1252" in message


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le"])
def test_a_utf16_file(tmp_path: Path, encoding: str) -> None:
    path = write(tmp_path, "id,amount,wording\r\n1,1,x\r\n".encode(encoding))
    with pytest.raises((MalformedHeaderError, MissingColumnError)) as caught:
        read_chunks(path)
    assert f"The file looks UTF-16 encoded: pass --encoding {encoding}." in str(caught.value)


# --------------------------------------------------------------------------- the rows, once


def latin1_file(rows: int) -> bytes:
    lines = [f"{i},{i}.50,{'Café' if i % 2 else 'Tabac'} n°{i}\n" for i in range(1, rows + 1)]
    return ("id,amount,wording\n" + "".join(lines)).encode("latin-1")


def test_windows_1252_rows_get_one_hint_for_the_file(tmp_path: Path, caplog) -> None:
    path = write(tmp_path, latin1_file(2000))
    with caplog.at_level(logging.WARNING, logger="enrich.ingest"):
        chunks = list(read_chunks(path, chunk_bytes=2000))
    assert len(chunks) > 10
    rejected = [reason for chunk in chunks for reason in chunk.rejected["reason"]]
    assert len(rejected) == 2000  # "n°": every row is Latin-1
    assert all(reason.startswith(f"{REASON_INVALID_UTF8}: byte 0x") and len(reason) < 60
               for reason in rejected)  # rows keep short reasons
    assert all_hints(chunks) == [
        f"{path}: rows are not valid UTF-8 but read as Windows-1252 (line 2: '1,1.50,Café n°1'): "
        "if the file is Windows-1252 or Latin-1, pass --encoding cp1252."
    ]
    assert chunks[0].hints and not any(chunk.hints for chunk in chunks[1:])
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING] == all_hints(chunks)


def test_the_same_file_with_its_encoding_loads_without_hints(tmp_path: Path) -> None:
    chunks = list(read_chunks(write(tmp_path, latin1_file(50)), CsvDialect("latin-1")))
    assert sum(len(c.valid) for c in chunks) == 50 and not all_hints(chunks)
    assert chunks[0].valid["wording"][0] == "Café n°1"


def test_rows_that_are_not_text_in_any_usual_encoding(tmp_path: Path) -> None:
    chunks = list(read_chunks(write(tmp_path, b"id,amount,wording\n1,1,ok\n2,2,\x81\x8d\n")))
    assert all_hints(chunks) == [
        f"{tmp_path / 'bank.csv'}: rows are not valid UTF-8 (first on line 3): if the file "
        "is in another encoding, pass it with --encoding (e.g. --encoding cp1252)."
    ]


def test_bytes_not_valid_in_the_given_encoding_get_one_hint(tmp_path: Path) -> None:
    content = b"id;amount;wording\n" + b"".join(b"%d;1;a\x81\n" % i for i in range(1, 300))
    chunks = list(read_chunks(write(tmp_path, content), CsvDialect("cp1252", ";"), chunk_bytes=100))
    assert len(all_hints(chunks)) == 1
    assert "rows hold bytes that are not valid cp1252 (first on line 2)" in all_hints(chunks)[0]


def test_decimal_commas_without_the_option_get_one_hint(tmp_path: Path) -> None:
    content = ("id;amount;wording\n1;12;ok\n" + "".join(f"{i};{i},50;x\n" for i in range(2, 500))).encode()
    chunks = list(read_chunks(write(tmp_path, content), CsvDialect(delimiter=";"), chunk_bytes=200))
    assert all_hints(chunks) == [
        f"{tmp_path / 'bank.csv'}: amounts like '2,50' (line 3) have a decimal comma: pass --decimal-comma."
    ]


def test_decimal_points_with_the_comma_option_get_one_hint(tmp_path: Path) -> None:
    content = b"id;amount;wording\n1;12,5;ok\n2;-3.25;x\n"
    chunks = list(read_chunks(write(tmp_path, content), CsvDialect(delimiter=";", decimal_comma=True)))
    assert all_hints(chunks) == [
        f"{tmp_path / 'bank.csv'}: amounts like '-3.25' (line 3) have a decimal point: drop --decimal-comma."
    ]


def test_a_quoted_decimal_comma_in_a_comma_file_is_just_a_bad_amount(tmp_path: Path) -> None:
    """With ',' separating fields there is no decimal comma option to suggest."""
    chunks = list(read_chunks(write(tmp_path, b'id,amount,wording\n1,"12,50",x\n2,1,y\n')))
    assert len(chunks[0].rejected) == 1 and not all_hints(chunks)


def test_a_good_file_gets_no_hints(tmp_path: Path) -> None:
    chunks = list(read_chunks(write(tmp_path, b"id,amount,wording\n1,1,x\n2,y,z\n")))
    assert len(chunks[0].rejected) == 1 and not all_hints(chunks)


DIALECTS = [CsvDialect(), CsvDialect(delimiter=";"), CsvDialect("cp1252", ";", True),
            CsvDialect("utf-16", "\t")]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(content=st.binary(max_size=300),
       header=st.sampled_from([b"", b"id;amount;wording\n", b"id\tamount\twording\n", b"\xff\xfei\x00",
                               b"id,amount,wording\n", b"id;montant\xe9;x\n", b'"id;amount\n']),
       dialect=st.sampled_from(DIALECTS))
def test_guessing_never_fails_on_random_bytes(tmp_path: Path, content: bytes, header: bytes,
                                              dialect: CsvDialect) -> None:
    """Whatever the bytes, the only errors are the documented file errors, and hints are sentences."""
    path = write(tmp_path, header + content)
    try:
        chunks = list(read_chunks(path, dialect, chunk_bytes=64))
    except InputFileError as error:
        assert str(error).startswith(str(path))
        return
    for hint in all_hints(chunks):
        assert hint.startswith(f"{path}: ") and hint.endswith(".")
