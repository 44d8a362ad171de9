"""The project's exceptions: one root, four families, and one marker.

Every error the project raises on purpose derives from :class:`EnrichError`, in one of
four families named after where the problem lies:

* :class:`InputError`: the transactions file (unreadable, no header, a missing column...);
* :class:`ConfigurationError`: a setting (tag list, ``--match``, Twilio configuration...);
* :class:`StorageError`: the database (missing directory, read-only, full, locked...);
* :class:`AlertingError`: sending an alert.

Independently of its family, an error is *permanent* when the same attempt repeated a
moment later would hit it again (a bad file, a read-only database, a held run lock):
such classes also derive from :class:`PermanentError`, and the flow's guard does not
let ``@retry`` repeat them. Everything else (a busy database, a dropped connection)
is transient and retried. The specific classes live beside the code that raises them
(``enrich.ingest``, ``enrich.store``, ...), each named after its condition.
"""
from __future__ import annotations


class EnrichError(Exception):
    """The root of every error this project raises on purpose."""


class PermanentError(EnrichError):
    """Marker: retrying the same work at once cannot succeed; a person must change something."""


class InputError(EnrichError):
    """The transactions file cannot be used as it is."""


class ConfigurationError(EnrichError):
    """A setting (parameter, tag list, environment, configuration file) is invalid."""


class StorageError(EnrichError):
    """The database cannot be used; the message names it and says what to do."""


class AlertingError(EnrichError):
    """An alert could not be composed or sent."""


def is_permanent(exc: BaseException) -> bool:
    """Whether ``exc`` is marked permanent (see :class:`PermanentError`)."""
    return isinstance(exc, PermanentError)
