"""Signing in and out through a real server: the wall, sessions, lock-out, links, CSRF, redirects."""

from __future__ import annotations

import re
import socket
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest
import websockets.sync.client
from litestar import Request, WebSocket, get, websocket
from websockets.exceptions import InvalidStatus

from tests.web.conftest import TEST_SECRET_KEY, running
from tests.web.identity_fixtures import (
    FAST_HASHER,
    TEST_PASSWORD,
    FakeClock,
    add_account,
    csrf_token_of_page,
    sign_in,
    with_identity,
)
from web import identity
from web.accounts import LINK_LIFETIME, LOCK_DURATION, MAX_FAILED_ATTEMPTS, AccountStore
from web.app import create_app
from web.controllers.signin import _time_of_day
from web.identity import ABSOLUTE_TIMEOUT, IDLE_TIMEOUT, Account, account_of, require_kind, still_signed_in
from web.settings import Settings

COOKIE = "polku_session"
ENGLISH = {"accept-language": "en"}  # the tests read the English texts


@dataclass
class Server:
    base_url: str
    accounts: AccountStore
    clock: FakeClock
    data_dir: Path
    usernames: Iterator[int]

    def new_account(self, **fields: Any) -> tuple[str, Account]:
        """A fresh professional (own username, so tests do not share lock-outs)."""
        username = f"person.{next(self.usernames)}"
        return username, add_account(self.accounts, username, **fields)


@get("/test/whoami", sync_to_thread=False)
def whoami(request: Request[Account, Any, Any]) -> dict[str, str]:
    return {"name": request.user.name, "kind": request.user.kind, "organisation": request.user.organisation_id}


@get("/api/test/whoami", sync_to_thread=False)
def api_whoami(request: Request[Account, Any, Any]) -> dict[str, str]:
    return {"name": request.user.name}


@get("/test/admins-only", sync_to_thread=False, guards=[require_kind("admin")])
def admins_only() -> str:
    return "admin"


@websocket("/test/ws")
async def whoami_socket(socket: WebSocket[Any, Any, Any]) -> None:
    await socket.accept()
    account = account_of(socket)
    await socket.send_text(account.name if account else "nobody")
    while (await socket.receive_text()) == "still signed in?":
        await socket.send_text(str(await still_signed_in(socket)))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("signin-data")
    clock = FakeClock()
    accounts = AccountStore.sqlite(data_dir / "accounts.sqlite3", clock=clock, hasher=FAST_HASHER)
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=data_dir)
    app = create_app(settings, route_handlers=[*identity.route_handlers, whoami, api_whoami, whoami_socket, admins_only])
    with_identity(app, accounts)
    counter = iter(range(1, 1_000_000))
    with running(app) as base_url:
        yield Server(base_url, accounts, clock, data_dir, counter)
    accounts.close()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, headers=ENGLISH, follow_redirects=False, timeout=10) as http:
        yield http


def _post_sign_in(client: httpx.Client, username: str, password: str, next: str = "") -> httpx.Response:  # noqa: A002
    return sign_in(client, str(client.base_url), username, password, next=next, check=False)


def _alert(html: str) -> str:
    match = re.search(r'<div class="alert alert--error"[^>]*>(.*?)</div>', html, re.S)
    assert match, "no error message on the page"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


# --- the wall -------------------------------------------------------------------------------


def test_a_page_redirects_strangers_to_sign_in_with_next(client: httpx.Client) -> None:
    response = client.get("/test/whoami?tab=goals")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/test/whoami%3Ftab%3Dgoals"
    assert client.get("/plans/anything").headers["location"] == "/signin?next=/plans/anything"


def test_htmx_api_and_websocket_get_401(client: httpx.Client, server: Server) -> None:
    htmx = client.get("/test/whoami", headers={"HX-Request": "true", "HX-Current-URL": f"{server.base_url}/plans/1?x=2"})
    assert htmx.status_code == 401
    assert htmx.headers["hx-redirect"] == "/signin?next=/plans/1%3Fx%3D2"
    assert 'role="alert"' in htmx.text
    api = client.get("/api/test/whoami")
    assert api.status_code == 401
    assert api.json()["error"]["code"] == "not_signed_in"
    with pytest.raises(InvalidStatus) as refused:
        websockets.sync.client.connect(server.base_url.replace("http", "ws") + "/test/ws", open_timeout=5)
    assert refused.value.response.status_code == 401


@pytest.mark.parametrize(
    "path", ["/signin/../test/whoami", "/static/../test/whoami", "/healthz/../test/whoami", "/signin/%2e%2e/test/whoami"]
)
def test_dot_segments_do_not_make_a_path_public(server: Server, path: str) -> None:
    host, port = server.base_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as connection:  # httpx would normalise the path
        connection.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 303 "), answer[:100]
    assert b"\r\nlocation: /signin" in answer.lower()


def test_a_guard_admits_only_some_kinds_of_account(client: httpx.Client, server: Server) -> None:
    professional, _ = server.new_account()
    _post_sign_in(client, professional, TEST_PASSWORD)
    assert client.get("/test/admins-only").status_code == 403
    with httpx.Client(base_url=server.base_url, headers=ENGLISH) as other:
        admin, _ = server.new_account(kind="admin")
        _post_sign_in(other, admin, TEST_PASSWORD)
        assert other.get("/test/admins-only").text == "admin"


def test_public_paths_stay_open_and_set_no_session(client: httpx.Client) -> None:
    for path in ("/", "/signin", "/healthz", "/static/polku.css"):
        response = client.get(path)
        assert response.status_code == 200, path
        assert COOKIE not in response.cookies, path
    token = csrf_token_of_page(client.get("/").text)
    language = client.post("/language", data={"_csrf_token": token, "lang": "sv", "next": "/"})
    assert language.status_code == 303


def test_the_front_page_shows_the_way_in_and_a_signed_in_person_the_way_to_their_work(
    client: httpx.Client, server: Server
) -> None:
    signed_out = client.get("/").text
    assert signed_out.count('href="/signin"') == 2  # in the header and beside "Your clients"
    assert 'href="/signin"' not in client.get("/signin").text.split("<main")[0]  # no link to itself

    username, _account = server.new_account(name="Sanna Koski")
    _post_sign_in(client, username, TEST_PASSWORD)
    signed_in = client.get("/").text
    assert 'href="/caseload"' in signed_in and 'href="/signin"' not in signed_in


# --- signing in -----------------------------------------------------------------------------


def test_sign_in_leads_a_professional_to_the_caseload_with_a_safe_cookie(client: httpx.Client, server: Server) -> None:
    username, account = server.new_account(name="Sanna Koski")
    response = _post_sign_in(client, username, TEST_PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/caseload"
    set_cookie = next(h for h in response.headers.get_list("set-cookie") if h.startswith(f"{COOKIE}="))
    attributes = {part.strip().split("=")[0].lower() for part in set_cookie.split(";")[1:]}
    assert {"httponly", "samesite", "path"} <= attributes
    assert "samesite=lax" in set_cookie.lower()
    assert "max-age" not in attributes and "expires" not in attributes  # the server decides
    assert "secure" not in attributes  # plain http in tests; Secure with secure_cookies
    assert len(response.cookies[COOKIE]) >= 43
    assert client.get("/test/whoami").json() == {"name": "Sanna Koski", "kind": "professional",
                                                  "organisation": account.organisation_id}
    page = client.get("/").text
    assert "Sanna Koski" in page and 'action="/signout"' in page


def test_each_request_reads_its_account_afresh_once(
    client: httpx.Client, server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The account is read with the session (one worker-thread trip), once a request, never
    kept from an earlier request: a changed account shows at once, a deleted one signs out."""
    username, account = server.new_account(name="Olli Aho")
    _post_sign_in(client, username, TEST_PASSWORD)
    reads: list[str] = []
    real = server.accounts.account

    def counted(account_id: str) -> Account | None:
        reads.append(account_id)
        return real(account_id)

    monkeypatch.setattr(server.accounts, "account", counted)
    for _ in range(3):
        assert client.get("/test/whoami").json()["name"] == "Olli Aho"
    assert reads == [account.account_id] * 3
    monkeypatch.setattr(server.accounts, "account", lambda account_id: msgspec.structs.replace(
        real(account_id), name="Olli Aho-Virta"))
    assert client.get("/test/whoami").json()["name"] == "Olli Aho-Virta"
    monkeypatch.setattr(server.accounts, "account", lambda account_id: None)
    assert client.get("/test/whoami").status_code == 303


def test_the_landing_page_depends_on_the_kind_of_account(client: httpx.Client, server: Server) -> None:
    admin, _ = server.new_account(kind="admin")
    assert _post_sign_in(client, admin, TEST_PASSWORD).headers["location"] == "/admin"
    other = httpx.Client(base_url=server.base_url, headers=ENGLISH)
    client_user, _ = server.new_account(kind="client", organisation=None, plan_id="plan-1")
    assert _post_sign_in(other, client_user, TEST_PASSWORD).headers["location"] == "/my-plan"
    other.close()


def test_next_is_followed_when_it_is_a_page_of_this_site(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    form = client.get("/signin?next=/plans/42%3Ftab%3Dgoals").text
    assert 'name="next" value="/plans/42?tab=goals"' in form
    response = _post_sign_in(client, username, TEST_PASSWORD, next="/plans/42?tab=goals")
    assert response.headers["location"] == "/plans/42?tab=goals"


@pytest.mark.parametrize(
    "target",
    ["https://evil.example/", "//evil.example/x", "/\\evil.example", "/\t/evil.example", "http:/x", "javascript:alert(1)"],
)
def test_next_cannot_send_anyone_to_another_site(client: httpx.Client, server: Server, target: str) -> None:
    username, _ = server.new_account()
    assert 'name="next" value=""' in client.get("/signin", params={"next": target}).text
    response = _post_sign_in(client, username, TEST_PASSWORD, next=target)
    assert response.headers["location"] == "/caseload"
    # Signed in already: the sign-in page sends one on, still never off the site.
    again = client.get("/signin", params={"next": target})
    assert again.status_code == 303 and again.headers["location"] == "/caseload"


def test_wrong_password_and_unknown_user_get_the_same_answer(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    wrong = _post_sign_in(client, username, "not the password")
    unknown = _post_sign_in(client, "nobody.at.all", "not the password")
    assert wrong.status_code == unknown.status_code == 400
    assert _alert(wrong.text) == _alert(unknown.text) == "The username or password is incorrect."
    assert COOKIE not in wrong.cookies and COOKIE not in unknown.cookies
    assert 'autocomplete="username"' in wrong.text and 'autocomplete="current-password"' in wrong.text
    assert f'value="{username}"' in wrong.text  # the username is kept, the password is not
    assert "not the password" not in wrong.text


def test_errors_are_in_the_users_language(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    client.cookies.set("lang", "sv", domain="127.0.0.1")
    assert _alert(_post_sign_in(client, username, "wrong").text) == "Användarnamnet eller lösenordet är felaktigt."
    client.cookies.set("lang", "fi", domain="127.0.0.1")
    assert _alert(_post_sign_in(client, username, "wrong").text) == "Käyttäjätunnus tai salasana on väärin."
    assert _alert(_post_sign_in(client, "", "").text) == "Anna käyttäjätunnus ja salasana."


def test_five_failures_lock_the_username_until_the_period_is_over(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    for _ in range(MAX_FAILED_ATTEMPTS - 1):
        assert _post_sign_in(client, username, "wrong").status_code == 400
    locked = _post_sign_in(client, username, "wrong")
    assert locked.status_code == 429
    ends = _time_of_day(server.clock() + LOCK_DURATION, "en")
    assert "too many failed sign-in attempts" in locked.text and f"Try again after {ends}." in locked.text
    assert int(locked.headers["retry-after"]) == LOCK_DURATION
    right_but_locked = _post_sign_in(client, username, TEST_PASSWORD)
    assert right_but_locked.status_code == 429
    assert COOKIE not in right_but_locked.cookies

    server.clock.advance(LOCK_DURATION - 60)
    assert f"Try again after {ends}." in _post_sign_in(client, username, TEST_PASSWORD).text
    server.clock.advance(60)
    assert _post_sign_in(client, username, TEST_PASSWORD).status_code == 303


def test_an_unknown_username_is_locked_the_same_way(client: httpx.Client, server: Server) -> None:
    known, _ = server.new_account()
    answers = {}
    for username in (known, "not.a.person"):
        for _ in range(MAX_FAILED_ATTEMPTS):
            response = _post_sign_in(client, username, "wrong")
        answers[username] = (response.status_code, _alert(response.text), response.headers.get("retry-after"))
    assert answers[known] == answers["not.a.person"]
    assert answers[known][0] == 429


def test_the_sign_in_form_needs_the_csrf_token(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    client.get("/signin")  # has the CSRF cookie
    without = client.post("/signin", data={"username": username, "password": TEST_PASSWORD})
    forged = client.post("/signin", data={"username": username, "password": TEST_PASSWORD, "_csrf_token": "forged"})
    for response in (without, forged):
        assert response.status_code == 403
        assert COOKIE not in response.cookies
    assert client.get("/test/whoami").status_code == 303


# --- sessions -------------------------------------------------------------------------------


def test_the_session_id_changes_at_sign_in(client: httpx.Client, server: Server) -> None:
    first, _ = server.new_account(name="First Person")
    second, _ = server.new_account(name="Second Person")
    # A planted cookie is never adopted (session fixation).
    client.cookies.set(COOKIE, "planted-by-someone-else-" + "x" * 30, domain="127.0.0.1")
    _post_sign_in(client, first, TEST_PASSWORD)
    first_id = client.cookies[COOKIE]
    assert not first_id.startswith("planted")
    token = csrf_token_of_page(client.get("/").text)  # signing in again over a live session
    response = client.post("/signin", data={"_csrf_token": token, "username": second, "password": TEST_PASSWORD})
    assert response.status_code == 303
    second_id = response.cookies[COOKIE]
    assert second_id != first_id
    assert client.get("/test/whoami").json()["name"] == "Second Person"
    with httpx.Client(base_url=server.base_url, headers=ENGLISH, cookies={COOKIE: first_id}) as old:
        assert old.get("/test/whoami").status_code == 303


def test_sign_out_ends_the_session_for_good(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    _post_sign_in(client, username, TEST_PASSWORD)
    session_id = client.cookies[COOKIE]
    token = csrf_token_of_page(client.get("/").text)
    response = client.post("/signout", data={"_csrf_token": token})
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?signed_out=1"
    assert COOKIE not in client.cookies  # cleared
    assert "You have signed out." in client.get("/signin?signed_out=1").text
    with httpx.Client(base_url=server.base_url, headers=ENGLISH, cookies={COOKIE: session_id}) as replay:
        assert replay.get("/test/whoami").status_code == 303
    assert server.accounts.session_get(session_id, None) is None


def test_sign_out_needs_the_csrf_token(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    _post_sign_in(client, username, TEST_PASSWORD)
    assert client.post("/signout").status_code == 403
    assert client.get("/test/whoami").status_code == 200


def test_an_idle_session_ends_and_sends_back_to_sign_in(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    _post_sign_in(client, username, TEST_PASSWORD)
    server.clock.advance(IDLE_TIMEOUT - 60)
    assert client.get("/test/whoami").status_code == 200  # activity keeps it alive...
    server.clock.advance(IDLE_TIMEOUT - 60)
    assert client.get("/test/whoami").status_code == 200
    server.clock.advance(IDLE_TIMEOUT + 1)  # ...idleness ends it
    response = client.get("/test/whoami")
    assert response.status_code == 303
    assert response.headers["location"] == "/signin?next=/test/whoami"


def test_a_session_ends_twelve_hours_after_sign_in_even_when_active(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account()
    _post_sign_in(client, username, TEST_PASSWORD)
    elapsed = 0
    while elapsed + 20 * 60 < ABSOLUTE_TIMEOUT:
        server.clock.advance(20 * 60)
        elapsed += 20 * 60
        assert client.get("/test/whoami").status_code == 200
    server.clock.advance(ABSOLUTE_TIMEOUT - elapsed)
    assert client.get("/test/whoami").status_code == 303


def test_a_websocket_opens_with_the_session_cookie(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account(name="Socket Person")
    _post_sign_in(client, username, TEST_PASSWORD)
    url = server.base_url.replace("http", "ws") + "/test/ws"
    with websockets.sync.client.connect(
        url, additional_headers={"Cookie": f"{COOKIE}={client.cookies[COOKIE]}"}, open_timeout=5
    ) as ws:
        assert ws.recv(timeout=5) == "Socket Person"
        ws.send("still signed in?")
        assert ws.recv(timeout=5) == "True"
        token = csrf_token_of_page(client.get("/").text)
        assert client.post("/signout", data={"_csrf_token": token}).status_code == 303
        ws.send("still signed in?")
        assert ws.recv(timeout=5) == "False"


# --- first sign-in links --------------------------------------------------------------------


def test_a_first_sign_in_link_sets_the_password_once(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account(name="Leena Mäkinen", password=None)
    token = server.accounts.issue_link(username)
    page = client.get(f"/signin/link/{token}")
    assert page.status_code == 200
    assert "Leena Mäkinen" in page.text and f'value="{username}"' in page.text
    assert page.text.count('autocomplete="new-password"') == 2
    csrf = csrf_token_of_page(page.text)

    def choose(password: str, again: str, csrf_token: str = csrf) -> httpx.Response:
        return client.post(f"/signin/link/{token}",
                           data={"_csrf_token": csrf_token, "password": password, "password_again": again})

    assert choose("a long new password", "something else").status_code == 400
    short = choose("short", "short")
    assert short.status_code == 400 and "at least 12 characters" in short.text
    assert choose("a long new password", "a long new password", csrf_token="forged").status_code == 403
    done = choose("a long new password", "a long new password")
    assert done.status_code == 303 and done.headers["location"] == "/caseload"
    assert client.get("/test/whoami").json()["name"] == "Leena Mäkinen"

    with httpx.Client(base_url=server.base_url, headers=ENGLISH) as other:
        used = other.get(f"/signin/link/{token}")
        assert used.status_code == 404 and "not valid" in used.text
        csrf_other = csrf_token_of_page(used.text)
        again = other.post(f"/signin/link/{token}",
                           data={"_csrf_token": csrf_other, "password": "taken over now!", "password_again": "taken over now!"})
        assert again.status_code == 404
        assert _post_sign_in(other, username, "a long new password").status_code == 303


def test_an_expired_link_is_refused(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account(password=None)
    token = server.accounts.issue_link(username)
    server.clock.advance(LINK_LIFETIME + 1)
    page = client.get(f"/signin/link/{token}")
    assert page.status_code == 404
    assert "not valid" in page.text
    csrf = csrf_token_of_page(page.text)
    response = client.post(f"/signin/link/{token}",
                           data={"_csrf_token": csrf, "password": "a long new password", "password_again": "a long new password"})
    assert response.status_code == 404
    assert COOKIE not in response.cookies


# --- what is stored -------------------------------------------------------------------------


def test_the_database_holds_argon2id_hashes_and_no_plain_passwords(client: httpx.Client, server: Server) -> None:
    username, _ = server.new_account(password=None)
    token = server.accounts.issue_link(username)
    page = client.get(f"/signin/link/{token}")
    secret = "the plain secret of the test"
    client.post(f"/signin/link/{token}", data={"_csrf_token": csrf_token_of_page(page.text),
                                               "password": secret, "password_again": secret})
    session_id = client.cookies[COOKIE]
    with httpx.Client(base_url=server.base_url, headers=ENGLISH) as other:
        assert _post_sign_in(other, username, "another plain secret").status_code == 400
    assert server.accounts.password_hash_of(username).startswith("$argon2id$")
    with sqlite3.connect(server.data_dir / "accounts.sqlite3") as connection:
        hashes = [row[0] for row in connection.execute("SELECT password_hash FROM accounts WHERE password_hash IS NOT NULL")]
    assert hashes and all(value.startswith("$argon2id$") for value in hashes)
    content = b"".join(path.read_bytes() for path in server.data_dir.glob("accounts.sqlite3*"))
    for plain in (secret, "another plain secret", TEST_PASSWORD, token, session_id):
        assert plain.encode() not in content, plain



# --- the whole application --------------------------------------------------------------------


def test_the_whole_application_is_behind_the_wall(tmp_path: Path) -> None:
    """``web.wiring.build_app`` opens the account store beside the event store and installs the wall."""
    from domain.storage import StoreSettings
    from web.wiring import build_app

    store_settings = StoreSettings(data_dir=str(tmp_path))
    setup = AccountStore.open(store_settings)  # what `polku admin` does
    add_account(setup, "aino.virtanen")
    setup.close()
    app = build_app(Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path), store_settings)
    with running(app) as base_url, httpx.Client(base_url=base_url, headers=ENGLISH) as http:
        assert http.get("/caseload").headers["location"] == "/signin?next=/caseload"
        assert http.get("/healthz").status_code == 200
        assert sign_in(http, base_url, "aino.virtanen", next="/caseload").headers["location"] == "/caseload"
        page = http.get("/caseload")
        assert page.status_code != 303
        assert app.state.accounts.account_by_username("aino.virtanen").name == "Aino Virtanen"
