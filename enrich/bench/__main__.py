"""``python -m enrich.bench``: run the benchmark harness (see :mod:`enrich.bench.harness`)."""
import sys

from enrich.bench.harness import main

sys.exit(main())
