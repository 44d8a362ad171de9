"""``python -m enrich``: the operator CLI (see :mod:`enrich.cli`)."""
import sys

from enrich.cli import main

sys.exit(main())
