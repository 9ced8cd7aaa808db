"""The account store: organisations, argon2id passwords, lock-out, first sign-in links, sessions.

The core behaviour runs on SQLite and on PostgreSQL (same SQL); the rest on SQLite.
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from domain.demo import PEOPLE
from domain.storage import StoreSettings
from tests.web.identity_fixtures import FAST_HASHER, TEST_PASSWORD, FakeClock, add_account
from tests.web.identity_fixtures import accounts as accounts  # noqa: F401 - fixture
from tests.web.identity_fixtures import fake_clock as fake_clock  # noqa: F401 - fixture
from web.accounts import (
    LINK_LIFETIME,
    LOCK_DURATION,
    MAX_FAILED_ATTEMPTS,
    AccountError,
    AccountStore,
    PasswordRejected,
    accounts_schema,
    demo_password,
    ensure_demo_accounts,
)
from web.cli import main


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path, fake_clock: FakeClock) -> Iterator[AccountStore]:  # noqa: F811
    """An account store on SQLite, then on PostgreSQL (its own schema, dropped after)."""
    if request.param == "sqlite":
        opened = AccountStore.open(StoreSettings(data_dir=str(tmp_path)), clock=fake_clock, hasher=FAST_HASHER)
        yield opened
        opened.close()
        return
    env = request.getfixturevalue("postgres_env")
    schema = request.getfixturevalue("pg_schema")
    settings = StoreSettings.from_environ({**env, "POLKU_PG_SCHEMA": schema})
    opened = AccountStore.open(settings, clock=fake_clock, hasher=FAST_HASHER)
    try:
        yield opened
    finally:
        opened.close()
        with psycopg.connect(settings.pg_conninfo, autocommit=True) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(accounts_schema(settings)))
            )


# --- passwords and lock-out (SQLite and PostgreSQL) -----------------------------------------


def test_right_password_signs_in_and_wrong_or_unknown_give_the_same_refusal(store: AccountStore) -> None:
    created = add_account(store, "aino.virtanen")
    assert store.verify_password("Aino.Virtanen ", TEST_PASSWORD).account == created
    wrong = store.verify_password("aino.virtanen", "not the password")
    unknown = store.verify_password("nobody.here", TEST_PASSWORD)
    assert wrong.account is None and unknown.account is None
    assert wrong == unknown  # nothing tells the two apart


def test_five_failures_lock_the_username_for_fifteen_minutes(store: AccountStore, fake_clock: FakeClock) -> None:  # noqa: F811
    add_account(store, "aino.virtanen")
    for attempt in range(1, MAX_FAILED_ATTEMPTS + 1):
        result = store.verify_password("aino.virtanen", f"wrong {attempt}")
        assert result.account is None
        assert (result.locked_until is not None) == (attempt == MAX_FAILED_ATTEMPTS)
    locked = store.verify_password("aino.virtanen", TEST_PASSWORD)
    assert locked.account is None, "the right password must not open a locked account"
    assert locked.locked_until == pytest.approx(fake_clock() + LOCK_DURATION)

    fake_clock.advance(LOCK_DURATION - 1)
    assert store.verify_password("aino.virtanen", TEST_PASSWORD).locked_until is not None
    fake_clock.advance(1)
    assert store.verify_password("aino.virtanen", TEST_PASSWORD).ok
    # The counter starts again after the lock and after a success.
    for _ in range(MAX_FAILED_ATTEMPTS - 1):
        assert store.verify_password("aino.virtanen", "wrong").locked_until is None
    assert store.verify_password("aino.virtanen", TEST_PASSWORD).ok


def test_unknown_usernames_are_locked_exactly_like_known_ones(store: AccountStore, fake_clock: FakeClock) -> None:  # noqa: F811
    add_account(store, "aino.virtanen")
    known = [store.verify_password("aino.virtanen", "wrong") for _ in range(MAX_FAILED_ATTEMPTS + 1)]
    unknown = [store.verify_password("no.such.person", "wrong") for _ in range(MAX_FAILED_ATTEMPTS + 1)]
    assert known == unknown
    assert unknown[-1].locked_until is not None
    fake_clock.advance(LOCK_DURATION)
    assert store.verify_password("no.such.person", "wrong").locked_until is None


@pytest.mark.parametrize("username", ["aino virtanen", "a", "aïno", "a" * 65, "aino\x00virtanen"])
def test_a_name_no_account_can_have_is_refused_and_locked_like_an_unknown_one(
    store: AccountStore, username: str
) -> None:
    """A typo with a space or a letter outside the pattern (and a NUL, which PostgreSQL's text
    cannot hold) is an unknown name on both stores, not an error."""
    results = [store.verify_password(username, "wrong") for _ in range(MAX_FAILED_ATTEMPTS)]
    assert results[0] == store.verify_password("no.such.person", "wrong")
    assert results[-1].account is None and results[-1].locked_until is not None


def test_an_id_no_organisation_or_person_can_have_finds_nothing(store: AccountStore) -> None:
    """Looked up before the plan's rules see them (a new member, a consent, a new person):
    a NUL, which PostgreSQL's text cannot hold, finds no one on either store."""
    created = add_account(store, "aino.virtanen")
    assert store.organisation(created.organisation_id) is not None
    assert store.organisation(f"{created.organisation_id}\x00") is None
    assert store.organisation("Not An Id") is None
    assert store.professional(created.person_id, created.organisation_id) == created
    assert store.professional(f"{created.person_id}\x00", created.organisation_id) is None
    assert store.professional(created.person_id, f"{created.organisation_id}\x00") is None


def test_creating_an_organisation_whose_id_exists_changes_nothing(store: AccountStore) -> None:
    """The admin page's "add": of two people adding the same id at once, the second is told,
    instead of renaming the first one's organisation (``add_organisation``, the CLI's, renames)."""
    created = store.create_organisation("kela-lappi", "Kela, Lapin vakuutuspiiri", "kela")
    assert created is not None and created.name == "Kela, Lapin vakuutuspiiri"
    assert store.create_organisation("kela-lappi", "Something else", "employment_services") is None
    assert store.organisation("kela-lappi") == created


def test_the_service_catalogue_holds_each_service_once_in_alphabetical_order(store: AccountStore) -> None:
    assert store.services() == []
    assert store.add_service("  Työkokeilu ") is True
    assert store.add_service("fysioterapia") is True
    assert store.add_service("Ääniterapia") is True

    assert store.add_service("TYÖKOKEILU") is False, "the same service, in other letters"
    assert store.services() == ["fysioterapia", "Työkokeilu", "Ääniterapia"]

    assert store.remove_service("fysioterapia") is True
    assert store.remove_service("fysioterapia") is False
    assert store.remove_service("Työ\x00kokeilu") is False
    assert store.services() == ["Työkokeilu", "Ääniterapia"]


@pytest.mark.parametrize("name", ["", "   ", "x" * 201, "Työ\x00kokeilu"])
def test_a_service_without_a_name_or_with_one_no_name_may_have_is_refused(store: AccountStore, name: str) -> None:
    with pytest.raises(AccountError):
        store.add_service(name)
    assert store.services() == []


def test_failures_are_forgotten_after_a_day(store: AccountStore, fake_clock: FakeClock) -> None:  # noqa: F811
    add_account(store, "aino.virtanen")
    for _ in range(MAX_FAILED_ATTEMPTS - 1):
        store.verify_password("aino.virtanen", "wrong")
    fake_clock.advance(24 * 60 * 60 + 1)
    assert store.verify_password("aino.virtanen", "wrong").locked_until is None


def test_the_stored_hash_is_argon2id(store: AccountStore) -> None:
    add_account(store, "aino.virtanen")
    password_hash = store.password_hash_of("aino.virtanen")
    assert password_hash is not None and password_hash.startswith("$argon2id$")
    assert TEST_PASSWORD not in password_hash


def test_the_default_hasher_is_argon2id_with_the_recommended_cost(tmp_path: Path) -> None:
    store = AccountStore.sqlite(tmp_path / "a.sqlite3")
    try:
        assert store.hasher.type.name == "ID"
        assert store.hasher.memory_cost >= 19 * 1024 and store.hasher.time_cost >= 2
    finally:
        store.close()


# --- first sign-in links (SQLite and PostgreSQL) --------------------------------------------


def test_a_link_sets_the_password_once(store: AccountStore) -> None:
    created = add_account(store, "aino.virtanen", password=None)
    assert not store.verify_password("aino.virtanen", "").ok  # no password yet
    token = store.issue_link("aino.virtanen")
    assert store.account_for_link(token) == created
    assert store.account_for_link(token) == created  # looking does not use it up
    assert store.set_password_with_link(token, "a brand new password") == created
    assert store.verify_password("aino.virtanen", "a brand new password").ok
    assert store.account_for_link(token) is None
    assert store.set_password_with_link(token, "another new password") is None
    assert store.verify_password("aino.virtanen", "a brand new password").ok


def test_an_expired_link_is_refused(store: AccountStore, fake_clock: FakeClock) -> None:  # noqa: F811
    add_account(store, "aino.virtanen", password=None)
    token = store.issue_link("aino.virtanen")
    fake_clock.advance(LINK_LIFETIME - 1)
    assert store.account_for_link(token) is not None
    fake_clock.advance(1)
    assert store.account_for_link(token) is None
    assert store.set_password_with_link(token, "a brand new password") is None
    assert not store.verify_password("aino.virtanen", "a brand new password").ok


def test_a_new_link_replaces_the_old_one(store: AccountStore) -> None:
    add_account(store, "aino.virtanen", password=None)
    old = store.issue_link("aino.virtanen")
    new = store.issue_link("aino.virtanen")
    assert store.account_for_link(old) is None
    assert store.account_for_link(new) is not None


def test_a_short_password_is_refused_and_the_link_stays_valid(store: AccountStore) -> None:
    add_account(store, "aino.virtanen", password=None)
    token = store.issue_link("aino.virtanen")
    with pytest.raises(PasswordRejected):
        store.set_password_with_link(token, "short")
    with pytest.raises(PasswordRejected):
        store.set_password_with_link(token, "x" * 300)
    assert store.account_for_link(token) is not None


def test_a_new_password_ends_the_accounts_sessions(store: AccountStore) -> None:
    created = add_account(store, "aino.virtanen")
    store.session_set("s" * 43, b'{"account_id": "%s"}' % created.account_id.encode(), expires_in=60,
                      account_id=created.account_id)
    assert store.session_get("s" * 43, None) is not None
    token = store.issue_link("aino.virtanen")
    store.set_password_with_link(token, "a brand new password")
    assert store.session_get("s" * 43, None) is None


# --- sessions (SQLite and PostgreSQL) -------------------------------------------------------


def test_sessions_expire_when_idle_unless_renewed_and_at_the_absolute_limit(
    store: AccountStore, fake_clock: FakeClock  # noqa: F811
) -> None:
    store.session_set("a" * 43, b"{}", expires_in=1800, absolute_lifetime=12 * 3600)
    fake_clock.advance(1799)
    assert store.session_get("a" * 43, 1800) == b"{}"  # renewed for 30 min from now
    fake_clock.advance(1799)
    assert store.session_get("a" * 43, None) == b"{}"
    fake_clock.advance(2)
    assert store.session_get("a" * 43, None) is None

    store.session_set("b" * 43, b"{}", expires_in=1800, absolute_lifetime=12 * 3600)
    for _ in range(24):  # 24 x 1790 s = 11 h 56 min, never idle for long
        fake_clock.advance(1790)
        assert store.session_get("b" * 43, 1800) is not None
    fake_clock.advance(300)  # past 12 h since it began, though active
    assert store.session_get("b" * 43, 1800) is None


def test_the_live_sockets_sessions_are_asked_about_at_once(store: AccountStore, fake_clock: FakeClock) -> None:  # noqa: F811
    """The live hub's sweep: alive, for the account the socket was opened by, not expired."""
    store.session_set("alive", b"{}", expires_in=1800, account_id="a-1")
    store.session_set("idle", b"{}", expires_in=60, account_id="a-1")
    store.session_set("someone-elses", b"{}", expires_in=1800, account_id="a-2")
    many = [(f"unknown-{n}", "a-1") for n in range(1200)]  # more than one query asks about
    fake_clock.advance(61)
    asked = [("alive", "a-1"), ("idle", "a-1"), ("someone-elses", "a-1"), ("signed-out", "a-1"), *many]
    assert store.live_sessions(asked) == {"alive"}
    assert store.session_get("alive", None) is not None  # asking renews nothing
    assert store.live_sessions([]) == set()


def test_session_ids_are_stored_hashed(tmp_path: Path, fake_clock: FakeClock) -> None:  # noqa: F811
    store = AccountStore.open(StoreSettings(data_dir=str(tmp_path)), clock=fake_clock, hasher=FAST_HASHER)
    session_id = "the-session-id-" + "x" * 30
    store.session_set(session_id, b"{}", expires_in=60)
    store.close()
    with sqlite3.connect(tmp_path / "accounts.sqlite3") as connection:
        keys = [row[0] for row in connection.execute("SELECT session_hash FROM sessions")]
    assert keys and session_id not in keys[0]


def test_the_postgres_store_keeps_the_shared_pool_size_and_names_its_connections(
    postgres_env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The accounts' pool is sized by POLKU_PG_POOL_SIZE/POLKU_PG_POOL_MAX as the event store's
    pools are, holds only its size once open (not one more for the schema statements, which
    came before its first connection was ready), and says what it is in pg_stat_activity."""
    monkeypatch.delenv("PGAPPNAME", raising=False)
    settings = StoreSettings.from_environ(
        {**postgres_env, "POLKU_PG_SCHEMA": pg_schema, "POLKU_PG_POOL_SIZE": "1", "POLKU_PG_POOL_MAX": "3"}
    )
    store = AccountStore.open(settings, hasher=FAST_HASHER)
    try:
        pool = store._db._pool  # type: ignore[attr-defined]
        assert (pool.min_size, pool.max_size, pool.get_stats()["pool_size"]) == (1, 3, 1)
        with pool.connection() as pooled, psycopg.connect(settings.pg_conninfo, autocommit=True) as db:
            row = db.execute(
                "SELECT application_name FROM pg_stat_activity WHERE pid = %s", (pooled.info.backend_pid,)
            ).fetchone()
        assert row == ("polku accounts",)
        assert "keepalives_idle=5" in pooled.info.dsn  # a silently dropped connection is found
    finally:
        store.close()


# --- administration ---------------------------------------------------------------------


def test_organisations_and_accounts_are_checked(accounts: AccountStore) -> None:  # noqa: F811
    with pytest.raises(AccountError, match="organisation"):
        accounts.add_account("aino.virtanen", name="Aino Virtanen", organisation_id="nowhere")
    with pytest.raises(AccountError, match="type"):
        accounts.add_organisation("pirha", "Pirha", "ministry")
    assert accounts.add_organisation("kela", "K\u200bela", "kela").name == "Kela"
    with pytest.raises(AccountError, match="at most 200"):
        accounts.add_organisation("pitka", "x" * 201, "other")
    with pytest.raises(AccountError, match="at most 200"):
        accounts.add_account("pitka.nimi", name="x" * 201, organisation_id="kela")
    accounts.add_organisation("pirha", "Pirha", "wellbeing_services_county")
    accounts.add_organisation("pirha", "Pirkanmaan hyvinvointialue", "wellbeing_services_county")  # repeatable
    assert accounts.organisation("pirha").name == "Pirkanmaan hyvinvointialue"
    created = accounts.add_account("Aino.Virtanen", name="Aino Virtanen", organisation_id="pirha",
                                   profession="kuntoutusohjaaja")
    assert created.person_id == "aino.virtanen" and created.organisation_name == "Pirkanmaan hyvinvointialue"
    assert created.actor.organisation_id == "pirha"
    with pytest.raises(AccountError, match="taken"):
        accounts.add_account("aino.virtanen", name="Another", organisation_id="pirha")
    with pytest.raises(AccountError, match="username"):
        accounts.add_account("Aino Virtanen", name="Aino Virtanen", organisation_id="pirha")
    reversed_name = accounts.add_account("aino.r", name="Aino \u202enenatriV", organisation_id="pirha")
    assert reversed_name.name == "Aino nenatriV"  # shown as written, not as "Aino Virtanen"
    with pytest.raises(AccountError, match="plan"):
        accounts.add_account("client.one", name="Client One", kind="client")
    client = accounts.add_account("client.one", name="Client One", kind="client", plan_id="p-1")
    assert client.kind == "client" and client.plan_id == "p-1" and client.organisation_id == ""


def test_a_person_has_at_most_one_professional_account_in_an_organisation(
    store: AccountStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network member is named by person and organisation: a second account of the pair
    would leave it to chance whose name and access a plan gets."""
    store.add_organisation("pirha", "Pirha", "wellbeing_services_county")
    store.add_organisation("kela", "Kela", "kela")
    first = store.add_account("aino.virtanen", name="Aino Virtanen", organisation_id="pirha", person_id="p-aino")

    with pytest.raises(AccountError, match="'p-aino' has a professional account in 'pirha' already"):
        store.add_account("aino.v", name="Aino V", organisation_id="pirha", person_id="p-aino")

    assert store.account_by_username("aino.v") is None
    elsewhere = store.add_account("aino.kela", name="Aino Virtanen", organisation_id="kela", person_id="p-aino")
    store.add_account("aino.admin", name="Aino Virtanen", kind="admin", organisation_id="pirha", person_id="p-aino")
    assert store.professional("p-aino", "pirha") == first
    assert store.professional("p-aino", "kela") == elsewhere
    with pytest.raises(Exception, match="(?i)unique|duplicate"):  # the table holds the rule too (two admins at once)
        store._db.execute(
            "INSERT INTO accounts (account_id, username, kind, name, person_id, organisation_id, created_at)"
            " VALUES ('a-2', 'aino.w', 'professional', 'Aino W', 'p-aino', 'pirha', 0)"
        )
    monkeypatch.setattr(store, "professional", lambda person_id, organisation_id: None)  # another admin's came between
    with pytest.raises(AccountError, match="'p-aino' has a professional account in 'pirha' already"):
        store.add_account("aino.x", name="Aino X", organisation_id="pirha", person_id="p-aino")


def test_accounts_made_before_the_one_account_rule_still_open_and_are_named_at_start(
    tmp_path: Path, fake_clock: FakeClock, caplog: pytest.LogCaptureFixture  # noqa: F811
) -> None:
    """Two professional accounts of one person in one organisation, from before the rule:
    the store opens (the service starts), says who at start-up, and takes the oldest; once
    one is gone, the unique index is made."""
    settings = StoreSettings(data_dir=str(tmp_path))
    store = AccountStore.open(settings, clock=fake_clock, hasher=FAST_HASHER)
    store.add_organisation("pirha", "Pirha", "wellbeing_services_county")
    first = store.add_account("aino.virtanen", name="Aino Virtanen", organisation_id="pirha", person_id="p-aino")
    store._db.execute("DROP INDEX one_professional_account_per_person_and_organisation")  # as before the rule
    fake_clock.advance(10)
    store._db.execute(
        "INSERT INTO accounts (account_id, username, kind, name, person_id, organisation_id, created_at)"
        " VALUES ('a-2', 'aino.v', 'professional', 'Aino V', 'p-aino', 'pirha', %(now)s)", {"now": fake_clock()}
    )
    store.close()

    with caplog.at_level(logging.ERROR, logger="web.accounts"):
        again = AccountStore.open(settings, clock=fake_clock, hasher=FAST_HASHER)
    assert "p-aino in pirha" in caplog.text
    assert again.professional("p-aino", "pirha") == first
    again._db.execute("DELETE FROM accounts WHERE account_id = 'a-2'")
    again.close()
    fixed = AccountStore.open(settings, clock=fake_clock, hasher=FAST_HASHER)
    with pytest.raises(Exception, match="(?i)unique"):
        fixed._db.execute(
            "INSERT INTO accounts (account_id, username, kind, name, person_id, organisation_id, created_at)"
            " VALUES ('a-3', 'aino.w', 'professional', 'Aino W', 'p-aino', 'pirha', 0)"
        )
    fixed.close()


def test_no_password_or_link_token_is_kept_in_plain_text(tmp_path: Path, fake_clock: FakeClock) -> None:  # noqa: F811
    store = AccountStore.open(StoreSettings(data_dir=str(tmp_path)), clock=fake_clock, hasher=FAST_HASHER)
    add_account(store, "aino.virtanen", password="plain text secret one")
    add_account(store, "mikko.laine", name="Mikko Laine", password=None)
    token = store.issue_link("mikko.laine")
    store.set_password_with_link(token, "plain text secret two")
    later = store.issue_link("mikko.laine")
    store.verify_password("aino.virtanen", "plain text secret three")  # a failed attempt
    store.close()
    files = [path for path in tmp_path.iterdir() if path.name.startswith("accounts.sqlite3")]
    content = b"".join(path.read_bytes() for path in files)
    assert b"$argon2id$" in content
    for secret in ("plain text secret one", "plain text secret two", "plain text secret three", token, later):
        assert secret.encode() not in content, secret


# --- the demo accounts and the command line ---------------------------------------------


@pytest.fixture
def cli_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A hermetic environment for `polku`: a SQLite store in a fresh data folder."""
    for name in ("POLKU_STORE", "POLKU_PG_SCHEMA", "POLKU_MASTER_KEY", "POLKU_DEMO_PASSWORD", "POLKU_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    data_dir = tmp_path / "data"
    monkeypatch.setenv("POLKU_DATA_DIR", str(data_dir))
    return data_dir


def test_the_demo_password_comes_from_the_environment_or_a_private_file(tmp_path: Path) -> None:
    assert demo_password(tmp_path, {"POLKU_DEMO_PASSWORD": "given by the environment"}) == "given by the environment"
    assert not (tmp_path / "demo-password.txt").exists()
    with pytest.raises(PasswordRejected):
        demo_password(tmp_path, {"POLKU_DEMO_PASSWORD": "short"})
    generated = demo_password(tmp_path, {})
    path = tmp_path / "demo-password.txt"
    assert len(generated) >= 16 and path.stat().st_mode & 0o777 == 0o600
    assert demo_password(tmp_path, {}) == generated  # kept
    path.chmod(0o644)
    assert demo_password(tmp_path, {}) == generated and path.stat().st_mode & 0o777 == 0o600


def test_demo_accounts_are_made_once_with_one_password(accounts: AccountStore) -> None:  # noqa: F811
    made = ensure_demo_accounts(accounts, "the demo password 1")
    usernames = sorted(actor.person_id for actor, _ in PEOPLE.values())
    assert len(made) == 12 and sorted(accounts.usernames()) == usernames
    assert {o.organisation_id: o.type.value for o in accounts.organisations()} == {
        "pirha-toike": "wellbeing_services_county", "kela-pirkanmaa": "kela",
        "tampere-tyollisyys": "employment_services", "vire-ry": "third_sector", "kuntoutus-oy": "private_provider",
    }
    aino = accounts.verify_password("aino.virtanen", "the demo password 1").account
    assert aino is not None and aino.actor == PEOPLE["aino"][0] and aino.profession == "kuntoutusohjaaja"
    hashes = {u: accounts.password_hash_of(u) for u in usernames}
    assert all(h and h.startswith("$argon2id$") for h in hashes.values())

    ensure_demo_accounts(accounts, "the demo password 1")  # again: nothing changes
    assert {u: accounts.password_hash_of(u) for u in usernames} == hashes
    ensure_demo_accounts(accounts, "another demo password")  # a new demo password replaces the old
    assert accounts.verify_password("maria.lindqvist", "another demo password").ok
    assert not accounts.verify_password("maria.lindqvist", "the demo password 1").ok


def test_polku_admin_keeps_the_service_catalogue(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["admin", "service", "add", "Työkokeilu"]) == 0
    assert main(["admin", "service", "add", "Fysioterapia"]) == 0
    capsys.readouterr()
    assert main(["admin", "service", "add", "TYÖKOKEILU"]) == 1
    assert "already" in capsys.readouterr().err
    assert main(["admin", "service", "add", "x" * 201]) == 1
    assert "200 characters" in capsys.readouterr().err

    assert main(["admin", "service", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Fysioterapia", "Työkokeilu"]
    assert main(["admin", "service", "remove", "Fysioterapia"]) == 0
    assert main(["admin", "service", "remove", "Fysioterapia"]) == 1
    capsys.readouterr()
    assert main(["admin", "service", "list"]) == 0
    assert capsys.readouterr().out.splitlines() == ["Työkokeilu"]


def test_polku_admin_adds_organisations_and_people_with_links(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["admin", "organisation", "add", "kela-uusimaa", "Kela, Uudenmaan vakuutuspiiri", "--type", "kela"]) == 0
    assert "kela-uusimaa" in capsys.readouterr().out
    assert main(["admin", "person", "add", "Tiina.Testi", "--name", "Tiina Testi", "--organisation", "kela-uusimaa",
                 "--profession", "kuntoutusasiantuntija"]) == 0
    first = _link_token(capsys.readouterr().out, "http://127.0.0.1:8000")
    monkeypatch.setenv("POLKU_BASE_URL", "https://polku.example.fi/")
    assert main(["admin", "person", "link", "tiina.testi"]) == 0
    second = _link_token(capsys.readouterr().out, "https://polku.example.fi")
    assert main(["admin", "person", "add", "ville.admin", "--name", "Ville Ylläpitäjä", "--organisation",
                 "kela-uusimaa", "--kind", "admin", "--base-url", "https://other.example"]) == 0
    _link_token(capsys.readouterr().out, "https://other.example")

    store = AccountStore.open(StoreSettings.from_environ(), hasher=FAST_HASHER)
    try:
        assert store.account_for_link(first) is None  # replaced by the new link
        tiina = store.account_for_link(second)
        assert tiina is not None and tiina.name == "Tiina Testi" and tiina.kind == "professional"
        assert tiina.organisation_name == "Kela, Uudenmaan vakuutuspiiri" and tiina.profession == "kuntoutusasiantuntija"
        assert store.account_by_username("ville.admin").kind == "admin"
    finally:
        store.close()

    assert main(["admin", "person", "add", "someone", "--name", "S", "--organisation", "nowhere"]) == 1
    assert "no organisation 'nowhere'" in capsys.readouterr().err
    assert main(["admin", "person", "link", "nobody.here"]) == 1
    with pytest.raises(SystemExit):
        main(["admin", "organisation", "add", "x", "X", "--type", "ministry"])


def test_polku_demo_makes_the_demo_accounts_and_prints_the_password(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["demo", "--if-empty"]) == 0
    out = capsys.readouterr().out
    password = (cli_env / "demo-password.txt").read_text().strip()
    assert "Demo loaded: 5 plans." in out and "12 professionals" in out and out.rstrip().endswith(password)
    assert main(["demo", "--if-empty"]) == 0  # again: plans kept, same accounts, same password
    assert capsys.readouterr().out.rstrip().endswith(password)
    monkeypatch.setenv("POLKU_DEMO_PASSWORD", "chosen for the demo")
    assert main(["demo", "--if-empty"]) == 0
    assert "POLKU_DEMO_PASSWORD" in capsys.readouterr().out
    store = AccountStore.open(StoreSettings.from_environ())
    try:
        assert store.count_accounts() == 13  # twelve professionals and the demo client
        assert store.verify_password("timo.lehtonen", "chosen for the demo").ok
    finally:
        store.close()


def test_polku_demo_if_empty_adds_no_demo_accounts_beside_real_ones(
    cli_env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["admin", "organisation", "add", "real", "Real Organisation", "--type", "other"]) == 0
    assert main(["admin", "person", "add", "real.person", "--name", "Real Person", "--organisation", "real"]) == 0
    assert main(["demo", "--if-empty"]) == 0
    assert "demo accounts not added" in capsys.readouterr().out
    assert not (cli_env / "demo-password.txt").exists()


def _link_token(output: str, base_url: str) -> str:
    match = re.search(re.escape(base_url) + r"/signin/link/([A-Za-z0-9_-]{43})\s*$", output)
    assert match, output
    return match.group(1)


def test_ended_sessions_are_purged(accounts: AccountStore, fake_clock: FakeClock) -> None:  # noqa: F811
    accounts.session_set("idle" + "x" * 40, b"{}", expires_in=60, absolute_lifetime=3600)
    accounts.session_set("live" + "x" * 40, b"{}", expires_in=600, absolute_lifetime=3600)
    fake_clock.advance(120)
    assert accounts.purge_expired_sessions() == 1
    assert accounts.session_count() == 1


@pytest.mark.parametrize(("setting", "value", "said"), [
    ("POLKU_STORE", "bogus", "Invalid enum value 'bogus'"),
    ("POLKU_MASTER_KEY", "notbase64", "POLKU_MASTER_KEY must be base64"),
    ("POLKU_MASTER_KEY", "c2hvcnQ=", "POLKU_MASTER_KEY must be the base64 of 32 bytes; it holds 5"),
    ("POLKU_WORKER_THREADS", "many", "POLKU_WORKER_THREADS"),
])
def test_a_bad_setting_is_said_in_one_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, setting: str, value: str,
    said: str,
) -> None:
    """Not a traceback: the operator is told which setting to mend (exit status 78, EX_CONFIG)."""
    monkeypatch.setenv(setting, value)
    command = ["serve", "--port", "0"] if setting == "POLKU_WORKER_THREADS" else ["plans"]
    assert main(command) == os.EX_CONFIG
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("polku: ") and said in line


def test_a_file_or_folder_that_cannot_be_written_is_said_in_one_line(
    cli_env: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert main(["accesslog", "export", "--output", str(tmp_path)]) == 1
    assert capsys.readouterr().err.splitlines() == [f"polku: {tmp_path}: Is a directory"]


def test_a_command_line_that_is_not_utf8_is_said_in_one_line(cli_env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A byte that is not UTF-8 reaches Python as a lone surrogate, which no output can print."""
    assert main(["admin", "person", "link", "a\udcff"]) == 2
    assert capsys.readouterr().err == "polku: the command line must be UTF-8 text\n"


@pytest.mark.parametrize("port", ["99999", "-1", "http"])
def test_a_port_outside_the_tcp_range_is_refused(cli_env: Path, capsys: pytest.CaptureFixture[str], port: str) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["serve", "--port", port])
    assert refused.value.code == 2
    assert "give a number from 0 to 65535" in capsys.readouterr().err
