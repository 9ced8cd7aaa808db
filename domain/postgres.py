"""PostgreSQL persistence for Polku: the library's PostgreSQL module, with events
inserted in one round trip on a connection kept for inserting.

Select it with ``PERSISTENCE_MODULE=domain.postgres`` and the library's ``POSTGRES_*``
settings. It differs from ``eventsourcing.postgres`` in these ways only: the application
recorder's ``insert_events``, the aggregate recorder's (the snapshots') insert, how
``POSTGRES_PRE_PING`` checks a pooled connection, TCP keepalives on every connection
(``KEEPALIVES``), the name every connection shows in ``pg_stat_activity``
(``POSTGRES_APPLICATION_NAME``, unless ``PGAPPNAME`` names the process), a pool's first
open that waits for its connections (``_PoolFilledOnFirstOpen``), schema and table names
checked (``domain.storage.check_schema``, ``check_name``), ``create_table`` run by one
instance at a time (``_CreatedOneAtATime``), and the reads of a plan's events and
snapshots (binary).

The library's insert is a pipelined transaction of six statements (``BEGIN``, ``SET
LOCAL lock_timeout``, ``LOCK TABLE ... IN EXCLUSIVE MODE``, ``NOTIFY``, ``INSERT ...
RETURNING``, ``COMMIT``), with a sync between the insert and the commit; it cost 1.2 ms a
save here, four times a raw insert, and nearly all of it is statements and round trips
(docs/performance.md, "Event store (issue 2)"). Here the same work is one stored
function, created with the tables, and each save is one ``SELECT`` in autocommit. It
keeps every guarantee of the library's insert:

* the same ``EXCLUSIVE`` table lock, taken before the insert draws notification ids, so
  ids commit in the order they were drawn and a follower never passes a gap that a
  slower transaction fills later (see ``PostgresApplicationRecorder._lock_table``);
* the ``NOTIFY`` on the channel that ``PostgresSubscription`` listens to, sent at commit;
* the lock wait bounded by the datastore's ``lock_timeout`` (``set_config(...,
  true)``, i.e. ``SET LOCAL``), passed with each call, so instances configured
  differently never overwrite each other's function;
* several events in one call, inserted in the order given, their notification ids
  returned in that order;
* a version clash is a unique violation, which the datastore turns into the library's
  ``IntegrityError`` (so ``PlanService`` reloads and retries as before), and a lock
  timeout an ``OperationalError``, retried by the same ``@retry`` as the library's.

The function takes the events as one array per column, sent as binary parameters of a
server-side prepared statement; a single event (one command's) as four one-element
``ARRAY[...]`` of scalars. The library's array of a composite type went as text: the
client quoted every event (its state hex-encoded, twice its size) into an array literal
and the server parsed it back, about 0.1 ms of client CPU and as much server time a save.
The function of earlier versions (one argument of that composite type, same name) is an
overload of this one and is left in place, so an instance still running the earlier code
keeps saving events while the new one starts (both take the same table lock); it can be
dropped once none is left. That makes the event store safe to share across the two
releases, not a rolling upgrade as a whole: a release that changes the read model's
version needs every instance of the earlier one stopped first (docs/deployment.md,
"Database set-up at start"; from read-model version 5 on an older writer is refused
rather than corrupting it, ``projections.views``).

The inserts go through one connection that the recorder keeps (``InsertConnection``),
not through the pool: the ``EXCLUSIVE`` lock lets one insert at a time go on in the
whole database anyway, and a pool checkout, its check and a new cursor cost about
0.06 ms of CPU and 0.1 ms a save. Threads wait for the connection at most the pool's
``timeout``, as they waited for a pooled one; a connection found dead (a server
restart) is replaced, as the pool replaces its own.

The function belongs to one events table (its name is the table's name plus
``_insert``), so two applications in one schema do not share it; the library's own
``es_insert_events_<type>`` function, which takes no table lock, is not created.

``POSTGRES_PRE_PING`` makes the library's pool send an empty query on every checkout, a
second round trip for each save and read (0.05-0.1 ms here, a third of a raw insert). Here
the pool first asks the socket, without a round trip, whether the server has sent anything
to the idle connection, and pings only then: a server that restarted or ended the session
has closed the socket (or sent its farewell), so such a connection is still found and
replaced, as ``PlanService`` relies on to answer a database restart with 503 and heal.
The insert connection is checked the same way before each insert.

A plan's events and snapshots are read in binary (``_ReadInBinary``): the library's text
read has the server hex-encode the state and the client decode it.

The subscription (``ListeningSubscription``, what a projection runner follows) pulls once
more as soon as its ``LISTEN`` is in place, and ends it before its connection goes back to
the pool (see the class).

Everything else (tables, notification reads, tracking, the process
recorder) is the library's. The process recorder keeps the library's pipelined insert:
it writes tracking in the same transaction, and Polku does not use one.

Note: like ``domain.sqlite``, this module must not import the library's factory by
name (``InfrastructureFactory.construct`` looks for the single factory class in the
module); it is reached through the module object.
"""

from __future__ import annotations

import re
import select
import threading
import time
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING, Any

import psycopg
from eventsourcing import persistence
from eventsourcing import postgres as _lib
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.utils import retry
from psycopg.pq import TransactionStatus
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal
from psycopg_pool import PoolTimeout

from domain.storage import check_schema

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from eventsourcing.persistence import StoredEvent
    from eventsourcing.utils import Environment, EnvType
    from psycopg import Connection, Cursor
    from psycopg.rows import DictRow, TupleRow


KEEPALIVES: dict[str, int] = {
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 3,
    "tcp_user_timeout": 10_000,
}
"""libpq's TCP keepalives, set on every connection of the pool and the insert connection.

``check_if_server_spoke`` sees a connection the server closed, but not one that a NAT
gateway, load balancer or failover dropped without a word (no FIN ever comes). With
keepalives the kernel probes an idle connection after 5 s, so such a connection is found
dead within about 10 s (and the probes keep a NAT's mapping alive meanwhile): its socket
then reports an error, the check pings, and the pool replaces it, as the pre-ping did.
"""

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

CREATE_WAIT_S = 60
"""How long an instance waits at start for another one to finish creating the tables."""


def check_name(name: str, setting: str) -> str:
    """``name`` if it is a plain SQL name, else a ``ValueError`` naming the ``setting``: for
    table names (schema names: ``domain.storage.check_schema``).

    Table names are quoted as identifiers, but they also go into the body of the insert
    function, which is dollar-quoted (``$BODY$``); a name containing that would end the
    body early. Only letters, digits and ``_`` are accepted, at most 63.
    """
    if not _NAME.fullmatch(name):
        msg = (
            f"Invalid {setting} {name!r}: use only letters, digits and _, "
            "not starting with a digit, at most 63 characters."
        )
        raise ValueError(msg)
    return name


def connect_like_pool(datastore: _lib.PostgresDatastore) -> Connection[Any]:
    """A connection as the pool's ``_connect`` makes one: its settings (keepalives
    included), password function, connect timeout and configure function (autocommit,
    session timeouts)."""
    pool = datastore.pool
    kwargs = dict(pool.kwargs or {})
    if pool.get_password_func:
        kwargs["password"] = pool.get_password_func()
    kwargs["connect_timeout"] = max(round(pool.timeout), 1)
    conn = pool.connection_class.connect(pool.conninfo, **kwargs)
    try:
        datastore.after_connect_func()(conn)
    except BaseException:
        conn.close()
        raise
    return conn


class _CreatedOneAtATime(_lib.PostgresRecorder):
    """A recorder whose names are checked (``check_schema``, ``check_name``) and whose
    ``create_table`` runs one instance at a time in the schema.

    The library creates its composite type first, in a transaction of its own, and
    ignores only ``DuplicateObject``; but two sessions creating the same type at once
    fail one with a unique violation, and two replacing the same function at once fail
    one with "tuple concurrently updated". So the whole of ``create_table`` holds a
    session advisory lock of the schema, on a connection of its own, closed after.
    """

    def __init__(self, datastore: _lib.PostgresDatastore, *, events_table_name: str = "stored_events"):
        check_schema(datastore.schema, "PostgreSQL schema")
        check_name(events_table_name, "PostgreSQL table name")
        super().__init__(datastore, events_table_name=events_table_name)  # type: ignore[call-arg]

    def create_table(self) -> None:
        conn = connect_like_pool(self.datastore)
        try:
            conn.execute(SQL("SET lock_timeout = {}").format(Literal(f"{CREATE_WAIT_S}s")))
            conn.execute("SELECT pg_advisory_lock(hashtext(%s))", (f"{self.datastore.schema}.create_table",))
            super().create_table()
        except psycopg.Error as error:
            raise _as_library_error(error) from error
        finally:
            conn.close()  # ends the session, and with it the lock


class _ReadInBinary(_lib.PostgresAggregateRecorder):
    """A recorder whose ``select_events`` reads the rows in binary, with the statement
    rendered once for each shape of query.

    The library reads through a text cursor: the server hex-encodes the state (twice its
    size) and the client decodes it, 3.8 ms of CPU for a 560 kB snapshot where binary
    takes 1.1 ms; and it renders its composed statement again at every call. The read is
    tried again like the library's (the same ``@retry``), so a connection that a database
    restart ended, or a server still starting up, is healed within about 2 s, not
    answered ``StoreUnavailable`` at once.
    """

    def __init__(self, datastore: _lib.PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self._select_statements: dict[tuple[bool, bool, bool, bool], str] = {}

    def _select_statement(self, *, gt: bool, lte: bool, desc: bool, limit: bool) -> str:
        shape = (gt, lte, desc, limit)
        statement = self._select_statements.get(shape)
        if statement is None:
            statement = SQL(
                "SELECT originator_id, originator_version, topic, state FROM {schema}.{table} "
                "WHERE originator_id = %s{gt}{lte} ORDER BY originator_version {order}{limit}"
            ).format(
                schema=Identifier(self.datastore.schema),
                table=Identifier(self.events_table_name),
                gt=SQL(" AND originator_version > %s" if gt else ""),
                lte=SQL(" AND originator_version <= %s" if lte else ""),
                order=SQL("DESC" if desc else "ASC"),
                limit=SQL(" LIMIT %s" if limit else ""),
            ).as_string()
            self._select_statements[shape] = statement
        return statement

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def select_events(
        self,
        originator_id: Any,
        *,
        gt: int | None = None,
        lte: int | None = None,
        desc: bool = False,
        limit: int | None = None,
    ) -> Sequence[StoredEvent]:
        statement = self._select_statement(gt=gt is not None, lte=lte is not None, desc=desc, limit=limit is not None)
        params = [p for p in (originator_id, gt, lte, limit) if p is not None]
        with self.datastore.get_connection() as conn, conn.cursor(binary=True, row_factory=tuple_row) as curs:
            curs.execute(statement, params, prepare=True)
            return [
                persistence.StoredEvent(originator_id=i, originator_version=v, topic=t, state=s)
                for i, v, t, s in curs.fetchall()
            ]


def _columns(stored_events: Sequence[StoredEvent]) -> tuple[list[Any], list[int], list[str], list[bytes]]:
    """The events as one list per column, to be sent as binary arrays."""
    return (
        [e.originator_id for e in stored_events],
        [e.originator_version for e in stored_events],
        [e.topic for e in stored_events],
        [e.state for e in stored_events],
    )


class BinaryPostgresAggregateRecorder(_CreatedOneAtATime, _ReadInBinary, _lib.PostgresAggregateRecorder):
    """The library's aggregate recorder (Polku's snapshots), inserting binary column arrays.

    The library sends the rows as a text array of its composite type: a 560 kB snapshot
    of a 10,000-event plan became 1.1 MB of hex, quoted twice by regular expressions in
    Python, 23 ms of CPU in the snapshot writer's thread, most of it holding the GIL that
    the commands being answered meanwhile wait for; as binary arrays 1.4 ms.
    """

    def __init__(self, datastore: _lib.PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.sql_insert_columns = SQL(
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT * FROM unnest(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[])"
        ).format(
            schema=Identifier(self.datastore.schema),
            table=Identifier(self.events_table_name),
            id_type=SQL(self.datastore.originator_id_type),
        ).as_string()

    def _insert_stored_events(self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **_: Any) -> None:
        curs.execute(self.sql_insert_columns, _columns(stored_events))


class OneTripPostgresApplicationRecorder(_CreatedOneAtATime, _ReadInBinary, _lib.PostgresApplicationRecorder):
    """The library's application recorder, inserting through one stored function call."""

    def __init__(self, datastore: _lib.PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_function_name = f"{self.events_table_name}_insert"
        self.check_identifier_length(self.insert_function_name)
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        function = SQL("{schema}.{function}").format(schema=schema, function=Identifier(self.insert_function_name))
        id_type = SQL(self.datastore.originator_id_type)
        self.sql_create_statements[self.create_insert_function_statement_index] = SQL(
            "CREATE OR REPLACE FUNCTION {function}"
            "(ids {id_type}[], versions bigint[], topics text[], states bytea[], lock_wait text) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
            "BEGIN "
            "PERFORM set_config('lock_timeout', lock_wait, true); "
            "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "NOTIFY {channel}; "
            "RETURN QUERY "
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(ids, versions, topics, states) WITH ORDINALITY "
            "AS e(originator_id, originator_version, topic, state, ordinality) ORDER BY e.ordinality "
            "RETURNING notification_id; "
            "END; $BODY$"
        ).format(function=function, id_type=id_type, schema=schema, table=table, channel=Identifier(self.channel_name))
        # Rendered once: psycopg renders a composed statement again at every execute
        # (60 µs here), and caches the parsing of a plain string.
        self.sql_insert_one = SQL(
            "SELECT {function}(ARRAY[%b::{id_type}], ARRAY[%b::bigint], ARRAY[%b::text], ARRAY[%b::bytea], %b)"
        ).format(function=function, id_type=id_type).as_string()
        self.sql_insert_many = SQL(
            "SELECT {function}(%b::{id_type}[], %b::bigint[], %b::text[], %b::bytea[], %b)"
        ).format(function=function, id_type=id_type).as_string()
        self.insert_connection = InsertConnection(self.datastore)

    def subscribe(self, gt: int | None = None, topics: Sequence[str] = ()) -> ListeningSubscription:
        return ListeningSubscription(recorder=self, gt=gt, topics=topics)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return None
        lock_wait = f"{round(self.datastore.lock_timeout * 1000)}ms"
        if len(stored_events) == 1:
            (event,) = stored_events
            query = self.sql_insert_one
            params: tuple[Any, ...] = (event.originator_id, event.originator_version, event.topic, event.state, lock_wait)
        else:
            query = self.sql_insert_many
            params = (*_columns(stored_events), lock_wait)
        with self.insert_connection.cursor() as curs:
            curs.execute(query, params, prepare=True)
            return [notification_id for (notification_id,) in curs.fetchall()]


class ListeningSubscription(_lib.PostgresSubscription):
    """The library's subscription, without its two gaps at the ends of a ``LISTEN``.

    The library starts its first pull and its ``LISTEN`` in two threads at once, so an
    event committed after the first pull read the table and before the ``LISTEN`` took
    effect was never notified: the subscription (a read model's follower) stayed one
    event behind until the next write. Here the thread that listens asks for one more
    pull once its ``LISTEN`` is in place, as PostgreSQL's documentation of ``LISTEN`` says
    (listen first, then read the state, then follow the notices).

    The library also gave the connection back to the pool still listening, where it went on
    collecting every notice of the channel for whoever used it next; here ``UNLISTEN`` ends that.
    """

    def _listen(self) -> None:
        try:
            with self._recorder.datastore.get_connection() as conn:
                conn.execute(SQL("LISTEN {0}").format(Identifier(self._recorder.channel_name)))
                try:
                    self._has_been_notified.set()
                    while not self._has_been_stopped and not self._thread_error:
                        for _ in conn.notifies(timeout=0.1, stop_after=1):
                            self._has_been_notified.set()
                finally:
                    with suppress(psycopg.Error):  # a broken connection is dropped by the pool anyway
                        conn.execute("UNLISTEN *")
        except BaseException as error:
            if self._thread_error is None:
                self._thread_error = error
            self.stop()


_ERRORS: tuple[tuple[type[psycopg.Error], type[persistence.PersistenceError]], ...] = (
    (psycopg.InterfaceError, persistence.InterfaceError),
    (psycopg.OperationalError, persistence.OperationalError),
    (psycopg.DataError, persistence.DataError),
    (psycopg.IntegrityError, persistence.IntegrityError),
    (psycopg.InternalError, persistence.InternalError),
    (psycopg.ProgrammingError, persistence.ProgrammingError),
    (psycopg.NotSupportedError, persistence.NotSupportedError),
    (psycopg.DatabaseError, persistence.DatabaseError),
    (psycopg.Error, persistence.PersistenceError),
)
"""psycopg's errors as the library's, in the order of ``PostgresDatastore.get_connection``."""


def _as_library_error(error: psycopg.Error) -> persistence.PersistenceError:
    ours = next(ours for theirs, ours in _ERRORS if isinstance(error, theirs))
    return ours(str(error))


class InsertConnectionBusy(OperationalError):
    """Other threads of this process kept the insert connection for the pool's whole
    ``timeout``: they were inserting, so the database is reachable and busy with writes.

    The library's ``OperationalError``, so its ``@retry`` tries the insert again; when every
    try waited in vain, ``PlanService`` refuses the command ``StoreBusy``, as for a lock
    timeout, not ``StoreUnavailable`` (no database error lies under it to tell which).
    """


class InsertConnection:
    """One connection, configured like the datastore's pooled ones, for one thread at a time.

    ``cursor()`` waits for the connection at most the pool's ``timeout`` (then raises
    ``InsertConnectionBusy``, as a pool that has no connection to give raises
    ``PoolTimeout``), checks it as ``check_if_server_spoke`` checks a pooled one, opens a
    new one if there is none or it is dead or older than the pool's ``max_lifetime``, and
    gives the connection's one cursor (rows as tuples, prepared statements kept). After an
    error the connection is kept only if it is still usable and idle; psycopg's errors
    come out as the library's.
    """

    def __init__(self, datastore: _lib.PostgresDatastore):
        self.datastore = datastore
        self._lock = threading.Lock()
        self._conn: Connection[Any] | None = None
        self._cursor: Cursor[TupleRow] | None = None
        self._expires_at = 0.0

    @contextmanager
    def cursor(self) -> Iterator[Cursor[TupleRow]]:
        pool = self.datastore.pool
        if not self._lock.acquire(timeout=pool.timeout):
            raise InsertConnectionBusy(f"No connection to insert with after {pool.timeout:g} s")
        try:
            yield self._usable_cursor()
        except psycopg.Error as error:
            raise _as_library_error(error) from error
        finally:
            conn = self._conn
            if conn is not None and (conn.broken or conn.info.transaction_status != TransactionStatus.IDLE):
                self._discard()
            self._lock.release()

    def _usable_cursor(self) -> Cursor[TupleRow]:
        if self._conn is not None and time.monotonic() < self._expires_at:
            try:
                check_if_server_spoke(self._conn)
            except psycopg.Error:
                self._discard()
        else:
            self._discard()
        if self._cursor is None:
            self._cursor = self._connect().cursor(row_factory=tuple_row)
        return self._cursor

    def _connect(self) -> Connection[Any]:
        conn = connect_like_pool(self.datastore)
        self._conn = conn
        self._expires_at = time.monotonic() + self.datastore.pool.max_lifetime
        return conn

    def _discard(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self._conn = self._cursor = None

    def close(self) -> None:
        with self._lock:
            self._discard()


def check_if_server_spoke(conn: Connection[Any]) -> None:
    """Pool check on checkout: ping (an empty query) only a connection that is closed or
    has unread input while idle, i.e. one the server may have ended; else no round trip.

    Unread input can also be a notification for a connection that LISTENed before it
    came back to the pool; the ping then reads it, harmlessly.
    """
    if not conn.closed:
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN)
        if not poller.poll(0):
            return
    _lib.ConnectionPool.check_connection(conn)


class _PoolFilledOnFirstOpen(_lib.ConnectionPool):  # type: ignore[type-arg]
    """The library's pool, whose first ``open`` waits until its ``min_size`` connections are made.

    The library opens the pool at the first ``get_connection`` without waiting, and asks for
    a connection at once: none is ready yet, so the pool opens one more than ``min_size``,
    and keeps it until it has been unused for ``max_idle`` (10 minutes).

    The wait is not psycopg_pool's ``open(wait=True)``: when the connections do not come in
    time, that closes the pool, and a closed pool cannot be opened again, so every later
    ``get_connection`` of the datastore would fail. Here the first caller gets
    ``PoolTimeout`` and the pool stays open, connecting in the background as the library's
    does, for the next callers.
    """

    FILL_CHECK_S = 0.005
    """How often the first ``open`` looks whether the connections are made."""

    def __init__(self, *args: Any, **kwargs: Any):
        self._first_open = threading.Lock()
        super().__init__(*args, **kwargs)

    def open(self, wait: bool = False, timeout: float = 30.0) -> None:
        if self.closed:
            with self._first_open:
                if self.closed:
                    super().open(wait=False)
                    self._wait_until_filled(timeout)
                    return
        super().open(wait, timeout)

    def _wait_until_filled(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.get_stats()["pool_available"] < self.min_size:
            if time.monotonic() >= deadline:
                msg = f"pool initialization incomplete after {timeout:g} sec"
                raise PoolTimeout(msg)
            time.sleep(self.FILL_CHECK_S)


class OneTripPostgresFactory(_lib.PostgresFactory):
    """The library's PostgreSQL factory with the one-trip application recorder (whose
    insert connection it closes with the pool), the binary aggregate recorder, with
    ``check_if_server_spoke`` as the pool's check when ``POSTGRES_PRE_PING`` is set, and
    ``POSTGRES_APPLICATION_NAME`` as every connection's ``application_name`` unless the
    process has one (``PGAPPNAME``), so that ``pg_stat_activity`` tells what holds the
    connections (docs/deployment.md)."""

    aggregate_recorder_class = BinaryPostgresAggregateRecorder
    application_recorder_class = OneTripPostgresApplicationRecorder
    POSTGRES_APPLICATION_NAME = "POSTGRES_APPLICATION_NAME"

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        # The library builds its pool inline; rebuild it from the same settings with
        # keepalives, the name, the cheaper check and a first open that waits (no
        # connection has been opened yet).
        plain = self.datastore.pool
        name = self.env.get(self.POSTGRES_APPLICATION_NAME)
        self.datastore.pool = _PoolFilledOnFirstOpen(
            get_password_func=plain.get_password_func,
            connection_class=plain.connection_class,
            kwargs={**(plain.kwargs or {}), **KEEPALIVES, **({"fallback_application_name": name} if name else {})},
            min_size=plain.min_size,
            max_size=plain.max_size,
            open=False,
            configure=self.datastore.after_connect_func(),
            timeout=plain.timeout,
            max_waiting=plain.max_waiting,
            max_lifetime=plain.max_lifetime,
            check=check_if_server_spoke if self.datastore.pre_ping else None,
        )
        plain.close()
        self._insert_connections: list[InsertConnection] = []

    def application_recorder(self) -> _lib.PostgresApplicationRecorder:
        recorder = super().application_recorder()
        if isinstance(recorder, OneTripPostgresApplicationRecorder):
            self._insert_connections.append(recorder.insert_connection)
        return recorder

    def close(self) -> None:
        """Close the insert connections of the recorders made here, then the pool."""
        for insert_connection in self._insert_connections:
            insert_connection.close()
        super().close()


Factory = OneTripPostgresFactory
