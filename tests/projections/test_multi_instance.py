"""Several instances of the plan read model over one PostgreSQL schema.

Exactly one instance writes the read model (the holder of the writer's advisory lock);
every instance hears each committed change through the writer's NOTIFY, which is sent in
the same transaction as the rows. See docs/deployment.md.

How "exactly once" is checked: every write of the read model's tracking record also
inserts a row into `applied_log` (the notification id and which instance wrote it) in the
same transaction, by a trigger on the tracking table; the instance is named by a setting
of its connection (``polku.writer``), set before each write (the wrappers of
`PostgresPlanViews._insert_tracking` and `_call_save`). A row there is an application that
committed, whichever process made it, a killed one included; a write that failed or was
rolled back leaves none. So "each id of the event log appears exactly once in
`applied_log`" is "every event was applied exactly once".
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from domain.application import PlanService
from domain.storage import StoreSettings
from projections.plans import PlanViews, open_view_store
from projections.views import PostgresPlanViews
from tests.projections.conftest import _pg_connect, postgres_store_env
from tests.projections.helpers import (
    ACTORS,
    all_plan_ids,
    notification_ids,
    random_commands,
    read_side,
    write_side,
)

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
TAKEOVER_WITHIN = 2.0  # seconds (the design aims at ~1 s: a retry every 0.5 s)


# ---------------------------------------------------------------------------- fixtures


@pytest.fixture
def store_env(postgres_env: dict[str, str], pg_schema: str, data_dir: Path) -> Iterator[dict[str, str]]:
    """A fresh PostgreSQL store only (overrides conftest's SQLite/PostgreSQL pair)."""
    try:
        yield {**postgres_store_env(postgres_env, pg_schema), "POLKU_DATA_DIR": str(data_dir)}
    finally:
        with _pg_connect(postgres_env) as conn:
            conn.execute("SET lock_timeout = '30s'")
            for name in (f"{pg_schema}_views", f"{pg_schema}_keys"):
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


def views_schema(settings: StoreSettings) -> str:
    return f"{settings.pg_schema}_views"


def connect(settings: StoreSettings) -> psycopg.Connection[Any]:
    return psycopg.connect(settings.pg_conninfo, autocommit=True)


def install_applied_log(label: Callable[[Any], str]) -> None:
    """Name the writing instance on the connection of each write (for the trigger of `applied_log`)."""
    insert_tracking, call_save = PostgresPlanViews._insert_tracking, PostgresPlanViews._call_save

    def named(cursor: Any, store: PostgresPlanViews) -> None:
        cursor.execute("SELECT set_config('polku.writer', %s, false)", (label(store),))

    def logging_insert(self: PostgresPlanViews, cursor: Any, tracking: Any) -> None:
        named(cursor, self)
        insert_tracking(self, cursor, tracking)

    def logging_save(self: PostgresPlanViews, cursor: Any, parameters: tuple[Any, ...]) -> bool:
        named(cursor, self)
        return call_save(self, cursor, parameters)

    PostgresPlanViews._insert_tracking = logging_insert  # type: ignore[method-assign]
    PostgresPlanViews._call_save = logging_save  # type: ignore[method-assign]


@pytest.fixture
def applied_log(settings: StoreSettings, service: PlanService, monkeypatch: pytest.MonkeyPatch) -> Callable[[], dict[int, list[str]]]:
    """Turns the log on (for this process) and returns a reader: notification id -> writers."""
    schema = views_schema(settings)
    with connect(settings) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        conn.execute(
            sql.SQL("CREATE TABLE {}.applied_log (notification_id BIGINT NOT NULL, writer TEXT NOT NULL)").format(
                sql.Identifier(schema)
            )
        )
        store = open_view_store(settings)  # the read model's tables, for the trigger
        tracking_table = store.tracking_table_name
        store.datastore.close()
        conn.execute(
            sql.SQL(
                "CREATE FUNCTION {schema}.log_applied() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
                " IF NEW.application_name = {name} THEN"
                " INSERT INTO {schema}.applied_log VALUES (NEW.notification_id, current_setting('polku.writer'));"
                " END IF; RETURN NEW; END $$"
            ).format(schema=sql.Identifier(schema), name=sql.Literal(PlanService.name))
        )
        conn.execute(
            sql.SQL(
                "CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON {schema}.{tracking}"
                " FOR EACH ROW EXECUTE FUNCTION {schema}.log_applied()"
            ).format(schema=sql.Identifier(schema), tracking=sql.Identifier(tracking_table))
        )
    monkeypatch.setattr(PostgresPlanViews, "_insert_tracking", PostgresPlanViews._insert_tracking)
    monkeypatch.setattr(PostgresPlanViews, "_call_save", PostgresPlanViews._call_save)
    install_applied_log(lambda store: getattr(store, "label", "?"))

    def read() -> dict[int, list[str]]:
        with connect(settings) as conn:
            rows = conn.execute(
                sql.SQL("SELECT notification_id, writer FROM {}.applied_log ORDER BY notification_id").format(
                    sql.Identifier(schema)
                )
            ).fetchall()
        found: dict[int, list[str]] = {}
        for notification_id, writer in rows:
            found.setdefault(notification_id, []).append(writer)
        return found

    return read


class Heard:
    """A listener of one PlanViews: every (plan id, position) it was told, in order."""

    def __init__(self, views: PlanViews) -> None:
        self.calls: list[tuple[str | None, int, float]] = []
        self.changed = threading.Condition()
        views.add_listener(self)

    def __call__(self, plan_id: str | None, position: int) -> None:
        with self.changed:
            self.calls.append((plan_id, position, time.perf_counter()))
            self.changed.notify_all()

    def wait(self, plan_id: str, position: int, timeout: float = 5.0) -> float | None:
        """When (perf_counter) the listener heard `plan_id` at `position` or later; None on timeout."""

        def found() -> float | None:
            return next((at for p, pos, at in self.calls if p == plan_id and pos >= position), None)

        with self.changed:
            self.changed.wait_for(lambda: found() is not None, timeout=timeout)
            return found()


def open_labelled(open_views: Callable[..., PlanViews], label: str) -> PlanViews:
    views = open_views()
    views.store.label = label  # type: ignore[attr-defined]
    return views


def wait_until(condition: Callable[[], bool], timeout: float) -> float | None:
    """Seconds until `condition()` held, or None if it did not within `timeout`."""
    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if condition():
            return time.perf_counter() - start
        time.sleep(0.01)
    return None


def assert_each_event_applied_once(service: PlanService, applied: dict[int, list[str]]) -> None:
    ids = notification_ids(service)
    assert sorted(applied) == ids, "an event of the log was never applied (or one not in the log was)"
    doubled = {notification_id: writers for notification_id, writers in applied.items() if len(writers) != 1}
    assert doubled == {}, f"applied more than once: {doubled}"


def assert_caught_up(service: PlanService, *instances: PlanViews, timeout: float = 10.0) -> int:
    end = service.recorder.max_notification_id() or 0
    for views in instances:
        assert views.wait_for(end, timeout=timeout), f"an instance is stuck at {views.position}, the log at {end}"
        views.check_running()
    return end


def note(service: PlanService, plan_id: str, tag: str) -> Any:
    expert = ACTORS[service.get_plan(plan_id).expert.person_id]
    return service.add_note(plan_id, by=expert, command_id=tag, text=f"Muistiinpano {tag}.")


class Producer:
    """Random commands in a background thread until stopped."""

    def __init__(self, service: PlanService, seed: int) -> None:
        self.service = service
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.count = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)
        assert not self.errors, self.errors

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                random_commands(self.service, self.rng, 1, f"load-{self.count}")
                self.count += 1
                time.sleep(0.005)
        except BaseException as error:  # noqa: BLE001 - reported in the test's thread
            self.errors.append(error)


# ---------------------------------------------------------------------------- the tests


def test_one_instance_writes_and_both_hear_every_edit(
    service: PlanService, open_views: Callable[..., PlanViews], applied_log: Callable[[], dict[int, list[str]]]
) -> None:
    random_commands(service, random.Random(1), 10, "before")
    a = open_labelled(open_views, "A")
    assert wait_until(lambda: a.is_leader, 5) is not None, "the first instance never took the writer lock"
    b = open_labelled(open_views, "B")
    heard_a, heard_b = Heard(a), Heard(b)
    assert wait_until(lambda: b.is_listening, 5) is not None

    random_commands(service, random.Random(2), 30, "both")
    plan_id = all_plan_ids(service)[0]
    edit = note(service, plan_id, "the-edit")
    saved = time.perf_counter()
    assert a.wait_for(edit.position, timeout=5) and b.wait_for(edit.position, timeout=5)
    at_a, at_b = heard_a.wait(plan_id, edit.position), heard_b.wait(plan_id, edit.position)
    assert at_a is not None and at_b is not None, "a listener never heard the edit"
    print(f"\nedit heard by the writer's listeners after {1000 * (at_a - saved):.1f} ms, "
          f"by the other instance's after {1000 * (at_b - saved):.1f} ms")

    end = assert_caught_up(service, a, b)
    assert (a.is_leader, b.is_leader) == (True, False)
    applied = applied_log()
    assert_each_event_applied_once(service, applied)
    assert {writer for writers in applied.values() for writer in writers} == {"A"}
    assert a.store.max_tracking_id(PlanService.name) == end
    plan_ids = all_plan_ids(service)
    assert read_side(b, plan_ids) == write_side(service, plan_ids)
    # both were told of every plan's latest change, in order of position
    for heard in (heard_a, heard_b):
        positions = [position for _, position, _ in heard.calls]
        assert positions == sorted(positions) and len(set(positions)) == len(positions)
        latest = {p: pos for p, pos, _ in heard.calls if p}
        for plan_id in plan_ids:
            assert latest[plan_id] == _row_position(b, plan_id)


def _row_position(views: PlanViews, plan_id: str) -> int:
    return dict(views.store.plans_changed_after(0))[plan_id]


@pytest.mark.parametrize("how", ["server ends the session", "socket shut on the client"])
def test_the_other_instance_takes_over_when_the_leader_loses_its_lock(
    how: str,
    settings: StoreSettings,
    service: PlanService,
    open_views: Callable[..., PlanViews],
    applied_log: Callable[[], dict[int, list[str]]],
) -> None:
    random_commands(service, random.Random(3), 10, "before")
    a = open_labelled(open_views, "A")
    assert wait_until(lambda: a.is_leader, 5) is not None
    b = open_labelled(open_views, "B")
    heard_b = Heard(b)
    assert wait_until(lambda: b.is_listening, 5) is not None
    assert_caught_up(service, a, b)

    with Producer(service, seed=4) as producer:
        wait_until(lambda: producer.count >= 15, 20)
        election = a._election
        assert election is not None and election.backend_pid is not None
        if how == "server ends the session":
            with connect(settings) as conn:
                conn.execute("SELECT pg_terminate_backend(%s)", (election.backend_pid,))
        else:
            lock_connection = election._conn
            assert lock_connection is not None
            socket.socket(fileno=os.dup(lock_connection.fileno())).shutdown(socket.SHUT_RDWR)
        took_over = wait_until(lambda: b.is_leader, 5)
        assert took_over is not None and took_over < TAKEOVER_WITHIN, f"no takeover within {TAKEOVER_WITHIN} s"
        count_at_takeover = producer.count
        wait_until(lambda: producer.count >= count_at_takeover + 15, 20)
    print(f"\n{how}: B took over after {took_over:.2f} s; {producer.count} commands in all")

    assert wait_until(lambda: a._election is not None and a._election._conn is not None and not a.is_leader, 5) is not None
    end = assert_caught_up(service, a, b)
    assert (a.is_leader, b.is_leader) == (False, True)
    applied = applied_log()
    assert_each_event_applied_once(service, applied)
    assert {writer for writers in applied.values() for writer in writers} == {"A", "B"}
    assert b.store.max_tracking_id(PlanService.name) == end
    plan_ids = all_plan_ids(service)
    assert read_side(a, plan_ids) == write_side(service, plan_ids)

    # and after the takeover an edit still reaches both, listeners included
    heard_a = Heard(a)
    edit = note(service, plan_ids[0], "after-takeover")
    assert heard_a.wait(plan_ids[0], edit.position) is not None
    assert heard_b.wait(plan_ids[0], edit.position) is not None
    assert_each_event_applied_once(service, applied_log())


def test_a_second_writer_that_has_not_noticed_it_lost_the_lock_cannot_apply_an_event_twice(
    service: PlanService,
    open_views: Callable[..., PlanViews],
    applied_log: Callable[[], dict[int, list[str]]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The fence: B runs its projection *without* the lock, racing the leader A on every event.

    This is the moment after a takeover when an old leader has not yet seen that its lock
    connection is gone. The single tracking row, written in the same transaction as the
    rows, lets exactly one of two writes of an event commit; the other rolls back and its
    runner starts again from the stored position.
    """
    caplog.set_level("INFO", logger="projections.plans")
    random_commands(service, random.Random(8), 10, "before")
    a = open_labelled(open_views, "A")
    assert wait_until(lambda: a.is_leader, 5) is not None
    b = open_labelled(open_views, "B")
    assert wait_until(lambda: b.is_listening, 5) is not None
    try:
        with Producer(service, seed=9) as producer:
            while producer.count < 60:
                b._supervise()  # B keeps (re)starting a runner, as if it were leading
                time.sleep(0.02)
        deadline = time.monotonic() + 10
        end = service.recorder.max_notification_id()
        while b.store.max_tracking_id(PlanService.name) != end and time.monotonic() < deadline:
            b._supervise()
            time.sleep(0.02)
    finally:
        b._stop_runner()
    assert not b.is_leader and a.is_leader

    end = assert_caught_up(service, a, b)
    collisions = sum("another writer committed first" in record.getMessage() for record in caplog.records)
    applied = applied_log()
    writers = {writer for writers in applied.values() for writer in writers}
    print(f"\ntwo writers at once: {collisions} collisions refused by the tracking row; "
          f"{len(applied)} events applied, by {sorted(writers)}")
    assert collisions > 0, "the two writers never collided: the fence was not exercised"
    assert writers <= {"A", "B"}
    assert_each_event_applied_once(service, applied)
    assert a.store.max_tracking_id(PlanService.name) == end
    plan_ids = all_plan_ids(service)
    assert read_side(a, plan_ids) == write_side(service, plan_ids)


def test_an_instance_that_lost_its_listen_connection_catches_up_on_what_it_missed(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    """Notices sent while a listener is reconnecting are lost; it reads what changed instead."""
    random_commands(service, random.Random(10), 10, "before")
    a = open_labelled(open_views, "A")
    assert wait_until(lambda: a.is_leader, 5) is not None
    b = open_labelled(open_views, "B")
    heard_b = Heard(b)
    assert wait_until(lambda: b.is_listening, 5) is not None
    assert_caught_up(service, a, b)

    notices = b._notices
    assert notices is not None and notices.backend_pid is not None
    with connect(settings) as conn:
        conn.execute("SELECT pg_terminate_backend(%s)", (notices.backend_pid,))
    assert wait_until(lambda: not b.is_listening, 5) is not None
    plan_ids = all_plan_ids(service)
    missed = [note(service, plan_id, f"missed-{plan_id}") for plan_id in plan_ids[:3]]
    assert a.wait_for(missed[-1].position, timeout=5)  # written while B was not listening

    assert wait_until(lambda: b.is_listening, 5) is not None
    assert b.wait_for(missed[-1].position, timeout=5)
    for outcome in missed:
        assert heard_b.wait(outcome.plan_id, outcome.position) is not None, "B's listeners never heard a missed edit"
    later = note(service, plan_ids[0], "after-reconnect")
    assert heard_b.wait(plan_ids[0], later.position) is not None


_CHILD = """
import sys, time
from tests.projections.test_multi_instance import install_applied_log
from domain.storage import StoreSettings
from projections.plans import PlanViews

install_applied_log(lambda store: "child")
views = PlanViews(StoreSettings.from_environ())
while not views.is_leader:
    time.sleep(0.01)
print("leader", flush=True)
while True:
    time.sleep(1)
"""


def test_a_leader_process_killed_with_sigkill_is_replaced_with_nothing_lost_or_doubled(
    store_env: dict[str, str],
    service: PlanService,
    open_views: Callable[..., PlanViews],
    applied_log: Callable[[], dict[int, list[str]]],
) -> None:
    random_commands(service, random.Random(5), 10, "before")
    environ = {name: value for name, value in os.environ.items() if not name.startswith("POLKU_")}
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD],
        cwd=REPO_ROOT,
        env={**environ, **store_env, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "leader", "the child process never led"
        b = open_labelled(open_views, "B")
        heard_b = Heard(b)
        assert wait_until(lambda: b.is_listening, 5) is not None

        plan_id = all_plan_ids(service)[0]
        edit = note(service, plan_id, "written-by-the-child")
        assert b.wait_for(edit.position, timeout=5), "the child's write never reached the other instance"
        assert heard_b.wait(plan_id, edit.position) is not None
        assert not b.is_leader

        with Producer(service, seed=6) as producer:
            wait_until(lambda: producer.count >= 15, 20)
            child.send_signal(signal.SIGKILL)
            child.wait(5)
            took_over = wait_until(lambda: b.is_leader, 5)
            assert took_over is not None and took_over < TAKEOVER_WITHIN, f"no takeover within {TAKEOVER_WITHIN} s"
            count_at_kill = producer.count
            wait_until(lambda: producer.count >= count_at_kill + 15, 20)
        print(f"\nleader process killed: B took over after {took_over:.2f} s; {producer.count} commands in all")
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(5)

    end = assert_caught_up(service, b)
    applied = applied_log()
    assert_each_event_applied_once(service, applied)
    assert {writer for writers in applied.values() for writer in writers} == {"child", "B"}
    assert b.store.max_tracking_id(PlanService.name) == end
    plan_ids = all_plan_ids(service)
    assert read_side(b, plan_ids) == write_side(service, plan_ids)


def test_instances_starting_together_on_an_empty_database(
    settings: StoreSettings, open_views: Callable[..., PlanViews]
) -> None:
    opened: list[PlanViews] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def start() -> None:
        try:
            views = open_views()
            with lock:
                opened.append(views)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=start) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert wait_until(lambda: sum(views.is_leader for views in opened) == 1, 10) is not None
    time.sleep(1.0)  # a second leader would have been elected by now
    assert sum(views.is_leader for views in opened) == 1

    service = PlanService(settings)
    try:
        outcome = random_commands(service, random.Random(7), 5, "fresh")[-1]
        for views in opened:
            assert views.wait_for(outcome.position, timeout=10)
            views.check_running()
    finally:
        service.close()


def test_catching_up_tells_a_plan_written_between_its_reads(
    service: PlanService, open_views: Callable[..., PlanViews], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reconnecting listener reads the read model's head and the plans changed since; a
    plan written between the two reads is told to the listeners, not skipped over."""
    random_commands(service, random.Random(11), 3, "before")
    plan_ids = all_plan_ids(service)
    a = open_labelled(open_views, "A")
    assert wait_until(lambda: a.is_leader, 5) is not None
    assert a.wait_for(service.recorder.max_notification_id() or 0, timeout=5)
    b = open_views(follow=False)
    heard: list[tuple[str | None, int]] = []
    b.add_listener(lambda plan_id, position: heard.append((plan_id, position)))
    written: list[Any] = []

    def write_after(read: Callable[..., Any]) -> Callable[..., Any]:
        def reading(*args: Any) -> Any:
            result = read(*args)
            if not written:  # after the first of the two reads, whichever it is
                written.append(note(service, plan_ids[0], "between-the-reads"))
                assert a.wait_for(written[0].position, timeout=5)
            return result

        return reading

    monkeypatch.setattr(b.store, "max_tracking_id", write_after(b.store.max_tracking_id))
    monkeypatch.setattr(b.store, "plans_changed_after", write_after(b.store.plans_changed_after))
    b._catch_up()

    assert b.position == written[0].position
    assert (plan_ids[0], written[0].position) in heard, "the plan written between the reads was never told"
