"""The project's paths, and the light import of the flow file that they allow."""
from __future__ import annotations

import subprocess
import sys

from enrich import paths


def test_the_bundled_sample_is_the_flows_default_input():
    from flows.enrichment_flow import TransactionEnrichmentFlow

    assert paths.BUNDLED_TRANSACTIONS.is_file()
    parameter = TransactionEnrichmentFlow.transactions
    parameter.init()  # Metaflow resolves a parameter's settings when the command starts
    assert parameter.kwargs["default"] == str(paths.BUNDLED_TRANSACTIONS)


def test_importing_the_flow_file_loads_no_domain_dependency():
    """Metaflow's launcher and card renderer import the flow file but run no step: the heavy
    packages are imported only by the steps that use them."""
    code = ("import sys, flows.enrichment_flow; "
            "print(sorted(m for m in ('pandas', 'pyarrow', 'sqlite_utils', 'twilio', 'adbc_driver_sqlite') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=paths.PROJECT_DIR)
    assert out.stdout.strip() == "[]"
