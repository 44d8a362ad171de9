"""CPU priority of the flow's tasks: the branches off the critical path yield the CPU.

After ``ingest`` three branches start together: tagging (``plan_tagging``, then
``tag_transactions``, then ``publish_tags``: the longest, on the run's critical path),
annotating and full-text indexing (shorter: they only have to be done by ``join``). On a
machine with fewer cores than running tasks, the operating system would share the CPU
evenly between them and so delay the tagging chain, and with it the whole run. The two
shorter branches therefore run at a lower priority (a higher ``nice`` value): they take
whatever CPU the tagging chain leaves, which is all of it on a machine with cores to spare.

Only the scheduling changes: every step still runs, in its own transaction, and ``join``
waits for all three branches.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

#: Steps that yield the CPU to the tagging chain.
YIELDING_STEPS = ("annotate_transactions", "index_wordings")
#: How much lower their priority is (``nice`` increment, 0 to 19).
NICENESS = 10


def yield_cpu(argv: Sequence[str]) -> bool:
    """Lower this process's CPU priority when it is a task of a :data:`YIELDING_STEPS` step
    (Metaflow starts a task as ``<flow file> ... step <name> ...``); whether it did."""
    args = list(argv)
    try:
        at = args.index("step")
    except ValueError:
        return False
    if at + 1 >= len(args) or args[at + 1] not in YIELDING_STEPS or not NICENESS:
        return False
    try:
        os.nice(NICENESS)
    except (OSError, AttributeError):  # not permitted, or no nice() on this system: same priority
        return False
    return True
