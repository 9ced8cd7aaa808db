"""Access ends at once: a real server, real websocket clients, real sign-in.

- Withdrawing a consent (through the plan page, as the named expert would) closes the open
  live sockets of everyone it takes out of the plan with 1008 (htmx does not reconnect on
  it) and their very next request is answered 404, while the others stay connected and
  get the change; removing a member does the same for that member.
- A client cannot reach another client's plan by guessing its id, nor by guessing ids at all.
- A non-disclosure order hides the client's contact details from a member but not from the
  named expert: on the page, in the live fragments (which never carry the contact details:
  each browser fetches its own ``/plans/<id>/contact``), in the forms and in the history.

The site is the access matrix's (:mod:`tests.web.test_access_matrix`): the demo, the demo
professionals (usernames are person ids) and plans built like the matrix's, by Aino (the
county, named expert) with Pekka (Kela) the counterpart and Timo (employment services) a
member. Each test builds plans of its own.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from markupsafe import escape
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from domain.application import PlanService
from tests.web.test_access_matrix import AccessSite, ScenarioPlan, access_site, build_plan
from web.live.messages import VERSION_MARKER_ID

WITHIN = 2.0  # seconds: a cut reaches the sockets within this

AINO, PEKKA, TIMO, RIIKKA, SANNA = "aino.virtanen", "pekka.nieminen", "timo.lehtonen", "riikka.salo", "sanna.koski"


def two_clients_plans(service: PlanService) -> dict[str, ScenarioPlan]:
    """Two plans, each with a client account (``asiakas.a``, ``asiakas.b``)."""
    return {"a": build_plan(service, "a"), "b": build_plan(service, "b")}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessSite]:
    with access_site(tmp_path_factory.mktemp("access-cutoff"), two_clients_plans) as running_site:
        yield running_site


@pytest.fixture
async def sockets() -> AsyncIterator[list[ClientConnection]]:
    opened: list[ClientConnection] = []
    yield opened
    for socket in opened:
        await socket.close()


# ---------------------------------------------------------------------------- helpers


async def new_plan(site: AccessSite, **options: Any) -> ScenarioPlan:
    plan = await asyncio.to_thread(build_plan, site.service, f"cut-{uuid.uuid4().hex[:4]}", **options)
    await asyncio.to_thread(site.wait_for_views)
    return plan


async def get(site: AccessSite, username: str, path: str, *, htmx: bool = False) -> httpx.Response:
    http = await asyncio.to_thread(site.client, username)
    return await asyncio.to_thread(http.get, path, headers={"hx-request": "true"} if htmx else {})


async def post(site: AccessSite, username: str, path: str, **fields: Any) -> httpx.Response:
    """Post a plan form as its page would (htmx), with a fresh command id."""
    http = await asyncio.to_thread(site.client, username)
    data = {"_csrf_token": http.cookies.get("csrftoken", ""), "command_id": str(uuid.uuid4()), **fields}
    return await asyncio.to_thread(http.post, path, data=data, headers={"hx-request": "true"})


async def live(site: AccessSite, username: str, plan_id: str) -> ClientConnection:
    """``username``'s live socket on the plan, showing its current version; its first messages read."""
    http = await asyncio.to_thread(site.client, username)
    version = site.app.state.views.plan(plan_id).version
    socket = await connect(
        f"{site.ws_url}/plans/{plan_id}/live?version={version}",
        origin=site.base_url,  # type: ignore[arg-type]
        additional_headers={"Cookie": f"polku_session={http.cookies['polku_session']}; lang=fi"},
        open_timeout=5,
        close_timeout=2,
    )
    async with asyncio.timeout(WITHIN):  # up to the presence the hub sends when someone joins
        while not str(await socket.recv()).startswith('<div id="presence"'):
            pass
    return socket


async def closed_with(socket: ClientConnection, timeout: float = WITHIN) -> int | None:
    """The code the server closed ``socket`` with (messages before it are skipped)."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await socket.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


async def plan_update(socket: ClientConnection, wanted: Callable[[str], bool] = lambda m: True) -> str:
    async with asyncio.timeout(WITHIN):
        while True:
            message = str(await socket.recv())
            if f'id="{VERSION_MARKER_ID}"' in message and wanted(message):
                return message


def plan_paths(plan: ScenarioPlan) -> list[str]:
    base = f"/plans/{plan.plan_id}"
    return [base, f"{base}/history", f"{base}/contact", f"{base}/needs/{plan.items['needs']}",
            f"{base}/needs/new/add", f"{base}/client/details/edit"]


def revision_of(site: AccessSite, plan_id: str, kind: str, item_id: str) -> int:
    plan = site.app.state.views.plan(plan_id)
    return plan.client.revision if kind == "client" else getattr(plan, kind)[item_id].revision


# ---------------------------------------------------------------------------- the cuts


async def test_withdrawing_a_consent_cuts_the_sockets_and_the_reads_of_those_it_takes_out(
    site: AccessSite, sockets: list[ClientConnection]
) -> None:
    plan = await new_plan(site)
    aino, pekka, riikka, timo = [await live(site, who, plan.plan_id) for who in (AINO, PEKKA, RIIKKA, TIMO)]
    sockets += [aino, pekka, riikka, timo]
    for who in (PEKKA, RIIKKA):
        assert (await get(site, who, f"/plans/{plan.plan_id}")).status_code == 200
    assert plan.personal[0] in (await get(site, RIIKKA, "/caseload")).text  # her organisation's plan
    pekka_member = site.app.state.views.plan(plan.plan_id).member_of_person(PEKKA)
    assert pekka_member is not None
    other = await new_plan(site)  # another plan Pekka is in: untouched
    pekka_elsewhere = await live(site, PEKKA, other.plan_id)
    sockets.append(pekka_elsewhere)

    kela = plan.items["consents"]
    withdrawn = await post(site, AINO, f"/plans/{plan.plan_id}/consents/{kela}/withdraw",
                           seen_revision=revision_of(site, plan.plan_id, "consents", kela))
    assert withdrawn.status_code == 200, withdrawn.text[:500]

    for who in (PEKKA, RIIKKA):  # the counterpart, and his colleague whose organisation had the consent
        for path in plan_paths(plan):
            assert (await get(site, who, path)).status_code == 404, (who, path)
        caseload = await get(site, who, "/caseload")
        assert plan.personal[0] not in caseload.text
    assert await closed_with(pekka) == 1008
    assert await closed_with(riikka) == 1008
    update = await plan_update(aino)  # the others stay and see the change
    assert f'id="member-{pekka_member.id}"' not in update
    await plan_update(timo)
    assert (await get(site, TIMO, f"/plans/{plan.plan_id}")).status_code == 200
    await pekka_elsewhere.send('{"type": "editing", "item": null}')  # still allowed there
    with pytest.raises(TimeoutError):
        await closed_with(pekka_elsewhere, timeout=0.3)
    with pytest.raises(InvalidStatus):  # and cannot come back
        await live(site, PEKKA, plan.plan_id)


async def test_removing_a_member_cuts_their_socket_and_reads(site: AccessSite, sockets: list[ClientConnection]) -> None:
    plan = await new_plan(site)
    aino, timo = await live(site, AINO, plan.plan_id), await live(site, TIMO, plan.plan_id)
    sockets += [aino, timo]
    member = plan.items["members"]
    removed = await post(site, AINO, f"/plans/{plan.plan_id}/members/{member}/remove",
                         seen_revision=revision_of(site, plan.plan_id, "members", member))
    assert removed.status_code == 200, removed.text[:500]
    for path in plan_paths(plan):
        assert (await get(site, TIMO, path)).status_code == 404, path
    assert await closed_with(timo) == 1008
    await plan_update(aino)
    with pytest.raises(InvalidStatus):
        await live(site, TIMO, plan.plan_id)


# ---------------------------------------------------------------------------- guessing ids


async def test_a_client_cannot_reach_another_clients_plan(site: AccessSite) -> None:
    mine, theirs = site.plans["a"], site.plans["b"]
    client = "asiakas.a"
    guesses = [*plan_paths(theirs), f"/plans/{theirs.plan_id}/handovers/{theirs.items['handovers']}/accept",
               f"/plans/{uuid.uuid4()}", f"/plans/{uuid.uuid4()}/history", "/plans/1"]
    for path in guesses:
        response = await get(site, client, path)
        assert response.status_code == 404, (path, response.status_code)
        assert not any(text in response.text for text in [*theirs.personal, theirs.contact])
    refused = await post(site, client, f"/plans/{theirs.plan_id}/notes/new/add", text="Hei", visibility="professionals")
    assert refused.status_code == 404
    assert theirs.personal[0] not in refused.text
    with pytest.raises(InvalidStatus):
        await live(site, client, theirs.plan_id)
    # Their own plan is not theirs to open on the professionals' pages either (403: they know it exists).
    assert (await get(site, client, f"/plans/{mine.plan_id}")).status_code == 403
    with pytest.raises(InvalidStatus):
        await live(site, client, mine.plan_id)


# ---------------------------------------------------------------------------- non-disclosure


def contact_in(html: str, plan: ScenarioPlan) -> bool:
    return str(escape(plan.contact)) in html or plan.contact in html


async def test_a_non_disclosure_order_hides_the_contact_details_from_a_member_but_not_from_the_expert(
    site: AccessSite, sockets: list[ClientConnection]
) -> None:
    plan = await new_plan(site)
    base = f"/plans/{plan.plan_id}"
    aino, timo = await live(site, AINO, plan.plan_id), await live(site, TIMO, plan.plan_id)
    sockets += [aino, timo]
    # Without an order, everyone who may see the plan sees the details.
    assert contact_in((await get(site, TIMO, base)).text, plan)
    assert 'action="' + base + '/client/details/nondisclosure"' not in (await get(site, TIMO, base)).text

    toggle = await get(site, AINO, f"{base}/client/details/nondisclosure", htmx=True)
    assert toggle.status_code == 200
    ordered = await post(site, AINO, f"{base}/client/details/nondisclosure", active="true",
                         seen_revision=revision_of(site, plan.plan_id, "client", "details"))
    assert ordered.status_code == 200, ordered.text[:500]
    assert contact_in(ordered.text, plan)  # the expert's own answer

    # The live fragment: the same for every viewer, so it never carries the details...
    for socket in (aino, timo):
        update = await plan_update(socket)
        assert not contact_in(update, plan)
        assert f'hx-get="{base}/contact"' in update  # ...each browser fetches its own
    expert_view = await get(site, AINO, f"{base}/contact", htmx=True)
    member_view = await get(site, TIMO, f"{base}/contact", htmx=True)
    assert expert_view.status_code == member_view.status_code == 200
    assert contact_in(expert_view.text, plan) and not contact_in(member_view.text, plan)
    assert "nondisclosure" in expert_view.text and "nondisclosure" not in member_view.text

    # The page, the history (also of versions from before the order) and the forms.
    expert_page, member_page = (await get(site, AINO, base)).text, (await get(site, TIMO, base)).text
    assert contact_in(expert_page, plan) and not contact_in(member_page, plan)
    assert "non-disclosure-hidden" in member_page  # the member is told the details are hidden, and why
    assert "non-disclosure-badge" in member_page and "non-disclosure-badge" in expert_page
    for version in ("", "?at=1", f"?at={site.app.state.views.plan(plan.plan_id).version - 1}"):
        member_history = await get(site, TIMO, f"{base}/history{version}")
        assert member_history.status_code == 200 and not contact_in(member_history.text, plan), version
    assert contact_in((await get(site, AINO, f"{base}/history")).text, plan)
    assert (await get(site, TIMO, f"{base}/client/details/contact", htmx=True)).status_code == 403
    assert (await get(site, TIMO, f"{base}/client/details/nondisclosure", htmx=True)).status_code == 403
    refused = await post(site, TIMO, f"{base}/client/details/contact", contact="Arvaus",
                         seen_revision=revision_of(site, plan.plan_id, "client", "details"))
    assert refused.status_code == 403 and not contact_in(refused.text, plan)
    expert_form = await get(site, AINO, f"{base}/client/details/contact", htmx=True)
    assert expert_form.status_code == 200 and contact_in(expert_form.text, plan)

    # The expert records new details: they travel to nobody over the socket.
    new_contact = f"Uusi piilotie {uuid.uuid4().hex[:6]}"
    saved = await post(site, AINO, f"{base}/client/details/contact", contact=new_contact,
                       seen_revision=revision_of(site, plan.plan_id, "client", "details"))
    assert saved.status_code == 200 and new_contact in saved.text
    for socket in (aino, timo):
        assert new_contact not in await plan_update(socket)
    assert new_contact not in (await get(site, TIMO, base)).text
    assert new_contact in (await get(site, PEKKA, f"{base}/contact", htmx=True)).text  # the counterpart sees them
    assert new_contact not in (await get(site, SANNA, f"{base}/contact", htmx=True)).text  # a colleague does not

    # Lifted: everyone who may see the plan sees the details again.
    lifted = await post(site, PEKKA, f"{base}/client/details/nondisclosure", active="false",
                        seen_revision=revision_of(site, plan.plan_id, "client", "details"))
    assert lifted.status_code == 200, lifted.text[:500]
    member_page = (await get(site, TIMO, base)).text
    assert new_contact in member_page and "non-disclosure-badge" not in member_page


# ---------------------------------------------------------------------------- in a browser


@pytest.mark.browser
def test_the_live_update_fills_in_each_browsers_own_contact_details(site: AccessSite, browser: Any) -> None:
    """htmx swaps the live fragment in, and the placeholder fetches this viewer's own details."""
    from tests.web.identity_fixtures import TEST_PASSWORD

    plan = build_plan(site.service, "browser", non_disclosure=True)
    site.wait_for_views()
    pages: dict[str, Any] = {}
    try:
        for username in (AINO, TIMO):
            page = browser.new_page(locale="fi-FI")  # a context of its own: its own session
            page.goto(f"{site.base_url}/signin")
            page.fill("#username", username)
            page.fill("#password", TEST_PASSWORD)
            page.click("form button[type=submit] >> text=Kirjaudu")
            page.wait_for_url(f"{site.base_url}/caseload")
            page.goto(f"{site.base_url}/plans/{plan.plan_id}")
            page.fetched = []  # type: ignore[attr-defined]
            page.on("request", lambda request, page=page: page.fetched.append(request.url))
            pages[username] = page
        for page in pages.values():
            page.wait_for_selector("#presence li", timeout=5000)  # both connected: each sees the other
        # A change of the client's details sends the client panel (a change elsewhere leaves it be).
        current = site.app.state.views.plan(plan.plan_id)
        client = current.client
        site.service.change_client_details(
            plan.plan_id, by=_aino(), command_id=str(uuid.uuid4()), seen_revision=client.revision,
            client_name="Uusi Nimi Selaimessa", segment=client.segment, language=client.language,
            referring_party=client.referring_party,
        )
        for username, page in pages.items():
            page.wait_for_function(
                "v => Number(document.getElementById('live-version').dataset.version) > v", arg=current.version,
                timeout=5000)
            page.wait_for_selector("#client-contact:not([aria-busy])", timeout=5000)
            shown = page.inner_text("#client-contact")
            assert (plan.contact in shown) is (username == AINO), (username, shown)
            assert "Uusi Nimi Selaimessa" in page.inner_text("#panel-client")
            assert f"{site.base_url}/plans/{plan.plan_id}/contact" in page.fetched  # its own request
    finally:
        for page in pages.values():
            page.context.close()


def _aino() -> Any:
    from domain.demo import PEOPLE

    return PEOPLE["aino"][0]
