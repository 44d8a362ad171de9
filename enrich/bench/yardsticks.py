"""The two yardsticks our flow is measured against (issue 13), as commands the harness times.

* **The bare graph**: a FlowSpec with our flow's graph (start -> ingest -> tag_transactions,
  annotate_transactions, index_wordings in parallel -> join -> end), empty steps and no import
  beyond metaflow: what Metaflow itself costs for this graph, whatever the data. Its source is
  :data:`BARE_FLOW_SOURCE`, written into the bench workdir (:func:`write_bare_flow`): it is part
  of the harness, not of the product (``flows/`` holds the product's one FlowSpec).
* **The plain script** (:mod:`enrich.bench.plain_script`): the simplest way a user could write
  the job with no guarantees, run by its file path so that no package ``__init__`` is imported
  before it. It gets the valid rows of our input only
  (:func:`enrich.bench.harness.clean_input_file`), since it does no validation.

Every command starts with :data:`sys.executable`, and runs with :func:`environment`.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path

#: The plain script, run as ``python <this path>``.
PLAIN_SCRIPT = Path(__file__).resolve().with_name("plain_script.py")
#: Name of the bare flow's file in the workdir.
BARE_FLOW_FILE = "bare_graph_flow.py"
#: Our flow's graph with empty steps, importing only metaflow.
BARE_FLOW_SOURCE = '''\
"""Our flow's graph with empty steps: the fixed cost of a Metaflow run (written by enrich.bench)."""
from metaflow import FlowSpec, step


class BareGraphFlow(FlowSpec):
    """start -> ingest -> (plan_tagging -> tag_transactions (foreach shard) -> publish_tags,
    annotate_transactions, index_wordings) -> join -> end."""

    @step
    def start(self):
        """Empty."""
        self.next(self.ingest)

    @step
    def ingest(self):
        """Empty."""
        self.next(self.plan_tagging, self.annotate_transactions, self.index_wordings)

    @step
    def plan_tagging(self):
        """One shard, as our flow's default."""
        self.tag_shards = [0]
        self.next(self.tag_transactions, foreach="tag_shards")

    @step
    def tag_transactions(self):
        """Empty."""
        self.next(self.publish_tags)

    @step
    def publish_tags(self, inputs):
        """Empty."""
        self.next(self.join)

    @step
    def annotate_transactions(self):
        """Empty."""
        self.next(self.join)

    @step
    def index_wordings(self):
        """Empty."""
        self.next(self.join)

    @step
    def join(self, inputs):
        """Empty."""
        self.next(self.end)

    @step
    def end(self):
        """Empty."""


if __name__ == "__main__":
    BareGraphFlow()
'''


def environment(base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of every measured command: ``base`` (default ``os.environ``), plus
    ``USERNAME=bench`` when it names no usable user (Metaflow refuses to run without one, or as root)."""
    env = dict(os.environ if base is None else base)
    names = [env.get(name) for name in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER")]
    if not any(name and name != "root" for name in names):
        env["USERNAME"] = "bench"
    return env


def write_bare_flow(workdir: Path) -> Path:
    """Write the bare flow into ``workdir`` (unless already identical) and return its path."""
    path = workdir / BARE_FLOW_FILE
    if not path.exists() or path.read_text(encoding="utf-8") != BARE_FLOW_SOURCE:
        path.write_text(BARE_FLOW_SOURCE, encoding="utf-8")
    return path


def bare_graph_command(flow_file: Path) -> list[str]:
    """Run the bare flow once."""
    return [sys.executable, str(flow_file), "run"]


def plain_script_command(transactions: Path, database: Path, tags: Path | None = None) -> list[str]:
    """Run the plain script once on ``transactions`` into a ``database`` that must not exist."""
    command = [sys.executable, str(PLAIN_SCRIPT), "--transactions", str(transactions),
               "--database", str(database)]
    return command + (["--tags", str(tags)] if tags is not None else [])
