"""Where the database is: ``--database`` as a file path (SQLite) or a ``postgresql://`` URL.

A URL may carry a password (``postgresql://user:secret@host/db``). It is needed to
connect, and nothing else may show it: :attr:`DatabaseLocation.display` is the form for
messages, logs, cards, metrics and the ledger. ``PGPASSWORD`` and ``~/.pgpass`` work as
for any libpq program when the URL has no password.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit, urlunsplit

from enrich.secrets import redact_url, register_secret
from enrich.store.errors import BadDatabaseLocation

SQLITE = "sqlite"
POSTGRESQL = "postgresql"
_POSTGRES_SCHEMES = ("postgresql", "postgres")


@dataclass(frozen=True)
class DatabaseLocation:
    """A parsed ``--database``: the backend, and the path or URL to connect to."""

    backend: str  # SQLITE or POSTGRESQL
    target: str = field(repr=False)  # absolute file path, or the full URL (password included)

    @property
    def path(self) -> Path:
        """The database file (SQLite only)."""
        if self.backend != SQLITE:
            raise BadDatabaseLocation(f"{self.display} is not a file")
        return Path(self.target)

    @property
    def is_file(self) -> bool:
        return self.backend == SQLITE

    @property
    def display(self) -> str:
        """The location for people: the file path, or the URL with its password replaced by ``***``."""
        return self.target if self.backend == SQLITE else redact_url(self.target)

    @property
    def password(self) -> str | None:
        """The password written in the URL, if any, decoded (to hand to libpq as ``PGPASSWORD`` and
        register for log redaction)."""
        if self.backend == SQLITE:
            return None
        password = urlsplit(self.target).password
        return None if password is None else unquote(password)

    def __str__(self) -> str:
        return self.display

    def without_password(self) -> "DatabaseLocation":
        """The same location with no password in its URL (libpq then finds it in ``PGPASSWORD`` or
        ``~/.pgpass``)."""
        if self.password is None:
            return self
        parts = urlsplit(self.target)
        user = f"{parts.username}@" if parts.username else ""
        return DatabaseLocation(self.backend, urlunsplit(parts._replace(netloc=user + parts.netloc.rsplit("@", 1)[-1])))

    def __reduce__(self) -> tuple[object, ...]:
        # pickled (as part of a Metaflow artifact, say) without its password
        plain = self.without_password()
        return (DatabaseLocation, (plain.backend, plain.target))


def parse_location(database: str | os.PathLike[str]) -> DatabaseLocation:
    """``--database`` as a :class:`DatabaseLocation`: a ``postgresql://`` URL, else a file path.

    Raises :class:`BadDatabaseLocation` for another URL scheme or a URL without a database name.
    """
    text = os.fspath(database)
    if not text.strip():
        raise BadDatabaseLocation("--database is empty: pass a file path (SQLite) or a "
                                  "postgresql://user@host:port/dbname URL")
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in _POSTGRES_SCHEMES:
        parts = urlsplit(text)
        if not parts.path.strip("/"):
            raise BadDatabaseLocation(f"{redact_url(text)}: the URL names no database: "
                                      "use postgresql://user[:password]@host[:port]/dbname")
        location = DatabaseLocation(POSTGRESQL, text)
        if location.password:
            register_secret(location.password)  # masked in every log line from now on
        return location
    if scheme:
        raise BadDatabaseLocation(f"{redact_url(text)}: unknown database URL scheme {scheme!r}: pass a file "
                                  "path (SQLite) or a postgresql://user@host:port/dbname URL")
    return DatabaseLocation(SQLITE, str(Path(text).expanduser().resolve()))

