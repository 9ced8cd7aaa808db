"""The access log: every read of a plan by a professional is recorded before it is sent,
the chain finds tampering, nothing in the application changes the log, and the
administrator's pages export it. A real server (uvicorn) with real sign-in throughout.
"""

from __future__ import annotations

import csv
import inspect
import io
import json
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg
import pytest
from litestar import Litestar
from litestar.routes import HTTPRoute
from psycopg import sql
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as sync_connect

from domain.application import PlanService
from domain.demo import PEOPLE, load_demo
from domain.storage import StoreSettings
from tests.web.conftest import TEST_SECRET_KEY, running
from tests.web.identity_fixtures import FAST_HASHER, add_account, csrf_token_of_page, sign_in
from web import cli
from web.accesslog import ACCESSLOG_FILENAME, AccessEntry, AccessLog, AccessLogUnavailable, accesslog_schema
from web.accounts import AccountStore
from web.controllers.client import _access_log as client_access_lines
from web.settings import Settings
from web.wiring import build_app, store_settings_for

ORGANISATION_TYPES = {
    "pirha-toike": "wellbeing_services_county",
    "kela-pirkanmaa": "kela",
    "tampere-tyollisyys": "employment_services",
    "vire-ry": "third_sector",
    "kuntoutus-oy": "private_provider",
}
AINO = PEOPLE["aino"][0]


# ------------------------------------------------------------------------------ the site


@dataclass
class Site:
    base_url: str
    app: Litestar
    data_dir: Path
    plans: dict[str, str]
    """Plan ids of the demo clients by first name (matti, liisa, ahmed, eeva, johan)."""

    @property
    def log(self) -> AccessLog:
        return self.app.state.access_log

    def client_name(self, who: str) -> str:
        plan = self.app.state.views.plan(self.plans[who])
        assert plan is not None
        return plan.client.name

    def entries(self, who: str, limit: int = 10) -> list[Any]:
        return self.log.entries_for_plan(self.plans[who], limit)


def make_store(data_dir: Path) -> tuple[StoreSettings, list[str]]:
    """A data folder with the demo plans; the store waits at most 1 s for a lock."""
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=data_dir)
    store = msgspec.structs.replace(store_settings_for(settings, environ={}), lock_timeout_s=1)
    service = PlanService(store)
    try:
        ids = load_demo(service)
    finally:
        service.close()
    return store, ids


def make_accounts(data_dir: Path) -> AccountStore:
    accounts = AccountStore.sqlite(data_dir / "test-accounts.sqlite3", hasher=FAST_HASHER)
    if accounts.count_accounts() == 0:
        for actor, profession in PEOPLE.values():
            add_account(accounts, actor.person_id, name=actor.name, profession=profession,
                        organisation=(actor.organisation_id, actor.organisation_name,
                                      ORGANISATION_TYPES[actor.organisation_id]))
        add_account(accounts, "alli.admin", name="Alli Ylläpitäjä", kind="admin", profession="",
                    organisation=("pirha-toike", "Pirkanmaan hyvinvointialue, työkyvyn tuki",
                                  "wellbeing_services_county"))
    return accounts


@contextmanager
def serving(data_dir: Path, store: StoreSettings, ids: list[str], accounts: AccountStore) -> Iterator[Site]:
    app = build_app(Settings(secret_key=TEST_SECRET_KEY, data_dir=data_dir), store)
    from web import identity

    identity.install(app, accounts)
    with running(app) as base_url:
        site = Site(base_url=base_url, app=app, data_dir=data_dir,
                    plans=dict(zip(("matti", "liisa", "ahmed", "eeva", "johan"), ids, strict=True)))
        assert app.state.views.wait_for(app.state.plans.recorder.max_notification_id() or 0, timeout=10)
        yield site


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    data_dir = tmp_path_factory.mktemp("accesslog-site")
    store, ids = make_store(data_dir)
    accounts = make_accounts(data_dir)
    try:
        with serving(data_dir, store, ids, accounts) as running_site:
            yield running_site
    finally:
        accounts.close()


@contextmanager
def signed_in(site: Site, username: str, language: str = "fi") -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.base_url, follow_redirects=False, timeout=20,
                      headers={"accept-language": language}) as client:
        sign_in(client, site.base_url, username)
        yield client


@contextmanager
def log_locked(site: Site) -> Iterator[None]:
    """Another connection holds the access log's write lock: no entry can be written."""
    connection = sqlite3.connect(site.data_dir / ACCESSLOG_FILENAME, isolation_level=None)
    connection.execute("BEGIN IMMEDIATE")
    try:
        yield
    finally:
        connection.execute("ROLLBACK")
        connection.close()


def last_seq(site: Site) -> int:
    return site.log.head()[0]


# ---------------------------------------------------------------------------- recording


def test_a_plan_page_read_is_recorded_with_who_what_and_when(site: Site) -> None:
    before = last_seq(site)
    with signed_in(site, "aino.virtanen") as aino:
        response = aino.get(f"/plans/{site.plans['matti']}")
    assert response.status_code == 200
    assert site.client_name("matti") in response.text
    new = [entry for entry in site.log.entries(None, None) if entry.seq > before]
    assert len(new) == 1, new
    entry = new[0]
    plan = site.app.state.views.plan(site.plans["matti"])
    assert (entry.plan_id, entry.what, entry.via, entry.version) == (site.plans["matti"], "page", "http", plan.version)
    assert (entry.person_id, entry.person_name) == (AINO.person_id, AINO.name)
    assert (entry.organisation_id, entry.organisation_name) == (AINO.organisation_id, AINO.organisation_name)
    assert entry.moment is None
    assert entry.at.tzinfo is not None
    assert site.entries("matti", 1)[0] == entry  # newest first, for the client's view


def test_a_read_that_cannot_be_recorded_is_refused_with_503_and_nothing_of_the_plan(site: Site) -> None:
    plan_id = site.plans["liisa"]
    name = site.client_name("liisa")
    with signed_in(site, "aino.virtanen") as aino:
        before = last_seq(site)
        with log_locked(site):
            page = aino.get(f"/plans/{plan_id}")
            history = aino.get(f"/plans/{plan_id}/history?at=1")
            fragment = aino.get(f"/plans/{plan_id}", headers={"hx-request": "true"})
            contact = aino.get(f"/plans/{plan_id}/contact", headers={"hx-request": "true"})
        for response in (page, history, fragment, contact):
            assert response.status_code == 503, response.text[:300]
            assert name not in response.text
            assert name.split()[-1] not in response.text
            assert response.headers["retry-after"]
        assert "Jokainen suunnitelman lukukerta kirjataan" in page.text  # said plainly, in Finnish
        assert fragment.headers["hx-retarget"] == "#messages"
        assert last_seq(site) == before  # and nothing was recorded for them
        # The log works again: so do the pages.
        again = aino.get(f"/plans/{plan_id}")
    assert again.status_code == 200
    assert name in again.text
    assert last_seq(site) == before + 1


def test_a_history_read_records_the_version_or_moment_read(site: Site) -> None:
    plan_id = site.plans["ahmed"]
    with signed_in(site, "aino.virtanen") as aino:
        by_version = aino.get(f"/plans/{plan_id}/history", params={"at": "2"})
        [entry] = site.entries("ahmed", 1)
        by_moment = aino.get(f"/plans/{plan_id}/history", params={"at": "2020-01-01T10:00"})
        [later] = site.entries("ahmed", 1)
    assert by_version.status_code == 200 and by_moment.status_code == 200
    assert (entry.what, entry.version, entry.moment) == ("history", 2, None)
    assert (later.what, later.version) == ("history", 1)  # before the plan began: its first version
    assert later.moment == "2020-01-01T10:00:00+02:00"
    assert later.seq == entry.seq + 1


def test_a_fragment_of_the_plan_is_a_read_as_the_whole_page_is(site: Site) -> None:
    """A member could otherwise read the client's contact details, or the plan item by item,
    without ever opening the page, and the client's list of who has read their plan would
    not name them (security review)."""
    plan_id = site.plans["matti"]
    need_id = next(iter(site.app.state.views.plan(plan_id).needs))
    with signed_in(site, "aino.virtanen") as aino:
        before = last_seq(site)
        whole = aino.get(f"/plans/{plan_id}/needs/new/add")
        assert whole.status_code == 200
        assert last_seq(site) == before + 1
        assert site.entries("matti", 1)[0].what == "page"
        for path in ("needs/new/add", "contact", f"needs/{need_id}", f"needs/{need_id}/edit"):
            fragment = aino.get(f"/plans/{plan_id}/{path}", headers={"hx-request": "true"})
            assert fragment.status_code == 200, path
        assert last_seq(site) == before + 5
        assert {(e.what, e.person_id) for e in site.entries("matti", 4)} == {("page", AINO.person_id)}
        assert aino.get(f"/plans/{plan_id}/history", params={"at": "1"}).status_code == 200
    # The client sees the visit as one line (its first read), and the history read beside it.
    lines = client_access_lines(site.app.state, plan_id)
    assert [(line.who, line.what) for line in lines[:2]] == [(AINO.name, "history"), (AINO.name, "page")]
    assert [(line.who, line.what) for line in lines].count((AINO.name, "page")) == 1  # her reads of this module: seconds apart


def test_one_readers_many_reads_push_no_other_reader_out_of_the_clients_list(
    site: Site, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A colleague at work on the plan (a form opened and closed, again and again) is one
    visit, read page by page from the log: the reader before them stays listed."""
    from web.controllers import client

    monkeypatch.setattr(client, "ACCESS_LOG_PAGE", 7)  # several pages of the log, in a short test
    monkeypatch.setattr(client, "ACCESS_LOG_LIMIT", 3)
    plan_id = site.plans["matti"]
    need_id = next(iter(site.app.state.views.plan(plan_id).needs))
    with signed_in(site, "pekka.nieminen") as pekka:
        assert pekka.get(f"/plans/{plan_id}").status_code == 200
    with signed_in(site, "aino.virtanen") as aino:
        for _ in range(25):
            assert aino.get(f"/plans/{plan_id}/needs/{need_id}/edit", headers={"hx-request": "true"}).status_code == 200
            assert aino.get(f"/plans/{plan_id}/needs/{need_id}", headers={"hx-request": "true"}).status_code == 200
    lines = client_access_lines(site.app.state, plan_id)
    assert {line.who for line in lines} >= {AINO.name, "Pekka Nieminen"}
    assert [(line.who, line.what) for line in lines].count((AINO.name, "page")) == 1 and len(lines) <= 3


def test_a_refused_reader_is_not_recorded(site: Site) -> None:
    before = last_seq(site)
    with signed_in(site, "outi.rantanen") as outi:  # third sector: not in Matti's network
        response = outi.get(f"/plans/{site.plans['matti']}")
    assert response.status_code in (403, 404)
    assert last_seq(site) == before


def test_the_live_sockets_first_load_is_recorded_before_it_is_accepted(site: Site) -> None:
    plan_id = site.plans["matti"]
    ws_url = site.base_url.replace("http://", "ws://")
    with signed_in(site, "aino.virtanen") as aino:
        cookie = f"polku_session={aino.cookies['polku_session']}"
        before = last_seq(site)
        with sync_connect(f"{ws_url}/plans/{plan_id}/live?version=1", origin=site.base_url,  # type: ignore[arg-type]
                          additional_headers={"Cookie": cookie}, open_timeout=10) as socket:
            socket.recv(timeout=10)  # the plan (the page showed version 1) or who is here
        [entry] = [e for e in site.log.entries(None, None) if e.seq > before]
        assert (entry.plan_id, entry.what, entry.via, entry.person_id) == (plan_id, "page", "websocket", AINO.person_id)

        before = last_seq(site)
        with log_locked(site), pytest.raises(InvalidStatus) as refused:
            sync_connect(f"{ws_url}/plans/{plan_id}/live?version=1", origin=site.base_url,  # type: ignore[arg-type]
                         additional_headers={"Cookie": cookie}, open_timeout=15)
        assert refused.value.response.status_code == 403
        assert site.client_name("matti").encode() not in (refused.value.response.body or b"")
        assert last_seq(site) == before


def test_many_reads_at_once_are_all_recorded_in_one_intact_chain(site: Site) -> None:
    plan_id = site.plans["eeva"]
    with signed_in(site, "aino.virtanen") as aino:
        cookies = dict(aino.cookies)
    before = last_seq(site)
    statuses: list[int] = []

    def read() -> None:
        with httpx.Client(base_url=site.base_url, cookies=cookies, timeout=30) as client:
            for _ in range(4):
                statuses.append(client.get(f"/plans/{plan_id}").status_code)

    threads = [threading.Thread(target=read) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [200] * 48
    assert last_seq(site) == before + 48
    assert site.log.verify().ok


# ------------------------------------------------------------------------ the chain


@pytest.fixture
def copied_log(site: Site, tmp_path: Path) -> Iterator[Path]:
    """A copy of the site's access log (a data folder of its own) to tamper with."""
    with signed_in(site, "aino.virtanen") as aino:
        for who in ("matti", "liisa", "matti", "ahmed", "matti", "johan"):
            aino.get(f"/plans/{site.plans[who]}")
    folder = tmp_path / "copy"
    folder.mkdir()
    source = sqlite3.connect(site.data_dir / ACCESSLOG_FILENAME)
    target = sqlite3.connect(folder / ACCESSLOG_FILENAME)
    source.backup(target)
    source.close()
    target.close()
    yield folder


def tamper(folder: Path, *statements: str) -> None:
    """Change the log's file directly, as someone with access to the database could."""
    connection = sqlite3.connect(folder / ACCESSLOG_FILENAME, isolation_level=None)
    connection.execute("DROP TRIGGER access_log_no_update")
    connection.execute("DROP TRIGGER access_log_no_delete")
    for statement in statements:
        connection.execute(statement)
    connection.close()


def verify_command(folder: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                   *options: str) -> tuple[int, str]:
    monkeypatch.setenv("POLKU_STORE", "sqlite")
    monkeypatch.setenv("POLKU_DATA_DIR", str(folder))
    code = cli.main(["accesslog", "verify", *options])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_verify_passes_on_an_untouched_log(copied_log: Path, monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, output = verify_command(copied_log, monkeypatch, capsys)
    assert code == 0, output
    assert "intact" in output


def test_verify_finds_an_entry_edited_in_the_database(copied_log: Path, monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    tamper(copied_log, "UPDATE access_log SET person_name = 'Joku Muu' WHERE seq = 3")
    code, output = verify_command(copied_log, monkeypatch, capsys)
    assert code == 1
    assert "broken at entry 3" in output and "changed" in output
    report = AccessLog.sqlite(copied_log / ACCESSLOG_FILENAME).verify()
    assert (report.ok, report.broken_seq, report.problem, report.checked) == (False, 3, "changed", 2)


def test_verify_finds_an_edit_whose_hash_was_recomputed(copied_log: Path) -> None:
    from web.accesslog import entry_hash

    log = AccessLog.sqlite(copied_log / ACCESSLOG_FILENAME)
    entry = next(e for e in log.entries() if e.seq == 2)
    forged = msgspec.structs.replace(entry, person_name="Joku Muu")
    tamper(copied_log, f"UPDATE access_log SET person_name = 'Joku Muu', hash = '{entry_hash(forged)}' WHERE seq = 2")
    report = log.verify()
    assert (report.ok, report.broken_seq, report.problem) == (False, 3, "link")
    log.close()


def test_verify_finds_a_deleted_entry(copied_log: Path, monkeypatch: pytest.MonkeyPatch,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    tamper(copied_log, "DELETE FROM access_log WHERE seq = 4")
    code, output = verify_command(copied_log, monkeypatch, capsys)
    assert code == 1
    assert "broken at entry 4" in output and "missing" in output


def test_verify_finds_entries_put_in_another_order(copied_log: Path) -> None:
    tamper(
        copied_log,
        "UPDATE access_log SET seq = -1 WHERE seq = 2",
        "UPDATE access_log SET seq = 2 WHERE seq = 3",
        "UPDATE access_log SET seq = 3 WHERE seq = -1",
    )
    report = AccessLog.sqlite(copied_log / ACCESSLOG_FILENAME).verify()
    assert (report.ok, report.broken_seq, report.problem) == (False, 2, "link")


def test_an_anchor_finds_a_cut_off_end_and_a_rewritten_chain(copied_log: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    log = AccessLog.sqlite(copied_log / ACCESSLOG_FILENAME)
    seq, digest = log.head()
    code, _output = verify_command(copied_log, monkeypatch, capsys, "--anchor", f"{seq}:{digest}")
    assert code == 0
    tamper(copied_log, f"DELETE FROM access_log WHERE seq = {seq}")
    assert log.verify().ok  # a cut-off end alone leaves an intact chain...
    code, output = verify_command(copied_log, monkeypatch, capsys, "--anchor", f"{seq}:{digest}")
    assert code == 1  # ...but not the anchor
    assert "removed from its end" in output
    log.close()


# --------------------------------------------------------------- nothing changes the log


def test_the_database_refuses_to_change_or_remove_entries(site: Site) -> None:
    connection = sqlite3.connect(site.data_dir / ACCESSLOG_FILENAME, isolation_level=None)
    try:
        for statement in ("UPDATE access_log SET person_name = 'x'", "DELETE FROM access_log"):
            with pytest.raises(sqlite3.IntegrityError, match="append-only"):
                connection.execute(statement)
    finally:
        connection.close()
    assert site.log.verify().ok


def test_no_route_and_no_method_of_the_application_changes_the_log(site: Site) -> None:
    # The log's own interface: appending and reading only.
    public = {name for name, _ in inspect.getmembers(AccessLog) if not name.startswith("_")}
    assert public == {"open", "sqlite", "close", "closed", "record", "arecord", "entries_for_plan", "head", "count",
                      "entries", "export", "verify"}
    # Every route that touches the log only reads: GET (HEAD, OPTIONS).
    touching = []
    for route in site.app.routes:
        if not isinstance(route, HTTPRoute):
            continue
        for handler in route.route_handlers:
            fn = getattr(handler.fn, "func", handler.fn)  # a sync handler is wrapped
            if "access_log" in inspect.signature(fn).parameters or "access-log" in route.path \
                    or "record_plan_read" in inspect.getsource(fn):
                touching.append((route.path, handler.http_methods))
    assert touching, "no route reads the access log?"
    for path, methods in touching:
        assert methods <= {"GET", "HEAD", "OPTIONS"}, (path, methods)  # OPTIONS: Litestar's own, it reads nothing
    # And no other method is answered on the log's paths.
    before = last_seq(site)
    with signed_in(site, "alli.admin") as admin:
        page = admin.get("/admin/access-log")
        token = re.search(r'name="csrf-token" content="([^"]*)"', page.text).group(1)  # type: ignore[union-attr]
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            for path in ("/admin/access-log", "/admin/access-log/export", "/admin/access-log/1"):
                response = admin.request(method, path, headers={"x-csrftoken": token})
                assert response.status_code in (404, 405), (method, path, response.status_code)
    assert last_seq(site) == before


# ----------------------------------------------------------------------- administrators


def test_the_admin_export_holds_the_entries(site: Site) -> None:
    with signed_in(site, "aino.virtanen") as aino:
        aino.get(f"/plans/{site.plans['johan']}")
    [read] = site.entries("johan", 1)
    with signed_in(site, "alli.admin") as admin:
        as_csv = admin.get("/admin/access-log/export", params={"format": "csv"})
        as_jsonl = admin.get("/admin/access-log/export", params={"format": "jsonl"})
        tomorrow = admin.get("/admin/access-log/export", params={"since": "2999-01-01"})
        bad_days = [admin.get("/admin/access-log/export", params=params) for params in (
            {"since": "eilen"}, {"until": "9999-12-31"}, {"since": "0001-01-01"})]  # the calendar's ends: no UTC
        bad_format = admin.get("/admin/access-log/export", params={"format": "xlsx"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"] == "text/csv; charset=utf-8"
    assert as_csv.headers["content-disposition"].startswith("attachment;")
    assert as_csv.headers["cache-control"] == "no-store"
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == site.log.count()
    assert [int(row["seq"]) for row in rows] == list(range(1, len(rows) + 1))
    row = rows[read.seq - 1]
    assert (row["plan_id"], row["what"], row["person_name"], row["organisation_name"], row["hash"]) == (
        read.plan_id, "page", AINO.name, AINO.organisation_name, read.hash)
    lines = [json.loads(line) for line in as_jsonl.text.splitlines()]
    assert lines[read.seq - 1]["hash"] == read.hash and lines[read.seq - 1]["person_id"] == AINO.person_id
    assert tomorrow.text.splitlines() == [tomorrow.text.splitlines()[0]]  # the header only
    assert [response.status_code for response in bad_days] == [422, 422, 422]
    assert all("Valitse päivät kalenterista" in response.text for response in bad_days)  # said, not a 500
    assert bad_format.status_code == 422 and "Valitse vientimuodoksi CSV tai JSONL." in bad_format.text


def test_a_name_a_spreadsheet_would_run_as_a_formula_is_exported_as_text() -> None:
    from web.accesslog import _not_a_formula

    assert [_not_a_formula(v) for v in ("=HYPERLINK(\"x\")", "+1", "-1", "@A1", "\tx", "Kela", 7, None)] == [
        "'=HYPERLINK(\"x\")", "'+1", "'-1", "'@A1", "'\tx", "Kela", 7, None]


def test_the_admin_page_shows_the_chain_checked(site: Site) -> None:
    with signed_in(site, "alli.admin", language="en") as admin:
        response = admin.get("/admin/access-log")
    assert response.status_code == 200
    assert 'data-ok="true"' in response.text
    assert site.log.head()[1] in response.text


def test_the_admin_adds_an_organisation_and_a_professional_with_a_sign_in_link(site: Site) -> None:
    with signed_in(site, "alli.admin") as admin:
        page = admin.get("/admin")
        token = csrf_token_of_page(page.text)
        added = admin.post("/admin/organisations", data={
            "_csrf_token": token, "organisation_id": "sastamala-sote", "name": "Sastamalan sote", "type": "other"})
        assert added.status_code == 200
        assert "Sastamalan sote" in added.text
        refused = admin.post("/admin/organisations", data={
            "_csrf_token": token, "organisation_id": "Ei Kelpaa!", "name": "", "type": "other"})
        assert refused.status_code == 422
        assert 'aria-invalid="true"' in refused.text
        again = admin.post("/admin/organisations", data={  # adding is not renaming
            "_csrf_token": token, "organisation_id": "sastamala-sote", "name": "Toinen nimi", "type": "kela"})
        assert again.status_code == 422 and "Organisaatiolla on jo tämä tunnus." in again.text
        too_long = admin.post("/admin/organisations", data={
            "_csrf_token": token, "organisation_id": "pitka", "name": "x" * 201, "type": "other"})
        assert too_long.status_code == 422 and "Enintään 200 merkkiä." in too_long.text
        assert site.app.state.accounts.organisation("pitka") is None
        assert site.app.state.accounts.organisation("sastamala-sote").name == "Sastamalan sote"
        person = admin.post("/admin/people", data={
            "_csrf_token": token, "username": "sini.salonen", "name": "Sini Salonen",
            "organisation_id": "sastamala-sote", "profession": "sosiaaliohjaaja", "kind": "professional"})
        assert person.status_code == 200
        link = re.search(r'<code id="new-signin-link">([^<]+)</code>', person.text)
        assert link, person.text[:2000]
        taken = admin.post("/admin/people", data={
            "_csrf_token": token, "username": "sini.salonen", "name": "Toinen", "organisation_id": "sastamala-sote",
            "kind": "professional"})
        assert taken.status_code == 422
    assert link.group(1).startswith(site.base_url + "/signin/link/")
    with httpx.Client(timeout=10) as stranger:
        assert stranger.get(link.group(1)).status_code == 200  # the link opens the set-password form
    account = site.app.state.accounts.account_by_username("sini.salonen")
    assert (account.kind, account.organisation_id, account.profession) == ("professional", "sastamala-sote",
                                                                          "sosiaaliohjaaja")


def test_a_name_with_a_character_that_cannot_be_saved_is_told_next_to_its_field(site: Site) -> None:
    """Not "this could not be saved, check the information": which field, and why."""
    with signed_in(site, "alli.admin") as admin:
        page = admin.get("/admin")
        token = csrf_token_of_page(page.text)
        organisation = admin.post("/admin/organisations", data={
            "_csrf_token": token, "organisation_id": "nul-oy", "name": "Nul\x00 Oy", "type": "other"})
        person = admin.post("/admin/people", data={
            "_csrf_token": token, "username": "nul.person", "name": "Nul Person", "organisation_id": "pirha-toike",
            "profession": "ohjaaja\x00", "kind": "professional"})
    for refused, field in ((organisation, "organisation-name"), (person, "person-profession")):
        assert refused.status_code == 422
        error = refused.text[refused.text.index(f'id="{field}-error"'):]
        assert "Poista merkki, jota ei voi tallentaa" in error[:300]
    assert site.app.state.accounts.organisation("nul-oy") is None
    assert site.app.state.accounts.account_by_username("nul.person") is None


def test_the_admin_keeps_the_service_catalogue_that_the_step_forms_offer(site: Site) -> None:
    with signed_in(site, "alli.admin") as admin:
        page = admin.get("/admin")
        token = csrf_token_of_page(page.text)
        added = admin.post("/admin/services", data={"_csrf_token": token, "name": "Työhönvalmennus"})
        assert added.status_code == 200 and "Työhönvalmennus on nyt palveluvalikoimassa." in added.text
        twice = admin.post("/admin/services", data={"_csrf_token": token, "name": "työhönvalmennus"})
        assert twice.status_code == 422 and "Tämä palvelu on jo valikoimassa." in twice.text
        for name, message in (("", "Kirjoita nimi."), ("x" * 201, "Enintään 200 merkkiä."),
                              ("Työ\x00valmennus", "Poista merkki, jota ei voi tallentaa")):
            refused = admin.post("/admin/services", data={"_csrf_token": token, "name": name})
            assert refused.status_code == 422 and message in refused.text, name
            assert 'id="service-name" name="name"' in refused.text and 'aria-invalid="true"' in refused.text
        assert admin.post("/admin/services", data={"name": "Ilman tokenia"}).status_code == 403
    assert site.app.state.accounts.services() == ["Työhönvalmennus"]
    with signed_in(site, "alli.admin") as admin:
        page = admin.get("/admin")
        token = csrf_token_of_page(page.text)
        assert 'name="name" value="Työhönvalmennus"' in page.text  # the entry's remove button
        removed = admin.post("/admin/services/remove", data={"_csrf_token": token, "name": "Työhönvalmennus"})
        assert removed.status_code == 200 and "Työhönvalmennus poistettiin palveluvalikoimasta." in removed.text
        gone = admin.post("/admin/services/remove", data={"_csrf_token": token, "name": "Työhönvalmennus"})
        assert gone.status_code == 200 and "ei ole (enää) palveluvalikoimassa" in gone.text
    assert site.app.state.accounts.services() == []
    site.app.state.accounts.add_service("Työhönvalmennus")
    with signed_in(site, "aino.virtanen") as professional:  # with a valid token: refused for who they are
        page = professional.get("/caseload")
        token = csrf_token_of_page(page.text)
        assert professional.post("/admin/services", data={"_csrf_token": token, "name": "Ei ylläpitäjä"}).status_code == 403
        assert professional.post("/admin/services/remove",
                                 data={"_csrf_token": token, "name": "Työhönvalmennus"}).status_code == 403
    assert site.app.state.accounts.services() == ["Työhönvalmennus"]


def test_the_admin_statistics_are_counts_without_names(site: Site) -> None:
    with signed_in(site, "alli.admin", language="en") as admin:
        response = admin.get("/admin")
    assert response.status_code == 200
    html = response.text
    for who in site.plans:
        assert site.client_name(who) not in html
        assert site.client_name(who).split()[-1] not in html
    plans = [site.app.state.views.plan(plan_id) for plan_id in site.plans.values()]
    assert "Plans in all: 5." in html
    segments = re.search(r'<table class="data-table" id="statistics-segments">.*?</table>', html, re.S).group(0)  # type: ignore[union-attr]
    unemployed_open = sum(1 for p in plans if p.client.segment == "unemployed" and not p.is_closed)
    assert re.search(rf"Unemployed</th><td>{unemployed_open}</td>", segments)
    needs = re.search(r'id="statistics-needs">.*?</table>', html, re.S).group(0)  # type: ignore[union-attr]
    health = sum(1 for p in plans for n in p.needs.values() if n.category == "health")
    assert re.search(rf"Health</th><td>{health}</td>", needs)


@pytest.mark.parametrize("path", ["/admin", "/admin/access-log", "/admin/access-log/export"])
def test_only_administrators_reach_the_admin_pages(site: Site, path: str) -> None:
    with signed_in(site, "aino.virtanen") as aino:
        assert aino.get(path).status_code == 403
    accounts: AccountStore = site.app.state.accounts
    if accounts.account_by_username("matti.client") is None:
        add_account(accounts, "matti.client", name="Matti", kind="client", plan_id=site.plans["matti"],
                    organisation=None)
    with signed_in(site, "matti.client") as client:
        assert client.get(path).status_code == 403
    with httpx.Client(base_url=site.base_url, timeout=10) as stranger:
        response = stranger.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/signin")


# --------------------------------------------------------------------------- restarts


def test_the_log_survives_a_restart_and_its_chain_goes_on(tmp_path: Path) -> None:
    store, ids = make_store(tmp_path)
    accounts = make_accounts(tmp_path)
    try:
        with serving(tmp_path, store, ids, accounts) as first, signed_in(first, "aino.virtanen") as aino:
            for _ in range(3):
                assert aino.get(f"/plans/{first.plans['matti']}").status_code == 200
            head = first.log.head()
        assert head[0] == 3
        with serving(tmp_path, store, ids, accounts) as second, signed_in(second, "aino.virtanen") as aino:
            assert second.log.head() == head
            assert aino.get(f"/plans/{second.plans['matti']}").status_code == 200
            [newest, *_] = second.entries("matti", 10)
            assert (newest.seq, newest.prev_hash) == (4, head[1])
            assert second.log.verify().ok
            assert len(second.entries("matti", 10)) == 4
    finally:
        accounts.close()


# ------------------------------------------------------------------------- the store


def entry(plan_id: str = "p-1", **fields: Any) -> AccessEntry:
    return AccessEntry(plan_id=plan_id, what="page", person_id=AINO.person_id, person_name=AINO.name,
                       organisation_id=AINO.organisation_id, organisation_name=AINO.organisation_name, **fields)


def test_a_closed_log_refuses_to_record(tmp_path: Path) -> None:
    log = AccessLog.sqlite(tmp_path / ACCESSLOG_FILENAME)
    log.record(entry())
    log.close()
    with pytest.raises(AccessLogUnavailable):
        log.record(entry())
    reopened = AccessLog.sqlite(tmp_path / ACCESSLOG_FILENAME)
    assert reopened.count() == 1 and reopened.verify().ok
    reopened.close()


def test_the_log_lives_in_its_own_postgres_schema_and_catches_tampering(
    postgres_env: dict[str, str], pg_schema: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PGAPPNAME", raising=False)  # else it names the connections (libpq)
    settings = StoreSettings.from_environ({**postgres_env, "POLKU_PG_SCHEMA": pg_schema,
                                           "POLKU_MASTER_KEY": "A" * 43 + "="})
    schema = accesslog_schema(settings)
    assert schema == f"{pg_schema}_accesslog"
    log = AccessLog.open(settings)
    try:
        threads = [threading.Thread(target=lambda n=n: [log.record(entry(f"p-{n % 3}", version=n)) for _ in range(5)])
                   for n in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert log.count() == 40
        assert log.verify().ok
        assert len(log.entries_for_plan("p-1", 100)) == 15
        with psycopg.connect(settings.pg_conninfo, autocommit=True) as connection:
            writer = log._writer_db.connection.info.backend_pid  # type: ignore[attr-defined]
            named = connection.execute("SELECT application_name FROM pg_stat_activity WHERE pid = %s", (writer,))
            assert named.fetchone() == ("polku access log",)  # in pg_stat_activity (docs/deployment.md)
            assert "keepalives_idle=5" in log._writer_db.connection.info.dsn  # type: ignore[attr-defined]
            table = sql.SQL("{}.access_log").format(sql.Identifier(schema))
            for statement in ("UPDATE {} SET person_name = 'x'", "DELETE FROM {}", "TRUNCATE {}"):
                with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
                    connection.execute(sql.SQL(statement).format(table))
            connection.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER access_log_no_change").format(table))
            connection.execute(sql.SQL("UPDATE {} SET organisation_name = 'x' WHERE seq = 7").format(table))
        report = log.verify()
        assert (report.ok, report.broken_seq, report.problem) == (False, 7, "changed")
    finally:
        log.close()
        with psycopg.connect(settings.pg_conninfo, autocommit=True) as connection:
            connection.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))



def test_an_entry_is_on_disk_when_record_returns(tmp_path: Path) -> None:
    """SQLite in WAL mode with synchronous=FULL: a commit is fsynced before it returns."""
    log = AccessLog.sqlite(tmp_path / ACCESSLOG_FILENAME)
    try:
        log.record(entry())
        connection = log._writer_db.connection  # type: ignore[attr-defined]
        assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        # Another process sees it at once (it is committed, not queued).
        other = sqlite3.connect(tmp_path / ACCESSLOG_FILENAME)
        assert other.execute("SELECT COUNT(*) FROM access_log").fetchone()[0] == 1
        other.close()
    finally:
        log.close()


@pytest.mark.parametrize("schema", ["Polku_accesslog", "polku_accesslog\n", "p" * 64])
def test_an_access_log_schema_that_not_every_store_can_use_is_refused(schema: str) -> None:
    """The schema goes into the connection's search_path unquoted: one check for every store."""
    from web.accesslog import _PostgresDatabase

    with pytest.raises(ValueError, match="schema of the access log"):
        _PostgresDatabase("host=127.0.0.1", schema, lock_timeout_s=1)
