"""Accounts and signing in, for any test that needs a signed-in person.

Import what you need into a test module (or a conftest)::

    from tests.web.identity_fixtures import (
        TEST_PASSWORD, accounts, add_account, fake_clock, sign_in, with_identity,
    )

- :class:`FakeClock` and the ``fake_clock`` fixture: the time the account store sees
  (``fake_clock.advance(31 * 60)`` makes a session idle for too long).
- ``accounts`` fixture: an empty :class:`~web.accounts.AccountStore` in the test's data
  folder, on the fake clock, hashing with a fast argon2id (:data:`FAST_HASHER`).
- :func:`add_account`: a professional (or client/admin) with :data:`TEST_PASSWORD`, and
  their organisation; ``demo_accounts`` fixture: the 12 demo professionals of
  ``domain.demo.PEOPLE`` (usernames = person ids, e.g. ``aino.virtanen``).
- :func:`with_identity`: put any app (``create_app(...)`` or ``web.wiring.build_app(...)``)
  behind the sign-in wall with a given store; do it before the app starts. ``build_app``'s
  own start-up hook then keeps that store.
- :func:`sign_in`: sign an ``httpx.Client`` in through the real form (CSRF and all);
  the client keeps the session cookie.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from argon2 import PasswordHasher
from argon2 import Type as Argon2Type
from litestar import Litestar

from domain.demo import PEOPLE
from web import identity
from web.accounts import AccountStore
from web.identity import Account

__all__ = (
    "FAST_HASHER",
    "TEST_PASSWORD",
    "FakeClock",
    "accounts",
    "add_account",
    "csrf_token_of_page",
    "demo_accounts",
    "fake_clock",
    "sign_in",
    "with_identity",
)

#: The password every test account gets (test-only; never a real one).
TEST_PASSWORD = "test-only password 4 Polku"
#: argon2id, cheap enough for tests (the real one takes ~0.4 s a hash here).
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=256, parallelism=1, type=Argon2Type.ID)

_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')
_DEMO_ORGANISATION_TYPES = {
    "pirha-toike": "wellbeing_services_county",
    "kela-pirkanmaa": "kela",
    "tampere-tyollisyys": "employment_services",
    "vire-ry": "third_sector",
    "kuntoutus-oy": "private_provider",
}


class FakeClock:
    """A clock that only moves when told to: ``clock()`` is seconds since the epoch."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def accounts(tmp_path: Path, fake_clock: FakeClock) -> Iterator[AccountStore]:
    """An empty SQLite account store in this test's temporary folder, on ``fake_clock``."""
    store = AccountStore.sqlite(tmp_path / "accounts" / "accounts.sqlite3", clock=fake_clock, hasher=FAST_HASHER)
    yield store
    store.close()


@pytest.fixture
def demo_accounts(accounts: AccountStore) -> dict[str, Account]:
    """The 12 demo professionals, by username, each with :data:`TEST_PASSWORD`."""
    created = {}
    for actor, profession in PEOPLE.values():
        created[actor.person_id] = add_account(
            accounts,
            actor.person_id,
            name=actor.name,
            organisation=(actor.organisation_id, actor.organisation_name,
                          _DEMO_ORGANISATION_TYPES.get(actor.organisation_id, "other")),
            profession=profession,
        )
    return created


def add_account(
    accounts: AccountStore,
    username: str,
    *,
    name: str = "Aino Virtanen",
    organisation: tuple[str, str, str] | None = ("pirha-toike", "Pirkanmaan hyvinvointialue, työkyvyn tuki",
                                                 "wellbeing_services_county"),
    profession: str = "kuntoutusohjaaja",
    kind: str = "professional",
    plan_id: str | None = None,
    password: str | None = TEST_PASSWORD,
) -> Account:
    """An account (and its organisation, added if missing) with ``password`` set."""
    organisation_id = None
    if organisation is not None:
        organisation_id = organisation[0]
        if accounts.organisation(organisation_id) is None:
            accounts.add_organisation(*organisation)
    account = accounts.add_account(
        username, name=name, kind=kind, organisation_id=organisation_id if kind != "client" else None,
        profession=profession, plan_id=plan_id,
    )
    if password is not None:
        accounts.set_password(username, password)
    return account


def with_identity(app: Litestar, accounts: AccountStore) -> Litestar:
    """``app`` behind the sign-in wall with ``accounts`` (call before the app starts)."""
    identity.install(app, accounts)
    return app


def csrf_token_of_page(html: str) -> str:
    match = _META_CSRF.search(html)
    assert match, "the page has no csrf-token meta element"
    return match.group(1)


def sign_in(
    client: httpx.Client,
    base_url: str,
    username: str,
    password: str = TEST_PASSWORD,
    *,
    next: str = "",  # noqa: A002
    check: bool = True,
) -> httpx.Response:
    """Sign ``client`` in through ``/signin``; returns the answer to the form (a 303 when it worked).

    With ``check`` (the default) a refused sign-in fails the test.
    """
    base_url = base_url.rstrip("/")
    page = client.get(f"{base_url}/signin")
    if page.status_code == 303:  # signed in already
        return page
    token = csrf_token_of_page(page.text)
    response = client.post(
        f"{base_url}/signin",
        data={"_csrf_token": token, "username": username, "password": password, "next": next},
        follow_redirects=False,
    )
    if check:
        assert response.status_code == 303, f"sign-in as {username!r} refused ({response.status_code})"
    return response
