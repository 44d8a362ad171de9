"""Tagging rules: table-driven cases and properties against a tiny independent reference."""
from __future__ import annotations

import re

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from enrich.tagging import (DEFAULT_TAGS, TagListError, build_tag_list, find_tags, load_tag_list,
                            normalize_text, tag_frame)


from tests.support.reference import normalize as ref_normalize
from tests.support.reference import substring_tags as ref_substring_tags
from tests.support.reference import word_tags as ref_word_tags


def expected(found: set[str]) -> tuple[int, str | None]:
    return len(found), (next(iter(found)) if len(found) == 1 else None)


def results(wordings: list[str], tags: list[str], mode: str) -> list[tuple[int, str | None]]:
    frame = find_tags(pd.Series(wordings, dtype=object), build_tag_list(tags, mode))
    return [(int(m), None if pd.isna(t) else t) for m, t in zip(frame["matches"], frame["tag"])]


# ------------------------------------------------------------------ table-driven
WORD_CASES = [
    ("CARTE 06/10/21 69 TOTO", (1, "TOTO")),
    ("TH TAXI TOTO FR", (2, None)),             # ambiguous
    ("TAXIS PARISIENS", (0, None)),             # a tag inside a longer word is not a word
    ("TOTOCORP", (0, None)),
    ("toto", (1, "TOTO")),                      # case-insensitive
    ("Tàxi de nuit", (1, "TAXI")),              # accent-insensitive
    ("*COTISATION TATA", (1, "TATA")),
    ("TUTU remb. internet 05/21", (1, "TUTU")),
    ("tata-toto", (2, None)),
    ("TOTO TOTO toto", (1, "TOTO")),            # one distinct tag, several times
    ("a_toto", (1, "TOTO")),                    # '_' is not alphanumeric
    ("2TOTO", (0, None)),                       # digits are alphanumeric
    ("", (0, None)),
    ("TOTO\x00", (1, "TOTO")),
    ("ｔｏｔｏ", (1, "TOTO")),                   # NFKD folds full-width letters
]


@pytest.mark.parametrize("wording, result", WORD_CASES)
def test_word_mode_cases(wording, result):
    assert results([wording], list(DEFAULT_TAGS), "word") == [result]


SUBSTRING_CASES = [
    ("TAXIS PARISIENS", (1, "TAXI")),
    ("TOTOCORP", (1, "TOTO")),
    ("toto", (0, None)),                        # case-sensitive, like the original job
    ("TH TAXI TOTO FR", (2, None)),
]


@pytest.mark.parametrize("wording, result", SUBSTRING_CASES)
def test_substring_mode_cases(wording, result):
    assert results([wording], list(DEFAULT_TAGS), "substring") == [result]


def test_phrase_tags_need_the_exact_phrase_bounded_by_non_alphanumerics():
    tags = ["carte bleue", "TOTO"]
    wordings = ["CARTE BLEUE 12/03", "carte  bleue", "xcarte bleue", "carte bleue toto", "carte-bleue"]
    assert results(wordings, tags, "word") == [(1, "carte bleue"), (0, None), (0, None), (2, None),
                                               (0, None)]


def test_overlapping_phrases_both_count():
    assert results(["a b c"], ["a b", "b c"], "word") == [(2, None)]


def test_stored_tag_is_the_name_as_written_in_the_list():
    assert results(["cafe creme"], ["Café"], "word") == [(1, "Café")]


def test_tag_frame_returns_only_tagged_rows_and_counts():
    frame = pd.DataFrame({"id": [1, 2, 3, 4], "wording": ["TOTO", "nothing", "TATA TOTO", "taxi"]})
    before = frame.copy()
    tags, counts = tag_frame(frame, build_tag_list(DEFAULT_TAGS))
    assert tags.to_dict("records") == [{"transaction_id": 1, "tag": "TOTO"},
                                       {"transaction_id": 4, "tag": "TAXI"}]
    assert counts == {"tagged": 2, "untagged": 1, "ambiguous": 1}
    pd.testing.assert_frame_equal(frame, before)  # input untouched


def test_ascii_and_unicode_rows_keep_their_positions():
    wordings = ["TOTO", "é TATA", "nothing", "ü TUTU", "TAXI"]
    assert results(wordings, list(DEFAULT_TAGS), "word") == [
        (1, "TOTO"), (1, "TATA"), (0, None), (1, "TUTU"), (1, "TAXI")]


def test_large_tag_list_matches_the_reference():
    tags = [f"TAG{i}" for i in range(3000)] + [f"multi word {i}" for i in range(500)] + list(DEFAULT_TAGS)
    wordings = ["TAG17 x", "multi word 3", "multi word 3 TAG4", "multi  word 3", "TOTO TAG2999",
                "tag10000", "MULTI-WORD 4", "é tag5"]
    got = results(wordings, tags, "word")
    assert got == [expected(ref_word_tags(w, tags)) for w in wordings]


# ------------------------------------------------------------------ properties
FRAGMENTS = ["TATA", "toto", "Tûtu", "TAXI", "taxis", "x", "_", "-", " ", "  ", "é", "ß", "İ", "ǅ",
             "\x00", "1", "café", "CAFE", "ﬁ", "Straße", "/", "Ⅻ", "½", "ʼn"]
wordings_strategy = st.one_of(
    st.lists(st.sampled_from(FRAGMENTS), max_size=8).map("".join),
    st.text(max_size=30),
)
tag_candidates = st.one_of(st.sampled_from(["TATA", "TOTO", "TUTU", "TAXI", "café", "STRASSE", "a b",
                                            "x-1", "ǅ", "fi", "12"]),
                           st.text(min_size=1, max_size=6))


def valid_tags(mode: str):
    def ok(tags: list[str]) -> bool:
        try:
            build_tag_list(tags, mode)
        except TagListError:
            return False
        return True
    return st.lists(tag_candidates, min_size=1, max_size=5, unique=True).filter(ok)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(wordings=st.lists(wordings_strategy, min_size=1, max_size=20), tags=valid_tags("word"))
def test_word_mode_equals_reference(wordings, tags):
    assert results(wordings, tags, "word") == [expected(ref_word_tags(w, tags)) for w in wordings]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.filter_too_much])
@given(wordings=st.lists(wordings_strategy, min_size=1, max_size=20), tags=valid_tags("substring"))
def test_substring_mode_equals_the_original_algorithm(wordings, tags):
    assert results(wordings, tags, "substring") == [expected(ref_substring_tags(w, tags))
                                                    for w in wordings]


@given(st.text(max_size=40))
def test_normalize_text_matches_reference(text):
    assert normalize_text(text) == ref_normalize(text)


# ------------------------------------------------------------------ tag lists
def test_default_tags():
    assert load_tag_list(None).names == ("TATA", "TOTO", "TUTU", "TAXI")


def test_tag_file_with_comments_blank_lines_and_bom(tmp_path):
    path = tmp_path / "tags.txt"
    path.write_text("\ufeff# my tags\nTATA\n\n  carte bleue  \n", encoding="utf-8")
    assert load_tag_list(path).names == ("TATA", "carte bleue")


@pytest.mark.parametrize("content, message", [
    ("TOTO\ntoto\n", "line 2: tag 'toto' duplicates 'TOTO' (line 1)"),
    ("TOTO\nTÔTO\n", "duplicates"),
    ("-TOTO\n", "must start and end with a letter or digit"),
    ("# only comments\n", "no tags found"),
    ("TO\x07TO\n", "control character"),
])
def test_bad_tag_files_are_explained(tmp_path, content, message):
    path = tmp_path / "tags.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TagListError, match=re.escape(message)) as error:
        load_tag_list(path)
    assert str(path) in str(error.value)


def test_missing_tag_file(tmp_path):
    with pytest.raises(TagListError, match="tag list file not found"):
        load_tag_list(tmp_path / "absent.txt")


def test_substring_mode_accepts_tags_with_punctuation_but_not_duplicates():
    assert build_tag_list(["-X-", "TOTO"], "substring").names == ("-X-", "TOTO")
    with pytest.raises(TagListError):
        build_tag_list(["TOTO", "TOTO"], "substring")


def test_unknown_mode():
    with pytest.raises(TagListError, match="unknown match mode"):
        build_tag_list(["TOTO"], "fuzzy")


def test_fingerprint_changes_with_tags_and_mode():
    base = build_tag_list(DEFAULT_TAGS).fingerprint
    assert base == build_tag_list(DEFAULT_TAGS).fingerprint
    assert base != build_tag_list(DEFAULT_TAGS, "substring").fingerprint
    assert base != build_tag_list(("TATA", "TOTO")).fingerprint


def test_arrow_backed_wordings_in_several_chunks_are_tagged_like_plain_ones():
    import pyarrow as pa

    chunked = pa.chunked_array([["CARTE TOTO", "rien"], ["TATA et TUTU", "VIR TAXI"]], type=pa.large_string())
    arrow_backed = pd.Series(pd.arrays.ArrowExtensionArray(chunked))
    plain = pd.Series(["CARTE TOTO", "rien", "TATA et TUTU", "VIR TAXI"], dtype=object)
    tags = build_tag_list(["TATA", "TOTO", "TUTU", "TAXI"])
    assert find_tags(arrow_backed, tags).equals(find_tags(plain, tags))
