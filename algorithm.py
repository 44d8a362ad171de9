"""Launch the transaction-enrichment flow: ``python algorithm.py run|show|resume|logs|card ...``.

The flow itself lives in ``flows/enrichment_flow.py``; this file only makes sure it
can start anywhere (the project on the import path of every task, a user name
for Metaflow when the shell has none, see flows/__init__.py) and hands over to Metaflow.
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))


def _tags_alias(argv: list[str]) -> list[str]:
    """Accept ``--tags PATH`` for the flow's ``--tag-list`` (Metaflow reserves the name "tags")."""
    return ["--tag-list" if arg == "--tags" else
            "--tag-list=" + arg[len("--tags="):] if arg.startswith("--tags=") else arg for arg in argv]


from flows.enrichment_flow import TransactionEnrichmentFlow  # noqa: E402

if __name__ == "__main__":
    sys.argv[1:] = _tags_alias(sys.argv[1:])
    TransactionEnrichmentFlow()
