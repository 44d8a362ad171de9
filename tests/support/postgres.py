"""A throwaway PostgreSQL cluster on a loopback port, for tests and for people.

For tests, use the fixtures of :mod:`tests.support.fixtures` (``postgres_server``,
``postgres_url``), or the class directly::

    with ThrowawayPostgres() as server:
        url = server.create_database()      # postgresql://enrich:PASSWORD@127.0.0.1:PORT/test_...

For a person, ``make pg`` (``python -m tests.support.postgres start --dir .pg``) starts
the same kind of server in the project folder and prints its URL; ``make pg-stop``
(``... stop --dir .pg``) stops it and deletes its data.

What the server is:

* A fresh cluster made by ``initdb`` in a new folder under ``/tmp`` (or in ``--dir``
  when the postgres user can reach it), UTF8 and the C locale, deleted when it stops.
  Nothing in it is meant to survive: ``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` are off.
* It listens on ``127.0.0.1`` only, on a free port, and on a unix socket in its own
  folder (never in ``/var/run/postgresql``).
* One superuser role (``enrich`` unless told otherwise) with a random password. Over
  TCP, ``pg_hba.conf`` asks for the password (``scram-sha-256``), so a test can check
  where a password goes; over the unix socket, the cluster's own folder, it trusts.
* ``initdb``, ``pg_ctl`` and ``postgres`` refuse to run as root: when this runs as
  root, the folder is given to the ``postgres`` user (Debian's package makes it;
  ``nobody`` otherwise) and the binaries run as that user, through ``runuser`` for
  ``initdb``/``pg_ctl`` and through ``subprocess``'s ``user=`` for the server itself.

The binaries are found through ``$PG_BINDIR``, then ``initdb`` on ``PATH``, then
``/usr/lib/postgresql/*/bin`` (Debian's ``postgresql`` package; ``make test-deps``
installs it when none is found).

Two ways to run the server:

* attached (tests, the default): ``postgres`` is a child of this process, stopped by
  :meth:`ThrowawayPostgres.stop`, and killed by the kernel if this process dies
  (``PR_SET_PDEATHSIG``), so a killed pytest worker leaves no server behind (only its
  ``/tmp/enrich-pg-*`` folder);
* detached (``make pg``): started with ``pg_ctl start`` and left running until
  ``pg_ctl stop``; its settings are kept in ``DIR/server.json`` (mode 0600).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import uuid
from pathlib import Path
from typing import Any

from tests.support.children import die_with_parent, free_port

#: The only address the server listens on.
HOST = "127.0.0.1"
#: The superuser role the server is made with.
DEFAULT_USER = "enrich"
#: The database ``make pg`` creates for a person.
DEFAULT_DATABASE = "enrich"
#: Environment variable naming the folder that holds initdb, pg_ctl and postgres.
BINDIR_ENV = "PG_BINDIR"
#: Set to ``1`` to skip (instead of fail) the tests that need PostgreSQL when it is missing.
SKIP_ENV = "ENRICH_SKIP_POSTGRES"
#: Users the cluster runs as when this process is root, first found wins.
UNPRIVILEGED_USERS = ("postgres", "nobody")
#: Seconds to wait for the server to accept connections.
READY_TIMEOUT_S = 30.0
#: Seconds to wait for a fast shutdown before an immediate one, then SIGKILL.
STOP_TIMEOUT_S = 10.0
#: Name of the settings file of a detached server, in its folder.
STATE_FILE = "server.json"
#: Longest unix socket path (sun_path is 108 bytes with its NUL).
_MAX_SOCKET_PATH = 107

#: Settings of a throwaway cluster: nothing in it needs to survive a crash.
SETTINGS = {
    "listen_addresses": f"'{HOST}'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "password_encryption": "'scram-sha-256'",
    "max_connections": "50",
    "shared_buffers": "32MB",
    "max_wal_size": "256MB",
    "dynamic_shared_memory_type": "posix",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_timezone": "'UTC'",
    "timezone": "'UTC'",
}

#: Only the cluster's own socket folder (trust) and loopback TCP with a password.
PG_HBA = """\
# Throwaway cluster: the unix socket lives in the cluster's own folder; TCP needs the password.
local   all   all                   trust
host    all   all   127.0.0.1/32    scram-sha-256
"""


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's binaries are missing, or the server did not start."""


def find_bindir() -> Path | None:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``, or ``None``."""
    candidates: list[Path] = []
    explicit = os.environ.get(BINDIR_ENV, "").strip()
    if explicit:
        candidates.append(Path(explicit))
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)  # /usr/local/bin/initdb -> the real folder

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(part) for part in re.findall(r"\d+", path.parent.name))

    candidates += sorted((p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb")),
                         key=version, reverse=True)
    for folder in candidates:
        if all(os.access(folder / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return folder
    return None


def _unprivileged_user() -> pwd.struct_passwd | None:
    """The account the cluster runs as: ``None`` unless this process is root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise PostgresUnavailable("running as root, and there is no 'postgres' or 'nobody' user to run "
                              "PostgreSQL as (initdb and postgres refuse root)")


def _child_env() -> dict[str, str]:
    """Environment for initdb/pg_ctl/postgres: no PG* variable of the caller, a C locale."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env.update(LC_ALL="C", LANG="C", TZ="UTC")
    return env


def quote_identifier(name: str) -> str:
    """``name`` as a double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


class ThrowawayPostgres:
    """A throwaway PostgreSQL cluster on ``127.0.0.1`` (see the module doc).

    ``folder`` (optional, e.g. ``.pg`` for ``make pg``) is where a detached server's
    ``server.json`` goes and, when the unprivileged user can reach it, its data, socket and
    log too; otherwise, and by default, those go to a new temporary folder under ``/tmp``.
    :meth:`stop` deletes all of it (a given folder only when it is left empty).
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, user: str = DEFAULT_USER,
                 password: str | None = None, bindir: str | os.PathLike[str] | None = None) -> None:
        self.folder = Path(folder).resolve() if folder is not None else None
        self.user = user
        self.password = password or secrets.token_urlsafe(18)
        self.bindir = Path(bindir) if bindir is not None else None
        #: The folder holding data/, run/ (the socket, unless its path is too long) and the log.
        self.base_dir: Path | None = None
        self.port: int | None = None
        self.socket_dir: Path | None = None
        self.detached = False
        self.startup_seconds: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._temporary_dirs: list[Path] = []
        self._account = _unprivileged_user()

    # -- where things are ---------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self._base() / "data"

    @property
    def log_path(self) -> Path:
        return self._base() / "postgres.log"

    @property
    def running(self) -> bool:
        """Whether the server runs (attached: the child is alive; detached: pg_ctl status)."""
        if self._process is not None:
            return self._process.poll() is None
        if self.detached and self.base_dir is not None and self.data_dir.is_dir():
            return self._run(["pg_ctl", "status", "-D", str(self.data_dir)], check=False).returncode == 0
        return False

    def _base(self) -> Path:
        if self.base_dir is None:
            raise PostgresUnavailable("the server has no folder yet: call start() first")
        return self.base_dir

    # -- URLs and SQL -------------------------------------------------------------------
    def url(self, dbname: str = "postgres", *, password: bool = True) -> str:
        """``postgresql://user[:password]@127.0.0.1:PORT/dbname`` (parts percent-encoded)."""
        if self.port is None:
            raise PostgresUnavailable("the server is not started")
        credentials = urllib.parse.quote(self.user, safe="")
        if password:
            credentials += ":" + urllib.parse.quote(self.password, safe="")
        return f"postgresql://{credentials}@{HOST}:{self.port}/{urllib.parse.quote(dbname, safe='')}"

    def connect(self, dbname: str = "postgres") -> Any:
        """An autocommit ADBC DB-API connection to ``dbname`` over TCP, with the password."""
        import adbc_driver_postgresql.dbapi as pg  # the project's PostgreSQL driver

        return pg.connect(self.url(dbname), autocommit=True)

    def execute(self, sql: str, dbname: str = "postgres") -> list[tuple[Any, ...]]:
        """Run one statement in ``dbname`` and return its rows (``[]`` when it returns none)."""
        conn = self.connect(dbname)
        try:
            cursor = conn.cursor()
            try:
                cursor.execute(sql)
                return [tuple(row) for row in cursor.fetchall()] if cursor.description else []
            finally:
                cursor.close()
        finally:
            conn.close()

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a copy of ``template0``) and return its URL."""
        name = name or f"test_{uuid.uuid4().hex[:12]}"
        self.execute(f"CREATE DATABASE {quote_identifier(name)} TEMPLATE template0 OWNER "
                     f"{quote_identifier(self.user)}")
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop ``name``, closing whatever connections it still has."""
        self.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")

    def log(self) -> str:
        """What the server wrote to its log so far."""
        try:
            return self.log_path.read_text(errors="replace")
        except (OSError, PostgresUnavailable):
            return ""

    # -- running binaries as the right user ---------------------------------------------
    def _binary(self, name: str) -> str:
        assert self.bindir is not None
        return str(self.bindir / name)

    def _as_owner(self, argv: list[str]) -> list[str]:
        if self._account is None:
            return argv
        return ["runuser", "-u", self._account.pw_name, "--", *argv]

    def _run(self, command: list[str], *, check: bool = True,
             timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run one of PostgreSQL's programs, as the unprivileged user when we are root."""
        result = subprocess.run(self._as_owner([self._binary(command[0]), *command[1:]]),
                                stdin=subprocess.DEVNULL, capture_output=True, text=True,
                                cwd=self._base(), env=_child_env(), timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise PostgresUnavailable(f"{command[0]} failed (exit {result.returncode}): "
                                      f"{(result.stderr or result.stdout).strip()[-2000:]}")
        return result

    def _give(self, path: Path) -> None:
        """Hand ``path`` to the unprivileged user (when root)."""
        if self._account is not None:
            os.chown(path, self._account.pw_uid, self._account.pw_gid)

    def _make_dir(self, path: Path) -> None:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(path, 0o700)
        self._give(path)

    def _temporary_dir(self, prefix: str) -> Path:
        path = Path(tempfile.mkdtemp(prefix=prefix))
        self._temporary_dirs.append(path)
        self._make_dir(path)
        return path

    def _owner_can_write(self, path: Path) -> bool:
        """Whether the user the cluster runs as can write in ``path`` (every parent open to it)."""
        if self._account is None:
            return os.access(path, os.W_OK | os.X_OK)
        return subprocess.run(self._as_owner(["test", "-w", str(path), "-a", "-x", str(path)]),
                              check=False, capture_output=True).returncode == 0

    # -- life cycle ---------------------------------------------------------------------
    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, detached: bool = False, attempts: int = 3) -> ThrowawayPostgres:
        """Make the cluster and start the server; returns ``self``. Raises PostgresUnavailable."""
        started = time.monotonic()
        self.bindir = self.bindir or find_bindir()
        if self.bindir is None:
            raise PostgresUnavailable(
                "PostgreSQL's initdb was not found (PATH, $PG_BINDIR, /usr/lib/postgresql/*/bin): "
                "install Debian's 'postgresql' package (`make test-deps` does)")
        if self.folder is not None and ((self.folder / "data").exists()
                                        or (self.folder / STATE_FILE).exists()):
            raise PostgresUnavailable(f"{self.folder} already holds a server: stop it first "
                                      "(make pg-stop), or delete the folder")
        try:
            self._init_cluster()
            failures = []
            for _ in range(attempts):
                self.port = free_port()
                if self._start_server(detached):
                    self.startup_seconds = time.monotonic() - started
                    return self
                failures.append(f"port {self.port}: {self.log().strip()[-1500:]}")
            raise PostgresUnavailable("PostgreSQL did not start: " + " | ".join(failures))
        except BaseException:
            self.stop()
            raise

    def _init_cluster(self) -> None:
        if self.folder is not None:
            self._make_dir(self.folder)
        if self.folder is not None and self._owner_can_write(self.folder):
            self.base_dir = self.folder
        else:  # by default, or a folder behind one closed to the postgres user (e.g. under /root)
            self.base_dir = self._temporary_dir("enrich-pg-")
        socket_dir = self.base_dir / "run"
        if len(str(socket_dir / ".s.PGSQL.65535.lock")) > _MAX_SOCKET_PATH:
            socket_dir = self._temporary_dir("enrich-pgsock-")
        self._make_dir(socket_dir)
        self.socket_dir = socket_dir
        password_file = self.base_dir / "initdb.pw"
        password_file.write_text(self.password + "\n")
        os.chmod(password_file, 0o600)
        self._give(password_file)
        try:
            self._run(["initdb", "-D", str(self.data_dir), "-U", self.user,
                       f"--pwfile={password_file}", "--auth-local=trust",
                       "--auth-host=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
                       "--no-instructions"], timeout=120)
        finally:
            password_file.unlink(missing_ok=True)
        settings = dict(SETTINGS, unix_socket_directories=f"'{socket_dir}'")
        with open(self.data_dir / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.write("\n# throwaway test cluster (tests/support/postgres.py)\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        (self.data_dir / "pg_hba.conf").write_text(PG_HBA)

    def _start_server(self, detached: bool) -> bool:
        """Start on ``self.port``; True once it accepts connections, False if it exited."""
        assert self.port is not None
        self.log_path.touch()
        self._give(self.log_path)
        if detached:
            self.detached = True
            result = self._run(["pg_ctl", "start", "-D", str(self.data_dir), "-l", str(self.log_path),
                                "-o", f"-p {self.port}", "-w", "-t", str(int(READY_TIMEOUT_S)), "-s"],
                               check=False, timeout=READY_TIMEOUT_S + 10)
            return result.returncode == 0
        # Not runuser here: it forks and waits, and the parent-death signal would stop at it.
        # subprocess switches to the user before preexec_fn, so the signal survives into postgres.
        user = {} if self._account is None else {
            "user": self._account.pw_uid, "group": self._account.pw_gid, "extra_groups": []}
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                [self._binary("postgres"), "-D", str(self.data_dir), "-p", str(self.port)],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self._base(),
                env=_child_env(), preexec_fn=die_with_parent, **user)  # noqa: PLW1509
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if self._pid_file_says_ready():
                return True
            time.sleep(0.02)
        self._stop_child()
        return False

    def _pid_file_says_ready(self) -> bool:
        """postmaster.pid's 8th line is ``ready`` once connections are accepted (what pg_ctl -w reads)."""
        try:
            lines = (self.data_dir / "postmaster.pid").read_text().splitlines()
        except OSError:
            return False
        return len(lines) >= 8 and lines[7].strip() == "ready"

    def _stop_child(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig in (signal.SIGINT, signal.SIGQUIT):  # fast shutdown, then immediate
            process.send_signal(sig)
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
                return
            except subprocess.TimeoutExpired:
                continue
        process.kill()
        process.wait(timeout=STOP_TIMEOUT_S)

    def stop(self) -> None:
        """Stop the server (if it runs) and delete its files. Safe to call twice."""
        try:
            if self._process is not None:
                self._stop_child()
            elif self.detached and self.bindir is not None and self.base_dir is not None \
                    and (self.data_dir / "postmaster.pid").exists():
                self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-s"],
                          check=False, timeout=STOP_TIMEOUT_S + 30)
        finally:
            for folder in self._temporary_dirs:
                shutil.rmtree(folder, ignore_errors=True)
            self._temporary_dirs.clear()
            if self.folder is not None and self.folder.is_dir():
                # A folder we were given (make pg): delete what is ours, then it if left empty.
                for name in ("data", "run", "postgres.log", "initdb.pw", STATE_FILE):
                    child = self.folder / name
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    self.folder.rmdir()

    # -- a detached server's settings (make pg / make pg-stop) ---------------------------
    def save_state(self) -> Path:
        """Write ``server.json`` (mode 0600) in the given folder, for ``stop`` and the person."""
        folder = self.folder or self._base()
        path = folder / STATE_FILE
        state = {"url": self.url(DEFAULT_DATABASE), "port": self.port, "user": self.user,
                 "password": self.password, "bindir": str(self.bindir), "base_dir": str(self._base()),
                 "socket_dir": str(self.socket_dir),
                 "temporary_dirs": [str(d) for d in self._temporary_dirs],
                 "data_dir": str(self.data_dir), "log": str(self.log_path)}
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(state, out, indent=2)
            out.write("\n")
        return path

    @classmethod
    def from_state(cls, folder: str | os.PathLike[str]) -> ThrowawayPostgres | None:
        """The detached server described by ``folder/server.json``, or ``None``."""
        path = Path(folder).resolve() / STATE_FILE
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        server = cls(folder, user=state["user"], password=state["password"], bindir=state["bindir"])
        server.base_dir = Path(state["base_dir"])
        server.port = int(state["port"])
        server.socket_dir = Path(state["socket_dir"])
        server._temporary_dirs = [Path(d) for d in state.get("temporary_dirs", [])]
        server.detached = True
        return server


def _cli_start(base_dir: Path) -> int:
    existing = ThrowawayPostgres.from_state(base_dir)
    if existing is not None and existing.running:
        print(f"PostgreSQL is already running from {base_dir}:\n\n  {existing.url(DEFAULT_DATABASE)}\n\n"
              "Stop it (and delete its data) with: make pg-stop")
        return 0
    if existing is not None:  # left over from a stopped or killed server
        existing.stop()
    server = ThrowawayPostgres(base_dir)
    try:
        server.start(detached=True)
        server.create_database(DEFAULT_DATABASE)
        state = server.save_state()
    except BaseException:
        server.stop()
        raise
    version = server._run(["postgres", "--version"]).stdout.strip()
    print(f"{version}: a throwaway server on {HOST}:{server.port} (data in {server.data_dir}, fsync off; "
          f"started in {server.startup_seconds:.1f} s).\n\n"
          f"  DATABASE_URL={server.url(DEFAULT_DATABASE)}\n\n"
          f"  psql \"{server.url(DEFAULT_DATABASE)}\"\n\n"
          f"Settings: {state}. Log: {server.log_path}.\n"
          "Stop it (and delete its data) with: make pg-stop")
    return 0


def _cli_stop(base_dir: Path) -> int:
    server = ThrowawayPostgres.from_state(base_dir)
    if server is None:
        print(f"No server recorded in {base_dir / STATE_FILE}: nothing to stop.")
        return 0
    server.stop()
    print(f"Stopped the PostgreSQL server on {HOST}:{server.port} and deleted its data in {base_dir}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.postgres",
        description="Start or stop a throwaway PostgreSQL server on 127.0.0.1 (make pg / make pg-stop).")
    parser.add_argument("command", choices=("start", "stop", "url"))
    parser.add_argument("--dir", type=Path, default=Path(".pg"),
                        help="folder for its server.json and, when the postgres user can reach it, "
                             "its data, socket and log (default: .pg)")
    args = parser.parse_args(argv)
    try:
        if args.command == "start":
            return _cli_start(args.dir)
        if args.command == "stop":
            return _cli_stop(args.dir)
        server = ThrowawayPostgres.from_state(args.dir)
        if server is None or not server.running:
            print(f"No server running from {args.dir}: start one with make pg", file=sys.stderr)
            return 1
        print(server.url(DEFAULT_DATABASE))
        return 0
    except PostgresUnavailable as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
