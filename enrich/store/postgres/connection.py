"""PostgreSQL connections: one driver (ADBC's PostgreSQL driver, on libpq), transactions, errors.

Every connection of this backend goes through :func:`connect`. It is opened in autocommit
mode and each write is one explicit ``BEGIN`` ... ``COMMIT`` (:func:`transaction`), rolled
back whole on any exception, so a retry repeats it safely. Readers never wait for writers
and never see half a write (MVCC); writers of the same rows wait for each other.

The URL may carry a password; when it does not, libpq finds it in ``PGPASSWORD`` or
``~/.pgpass`` (``PGPASSFILE``). No message of this backend shows it: errors name the
database by :attr:`DatabaseLocation.display`.

Errors are mapped by SQLSTATE (:func:`database_error`): transient conditions (a dropped
connection, a server restart, a serialization failure or deadlock) become
:class:`ConnectionLost`, which the flow retries; conditions a person must fix become
:class:`AccessDenied`, :class:`StorageFull`, :class:`DatabaseReadOnly`; a lock wait that
timed out is :class:`DatabaseBusy`. A bug (bad SQL) propagates unchanged.
"""
from __future__ import annotations

import atexit
import logging
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager

import adbc_driver_postgresql

from enrich.store import adbc
from enrich.store.adbc import Connection, Cursor, DriverError
from enrich.store.errors import (AccessDenied, BadDatabaseLocation, ConnectionLost, ConstraintViolation, DatabaseBusy,
                                 DatabaseReadOnly, StorageError, StorageFull)
from enrich.store.location import DatabaseLocation

logger = logging.getLogger(__name__)

#: Work memory of a bulk connection (sorts, hashes and GIN builds of millions of rows stay in memory).
BULK_WORK_MEM = "128MB"
BULK_MAINTENANCE_WORK_MEM = "256MB"
BULK_TEMP_BUFFERS = "256MB"  # the load's staging tables stay in memory


@contextmanager
def connect(location: DatabaseLocation, *, read_only: bool = False, lock_timeout_ms: int | None = None,
            bulk: bool = False) -> Iterator[Cursor]:
    """A connection to the database of ``location``, closed on exit.

    ``read_only``: the session refuses every write (``default_transaction_read_only``).
    ``lock_timeout_ms``: a statement waiting longer than that for a lock gives up with
    :class:`DatabaseBusy`. ``bulk``: more memory for sorts and hashes.
    """
    conn = _open(location)
    try:
        with _session(conn, location) as cur:
            if read_only:
                cur.execute("SET default_transaction_read_only = on")
            if lock_timeout_ms is not None:
                cur.execute(f"SET lock_timeout = {int(lock_timeout_ms)}")
            if bulk:  # (temp_buffers: before the session's first temporary table)
                cur.execute(f"SET temp_buffers = '{BULK_TEMP_BUFFERS}'")
                cur.execute(f"SET work_mem = '{BULK_WORK_MEM}'")
                cur.execute(f"SET maintenance_work_mem = '{BULK_MAINTENANCE_WORK_MEM}'")
            yield cur
    finally:
        _quietly_close(conn)


class Sessions:
    """The process's idle sessions, reused by the stores' short statements (ledger rows, the lock,
    the checks' scans, reads).

    Opening a PostgreSQL session costs a TCP handshake, a password exchange and the server's
    process start: tens of milliseconds, which a step paid for every ledger row and query
    (measured: 0.6 s of ``end`` on the 1M-row run). A session goes back only after a block that
    ended cleanly (its transaction, if any, committed or rolled back); one that broke while idle
    (a server restart) is replaced when taken. At most :attr:`MAX_IDLE` stay open, whatever the
    number of stores and databases; bulk work and sessions with a lock timeout get a connection
    of their own (:func:`connect`).
    """

    MAX_IDLE = 4  # the checks' parallel scans use up to four at once

    def __init__(self) -> None:
        self._idle: list[tuple[tuple[str, bool], Connection]] = []  # oldest first
        self._guard = threading.Lock()

    @contextmanager
    def cursor(self, location: DatabaseLocation, *, read_only: bool = False) -> Iterator[Cursor]:
        """A cursor on an idle session of ``location`` (or a new one), given back when the block
        ends cleanly."""
        key = (location.target, read_only)
        conn = self._take(key, location)
        clean = False
        try:
            with _session(conn, location) as cur:
                yield cur
            clean = True
        finally:
            if clean:
                self._give_back(key, conn)
            else:
                _quietly_close(conn)

    def close(self) -> None:
        """Close every idle session."""
        with self._guard:
            idle, self._idle = self._idle, []
        for _, conn in idle:
            _quietly_close(conn)

    def _take(self, key: tuple[str, bool], location: DatabaseLocation) -> Connection:
        while True:
            with self._guard:
                found = next((i for i in range(len(self._idle) - 1, -1, -1) if self._idle[i][0] == key), None)
                conn = self._idle.pop(found)[1] if found is not None else None
            if conn is None:
                break
            if _alive(conn):
                return conn
            _quietly_close(conn)
        conn = _open(location)
        if key[1]:  # read-only: a setting of the session, hence a pool of its own
            try:
                with _session(conn, location) as cur:
                    cur.execute("SET default_transaction_read_only = on")
            except BaseException:
                _quietly_close(conn)
                raise
        return conn

    def _give_back(self, key: tuple[str, bool], conn: Connection) -> None:
        with self._guard:
            self._idle.append((key, conn))
            evicted = self._idle[:-self.MAX_IDLE]
            del self._idle[:-self.MAX_IDLE]
        for _, old in evicted:
            _quietly_close(old)


#: The idle sessions of this process (closed at exit).
SESSIONS = Sessions()
atexit.register(SESSIONS.close)


def _open(location: DatabaseLocation) -> Connection:
    try:
        return Connection(adbc_driver_postgresql.connect(location.target))
    except DriverError as exc:
        raise connection_error(location, exc) from exc


@contextmanager
def _session(conn: Connection, location: DatabaseLocation) -> Iterator[Cursor]:
    """A cursor on ``conn`` (closed on exit; the connection is left open), with the driver's errors
    that are a condition of the server or the connection mapped to this package's."""
    try:
        cur = Cursor(conn)
        try:
            yield cur
        finally:
            _quietly_close(cur)
    except DriverError as exc:
        error = database_error(location, exc)
        if error is not None:  # a condition of the server or the connection; anything else is a bug
            raise error from exc
        raise


def _alive(conn: Connection) -> bool:
    """Whether an idle session still answers (one round trip)."""
    cur = Cursor(conn)
    try:
        cur.scalar("SELECT 1")
        return True
    except DriverError:
        return False
    finally:
        _quietly_close(cur)


def _quietly_close(handle: object) -> None:
    """Close a cursor or connection; one whose server went away may complain (already reported)."""
    try:
        handle.close()  # type: ignore[attr-defined]
    except (DriverError, RuntimeError) as exc:
        logger.debug("closing a PostgreSQL handle: %s", exc)


def transaction(cur: Cursor) -> AbstractContextManager[Cursor]:
    """``BEGIN`` ... ``COMMIT``, rolled back whole on any exception."""
    return adbc.transaction(cur, "BEGIN", _rollback)


def _rollback(cur: Cursor) -> None:
    try:
        cur.execute("ROLLBACK")
    except DriverError as exc:  # the connection is gone: the server rolled back by itself
        logger.debug("rollback after an error: %s", exc)


# ..................................................................... errors
#: SQLSTATEs of conditions that retrying can cure (a new connection, a new transaction).
_TRANSIENT_STATES = {"57P01", "57P02", "57P03", "40001", "40P01", "53300"}
#: Phrases of libpq for a connection that broke or could not be made (these carry no SQLSTATE).
_LOST_PHRASES = ("server closed the connection unexpectedly", "terminating connection",
                 "no connection to the server", "connection to server was lost", "could not receive data",
                 "could not send data", "connection reset", "broken pipe", "ssl connection has been closed",
                 "the database system is shutting down", "the database system is starting up",
                 "the database system is in recovery mode")
_UNREACHABLE_PHRASES = ("connection refused", "could not connect", "timeout expired",
                        "could not translate host name", "no route to host", "network is unreachable",
                        "connection timed out")
_DENIED_STATES = {"28P01", "28000", "3D000", "42501"}
_DENIED_PHRASES = ("password authentication failed", "no password supplied", "does not exist",
                   "no pg_hba.conf entry", "permission denied", "authentication failed",
                   "password is required", "must be owner")


def _detail(location: DatabaseLocation, exc: BaseException) -> str:
    """The driver's message on one line, without the driver's prefixes and never the password."""
    text = " ".join(str(exc).split())
    for prefix in ("IO: ", "INVALID_ARGUMENT: ", "INVALID_STATE: ", "NOT_FOUND: ", "UNKNOWN: ", "INTERNAL: "):
        text = text.removeprefix(prefix)
    text = text.replace("[libpq] ", "")
    password = location.password
    if password:
        text = text.replace(password, "***")
    return text


def sqlstate_of(exc: BaseException) -> str | None:
    """The SQLSTATE an ADBC error carries (None for libpq's connection failures)."""
    state = getattr(exc, "sqlstate", None)
    return str(state) if state else None


def connection_error(location: DatabaseLocation, exc: BaseException) -> StorageError:
    """The project's error for a connection that could not be made."""
    error = database_error(location, exc)
    if error is not None:
        return error
    detail = _detail(location, exc)
    if any(p in detail.lower() for p in ("invalid", "unrecognized", 'missing "="')):  # the URL itself
        return BadDatabaseLocation(f"{location.display}: libpq cannot use this URL ({detail}). Use "
                                   "postgresql://user[:password]@host[:port]/dbname.")
    return ConnectionLost(f"{location.display}: cannot connect to the database ({_detail(location, exc)}). "
                          "Check the URL, that the server runs and accepts connections, then run again.")


def _denied_message(location: DatabaseLocation, state: str | None, detail: str) -> str:
    lowered = detail.lower()
    if state == "3D000" or ("database" in lowered and "does not exist" in lowered):
        return (f"{location.display}: the database does not exist on that server ({detail}). Create it "
                "(createdb, or CREATE DATABASE as its owner) or fix the database name in the URL.")
    if state == "42501" or "permission denied" in lowered or "must be owner" in lowered:
        return (f"{location.display}: the database user lacks a privilege ({detail}); nothing was written. "
                "Grant it (the user needs to own the database or have CREATE on it and rights on its "
                "tables) or use another user.")
    return (f"{location.display}: the server refused the credentials ({detail}). Check the user name, and "
            "the password in PGPASSWORD, ~/.pgpass (PGPASSFILE) or the URL; check pg_hba.conf allows this "
            "host.")


def database_error(location: DatabaseLocation, exc: BaseException) -> StorageError | None:
    """The project's error for a PostgreSQL error, or None when it is not a condition of the server,
    the connection or the data (then it is a bug, raised as it is).

    Raise it ``from exc`` so that the original stays attached.
    """
    state = sqlstate_of(exc)
    detail = _detail(location, exc)
    lowered = detail.lower()
    where = location.display
    if state in _DENIED_STATES or (state is None and any(p in lowered for p in _DENIED_PHRASES)
                                   and "connect" in lowered):
        return AccessDenied(_denied_message(location, state, detail))
    if state == "53100" or "no space left on device" in lowered or "could not extend file" in lowered:
        return StorageFull(f"{where}: the server's disk is full ({detail}); the write was rolled back and "
                           "nothing stored was lost. Free disk space on the database server, then run again.")
    if state == "25006":
        return DatabaseReadOnly(f"{where}: the database cannot be written ({detail}); nothing was written. "
                                "Connect to the primary server (not a standby), or make the user's "
                                "default_transaction_read_only off, then run again.")
    if state == "55P03" or "lock timeout" in lowered or (state == "57014" and "statement timeout" in lowered):
        return DatabaseBusy(f"{where}: another writer held a lock past the wait allowed ({detail}); nothing "
                            "was written. Run again once the other writer has finished.")
    if state is not None and (state.startswith("08") or state in _TRANSIENT_STATES):
        return _lost(where, detail, state)
    if state is None and any(p in lowered for p in _LOST_PHRASES + _UNREACHABLE_PHRASES):
        return _lost(where, detail, state)
    if state is not None and state.startswith("23"):
        return ConstraintViolation(f"{where}: a write broke a database constraint ({detail}); nothing was "
                                   "written")
    return None


def _lost(where: str, detail: str, state: str | None) -> ConnectionLost:
    if state in ("40001", "40P01"):
        return ConnectionLost(f"{where}: the transaction was aborted by a conflict with another one ({detail}); "
                              "it was rolled back whole and can be run again.")
    if any(p in detail.lower() for p in _UNREACHABLE_PHRASES):
        return ConnectionLost(f"{where}: cannot reach the database server ({detail}). Check that it runs and "
                              "accepts connections at that host and port, then run again.")
    return ConnectionLost(f"{where}: the connection to the database server broke ({detail}); the open "
                          "transaction was rolled back whole and can be run again.")


def missing_database(exc: BaseException | None) -> bool:
    """Whether ``exc`` says the database named by the URL does not exist on the server."""
    if exc is None:
        return False
    text = str(exc).lower()
    return sqlstate_of(exc) == "3D000" or ("database" in text and "does not exist" in text)
