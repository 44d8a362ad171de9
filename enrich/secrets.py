"""Keeping secrets (the Twilio auth token, database passwords) out of logs and config files.

* :func:`redact` masks known secret values in a string, and the password of any
  URL in it (``postgresql://user:***@host/db``).
* :func:`redact_url` masks the password of one URL, keeping everything else.
* :func:`register_secret` / :func:`register_url` make a secret (or a URL's
  password) known, so every later log record and every :func:`redact` call
  without an explicit list masks it.
* :class:`RedactingFilter` / :func:`install_redaction` rewrite every log record
  that reaches the root logger's handlers so a secret never gets written out.
* :func:`warn_if_world_readable` flags config files holding secrets that other
  users can read.
"""
from __future__ import annotations

import logging
import re
import stat
import threading
import weakref
from pathlib import Path
from typing import Iterable
from urllib.parse import unquote

logger = logging.getLogger(__name__)

#: What every occurrence of a secret is replaced with.
REDACTED = "***"

_install_lock = threading.Lock()
_installed_filter: RedactingFilter | None = None
# Every filterer the shared filter was attached to, so uninstall can find them
# even after a handler left the root logger.
_attached_to: weakref.WeakSet[logging.Filterer] = weakref.WeakSet()


def _normalise(secrets: Iterable[str]) -> tuple[str, ...]:
    """Distinct non-empty secrets, longest first.

    Longest first so that a secret containing another one (say a Basic auth
    value built from the token) is masked whole rather than partially.
    """
    unique = {s for s in secrets if isinstance(s, str) and s}
    return tuple(sorted(unique, key=lambda s: (-len(s), s)))


# A URL inside free text: a scheme, "://", then up to the next whitespace.
_URL_IN_TEXT = re.compile(r"(?<![A-Za-z0-9+.\-])[A-Za-z][A-Za-z0-9+.\-]*://\S+")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://")
# A query parameter carrying a password (libpq accepts ``?password=...``, ``sslpassword``).
_PASSWORD_PARAM = re.compile(r"([?&][A-Za-z_]*password=)([^&#]*)", re.IGNORECASE)


def _password_span(url: str) -> tuple[int, int] | None:
    """Start and end index of the password in ``url``'s user info, or None if it has none.

    A well-formed URL percent-encodes ``@ : / ? #`` in its password, which then
    ends at the last ``@`` of the authority (up to the first ``/ ? #``).
    Hand-written URLs often leave them unencoded, so the rule errs towards
    hiding too much, never too little:

    * an ``@`` after the authority but before the query means the password
      holds a raw ``/`` and runs to the last such ``@``
      (``postgresql://u:pa/ss@h/db`` masks ``pa/ss``);
    * an authority ``user:xyz`` whose ``xyz`` is no port, followed anywhere by
      an ``@``, means a raw ``?`` or ``#``: the password runs to the last ``@``.

    The price: the rare URL with an ``@`` in its database name
    (``postgresql://u:pw@h/d@b``) is masked up to that ``@``.
    """
    scheme = _SCHEME.match(url)
    if scheme is None:
        return None
    start = scheme.end()
    rest = url[start:]
    authority_end = next((i for i, ch in enumerate(rest) if ch in "/?#"), len(rest))
    head_end = next((i for i, ch in enumerate(rest) if ch in "?#"), len(rest))
    authority = rest[:authority_end]
    if "@" in rest[authority_end:head_end] and (":" in authority or "@" in authority):
        at = rest.rindex("@", 0, head_end)  # unencoded "/" in the password
    elif "@" in authority:
        at = authority.rindex("@")
    elif ":" in authority and not authority.partition(":")[2].isdigit() and "@" in rest:
        at = rest.rindex("@")  # unencoded "?" or "#" in the password
    else:
        return None
    user, colon, password = rest[:at].partition(":")
    if not colon or not password:
        return None
    return start + len(user) + 1, start + at


def url_password(url: str) -> str | None:
    """The password in ``url``'s user info, percent-decoded; None when there is none."""
    span = _password_span(url)
    return unquote(url[span[0]:span[1]]) if span else None


def redact_url(url: str) -> str:
    """``url`` with its password replaced by ``***``; everything else is kept as written.

    ``postgresql://user:s%40cret@db:5432/enrich`` becomes
    ``postgresql://user:***@db:5432/enrich``. Percent-encoded passwords are
    masked whole (the encoded form is what the URL holds), unencoded ``@ : /``
    in a password are handled too (see :func:`_password_span`), and so is a
    ``password=`` (or ``sslpassword=``) query parameter. A URL without a
    password, or a string that is not a URL, is returned unchanged.
    """
    span = _password_span(url)
    if span:
        url = url[:span[0]] + REDACTED + url[span[1]:]
    if "?" in url and "password=" in url.lower():
        query_start = url.index("?")
        url = url[:query_start] + _PASSWORD_PARAM.sub(
            lambda m: m.group(1) + (REDACTED if m.group(2) else ""), url[query_start:])
    return url


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it masked (see :func:`redact_url`)."""
    if "://" not in text:
        return text
    return _URL_IN_TEXT.sub(lambda match: redact_url(match.group(0)), text)


def redact(text: str, secrets: Iterable[str] | None = None) -> str:
    """Return ``text`` with every secret replaced by ``***``.

    Masks each non-empty string of ``secrets`` (by default, every secret
    registered with :func:`register_secret`, :func:`register_url` or
    :func:`install_redaction`) and the password of every URL in ``text``.
    Empty strings (and non-string values) among ``secrets`` are ignored, so an
    unset token never turns every position of the text into ``***``.
    """
    text = redact_urls(text)
    for secret in _normalise(registered_secrets() if secrets is None else secrets):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Logging filter that masks secrets in a record before any handler formats it.

    The record's message is formatted with its args first (so a secret passed
    as an argument is caught too), redacted, stored back in ``record.msg`` and
    ``record.args`` is cleared. Exception tracebacks and stack info attached to
    the record are redacted as well. Besides the known secrets, the password of
    any URL in the record is masked (see :func:`redact_url`), registered or not.
    Records are never dropped.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        """Create a filter masking ``secrets`` (empty values are ignored)."""
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: tuple[str, ...] = _normalise(secrets)

    @property
    def secrets(self) -> tuple[str, ...]:
        """The secrets currently masked, longest first."""
        return self._secrets

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Start masking ``secrets`` in addition to the ones already known."""
        with self._lock:
            self._secrets = _normalise((*self._secrets, *secrets))

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place with its secrets masked; always keep it."""
        secrets = self._secrets
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):
            # Mismatched format/args: keep everything, masked, rather than
            # letting logging's error handler print the raw args.
            message = f"{record.msg} {record.args!r}"
        record.msg = redact(str(message), secrets)
        record.args = ()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text, secrets)
        if record.stack_info:
            record.stack_info = redact(record.stack_info, secrets)
        return True


def install_redaction(secrets: Iterable[str]) -> None:
    """Mask ``secrets`` in everything logged through the root logger's handlers.

    One shared :class:`RedactingFilter` is attached to the root logger and to
    each of its current handlers. Calling this again is idempotent: the filter
    is never attached twice, new secrets are added to it, and handlers added to
    the root logger since the previous call get it too. Handlers attached to
    other loggers (with ``propagate`` off) are not covered.
    """
    global _installed_filter
    secrets = tuple(secrets)
    with _install_lock:
        if _installed_filter is None:
            _installed_filter = RedactingFilter(secrets)
        else:
            _installed_filter.add_secrets(secrets)
        root = logging.getLogger()
        for filterer in (root, *root.handlers):
            filterer.addFilter(_installed_filter)  # addFilter ignores duplicates
            _attached_to.add(filterer)


def register_secret(value: str) -> None:
    """Mask ``value`` in every log record from now on, and in :func:`redact` by default.

    For any secret the process handles (a database password, an API key).
    Installs the shared filter like :func:`install_redaction`. Empty values
    are ignored.

    Raises:
        TypeError: ``value`` is not a string (a caller bug: a None password
            must be checked for before registering it).
    """
    if not isinstance(value, str):
        raise TypeError(f"register_secret expects a str, got {type(value).__name__}")
    install_redaction([value] if value else [])


def register_url(url: str) -> str:
    """Register the password of ``url`` for redaction; return ``url`` as safe to show.

    Both the password as written in the URL (maybe percent-encoded) and its
    decoded form are registered with :func:`register_secret`, so neither
    shows in a log line, even outside a URL (a driver echoing the password,
    say). Returns :func:`redact_url` of ``url``, the form to print, store or
    render. A URL without a password registers nothing.
    """
    span = _password_span(url)
    if span:
        written = url[span[0]:span[1]]
        install_redaction([written, unquote(written)])
    return redact_url(url)


def registered_secrets() -> tuple[str, ...]:
    """The secrets masked in log records (and by :func:`redact` by default), longest first."""
    installed = _installed_filter
    return installed.secrets if installed is not None else ()


def uninstall_redaction() -> None:
    """Detach the filter set up by :func:`install_redaction` and forget its secrets.

    Mainly for tests; production code has no reason to stop redacting.
    """
    global _installed_filter
    with _install_lock:
        if _installed_filter is None:
            return
        for filterer in list(_attached_to):
            filterer.removeFilter(_installed_filter)
        _attached_to.clear()
        _installed_filter = None


def warn_if_world_readable(path: Path) -> bool:
    """Warn when the secrets file ``path`` is readable by its group or by others.

    Logs one warning naming the file, its mode and the ``chmod 600`` fix, and
    returns True if it warned. Returns False when the permissions are private
    or the file cannot be examined (a missing file is not this function's
    concern).
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        logger.debug("Cannot check permissions of %s: %s", path, exc)
        return False
    readable_by = [who for who, bit in (("group", stat.S_IRGRP), ("others", stat.S_IROTH))
                   if mode & bit]
    if not readable_by:
        return False
    logger.warning(
        "Config file %s holds secrets but is readable by %s (mode %s); "
        "restrict it with: chmod 600 %s",
        path, " and ".join(readable_by), oct(stat.S_IMODE(mode)), path,
    )
    return True

