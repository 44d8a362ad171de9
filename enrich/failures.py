"""What went wrong in a run, as the failure check and the alert see it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Failure:
    """One failure of a run: a flow step that raised, or a failed check."""

    step: str  #: e.g. ``"tag_transactions"`` or ``"check:annotations_complete"``
    error_type: str  #: e.g. ``"InputFileError"``
    message: str

    def line(self) -> str:
        """The failure in one line: where, what, and the first line of the message."""
        first = " ".join(self.message.split("\n", 1)[0].split())
        return f"{self.step}: {self.error_type}: {first}"
