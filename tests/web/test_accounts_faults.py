"""The account store when its database goes away or stays locked (issue 5: no fault is a 500).

- PostgreSQL: a statement whose connection drops under it (the backend terminated, as in a
  database restart; the pool's check on checkout cannot see that) is tried once more on a
  fresh connection and succeeds; one that cannot succeed (still locked after the lock
  timeout, or dropped again) raises :class:`~web.errors.StoreUnavailable`.
- SQLite: a database locked by another writer past the timeout raises the same.
- Over HTTP, behind the sign-in wall with :func:`web.errors.guard_store_unavailable` around
  it (as ``web.identity.install`` is to wrap it): a page gets a 503 page in the user's
  language and the API a JSON error, both with ``Retry-After``; never a 500.

To make the drop deterministic a test holds a lock on the ``sessions`` table, waits until
the store's statement waits for it, terminates that statement's backend
(``pg_terminate_backend``) and then lets go of the lock.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import websockets.sync.client
from psycopg import sql
from websockets.exceptions import InvalidStatus

from domain.storage import StoreSettings
from tests.web.conftest import TEST_SECRET_KEY, running
from tests.web.identity_fixtures import FAST_HASHER, add_account, sign_in, with_identity
from tests.web.test_signin import whoami_socket
from web import identity
from web.accounts import AccountStore, accounts_schema
from web.app import create_app
from web.errors import StoreUnavailable, guard_store_unavailable
from web.settings import Settings

SESSION_ID = "s" * 43


@pytest.fixture
def pg_settings(postgres_env: dict[str, str], pg_schema: str) -> StoreSettings:
    return StoreSettings.from_environ({**postgres_env, "POLKU_PG_SCHEMA": pg_schema, "POLKU_PG_LOCK_TIMEOUT": "2"})


@pytest.fixture
def pg_store(pg_settings: StoreSettings) -> Iterator[AccountStore]:
    store = AccountStore.open(pg_settings, hasher=FAST_HASHER)
    try:
        yield store
    finally:
        store.close()


class SessionsLocked:
    """An ACCESS EXCLUSIVE lock on the store's ``sessions`` table, held by another connection."""

    def __init__(self, settings: StoreSettings) -> None:
        self.settings = settings
        self.admin = psycopg.connect(settings.pg_conninfo, autocommit=True)
        self.holder = psycopg.connect(settings.pg_conninfo, autocommit=False)

    def __enter__(self) -> SessionsLocked:
        self.holder.execute(sql.SQL("LOCK TABLE {}.sessions IN ACCESS EXCLUSIVE MODE").format(
            sql.Identifier(accounts_schema(self.settings))))
        return self

    def terminate_the_waiter(self, limit: float = 10.0) -> int:
        """Terminate the backend that waits for the lock (once it does); its pid."""
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            row = self.admin.execute(
                "SELECT a.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE NOT l.granted AND l.relation = %s::regclass",
                (f"{accounts_schema(self.settings)}.sessions",),
            ).fetchone()
            if row is not None:
                self.admin.execute("SELECT pg_terminate_backend(%s, 5000)", (row[0],))
                return int(row[0])
            time.sleep(0.02)
        raise AssertionError("no statement came to wait for the lock")

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
    with SessionsLocked(pg_settings) as lock:
        read = in_thread(lambda: pg_store.session_get(SESSION_ID, None))
        lock.terminate_the_waiter()
        lock.release()
        assert read() == b'{"account_id": "x"}'


@pytest.mark.postgres
def test_a_write_whose_connection_dropped_is_tried_again_and_succeeds(
    pg_store: AccountStore, pg_settings: StoreSettings
) -> None:
    with SessionsLocked(pg_settings) as lock:
        write = in_thread(lambda: pg_store.session_set(SESSION_ID, b"{}", expires_in=600))
        lock.terminate_the_waiter()
        lock.release()
        write()
    assert pg_store.session_exists(SESSION_ID)


@pytest.mark.postgres
def test_a_connection_that_drops_twice_is_store_unavailable(
    pg_store: AccountStore, pg_settings: StoreSettings
) -> None:
    with SessionsLocked(pg_settings) as lock:
        read = in_thread(lambda: pg_store.session_get(SESSION_ID, None))
        first = lock.terminate_the_waiter()
        second = lock.terminate_the_waiter()
        assert first != second  # tried again on another connection
        with pytest.raises(StoreUnavailable):
            read()
        lock.release()
    assert pg_store.session_get(SESSION_ID, None) is None  # and the store works again


@pytest.mark.postgres
def test_a_lock_held_past_the_lock_timeout_is_store_unavailable(
    pg_store: AccountStore, pg_settings: StoreSettings
) -> None:
    with SessionsLocked(pg_settings), pytest.raises(StoreUnavailable):
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


@pytest.fixture
def guarded_server(pg_settings: StoreSettings, tmp_path: Path) -> Iterator[tuple[str, AccountStore]]:
    """The app behind the sign-in wall over the PostgreSQL account store, the wall guarded."""
    store = AccountStore.open(pg_settings, hasher=FAST_HASHER)
    add_account(store, "person.one")
    app = create_app(Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path), route_handlers=[*identity.route_handlers, whoami_socket])
    with_identity(app, store)
    app.asgi_handler = guard_store_unavailable(app.asgi_handler)
    try:
        with running(app) as base_url:
            yield base_url, store
    finally:
        store.close()


@pytest.mark.postgres
def test_a_request_whose_session_read_lost_its_connection_is_answered(
    guarded_server: tuple[str, AccountStore], pg_settings: StoreSettings
) -> None:
    base_url, _store = guarded_server
    with httpx.Client(base_url=base_url, headers={"accept-language": "en"}, timeout=30) as client:
        sign_in(client, base_url, "person.one")
        with SessionsLocked(pg_settings) as lock:
            page = in_thread(lambda: client.get("/signin"))
            lock.terminate_the_waiter()
            lock.release()
            assert page().status_code == 303  # signed in: the session was read on the second try


@pytest.mark.postgres
def test_a_session_read_that_cannot_be_done_is_a_503_never_a_500(
    guarded_server: tuple[str, AccountStore], pg_settings: StoreSettings
) -> None:
    base_url, _store = guarded_server
    with httpx.Client(base_url=base_url, headers={"accept-language": "en"}, timeout=30) as client:
        sign_in(client, base_url, "person.one")
        with SessionsLocked(pg_settings):
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
    guarded_server: tuple[str, AccountStore], pg_settings: StoreSettings
) -> None:
    base_url, _store = guarded_server
    with httpx.Client(base_url=base_url, timeout=30) as client:
        sign_in(client, base_url, "person.one")
        cookie = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    url = base_url.replace("http", "ws") + "/test/ws"
    with SessionsLocked(pg_settings), pytest.raises(InvalidStatus) as refused:
        websockets.sync.client.connect(url, additional_headers={"Cookie": cookie}, open_timeout=10)
    assert refused.value.response.status_code == 503
    with websockets.sync.client.connect(url, additional_headers={"Cookie": cookie}, open_timeout=10) as socket:
        assert socket.recv(timeout=10) == "Aino Virtanen"
