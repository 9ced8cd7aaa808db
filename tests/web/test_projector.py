"""A dedicated projector (``polku project``) beside two web instances, all real processes over PostgreSQL.

Who wrote what: a trigger on the read model's tracking row (created before any process
starts) logs each committed write's notification id with the writing session's
``application_name``, which each process takes from its own PGAPPNAME. The row is written
in the same transaction as the plan rows, so a row in the log is a write that committed,
whichever process made it, a killed one included.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg import sql

from domain.application import PlanService
from domain.errors import StoreBusy, StoreUnavailable
from domain.storage import StoreSettings
from projections.plans import PlanViews
from tests.projections.conftest import _pg_connect
from tests.projections.helpers import all_plan_ids, notification_ids, read_side, write_side
from tests.web.identity_fixtures import csrf_token_of_page
from tests.web.test_two_instances import (  # noqa: F401 - fixtures
    ACROSS_WITHIN,
    AINO,
    BERT,
    REPO_ROOT,
    Instance,
    accounts,
    environ,
    first_plan_update_with,
    free_port,
    live_socket,
    open_plan,
    settings,
    signed_in,
    start_instance,
    stop_instance,
    wait_for_page_with,
    wait_until_serving,
)
from web.accounts import AccountStore

pytestmark = pytest.mark.postgres

TAKEOVER_WITHIN = 3.0  # seconds: a retry every 0.5 s, then the follower starts


def start_projector(environ: dict[str, str], data_dir: Path) -> Instance:
    """``polku project`` with its health checks on a free port."""
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "projector.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "web.cli", "project", "--port", str(port)],
        cwd=REPO_ROOT,
        env={**environ, "POLKU_DATA_DIR": str(data_dir), "PGAPPNAME": "P"},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Instance(name="P", base_url=f"http://127.0.0.1:{port}", process=process, log=log)


def ready_report(instance: Instance) -> dict[str, Any]:
    response = httpx.get(f"{instance.base_url}/readyz", timeout=5)
    assert response.status_code in (200, 503), response.text
    return response.json()


def wait_until(condition: Callable[[], bool], timeout: float) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def writers(*instances: Instance) -> list[str]:
    return [i.name for i in instances if i.process.poll() is None and ready_report(i).get("writer")]


@pytest.fixture
def applied(settings: StoreSettings, environ: dict[str, str]) -> Callable[[], dict[int, list[str]]]:
    """The read model's tables, made now, with the log of who applied which event (module docstring)."""
    PlanViews(settings, follow=False).close()
    schema = f"{settings.pg_schema}_views"
    with _pg_connect(environ) as conn:
        conn.execute(sql.SQL(
            """
            CREATE TABLE {schema}.applied_log (notification_id BIGINT NOT NULL, writer TEXT NOT NULL);
            CREATE FUNCTION {schema}.log_applied() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                IF NEW.application_name = {app} THEN
                    INSERT INTO {schema}.applied_log VALUES (NEW.notification_id, current_setting('application_name'));
                END IF;
                RETURN NEW;
            END $$;
            CREATE TRIGGER log_applied AFTER INSERT OR UPDATE ON {schema}.views_tracking
                FOR EACH ROW EXECUTE FUNCTION {schema}.log_applied();
            """
        ).format(schema=sql.Identifier(schema), app=sql.Literal(PlanService.name)))

    def read() -> dict[int, list[str]]:
        with _pg_connect(environ) as conn:
            rows = conn.execute(sql.SQL("SELECT notification_id, writer FROM {}.applied_log").format(
                sql.Identifier(schema))).fetchall()
        found: dict[int, list[str]] = {}
        for notification_id, writer in rows:
            found.setdefault(notification_id, []).append(writer)
        return found

    return read


@pytest.fixture
def processes(environ: dict[str, str], tmp_path: Path) -> Iterator[Callable[[str], Instance]]:
    """Starts web instances (by name) or the projector ("P"); every one is stopped after the test."""
    started: list[Instance] = []

    def start(name: str) -> Instance:
        if name == "P":
            instance = start_projector(environ, tmp_path / f"P{len(started)}")
        else:
            instance = start_instance(name, {**environ, "PGAPPNAME": name}, tmp_path / name)
        started.append(instance)
        wait_until_serving(instance)
        return instance

    yield start
    for instance in started:
        stop_instance(instance)


class Producer:
    """Commands recorded from this process in a background thread until stopped: a steady load.

    A command refused as retryable (:class:`StoreUnavailable`: the shared test server may be
    out of connections for a moment; :class:`StoreBusy`) is tried again, as a person would.
    """

    def __init__(self, settings: StoreSettings, plan_id: str) -> None:
        self.service = PlanService(settings)
        self.plan_id = plan_id
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.count = 0
        self.retried = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Producer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)
        self.service.close()
        assert not self.errors, self.errors

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                command_id = str(uuid.uuid4())
                try:
                    self.service.add_note(self.plan_id, by=AINO, command_id=command_id, text=f"Muistiinpano {self.count}")
                except (StoreBusy, StoreUnavailable):
                    self.retried += 1
                    time.sleep(0.1)
                    continue
                self.count += 1
                time.sleep(0.01)
        except BaseException as error:  # noqa: BLE001 - reported in the test's thread
            self.errors.append(error)


def post_need(client: httpx.Client, plan_id: str, text: str) -> None:
    page = client.get(f"/plans/{plan_id}")
    assert page.status_code == 200, page.text[:500]
    response = client.post(
        f"/plans/{plan_id}/needs/new/add",
        headers={"hx-request": "true", "x-csrftoken": csrf_token_of_page(page.text)},
        data={"command_id": str(uuid.uuid4()), "category": "health", "description": text},
    )
    assert response.status_code == 200, response.text[:800]


async def test_the_projector_writes_for_two_web_instances_and_a_web_instance_takes_over_when_it_dies(
    processes: Callable[[str], Instance], accounts: AccountStore, settings: StoreSettings,
    applied: Callable[[], dict[int, list[str]]],
) -> None:
    # The web instances start first: one of them takes the writer's lock...
    a, b = processes("A"), processes("B")
    assert wait_until(lambda: len(writers(a, b)) == 1, 10) is not None
    plan_id, version = open_plan(settings)
    # ...and gives it to the projector when it starts.
    p = processes("P")
    handed_over = wait_until(lambda: writers(a, b, p) == ["P"], 10)
    assert handed_over is not None, writers(a, b, p)
    report = ready_report(p)
    assert report["role"] == "projector" and report["status"] == "ready", report
    assert ready_report(a)["role"] == "web"
    print(f"\nthe projector had the writer's lock {handed_over:.2f} s after it served its health checks")

    aino_on_a = signed_in(a.base_url, AINO.person_id)
    bert_on_a = signed_in(a.base_url, BERT.person_id)
    try:
        wait_for_page_with(bert_on_a, plan_id, "Matti Meikäläinen")
        bert_on_b = await live_socket(b, plan_id, version, bert_on_a.cookies["polku_session"])
        try:
            written_before = set(applied())
            post_need(aino_on_a, plan_id, "Kirjattu A:n kautta, projektori kirjoittaa")
            await first_plan_update_with(bert_on_b, "Kirjattu A:n kautta, projektori kirjoittaa", ACROSS_WITHIN)
            since = {n: w for n, w in applied().items() if n not in written_before}
            assert since and {w for ws in since.values() for w in ws} == {"P"}, since

            # The projector is killed under a steady load: a web instance takes over.
            with Producer(settings, plan_id) as producer:
                assert wait_until(lambda: producer.count >= 10, 20) is not None
                p.process.send_signal(signal.SIGKILL)
                p.process.wait(5)
                took_over = wait_until(lambda: len(writers(a, b)) == 1, TAKEOVER_WITHIN)
                assert took_over is not None, f"no web instance took over within {TAKEOVER_WITHIN} s"
                count_at_kill = producer.count
                assert wait_until(lambda: producer.count >= count_at_kill + 10, 20) is not None
            print(f"projector killed: instance {writers(a, b)[0]} wrote after {took_over:.2f} s; "
                  f"{producer.count} commands recorded meanwhile ({producer.retried} retried as busy)")
            post_need(aino_on_a, plan_id, "Projektori kaatui")
            await first_plan_update_with(bert_on_b, "Projektori kaatui", ACROSS_WITHIN)

            # A projector started again takes the lock back from the web instance.
            p2 = processes("P")
            assert wait_until(lambda: writers(a, b, p2) == ["P"], 10) is not None, writers(a, b, p2)
            post_need(aino_on_a, plan_id, "Projektori palasi")
            await first_plan_update_with(bert_on_b, "Projektori palasi", ACROSS_WITHIN)

            # SIGTERM: it stops between two events, releases the lock, and a web instance follows on.
            stopped_at = time.monotonic()
            assert stop_instance(p2) in (0, -signal.SIGTERM), p2.output()
            assert time.monotonic() - stopped_at < 10
            assert "Application shutdown complete." in p2.output()
            assert "Traceback" not in p2.output(), p2.output()
            assert wait_until(lambda: len(writers(a, b)) == 1, TAKEOVER_WITHIN) is not None
            post_need(aino_on_a, plan_id, "Projektori pysäytettiin")
            await first_plan_update_with(bert_on_b, "Projektori pysäytettiin", ACROSS_WITHIN)
        finally:
            await bert_on_b.close()
    finally:
        aino_on_a.close()
        bert_on_a.close()

    # Every event of the log applied exactly once, by the projector while it ran.
    service = PlanService(settings)
    views = PlanViews(settings, follow=False)
    try:
        end = service.recorder.max_notification_id()
        assert wait_until(lambda: (views.store.max_tracking_id(PlanService.name) or 0) == end, 10) is not None
        log = applied()
        assert sorted(log) == notification_ids(service), "an event was never applied (or one not in the log was)"
        assert {n: w for n, w in log.items() if len(w) != 1} == {}, "applied more than once"
        seen = {w for ws in log.values() for w in ws}
        assert "P" in seen and seen & {"A", "B"} and seen <= {"A", "B", "P"}, seen
        plan_ids = all_plan_ids(service)
        assert read_side(views, plan_ids) == write_side(service, plan_ids)
    finally:
        views.close()
        service.close()
    for instance in (a, b):
        assert "Traceback" not in instance.output(), instance.output()


def test_polku_project_refuses_sqlite(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "web.cli", "project", "--port", str(free_port())],
        cwd=REPO_ROOT, env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), "POLKU_STORE": "sqlite",
                            "POLKU_DATA_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "POLKU_STORE=postgres" in result.stderr


def test_the_projectors_readiness_does_not_ask_for_notices_but_still_for_the_lag() -> None:
    from tests.web.test_two_instances import _Plans, _Recorder, _Store, _Views
    from web.controllers.health import readiness

    deaf = _Views(_Store(100), position=100, is_leader=True, is_listening=False)
    ready, report = readiness(_Plans(_Recorder(100)), deaf, allowed_lag=20, projector=True)
    assert ready and report["role"] == "projector" and report["writer"]
    ready, report = readiness(_Plans(_Recorder(100)), deaf, allowed_lag=20)
    assert not ready and report["role"] == "web"
    ready, report = readiness(_Plans(_Recorder(150)), deaf, allowed_lag=20, projector=True)
    assert not ready and report["reasons"] == ["read model 50 events behind the event log"]
