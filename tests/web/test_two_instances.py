"""Two real server processes over one PostgreSQL: an edit through one reaches a browser of the other.

Each instance is what ``uvicorn --factory web.server:app_factory`` runs in production, in a
process of its own, configured only by POLKU_* variables: the same database and schema, the
same POLKU_MASTER_KEY (plan keys) and POLKU_SECRET_KEY (sessions and CSRF). Accounts and
sessions live in ``<schema>_accounts``, so a person signed in through one instance is signed
in on the other too.

The edit goes through instance A's plan page (an htmx POST with the session and CSRF token);
the browser is a websocket client of instance B's live hub. Whichever instance holds the
read model's writer lock, the change crosses between them: either A's projection writes it
and B hears the NOTIFY, or B's projection writes it after A's save.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from markupsafe import escape
from psycopg import sql
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from domain.application import PlanService
from domain.storage import StoreSettings
from domain.values import Actor
from tests.projections.conftest import _pg_connect, postgres_store_env
from tests.web.conftest import TEST_SECRET_KEY
from tests.web.identity_fixtures import FAST_HASHER, add_account, csrf_token_of_page, sign_in
from web.accounts import AccountStore, accounts_schema
from web.live.messages import VERSION_MARKER_ID

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
ACROSS_WITHIN = 3.0  # seconds from the POST's answer to the other instance's browser
START_WITHIN = 60.0

AINO = Actor(person_id="aino", name="Aino Virtanen", organisation_id="pirha", organisation_name="Pirkanmaan hyvinvointialue")
BERT = Actor(person_id="bert", name="Bert Berg", organisation_id="kela", organisation_name="Kela")


@dataclass
class Instance:
    name: str
    base_url: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_instance(name: str, environ: dict[str, str], data_dir: Path) -> Instance:
    port = free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "web.server:app_factory",
         "--host", "127.0.0.1", "--port", str(port), "--log-level", "info", "--no-access-log"],
        cwd=REPO_ROOT,
        env={**environ, "POLKU_DATA_DIR": str(data_dir)},
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    return Instance(name=name, base_url=f"http://127.0.0.1:{port}", process=process, log=log)


def wait_until_serving(instance: Instance) -> None:
    deadline = time.monotonic() + START_WITHIN
    while time.monotonic() < deadline:
        assert instance.process.poll() is None, f"instance {instance.name} exited:\n{instance.output()}"
        try:
            if httpx.get(f"{instance.base_url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    pytest.fail(f"instance {instance.name} did not start within {START_WITHIN} s:\n{instance.output()}")


def stop_instance(instance: Instance, timeout: float = 20.0) -> int | None:
    """SIGTERM (graceful shutdown), then SIGKILL if it does not exit in time; returns the exit code."""
    if instance.process.poll() is None:
        instance.process.send_signal(signal.SIGTERM)
        try:
            return instance.process.wait(timeout)
        except subprocess.TimeoutExpired:
            instance.process.kill()
            instance.process.wait(5)
            return None
    return instance.process.returncode


@pytest.fixture
def environ(postgres_env: dict[str, str], pg_schema: str) -> Iterator[dict[str, str]]:
    """POLKU_* of both instances (and nothing else of the kind from this process)."""
    outside = {name: value for name, value in os.environ.items() if not name.startswith("POLKU_")}
    yield {
        **outside,
        **postgres_store_env(postgres_env, pg_schema),
        "POLKU_SECRET_KEY": TEST_SECRET_KEY,
        "PYTHONPATH": str(REPO_ROOT),
    }
    with _pg_connect(postgres_env) as conn:
        conn.execute("SET lock_timeout = '30s'")
        for suffix in ("_views", "_keys", "_accounts"):
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(pg_schema + suffix)))


@pytest.fixture
def settings(environ: dict[str, str]) -> StoreSettings:
    return StoreSettings.from_environ(environ)


@pytest.fixture
def accounts(settings: StoreSettings) -> Iterator[AccountStore]:
    """Aino (the plans' named expert) and Bert (a member of their network), in PostgreSQL."""
    store = AccountStore.open(settings, hasher=FAST_HASHER)
    assert accounts_schema(settings) == f"{settings.pg_schema}_accounts"
    for actor in (AINO, BERT):
        add_account(store, actor.person_id, name=actor.name, profession="asiantuntija",
                    organisation=(actor.organisation_id, actor.organisation_name, "other"))
    try:
        yield store
    finally:
        store.close()


@contextmanager
def pair_of_instances(environ: dict[str, str], folder: Path) -> Iterator[tuple[Instance, Instance]]:
    """Instances A and B, started at the same moment on the same database; stopped after."""
    started = [start_instance(name, environ, folder / name) for name in ("A", "B")]
    try:
        for instance in started:
            wait_until_serving(instance)
        yield started[0], started[1]
    finally:
        for instance in started:
            stop_instance(instance)


@pytest.fixture
def instances(environ: dict[str, str], accounts: AccountStore, tmp_path: Path) -> Iterator[tuple[Instance, Instance]]:
    with pair_of_instances(environ, tmp_path) as pair:
        yield pair


def wait_until_ready(instance: Instance, timeout: float = 10.0) -> dict[str, Any]:
    """The instance's readiness report, once it says ready (no session: probes have none)."""
    deadline = time.monotonic() + timeout
    report: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = httpx.get(f"{instance.base_url}/readyz", timeout=5)
        report = response.json()
        if response.status_code == 200:
            assert report["status"] == "ready"
            return report
        assert response.status_code == 503, response.text
        time.sleep(0.1)
    pytest.fail(f"instance {instance.name} not ready within {timeout} s: {report}")


def open_plan(settings: StoreSettings) -> tuple[str, int]:
    """A plan of Aino's with Bert in its network, recorded from this process; (plan id, version)."""
    service = PlanService(settings)
    try:
        plan_id = service.open_plan(
            by=AINO, command_id=str(uuid.uuid4()), client_name="Matti Meikäläinen", segment="unemployed",
            language="fi", referring_party="self_referral", expert_profession="sairaanhoitaja",
        ).plan_id
        service.give_consent(plan_id, by=AINO, command_id=str(uuid.uuid4()), organisation_id=BERT.organisation_id,
                             organisation_name=BERT.organisation_name, valid_from="2026-11-01")
        last = service.add_member(plan_id, by=AINO, command_id=str(uuid.uuid4()), person_id=BERT.person_id,
                                  name=BERT.name, profession="etuuskäsittelijä", organisation_id=BERT.organisation_id,
                                  organisation_name=BERT.organisation_name)
        return plan_id, last.version
    finally:
        service.close()


def signed_in(base_url: str, username: str) -> httpx.Client:
    client = httpx.Client(base_url=base_url, follow_redirects=False, timeout=15, headers={"accept-language": "fi"})
    sign_in(client, base_url, username)
    return client


async def live_socket(instance: Instance, plan_id: str, version: int, session: str) -> ClientConnection:
    return await connect(
        f"{instance.ws_url}/plans/{plan_id}/live?version={version}",
        origin=instance.base_url,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"polku_session={session}; lang=fi"},
        open_timeout=5,
        close_timeout=2,
    )


async def first_plan_update_with(socket: ClientConnection, text: str, timeout: float) -> str:
    async with asyncio.timeout(timeout):
        while True:
            message = await socket.recv()
            assert isinstance(message, str)
            if f'id="{VERSION_MARKER_ID}"' in message and str(escape(text)) in message:
                return message


def wait_for_page_with(client: httpx.Client, plan_id: str, text: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if str(escape(text)) in client.get(f"/plans/{plan_id}").text:
            return
        time.sleep(0.05)
    pytest.fail(f"{text!r} never appeared on {client.base_url}/plans/{plan_id}")


async def test_an_edit_through_one_instance_reaches_a_browser_of_the_other(
    instances: tuple[Instance, Instance], settings: StoreSettings
) -> None:
    a, b = instances
    reports = {instance.name: wait_until_ready(instance) for instance in (a, b)}
    assert sorted(report["writer"] for report in reports.values()) == [False, True], reports
    assert all(report["listening"] and report["lag"] == 0 for report in reports.values()), reports
    writer = next(name for name, report in reports.items() if report["writer"])
    print(f"\ninstance {writer} writes the read model")
    plan_id, version = open_plan(settings)

    aino_on_a = signed_in(a.base_url, AINO.person_id)
    bert_on_a = signed_in(a.base_url, BERT.person_id)
    try:
        # Bert signed in through A; his session works on B (sessions live in PostgreSQL).
        wait_for_page_with(bert_on_a, plan_id, "Matti Meikäläinen")
        bert_socket = await live_socket(b, plan_id, version, bert_on_a.cookies["polku_session"])
        aino_socket = await live_socket(a, plan_id, version, aino_on_a.cookies["polku_session"])
        try:
            page = aino_on_a.get(f"/plans/{plan_id}")
            assert page.status_code == 200, page.text[:500]
            description = "Selkäkipu haittaa työnhakua (kirjattu A:n kautta)"
            sent = time.perf_counter()
            response = aino_on_a.post(
                f"/plans/{plan_id}/needs/new/add",
                headers={"hx-request": "true", "x-csrftoken": csrf_token_of_page(page.text)},
                data={"command_id": str(uuid.uuid4()), "category": "health", "description": description},
            )
            answered = time.perf_counter()
            assert response.status_code == 200, response.text[:800]

            on_b = await first_plan_update_with(bert_socket, description, ACROSS_WITHIN)
            across = time.perf_counter() - sent
            on_a = await first_plan_update_with(aino_socket, description, ACROSS_WITHIN)
            new_version = int(re.search(r'data-version="(\d+)"', on_b).group(1))  # type: ignore[union-attr]
            assert new_version == version + 1
            assert on_a.count(description) == on_b.count(description) >= 1
            print(f"first POST to A: answered after {1000 * (answered - sent):.1f} ms, "
                  f"B's browser had the change at most {1000 * across:.1f} ms after sending")
            for round_ in range(1, 4):  # warm: templates compiled, plan keys cached
                text = f"Toistuva tarve {round_}"
                page = aino_on_a.get(f"/plans/{plan_id}")
                sent = time.perf_counter()
                response = aino_on_a.post(
                    f"/plans/{plan_id}/needs/new/add",
                    headers={"hx-request": "true", "x-csrftoken": csrf_token_of_page(page.text)},
                    data={"command_id": str(uuid.uuid4()), "category": "everyday_life", "description": text},
                )
                answered = time.perf_counter()
                assert response.status_code == 200, response.text[:800]
                await first_plan_update_with(bert_socket, text, ACROSS_WITHIN)
                print(f"POST {round_} to A: answered after {1000 * (answered - sent):.1f} ms, "
                      f"B's browser had it at most {1000 * (time.perf_counter() - sent):.1f} ms after sending")

            # and the other way: an edit recorded by a third writer (this process) reaches both
            service = PlanService(settings)
            try:
                note = service.record_need(plan_id, by=AINO, command_id=str(uuid.uuid4()), category="work_and_employment",
                                           description="Työkokeilu kiinnostaa")
            finally:
                service.close()
            for socket in (aino_socket, bert_socket):
                message = await first_plan_update_with(socket, "Työkokeilu kiinnostaa", ACROSS_WITHIN)
                assert f'data-version="{note.version}"' in message
        finally:
            await bert_socket.close()
            await aino_socket.close()
    finally:
        aino_on_a.close()
        bert_on_a.close()

    # graceful shutdown: both exit on SIGTERM, soon, after running the app's shutdown
    # (uvicorn re-raises the signal once it has finished: the exit status is -SIGTERM)
    for instance in (a, b):
        started = time.monotonic()
        assert stop_instance(instance) in (0, -signal.SIGTERM), instance.output()
        assert time.monotonic() - started < 10
        assert "Application shutdown complete." in instance.output()
        assert "Traceback" not in instance.output(), instance.output()


# ---------------------------------------------------------------------------- readiness


class _Recorder:
    def __init__(self, head: int | Exception) -> None:
        self.head = head

    def max_notification_id(self) -> int:
        if isinstance(self.head, Exception):
            raise self.head
        return self.head


class _Store:
    def __init__(self, position: int) -> None:
        self.position = position

    def max_tracking_id(self, application_name: str) -> int:
        return self.position


@dataclass
class _Views:
    store: _Store
    position: int = 0
    is_leader: bool = False
    is_listening: bool = True
    superseded: str | None = None


@dataclass
class _Plans:
    recorder: _Recorder


def test_readiness_says_why_an_instance_is_not_ready() -> None:
    from web.controllers.health import readiness

    ready, report = readiness(_Plans(_Recorder(120)), _Views(_Store(100), position=100), allowed_lag=20)
    assert ready and report["status"] == "ready"
    assert (report["event_log_head"], report["read_model_position"], report["lag"]) == (120, 100, 20)

    ready, report = readiness(_Plans(_Recorder(121)), _Views(_Store(100)), allowed_lag=20)
    assert not ready and report["reasons"] == ["read model 21 events behind the event log"]

    ready, report = readiness(_Plans(_Recorder(100)), _Views(_Store(100), is_listening=False), allowed_lag=20)
    assert not ready and report["reasons"] == ["not hearing the read model's notices"]

    recreated = _Views(_Store(100), superseded="the read model holds version 6, this release writes 5")
    ready, report = readiness(_Plans(_Recorder(100)), recreated, allowed_lag=20)
    assert not ready and report["reasons"] == [
        "read model superseded: the read model holds version 6, this release writes 5"
    ]

    ready, report = readiness(_Plans(_Recorder(OSError("connection refused"))), _Views(_Store(100)), allowed_lag=20)
    assert not ready and not report["database"] and report["reasons"] == ["database: OSError"]


def test_readyz_needs_no_session_and_healthz_stays_liveness(instances: tuple[Instance, Instance]) -> None:
    a, _b = instances
    report = wait_until_ready(a)
    assert set(report) >= {"database", "event_log_head", "read_model_position", "lag", "writer", "listening"}
    response = httpx.get(f"{a.base_url}/readyz", timeout=5)
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    assert "set-cookie" not in response.headers
    assert httpx.post(f"{a.base_url}/readyz", timeout=5).status_code == 405
    assert httpx.get(f"{a.base_url}/healthz", timeout=5).json() == {"status": "ok"}


# ---------------------------------------------------------------------------- behind nginx

NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
DEPLOY_CONF = REPO_ROOT / "deploy" / "nginx.conf"


def _require_nginx() -> str:
    if NGINX is None:
        message = "nginx is not installed (apt-get install -y nginx)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return NGINX


def _self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert, private = folder / "cert.pem", folder / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, private


def _substituted(text: str, replacements: dict[str, str]) -> str:
    for old, new in replacements.items():
        assert text.count(old) == 1, f"deploy/nginx.conf should have {old!r} exactly once"
        text = text.replace(old, new)
    return text


@contextmanager
def nginx_in_front(a: Instance, b: Instance, folder: Path) -> Iterator[str]:
    """deploy/nginx.conf, with test ports and a self-signed certificate, in the foreground; yields its https URL."""
    nginx = _require_nginx()
    folder.mkdir(parents=True, exist_ok=True)
    cert, key = _self_signed_certificate(folder)
    https_port, http_port = free_port(), free_port()
    site = _substituted(DEPLOY_CONF.read_text(), {
        "listen 80;": f"listen 127.0.0.1:{http_port};",
        "listen 443 ssl;": f"listen 127.0.0.1:{https_port} ssl;",
        "server 127.0.0.1:8001 ": f"server {a.base_url.removeprefix('http://')} ",
        "server 127.0.0.1:8002 ": f"server {b.base_url.removeprefix('http://')} ",
        "ssl_certificate     /etc/ssl/polku/fullchain.pem;": f"ssl_certificate {cert};",
        "ssl_certificate_key /etc/ssl/polku/privkey.pem;": f"ssl_certificate_key {key};",
    })
    (folder / "polku.conf").write_text(site)
    temp = {name: folder / name for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi")}
    main = "\n".join([
        "user root;" if os.geteuid() == 0 else "",
        "worker_processes 1;",
        "daemon off;",
        f"pid {folder / 'nginx.pid'};",
        f"error_log {folder / 'error.log'} warn;",
        "events { worker_connections 256; }",
        "http {",
        f"    access_log {folder / 'access.log'};",
        *(f"    {name}_temp_path {path};" for name, path in
          (("client_body", temp["body"]), ("proxy", temp["proxy"]), ("fastcgi", temp["fastcgi"]),
           ("uwsgi", temp["uwsgi"]), ("scgi", temp["scgi"]))),
        f"    include {folder / 'polku.conf'};",
        "}",
    ])
    (folder / "nginx.conf").write_text(main)
    command = [nginx, "-p", str(folder), "-c", str(folder / "nginx.conf")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    base_url = f"https://127.0.0.1:{https_port}"
    try:
        deadline = time.monotonic() + 10
        while True:
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            try:
                if httpx.get(f"{base_url}/healthz", verify=False, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (folder / "error.log").read_text()
            time.sleep(0.1)
        redirect = httpx.get(f"http://127.0.0.1:{http_port}/caseload", timeout=5)
        assert redirect.status_code == 301 and redirect.headers["location"].startswith("https://")
        yield base_url
    finally:
        process.send_signal(signal.SIGQUIT)  # graceful stop of nginx
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


async def wss_socket(base_url: str, plan_id: str, version: int, cookie: str) -> ClientConnection:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return await connect(
        f"wss://{base_url.removeprefix('https://')}/plans/{plan_id}/live?version={version}",
        origin=base_url,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"{cookie}; lang=fi"},
        ssl=context,
        open_timeout=5,
        close_timeout=2,
    )


@pytest.mark.nginx
async def test_behind_nginx_websockets_pass_and_either_instance_serves_anyone(
    environ: dict[str, str], accounts: AccountStore, settings: StoreSettings, tmp_path: Path
) -> None:
    _require_nginx()
    secure = {**environ, "POLKU_SECURE_COOKIES": "1"}  # as in production: HTTPS only
    with pair_of_instances(secure, tmp_path) as (a, b), nginx_in_front(a, b, tmp_path / "nginx") as site:
        for instance in (a, b):
            wait_until_ready(instance)
        plan_id, version = open_plan(settings)
        with httpx.Client(base_url=site, verify=False, timeout=15, follow_redirects=False) as aino, \
                httpx.Client(base_url=site, verify=False, timeout=15, follow_redirects=False) as bert:
            sign_in(aino, site, AINO.person_id)
            sign_in(bert, site, BERT.person_id)
            assert set(bert.cookies) >= {"__Host-polku_session"}
            bert_cookie = f"__Host-polku_session={bert.cookies['__Host-polku_session']}"

            # several live sockets through nginx (least_conn spreads them over both instances)
            sockets = [await wss_socket(site, plan_id, version, bert_cookie) for _ in range(4)]
            try:
                page = aino.get(f"/plans/{plan_id}")
                assert page.status_code == 200, page.text[:300]
                response = aino.post(
                    f"/plans/{plan_id}/needs/new/add",
                    headers={"hx-request": "true", "x-csrftoken": csrf_token_of_page(page.text)},
                    data={"command_id": str(uuid.uuid4()), "category": "health", "description": "Nginxin takaa"},
                )
                assert response.status_code == 200, response.text[:800]
                for socket_ in sockets:
                    await first_plan_update_with(socket_, "Nginxin takaa", ACROSS_WITHIN)

                # instance A stops (graceful): its sockets close with a code htmx reconnects on,
                # and nginx sends everything, sessions included, to B from then on
                assert stop_instance(a) in (0, -signal.SIGTERM)
                codes = []
                for socket_ in sockets:
                    try:
                        async with asyncio.timeout(0.5):
                            await socket_.recv()
                    except TimeoutError:
                        continue  # on B: still open
                    except ConnectionClosed as closed:
                        codes.append(closed.rcvd.code if closed.rcvd else 1006)
                assert set(codes) <= {1006, 1011, 1012, 1013}, codes
                assert 0 < len(codes) < len(sockets), "nginx should have spread the sockets over both instances"
                for _ in range(6):
                    assert bert.get(f"/plans/{plan_id}").status_code == 200
                again = await wss_socket(site, plan_id, version, bert_cookie)
                sockets.append(again)
                message = await first_plan_update_with(again, "Nginxin takaa", ACROSS_WITHIN)  # resync on connect
                assert "Nginxin takaa" in message
                print(f"\nbehind nginx: {len(codes)} of 4 sockets were on the stopped instance (codes {codes})")
            finally:
                for socket_ in sockets:
                    await socket_.close()
