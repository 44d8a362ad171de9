"""Launch the transaction-enrichment flow: ``python algorithm.py run|show|resume|logs|card ...``.

The flow itself is ``flows/enrichment_flow.py``; this launcher does, explicitly, what must
happen before Metaflow starts and after it ends:

* ``--tags PATH`` is accepted for the flow's ``--tag-list`` (Metaflow reserves ``tags``), and
  ``--decimal-comma`` as a flag;
* Metaflow gets a user name when the shell has none (cron, CI, containers: ``USER`` unset
  or ``root``, which Metaflow refuses);
* a ``run`` is checked before any task starts (:mod:`enrich.preflight`): a missing input,
  a missing database directory, a bad tag list, ``--match``, ``--simulate-failure`` or
  Twilio configuration fails at once with one message, and nothing is created;
* a password in a ``postgresql://`` URL is handed to the tasks as ``PGPASSWORD`` and removed
  from the URL, so that it never reaches Metaflow's datastore, logs or the ledger;
* ``resume --simulate-failure STEP`` simulates a failure in the resumed run (a resumed run
  never inherits its origin's);
* Ctrl-C (SIGINT) and SIGTERM stop a run cleanly: Metaflow stops its tasks (their open
  transactions roll back), the exit hook marks the run ``interrupted`` and frees its lock
  (and, for a SIGTERM from a scheduler, sends the SMS an operator's own Ctrl-C does not),
  and one line says what to do next;
* a ``run`` or ``resume`` ends with a summary of the run read back from its ledger;
* ``card view`` on a machine without a browser writes the card to a file and says where.
"""
from __future__ import annotations

import getpass
import os
import signal
import sys
import tempfile
from pathlib import Path

from flows.guards import SIMULATE_ENV, STOP_SIGNAL_ENV

EXIT_BAD_SETTINGS = 2


class StopRequested(KeyboardInterrupt):
    """SIGINT or SIGTERM: Metaflow's runtime stops its tasks as for Ctrl-C, then runs the exit hook."""


def on_stop_signal(signum: int, frame: object) -> None:  # noqa: ARG001 - a signal handler's signature
    """Record which signal stopped the run (for the exit hook, which inherits the environment) and
    stop the runtime."""
    name = signal.Signals(signum).name
    if os.environ.get(STOP_SIGNAL_ENV):
        return  # already stopping: let the clean-up finish
    os.environ[STOP_SIGNAL_ENV] = name
    raise StopRequested(name)


def command_hint() -> str:
    """How the reader starts this launcher again, for the hints printed (the interpreter running it,
    relative to the working directory when inside it, such as ``.venv/bin/python``)."""
    relative = os.path.relpath(sys.executable)
    interpreter = relative if not relative.startswith("..") else sys.executable
    script = os.path.relpath(__file__)
    return f"{interpreter} {script if not script.startswith('..') else __file__}"


def tags_alias(argv: list[str]) -> list[str]:
    """``--tags PATH`` as the flow's ``--tag-list PATH``, and ``--decimal-comma`` as a flag (Metaflow's
    boolean parameters take a value: ``--decimal-comma true``)."""
    argv = ["--tag-list" if arg == "--tags" else
            "--tag-list=" + arg[len("--tags="):] if arg.startswith("--tags=") else arg for arg in argv]
    return [f"{arg}=true" if arg == "--decimal-comma" else arg for arg in argv]


def ensure_user_name(environ: dict[str, str]) -> None:
    """Give Metaflow a user name (``USERNAME``) when no usable one is set."""
    names = [environ.get(v) for v in ("METAFLOW_USER", "SUDO_USER", "USERNAME", "USER", "LOGNAME")]
    if any(name and name != "root" for name in names):
        return
    try:
        name = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry for this uid
        name = ""
    environ["USERNAME"] = name if name and name != "root" else "enrich"


def _option(argv: list[str], name: str) -> tuple[int, str] | None:
    """Where ``--name VALUE`` (or ``--name=VALUE``) is in ``argv``, and its value."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return i, argv[i + 1]
        if arg.startswith(name + "="):
            return i, arg.split("=", 1)[1]
    return None


def hide_database_password(argv: list[str], environ: dict[str, str]) -> list[str]:
    """Move a password written in ``--database``'s URL into ``PGPASSWORD``."""
    from enrich.secrets import register_secret
    from enrich.store import parse_location

    found = _option(argv, "--database")
    if found is None or "://" not in found[1]:
        return argv
    location = parse_location(found[1])
    if location.password is None:
        return argv
    register_secret(location.password)
    environ["PGPASSWORD"] = location.password
    i, _ = found
    plain = location.without_password().target
    return argv[:i] + (["--database", plain] + argv[i + 2:] if argv[i] == "--database" else
                       [f"--database={plain}"] + argv[i + 1:])


def resume_simulation(argv: list[str], environ: dict[str, str]) -> list[str]:
    """``resume --simulate-failure STEP``: handed to the resumed run's steps, not to Metaflow."""
    found = _option(argv, "--simulate-failure")
    environ.pop(SIMULATE_ENV, None)
    if found is None:
        return argv
    i, value = found
    environ[SIMULATE_ENV] = value
    return argv[:i] + argv[i + (2 if argv[i] == "--simulate-failure" else 1):]


def browser_available() -> bool:
    """Whether ``webbrowser`` can open a page here (not on a headless server or in a container)."""
    import webbrowser

    try:
        webbrowser.get()
    except webbrowser.Error:
        return False
    return True


def headless_card_view(argv: list[str], has_browser: bool) -> tuple[list[str], Path | None]:
    """``card view PATHSPEC`` as ``card get PATHSPEC FILE`` when there is no browser to open it
    (Metaflow would print nothing useful); the file, or None when ``argv`` is left as it is."""
    positional = [(i, arg) for i, arg in enumerate(argv) if not arg.startswith("-")]
    words = [arg for _, arg in positional]
    if has_browser or words[:2] != ["card", "view"] or len(words) < 3:
        return argv, None
    view_at, pathspec_at = positional[1][0], positional[2][0]
    target = Path.cwd() / f"card-{argv[pathspec_at].strip('/').replace('/', '-')}.html"
    rewritten = [*argv[:view_at], "get", *argv[view_at + 1:pathspec_at + 1], str(target), *argv[pathspec_at + 1:]]
    return rewritten, target


def main(argv: list[str]) -> int:
    """Check, hand over to Metaflow, then summarise the run."""
    environ = os.environ
    ensure_user_name(environ)  # type: ignore[arg-type]
    argv = tags_alias(argv)
    command = next((arg for arg in argv if not arg.startswith("-")), "")
    from enrich.errors import EnrichError
    from enrich.logs import configure_logging

    configure_logging()
    try:
        argv = hide_database_password(argv, environ)  # type: ignore[arg-type]
    except EnrichError as exc:
        print(f"algorithm.py: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    from flows.enrichment_flow import TransactionEnrichmentFlow

    if command == "run":
        from enrich import preflight

        found = preflight.problems(preflight.parse_run_options(argv), list(TransactionEnrichmentFlow._graph.nodes))
        if found:
            print("algorithm.py run: not started (nothing was written):\n" + "\n".join(f"  - {p}" for p in found),
                  file=sys.stderr)
            return EXIT_BAD_SETTINGS
    if command == "resume":
        argv = resume_simulation(argv, environ)  # type: ignore[arg-type]
    run_id_file = None
    if command in ("run", "resume"):
        run_id_file = Path(tempfile.mkstemp(prefix="enrich-run-id-")[1])
        argv = [*argv, "--run-id-file", str(run_id_file)]
        if "--pylint" not in argv:  # (pylint of the flow file: a development check, not each run's)
            argv.insert(argv.index(command), "--no-pylint")
        environ.pop(STOP_SIGNAL_ENV, None)
        signal.signal(signal.SIGINT, on_stop_signal)
        signal.signal(signal.SIGTERM, on_stop_signal)
    argv, card_file = headless_card_view(argv, command != "card" or browser_available())
    code = _hand_over(TransactionEnrichmentFlow, argv)
    if card_file is not None:
        print(f"No web browser on this machine: the card is in {card_file} (open it in a browser)."
              if code == 0 and card_file.is_file() else "No card written (see the message above).",
              file=sys.stderr)
    if run_id_file is not None:
        _summarise(run_id_file, argv)
    return code


def _hand_over(flow: type, argv: list[str]) -> int:
    """Run Metaflow's command line on ``argv``; its exit code."""
    sys.argv[1:] = argv
    try:
        flow()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 1
    stopped = os.environ.get(STOP_SIGNAL_ENV)
    return 128 + int(signal.Signals[stopped]) if stopped else code


def _summarise(run_id_file: Path, argv: list[str]) -> None:
    """Print the run's closing summary from its ledger (nothing when the run never started)."""
    from enrich import summary
    from enrich.errors import EnrichError
    from enrich.preflight import parse_run_options
    from enrich.store import open_store

    try:
        number = run_id_file.read_text().strip()
    finally:
        run_id_file.unlink(missing_ok=True)
    if not number:
        return
    run_id = f"TransactionEnrichmentFlow/{number}"
    stopped = os.environ.get(STOP_SIGNAL_ENV)
    if stopped:
        print(f"\nRun {run_id} stopped by {stopped}: its steps' open transactions were rolled back and the "
              f"ledger marks it interrupted. Run the same command again (a re-run loads the file again "
              f"safely), or resume it: {command_hint()} resume", flush=True)
        return
    try:
        store = open_store(_database_of(run_id) or parse_run_options(argv).database, read_only=True)
        print("\n" + summary.render(store, run_id, command_hint()), flush=True)
    except EnrichError as exc:
        print(f"(no summary: {exc})", file=sys.stderr)


def _database_of(run_id: str) -> object | None:
    """The database a run used, from its ``start`` step (a resumed run's command line does not name it)."""
    from metaflow import Step, namespace
    from metaflow.exception import MetaflowException

    namespace(None)
    try:
        return Step(f"{run_id}/start").task.data.settings.database
    except (MetaflowException, AttributeError, KeyError):
        return None


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
