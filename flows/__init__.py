"""The Metaflow side of the project: the one FlowSpec and the guards applied to its steps.

Importing this package makes sure Metaflow has a user name: it stops with
"Unknown user" when USER, USERNAME and LOGNAME are all unset (cron, CI,
containers) or name root.
"""
import getpass
import importlib.util
import os
import sys
import types


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


def lazy_module(name: str) -> types.ModuleType:
    """Module ``name``, executed on its first attribute access (importlib's ``LazyLoader``).

    Metaflow's launcher and its card renderer import the flow file but run no step: the
    domain package (pandas, pyarrow, two SQLite drivers, twilio: about 0.7 s a process) is
    imported only where a step uses it.
    """
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    spec.loader = importlib.util.LazyLoader(spec.loader)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
