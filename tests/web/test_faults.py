"""Faults under load (issue 5): kill -9 one of two instances, then restart PostgreSQL, mid-load.

Two real server processes (``uvicorn --factory web.server:app_factory``, as in
tests/web/test_two_instances.py) run over a PRIVATE PostgreSQL cluster
(tests/web/fault_fixtures.py): the machine's shared server is never restarted by a test.

While the faults happen, the test process keeps a steady load of edits going: one thread per
plan POSTs "add a need" (an htmx form post with session and CSRF token, each with a command id
of its own and a unique description) at a fixed rate (20 edits/s in all, for 15 s),
alternating between the instances. An attempt without an answer, or answered with a retryable
refusal (503/409/422), is retried with the same command id on the other instance, as a browser
behind a proxy would; every attempt's answer is recorded. One websocket viewer per plan and
instance watches the live timeline and reconnects (to its own instance first, else the other)
whenever its socket drops.

The faults: after ``KILL_AT`` seconds instance A gets SIGKILL and is started again (new
viewers then connect to the restarted A); after ``PG_RESTART_AT`` seconds PostgreSQL is
restarted (``pg_ctl restart -m fast``).

The scenario runs once (the module fixture ``run``, ~25 s); each test judges one promise.

Afterwards:
- every acknowledged edit (an answer 200) is in the event store, read by a fresh PlanService:
  its command's receipt is there and its need, exactly once;
- no edit is there twice, none half-applied (need without receipt or the other way round);
- no attempt was answered with anything but 200 or a retryable 503/409/422 with a message;
- the live read model equals a rebuild from scratch (`projections.plans.rebuild`), plan by
  plan and caseload row by caseload row, and each plan equals `PlanService.plan_record`;
- every viewer's last fragment carries the plan's current version (``#live-version``).
"""

from __future__ import annotations

import asyncio
import os
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import pytest
from eventsourcing.domain import Snapshot
from psycopg import sql
from websockets.exceptions import InvalidHandshake, InvalidStatus, WebSocketException

from domain.application import PlanService
from domain.plan import ClientPlan
from domain.storage import StoreSettings
from projections.plans import PlanProjection, open_view_store, rebuild
from tests.projections.conftest import postgres_store_env
from tests.web.conftest import TEST_SECRET_KEY
from tests.web.fault_fixtures import PrivatePostgres, private_postgres
from tests.web.identity_fixtures import FAST_HASHER, add_account, csrf_token_of_page, sign_in
from tests.web.test_two_instances import (
    AINO,
    BERT,
    REPO_ROOT,
    Instance,
    live_socket,
    open_plan,
    start_instance,
    stop_instance,
    wait_until_ready,
    wait_until_serving,
)
from web.accounts import AccountStore
from web.live.messages import VERSION_MARKER_ID

pytestmark = pytest.mark.postgres

SCHEMA = "polku_faults"
PLANS = 4
RATE_PER_PLAN = 5.0  # edits/s per plan: 20 edits/s in all
LOAD_SECONDS = 15.0
KILL_AT = 4.0
PG_RESTART_AT = 9.0
ATTEMPTS = 4  # per edit, the same command id each time
RETRY_PAUSE = 0.3
REQUEST_TIMEOUT = 10.0
RETRYABLE = {503, 409, 422}
SETTLE_WITHIN = 20.0
VIEWER_CATCH_UP = 10.0
VERSION = re.compile(r'data-version="(\d+)"')


# ---------------------------------------------------------------------------- records


@dataclass
class Attempt:
    instance: str
    status: int | None  # None: no answer (connection refused or reset, timeout)
    detail: str
    at: float


@dataclass
class Edit:
    plan_id: str
    command_id: str
    description: str
    attempts: list[Attempt] = field(default_factory=list)

    @property
    def acknowledged(self) -> bool:
        return any(attempt.status == 200 for attempt in self.attempts)


@dataclass
class Viewer:
    name: str
    plan_id: str
    prefer: int  # index of the instance it connects to first
    cookie: str
    version: int
    last_fragment_version: int | None = None
    connections: list[str] = field(default_factory=list)
    drops: int = 0
    refused: int = 0


# ---------------------------------------------------------------------------- set-up


def instance_environ(cluster: PrivatePostgres) -> dict[str, str]:
    """POLKU_* of both instances and of this process's PlanService (nothing else of the kind)."""
    outside = {name: value for name, value in os.environ.items() if not name.startswith("POLKU_")}
    return {
        **outside,
        **postgres_store_env(cluster.env(), SCHEMA),
        "POLKU_SECRET_KEY": TEST_SECRET_KEY,
        "PYTHONPATH": str(REPO_ROOT),
    }


def add_accounts(settings: StoreSettings) -> None:
    """Aino (the plans' expert) and Bert (a member of their network), in PostgreSQL."""
    store = AccountStore.open(settings, hasher=FAST_HASHER)
    try:
        for actor in (AINO, BERT):
            add_account(store, actor.person_id, name=actor.name, profession="asiantuntija",
                        organisation=(actor.organisation_id, actor.organisation_name, "other"))
    finally:
        store.close()


class Cluster:
    """Instances A and B; A can be killed and started again (a new process, a new port)."""

    def __init__(self, environ: dict[str, str], folder: Path) -> None:
        self.environ = environ
        self.folder = folder
        self.instances: list[Instance] = []
        self.retired: list[Instance] = []
        self.start_failures: list[str] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        self.instances = [start_instance(name, self.environ, self.folder / name) for name in ("A", "B")]
        for instance in self.instances:
            wait_until_serving(instance)

    def __getitem__(self, index: int) -> Instance:
        with self._lock:
            return self.instances[index]

    def kill_and_restart(self, index: int) -> float:
        """SIGKILL the instance and start a new process for it; the seconds until it serves again.

        A new process that exits during start-up is started once more, as a process supervisor
        (systemd's Restart=) would; each such failure is kept in ``start_failures``
        (see test_an_instance_starting_beside_a_busy_writer_does_not_deadlock).
        """
        victim = self[index]
        victim.process.kill()  # SIGKILL
        victim.process.wait(10)
        self.retired.append(victim)
        started = time.monotonic()
        for _try in range(3):
            again = start_instance(victim.name, self.environ, self.folder / f"{victim.name}-{len(self.retired)}")
            try:
                wait_until_serving(again)
            except AssertionError:
                if again.process.poll() is None:
                    raise
                self.start_failures.append(again.output()[-1500:])
                self.retired.append(again)
                continue
            break
        else:
            pytest.fail(f"instance {victim.name} could not be started again:\n" + "\n".join(self.start_failures))
        with self._lock:
            self.instances[index] = again
        return time.monotonic() - started

    def stop(self) -> None:
        for instance in self.instances:
            stop_instance(instance)

    def logs(self) -> str:
        return "\n".join(f"--- {i.name} ({i.log.parent.name}) ---\n{i.output()}" for i in (*self.retired, *self.instances))


# ---------------------------------------------------------------------------- load


def _message_of(response: httpx.Response) -> str:
    text = re.sub(r"<[^>]+>", " ", response.text)
    return " ".join(text.split())[:200]


def edit_loop(cluster: Cluster, client: httpx.Client, plan_id: str, plan_no: int, started: float,
              edits: list[Edit], stop: threading.Event) -> None:
    """Add needs to one plan at RATE_PER_PLAN for LOAD_SECONDS (bounded), alternating instances."""
    token = csrf_token_of_page(client.get(f"{cluster[plan_no % 2].base_url}/plans/{plan_id}").text)
    count = int(LOAD_SECONDS * RATE_PER_PLAN)
    for number in range(count):
        due = started + number / RATE_PER_PLAN
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        if stop.is_set() or time.monotonic() - started > LOAD_SECONDS + 3:
            return
        edit = Edit(plan_id=plan_id, command_id=str(uuid.uuid4()),
                    description=f"Kuormatarve {plan_no}-{number} {uuid.uuid4().hex[:8]}")
        edits.append(edit)
        for attempt_no in range(ATTEMPTS):
            instance = cluster[(number + plan_no + attempt_no) % 2]
            try:
                response = client.post(
                    f"{instance.base_url}/plans/{plan_id}/needs/new/add",
                    headers={"hx-request": "true", "x-csrftoken": token},
                    data={"command_id": edit.command_id, "category": "health", "description": edit.description},
                    timeout=REQUEST_TIMEOUT,
                )
            except httpx.TransportError as error:
                edit.attempts.append(Attempt(instance.name, None, type(error).__name__, time.monotonic() - started))
                time.sleep(RETRY_PAUSE / 3)
                continue
            edit.attempts.append(Attempt(instance.name, response.status_code, _message_of(response),
                                         time.monotonic() - started))
            if response.status_code == 200 or response.status_code not in RETRYABLE:
                break
            time.sleep(RETRY_PAUSE)


# ---------------------------------------------------------------------------- viewers


async def watch(viewer: Viewer, cluster: Cluster, stop: asyncio.Event) -> None:
    """Keep a live socket open on the plan, reconnecting (own instance first) when it drops."""
    while not stop.is_set():
        for index in (viewer.prefer, 1 - viewer.prefer):
            instance = cluster[index]
            try:
                socket = await live_socket(instance, viewer.plan_id, viewer.version, viewer.cookie)
            except (OSError, TimeoutError, InvalidHandshake, InvalidStatus, WebSocketException):
                viewer.refused += 1
                continue
            viewer.connections.append(f"{instance.name}:{instance.base_url.rsplit(':', 1)[1]}")
            try:
                while not stop.is_set():
                    try:
                        async with asyncio.timeout(0.3):
                            message = await socket.recv()
                    except TimeoutError:
                        continue
                    if isinstance(message, str) and f'id="{VERSION_MARKER_ID}"' in message:
                        match = VERSION.search(message.split(f'id="{VERSION_MARKER_ID}"', 1)[1][:300]) \
                            or VERSION.search(message)
                        if match:
                            viewer.last_fragment_version = int(match.group(1))
                            viewer.version = max(viewer.version, viewer.last_fragment_version)
            except WebSocketException:
                viewer.drops += 1
            finally:
                try:
                    async with asyncio.timeout(2):
                        await socket.close()
                except (TimeoutError, WebSocketException, OSError):
                    pass
            break
        if not stop.is_set():
            await asyncio.sleep(0.2)


# ---------------------------------------------------------------------------- the run


@dataclass
class Run:
    """What happened, for the tests below to judge."""

    plans: list[tuple[str, int]]
    edits: list[Edit]
    viewers: list[Viewer]
    faults: dict[str, float]
    current: dict[str, ClientPlan]
    head: int
    live_position: int
    live_rows: dict[str, tuple[int, str] | None]
    live_caseload: list[str]
    rebuilt_applied: int
    rebuilt_position: int
    rebuilt_rows: dict[str, tuple[int, str] | None]
    rebuilt_caseload: list[str]
    rebuilt_plans: dict[str, ClientPlan | None]
    logs: str
    seconds: float

    @property
    def attempts(self) -> list[Attempt]:
        return [attempt for edit in self.edits for attempt in edit.attempts]


def _read_model(settings: StoreSettings, plan_ids: list[str]) -> tuple[int, dict[str, tuple[int, str] | None], list[str],
                                                                         dict[str, ClientPlan | None]]:
    store = open_view_store(settings)
    try:
        projection = PlanProjection(store)
        return (
            store.max_tracking_id(PlanService.name) or 0,
            {plan_id: store.plan_state(plan_id) for plan_id in plan_ids},
            sorted(map(repr, store.caseload(person_id=AINO.person_id))),
            {plan_id: projection.load(plan_id) for plan_id in plan_ids},
        )
    finally:
        store.datastore.close()


async def faults_under_load(cluster: Cluster, settings: StoreSettings, postgres: PrivatePostgres) -> Run:
    began = time.monotonic()
    for index in (0, 1):
        wait_until_ready(cluster[index], timeout=20)
    plans = [open_plan(settings) for _ in range(PLANS)]

    editors = [httpx.Client(follow_redirects=False, timeout=REQUEST_TIMEOUT, headers={"accept-language": "fi"})
               for _ in plans]
    bert = httpx.Client(follow_redirects=False, timeout=REQUEST_TIMEOUT, headers={"accept-language": "fi"})
    for number, editor in enumerate(editors):
        sign_in(editor, cluster[number % 2].base_url, AINO.person_id)
    sign_in(bert, cluster[0].base_url, BERT.person_id)
    session = bert.cookies["polku_session"]  # sessions live in PostgreSQL: good on either instance

    viewers = [Viewer(name=f"{'AB'[index]}/plan{number}", plan_id=plan_id, prefer=index, cookie=session, version=version)
               for number, (plan_id, version) in enumerate(plans) for index in (0, 1)]
    stop_viewers = asyncio.Event()
    watching = [asyncio.create_task(watch(viewer, cluster, stop_viewers)) for viewer in viewers]

    edits: list[list[Edit]] = [[] for _ in plans]
    stop_load = threading.Event()
    faults: dict[str, float] = {}
    try:
        await asyncio.sleep(0.5)  # every viewer connected
        started = time.monotonic()
        loaders = [threading.Thread(target=edit_loop, args=(cluster, editors[n], plan_id, n, started, edits[n], stop_load),
                                    name=f"load plan{n}", daemon=True)
                   for n, (plan_id, _version) in enumerate(plans)]
        for loader in loaders:
            loader.start()

        await asyncio.sleep(max(0.0, started + KILL_AT - time.monotonic()))
        faults["kill_at"] = time.monotonic() - started
        faults["a_back_after_s"] = await asyncio.to_thread(cluster.kill_and_restart, 0)
        # and new viewers of the restarted A, which then live through the database's restart
        late = [Viewer(name=f"A'/plan{number}", plan_id=plan_id, prefer=0, cookie=session, version=version)
                for number, (plan_id, version) in enumerate(plans)]
        viewers.extend(late)
        watching.extend(asyncio.create_task(watch(viewer, cluster, stop_viewers)) for viewer in late)

        await asyncio.sleep(max(0.0, started + PG_RESTART_AT - time.monotonic()))
        faults["pg_restart_at"] = time.monotonic() - started
        faults["pg_restart_s"] = await asyncio.to_thread(postgres.restart)

        for loader in loaders:
            await asyncio.to_thread(loader.join, LOAD_SECONDS + 30)
            assert not loader.is_alive(), "the load did not end in time"
        faults["load_s"] = time.monotonic() - started

        # settle: both instances ready again (read model caught up, listening)
        for index in (0, 1):
            await asyncio.to_thread(wait_until_ready, cluster[index], SETTLE_WITHIN)

        service = PlanService(settings)
        try:
            current = {plan_id: service.plan_record(plan_id) for plan_id, _version in plans}
            head = service.recorder.max_notification_id() or 0
        finally:
            service.close()

        # give every viewer a moment to reach the plan's current version
        deadline = time.monotonic() + VIEWER_CATCH_UP
        while time.monotonic() < deadline and any(
            viewer.last_fragment_version != current[viewer.plan_id].version for viewer in viewers
        ):
            await asyncio.sleep(0.1)
    finally:
        stop_load.set()
        stop_viewers.set()
        await asyncio.gather(*watching, return_exceptions=True)
        for client in (*editors, bert):
            client.close()

    plan_ids = [plan_id for plan_id, _ in plans]
    live_position, live_rows, live_caseload, _live_plans = _read_model(settings, plan_ids)
    logs = cluster.logs()
    faults["a_start_failures"] = len(cluster.start_failures)
    for failure in cluster.start_failures:
        print(f"\nthe restarted instance A failed to start once:\n{failure[-600:]}")
    cluster.stop()  # a rebuild refuses to run while an instance writes the read model
    applied = await asyncio.to_thread(rebuild, settings)
    rebuilt_position, rebuilt_rows, rebuilt_caseload, rebuilt_plans = _read_model(settings, plan_ids)
    return Run(plans=plans, edits=[edit for per_plan in edits for edit in per_plan], viewers=viewers, faults=faults,
               current=current, head=head, live_position=live_position, live_rows=live_rows,
               live_caseload=live_caseload, rebuilt_applied=applied, rebuilt_position=rebuilt_position,
               rebuilt_rows=rebuilt_rows,
               rebuilt_caseload=rebuilt_caseload, rebuilt_plans=rebuilt_plans, logs=logs,
               seconds=time.monotonic() - began)


def _report(run: Run) -> None:
    attempts = run.attempts
    statuses: dict[str, int] = {}
    for attempt in attempts:
        key = str(attempt.status) if attempt.status is not None else f"no answer ({attempt.detail})"
        statuses[key] = statuses.get(key, 0) + 1
    acknowledged = sum(edit.acknowledged for edit in run.edits)
    print(f"\nfault run: {len(run.edits)} edits sent, {acknowledged} acknowledged, {len(attempts)} attempts {statuses}; "
          f"faults {({k: round(v, 2) for k, v in run.faults.items()})}; event log head {run.head}; "
          f"{run.seconds:.1f} s")
    for viewer in run.viewers:
        print(f"viewer {viewer.name}: connections {viewer.connections}, drops {viewer.drops}, "
              f"refused {viewer.refused}, last fragment v{viewer.last_fragment_version}, "
              f"plan v{run.current[viewer.plan_id].version}")
    for attempt in [a for a in attempts if a.status not in (None, 200)][:8]:
        print(f"  refused: {attempt}")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    """The whole scenario, once for the tests below; the private cluster is gone after it."""
    with private_postgres() as postgres:
        environ = instance_environ(postgres)
        settings = StoreSettings.from_environ(environ)
        add_accounts(settings)
        cluster = Cluster(environ, tmp_path_factory.mktemp("faults"))
        try:
            cluster.start()
            result = asyncio.run(faults_under_load(cluster, settings, postgres))
        finally:
            cluster.stop()
        _report(result)
        yield result


# ---------------------------------------------------------------------------- the tests


def _state(plan: ClientPlan | None) -> dict[str, object]:
    assert plan is not None
    return Snapshot.take(plan).state


def test_the_faults_happened_under_a_steady_load(run: Run) -> None:
    # half the planned rate at least: the loaders fall behind around the faults, and more on a busy machine
    assert len(run.edits) >= 0.5 * PLANS * RATE_PER_PLAN * LOAD_SECONDS, "the load did not keep its rate"
    assert run.faults["kill_at"] < run.faults["pg_restart_at"] < LOAD_SECONDS
    assert any(a.status is None for a in run.attempts), "no edit met the killed instance"
    assert any(len(v.connections) > 1 for v in run.viewers), "no viewer had to reconnect after the kill"
    assert all(v.connections and v.connections[0] != run.viewers[0].connections[0]
               for v in run.viewers if v.name.startswith("A'")), "the late viewers did not reach the restarted A"
    assert sum(edit.acknowledged for edit in run.edits) >= 0.8 * len(run.edits)


def test_every_acknowledged_edit_is_in_the_event_store_once_and_nothing_is_half_applied(run: Run) -> None:
    for plan_id, _version in run.plans:
        plan = run.current[plan_id]
        descriptions = [need.description for need in plan.needs.values()]
        assert len(descriptions) == len(set(descriptions)), "an edit was recorded twice"
        for edit in (e for e in run.edits if e.plan_id == plan_id):
            times = descriptions.count(edit.description)
            receipt = plan.receipt_for(edit.command_id)
            if edit.acknowledged:
                assert times == 1 and receipt is not None, f"acknowledged edit lost: {edit}"
                assert plan.needs[receipt.item_id].description == edit.description
            else:  # in flight when a fault hit: either whole or not at all
                assert (times == 1) == (receipt is not None), f"half-applied: {edit}"


def test_commands_in_flight_succeed_or_fail_with_a_clear_retryable_error(run: Run) -> None:
    """Refusals are 503/409/422 with a message (500s: the next test)."""
    answered = [a for a in run.attempts if a.status is not None and a.status != 200]
    silent = [a for a in answered if a.status in RETRYABLE and not a.detail.strip()]
    assert not silent, f"retryable refusals without a message: {silent[:5]}"
    other = [a for a in answered if a.status not in RETRYABLE and a.status != 500]
    assert not other, f"answers that are neither a success nor retryable: {other[:5]}"


def test_no_command_in_flight_is_answered_500(run: Run) -> None:
    failed = [a for a in run.attempts if a.status == 500]
    assert not failed, f"{len(failed)} attempts answered 500, e.g. {failed[:3]}"


def test_every_read_model_equals_a_rebuild_from_scratch(run: Run) -> None:
    assert run.live_position == run.head, "the live read model did not reach the end of the event log"
    assert run.rebuilt_position == run.head  # by position: a write that failed in the restart leaves a gap
    assert 0 < run.rebuilt_applied <= run.head
    for plan_id, _version in run.plans:
        live = run.live_rows[plan_id]
        assert live is not None and live[0] == run.current[plan_id].version
        assert _state(run.rebuilt_plans[plan_id]) == _state(run.current[plan_id])
    assert run.live_rows == run.rebuilt_rows
    assert run.live_caseload == run.rebuilt_caseload


def test_every_viewer_ends_on_the_plans_current_version(run: Run) -> None:
    lagging = [(v.name, v.last_fragment_version, run.current[v.plan_id].version) for v in run.viewers
               if v.last_fragment_version != run.current[v.plan_id].version]
    assert not lagging, f"viewers whose last fragment is not the plan's current version: {lagging}"


# ---------------------------------------------------------------------------- start-up beside a writer


def test_an_instance_starting_beside_a_busy_writer_does_not_deadlock(
    postgres_env: dict[str, str], pg_schema: str
) -> None:
    """A writer's transaction holds both read-model tables, in the order of ``save_plan``,
    while another instance's read-model store opens: the opening neither waits for those
    locks nor takes any (even ``CREATE INDEX IF NOT EXISTS`` locks its table), so there
    is no lock-order inversion to deadlock on."""
    settings = StoreSettings.from_environ(postgres_store_env(postgres_env, pg_schema))
    open_view_store(settings).datastore.close()  # the tables exist, as when an instance restarts
    views = f"{pg_schema}_views"
    outcome: list[BaseException | None] = []

    def start_up() -> None:
        try:
            open_view_store(settings).datastore.close()
        except BaseException as error:  # noqa: BLE001  (handed to the test's thread)
            outcome.append(error)
        else:
            outcome.append(None)

    with psycopg.connect(settings.pg_conninfo, autocommit=False, connect_timeout=5) as writer:
        writer.execute("SET lock_timeout = '20s'")
        for table in ("plan_views", "plan_people"):
            writer.execute(sql.SQL("LOCK TABLE {}.{} IN ROW EXCLUSIVE MODE").format(
                sql.Identifier(views), sql.Identifier(table)))
        starting = threading.Thread(target=start_up, name="start-up", daemon=True)
        starting.start()
        starting.join(10)
        still_starting = starting.is_alive()
        writer.rollback()
    starting.join(20)
    assert not still_starting, "the start-up waited for the writer's locks"
    assert outcome == [None]
