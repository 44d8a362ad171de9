"""Annotation rules: exact boundaries, and a property against a Decimal reference."""
from __future__ import annotations

from decimal import Decimal

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.support.reference import annotation_of as reference
from enrich.annotation import (EXPENSE, LARGE_SALE, SALE, SMALL_EXPENSE, annotate, annotate_frame,
                               count_zero_amounts)


BOUNDARIES = [
    ("300.01", LARGE_SALE), ("300.00", SALE), ("299.99", SALE), ("0.01", SALE), ("0.00", None),
    ("-0.01", SMALL_EXPENSE), ("-200.00", SMALL_EXPENSE), ("-200.01", EXPENSE),
    ("1000000.00", LARGE_SALE), ("-99999999.99", EXPENSE),
]


@pytest.mark.parametrize("amount, label", BOUNDARIES)
def test_boundaries_exactly_as_written(amount, label):
    cents = int(Decimal(amount) * 100)
    result = annotate(pd.Series([cents]))
    assert (None if pd.isna(result.iloc[0]) else result.iloc[0]) == label == reference(Decimal(amount))


@given(st.lists(st.integers(min_value=-10**15, max_value=10**15), max_size=50))
def test_annotate_equals_reference(cents):
    result = annotate(pd.Series(cents, dtype="int64"))
    assert [None if pd.isna(v) else v for v in result] == [reference(Decimal(c) / 100) for c in cents]


def test_annotate_frame_skips_zero_amounts_and_keeps_input():
    frame = pd.DataFrame({"id": [1, 2, 3], "amount_cents": [30001, 0, -20000]})
    before = frame.copy()
    result = annotate_frame(frame)
    assert result.to_dict("records") == [{"transaction_id": 1, "annotation": LARGE_SALE},
                                         {"transaction_id": 3, "annotation": SMALL_EXPENSE}]
    assert count_zero_amounts(frame) == 1
    pd.testing.assert_frame_equal(frame, before)


def test_annotate_keeps_the_index():
    series = pd.Series([100, -100], index=[10, 20])
    assert list(annotate(series).index) == [10, 20]
