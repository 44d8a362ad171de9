"""Launch the transaction-enrichment flow: ``python algorithm.py run|show|resume|logs|card ...``.

The flow itself lives in ``flows/enrichment_flow.py``; this file only makes sure it
can start anywhere (the project on the import path of every task, a user name
for Metaflow when the shell has none) and hands over to Metaflow.
"""
import getpass
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
if not any(os.environ.get(name) for name in ("METAFLOW_USER", "USER", "USERNAME", "LOGNAME")):
    try:
        os.environ["USER"] = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid
        os.environ["USER"] = "enrich"

from flows.enrichment_flow import TransactionEnrichmentFlow  # noqa: E402

if __name__ == "__main__":
    TransactionEnrichmentFlow()
