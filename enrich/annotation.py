"""Annotation rules: the class of a transaction by its exact amount.

Amounts are integer cents, so every comparison is exact:

========================  ===============
amount (EUR)              annotation
========================  ===============
amount > 300              ``LARGE SALE``
0 < amount <= 300         ``SALE``
-200 <= amount < 0        ``SMALL EXPENSE``
amount < -200             ``EXPENSE``
amount == 0               none (counted as zero-amount)
========================  ===============

The table is data (:data:`RULES`) so that the pandas function here and the SQL
used by the completeness check in :mod:`enrich.storage` derive from one source.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the rules are data; pandas and numpy are needed only by the frame functions below
    import numpy as np
    import pandas as pd

LARGE_SALE = "LARGE SALE"
SALE = "SALE"
SMALL_EXPENSE = "SMALL EXPENSE"
EXPENSE = "EXPENSE"
ANNOTATIONS: tuple[str, ...] = (LARGE_SALE, SALE, SMALL_EXPENSE, EXPENSE)


@dataclass(frozen=True)
class AnnotationRule:
    """``label`` applies when ``low_cents <= amount_cents <= high_cents`` (bounds inclusive, None = open)."""

    label: str
    low_cents: int | None
    high_cents: int | None


RULES: tuple[AnnotationRule, ...] = (
    AnnotationRule(LARGE_SALE, 30_001, None),
    AnnotationRule(SALE, 1, 30_000),
    AnnotationRule(SMALL_EXPENSE, -20_000, -1),
    AnnotationRule(EXPENSE, None, -20_001),
)


def annotate(amount_cents: pd.Series) -> pd.Series:
    """Return the annotation of each amount (in cents); ``<NA>`` for a zero amount.

    Vectorized, never mutates its input, keeps the input's index.
    """
    import numpy as np
    import pandas as pd

    cents = amount_cents.to_numpy(dtype=np.int64)
    conditions = [_in_rule(cents, rule) for rule in RULES]
    labels = np.select(conditions, [rule.label for rule in RULES], default="")
    result = pd.Series(labels, index=amount_cents.index, dtype="string", name="annotation")
    return result.mask(cents == 0)


def _in_rule(cents: np.ndarray, rule: AnnotationRule) -> np.ndarray:
    import numpy as np

    mask = np.ones(cents.shape, dtype=bool)
    if rule.low_cents is not None:
        mask &= cents >= rule.low_cents
    if rule.high_cents is not None:
        mask &= cents <= rule.high_cents
    return mask


def annotate_frame(transactions: pd.DataFrame) -> pd.DataFrame:
    """Annotations for a frame with ``id`` and ``amount_cents``.

    Returns ``transaction_id, annotation`` for every non-zero amount (zero amounts
    get no row: they are counted by :func:`count_zero_amounts`).
    """
    import numpy as np
    import pandas as pd

    labels = annotate(transactions["amount_cents"])
    keep = labels.notna().to_numpy()
    return pd.DataFrame(
        {
            "transaction_id": transactions["id"].to_numpy(dtype=np.int64)[keep],
            "annotation": labels.to_numpy()[keep],
        }
    )


def count_zero_amounts(transactions: pd.DataFrame) -> int:
    """How many transactions of the frame have a zero amount (and so no annotation)."""
    return int((transactions["amount_cents"].to_numpy() == 0).sum())
