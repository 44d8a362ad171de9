"""The Metaflow side of the project: the one FlowSpec and the guards applied to its steps.

Importing this package makes sure Metaflow has a user name: it stops with
"Unknown user" when USER, USERNAME and LOGNAME are all unset (cron, CI,
containers) or name root.
"""
import getpass
import os


def ensure_metaflow_user() -> None:
    """Set ``USERNAME`` from the login name (or ``enrich``) when no usable name is set.

    Metaflow reads these variables when a command starts, so this works whatever
    was imported first.
    """
    names = [os.environ.get(v) for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER", "LOGNAME")]
    if any(name and name != "root" for name in names):
        return
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid
        name = ""
    os.environ["USERNAME"] = name if name and name != "root" else "enrich"


ensure_metaflow_user()
