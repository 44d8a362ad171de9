"""Data checks: each verdict on crafted inputs, and against real databases."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pyarrow as pa

from enrich import checks
from enrich.store import split_annotation_counts
from enrich.tagging import build_tag_list
from tests.store.test_store import chunk
from tests.support.tamper import tamper


def test_accounting():
    assert checks.check_accounting(10, 7, 2, 1).passed
    failed = checks.check_accounting(10, 7, 1, 1)
    assert not failed.passed and failed.severity == "critical" and "lost" in failed.message


def test_control_total():
    assert checks.check_control_total(12345, 12345).passed
    failed = checks.check_control_total(12345, 12344)
    assert not failed.passed and "123.44 EUR" in failed.message


@pytest.mark.parametrize("read, rejected, passed", [(1000, 10, True), (1000, 11, False), (0, 0, True)])
def test_reject_ratio_threshold(read, rejected, passed):
    assert checks.check_reject_ratio(read, rejected, 0.01).passed is passed


@pytest.mark.parametrize("read, passed", [(100, True), (150, True), (151, False), (49, False)])
def test_volume_against_the_median_of_recent_runs(read, passed):
    result = checks.check_volume(read, [100, 90, 110], 0.5)
    assert result.passed is passed and result.severity == "warning"


def test_volume_without_history_passes():
    assert checks.check_volume(5, [], 0.5).passed


def test_psi_is_zero_for_identical_shares_and_large_for_a_shift():
    same = {"a": 50, "b": 50}
    assert checks.population_stability_index(same, {"a": 5, "b": 5}) == pytest.approx(0.0)
    assert checks.population_stability_index({"a": 90, "b": 10}, same) > 0.2
    assert not checks.check_drift("tagging", {"a": 90, "b": 10}, same, 0.2).passed
    assert checks.check_drift("tagging", {"a": 52, "b": 48}, same, 0.2).passed


@given(st.dictionaries(st.sampled_from("abcd"), st.integers(1, 1000), min_size=1),
       st.dictionaries(st.sampled_from("abcd"), st.integers(1, 1000), min_size=1))
def test_psi_is_never_negative(current, baseline):
    assert checks.population_stability_index(current, baseline) >= 0


def test_amount_outliers_beyond_median_plus_ten_mad():
    amounts = pa.table({"id": list(range(1, 102)), "amount_cents": [100 + i for i in range(100)] + [10**9]})
    found, bounds = checks.amount_outliers(amounts, 10.0)
    assert found.column("transaction_id").to_pylist() == [101]
    assert bounds[0] < 100 and bounds[1] < 10**9
    assert not checks.check_outliers(found.num_rows, found.num_rows, bounds).passed


def test_amount_outliers_undefined_when_mad_is_zero():
    found, bounds = checks.amount_outliers(pa.table({"id": [1, 2], "amount_cents": [5, 5]}), 10.0)
    assert found.num_rows == 0 and bounds is None


def load(store, rows):
    store.load_batch("F/1", [chunk(rows)])


def test_annotation_completeness_catches_missing_wrong_and_unexpected(any_store):
    load(any_store, [(2, 1, 100, "a"), (3, 2, -100, "b"), (4, 3, 0, "c"), (5, 4, 40000, "d")])
    any_store.rows("INSERT INTO annotations VALUES (1, 'SALE', 1), (2, 'EXPENSE', 1), "
                     "(3, 'SALE', 1)")
    found, by_label = split_annotation_counts(any_store.annotation_census())
    assert found == any_store.annotation_discrepancies()
    assert (found["missing"], found["wrong"], found["unexpected"]) == (1, 1, 1)
    result = checks.check_annotations_complete(found)
    assert not result.passed and "1 missing" in result.message
    assert by_label == any_store.value_counts("annotations") == {"SALE": 2, "EXPENSE": 1}  # what the table holds


def test_the_annotation_scan_counts_labels_exactly_or_not_at_all(any_store):
    """The per-label counts gathered by the discrepancy scan are the table's own value counts; an
    annotation that is no rule's label makes them unknown (the report then counts the table)."""
    load(any_store, [(2, 1, 100, "a"), (3, 2, -100, "b"), (4, 3, 40000, "c")])
    any_store.rows("INSERT INTO annotations VALUES (1, 'SALE', 1), (2, 'EXPENSE', 1), (3, 'SALE', 1)")
    before, by_label = split_annotation_counts(any_store.annotation_census())
    assert by_label == {"SALE": 2, "EXPENSE": 1}  # right or wrong, what the table holds
    tamper(any_store, "UPDATE annotations SET annotation = 'GIFT' WHERE transaction_id = 1")
    found, by_label = split_annotation_counts(any_store.annotation_census())
    assert by_label is None and found == {**before, "wrong": before["wrong"] + 1}


def test_annotation_completeness_passes_when_exact(any_store):
    load(any_store, [(2, 1, 30000, "a"), (3, 2, 30001, "b"), (4, 3, -20000, "c"), (5, 4, -20001, "d"), (6, 5, 0, "e")])
    any_store.rows("INSERT INTO annotations VALUES (1, 'SALE', 1), (2, 'LARGE SALE', 1), "
                     "(3, 'SMALL EXPENSE', 1), (4, 'EXPENSE', 1)")
    assert checks.check_annotations_complete(any_store.annotation_discrepancies()).passed


def test_tag_completeness_catches_missing_stale_and_wrong(any_store):
    load(any_store, [(2, 1, 1, "TOTO"), (3, 2, 1, "nothing"), (4, 3, 1, "TATA"), (5, 4, 1, "TUTU")])
    any_store.rows("INSERT INTO tags VALUES (2, 'TOTO', 1), (3, 'TOTO', 1), (4, 'TUTU', 1)")
    tags = build_tag_list(["TATA", "TOTO", "TUTU", "TAXI"])
    found = checks.tag_discrepancies(any_store.iter_stored_tags(chunk_rows=2), tags)
    assert found == {"missing": 1, "stale": 1, "wrong": 1, "checked": 4}
    assert not checks.check_tags_complete(found).passed


def test_referential_integrity(any_store):
    load(any_store, [(2, 1, 1, "TOTO")])
    assert checks.check_referential_integrity(any_store.orphan_counts()).passed
    tamper(any_store, "INSERT INTO tags VALUES (99, 'TOTO', 1)")
    result = checks.check_referential_integrity(any_store.orphan_counts())
    assert not result.passed and "1 tags" in result.message


def test_critical_failures_only_lists_failed_critical_checks():
    results = [checks.check_accounting(1, 0, 0, 0), checks.check_volume(1, [100], 0.5),
               checks.check_control_total(1, 1)]
    assert [r.check_name for r in checks.critical_failures(results)] == ["accounting"]


def test_annotation_completeness_by_id_ranges_adds_up_to_the_whole(any_store):
    load(any_store, [(2, 1, 100, "a"), (3, 2, -100, "b"), (4, 3, 0, "c"), (5, 4, 40000, "d")])
    any_store.rows("INSERT INTO annotations VALUES (1, 'SALE', 1), (2, 'EXPENSE', 1), (3, 'SALE', 1)")
    whole = any_store.annotation_discrepancies()
    low, high = any_store.id_range()
    halves = [any_store.annotation_discrepancies((low, 2)), any_store.annotation_discrepancies((3, high))]
    assert (low, high) == (1, 4) and whole == {k: sum(h[k] for h in halves) for k in whole}
    assert halves[0] == {"missing": 0, "wrong": 1, "unexpected": 0, "checked": 2}
    census = [any_store.annotation_census(ids) for ids in ((low, 2), (3, high), None)]
    assert census[2] == {k: census[0][k] + census[1][k] for k in census[2]}  # the census adds up too
