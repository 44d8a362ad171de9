"""The order of a batch's ids, chunk after chunk, for pairing duplicates without sorting the batch."""
from __future__ import annotations

import numpy as np


class IdOrder:
    """The running maximum of a batch's ids and its "late" ids.

    An id is late when an id at least as large came before it. Only a late id can repeat
    an earlier one, so a file whose ids ascend but for a few late ones (re-sent rows
    appended, say) is paired without sorting it. Up to :data:`LATE_IDS_KEPT` late ids are
    kept (8 bytes each); beyond that the batch counts as unsorted.
    """

    LATE_IDS_KEPT = 1_000_000

    def __init__(self) -> None:
        self.maximum = 0  # ids are positive
        self.late_count = 0
        self._late: list[np.ndarray] = []

    def add(self, ids: np.ndarray) -> np.ndarray:
        """Take the next chunk's ids; return which of them are late."""
        if len(ids) == 0:
            return np.zeros(0, dtype=bool)
        before = np.maximum.accumulate(np.concatenate(([self.maximum], ids[:-1])))
        is_late = ids <= before
        late = ids[is_late]
        self.maximum = max(self.maximum, int(ids.max()))
        self.late_count += len(late)
        if self.nearly_sorted and len(late):
            self._late.append(late)
        elif not self.nearly_sorted:
            self._late.clear()
        return is_late

    @property
    def nearly_sorted(self) -> bool:
        """Ascending but for at most :data:`LATE_IDS_KEPT` late ids."""
        return self.late_count <= self.LATE_IDS_KEPT

    def late_ids(self) -> np.ndarray:
        """The distinct late ids (only while :attr:`nearly_sorted`)."""
        return np.unique(np.concatenate(self._late)) if self._late else np.empty(0, np.int64)
