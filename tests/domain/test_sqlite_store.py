"""Tests of ``domain.sqlite``: the library's own recorder test cases on a real SQLite
file, then what this module adds (durability pragmas, subscriptions that wake on local
saves and poll for other processes, a ProjectionRunner following the store)."""

from __future__ import annotations

import queue
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from time import perf_counter, sleep
from typing import TYPE_CHECKING, Any
from uuid import uuid4

import pytest
from eventsourcing.application import Application
from eventsourcing.dispatch import singledispatchmethod
from eventsourcing.domain import Aggregate, event
from eventsourcing.persistence import (
    InfrastructureFactory,
    Notification,
    RecordConflictError,
    StoredEvent,
    Subscription,
    Tracking,
)
from eventsourcing.projection import Projection, ProjectionRunner
from eventsourcing.sqlite import SQLiteAggregateRecorder, SQLiteDatastore, SQLiteTrackingRecorder
from eventsourcing.tests import persistence as lib_tests
from eventsourcing.utils import Environment, get_topic

from domain.sqlite import (
    DurableSQLiteConnectionPool,
    DurableSQLiteFactory,
    RowidSnapshotRecorder,
    SubscribableSQLiteApplicationRecorder,
    SubscribableSQLiteProcessRecorder,
    database_key,
    local_commits,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]

# Configuration keys this module reads; a prefixed or plain one left in the
# environment would beat the values the tests pass.
_KEYS = (
    "PERSISTENCE_MODULE",
    "SQLITE_DBNAME",
    "SQLITE_POLL_INTERVAL",
    "SQLITE_LOCK_TIMEOUT",
    "CREATE_TABLE",
    "APPLICATION_RECORDER_TOPIC",
    "TRACKING_RECORDER_TOPIC",
    "PROCESS_RECORDER_TOPIC",
)


@pytest.fixture(autouse=True)
def _hermetic_env(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.endswith(_KEYS):
            monkeypatch.delenv(name)


def sqlite_env(db_name: str, **extra: str) -> dict[str, str]:
    return {"PERSISTENCE_MODULE": "domain.sqlite", "SQLITE_DBNAME": db_name, **extra}


class FileDatabase:
    """Mixin for the library's unittest cases: a fresh database file per test and
    factories constructed the way an application does (by module topic)."""

    db_name: str

    @pytest.fixture(autouse=True)
    def _database_file(self, tmp_path: Path) -> Iterator[None]:
        self.db_name = str(tmp_path / "events.db")
        self._factories: list[InfrastructureFactory[Any]] = []
        yield
        for factory in self._factories:
            factory.close()

    def make_factory(self) -> DurableSQLiteFactory:
        factory = InfrastructureFactory.construct(sqlite_env(self.db_name))
        assert isinstance(factory, DurableSQLiteFactory)
        self._factories.append(factory)
        return factory


# --- The library's reusable recorder test cases, against this factory ---------------


class TestAggregateRecorder(FileDatabase, lib_tests.AggregateRecorderTestCase):
    def create_recorder(self) -> SQLiteAggregateRecorder:
        recorder = self.make_factory().aggregate_recorder()
        assert isinstance(recorder, SQLiteAggregateRecorder)
        return recorder


class TestApplicationRecorder(FileDatabase, lib_tests.ApplicationRecorderTestCase):
    def create_recorder(self) -> SubscribableSQLiteApplicationRecorder:
        recorder = self.make_factory().application_recorder()
        assert type(recorder) is SubscribableSQLiteApplicationRecorder
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestProcessRecorderAsApplicationRecorder(
    FileDatabase, lib_tests.ApplicationRecorderTestCase
):
    """The process recorder's saves must wake subscribers too."""

    def create_recorder(self) -> SubscribableSQLiteProcessRecorder:
        recorder = self.make_factory().process_recorder()
        assert type(recorder) is SubscribableSQLiteProcessRecorder
        return recorder

    def test_insert_subscribe(self) -> None:
        self.optional_test_insert_subscribe()


class TestTrackingRecorder(FileDatabase, lib_tests.TrackingRecorderTestCase):
    def create_recorder(self) -> SQLiteTrackingRecorder:
        recorder = self.make_factory().tracking_recorder()
        assert type(recorder) is SQLiteTrackingRecorder
        return recorder


class TestProcessRecorder(FileDatabase, lib_tests.ProcessRecorderTestCase):
    def create_recorder(self) -> SubscribableSQLiteProcessRecorder:
        recorder = self.make_factory().process_recorder()
        assert isinstance(recorder, SubscribableSQLiteProcessRecorder)
        return recorder


class TestFactory(FileDatabase, lib_tests.InfrastructureFactoryTestCase[Any]):
    """Also shows that ``PERSISTENCE_MODULE=domain.sqlite`` resolves to exactly one
    factory class in the module (``construct`` runs in the library's setUp)."""

    def setUp(self) -> None:
        self.env = Environment("TestCase", sqlite_env(self.db_name))
        super().setUp()

    def expected_factory_class(self) -> type[DurableSQLiteFactory]:
        return DurableSQLiteFactory

    def expected_aggregate_recorder_class(self) -> type[SQLiteAggregateRecorder]:
        return RowidSnapshotRecorder

    def expected_application_recorder_class(self) -> type[Any]:
        return SubscribableSQLiteApplicationRecorder

    def expected_tracking_recorder_class(self) -> type[SQLiteTrackingRecorder]:
        return SQLiteTrackingRecorder

    def tracking_recorder_subclass(self) -> type[SQLiteTrackingRecorder]:
        return NoteCountView

    def expected_process_recorder_class(self) -> type[Any]:
        return SubscribableSQLiteProcessRecorder


# --- What this module adds ------------------------------------------------------------


def table_sql(db_name: str, table: str) -> str:
    import sqlite3

    with sqlite3.connect(db_name) as db:
        return db.execute("SELECT sql FROM sqlite_master WHERE name = ?", (table,)).fetchone()[0]


def test_snapshots_live_in_a_rowid_table(tmp_path: Path) -> None:
    db_name = str(tmp_path / "events.db")
    factory = InfrastructureFactory.construct(sqlite_env(db_name))
    try:
        recorder = factory.aggregate_recorder("snapshots")
    finally:
        factory.close()

    assert isinstance(recorder, RowidSnapshotRecorder)
    assert "WITHOUT ROWID" not in table_sql(db_name, "stored_snapshots").upper()


def test_a_without_rowid_snapshot_table_is_converted_keeping_each_plans_latest_two(tmp_path: Path) -> None:
    db_name = str(tmp_path / "events.db")
    old_store = SQLiteDatastore(db_name)
    old = SQLiteAggregateRecorder(old_store, events_table_name="stored_snapshots")
    old.create_table()
    long_plan, short_plan = uuid4(), uuid4()
    old.insert_events(
        [StoredEvent(long_plan, version, "topic", f"state {version}".encode()) for version in (100, 200, 300)]
        + [StoredEvent(short_plan, 100, "topic", b"state")]
    )
    old_store.close()
    assert "WITHOUT ROWID" in table_sql(db_name, "stored_snapshots").upper()

    factory = InfrastructureFactory.construct(sqlite_env(db_name))
    try:
        recorder = factory.aggregate_recorder("snapshots")
        kept = [(e.originator_version, e.state) for e in recorder.select_events(long_plan)]
        (short,) = recorder.select_events(short_plan)
    finally:
        factory.close()

    assert "WITHOUT ROWID" not in table_sql(db_name, "stored_snapshots").upper()
    assert kept == [(200, b"state 200"), (300, b"state 300")]
    assert (short.originator_version, short.state) == (100, b"state")



@pytest.fixture
def db_name(tmp_path: Path) -> str:
    return str(tmp_path / "events.db")


@pytest.fixture
def factories(db_name: str) -> Iterator[Callable[..., DurableSQLiteFactory]]:
    made: list[DurableSQLiteFactory] = []

    def make(**extra: str) -> DurableSQLiteFactory:
        factory = InfrastructureFactory.construct(sqlite_env(db_name, **extra))
        assert isinstance(factory, DurableSQLiteFactory)
        made.append(factory)
        return factory

    yield make
    for factory in made:
        factory.close()


def a_stored_event(topic: str = "topic") -> StoredEvent:
    return StoredEvent(
        originator_id=uuid4(), originator_version=1, topic=topic, state=b"{}"
    )


class Receiver:
    """Iterates a subscription in a thread, stamping each notification on arrival."""

    def __init__(self, subscription: Subscription[Any]):
        self.received: queue.Queue[tuple[Notification, float]] = queue.Queue()
        self.finished = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(subscription,))
        self.thread.start()

    def _run(self, subscription: Subscription[Any]) -> None:
        try:
            for notification in subscription:
                self.received.put((notification, perf_counter()))
        finally:
            self.finished.set()

    def get(self, timeout: float) -> tuple[Notification, float]:
        return self.received.get(timeout=timeout)


def test_every_pooled_connection_is_wal_and_synchronous_full(factories: Any) -> None:
    factory = factories()
    factory.application_recorder()  # creates the file and tables
    pool = factory.datastore.pool
    assert isinstance(pool, DurableSQLiteConnectionPool)

    # Hold several at once so that they are distinct connections.
    conns = [pool.get_connection() for _ in range(3)]
    try:
        assert len({id(conn) for conn in conns}) == 3
        for conn in conns:
            with conn.cursor() as c:
                c.execute("PRAGMA journal_mode")
                assert c.fetchone()[0] == "wal"
                c.execute("PRAGMA synchronous")
                assert c.fetchone()[0] == 2  # FULL
    finally:
        for conn in conns:
            pool.put_connection(conn)


def traced_statements(factory: DurableSQLiteFactory) -> list[str]:
    """Every statement the pool's idle connections run from now on (SQLite's trace)."""
    statements: list[str] = []
    for conn in factory.datastore.pool._pool:
        conn._sqlite_conn.set_trace_callback(statements.append)
    return statements


def test_one_event_is_one_autocommit_insert_and_several_one_transaction(db_name: str, factories: Any) -> None:
    factory = factories()
    recorder = factory.application_recorder()
    statements = traced_statements(factory)

    first = recorder.insert_events([a_stored_event()])
    assert [statement.split(" ", 1)[0] for statement in statements] == ["INSERT"]
    with sqlite3.connect(db_name) as other:  # committed and visible to another connection
        assert other.execute("SELECT COUNT(*) FROM stored_events").fetchone()[0] == 1

    statements.clear()
    more = recorder.insert_events([a_stored_event(), a_stored_event()])
    assert [statement.split(" ", 1)[0] for statement in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    assert first is not None and more is not None
    assert list(more) == [first[0] + 1, first[0] + 2]


def test_a_clash_on_one_event_is_a_conflict_and_leaves_no_transaction_open(factories: Any) -> None:
    factory = factories()
    recorder = factory.application_recorder()
    event = a_stored_event()
    recorder.insert_events([event])

    with pytest.raises(RecordConflictError):
        recorder.insert_events([event])

    for conn in factory.datastore.pool._pool:
        assert not conn._sqlite_conn.in_transaction
    assert recorder.insert_events([a_stored_event()]) is not None
    assert recorder.max_notification_id() == 2


def test_closing_the_pool_waits_for_a_connection_in_use(factories: Any) -> None:
    # The library closes connections other threads are using; with sqlite3 that
    # crashed the interpreter. Here close() waits for the connection to come back.
    factory = factories()
    factory.application_recorder()
    pool = factory.datastore.pool
    conn = pool.get_connection()
    closer = threading.Thread(target=pool.close)
    closer.start()
    closer.join(0.1)
    assert closer.is_alive()
    assert not pool.closed
    with conn.cursor() as c:
        c.execute("SELECT COUNT(*) FROM stored_events")  # still usable
        assert c.fetchone()[0] == 0
    pool.put_connection(conn)
    closer.join(5.0)
    assert pool.closed


def test_subscription_wakes_at_once_on_a_local_save(
    db_name: str, factories: Any
) -> None:
    # With a 30 s poll, only the local wake-up can deliver within the timeouts below.
    reader = factories(SQLITE_POLL_INTERVAL="30").application_recorder()
    # Another factory (another pool) in this process, naming the file another way.
    writer = factories(SQLITE_DBNAME="file:" + db_name).application_recorder()

    latencies = []
    with reader.subscribe(gt=None) as subscription:
        receiver = Receiver(subscription)
        sleep(0.1)  # let the first (empty) read finish, so we time a wake-up
        for _ in range(5):
            started = perf_counter()
            [notification_id] = writer.insert_events([a_stored_event()])
            notification, arrived = receiver.get(timeout=1.0)
            latencies.append(arrived - started)
            assert notification.id == notification_id
    assert receiver.finished.wait(1.0)
    print(
        "local save -> subscriber (incl. the commit): "
        + ", ".join(f"{latency * 1000:.2f} ms" for latency in latencies)
    )


def test_subscription_yields_everything_after_gt_in_order(factories: Any) -> None:
    recorder = factories().application_recorder()
    recorder.insert_events([a_stored_event() for _ in range(10)])

    writers, saves, batch = 4, 50, 6  # 1,200 more, in batches crossing select pages
    expected = list(range(6, 10 + writers * saves * batch + 1))
    with recorder.subscribe(gt=5) as subscription:
        receiver = Receiver(subscription)

        def write() -> None:
            for _ in range(saves):
                recorder.insert_events([a_stored_event() for _ in range(batch)])

        threads = [threading.Thread(target=write) for _ in range(writers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        received = [receiver.get(timeout=5.0)[0].id for _ in expected]
    assert received == expected


WRITER_SCRIPT = """
import sys
from uuid import uuid4
from eventsourcing.persistence import InfrastructureFactory, StoredEvent
factory = InfrastructureFactory.construct(
    {"PERSISTENCE_MODULE": "domain.sqlite", "SQLITE_DBNAME": sys.argv[1]}
)
recorder = factory.application_recorder()
[notification_id] = recorder.insert_events(
    [StoredEvent(uuid4(), 1, "written-elsewhere", b"{}")]
)
factory.close()
print(notification_id)
"""


def test_subscription_catches_a_save_made_by_another_process(
    db_name: str, factories: Any
) -> None:
    reader = factories(SQLITE_POLL_INTERVAL="0.05").application_recorder()
    reader.insert_events([a_stored_event()])
    with reader.subscribe(gt=1) as subscription:
        receiver = Receiver(subscription)
        writer = subprocess.run(
            [sys.executable, "-c", WRITER_SCRIPT, db_name],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        writer_exited = perf_counter()
        notification, arrived = receiver.get(timeout=5.0)
    assert notification.id == int(writer.stdout) == 2
    assert notification.topic == "written-elsewhere"
    print(
        "other process's save -> subscriber: "
        f"{max(0.0, arrived - writer_exited) * 1000:.1f} ms after the writer exited "
        "(bounded by the poll interval)"
    )


def test_stopping_a_subscription_ends_iteration_promptly(
    db_name: str, factories: Any
) -> None:
    # A long poll interval: stopping must not wait for the next poll.
    recorder = factories(SQLITE_POLL_INTERVAL="30").application_recorder()
    recorder.insert_events([a_stored_event()])

    subscription = recorder.subscribe(gt=None)
    with subscription:
        receiver = Receiver(subscription)
        receiver.get(timeout=1.0)
        sleep(0.05)  # now blocked, waiting for more
        started = perf_counter()
        subscription.stop()
        assert receiver.finished.wait(5.0)
    elapsed = perf_counter() - started
    print(f"stop -> iteration ended and threads joined: {elapsed * 1000:.1f} ms")
    assert elapsed < 5.0
    assert not subscription._poll_thread.is_alive()  # noqa: SLF001
    assert database_key(db_name) not in local_commits._listeners  # noqa: SLF001

    # Stopped without entering the context manager, as ProjectionRunner may do.
    subscription = recorder.subscribe(gt=None)
    subscription.stop()
    assert list(subscription) == []
    subscription._poll_thread.join(5.0)  # noqa: SLF001
    assert not subscription._poll_thread.is_alive()  # noqa: SLF001


def test_poll_interval_setting_is_validated(factories: Any) -> None:
    with pytest.raises(OSError, match="SQLITE_POLL_INTERVAL"):
        factories(SQLITE_POLL_INTERVAL="soon")
    with pytest.raises(OSError, match="SQLITE_POLL_INTERVAL"):
        factories(SQLITE_POLL_INTERVAL="0")
    assert factories(SQLITE_POLL_INTERVAL="0.2").datastore.poll_interval == 0.2


# --- End to end: a ProjectionRunner following an Application on this store ------------


class Note(Aggregate):
    @event("Written")
    def __init__(self, text: str):
        self.text = text


class Notebook(Application[Any]):
    def write(self, text: str) -> int:
        recordings = self.save(Note(text=text))
        return recordings[-1].notification.id


class NoteCountView(SQLiteTrackingRecorder):
    """A materialised view: how many notes exist, updated with its tracking record in
    one transaction."""

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS note_count "
            "(id INTEGER PRIMARY KEY CHECK (id = 1), n INTEGER NOT NULL)",
        ]

    def count_note(self, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as c:
            c.execute(
                "INSERT INTO note_count VALUES (1, 1) "
                "ON CONFLICT (id) DO UPDATE SET n = n + 1"
            )
            self._insert_tracking(c, tracking)

    def note_count(self) -> int:
        with self.datastore.transaction(commit=False) as c:
            c.execute("SELECT n FROM note_count")
            row = c.fetchone()
            return row[0] if row else 0


class NoteCountProjection(Projection[NoteCountView]):
    name = "note_counts"
    topics = (get_topic(Note.Written),)

    @singledispatchmethod
    def process_event(self, _: Any, tracking: Tracking) -> None:
        self.view.insert_tracking(tracking)

    @process_event.register
    def note_written(self, _: Note.Written, tracking: Tracking) -> None:
        self.view.count_note(tracking)


def test_projection_runner_follows_an_application_on_this_store(db_name: str) -> None:
    env = sqlite_env(db_name)

    def runner() -> ProjectionRunner[Notebook, NoteCountView]:
        return ProjectionRunner(
            application_class=Notebook,
            projection_class=NoteCountProjection,
            view_class=NoteCountView,
            env=env,
        )

    with runner() as running:
        assert isinstance(running.app.recorder, SubscribableSQLiteApplicationRecorder)
        view = running.projection.view

        # Saved through the runner's own application.
        started = perf_counter()
        running.app.write("first")
        while view.note_count() < 1:
            assert perf_counter() - started < 5.0, "projection did not update"
            sleep(0.0005)
        print(f"save -> view updated: {(perf_counter() - started) * 1000:.2f} ms")

        # Saved through another Application instance (its own factory and pool).
        other = Notebook(env=env)
        try:
            running.wait(other.write("second"), timeout=5.0)
        finally:
            other.close()
        assert view.note_count() == 2

    # Saved while no runner follows; a new runner resumes from its tracking record.
    offline = Notebook(env=env)
    try:
        notification_id = offline.write("third")
    finally:
        offline.close()
    with runner() as running:
        running.wait(notification_id, timeout=5.0)
        assert running.projection.view.note_count() == 3
