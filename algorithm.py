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


def _ensure_user() -> None:
    """Metaflow stops with "Unknown user" when no (non-root) user name is set: provide one."""
    names = [os.environ.get(v) for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER", "LOGNAME")]
    if any(name and name != "root" for name in names):
        return
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid
        name = ""
    os.environ["METAFLOW_USER"] = name if name and name != "root" else "enrich"


_ensure_user()


def _tags_alias(argv: list[str]) -> list[str]:
    """Accept ``--tags PATH`` for the flow's ``--tag-list`` (Metaflow reserves the name "tags")."""
    return ["--tag-list" if arg == "--tags" else
            "--tag-list=" + arg[len("--tags="):] if arg.startswith("--tags=") else arg for arg in argv]


sys.argv[1:] = _tags_alias(sys.argv[1:])
from flows.enrichment_flow import TransactionEnrichmentFlow  # noqa: E402

if __name__ == "__main__":
    TransactionEnrichmentFlow()
