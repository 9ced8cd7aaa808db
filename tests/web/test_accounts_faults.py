"""The account store when its database goes away or stays locked (issue 5: no fault is a 500).

- PostgreSQL: a statement whose connection drops under it (the backend terminated, as in a
  database restart; the pool's check on checkout cannot see that) is tried once more on a
  fresh connection and succeeds; one that cannot succeed (still locked after the lock
  timeout, or dropped again) raises :class:`~web.errors.StoreUnavailable`.
- SQLite: a database locked by another writer past the timeout raises the same.
- Over HTTP, the whole application as ``polku serve`` builds it (``web.wiring.build_app``:
  ``web.identity.install`` wraps the sign-in wall in :func:`web.errors.guard_store_unavailable`):
  a session that cannot be read is a 503 page in the user's language, a JSON error for the
  API, both with ``Retry-After``, and a refused websocket; never a 500.
- A command whose event store connection keeps dropping is the same 503 ("could not reach
  its database", :class:`~domain.errors.StoreUnavailable`) and records nothing; one that waits
  for other writers' table lock past the lock timeout stays the plan's 422 "busy".
- ``polku`` commands over a database that cannot be reached print one line and exit 75.

To make the drop deterministic a test holds a lock on the table (``sessions``, or the event
store's), waits until the store's statement waits for it, terminates that statement's
backend (``pg_terminate_backend``) and then lets go of the lock.
"""

from __future__ import annotations

import os
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
import websockets.sync.client
from litestar import Litestar
from psycopg import sql
from websockets.exceptions import InvalidStatus

from domain.application import LIBRARY_ATTEMPTS
from domain.storage import StoreSettings
from tests.web.conftest import TEST_SECRET_KEY, running
from tests.web.identity_fixtures import FAST_HASHER, add_account, csrf_token_of_page, sign_in
from tests.web.test_signin import whoami_socket
from web import cli
from web.accounts import ACCOUNTS_FILENAME, AccountError, AccountStore, accounts_schema
from web.errors import StoreUnavailable
from web.identity import Account
from web.settings import Settings
from web.wiring import build_app

SESSION_ID = "s" * 43


@pytest.fixture
def pg_settings(postgres_env: dict[str, str], pg_schema: str) -> StoreSettings:
    return StoreSettings.from_environ({**postgres_env, "POLKU_PG_SCHEMA": pg_schema, "POLKU_PG_LOCK_TIMEOUT": "2",
                                       "POLKU_MASTER_KEY": "A" * 43 + "="})


@pytest.fixture
def pg_store(pg_settings: StoreSettings) -> Iterator[AccountStore]:
    store = AccountStore.open(pg_settings, hasher=FAST_HASHER)
    try:
        yield store
    finally:
        store.close()


class TableLocked:
    """A lock on ``schema.table`` (by default the account store's ``sessions``), held by
    another connection: ACCESS EXCLUSIVE, or EXCLUSIVE, which lets readers be and holds
    up only writers (the event store's insert takes it too)."""

    def __init__(self, settings: StoreSettings, schema: str = "", table: str = "sessions",
                 mode: str = "ACCESS EXCLUSIVE") -> None:
        self.table = f"{schema or accounts_schema(settings)}.{table}"
        self.statement = sql.SQL("LOCK TABLE {}.{} IN {} MODE").format(
            sql.Identifier(schema or accounts_schema(settings)), sql.Identifier(table), sql.SQL(mode))
        self.admin = psycopg.connect(settings.pg_conninfo, autocommit=True)
        self.holder = psycopg.connect(settings.pg_conninfo, autocommit=False)
        self.terminated: list[int] = []

    def __enter__(self) -> TableLocked:
        self.holder.execute(self.statement)
        return self

    def _waiter(self) -> int | None:
        row = self.admin.execute(
            "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
            " WHERE NOT l.granted AND l.relation = %s::regclass",
            (self.table,),
        ).fetchone()
        return None if row is None else int(row[0])

    def terminate_the_waiter(self, limit: float = 10.0) -> int:
        """Terminate the backend that waits for the lock (once it does); its pid."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            pid = self._waiter()
            if pid is not None:
                self.admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
                self.terminated.append(pid)
                return pid
            time.sleep(0.02)
        raise AssertionError("no statement came to wait for the lock")

    def terminate_every_waiter(self, until: threading.Event, limit: float = 60.0) -> None:
        """Terminate each backend that comes to wait for the lock, until ``until`` is set
        (bounded by ``limit``): as a database that keeps dropping connections."""
        deadline = time.monotonic() + limit
        while not until.is_set() and time.monotonic() < deadline:
            pid = self._waiter()
            if pid is not None:
                self.admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))
                self.terminated.append(pid)
            time.sleep(0.01)

    def release(self) -> None:
        self.holder.rollback()

    def __exit__(self, *exc_info: object) -> None:
        self.holder.close()
        self.admin.close()


def in_thread(work: Callable[[], Any]) -> Callable[[], Any]:
    """Start ``work`` in a thread; the returned call waits for it and gives its result (or raises)."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(("ok", work()))
        except BaseException as error:  # noqa: BLE001 - handed to the test's thread
            outcome.append(("error", error))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()

    def result() -> Any:
        thread.join(30)
        assert outcome, "the store's call did not return"
        kind, value = outcome[0]
        if kind == "error":
            raise value
        return value

    return result


# --- the store ------------------------------------------------------------------------------


@pytest.mark.postgres
def test_a_read_whose_connection_dropped_is_tried_again_and_succeeds(
    pg_store: AccountStore, pg_settings: StoreSettings
) -> None:
    pg_store.session_set(SESSION_ID, b'{"account_id": "x"}', expires_in=600)
    with TableLocked(pg_settings) as lock:
        read = in_thread(lambda: pg_store.session_get(SESSION_ID, None))
        lock.terminate_the_waiter()
        lock.release()
        assert read() == b'{"account_id": "x"}'


@pytest.mark.postgres
def test_a_write_whose_connection_dropped_is_tried_again_and_succeeds(
    pg_store: AccountStore, pg_settings: StoreSettings
) -> None:
    with TableLocked(pg_settings) as lock:
        write = in_thread(lambda: pg_store.session_set(SESSION_ID, b"{}", expires_in=600))
        lock.terminate_the_waiter()
        lock.release()
        write()
    assert pg_store.session_exists(SESSION_ID)


@pytest.mark.postgres
def test_a_connection_that_drops_twice_is_store_unavailable(
    pg_store: AccountStore, pg_settings: StoreSettings
) -> None:
    with TableLocked(pg_settings) as lock:
        read = in_thread(lambda: pg_store.session_get(SESSION_ID, None))
        first = lock.terminate_the_waiter()
        second = lock.terminate_the_waiter()
        assert first != second  # tried again on another connection
        with pytest.raises(StoreUnavailable):
            read()
        lock.release()
    assert pg_store.session_get(SESSION_ID, None) is None  # and the store works again


def lose_the_answer_after_commit(store: AccountStore, monkeypatch: pytest.MonkeyPatch, marker: str) -> list[str]:
    """The first use of one of ``store``'s connections that runs a statement containing
    ``marker`` commits, then loses its connection before the answer is read (the server dies
    between COMMIT and its reply): the store sees psycopg's error on a closed connection and
    tries again. The returned list gets ``marker`` when that has happened."""
    pool = store._db._pool  # type: ignore[attr-defined]
    checkout = pool.connection
    lost: list[str] = []

    @contextmanager
    def connection(*args: Any, **kwargs: Any) -> Iterator[psycopg.Connection[Any]]:
        with checkout(*args, **kwargs) as conn:
            statements: list[str] = []
            execute = conn.execute

            def recording(query: Any, params: Any = None, **options: Any) -> Any:
                statements.append(str(query))
                return execute(query, params, **options)

            conn.execute = recording  # type: ignore[method-assign]
            try:
                yield conn
            finally:
                del conn.execute
            if not lost and any(marker in statement for statement in statements):
                lost.append(marker)
                conn.close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(pool, "connection", connection)
    return lost


@pytest.mark.postgres
def test_a_password_set_with_a_link_whose_answer_was_lost_is_done_and_ends_the_sessions(
    pg_store: AccountStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The try again finds the link used up, by the first try: it knows the account by the
    password's new hash, and the sessions ended with it (one transaction)."""
    account = add_account(pg_store, "aino.virtanen")
    pg_store.session_set(SESSION_ID, b"{}", expires_in=600, account_id=account.account_id)
    token = pg_store.issue_link("aino.virtanen")
    lost = lose_the_answer_after_commit(pg_store, monkeypatch, "link_token_hash = NULL")

    answer = pg_store.set_password_with_link(token, "a fresh long passphrase 42")

    assert lost
    assert answer is not None and answer.account_id == account.account_id
    assert pg_store.verify_password("aino.virtanen", "a fresh long passphrase 42").ok
    assert not pg_store.session_exists(SESSION_ID)
    assert pg_store.account_for_link(token) is None


@pytest.mark.postgres
def test_an_account_added_whose_answer_was_lost_is_added_once_not_taken(
    pg_store: AccountStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The try again finds the username held by the account the first try inserted (same new
    id): that is this account, not "the username is taken"."""
    pg_store.add_organisation("pirha-toike", "Pirkanmaan hyvinvointialue", "wellbeing_services_county")
    lost = lose_the_answer_after_commit(pg_store, monkeypatch, "INSERT INTO accounts")

    account = pg_store.add_account("aino.virtanen", name="Aino Virtanen", organisation_id="pirha-toike")

    assert lost
    assert pg_store.account_by_username("aino.virtanen") == account
    assert pg_store.count_accounts() == 1
    with pytest.raises(AccountError, match="taken"):
        pg_store.add_account("aino.virtanen", name="Aino Toinen", organisation_id="pirha-toike")


@pytest.mark.postgres
def test_a_lock_held_past_the_lock_timeout_is_store_unavailable(
    pg_store: AccountStore, pg_settings: StoreSettings
) -> None:
    with TableLocked(pg_settings), pytest.raises(StoreUnavailable):
        pg_store.session_get(SESSION_ID, None)


def test_a_locked_sqlite_database_is_store_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "accounts.sqlite3"
    store = AccountStore.sqlite(path, hasher=FAST_HASHER, lock_timeout_s=0.2)
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            store.session_set(SESSION_ID, b"{}", expires_in=600)
        with pytest.raises(StoreUnavailable):
            add_account(store, "person.locked")
        other.execute("ROLLBACK")
        store.session_set(SESSION_ID, b"{}", expires_in=600)
        assert store.session_exists(SESSION_ID)
    finally:
        other.close()
        store.close()


# --- over HTTP ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Site:
    base_url: str
    app: Litestar
    person: Account
    """``person.one``, who signs in with the test password."""


@pytest.fixture
def polku_server(pg_settings: StoreSettings, tmp_path: Path) -> Iterator[Site]:
    """The whole application as ``polku serve`` builds it (``web.wiring.build_app`` over the
    PostgreSQL store; ``web.identity``'s start-up hook opens the account store and installs
    the sign-in wall), with the test websocket ``/test/ws`` beside its routes."""
    store = msgspec.structs.replace(pg_settings, data_dir=str(tmp_path))
    accounts = AccountStore.open(store, hasher=FAST_HASHER)
    try:
        person = add_account(accounts, "person.one")
    finally:
        accounts.close()
    app = build_app(Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path), store)
    app.register(whoami_socket)
    with running(app) as base_url:
        yield Site(base_url, app, person)


@pytest.mark.postgres
def test_a_request_whose_session_read_lost_its_connection_is_answered(
    polku_server: Site, pg_settings: StoreSettings
) -> None:
    base_url = polku_server.base_url
    with httpx.Client(base_url=base_url, headers={"accept-language": "en"}, timeout=30) as client:
        sign_in(client, base_url, "person.one")
        with TableLocked(pg_settings) as lock:
            page = in_thread(lambda: client.get("/signin"))
            lock.terminate_the_waiter()
            lock.release()
            assert page().status_code == 303  # signed in: the session was read on the second try


@pytest.mark.postgres
def test_a_session_read_that_cannot_be_done_is_a_503_never_a_500(
    polku_server: Site, pg_settings: StoreSettings
) -> None:
    base_url = polku_server.base_url
    with httpx.Client(base_url=base_url, headers={"accept-language": "en"}, timeout=30) as client:
        sign_in(client, base_url, "person.one")
        with TableLocked(pg_settings):
            page = client.get("/signin")
            api = client.get("/api/anything")
            finnish = client.get("/signin", headers={"accept-language": "fi"})
        assert page.status_code == 503, page.text[:300]
        assert page.headers["retry-after"] == "2"
        assert "try again" in page.text.lower()
        assert api.status_code == 503
        assert api.json()["error"]["code"] == "store_unavailable"
        assert finnish.status_code == 503
        assert 'lang="fi"' in finnish.text
        assert client.get("/signin").status_code == 303  # and it works again


@pytest.mark.postgres
def test_a_websocket_whose_session_cannot_be_read_is_refused_503(
    polku_server: Site, pg_settings: StoreSettings
) -> None:
    base_url = polku_server.base_url
    with httpx.Client(base_url=base_url, timeout=30) as client:
        sign_in(client, base_url, "person.one")
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    url = base_url.replace("http", "ws") + "/test/ws"
    with TableLocked(pg_settings), pytest.raises(InvalidStatus) as refused:
        websockets.sync.client.connect(url, additional_headers={"Cookie": cookie}, open_timeout=10)
    assert refused.value.response.status_code == 503
    with websockets.sync.client.connect(url, additional_headers={"Cookie": cookie}, open_timeout=10) as socket:
        assert socket.recv(timeout=10) == "Aino Virtanen"


# --- a command whose event store cannot be reached ---------------------------------------------


def open_plan_of(site: Site) -> tuple[str, int]:
    """A plan whose named expert is ``person.one``, in the read model; (plan id, position)."""
    plans = site.app.state.plans
    outcome = plans.open_plan(
        by=site.person.actor, command_id=str(uuid.uuid4()), client_name="Matti Meikäläinen", segment="unemployed",
        language="fi", referring_party="self_referral", expert_profession="sairaanhoitaja",
    )
    assert site.app.state.views.wait_for(outcome.position, timeout=10)
    return outcome.plan_id, outcome.position


def add_a_need(client: httpx.Client, plan_id: str, token: str, command_id: str, *, htmx: bool = True,
               language: str = "en") -> httpx.Response:
    """Post the form that adds a need (as htmx sends it, or as a plain form)."""
    return client.post(
        f"/plans/{plan_id}/needs/new/add",
        headers={"x-csrftoken": token, "accept-language": language, **({"hx-request": "true"} if htmx else {})},
        data={"command_id": command_id, "category": "health", "description": "Selkä kipeytyy istuessa"},
    )


@contextmanager
def event_store_locked(site: Site, settings: StoreSettings, lock_timeout_s: float) -> Iterator[TableLocked]:
    """The event store's table locked EXCLUSIVE (its insert waits; readers do not), each
    insert's wait bounded by ``lock_timeout_s`` (the library tries ten times)."""
    recorder = site.app.state.plans.recorder
    datastore = recorder.datastore
    was = datastore.lock_timeout
    datastore.lock_timeout = lock_timeout_s
    try:
        with TableLocked(settings, datastore.schema, recorder.events_table_name, "EXCLUSIVE") as lock:
            yield lock
    finally:
        datastore.lock_timeout = was


@pytest.mark.postgres
def test_a_command_whose_event_store_connection_keeps_dropping_is_a_503_and_records_nothing(
    polku_server: Site, pg_settings: StoreSettings
) -> None:
    """Each try of the insert is cut off (its backend terminated while it waits for the table
    lock), as over a database that keeps restarting: not the plan's 422 "busy", and the same
    command goes through once the database is back."""
    plan_id, position = open_plan_of(polku_server)
    plans = polku_server.app.state.plans
    command_id = str(uuid.uuid4())
    with httpx.Client(base_url=polku_server.base_url, headers={"accept-language": "en"}, timeout=60) as client:
        sign_in(client, polku_server.base_url, "person.one")
        token = csrf_token_of_page(client.get(f"/plans/{plan_id}").text)
        stop = threading.Event()
        with event_store_locked(polku_server, pg_settings, lock_timeout_s=10) as lock:
            terminator = threading.Thread(target=lock.terminate_every_waiter, args=(stop,), daemon=True)
            terminator.start()
            try:
                fragment = add_a_need(client, plan_id, token, command_id)
                page = add_a_need(client, plan_id, token, command_id, htmx=False, language="fi")
            finally:
                stop.set()
                terminator.join(10)
            lock.release()
        # Each of the library's tries was cut off (20 here), unless it could not even connect
        # (the shared server may be full for a moment): the same answer, so not counted exactly.
        assert 0 < len(lock.terminated) <= 2 * LIBRARY_ATTEMPTS
        assert fragment.status_code == 503, fragment.text[:300]
        assert fragment.headers["retry-after"] == "2"
        assert fragment.headers["hx-retarget"] == "#messages"
        assert "could not reach its database" in fragment.text
        assert page.status_code == 503, page.text[:300]
        assert 'lang="fi"' in page.text and "tavoittanut tietokantaansa" in page.text
        assert (plans.recorder.max_notification_id() or 0) == position  # nothing recorded

        again = add_a_need(client, plan_id, token, command_id)  # the same command, now it can be saved
        assert again.status_code == 200, again.text[:300]
    assert len(plans.get_plan(plan_id).needs) == 1


@pytest.mark.postgres
def test_a_command_waiting_for_other_writers_past_the_lock_timeout_stays_busy_422(
    polku_server: Site, pg_settings: StoreSettings
) -> None:
    """Another writer holds the event store's table lock past every try's lock timeout: the
    plan is busy (a refusal of the form, 422), as before."""
    plan_id, position = open_plan_of(polku_server)
    plans = polku_server.app.state.plans
    with httpx.Client(base_url=polku_server.base_url, headers={"accept-language": "en"}, timeout=60) as client:
        sign_in(client, polku_server.base_url, "person.one")
        token = csrf_token_of_page(client.get(f"/plans/{plan_id}").text)
        with event_store_locked(polku_server, pg_settings, lock_timeout_s=0.1):
            busy = add_a_need(client, plan_id, token, str(uuid.uuid4()))
    assert busy.status_code == 422, busy.text[:300]
    assert "busy with other edits" in busy.text
    assert (plans.recorder.max_notification_id() or 0) == position


# --- the command line --------------------------------------------------------------------------


@pytest.fixture
def unreachable_postgres(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``polku``'s environment naming a PostgreSQL server that refuses connections (a closed port)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.delenv("POLKU_PG_SCHEMA", raising=False)
    for name, value in {"POLKU_STORE": "postgres", "POLKU_PG_HOST": "127.0.0.1", "POLKU_PG_PORT": str(port),
                        "POLKU_PG_DB": "polku", "POLKU_PG_USER": "polku", "POLKU_DATA_DIR": str(tmp_path)}.items():
        monkeypatch.setenv(name, value)


@pytest.mark.parametrize("command", [
    ["admin", "organisation", "add", "kela-uusimaa", "Kela, Uusimaa", "--type", "kela"],
    ["admin", "person", "link", "person.one"],
    ["plans"],
    ["demo"],
    ["accesslog", "verify"],
], ids=" ".join)
def test_a_command_line_over_an_unreachable_database_says_so_in_one_line(
    unreachable_postgres: None, command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(command) == os.EX_TEMPFAIL
    out, err = capsys.readouterr()
    assert err.startswith("polku: could not reach the database (") and err.count("\n") == 1, err
    assert "Traceback" not in out + err


def test_a_command_line_over_a_locked_account_store_says_so_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("POLKU_STORE", "POLKU_PG_SCHEMA", "POLKU_MASTER_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POLKU_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("POLKU_PG_LOCK_TIMEOUT", "1")
    AccountStore.open(StoreSettings.from_environ()).close()
    other = sqlite3.connect(tmp_path / ACCOUNTS_FILENAME, isolation_level=None)
    try:
        other.execute("BEGIN EXCLUSIVE")
        assert cli.main(["admin", "organisation", "add", "kela-uusimaa", "Kela", "--type", "kela"]) == os.EX_TEMPFAIL
    finally:
        other.close()
    assert capsys.readouterr().err.startswith("polku: could not reach the database (database is locked")
