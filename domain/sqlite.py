"""SQLite persistence for Polku: the library's SQLite module, made durable and followable.

Select it with ``PERSISTENCE_MODULE=domain.sqlite`` and ``SQLITE_DBNAME=<file>``.
It differs from ``eventsourcing.sqlite`` in these ways only:

* Durability. The library switches a file database to WAL but leaves ``synchronous`` at
  the build's default. That is FULL in the Python here (SQLite 3.40.1), but builds made
  with ``SQLITE_DEFAULT_WAL_SYNCHRONOUS=1`` use NORMAL in WAL mode, which may lose the
  last commits on power failure. Every pooled connection here runs ``PRAGMA
  synchronous=FULL``, so an acknowledged save is on disk whatever the build.
* Subscriptions. The library's SQLite application recorder raises on ``subscribe()``,
  so ``ProjectionRunner`` cannot follow it. Here a save made through any recorder of
  this module in this process wakes subscribers to the same database file at once, and
  each subscription also polls every ``SQLITE_POLL_INTERVAL`` seconds (default 0.05)
  to catch saves made by other processes, which cannot signal us.
* Closing. The pool waits for connections in use before closing them (see
  ``DurableSQLiteConnectionPool.close``).
* Snapshots. The library keeps them in a ``WITHOUT ROWID`` table, whose B-tree holds
  whole rows: SQLite advises that only for rows well under a page, and once a few big
  snapshots were in it, looking up any plan's snapshot took 1.5-5 ms instead of 0.04 ms.
  Here they live in an ordinary rowid table (``RowidSnapshotRecorder``); a file made
  before is converted when the recorder starts.
* A single event is inserted by one statement in SQLite's autocommit mode, its own
  transaction (as durable, and as atomic for one row), where the library wraps it in
  ``BEGIN`` ... ``COMMIT``; and each connection keeps Python's usual cache of prepared
  statements (the library asks for a cache of one, so the ``BEGIN`` and the ``INSERT``
  of every save were prepared again each time).

Everything else (events table, tracking, process recorder, other settings) is the library's.

Note: ``InfrastructureFactory.construct`` resolves a module topic by looking for the
single non-generic ``InfrastructureFactory`` subclass in the module's namespace, so the
library's ``SQLiteFactory`` must not be imported here by name (it would be a second
candidate); it is reached through the module object instead.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from collections import defaultdict
from time import monotonic, sleep
from typing import TYPE_CHECKING, Any

from eventsourcing import sqlite as _lib
from eventsourcing.persistence import InterfaceError, ListenNotifySubscription

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsourcing.persistence import StoredEvent
    from eventsourcing.utils import Environment, EnvType

DEFAULT_POLL_INTERVAL = 0.05
"""Seconds between a subscription's checks for saves made by other processes."""


CACHED_STATEMENTS = 128
"""Prepared statements each connection keeps (Python's default; the library asks for 1)."""


class DurableSQLiteConnectionPool(_lib.SQLiteConnectionPool):
    """The library's pool, plus ``PRAGMA synchronous=FULL`` on each file connection,
    a statement cache of ``CACHED_STATEMENTS``, and a ``close()`` that lets
    connections in use come back first.

    ``synchronous`` is a per-connection setting (unlike WAL, which is stored in the
    database file), so it has to be set on every new connection, not once per pool.
    """

    synchronous = "FULL"
    """Every acknowledged save is on disk (``projections.sqlite`` lowers it for the read model)."""

    def _create_connection(self) -> _lib.SQLiteConnection:
        """The library's connection (autocommit mode, WAL for a file), made here only
        to pass ``cached_statements``, which the library fixes at 1."""
        try:
            c = sqlite3.connect(
                database=self.db_name,
                uri=True,
                check_same_thread=False,
                isolation_level=None,
                cached_statements=CACHED_STATEMENTS,
                timeout=self.lock_timeout or _lib.SQLITE3_DEFAULT_LOCK_TIMEOUT,
            )
        except (sqlite3.Error, TypeError) as e:
            raise InterfaceError(e) from e
        if not self.is_sqlite_memory_mode:
            if not self.is_journal_mode_wal:
                mode = c.execute("PRAGMA journal_mode;").fetchone()[0]
                if mode.lower() != "wal":
                    c.execute("PRAGMA journal_mode=WAL;")
                    self.journal_mode_was_changed_to_wal = True
                self.is_journal_mode_wal = True
            c.execute(f"PRAGMA synchronous={self.synchronous};")
        c.row_factory = sqlite3.Row
        return _lib.SQLiteConnection(sqlite_conn=c, max_age=self.max_age)

    def close(self) -> None:
        """Wait up to ``pool_timeout`` for connections in use to be returned, then close.

        The library's ``close()`` also closes connections that other threads are using,
        and closing a sqlite3 connection while another thread executes on it crashed
        the interpreter (segmentation fault) in our tests. ``Application.close()`` can
        run while a request thread or a subscription's pull thread is mid-query.
        """
        deadline = monotonic() + self.pool_timeout
        while not self.closed and self.num_in_use and monotonic() < deadline:
            sleep(0.001)
        super().close()


class DurableSQLiteDatastore(_lib.SQLiteDatastore):
    """The library's datastore with a durable pool and the subscription poll interval.

    The library builds its pool inline, so it is rebuilt here from the same settings
    (no connection has been opened yet). The poll interval lives here because, like
    the library's other per-database settings, it is what the recorders can see.
    """

    pool_class: type[DurableSQLiteConnectionPool] = DurableSQLiteConnectionPool

    def __init__(
        self,
        db_name: str,
        *,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        **kwargs: Any,
    ):
        super().__init__(db_name, **kwargs)
        plain = self.pool
        self.pool = self.pool_class(
            db_name=plain.db_name,
            lock_timeout=plain.lock_timeout,
            pool_size=plain.pool_size,
            max_overflow=plain.max_overflow,
            pool_timeout=plain.pool_timeout,
            max_age=plain.max_age,
            pre_ping=plain.pre_ping,
        )
        plain.close()
        self.poll_interval = poll_interval


def database_key(db_name: str) -> str:
    """Name one database the same way however it was spelt (relative path, ``file:``
    URI with query), so that recorders and subscriptions in this process meet."""
    if _lib.SQLiteConnectionPool.detect_memory_mode(db_name):
        return db_name
    path = db_name.removeprefix("file:").split("?", 1)[0]
    return os.path.realpath(path)


class _LocalCommits:
    """Process-wide registry of subscription wake-up events per database.

    Recorders call ``notify()`` after a commit; every subscription listening on that
    database then re-reads at once instead of waiting for its next poll.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._listeners: defaultdict[str, set[threading.Event]] = defaultdict(set)

    def listen(self, key: str, event: threading.Event) -> None:
        with self._lock:
            self._listeners[key].add(event)

    def unlisten(self, key: str, event: threading.Event) -> None:
        with self._lock:
            listeners = self._listeners.get(key)
            if listeners is not None:
                listeners.discard(event)
                if not listeners:
                    del self._listeners[key]

    def notify(self, key: str) -> None:
        with self._lock:
            listeners = list(self._listeners.get(key, ()))
        for event in listeners:
            event.set()


local_commits = _LocalCommits()


class SQLiteSubscription(ListenNotifySubscription["SubscribableSQLiteApplicationRecorder"]):
    """Follows a SQLite application sequence.

    The library's ``ListenNotifySubscription`` runs a pull thread that re-reads
    notifications after ``gt`` whenever ``_has_been_notified`` is set; it is used as is.
    What SQLite lacks is someone to set that event. Two sources do it here, in the way
    ``PostgresSubscription`` sets it from LISTEN: local commits (via ``local_commits``)
    and a poll thread for other processes. The poll also covers the moment between the
    pull thread's first read and registering with ``local_commits``.
    """

    def __init__(
        self,
        recorder: SubscribableSQLiteApplicationRecorder,
        gt: int | None = None,
        topics: Sequence[str] = (),
    ) -> None:
        self._key = recorder.database_key
        self._poll_interval = recorder.poll_interval
        self._stop_polling = threading.Event()
        # This starts the pull thread, which may already stop() us if it fails.
        super().__init__(recorder=recorder, gt=gt, topics=topics)
        local_commits.listen(self._key, self._has_been_notified)
        if self._stop_polling.is_set():  # stop() ran before we listened
            local_commits.unlisten(self._key, self._has_been_notified)
        self._poll_thread = threading.Thread(target=self._poll, daemon=True)
        self._poll_thread.start()

    def _poll(self) -> None:
        # Waiting on an event (not sleeping) lets stop() end this thread at once.
        while not self._stop_polling.wait(self._poll_interval):
            self._has_been_notified.set()

    def stop(self) -> None:
        """Stops the pull thread (library) and the poll thread; leaves the registry."""
        self._stop_polling.set()
        local_commits.unlisten(self._key, self._has_been_notified)
        super().stop()

    def __exit__(self, *args: object, **kwargs: Any) -> None:
        try:
            super().__exit__(*args, **kwargs)
        finally:
            self._poll_thread.join()


class _SingleStatement(_lib.SQLiteTransaction):
    """The library's transaction without its ``BEGIN``: what runs inside is one statement
    that SQLite commits by itself (autocommit mode). On leaving, the library's ``commit()``
    or ``rollback()`` finds no transaction open and does nothing, and its translation of
    sqlite3 errors applies unchanged."""

    def __enter__(self) -> _lib.SQLiteCursor:
        return self.connection.cursor()


class SubscribableSQLiteApplicationRecorder(_lib.SQLiteApplicationRecorder):
    """The library's application recorder, plus ``subscribe()``.

    ``insert_events`` announces each commit to this process's subscriptions on the
    same database file, after the transaction has committed (so the re-read sees it).
    """

    def __init__(self, datastore: _lib.SQLiteDatastore, **kwargs: Any):
        super().__init__(datastore, **kwargs)
        self.database_key = database_key(datastore.pool.db_name)
        # Also usable via APPLICATION_RECORDER_TOPIC with the library's own datastore.
        self.poll_interval: float = getattr(
            datastore, "poll_interval", DEFAULT_POLL_INTERVAL
        )

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """Insert the events in one transaction, then wake this process's subscribers.

        One event without tracking (a command's save) is one ``INSERT`` in autocommit
        mode: SQLite makes the statement its own transaction, committed and synced
        (``synchronous=FULL``) before it returns, like the library's ``BEGIN``,
        ``INSERT``, ``COMMIT``, with one statement fewer. The writer's connection from
        the pool keeps this process's writers in order as before, and errors are
        translated as the library's (a clash is still a ``RecordConflictError``).
        """
        if len(stored_events) == 1 and kwargs.get("tracking") is None:
            with (
                self.datastore.get_connection(commit=True) as connection,
                _SingleStatement(connection, commit=True) as cursor,
                cursor,
            ):
                notification_ids = self._insert_events(cursor, stored_events)
        else:
            notification_ids = super().insert_events(stored_events, **kwargs)
        local_commits.notify(self.database_key)
        return notification_ids

    def subscribe(
        self, gt: int | None = None, topics: Sequence[str] = ()
    ) -> SQLiteSubscription:
        return SQLiteSubscription(recorder=self, gt=gt, topics=topics)


class SubscribableSQLiteProcessRecorder(
    _lib.SQLiteProcessRecorder, SubscribableSQLiteApplicationRecorder
):
    """The library's process recorder (events plus tracking in one transaction), whose
    saves also wake subscribers and which can itself be followed."""


class RowidSnapshotRecorder(_lib.SQLiteAggregateRecorder):
    """The library's aggregate recorder (used for snapshots) on an ordinary rowid table.

    ``create_table`` also converts a ``WITHOUT ROWID`` table left by the library's
    recorder, in one transaction, keeping the latest two snapshots of each plan (the
    ones ``PlanService`` would keep): the older ones only cost space and lookups.
    """

    KEPT_ON_CONVERSION = 2

    def construct_create_table_statements(self) -> list[str]:
        return [self._create_statement(self.events_table_name)]

    @staticmethod
    def _create_statement(table: str) -> str:
        return (
            f"CREATE TABLE IF NOT EXISTS {table} ("
            "originator_id TEXT, originator_version INTEGER, topic TEXT, state BLOB, "
            "PRIMARY KEY (originator_id, originator_version))"
        )

    def _create_table(self, c: _lib.SQLiteCursor) -> None:
        c.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?", (self.events_table_name,))
        row = c.fetchone()
        if row is not None and "WITHOUT ROWID" in row[0].upper():
            self._convert(c)
        super()._create_table(c)

    def _convert(self, c: _lib.SQLiteCursor) -> None:
        table, converted = self.events_table_name, f"{self.events_table_name}_rowid"
        c.execute(f"DROP TABLE IF EXISTS {converted}")
        c.execute(self._create_statement(converted))
        c.execute(
            f"INSERT INTO {converted} SELECT * FROM {table} AS s WHERE ("
            f"SELECT COUNT(*) FROM {table} AS newer WHERE newer.originator_id = s.originator_id "
            "AND newer.originator_version > s.originator_version) < ?",
            (self.KEPT_ON_CONVERSION,),
        )
        c.execute(f"DROP TABLE {table}")
        c.execute(f"ALTER TABLE {converted} RENAME TO {table}")


class DurableSQLiteFactory(_lib.SQLiteFactory):
    """The library's SQLite factory with the durable datastore, subscribable
    recorders and snapshots in a rowid table. The tracking recorder is the library's
    class, running on the same durable datastore.

    Extra environment key: ``SQLITE_POLL_INTERVAL`` (seconds, default 0.05).
    """

    SQLITE_POLL_INTERVAL = "SQLITE_POLL_INTERVAL"

    aggregate_recorder_class = RowidSnapshotRecorder
    application_recorder_class = SubscribableSQLiteApplicationRecorder
    process_recorder_class = SubscribableSQLiteProcessRecorder
    datastore_class: type[DurableSQLiteDatastore] = DurableSQLiteDatastore

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        poll_interval_str = (self.env.get(self.SQLITE_POLL_INTERVAL) or "").strip()
        try:
            poll_interval = float(poll_interval_str or DEFAULT_POLL_INTERVAL)
        except ValueError:
            msg = (
                f"SQLite environment value for key '{self.SQLITE_POLL_INTERVAL}' "
                f"is invalid. If set, a number of seconds is expected: "
                f"'{poll_interval_str}'"
            )
            raise OSError(msg) from None
        if poll_interval <= 0:
            msg = f"'{self.SQLITE_POLL_INTERVAL}' must be positive: {poll_interval}"
            raise OSError(msg)
        # The library builds its datastore inline from the environment; rebuild it
        # from the settings it read (no connection has been opened yet).
        plain = self.datastore
        self.datastore = self.datastore_class(
            db_name=plain.pool.db_name,
            lock_timeout=plain.pool.lock_timeout,
            single_row_tracking=plain.single_row_tracking,
            originator_id_type=plain.originator_id_type,
            poll_interval=poll_interval,
        )
        plain.close()


Factory = DurableSQLiteFactory
