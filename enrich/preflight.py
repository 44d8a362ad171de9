"""The launcher's checks before any task starts: every setting a run needs, checked in well under
a second, touching nothing (the database is not created, no file is written).

:func:`problems` returns one message per problem found; the launcher prints them and exits 2.
``start`` repeats the same checks (:meth:`enrich.settings.RunSettings.resolve`) as a second line
of defence, for a flow started without the launcher.
"""
from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass

from enrich.errors import EnrichError
from enrich.paths import BUNDLED_TRANSACTIONS, PROJECT_DIR


@dataclass(frozen=True)
class RunOptions:
    """The options of ``algorithm.py run`` that the checks look at."""

    transactions: str
    database: str
    tag_list: str
    match: str
    simulate_failure: str
    shards: int
    encoding: str = ""
    delimiter: str = ""
    decimal_comma: bool = False


def parse_run_options(argv: Sequence[str]) -> RunOptions:
    """The run options in ``argv`` (Metaflow's own options and unknown ones are left alone)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--transactions", default=str(BUNDLED_TRANSACTIONS))
    parser.add_argument("--database", default="database.db")
    parser.add_argument("--tag-list", default="")
    parser.add_argument("--match", default="word")
    parser.add_argument("--simulate-failure", default="")
    parser.add_argument("--shards", default="1")
    parser.add_argument("--encoding", default="")
    parser.add_argument("--delimiter", default="")
    parser.add_argument("--decimal-comma", default="false")
    known, _ = parser.parse_known_args(list(argv))
    try:
        shards = int(known.shards)
    except ValueError:
        shards = 0
    return RunOptions(known.transactions, known.database, known.tag_list, known.match, known.simulate_failure,
                      shards, known.encoding, known.delimiter, known.decimal_comma.lower() in ("true", "1", "yes"))


def problems(options: RunOptions, steps: Sequence[str]) -> list[str]:
    """Every problem with ``options``, one message each ([] when the run may start)."""
    from enrich import settings
    from enrich.store import parse_location

    checks = [
        lambda: settings.resolve_input(options.transactions),
        lambda: settings.check_database_location(parse_location(options.database)),
        lambda: settings.tag_list_from(options.tag_list, options.match),
        lambda: settings.check_shards(options.shards),
        lambda: settings.dialect_from(options.encoding, options.delimiter, options.decimal_comma),
        lambda: _check_simulated(options.simulate_failure, steps),
        _check_twilio,
    ]
    found = []
    for check in checks:
        try:
            check()
        except EnrichError as exc:
            found.append(str(exc))
    return found


def _check_simulated(choice: str, steps: Sequence[str]) -> None:
    from enrich.settings import BadSetting

    if choice not in ("", "random", *steps):
        raise BadSetting(f"--simulate-failure {choice!r}: use one of {', '.join(steps)} or random")


def _check_twilio() -> None:
    """The Twilio configuration, if any, can be read (a run that fails must be able to alert)."""
    from enrich.alerts import load_twilio_config

    load_twilio_config(PROJECT_DIR)
