"""PostgreSQL persistence for Polku: the library's PostgreSQL module, with events
inserted in one round trip.

Select it with ``PERSISTENCE_MODULE=domain.postgres`` and the library's ``POSTGRES_*``
settings. It differs from ``eventsourcing.postgres`` in two ways only: the application
recorder's ``insert_events``, and how ``POSTGRES_PRE_PING`` checks a pooled connection.

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

The function belongs to one events table (its name is the table's name plus
``_insert``), so two applications in one schema do not share it; the library's own
``es_insert_events_<type>`` function, which takes no table lock, is not created.

``POSTGRES_PRE_PING`` makes the library's pool send an empty query on every checkout, a
second round trip for each save and read (0.05-0.1 ms here, a third of a raw insert). Here
the pool first asks the socket, without a round trip, whether the server has sent anything
to the idle connection, and pings only then: a server that restarted or ended the session
has closed the socket (or sent its farewell), so such a connection is still found and
replaced, as ``PlanService`` relies on to answer a database restart with 503 and heal.

Everything else (tables, reads, subscriptions, snapshots, tracking, the process
recorder) is the library's. The process recorder keeps the library's pipelined insert:
it writes tracking in the same transaction, and Polku does not use one.

Note: like ``domain.sqlite``, this module must not import the library's factory by
name (``InfrastructureFactory.construct`` looks for the single factory class in the
module); it is reached through the module object.
"""

from __future__ import annotations

import select
from typing import TYPE_CHECKING, Any

from eventsourcing import postgres as _lib
from eventsourcing.persistence import InterfaceError, OperationalError
from eventsourcing.utils import retry
from psycopg.rows import tuple_row
from psycopg.sql import SQL, Identifier, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence

    from eventsourcing.persistence import StoredEvent
    from eventsourcing.utils import Environment, EnvType
    from psycopg import Connection, Cursor
    from psycopg.rows import DictRow


class OneTripPostgresApplicationRecorder(_lib.PostgresApplicationRecorder):
    """The library's application recorder, inserting through one stored function call."""

    def __init__(self, datastore: _lib.PostgresDatastore, *, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name=events_table_name)
        self.insert_function_name = f"{self.events_table_name}_insert"
        self.check_identifier_length(self.insert_function_name)
        schema = Identifier(self.datastore.schema)
        table = Identifier(self.events_table_name)
        function = Identifier(self.insert_function_name)
        self.sql_create_statements[self.create_insert_function_statement_index] = SQL(
            "CREATE OR REPLACE FUNCTION {schema}.{function}"
            "(events {schema}.{event_type}[], lock_wait text) "
            "RETURNS SETOF bigint LANGUAGE plpgsql AS $BODY$ "
            "BEGIN "
            "PERFORM set_config('lock_timeout', lock_wait, true); "
            "LOCK TABLE {schema}.{table} IN EXCLUSIVE MODE; "
            "NOTIFY {channel}; "
            "RETURN QUERY "
            "INSERT INTO {schema}.{table} (originator_id, originator_version, topic, state) "
            "SELECT e.originator_id, e.originator_version, e.topic, e.state "
            "FROM unnest(events) WITH ORDINALITY AS e ORDER BY e.ordinality "
            "RETURNING notification_id; "
            "END; $BODY$"
        ).format(
            schema=schema,
            function=function,
            event_type=Identifier(self.stored_event_type_name),
            table=table,
            channel=Identifier(self.channel_name),
        )
        self.sql_call_insert_function = SQL("SELECT {schema}.{function}(%s, %s)").format(
            schema=schema, function=function
        )
        self.sql_serialise_create = SQL("SELECT pg_advisory_xact_lock(hashtext({name}))").format(
            name=Literal(f"{self.datastore.schema}.{self.insert_function_name}")
        )

    def _create_table(self, curs: Cursor[DictRow]) -> None:
        """Create the tables and the function, one instance at a time.

        Two instances starting together would otherwise replace the function in
        concurrent transactions, and PostgreSQL fails one with "tuple concurrently
        updated". The advisory lock is held until this transaction ends.
        """
        curs.execute(self.sql_serialise_create)
        super()._create_table(curs)

    @retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
    def insert_events(self, stored_events: Sequence[StoredEvent], **kwargs: Any) -> Sequence[int] | None:
        if not stored_events:
            return None
        events = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        lock_wait = f"{round(self.datastore.lock_timeout * 1000)}ms"
        with self.datastore.get_connection() as conn, conn.cursor(row_factory=tuple_row) as curs:
            assert conn.autocommit
            curs.execute(self.sql_call_insert_function, (events, lock_wait), prepare=True)
            return [notification_id for (notification_id,) in curs.fetchall()]


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


class OneTripPostgresFactory(_lib.PostgresFactory):
    """The library's PostgreSQL factory with the one-trip application recorder, and with
    ``check_if_server_spoke`` as the pool's check when ``POSTGRES_PRE_PING`` is set."""

    application_recorder_class = OneTripPostgresApplicationRecorder

    def __init__(self, env: Environment | EnvType | None):
        super().__init__(env)
        if self.datastore.pre_ping:
            # The library builds its pool inline; rebuild it from the same settings with
            # the cheaper check (no connection has been opened yet).
            plain = self.datastore.pool
            self.datastore.pool = _lib.ConnectionPool(
                get_password_func=plain.get_password_func,
                connection_class=plain.connection_class,
                kwargs=plain.kwargs,
                min_size=plain.min_size,
                max_size=plain.max_size,
                open=False,
                configure=self.datastore.after_connect_func(),
                timeout=plain.timeout,
                max_waiting=plain.max_waiting,
                max_lifetime=plain.max_lifetime,
                check=check_if_server_spoke,
            )
            plain.close()


Factory = OneTripPostgresFactory
