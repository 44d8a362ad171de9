"""The settings of one run, resolved and validated once (by the launcher, then by ``start``).

:func:`settings_problems` is the launcher's check before any task starts: it reads nothing
it would have to write and creates nothing, so bad settings fail in well under a second
with one message. :meth:`RunSettings.resolve` repeats the checks in ``start`` (a second
line of defence, e.g. when the flow is started without the launcher) and builds the
settings every later step receives.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from enrich.errors import ConfigurationError, PermanentError
from enrich.ingest.dialect import CsvDialect
from enrich.store.location import DatabaseLocation, parse_location
from enrich.taglists import TagList, load_tag_list

MATCH_MODES = ("word", "substring")


class BadSetting(ConfigurationError, PermanentError):
    """A parameter of the run is invalid; the message names it and what to pass instead."""


@dataclass(frozen=True)
class RunSettings:
    """Everything the stages of one run need, resolved once.

    Pickled into Metaflow's datastore as an artifact: it holds no secret (a password in
    the database URL is dropped when pickled; the launcher hands it to the tasks as
    ``PGPASSWORD``).
    """

    run_id: str  # Metaflow's pathspec, e.g. "TransactionEnrichmentFlow/1795..."
    database: DatabaseLocation
    transactions: str  # a local path (absolute) or an s3:// URL
    tag_list: TagList
    shards: int = 1
    dialect: CsvDialect = CsvDialect()

    def for_run(self, run_id: str) -> "RunSettings":
        """These settings for run ``run_id`` (a resumed run reuses its origin's settings under its own id)."""
        return replace(self, run_id=run_id)

    @classmethod
    def resolve(cls, run_id: str, database: str, transactions: str, tags: str | None, match: str,
                shards: int = 1, dialect: CsvDialect | None = None) -> "RunSettings":
        """Check and resolve the parameters (raises :class:`BadSetting`, ``TagListError``...)."""
        location = parse_location(database)
        check_database_location(location)
        return cls(run_id=run_id, database=location, transactions=resolve_input(transactions),
                   tag_list=load_tag_list(tags or None, check_match(match)), shards=check_shards(shards),
                   dialect=dialect or CsvDialect())


def is_remote(path: str) -> bool:
    """Whether the input is an object-store URL (``s3://``) rather than a local file."""
    return path.startswith("s3://")


def resolve_input(transactions: str) -> str:
    """The input as an absolute path (or the ``s3://`` URL as given); a local file must exist."""
    if is_remote(transactions):
        return transactions
    path = Path(transactions).expanduser().resolve()
    if not path.is_file():
        raise BadSetting(f"--transactions {transactions}: no such file ({path}). Pass the path of the CSV "
                         "to load." if not path.exists() else
                         f"--transactions {transactions}: {path} is not a file. Pass the path of the CSV to load.")
    return str(path)


def check_database_location(location: DatabaseLocation) -> None:
    """A database file must be in an existing directory (it is created there on first run)."""
    if location.is_file:
        path = location.path
        if path.is_dir():
            raise BadSetting(f"--database {path}: is a directory. Pass a file path such as {path / 'database.db'}.")
        if not path.parent.is_dir():
            raise BadSetting(f"--database {path}: directory {path.parent} does not exist. Create it "
                             f"(mkdir -p {path.parent}) or pass another --database.")


def check_match(match: str) -> str:
    if match not in MATCH_MODES:
        raise BadSetting(f"--match {match!r}: use word (whole words, case- and accent-insensitive) or "
                         "substring (the original job's case-sensitive substring test).")
    return match


def check_shards(shards: int) -> int:
    if int(shards) < 1:
        raise BadSetting(f"--shards {shards}: must be at least 1.")
    return int(shards)


def tag_list_from(path: str | None, match: str) -> TagList:
    """The tag list of ``--tags`` (the four default tags when empty), validated."""
    return load_tag_list(path or None, check_match(match))


def dialect_from(encoding: str, delimiter: str, decimal_comma: bool) -> CsvDialect:
    """The CSV dialect of ``--encoding``, ``--delimiter`` and ``--decimal-comma`` (validated: raises
    :class:`enrich.ingest.DialectError`, a permanent configuration error)."""
    return CsvDialect.from_options(encoding or None, delimiter or None, bool(decimal_comma))
