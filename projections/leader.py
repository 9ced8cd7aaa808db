"""Several instances over one PostgreSQL: one writer per projection, a notice for everyone.

- :class:`LeaderElection` keeps trying to take a PostgreSQL session-level advisory lock
  (``pg_try_advisory_lock``) on a connection of its own. The instance that holds it is the
  only one that runs the projection; when that instance dies its session ends, the server
  releases the lock, and another instance takes it at its next try (every
  ``RETRY_INTERVAL`` seconds). The holder checks its own connection every
  ``CHECK_INTERVAL`` seconds and steps down as soon as the connection is gone.
- A **dedicated** candidate (``LeaderElection(dedicated=True)``: the read model's writer in
  ``polku project``, which serves no browsers) also holds a shared advisory lock ``<name>.dedicated`` for as
  long as its connection lives. Other candidates do not take the writer lock while anyone
  holds that one, and a holder that sees it steps down (stops its work, then unlocks), so
  the dedicated process writes whichever process started first. When every dedicated
  process is gone, so is the shared lock, and the others compete again as before.
- :class:`NoticeListener` LISTENs on a channel on a connection of its own and hands every
  notice to a callback; after each (re)connection it calls ``on_connect`` first, so the
  caller can catch up on whatever was committed while it was not listening.
- :class:`StartupLock` serialises one-off work across instances
  (creating schemas and tables at start-up), because ``CREATE ... IF NOT EXISTS`` run at
  the same moment by two sessions still fails on PostgreSQL's catalogue constraints.

The lock keys are the pair (``LOCK_CLASS``, ``hashtext(name)``); ``pg_locks`` shows them as
``locktype = 'advisory'`` with ``classid = LOCK_CLASS``.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from domain.postgres import KEEPALIVES

__all__ = (
    "CHECK_INTERVAL",
    "LOCK_CLASS",
    "RETRY_INTERVAL",
    "LeaderElection",
    "NoticeListener",
    "StartupLock",
    "channel_name",
    "connect",
)

logger = logging.getLogger(__name__)

LOCK_CLASS = 0x506F6C6B  # "Polk": the first half of every advisory lock key of Polku
RETRY_INTERVAL = 0.5
"""Seconds between a follower's tries to take the lock: a dead leader is replaced within ~1 s."""
CHECK_INTERVAL = 0.25
"""Seconds between the leader's checks that its lock connection is alive."""
LISTEN_POLL = 0.25
"""Seconds a listener waits for notices before it looks whether it should stop."""
RECONNECT_DELAY = 0.5

# Dead peers are noticed by TCP keepalives (both ends: the store's client-side values, and
# the same asked of the server) within about 10 s even when no packet says so (a machine
# gone, a cable cut); a killed process is noticed at once.
_KEEPALIVES: dict[str, Any] = {
    **KEEPALIVES,
    "options": (
        f"-c tcp_keepalives_idle={KEEPALIVES['keepalives_idle']}"
        f" -c tcp_keepalives_interval={KEEPALIVES['keepalives_interval']}"
        f" -c tcp_keepalives_count={KEEPALIVES['keepalives_count']}"
    ),
}


def connect(conninfo: str, *, application_name: str = "polku") -> psycopg.Connection[Any]:
    """A dedicated autocommit connection with keepalives, for a lock or a LISTEN."""
    return psycopg.connect(
        conninfo, autocommit=True, connect_timeout=3, application_name=application_name, **_KEEPALIVES
    )


def channel_name(name: str) -> str:
    """A NOTIFY channel for ``name`` that fits PostgreSQL's 63-byte identifiers."""
    if len(name.encode()) <= 63:
        return name
    return "polku_" + hashlib.blake2b(name.encode(), digest_size=16).hexdigest()


def try_advisory_lock(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, name)).fetchone()
    return bool(row and row[0])


# Whether some session of this database holds the shared lock of a dedicated candidate.
# (A two-key advisory lock shows in pg_locks as classid = key 1, objid = key 2, objsubid = 2.)
_DEDICATED_PRESENT = """
    EXISTS (SELECT 1 FROM pg_locks
            WHERE locktype = 'advisory' AND granted AND objsubid = 2
              AND database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND classid = %(class)s::oid AND objid = hashtext(%(dedicated)s)::oid
              AND pid <> pg_backend_pid())"""
_TRY_UNLESS_DEDICATED = f"""
    SELECT CASE WHEN {_DEDICATED_PRESENT} THEN false
                ELSE pg_try_advisory_lock(%(class)s, hashtext(%(name)s)) END"""
_STILL_WANTED = f"SELECT NOT {_DEDICATED_PRESENT}"


class LeaderElection:
    """Competes for the advisory lock ``name``; calls back when it gains or loses it.

    ``on_elected()`` is called when this instance took the lock, ``on_held()`` every
    ``CHECK_INTERVAL`` while it holds it (the caller supervises its work there), and
    ``on_deposed()`` when it lost it (connection gone), is closing, or (unless it is
    dedicated) gives way to a dedicated candidate. All three run in the election's own
    thread, one at a time.

    ``dedicated`` makes this a candidate that the others give way to (see the module's docstring).
    """

    def __init__(
        self,
        conninfo: str,
        name: str,
        *,
        on_elected: Callable[[], None],
        on_held: Callable[[], None],
        on_deposed: Callable[[], None],
        retry_interval: float = RETRY_INTERVAL,
        check_interval: float = CHECK_INTERVAL,
        dedicated: bool = False,
    ) -> None:
        self.conninfo = conninfo
        self.name = name
        self.dedicated = dedicated
        self._names = {"class": LOCK_CLASS, "name": name, "dedicated": f"{name}.dedicated"}
        self.on_elected = on_elected
        self.on_held = on_held
        self.on_deposed = on_deposed
        self.retry_interval = retry_interval
        self.check_interval = check_interval
        self.is_leader = False
        self.backend_pid: int | None = None
        """The server process of the lock connection (``pg_terminate_backend`` ends it)."""
        self._conn: psycopg.Connection[Any] | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"leader-election {name}", daemon=True)

    def start(self) -> LeaderElection:
        self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> None:
        """Step down (the lock is released with the connection) and stop trying."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def resign(self) -> None:
        """Stop competing, without waiting: the lock goes with the connection after the
        current step (callable from a callback, where :meth:`close` would wait for itself)."""
        self._stopping.set()

    def _run(self) -> None:
        try:
            while not self._stopping.is_set():
                try:
                    self._step()
                except psycopg.Error as error:
                    self._lost(error)
                except Exception:  # a callback failed: log it, step down, and try again
                    logger.exception("leader election %s: callback failed", self.name)
                    self._lost(None)
                self._stopping.wait(self.check_interval if self.is_leader else self.retry_interval)
        finally:
            self._lost(None)

    def _step(self) -> None:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.conninfo, application_name="polku leader")
            self.backend_pid = self._conn.info.backend_pid
            if self.dedicated:  # held with the session: the others see it until this connection ends
                self._conn.execute("SELECT pg_advisory_lock_shared(%(class)s, hashtext(%(dedicated)s))", self._names)
        if not self.is_leader:
            if self._try_lock():
                self.is_leader = True
                logger.info("leader election %s: this instance leads (backend %s)", self.name, self.backend_pid)
                self.on_elected()
                self.on_held()
            return
        if self.dedicated:
            self._conn.execute("SELECT 1")  # the session, and so the lock, is still there
        elif not self._query(_STILL_WANTED):  # (also proves the session is there)
            self._give_way()
            return
        self.on_held()

    def _try_lock(self) -> bool:
        if self.dedicated:
            return try_advisory_lock(self._conn, self.name)  # type: ignore[arg-type]
        return self._query(_TRY_UNLESS_DEDICATED)

    def _query(self, statement: str) -> bool:
        row = self._conn.execute(statement, self._names).fetchone()  # type: ignore[union-attr]
        return bool(row and row[0])

    def _give_way(self) -> None:
        """A dedicated candidate runs: stop the work first, then let the lock go to it."""
        logger.info("leader election %s: a dedicated writer is running; leaving the lock to it", self.name)
        self.is_leader = False
        try:
            self.on_deposed()
        finally:
            self._query("SELECT pg_advisory_unlock(%(class)s, hashtext(%(name)s))")

    def _lost(self, error: BaseException | None) -> None:
        if self.is_leader:
            self.is_leader = False
            if error is not None:
                logger.warning("leader election %s: lost the lock connection (%s); stepping down", self.name, error)
            try:
                self.on_deposed()
            except Exception:
                logger.exception("leader election %s: stepping down failed", self.name)
        elif error is not None:
            logger.info("leader election %s: no connection (%s); retrying", self.name, error)
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.close()


class NoticeListener:
    """LISTENs on ``channel`` and calls ``on_notice(payload)`` for each notice, in its own thread.

    After every (re)connection, once LISTEN is in place, ``on_connect()`` is called first:
    notices sent while there was no connection are lost, so the caller reads what it
    missed from the tables then. ``is_listening`` says whether the connection is up.
    """

    def __init__(
        self,
        conninfo: str,
        channel: str,
        *,
        on_notice: Callable[[str], None],
        on_connect: Callable[[], None],
        poll: float = LISTEN_POLL,
    ) -> None:
        self.conninfo = conninfo
        self.channel = channel
        self.on_notice = on_notice
        self.on_connect = on_connect
        self.poll = poll
        self.is_listening = False
        self.backend_pid: int | None = None
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"listen {channel}", daemon=True)

    def start(self) -> NoticeListener:
        self._thread.start()
        return self

    def close(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                with connect(self.conninfo, application_name="polku listen") as conn:
                    self.backend_pid = conn.info.backend_pid
                    conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self.on_connect()
                    self.is_listening = True
                    while not self._stopping.is_set():
                        for notice in conn.notifies(timeout=self.poll):
                            self._deliver(notice.payload)
            except psycopg.Error as error:
                if not self._stopping.is_set():
                    logger.warning("listener %s: connection lost (%s); reconnecting", self.channel, error)
            except Exception:
                logger.exception("listener %s failed; reconnecting", self.channel)
            finally:
                self.is_listening = False
            self._stopping.wait(RECONNECT_DELAY)

    def _deliver(self, payload: str) -> None:
        try:
            self.on_notice(payload)
        except Exception:
            logger.exception("listener %s: handling notice %r failed", self.channel, payload)


class StartupLock:
    """Held by an instance while it creates or checks its schemas and tables at start-up.

    ``StartupLock.hold(settings)`` waits (at most ``timeout_s``) until no other instance of
    the same database and schema is starting, creates the event store's schema if it is
    missing (the library creates tables, not schemas), and returns the held lock;
    ``release()`` lets the next instance go on. On SQLite it does nothing.
    """

    def __init__(self, conn: psycopg.Connection[Any] | None) -> None:
        self._conn = conn

    @classmethod
    def hold(cls, settings: Any, *, timeout_s: float = 60.0) -> StartupLock:
        if settings.kind != "postgres":
            return cls(None)
        schema = settings.pg_schema or "public"
        conn = connect(settings.pg_conninfo, application_name="polku start-up")
        try:
            conn.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(f"{int(timeout_s * 1000)}ms")))
            conn.execute("SELECT pg_advisory_lock(%s, hashtext(%s))", (LOCK_CLASS, f"{schema}.startup"))
            if conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        except BaseException:
            conn.close()
            raise
        return cls(conn)

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # ends the session, and with it the lock
