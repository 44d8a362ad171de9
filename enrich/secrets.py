"""Keeping secrets (the Twilio auth token) out of logs and config files.

* :func:`redact` masks known secret values in a string.
* :class:`RedactingFilter` / :func:`install_redaction` rewrite every log record
  that reaches the root logger's handlers so a secret never gets written out.
* :func:`warn_if_world_readable` flags config files holding secrets that other
  users can read.
"""
from __future__ import annotations

import logging
import stat
import threading
import weakref
from pathlib import Path
from typing import Iterable

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


def redact(text: str, secrets: Iterable[str]) -> str:
    """Return ``text`` with every occurrence of each non-empty secret replaced by ``***``.

    Empty strings (and non-string values) among ``secrets`` are ignored, so an
    unset token never turns every position of the text into ``***``.
    """
    for secret in _normalise(secrets):
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    """Logging filter that masks secrets in a record before any handler formats it.

    The record's message is formatted with its args first (so a secret passed
    as an argument is caught too), redacted, stored back in ``record.msg`` and
    ``record.args`` is cleared. Exception tracebacks and stack info attached to
    the record are redacted as well. Records are never dropped.
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
        if not secrets:
            return True
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


def register_secret(value: str) -> None:
    """Mask ``value`` (a database password, say) in everything logged, like the Twilio token."""
    if value:
        install_redaction([value])
