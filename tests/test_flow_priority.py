"""The two branches off the critical path (annotating, indexing) yield the CPU to the tagging chain."""
from __future__ import annotations

import subprocess
import sys

import pytest

from tests.flow_support import ROOT


@pytest.mark.parametrize(("argv", "yields"), [
    (["flows/enrichment_flow.py", "--quiet", "step", "annotate_transactions", "--run-id", "1"], True),
    (["flows/enrichment_flow.py", "step", "index_wordings"], True),
    (["flows/enrichment_flow.py", "step", "tag_transactions"], False),
    (["flows/enrichment_flow.py", "run"], False),
    (["flows/enrichment_flow.py", "step"], False),
])
def test_only_the_short_branches_lower_their_priority(argv, yields):
    code = ("import os, sys; from flows.priority import NICENESS, yield_cpu; before = os.nice(0); "
            f"did = yield_cpu({argv!r}); print(did, os.nice(0) - before == (NICENESS if did else 0))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.split() == [str(yields), "True"]
