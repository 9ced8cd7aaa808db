"""The plan service on PostgreSQL: two instances over one database, what the tables hold,
where the keys live, erasure, how a save is inserted (one call of the recorder's stored
function, `domain.postgres`) and how long a save waits for a lock.

Each test gets a fresh schema (`pg_schema`); the plan keys go to `<schema>_keys`, which
this module drops afterwards. The last test checks the durability settings of the SQLite
store that `PlanService` uses by default.

"""

from __future__ import annotations

import base64
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from eventsourcing import postgres as _lib
from eventsourcing.persistence import IntegrityError, OperationalError, StoredEvent
from psycopg import sql
from psycopg_pool import PoolTimeout

from domain.application import LIBRARY_ATTEMPTS, PlanService
from domain.crypto import ENCRYPTED, ErasedPlanEvent
from domain.erasure import ErasureRecord
from domain.errors import ConfigurationError, DomainError, PlanErased, StoreBusy
from domain.postgres import (
    BinaryPostgresAggregateRecorder,
    InsertConnectionBusy,
    OneTripPostgresApplicationRecorder,
    _PoolFilledOnFirstOpen,
    check_if_server_spoke,
)
from domain.keys import SQLiteKeyring
from domain.sqlite import DurableSQLiteConnectionPool
from domain.storage import LOCK_TIMEOUT_MAX_S, PG_SCHEMA_MAX, StoreSettings
from domain.values import Actor
from web.accesslog import accesslog_schema
from web.accounts import accounts_schema

START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
TODAY = START.date()

AINO = Actor(person_id="p-aino", name="Aino Lehto", organisation_id="org-hc", organisation_name="Oulun terveysasema")
SANNA = Actor(
    person_id="p-sanna", name="Sanna Koski", organisation_id="org-so", organisation_name="Oulun sosiaalipalvelut"
)

CLIENT_NAME = "Matti Meikäläinen"
PERSONAL_TEXTS = [
    CLIENT_NAME,
    "Meikäläinen",
    "Selkäkipu haittaa istumatyötä",
    "Velkajärjestely kesken",
    "Kertoi päihteiden käytöstä",
    "040 765 4321",
    AINO.name,
    SANNA.name,
]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


def _connect(environ: dict[str, str]) -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=environ["POLKU_PG_HOST"],
        port=int(environ["POLKU_PG_PORT"]),
        user=environ["POLKU_PG_USER"],
        dbname=environ["POLKU_PG_DB"],
        autocommit=True,
    )


@pytest.fixture
def environ(postgres_env: dict[str, str], pg_schema: str) -> Iterator[dict[str, str]]:
    """Polku's settings on this test's schema, with a master key; drops `<schema>_keys` after."""
    yield {
        **postgres_env,
        "POLKU_PG_SCHEMA": pg_schema,
        "POLKU_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }
    with _connect(postgres_env) as conn:
        conn.execute("SET lock_timeout = '30s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{pg_schema}_keys")))


@pytest.fixture
def services(environ: dict[str, str]) -> Iterator[Callable[..., PlanService]]:
    """Makes plan services on the test schema (`**overrides` replace POLKU_* settings);
    closes them all at the end, before the schema is dropped."""
    made: list[PlanService] = []
    clock = Clock()

    def make(**overrides: str) -> PlanService:
        service = PlanService(StoreSettings.from_environ({**environ, **overrides}), clock=clock)
        made.append(service)
        return service

    yield make
    for service in made:
        service.close()


@pytest.fixture
def db(environ: dict[str, str]) -> Iterator[psycopg.Connection[Any]]:
    with _connect(environ) as conn:
        yield conn


def open_plan(service: PlanService, command_id: str = "open-1", client_name: str = CLIENT_NAME) -> str:
    return service.open_plan(
        by=AINO,
        command_id=command_id,
        client_name=client_name,
        segment="unemployed",
        language="fi",
        referring_party="employment_services",
        expert_profession="TOIKE-asiantuntija",
    ).plan_id


def fill_plan(service: PlanService, plan_id: str, prefix: str = "") -> None:
    """Needs, a network member with contact details, a step, a goal and notes: every kind of
    free text and personal detail a plan holds."""
    need = service.record_need(
        plan_id,
        by=AINO,
        command_id=f"{prefix}need",
        category="health",
        description="Selkäkipu haittaa istumatyötä",
        financial="Velkajärjestely kesken",
    )
    service.give_consent(
        plan_id,
        by=AINO,
        command_id=f"{prefix}consent",
        organisation_id=SANNA.organisation_id,
        organisation_name=SANNA.organisation_name,
        valid_from=TODAY,
    )
    member = service.add_member(
        plan_id,
        by=AINO,
        command_id=f"{prefix}member",
        person_id=SANNA.person_id,
        name=SANNA.name,
        profession="sosiaalityöntekijä",
        organisation_id=SANNA.organisation_id,
        organisation_name=SANNA.organisation_name,
        contact="040 765 4321",
    )
    service.name_counterpart(
        plan_id, by=AINO, command_id=f"{prefix}counterpart", member_id=member.item_id, seen_revision=0
    )
    service.plan_step(
        plan_id,
        by=SANNA,
        command_id=f"{prefix}step",
        title="Kuntoutustutkimus",
        need_id=need.item_id,
        responsible_member_id=member.item_id,
        planned_start=TODAY,
        planned_end=TODAY + timedelta(days=30),
    )
    service.set_goal(
        plan_id,
        by=AINO,
        command_id=f"{prefix}goal",
        title="Osa-aikatyö",
        need_ids=[need.item_id],
        target_date=date(2026, 9, 1),
    )
    service.add_note(plan_id, by=SANNA, command_id=f"{prefix}note", text="Kertoi päihteiden käytöstä")


def plan_state(plan: Any) -> dict[str, Any]:
    return {name: value for name, value in vars(plan).items() if name != "_pending_events"}


def table_names(service: PlanService) -> tuple[str, str]:
    """The events and snapshots tables, as the library named them."""
    assert service.snapshots is not None
    return service.recorder.events_table_name, service.snapshots.recorder.events_table_name


# --- two instances ------------------------------------------------------------------------


def test_a_second_instance_reads_and_continues_the_same_plan(services: Callable[..., PlanService]) -> None:
    first = services()
    plan_id = open_plan(first)
    fill_plan(first, plan_id)

    second = services()
    assert plan_state(second.get_plan(plan_id)) == plan_state(first.get_plan(plan_id))

    plan = second.get_plan(plan_id)
    step_id = next(iter(plan.steps))
    outcome = second.progress_step(
        plan_id, by=SANNA, command_id="start", step_id=step_id, seen_revision=1, status="started", on=TODAY
    )
    seen_by_first = first.get_plan(plan_id)  # its cache catches up with the store
    assert seen_by_first.version == outcome.version
    assert seen_by_first.steps[step_id].status == "started"

    repeated = first.progress_step(
        plan_id, by=SANNA, command_id="start", step_id=step_id, seen_revision=1, status="started", on=TODAY
    )
    assert repeated.repeated and repeated.version == outcome.version
    assert [str(i) for i in second.plan_ids()] == [plan_id]


# --- what the tables hold ------------------------------------------------------------------


def test_the_stored_events_and_snapshots_hold_no_personal_data_in_plain_form(
    services: Callable[..., PlanService], db: psycopg.Connection[Any], environ: dict[str, str]
) -> None:
    service = services()
    plan_id = open_plan(service)
    fill_plan(service, plan_id)
    service.take_snapshot(uuid.UUID(plan_id))
    events_table, snapshots_table = table_names(service)
    assert (events_table, snapshots_table) == ("polku_events", "polku_snapshots")
    schema = environ["POLKU_PG_SCHEMA"]

    rows = {}
    for table in (events_table, snapshots_table):
        query = sql.SQL("SELECT originator_id, topic, state FROM {}.{}").format(
            sql.Identifier(schema), sql.Identifier(table)
        )
        rows[table] = db.execute(query).fetchall()
    assert len(rows[events_table]) == service.get_plan(plan_id).version
    assert len(rows[snapshots_table]) == 1

    for table, records in rows.items():
        for originator_id, topic, state in records:
            state = bytes(state)
            assert str(originator_id) == plan_id  # ids, versions and topics stay in the clear
            assert state.startswith(ENCRYPTED), f"{table}: a {topic} is stored unencrypted"
            for text in PERSONAL_TEXTS:
                for form in (text.encode(), text.encode("unicode_escape"), text.encode("latin-1", "replace")):
                    assert form not in state, f"{table}: {text!r} is readable in a stored {topic}"


def test_the_plan_keys_live_in_their_own_schema(
    services: Callable[..., PlanService], db: psycopg.Connection[Any], environ: dict[str, str]
) -> None:
    service = services()
    plans = [open_plan(service, f"open-{n}", f"Asiakas {n}") for n in range(2)]
    schema = environ["POLKU_PG_SCHEMA"]

    def tables(in_schema: str) -> set[str]:
        query = "SELECT table_name FROM information_schema.tables WHERE table_schema = %s"
        return {name for (name,) in db.execute(query, (in_schema,)).fetchall()}

    assert tables(schema) == {"polku_events", "polku_snapshots"}
    assert tables(f"{schema}_keys") == {"plan_keys"}
    keys = dict(
        db.execute(
            sql.SQL("SELECT plan_id, wrapped_key FROM {}.plan_keys").format(sql.Identifier(f"{schema}_keys"))
        ).fetchall()
    )
    assert sorted(keys) == sorted(plans)
    for wrapped in keys.values():
        assert len(bytes(wrapped)) == 12 + 32 + 16  # nonce, AES-256 key, tag: wrapped, not bare


# --- the insert ---------------------------------------------------------------------------


def stored(plan_id: uuid.UUID, *versions: int) -> list[StoredEvent]:
    return [StoredEvent(plan_id, version, "topic", f"state {version}".encode()) for version in versions]


def test_a_save_is_one_call_of_the_recorders_function(
    services: Callable[..., PlanService], db: psycopg.Connection[Any], environ: dict[str, str]
) -> None:
    service = services()
    recorder = service.recorder
    assert type(recorder) is OneTripPostgresApplicationRecorder
    functions = db.execute(
        "SELECT proname FROM pg_proc WHERE pronamespace = %s::regnamespace", (environ["POLKU_PG_SCHEMA"],)
    ).fetchall()
    assert functions == [("polku_events_insert",)]  # the library's lock-less function is not made

    first, second = uuid.uuid4(), uuid.uuid4()
    ids = recorder.insert_events([*stored(first, 1, 2, 3), *stored(second, 1)])
    notifications = recorder.select_notifications(start=None, limit=10)
    assert [n.id for n in notifications] == ids == list(range(ids[0], ids[0] + 4))  # in the order given
    assert [(n.originator_id, n.originator_version) for n in notifications] == [
        (first, 1),
        (first, 2),
        (first, 3),
        (second, 1),
    ]

    with pytest.raises(IntegrityError):  # the library's, which PlanService takes for a clash
        recorder.insert_events(stored(second, 2, 1))
    assert recorder.select_events(second) == stored(second, 1)  # nothing of a refused call stays


def test_the_function_of_an_earlier_version_is_left_for_instances_still_running_it(
    services: Callable[..., PlanService], db: psycopg.Connection[Any], environ: dict[str, str]
) -> None:
    """Earlier versions took the events as an array of the library's composite type; an
    instance not yet upgraded keeps saving through it (same table lock), beside this one."""
    schema = environ["POLKU_PG_SCHEMA"]
    first = services()
    earlier = sql.SQL(
        "CREATE FUNCTION {schema}.polku_events_insert(events {schema}.stored_event_uuid[], lock_wait text)"
        " RETURNS SETOF bigint LANGUAGE sql AS 'SELECT 1::bigint'"
    ).format(schema=sql.Identifier(schema))
    db.execute(earlier)

    second = services()  # another instance starting creates the tables again
    first.recorder.insert_events(stored(uuid.uuid4(), 1))
    second.recorder.insert_events(stored(uuid.uuid4(), 1))

    signatures = db.execute(
        "SELECT pg_get_function_identity_arguments(oid) FROM pg_proc WHERE pronamespace = %s::regnamespace"
        " ORDER BY 1",
        (schema,),
    ).fetchall()
    assert signatures == [
        (f"events {schema}.stored_event_uuid[], lock_wait text",),
        ("ids uuid[], versions bigint[], topics text[], states bytea[], lock_wait text",),
    ]


def _insert_backend(recorder: OneTripPostgresApplicationRecorder) -> int:
    conn = recorder.insert_connection._conn
    assert conn is not None
    return conn.info.backend_pid


def test_saves_are_inserted_on_one_kept_connection_not_a_pooled_one(
    services: Callable[..., PlanService], monkeypatch: pytest.MonkeyPatch
) -> None:
    service = services()
    recorder = service.recorder
    first = uuid.uuid4()
    recorder.insert_events(stored(first, 1))
    backend = _insert_backend(recorder)
    pooled = {conn.info.backend_pid for conn in recorder.datastore.pool._pool}
    assert backend not in pooled
    monkeypatch.setattr(recorder.datastore, "get_connection", None)  # the pool is not asked

    recorder.insert_events(stored(first, 2, 3))
    with pytest.raises(IntegrityError):  # a refused insert leaves the connection usable
        recorder.insert_events(stored(first, 3))
    recorder.insert_events(stored(first, 4))

    assert _insert_backend(recorder) == backend
    monkeypatch.undo()
    assert [e.originator_version for e in recorder.select_events(first)] == [1, 2, 3, 4]
    service.close()
    assert recorder.insert_connection._conn is None  # closed with the service


def test_an_insert_connection_the_server_ended_is_replaced_before_the_insert(
    services: Callable[..., PlanService], db: psycopg.Connection[Any]
) -> None:
    """As a pooled connection after a database restart: found on the next insert, which
    then goes through on a new connection at its first attempt (no retry)."""
    recorder = services().recorder
    plan = uuid.uuid4()
    recorder.insert_events(stored(plan, 1))
    ended = _insert_backend(recorder)
    db.execute("SELECT pg_terminate_backend(%s, 5000)", (ended,))
    attempt = OneTripPostgresApplicationRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]

    attempt(recorder, stored(plan, 2))

    assert _insert_backend(recorder) != ended
    assert [e.originator_version for e in recorder.select_events(plan)] == [1, 2]


def _quiet_recorder(service: PlanService) -> OneTripPostgresApplicationRecorder:
    """A recorder on a table, and so a NOTIFY channel, of its own: the plan events' channel
    is named after the table alone, and other tests' saves (any schema) would wake it."""
    recorder = OneTripPostgresApplicationRecorder(
        service.recorder.datastore, events_table_name=f"quiet_{uuid.uuid4().hex[:12]}"
    )
    recorder.create_table()
    return recorder


def _followed(subscription: Any, count: int, timeout: float = 5.0) -> list[int]:
    """The versions of the first ``count`` events the subscription hands out within ``timeout``
    (fewer if it stalls); the subscription is stopped and left after."""
    versions: list[int] = []

    def follow() -> None:
        for notification in subscription:
            versions.append(notification.originator_version)
            if len(versions) == count:
                return

    with subscription:
        follower = threading.Thread(target=follow)
        follower.start()
        follower.join(timeout)
        subscription.stop()
        follower.join(timeout)
    return versions


def test_an_event_saved_between_the_subscriptions_first_read_and_its_listen_is_followed(
    services: Callable[..., PlanService], db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The library read the log and LISTENed in two threads at once: an event committed in
    between was never notified, and a read model's follower stayed one event behind
    (seen as a projection test stuck at N-1 of N, now and then). The gap is held open here:
    the event is saved right after the first read, before the LISTEN may start.

    Another session listens too, as other instances do: a new listener starts reading the
    server's notice queue where the others of its database are, past the event's notice
    (with no other listener it might still be handed notices committed just before).
    """
    recorder = _quiet_recorder(services())
    db.execute(sql.SQL("LISTEN {}").format(sql.Identifier(recorder.channel_name)))
    plan = uuid.uuid4()
    recorder.insert_events(stored(plan, 1))
    first_read = threading.Event()
    select, get_connection = recorder.select_notifications, recorder.datastore.get_connection

    def read_then_save(*args: Any, **kwargs: Any) -> Any:
        notifications = select(*args, **kwargs)
        if not first_read.is_set():
            recorder.insert_events(stored(plan, 2))
            assert len(list(db.notifies(timeout=5, stop_after=2))) == 2  # the other listener is past both
            first_read.set()
        return notifications

    @contextmanager
    def listen_after_the_first_read() -> Iterator[Any]:
        if threading.current_thread().name.endswith("(_listen)"):  # the subscription's listening thread
            assert first_read.wait(5)
        with get_connection() as conn:
            yield conn

    monkeypatch.setattr(recorder, "select_notifications", read_then_save)
    monkeypatch.setattr(recorder.datastore, "get_connection", listen_after_the_first_read)

    assert _followed(recorder.subscribe(), 2) == [1, 2]


def test_a_subscriptions_connection_goes_back_to_the_pool_not_listening(services: Callable[..., PlanService]) -> None:
    """Else the pooled connection goes on collecting every notice of the channel, in memory,
    for whichever thread gets it next."""
    recorder = _quiet_recorder(services())
    recorder.insert_events(stored(uuid.uuid4(), 1))

    assert _followed(recorder.subscribe(), 1) == [1]

    idle = list(recorder.datastore.pool._pool)
    assert idle  # the listening connection among them
    listening = [conn.execute("SELECT count(*) AS channels FROM pg_listening_channels()").fetchone() for conn in idle]
    assert [row["channels"] for row in listening] == [0] * len(idle)


def test_a_thread_waits_for_the_insert_connection_only_the_pools_timeout(
    services: Callable[..., PlanService],
) -> None:
    """One attempt gives up after the pool's timeout; a command whose every attempt did is
    refused StoreBusy (the database answers, the process's other threads are writing), not
    StoreUnavailable, and records nothing."""
    service = services()
    recorder = service.recorder
    recorder.datastore.pool.timeout = 0.3
    attempt = OneTripPostgresApplicationRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]
    result: dict[str, Any] = {}

    def insert() -> None:
        started = time.monotonic()
        try:
            attempt(recorder, stored(uuid.uuid4(), 1))
        except BaseException as error:  # noqa: BLE001 - reported to the test
            result["error"] = error
        result["seconds"] = time.monotonic() - started

    def command() -> None:
        try:
            open_plan(service)
        except BaseException as error:  # noqa: BLE001 - reported to the test
            result["refusal"] = error

    with recorder.insert_connection.cursor():  # another thread's insert, taking long
        thread = threading.Thread(target=insert)
        thread.start()
        thread.join(5)
        recorder.datastore.pool.timeout = 0.1  # the library's ten attempts take 3 s
        thread = threading.Thread(target=command)
        thread.start()
        thread.join(20)

    assert 0.25 < result["seconds"] < 2.0, result
    assert isinstance(result["error"], InsertConnectionBusy), result
    assert isinstance(result["refusal"], StoreBusy), result
    assert isinstance(result["refusal"].__cause__, InsertConnectionBusy), result
    assert not recorder.select_notifications(start=1, limit=1)


def test_a_clash_with_another_instances_save_is_retried_on_the_fresh_plan(
    services: Callable[..., PlanService], monkeypatch: pytest.MonkeyPatch
) -> None:
    first, second = services(), services()
    plan_id = open_plan(first)
    first.get_plan(plan_id)  # cached by the first instance
    second.add_note(plan_id, by=SANNA, command_id="note-second", text="Toisen instanssin huomio")

    refused: list[BaseException] = []
    insert = first.recorder.insert_events

    def spy(events: Any, **kwargs: Any) -> Any:
        try:
            return insert(events, **kwargs)
        except BaseException as error:
            refused.append(error)
            raise

    monkeypatch.setattr(first.recorder, "insert_events", spy)
    outcome = first.add_note(plan_id, by=AINO, command_id="note-first", text="Ensimmäisen instanssin huomio")

    assert [type(error) for error in refused] == [IntegrityError]  # the stale plan clashed once
    assert outcome.version == 3
    assert second.get_plan(plan_id).version == 3


def test_the_insert_takes_the_table_lock_and_waits_only_the_lock_timeout(
    services: Callable[..., PlanService], environ: dict[str, str]
) -> None:
    """A plain INSERT would go on beside a ROW EXCLUSIVE holder; the recorder's table lock
    (EXCLUSIVE) waits for it, which is what keeps notification ids in commit order. One
    attempt (without the library's retries) gives up after the datastore's lock timeout."""
    service = services()
    recorder = service.recorder
    recorder.datastore.lock_timeout = 0.3
    attempt = OneTripPostgresApplicationRecorder.insert_events.__wrapped__  # type: ignore[attr-defined]

    seconds, error = _run_while_locked(
        environ, service, "ROW EXCLUSIVE", lambda: attempt(recorder, stored(uuid.uuid4(), 1))
    )

    assert seconds is not None and 0.25 < seconds < 2.0, seconds
    assert isinstance(error, OperationalError), f"raised {error!r}"
    assert isinstance(error.__cause__, psycopg.errors.LockNotAvailable)


def test_the_pool_pings_only_a_connection_the_server_has_ended(
    services: Callable[..., PlanService], db: psycopg.Connection[Any], environ: dict[str, str]
) -> None:
    """With POSTGRES_PRE_PING the library's pool sends an empty query on every checkout;
    Polku's check (`check_if_server_spoke`) asks the socket first, so a healthy idle
    connection costs no round trip, and one the server ended (as in a restart) is still
    found on checkout and replaced."""
    assert services().recorder.datastore.pool._check is check_if_server_spoke
    with _connect(environ) as conn:
        sent: list[str] = []
        execute = conn.execute
        conn.execute = lambda query, *args, **kwargs: sent.append(query) or execute(query, *args, **kwargs)  # type: ignore[method-assign]
        check_if_server_spoke(conn)
        assert sent == []  # healthy and idle: no query

        db.execute("SELECT pg_terminate_backend(%s, 5000)", (conn.info.backend_pid,))
        with pytest.raises(psycopg.OperationalError):  # the pool then discards it
            check_if_server_spoke(conn)
        assert sent == [""]


def test_a_plan_opened_here_is_encrypted_with_the_key_just_made_without_looking_it_up(
    services: Callable[..., PlanService], data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each plan opened cost a lookup of the key just stored (on PostgreSQL a round trip);
    a key that existed already is the one kept, and looked up as before."""
    master = os.urandom(32)
    for keyring in (services().keyring, SQLiteKeyring(str(data_dir / "keys.sqlite3"), master)):
        lookups: list[str] = []
        select = keyring._select
        monkeypatch.setattr(keyring, "_select", lambda plan_id, select=select: lookups.append(plan_id) or select(plan_id))
        made, kept = uuid.uuid4(), uuid.uuid4()
        keyring.create(made)
        assert keyring.cipher_for(made) is not None
        assert lookups == []

        keyring.create(kept)
        stored_cipher = keyring.cipher_for(kept)
        keyring._cache.clear()
        keyring.create(kept)  # ignored: the plan has a key
        nonce = os.urandom(12)
        sealed = stored_cipher.encrypt(nonce, b"still readable", None)
        assert keyring.cipher_for(kept).decrypt(nonce, sealed, None) == b"still readable"
        assert lookups == [str(kept)]
        keyring.close()


# --- erasure ------------------------------------------------------------------------------


def test_erasing_a_plan_makes_it_unreadable_and_leaves_the_others_intact(
    services: Callable[..., PlanService],
    db: psycopg.Connection[Any],
    environ: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = services()
    other_instance = services()
    erased_id = open_plan(service, "open-erased")
    fill_plan(service, erased_id, "e-")
    kept_id = open_plan(service, "open-kept", "Liisa Laine")
    fill_plan(service, kept_id, "k-")
    kept_before = plan_state(service.get_plan(kept_id))
    other_instance.get_plan(erased_id)  # has the plan and its key in its caches
    (step,) = service.get_plan(erased_id).steps.values()
    service.progress_step(erased_id, by=AINO, command_id="step-done", step_id=step.id, seen_revision=step.revision,
                          status="done", on=TODAY)
    service.close_plan(erased_id, by=AINO, command_id="close", outcome="work")
    schema = environ["POLKU_PG_SCHEMA"]
    count = sql.SQL("SELECT count(*) FROM {}.polku_events WHERE originator_id = %s").format(sql.Identifier(schema))
    stored = db.execute(count, (erased_id,)).fetchone()[0]

    service.erase_plan(erased_id, by=AINO, reason="Säilytysaika päättyi")
    with pytest.raises(PlanErased):
        service.get_plan(erased_id)  # at once on the instance that erased it
    monkeypatch.setattr("domain.keys.KEY_CACHE_SECONDS", 0.0)  # another one trusts its cached key a while

    for instance in (service, other_instance, services()):
        with pytest.raises(PlanErased):
            instance.get_plan(erased_id)
        with pytest.raises(PlanErased):
            instance.add_note(erased_id, by=AINO, command_id="late", text="Vielä yksi huomio")
        assert plan_state(instance.get_plan(kept_id)) == kept_before
        assert [str(i) for i in instance.plan_ids()] == [kept_id]
    fresh = services()
    assert all(isinstance(e, ErasedPlanEvent) for e in fresh.events.get(uuid.UUID(erased_id)))
    assert db.execute(count, (erased_id,)).fetchone()[0] == stored  # still there, unreadable
    key = db.execute(
        sql.SQL("SELECT wrapped_key, erased_at FROM {}.plan_keys WHERE plan_id = %s").format(
            sql.Identifier(f"{schema}_keys")
        ),
        (erased_id,),
    ).fetchone()
    assert key[0] is None and key[1]
    record = fresh.repository.get(ErasureRecord.id_for(uuid.UUID(erased_id)))
    assert record.plan_id == erased_id and record.erased_by == AINO


# --- locks --------------------------------------------------------------------------------


def test_the_lock_timeout_is_bounded(services: Callable[..., PlanService], environ: dict[str, str]) -> None:
    service = services()
    # the documented default budget of 5 s, shared by the library's ten attempts
    assert service.factory.datastore.lock_timeout * LIBRARY_ATTEMPTS == 5
    assert services(POLKU_PG_LOCK_TIMEOUT="0").factory.datastore.lock_timeout > 0  # never "wait for ever"
    with service.keyring._pool.connection() as conn:  # the keys' own pool
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "5s"


LOCK_TIMEOUT_S = 1
BOUND_S = 6.0
"""How long a blocked command may take at most with a 1 s lock timeout: a few lock waits,
not the library's ten retries of the insert (~12 s), and never an endless wait."""


def _run_while_locked(
    environ: dict[str, str], service: PlanService, mode: str, command: Callable[[], Any]
) -> tuple[float | None, BaseException | None]:
    """Run `command` while another connection holds the events table in `mode`.

    Returns (seconds until the command ended or None if it was still waiting after
    BOUND_S, what it raised). The lock is released before returning either way, so a
    waiting command finishes then.
    """
    result: dict[str, Any] = {}

    def run() -> None:
        started = time.monotonic()
        try:
            command()
        except BaseException as error:  # noqa: BLE001 - reported to the test
            result["error"] = error
        result["seconds"] = time.monotonic() - started

    table = sql.SQL("LOCK TABLE {}.{} IN " + mode + " MODE").format(
        sql.Identifier(environ["POLKU_PG_SCHEMA"]), sql.Identifier(service.recorder.events_table_name)
    )
    locker = _connect(environ)
    locker.autocommit = False
    thread = threading.Thread(target=run, daemon=True)
    try:
        locker.execute(table)
        thread.start()
        thread.join(BOUND_S)
        return result.get("seconds"), result.get("error")
    finally:
        locker.rollback()
        locker.close()
        thread.join(60)


def test_a_save_blocked_by_another_writer_fails_soon_with_a_clear_error(
    services: Callable[..., PlanService], environ: dict[str, str]
) -> None:
    service = services(POLKU_PG_LOCK_TIMEOUT=str(LOCK_TIMEOUT_S))
    plan_id = open_plan(service)
    service.get_plan(plan_id)

    seconds, error = _run_while_locked(
        environ,
        service,
        "EXCLUSIVE",  # what the recorder itself takes for an insert: reads go on, writes wait
        lambda: service.add_note(plan_id, by=AINO, command_id="blocked", text="Odottaa lukkoa"),
    )

    assert seconds is not None, f"the save was still waiting after {BOUND_S} s"
    assert isinstance(error, DomainError), f"raised {error!r}"


def test_a_command_behind_an_access_exclusive_lock_fails_soon(
    services: Callable[..., PlanService], environ: dict[str, str]
) -> None:
    service = services(POLKU_PG_LOCK_TIMEOUT=str(LOCK_TIMEOUT_S))
    plan_id = open_plan(service)
    service.get_plan(plan_id)

    seconds, error = _run_while_locked(
        environ,
        service,
        "ACCESS EXCLUSIVE",
        lambda: service.add_note(plan_id, by=AINO, command_id="blocked", text="Odottaa lukkoa"),
    )

    assert seconds is not None, f"the command was still waiting after {BOUND_S} s"
    assert isinstance(error, DomainError), f"raised {error!r}"


def test_only_the_latest_two_snapshots_of_a_plan_are_kept(services: Callable[..., PlanService]) -> None:
    service = services()
    plan_id = open_plan(service)
    fill_plan(service, plan_id)
    identifier = uuid.UUID(plan_id)
    for version in range(1, service.get_plan(plan_id).version + 1):
        service.take_snapshot(identifier, version=version)

    kept = [snapshot.originator_version for snapshot in service.snapshots.get(identifier)]
    assert kept == [version - 1, version]
    uncached = services(POLKU_AGGREGATE_CACHE_SIZE="0")
    assert plan_state(uncached.get_plan(plan_id)) == plan_state(service.get_plan(plan_id))


# --- the SQLite store's durability --------------------------------------------------------


def test_the_sqlite_store_of_the_plan_service_is_wal_and_synchronous_full(data_dir: Path) -> None:
    service = PlanService(StoreSettings(data_dir=str(data_dir)), clock=Clock())
    try:
        open_plan(service)
        pool = service.factory.datastore.pool
        assert isinstance(pool, DurableSQLiteConnectionPool)
        connections = [pool.get_connection() for _ in range(3)]  # held at once: distinct
        try:
            for connection in connections:
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA journal_mode")
                    assert cursor.fetchone()[0] == "wal"
                    cursor.execute("PRAGMA synchronous")
                    assert cursor.fetchone()[0] == 2  # FULL
        finally:
            for connection in connections:
                pool.put_connection(connection)
        keys = service.keyring._db  # the keys' own file
        assert keys.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert keys.execute("PRAGMA synchronous").fetchone()[0] == 2
    finally:
        service.close()


# --- connections and start-up ---------------------------------------------------------------


def _keepalive_settings(conn: psycopg.Connection[Any]) -> tuple[int, int, int, int]:
    """What the kernel holds for the connection's socket: SO_KEEPALIVE, idle, interval, count."""
    import socket

    sock = socket.socket(fileno=os.dup(conn.fileno()))
    try:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )
    finally:
        sock.close()


def test_every_connection_of_the_store_probes_its_peer_with_tcp_keepalives(
    services: Callable[..., PlanService],
) -> None:
    """A connection that a NAT, load balancer or failover dropped without a word is found by
    the kernel's probes; the socket then reports an error and the pool's check replaces it."""
    service = services()
    plan_id = open_plan(service)  # a save (insert connection) and a key (key pool)
    service.get_plan(uuid.UUID(plan_id))  # a read (event store pool)
    with service.recorder.insert_connection.cursor() as curs:
        insert_conn = curs.connection
    with service.recorder.datastore.pool.connection() as pooled, service.keyring._pool.connection() as key_conn:  # type: ignore[attr-defined]
        for conn in (pooled, insert_conn, key_conn):
            assert _keepalive_settings(conn) == (1, 5, 2, 3)


def test_a_schema_name_that_is_not_a_plain_sql_name_is_refused_at_start(environ: dict[str, str]) -> None:
    """The names also go inside the dollar-quoted body of the insert function."""
    with pytest.raises(ValueError, match="POLKU_PG_SCHEMA"):
        StoreSettings.from_environ({**environ, "POLKU_PG_SCHEMA": "polku$BODY$; DROP TABLE x; $BODY$"})
    with pytest.raises(ValueError, match="POLKU_PG_SCHEMA"):
        StoreSettings.from_environ({**environ, "POLKU_PG_SCHEMA": "1polku"})
    datastore = _lib.PostgresDatastore(
        environ["POLKU_PG_DB"], environ["POLKU_PG_HOST"], environ["POLKU_PG_PORT"], environ["POLKU_PG_USER"], "",
        schema="a$BODY$b",
    )
    for recorder_class in (OneTripPostgresApplicationRecorder, BinaryPostgresAggregateRecorder):
        with pytest.raises(ValueError, match="schema"):
            recorder_class(datastore, events_table_name="polku_events")
    datastore.schema = environ["POLKU_PG_SCHEMA"]
    with pytest.raises(ValueError, match="table name"):
        OneTripPostgresApplicationRecorder(datastore, events_table_name="events$BODY$")
    datastore.close()


def test_a_schema_name_some_store_cannot_use_whole_is_refused_at_start(
    environ: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """PostgreSQL cuts a name to 63 characters with only a NOTICE: the keys' schema of a 59-63
    character POLKU_PG_SCHEMA was the event store's own. The longest accepted name keeps every
    derived schema whole and apart; a longer one, or an uppercase one (which the account
    store's ``search_path`` would fold to lowercase), is refused before anything is opened."""
    longest = "polku_" + "x" * (PG_SCHEMA_MAX - len("polku_"))
    settings = StoreSettings.from_environ({**environ, "POLKU_PG_SCHEMA": longest})
    derived = [
        settings.pg_schema,
        f"{longest}_keys",
        f"{longest}_views",
        accounts_schema(settings),
        accesslog_schema(settings),
    ]
    as_stored = [db.execute("SELECT %s::name::text", (name,)).fetchone()[0] for name in derived]  # type: ignore[index]
    assert as_stored == derived
    for refused in (longest + "x", "x" * 55, "Polku", "pg_polku"):  # pg_: PostgreSQL's own
        with pytest.raises(ConfigurationError, match="POLKU_PG_SCHEMA"):
            StoreSettings.from_environ({**environ, "POLKU_PG_SCHEMA": refused})


@pytest.mark.parametrize(("variable", "value"), [
    ("POLKU_PG_LOCK_TIMEOUT", str(LOCK_TIMEOUT_MAX_S + 1)),  # every connection would fail
    ("POLKU_PG_HOST", "db\udcff.example"),  # a byte that is not UTF-8, as os.environ gives it
    ("POLKU_PG_DB", "polku\x07"),
])
def test_a_setting_no_connection_could_use_is_refused_at_start(
    environ: dict[str, str], variable: str, value: str
) -> None:
    """Refused with the setting's name, not taken and found out as "cannot reach the database"."""
    with pytest.raises(ConfigurationError, match=variable):
        StoreSettings.from_environ({**environ, variable: value})
    assert StoreSettings.from_environ({**environ, "POLKU_PG_LOCK_TIMEOUT": str(LOCK_TIMEOUT_MAX_S)})


def test_instances_starting_together_on_an_empty_schema_all_start(
    environ: dict[str, str], db: psycopg.Connection[Any]
) -> None:
    """Two instances creating the tables at once: the library creates its composite type in
    a transaction of its own, and two sessions creating it at once fail one with a unique
    violation; the whole creation is therefore one instance at a time."""
    failures: list[BaseException] = []
    for attempt in range(8):
        schema = f"{environ['POLKU_PG_SCHEMA']}_start{attempt}"
        db.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        datastores = [
            _lib.PostgresDatastore(
                environ["POLKU_PG_DB"], environ["POLKU_PG_HOST"], environ["POLKU_PG_PORT"], environ["POLKU_PG_USER"],
                "", schema=schema,
            )
            for _ in range(2)
        ]
        recorders = [
            recorder_class(datastore, events_table_name=table)
            for datastore in datastores
            for recorder_class, table in (
                (OneTripPostgresApplicationRecorder, "polku_events"),
                (BinaryPostgresAggregateRecorder, "polku_snapshots"),
            )
        ]
        barrier = threading.Barrier(len(recorders))

        def create(recorder: Any) -> None:
            barrier.wait()
            try:
                recorder.create_table()
            except BaseException as error:  # noqa: BLE001 - collected for the assertion
                failures.append(error)

        threads = [threading.Thread(target=create, args=(recorder,)) for recorder in recorders]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for datastore in datastores:
            datastore.close()
        assert failures == [], f"attempt {attempt}"


def test_events_and_snapshots_are_read_in_binary_as_the_library_reads_them(
    services: Callable[..., PlanService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every shape of query (after, up to, descending, limit) gives what the library's
    text read gives, and the rows come in binary (no hex-encoded state)."""
    service = services()
    assert service.snapshots is not None
    plan_id = uuid.uuid4()
    big_state = os.urandom(300_000)
    events = [*stored(plan_id, 1, 2, 3, 4), StoredEvent(plan_id, 5, "topic", big_state)]
    service.recorder.insert_events(events)
    service.snapshots.recorder.insert_events(events)
    formats: list[bool | None] = []
    cursor = psycopg.Connection.cursor

    def recording_cursor(conn: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
        formats.append(kwargs.get("binary"))
        return cursor(conn, *args, **kwargs)

    for recorder in (service.recorder, service.snapshots.recorder):
        for gt in (None, 1):
            for lte in (None, 4):
                for desc in (False, True):
                    for limit in (None, 2):
                        query = {"gt": gt, "lte": lte, "desc": desc, "limit": limit}
                        expected = _lib.PostgresAggregateRecorder.select_events(recorder, plan_id, **query)
                        with monkeypatch.context() as patch:
                            patch.setattr(psycopg.Connection, "cursor", recording_cursor)
                            got = recorder.select_events(plan_id, **query)
                        assert got == expected, query
                        assert formats.pop() is True
    assert service.recorder.select_events(plan_id, gt=4)[0].state == big_state


def test_a_read_whose_connection_fails_is_tried_again_like_the_librarys(
    services: Callable[..., PlanService], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The binary read keeps the library's ``@retry``: a connection that a database restart
    ended (or a server still starting up) costs a retry, not a 503 for the reader."""
    service = services()
    assert service.snapshots is not None
    plan_id = uuid.uuid4()
    service.recorder.insert_events(stored(plan_id, 1))
    datastore = service.recorder.datastore
    get_connection = datastore.get_connection
    failures: list[OperationalError] = []

    @contextmanager
    def failing_first() -> Iterator[Any]:
        if failures:
            raise failures.pop()
        with get_connection() as conn:
            yield conn

    monkeypatch.setattr(datastore, "get_connection", failing_first)
    for recorder, expected in ((service.recorder, [1]), (service.snapshots.recorder, [])):
        failures.append(OperationalError("server closed the connection unexpectedly"))
        assert [e.originator_version for e in recorder.select_events(plan_id)] == expected
        assert failures == []


def test_a_pool_whose_first_open_timed_out_connects_once_the_server_answers(environ: dict[str, str]) -> None:
    """psycopg_pool's ``open(wait=True)`` closes a pool whose connections do not come in time,
    for good; the first open here refuses its caller and leaves the pool connecting, so a
    datastore first used while the server is out of reach heals when it comes back."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    conninfo = psycopg.conninfo.make_conninfo(
        host=environ["POLKU_PG_HOST"], port=environ["POLKU_PG_PORT"], user=environ["POLKU_PG_USER"],
        dbname=environ["POLKU_PG_DB"],
    )
    pool = _PoolFilledOnFirstOpen(
        psycopg.conninfo.make_conninfo(conninfo, port=closed_port), min_size=1, max_size=2, open=False, timeout=10,
    )
    try:
        with pytest.raises(PoolTimeout):
            pool.open(timeout=0.3)
        assert not pool.closed
        pool.conninfo = conninfo  # the server answers now
        pool.open(timeout=10)
        with pool.connection() as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        pool.close()


def test_the_pool_sizes_are_read_from_the_environment_and_reach_every_pool(environ: dict[str, str]) -> None:
    """POLKU_PG_POOL_SIZE / POLKU_PG_POOL_MAX become the library's pool settings, travel to the
    follower's own plan service (as_environ), and are refused when no pool could have them."""
    assert (StoreSettings().pg_pool_size, StoreSettings().pg_pool_max) == (1, 5)
    settings = StoreSettings.from_environ({**environ, "POLKU_PG_POOL_SIZE": "2", "POLKU_PG_POOL_MAX": "7"})
    assert (settings.pg_pool_size, settings.pg_pool_max) == (2, 7)
    env = settings.event_store_env
    assert (env["POSTGRES_POOL_SIZE"], env["POSTGRES_MAX_OVERFLOW"]) == ("2", "5")
    assert StoreSettings.from_environ(settings.as_environ()) == settings
    for size, most in (("0", "1"), ("3", "2"), ("-1", "5")):
        with pytest.raises(ValueError, match="POLKU_PG_POOL_MAX"):
            StoreSettings.from_environ({**environ, "POLKU_PG_POOL_SIZE": size, "POLKU_PG_POOL_MAX": most})


def test_each_pool_keeps_only_its_pool_size_open_and_names_its_connections(
    services: Callable[..., PlanService], db: psycopg.Connection[Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """An idle process holds few connections: each pool keeps POLKU_PG_POOL_SIZE (not one more
    for the first request, which came before the first connection was ready), grows to
    POLKU_PG_POOL_MAX at most, and every connection says in pg_stat_activity what it is for,
    unless the process is named by PGAPPNAME (which wins, as libpq has it)."""
    monkeypatch.delenv("PGAPPNAME", raising=False)
    service = services(POLKU_PG_POOL_SIZE="1", POLKU_PG_POOL_MAX="3")
    plan_id = open_plan(service)  # tables created, a key made, a save
    service.get_plan(uuid.UUID(plan_id))  # a read
    events, keys = service.recorder.datastore.pool, service.keyring._pool  # type: ignore[attr-defined]
    assert (events.min_size, events.max_size, keys.min_size, keys.max_size) == (1, 3, 1, 3)
    assert (events.get_stats()["pool_size"], keys.get_stats()["pool_size"]) == (1, 1)

    def name_of(conn: psycopg.Connection[Any]) -> str:
        row = db.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (conn.info.backend_pid,))
        return row.fetchone()[0]

    with service.recorder.insert_connection.cursor() as curs:
        assert name_of(curs.connection) == "polku events"
    with events.connection() as pooled, keys.connection() as key_conn:
        assert (name_of(pooled), name_of(key_conn)) == ("polku events", "polku keys")

    monkeypatch.setenv("PGAPPNAME", "polku web 8001")
    named = services()
    with named.recorder.datastore.pool.connection() as pooled, named.keyring._pool.connection() as key_conn:  # type: ignore[attr-defined]
        assert (name_of(pooled), name_of(key_conn)) == ("polku web 8001", "polku web 8001")
