"""``python -m enrich``: the operator CLI, the same as the ``enrich`` command (see :mod:`enrich.cli`)."""
from enrich.cli import cli

if __name__ == "__main__":
    cli()
