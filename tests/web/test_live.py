"""The live hub (web/live): a real uvicorn server, real websocket clients, real sign-in.

The people (accounts in the account store, with passwords, signed in through ``/signin``):

- Aino Virtanen, Pirkanmaan hyvinvointialue: opens the plans, so she is their named expert;
- Bert Berg, Kela: a member of each plan's network (the client consented to Kela);
- Carla Koski, Pirkanmaan hyvinvointialue: not in the network, but in the expert's
  organisation, so she may view the plan; she reads Swedish;
- Dan Dahl, Tampereen työllisyyspalvelut: neither, so he may not.

Every test opens a plan of its own. Edits go through the app's own PlanService (the same
path a plan page's POST takes); the hub sees them through the read model's listener.
"""

from __future__ import annotations

import asyncio
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import psycopg
import pytest
from litestar import Request, get
from litestar.params import FromPath
from litestar.response import Template
from markupsafe import escape
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection as SyncClientConnection
from websockets.sync.client import connect as sync_connect

from domain.items import KEPT_CHANGES
from domain.storage import StoreSettings
from domain.values import FINLAND, Actor, today_in_finland
from tests.web.conftest import TEST_SECRET_KEY, csrf_token_in, running
from tests.web.identity_fixtures import FAST_HASHER, add_account, with_identity
from tests.web.identity_fixtures import sign_in as identity_sign_in
from web import identity
from web.accounts import AccountStore
from web.live import LiveConnection, LiveHub, may_view, same_origin
from web.live.hub import KEPT_VERSIONS, PROFESSIONALS, SESSION_SWEEP_S
from web.live.messages import VERSION_MARKER_ID, decode_client_message, Editing, Resync
from web.live.presence import Presence, render_presence
from web.plan_page import PANEL_IDS, PLAN_PANELS, RECENT_CHANGES, recent_changes
from web.i18n import translations
from web.settings import Settings
from web.wiring import build_app

WITHIN = 1.0  # seconds: an edit reaches the other browsers within this
QUIET = 0.3  # seconds: how long "nothing more arrives" is watched, after a barrier


@dataclass(frozen=True)
class Person:
    username: str
    name: str
    organisation_id: str
    organisation_name: str
    language: str

    @property
    def actor(self) -> Actor:
        return Actor(
            person_id=self.username,
            name=self.name,
            organisation_id=self.organisation_id,
            organisation_name=self.organisation_name,
        )


AINO = Person("aino", "Aino Virtanen", "pirha", "Pirkanmaan hyvinvointialue", "fi")
BERT = Person("bert", "Bert Berg", "kela", "Kela", "fi")
CARLA = Person("carla", "Carla Koski", "pirha", "Pirkanmaan hyvinvointialue", "sv")
DAN = Person("dan", "Dan Dahl", "te", "Tampereen työllisyyspalvelut", "fi")
PEOPLE = (AINO, BERT, CARLA, DAN)


# ---------------------------------------------------------------------------- the renderer


class TinyPanels:
    """Needs and network only, replacing by id: the fragments of the browser test's page."""

    ids = ("panel-needs", "panel-network")

    def keys(self, plan: Any) -> dict[str, Any]:
        return {
            "panel-needs": tuple((n.id, n.revision, n.description) for n in plan.needs.values()),
            "panel-network": tuple((m.id, m.name) for m in plan.members.values()),
        }

    def render(self, _engine: Any, plan: Any, lang: str, ids: Any, _kept: Any) -> dict[str, str]:
        needs = "".join(
            f'<li id="need-{n.id}" data-revision="{n.revision}">{escape(n.description)}</li>' for n in plan.needs.values()
        )
        members = "".join(f'<li id="member-{m.id}">{escape(m.name)}</li>' for m in plan.members.values())
        texts = {
            "panel-needs": f'<section id="panel-needs" hx-swap-oob="true" lang="{lang}"><ul>{needs}</ul></section>',
            "panel-network": f'<section id="panel-network" hx-swap-oob="true" lang="{lang}"><ul>{members}</ul></section>',
        }
        return {panel: texts[panel] for panel in ids}


class CountingRenderer:
    """Wraps the hub's panels: counts renders by (plan id, version, language) and notes which
    panels each rendered; can hold them."""

    def __init__(self, panels: Any) -> None:
        self.panels = panels
        self.calls: Counter[tuple[str, int, str]] = Counter()
        self.rendered: list[tuple[str, int, str, tuple[str, ...]]] = []
        self.keyed: Counter[tuple[str, int]] = Counter()
        """How often the keys of (plan id, version) were worked out."""
        self.lock = threading.Lock()
        self.hold: threading.Event | None = None
        self.entered = threading.Event()

    @property
    def ids(self) -> tuple[str, ...]:
        return self.panels.ids

    def keys(self, plan: Any) -> Any:
        with self.lock:
            self.keyed[(str(plan.id), plan.version)] += 1
        return self.panels.keys(plan)

    def render(self, engine: Any, plan: Any, lang: str, ids: Any, kept: Any) -> Any:
        ids = tuple(ids)
        with self.lock:
            self.calls[(str(plan.id), plan.version, lang)] += 1
            self.rendered.append((str(plan.id), plan.version, lang, ids))
        hold = self.hold
        if hold is not None:
            self.entered.set()
            assert hold.wait(5), "the test never released the renderer"
        return self.panels.render(engine, plan, lang, ids, kept)

    def of_plan(self, plan_id: str) -> Counter[tuple[int, str]]:
        with self.lock:
            return Counter({(v, lang): n for (p, v, lang), n in self.calls.items() if p == plan_id})


# ---------------------------------------------------------------------------- the server


@dataclass
class LiveServer:
    base_url: str
    app: Any
    renderer: CountingRenderer
    cookies: dict[str, str]

    @property
    def hub(self) -> LiveHub:
        return self.app.state.live_hub

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http")

    def open_plan(self) -> str:
        plans = self.app.state.plans
        outcome = plans.open_plan(
            by=AINO.actor,
            command_id=str(uuid.uuid4()),
            client_name="Matti Meikäläinen",
            segment="unemployed",
            language="fi",
            referring_party="self_referral",
            expert_profession="sairaanhoitaja",
        )
        plan_id = outcome.plan_id
        plans.give_consent(
            plan_id, by=AINO.actor, command_id=str(uuid.uuid4()),
            organisation_id=BERT.organisation_id, organisation_name=BERT.organisation_name,
            valid_from="2026-11-01",
        )
        last = plans.add_member(
            plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), person_id=BERT.username, name=BERT.name,
            profession="etuuskäsittelijä", organisation_id=BERT.organisation_id,
            organisation_name=BERT.organisation_name,
        )
        self.caught_up(last.position)
        return plan_id

    def record_need(self, plan_id: str, description: str, by: Person = AINO) -> Any:
        outcome = self.app.state.plans.record_need(
            plan_id, by=by.actor, command_id=str(uuid.uuid4()), category="health", description=description
        )
        return outcome

    def version_of(self, plan_id: str) -> int:
        return self.app.state.views.plan(plan_id).version

    def caught_up(self, position: int) -> None:
        assert self.app.state.views.wait_for(position, timeout=5), "the read model did not catch up"

    async def socket(
        self, plan_id: str, person: Person | None, *, version: int | str | None = None, origin: str | None = None
    ) -> ClientConnection:
        query = "" if version is None else f"?version={version}"
        headers = {}
        if person is not None:
            cookies = {**self.cookies_of(person), "lang": person.language}
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in cookies.items())
        return await connect(
            f"{self.ws_url}/plans/{plan_id}/live{query}",
            origin=origin or self.base_url,  # type: ignore[arg-type]
            additional_headers=headers,
            open_timeout=5,
            close_timeout=2,
        )

    def cookies_of(self, person: Person) -> dict[str, str]:
        if person.username not in self.cookies:
            self.cookies[person.username] = sign_in(self.base_url, person)
        return {"polku_session": self.cookies[person.username]}


def sign_in(base_url: str, person: Person) -> str:
    """Sign in through the sign-in form; returns the session cookie."""
    with httpx.Client(timeout=10) as http:
        identity_sign_in(http, base_url, person.username)
        return http.cookies["polku_session"]


@contextmanager
def serving(data_dir: Path) -> Iterator[LiveServer]:
    """The whole Polku app over a fresh store in ``data_dir``, with the people, served by uvicorn.

    The hub renders with its own panels (the plan page's) through a :class:`CountingRenderer`.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    accounts = AccountStore.sqlite(data_dir / "accounts.sqlite3", hasher=FAST_HASHER)
    try:
        for person in PEOPLE:
            add_account(
                accounts, person.username, name=person.name, profession="asiantuntija",
                organisation=(person.organisation_id, person.organisation_name, "other"),
            )
        app = build_app(Settings(secret_key=TEST_SECRET_KEY, data_dir=data_dir), StoreSettings(data_dir=str(data_dir)))
        with_identity(app, accounts)
        app.register(live_test_page)
        if not any(route.path == "/signin" for route in app.routes):  # until web.wiring has them
            for handler in identity.route_handlers:
                app.register(handler)
        with running(app) as base_url:
            renderer = CountingRenderer(app.state.live_hub.panels)
            app.state.live_hub.panels = renderer
            hub_loop = app.state.live_hub.loop
            asyncio.run_coroutine_threadsafe(app.state.live_hub.warmed_up(), hub_loop).result(timeout=30)
            yield LiveServer(base_url=base_url, app=app, renderer=renderer, cookies={})
    finally:
        accounts.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with serving(tmp_path_factory.mktemp("live")) as server:
        yield server


# ---------------------------------------------------------------------------- helpers


async def receive(socket: ClientConnection, wanted: Callable[[str], bool], timeout: float = WITHIN) -> str:
    """The first message that is ``wanted`` (others are skipped), within ``timeout``."""
    async with asyncio.timeout(timeout):
        while True:
            message = await socket.recv()
            assert isinstance(message, str)
            if wanted(message):
                return message


def is_plan_update(message: str) -> bool:
    return f'id="{VERSION_MARKER_ID}"' in message


def is_presence(message: str) -> bool:
    return message.startswith('<div id="presence"')


def version_in(message: str) -> int:
    match = re.search(r'data-version="(\d+)"', message)
    assert match, message
    return int(match.group(1))


def containing(text: str) -> Callable[[str], bool]:
    return lambda message: is_plan_update(message) and str(escape(text)) in message


async def closed_with(socket: ClientConnection, timeout: float = WITHIN) -> int | None:
    """The close code the server closed ``socket`` with (messages before it are skipped)."""
    async with asyncio.timeout(timeout):
        try:
            while True:
                await socket.recv()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd else None


@pytest.fixture
async def sockets() -> AsyncIterator[list[ClientConnection]]:
    """Sockets a test opened (append them): closed after the test."""
    opened: list[ClientConnection] = []
    yield opened
    for socket in opened:
        await socket.close()


async def joined(socket: ClientConnection) -> list[str]:
    """What ``socket`` receives on connecting, up to and including its first presence fragment.

    The hub queues a browser's catch-up (if it is behind) before the presence it sends
    everyone when someone joins.
    """
    messages = []
    async with asyncio.timeout(WITHIN):
        while True:
            message = await socket.recv()
            assert isinstance(message, str)
            messages.append(message)
            if is_presence(message):
                return messages


# ---------------------------------------------------------------------------- fan-out


async def test_an_edit_reaches_every_viewer_rendered_once_per_language(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    version = live.version_of(plan_id)
    aino, bert, carla = [await live.socket(plan_id, p, version=version) for p in (AINO, BERT, CARLA)]
    sockets += [aino, bert, carla]
    for socket in (aino, bert, carla):
        assert not any(is_plan_update(m) for m in await joined(socket))

    outcome = live.record_need(plan_id, "Selkäkipu haittaa työnhakua")

    received = await asyncio.gather(
        *(receive(s, containing("Selkäkipu haittaa työnhakua")) for s in (aino, bert, carla))
    )
    assert {version_in(m) for m in received} == {outcome.version}
    assert received[0] == received[1], "viewers of one language get the same bytes"
    assert translations("sv").gettext("Needs") in received[2]
    assert translations("fi").gettext("Needs") in received[0]
    assert live.renderer.of_plan(plan_id)[(outcome.version, "fi")] == 1
    assert live.renderer.of_plan(plan_id)[(outcome.version, "sv")] == 1
    assert live.renderer.keyed[(plan_id, outcome.version)] == 1, "the keys do not depend on the language"


async def test_a_burst_of_edits_is_rendered_once_at_the_latest_state(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    bert = await live.socket(plan_id, BERT, version=live.version_of(plan_id))
    sockets.append(bert)
    await joined(bert)
    applied = threading.Event()
    target = {"position": 0}
    loop = live.hub.loop
    assert loop is not None

    def after_the_hub(changed: str | None, position: int) -> None:
        # Called after the hub's listener, in the projection thread; the callback below runs
        # on the hub's loop after the hub's own notice for the same position.
        if changed == plan_id and position >= target["position"] > 0:
            loop.call_soon_threadsafe(applied.set)

    live.app.state.views.add_listener(after_the_hub)
    release = threading.Event()
    live.renderer.entered.clear()
    live.renderer.hold = release
    try:
        first = live.record_need(plan_id, "Ensimmäinen tarve")
        assert await asyncio.to_thread(live.renderer.entered.wait, 5), "the hub did not start rendering"
        # While the first change is being rendered, three more arrive.
        for description in ("Toinen tarve", "Kolmas tarve"):
            live.record_need(plan_id, description)
        last = live.record_need(plan_id, "Neljäs tarve")
        target["position"] = last.position
        live.caught_up(last.position)
        assert await asyncio.to_thread(applied.wait, 5)
    finally:
        live.renderer.hold = None
        release.set()

    update = await receive(bert, containing("Neljäs tarve"))
    assert version_in(update) == last.version
    assert all(text in update for text in ("Ensimmäinen tarve", "Toinen tarve", "Kolmas tarve"))
    renders = live.renderer.of_plan(plan_id)
    assert renders == Counter({(first.version, "fi"): 1, (last.version, "fi"): 1}), renders


async def test_a_browser_with_an_old_version_gets_the_current_plan_on_connecting(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    old_version = live.version_of(plan_id)
    live.record_need(plan_id, "Univaikeudet")
    outcome = live.record_need(plan_id, "Velkaantuminen")
    live.caught_up(outcome.position)

    bert = await live.socket(plan_id, BERT, version=old_version)
    sockets.append(bert)
    messages = await joined(bert)

    updates = [m for m in messages if is_plan_update(m)]
    assert len(updates) == 1
    assert version_in(updates[0]) == outcome.version
    assert "Univaikeudet" in updates[0] and "Velkaantuminen" in updates[0]
    assert 'hx-swap-oob="true"' in updates[0] and "beforeend" not in updates[0]


async def test_a_browser_with_the_current_version_gets_nothing_extra(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    outcome = live.record_need(plan_id, "Univaikeudet")
    live.caught_up(outcome.position)
    renders_before = live.renderer.of_plan(plan_id)

    bert = await live.socket(plan_id, BERT, version=outcome.version)
    sockets.append(bert)
    assert [is_presence(m) for m in await joined(bert)] == [True]
    # Someone else joins: Bert is told, and nothing else was sent to him before that.
    aino = await live.socket(plan_id, AINO, version=outcome.version)
    sockets.append(aino)
    await joined(aino)
    next_message = await receive(bert, lambda message: True)
    assert is_presence(next_message) and AINO.name in next_message
    assert live.renderer.of_plan(plan_id) == renders_before


async def test_a_browser_without_a_version_gets_the_current_plan(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    bert = await live.socket(plan_id, BERT)
    sockets.append(bert)
    messages = await joined(bert)
    assert is_plan_update(messages[0]) and version_in(messages[0]) == live.version_of(plan_id)


@pytest.mark.parametrize("version", ["%C2%B2", "9" * 5000])
async def test_a_version_that_only_looks_like_a_number_counts_as_none(
    live: LiveServer, sockets: list[ClientConnection], version: str
) -> None:
    """"²" passes ``str.isdigit`` but not ``int``, nor do 5,000 digits: no 500, the current plan."""
    plan_id = live.open_plan()
    bert = await live.socket(plan_id, BERT, version=version)
    sockets.append(bert)
    messages = await joined(bert)
    assert is_plan_update(messages[0]) and version_in(messages[0]) == live.version_of(plan_id)


def oob_ids(message: str) -> list[str]:
    """The ids of a message's top-level (out-of-band) elements, in order."""
    return re.findall(r'<\w+ id="([\w-]+)"[^>]*hx-swap-oob=', message)


def plan_step(live: LiveServer, plan_id: str, title: str) -> Any:
    plan = live.app.state.views.plan(plan_id)
    day = today_in_finland() + timedelta(days=7)
    return live.app.state.plans.plan_step(
        plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), title=title, need_id=next(iter(plan.needs)),
        responsible_member_id=plan.expert.id, planned_start=day, planned_end=day + timedelta(days=14),
    )


async def test_an_update_carries_only_the_panels_the_change_touched(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    first = live.record_need(plan_id, "Uniongelmat")
    live.caught_up(first.position)
    bert = await live.socket(plan_id, BERT, version=first.version)
    sockets.append(bert)
    await joined(bert)

    note = live.app.state.plans.add_note(
        plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), text="Soitettu asiakkaalle", visibility="professionals"
    )
    update = await receive(bert, containing("Soitettu asiakkaalle"))
    assert version_in(update) == note.version
    assert oob_ids(update) == [VERSION_MARKER_ID, "panel-notes", "panel-history"]

    step = plan_step(live, plan_id, "Kuntoutustutkimus")
    update = await receive(bert, containing("Kuntoutustutkimus"))
    assert version_in(update) == step.version
    assert oob_ids(update) == [VERSION_MARKER_ID, "panel-timeline", "panel-steps", "panel-history"]
    rendered = [ids for p, version, _, ids in live.renderer.rendered if p == plan_id and version == step.version]
    assert rendered == [("panel-timeline", "panel-steps", "panel-history")], "only the changed panels are rendered"


async def test_a_browser_behind_gets_what_it_missed_and_one_further_behind_everything(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    opened = live.version_of(plan_id)
    aino = await live.socket(plan_id, AINO, version=opened)
    sockets.append(aino)
    await joined(aino)
    need = live.record_need(plan_id, "Selkäkipu")
    await receive(aino, containing("Selkäkipu"))
    step = plan_step(live, plan_id, "Fysioterapia")
    await receive(aino, containing("Fysioterapia"))

    # Bert's page shows the version of the need: he misses the step, and only that.
    bert = await live.socket(plan_id, BERT, version=need.version)
    sockets.append(bert)
    missed = [m for m in await joined(bert) if is_plan_update(m)]
    assert len(missed) == 1 and version_in(missed[0]) == step.version
    assert oob_ids(missed[0]) == [VERSION_MARKER_ID, "panel-timeline", "panel-steps", "panel-history"]

    # Carla's page is older than any version the hub remembers: she gets every panel.
    carla = await live.socket(plan_id, CARLA, version=1)
    sockets.append(carla)
    everything = [m for m in await joined(carla) if is_plan_update(m)]
    assert len(everything) == 1 and oob_ids(everything[0]) == [VERSION_MARKER_ID, *PANEL_IDS]
    assert "Selkäkipu" in everything[0] and "Fysioterapia" in everything[0]

    # Asking to resync (after a kept draft) gives every panel too.
    await bert.send('{"type": "resync"}')
    again = await receive(bert, is_plan_update)
    assert oob_ids(again) == [VERSION_MARKER_ID, *PANEL_IDS]


def test_a_panel_whose_key_is_unchanged_renders_the_same(live: LiveServer) -> None:
    """The panels' keys name everything their text depends on: after each kind of change,
    every panel whose key stayed the same renders byte for byte as before."""
    plans = live.app.state.plans
    plan_id = live.open_plan()
    need = live.record_need(plan_id, "Velat")
    goal = plans.set_goal(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), title="Velkaneuvonta",
                          need_ids=[need.item_id], target_date=today_in_finland() + timedelta(days=60))
    live.caught_up(goal.position)
    step = plan_step(live, plan_id, "Talousneuvonta")
    live.caught_up(step.position)
    bert_id = next(m.id for m in live.app.state.views.plan(plan_id).members.values() if m.person_id == BERT.username)

    def revision(kind: str, item_id: str) -> int:
        return getattr(live.app.state.views.plan(plan_id), kind)[item_id].revision

    changes = [
        lambda: plans.update_need(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), need_id=need.item_id,
                                  category="everyday_life", description="Velat <kasvavat>", financial="",
                                  status="open", seen_revision=revision("needs", need.item_id)),
        lambda: plans.revise_goal(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), goal_id=goal.item_id,
                                  title="Velkajärjestely", need_ids=[need.item_id],
                                  target_date=today_in_finland() + timedelta(days=90),
                                  seen_revision=revision("goals", goal.item_id)),
        lambda: plans.update_member(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), member_id=bert_id,
                                    profession="etuusasiantuntija", contact="", part="toimeentulo",
                                    seen_revision=revision("members", bert_id)),
        lambda: plans.record_measure(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()),
                                     kind="work_ability_score", value=6, measured_on=today_in_finland()),
        lambda: plans.add_note(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), text="Muistiinpano",
                               visibility="client_and_professionals"),
        lambda: plans.name_counterpart(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), member_id=bert_id,
                                       seen_revision=live.app.state.views.plan(plan_id).responsibility.revision),
    ]
    engine = live.app.template_engine
    before = live.app.state.views.plan(plan_id)
    for change in changes:
        live.caught_up(change().position)
        after = live.app.state.views.plan(plan_id)
        keys_before, keys_after = PLAN_PANELS.keys(before), PLAN_PANELS.keys(after)
        texts_before = PLAN_PANELS.render(engine, before, "fi", PANEL_IDS)
        texts_after = PLAN_PANELS.render(engine, after, "fi", PANEL_IDS)
        for panel in PANEL_IDS:
            if keys_before[panel] == keys_after[panel]:
                assert texts_before[panel] == texts_after[panel], (panel, after.version)
        assert keys_before["panel-history"] != keys_after["panel-history"]
        before = after


def test_the_latest_changes_are_worked_out_only_for_what_shows_them(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item or another panel rendered alone does not go through the plan's whole history;
    the history panel (and a whole page) does, once a render."""
    import web.plan_page

    plan_id = live.open_plan()
    need = live.record_need(plan_id, "Velat")
    live.caught_up(need.position)
    plan = live.app.state.views.plan(plan_id)
    engine = live.app.template_engine
    counted = Counter[str]()
    worked_out = web.plan_page.recent_changes

    def counting(*args: Any, **kwargs: Any) -> Any:
        counted["calls"] += 1
        return worked_out(*args, **kwargs)

    monkeypatch.setattr(web.plan_page, "recent_changes", counting)
    PLAN_PANELS.render(engine, plan, "fi", [f"need-{need.item_id}", "panel-needs", "panel-goals"])
    assert counted["calls"] == 0
    texts = PLAN_PANELS.render(engine, plan, "fi", PANEL_IDS)
    assert counted["calls"] == 1
    assert "Velat" in texts["panel-history"]


def test_the_latest_changes_are_the_newest_of_every_kind_in_words(live: LiveServer) -> None:
    """Only the newest few are put into words, newest first, whatever kind of item they are."""
    from web.plan_page import RECENT_CHANGES, recent_changes

    plans = live.app.state.plans
    plan_id = live.open_plan()
    for number in range(RECENT_CHANGES):
        live.record_need(plan_id, f"Tarve {number}")
    note = plans.add_note(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), text="Muistiinpano",
                          visibility="client_and_professionals")
    live.caught_up(note.position)
    plan = live.app.state.views.plan(plan_id)
    gettext = translations("fi").gettext
    every = recent_changes(plan, gettext, limit=1000)
    assert len(every) > RECENT_CHANGES
    assert [change.at for change in every] == sorted((change.at for change in every), reverse=True)
    assert recent_changes(plan, gettext) == every[:RECENT_CHANGES]
    newest = every[0]
    assert (newest.what, newest.action, newest.by_name) == (gettext("note"), gettext("written"), AINO.name)
    assert any(change.title == f"Tarve {RECENT_CHANGES - 1}" and change.anchor.startswith("need-") for change in every)


class _Elements(HTMLParser):
    """Where each element with an id starts and ends in a text, and which are top-level."""

    VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=False)
        self.starts = [0]
        for line in text.splitlines(keepends=True):
            self.starts.append(self.starts[-1] + len(line))
        self.open: list[tuple[str, str | None, int]] = []
        self.spans: dict[str, tuple[int, int]] = {}
        self.top: list[str] = []
        self.feed(text)
        self.close()

    def _here(self) -> int:
        line, column = self.getpos()
        return self.starts[line - 1] + column

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        element_id = dict(attrs).get("id")
        start = self._here()
        if tag in self.VOID:
            if element_id:
                self._found(element_id, start, start + len(self.get_starttag_text() or ""), depth=len(self.open))
            return
        self.open.append((tag, element_id, start))

    def handle_endtag(self, tag: str) -> None:
        while self.open:
            opened, element_id, start = self.open.pop()
            if opened == tag:
                if element_id:
                    self._found(element_id, start, self._here() + len(f"</{tag}>"), depth=len(self.open))
                return

    def _found(self, element_id: str, start: int, end: int, depth: int) -> None:
        self.spans[element_id] = (start, end)
        if depth == 0:
            self.top.append(element_id)


def top_ids(message: str) -> list[str]:
    """The ids of a message's top-level elements (each swapped by its id), in order."""
    return _Elements(message).top


def update_from(rendition: Any, engine: Any, plan: Any, language: str, shown: Any) -> str:
    """The rendition's update for a browser showing ``shown`` (None: nothing known), rendering
    first what it misses, as the hub does."""
    since = PLAN_PANELS.keys(shown) if shown is not None else None
    if rendition.update(since) is None:
        rendition.add(PLAN_PANELS.render(engine, plan, language, rendition.missing(since), rendition.kept))
    message = rendition.update(since)
    assert message is not None
    return message


def applied(page: dict[str, str], message: str) -> dict[str, str]:
    """The panels ``page`` once a live ``message`` is swapped into them as the ws extension
    does: each top-level element replaces the element with its id (a panel, or an item in one)."""
    elements = _Elements(message)
    page = dict(page)
    for element_id in elements.top:
        start, end = elements.spans[element_id]
        text = message[start:end]
        if element_id == VERSION_MARKER_ID:
            continue
        if element_id in PANEL_IDS:
            page[element_id] = text
            continue
        holders = [panel for panel, html in page.items() if f'id="{element_id}"' in html]
        assert len(holders) == 1, (element_id, holders)
        held = _Elements(page[holders[0]]).spans[element_id]
        page[holders[0]] = page[holders[0]][: held[0]] + text + page[holders[0]][held[1]:]
    return page


def test_an_update_shows_what_a_full_render_shows(live: LiveServer) -> None:
    """Whatever version a browser shows (within those the hub remembers), the hub's update
    swapped into its page gives, byte for byte, the page a full render of the new version
    gives: items changed in place sent alone, panels whose items moved, came or went whole."""
    plans = live.app.state.plans
    plan_id = live.open_plan()
    need = live.record_need(plan_id, "Velat")
    other = live.record_need(plan_id, "Uni")
    goal = plans.set_goal(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), title="Velkaneuvonta",
                          need_ids=[need.item_id], target_date=today_in_finland() + timedelta(days=60))
    live.caught_up(goal.position)
    step = plan_step(live, plan_id, "Talousneuvonta")
    live.caught_up(step.position)
    step_need = live.app.state.views.plan(plan_id).steps[step.item_id].need_id
    bert_id = next(m.id for m in live.app.state.views.plan(plan_id).members.values() if m.person_id == BERT.username)

    def revision(kind: str, item_id: str) -> int:
        return getattr(live.app.state.views.plan(plan_id), kind)[item_id].revision

    def update_need(need_id: str, category: str, description: str) -> Any:
        return plans.update_need(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), need_id=need_id,
                                 category=category, description=description, financial="",
                                 status="open", seen_revision=revision("needs", need_id))

    changes = [
        lambda: update_need(need.item_id, "health", "Velat <kasvavat> & 'lisääntyvät'"),
        lambda: update_need(step_need, live.app.state.views.plan(plan_id).needs[step_need].category, "Tarve askeleelle"),
        lambda: update_need(other.item_id, "everyday_life", "Uni siirtyy"),  # moves to another category
        lambda: plans.revise_goal(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), goal_id=goal.item_id,
                                  title="Velkajärjestely", need_ids=[need.item_id, other.item_id],
                                  target_date=today_in_finland() + timedelta(days=90),
                                  seen_revision=revision("goals", goal.item_id)),
        lambda: plans.update_member(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), member_id=bert_id,
                                    profession="etuusasiantuntija", contact="", part="toimeentulo",
                                    seen_revision=revision("members", bert_id)),
        lambda: plan_step(live, plan_id, "Toinen askel"),
        lambda: plans.name_counterpart(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), member_id=bert_id,
                                       seen_revision=live.app.state.views.plan(plan_id).responsibility.revision),
    ]
    engine = live.app.template_engine
    hub = live.hub
    versions = [live.app.state.views.plan(plan_id)]
    alone: set[str] = set()
    for change in changes:
        live.caught_up(change().position)
        versions.append(live.app.state.views.plan(plan_id))
    for language in ("fi", "sv"):
        previous = None
        for index, plan in enumerate(versions):
            rendition = hub._render(plan, language, PROFESSIONALS, previous)
            full = PLAN_PANELS.render(engine, plan, language, PANEL_IDS)
            for shown in [*versions[:index], None]:
                message = update_from(rendition, engine, plan, language, shown)
                page = PLAN_PANELS.render(engine, shown, language, PANEL_IDS) if shown is not None else {}
                assert applied(page, message) == full, (language, shown and shown.version, plan.version)
                alone.update(element for element in top_ids(message) if element not in PANEL_IDS)
                rendition._updates.clear()  # the next one is from another version
            previous = rendition
    assert {f"need-{need.item_id}", f"goal-{goal.item_id}", f"step-{step.item_id}", f"member-{bert_id}"} <= alone
    assert "&lt;kasvavat&gt; &amp; &#39;lisääntyvät&#39;" in PLAN_PANELS.render(engine, versions[1], "fi", [f"need-{need.item_id}"])[f"need-{need.item_id}"]


def busy_plan(live: LiveServer) -> list[Any]:
    """A plan that went through more than its page shows, each of its versions as the read
    model had it: a need edited more often than the read model keeps an item's changes
    (retitled every third time), more notes than the latest changes list, measures
    recorded for earlier days in no order, then a goal and a step on another need."""
    plans = live.app.state.plans
    plan_id = live.open_plan()
    versions = []

    def done(outcome: Any) -> Any:
        live.caught_up(outcome.position)
        versions.append(live.app.state.views.plan(plan_id))
        return outcome

    debts, sleep = done(live.record_need(plan_id, "Velat")), done(live.record_need(plan_id, "Uni"))
    for number in range(KEPT_CHANGES + 4):
        need = live.app.state.views.plan(plan_id).needs[debts.item_id]
        title = f"Velat, kierros {number}" if number % 3 == 0 else need.description
        done(plans.update_need(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), need_id=debts.item_id,
                               category="health", description=title, financial=f"Tulot {number}", status="open",
                               seen_revision=need.revision))
        if number % 2:
            done(plans.add_note(plan_id, by=BERT.actor if number % 4 == 1 else AINO.actor, command_id=str(uuid.uuid4()),
                                text=f"Muistiinpano {number}", visibility="client_and_professionals"))
        else:
            done(plans.record_measure(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), kind="work_ability_score",
                                      value=number % 11,
                                      measured_on=today_in_finland() - timedelta(days=1 + (number * 7) % 23)))
    done(plans.set_goal(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), title="Hyvä uni",
                        need_ids=[sleep.item_id], target_date=today_in_finland() + timedelta(days=30)))
    plan = live.app.state.views.plan(plan_id)
    day = today_in_finland() + timedelta(days=3)
    done(plans.plan_step(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), title="Unikoulu", need_id=sleep.item_id,
                         responsible_member_id=plan.expert.id, planned_start=day, planned_end=day + timedelta(days=9)))
    return versions


def every_change_newest_first(plan: Any) -> list[tuple[Any, str]]:
    """(when, the item's element id) of everything the plan keeps of its history, newest first:
    the latest changes worked out the long way."""
    found = [(change.at, "client-details") for change in plan.client.changes]
    found += [(change.at, "panel-network") for change in plan.responsibility.changes]
    for prefix, part in (("need", "needs"), ("goal", "goals"), ("member", "members"), ("consent", "consents"),
                         ("step", "steps")):
        found += [(change.at, f"{prefix}-{item.id}") for item in getattr(plan, part).values() for change in item.changes]
    found += [(datetime.combine(m.measured_on, datetime.min.time().replace(hour=12), FINLAND), f"measure-{m.id}")
              for m in plan.measures]
    found += [(note.written_at, f"note-{note.id}") for note in plan.notes]
    found += [(handover.proposed_at, f"handover-{handover.id}") for handover in plan.handovers]
    return sorted(found, key=lambda entry: entry[0], reverse=True)


def test_the_latest_changes_of_a_long_history_are_its_newest(live: LiveServer) -> None:
    """Only the last few of each list are looked at, and they are the newest of all, at
    every version: of an item edited past what it keeps, of many notes, of measures
    recorded for earlier days."""
    versions = busy_plan(live)
    last = versions[-1]
    assert max(len(need.changes) for need in last.needs.values()) == KEPT_CHANGES > RECENT_CHANGES
    assert len(last.notes) > RECENT_CHANGES and len(last.measures) > RECENT_CHANGES
    gettext = translations("fi").gettext
    for plan in versions:
        newest = [(change.at, change.anchor) for change in recent_changes(plan, gettext)]
        assert newest == every_change_newest_first(plan)[:RECENT_CHANGES], plan.version
    assert [change.anchor for change in recent_changes(last, gettext)][:2] == [
        f"step-{next(iter(last.steps))}", f"goal-{next(iter(last.goals))}"
    ]


def test_a_long_history_reaches_a_browser_several_versions_behind_as_a_full_render_shows_it(live: LiveServer) -> None:
    """The hub renders the latest changes with the entries it kept from the previous version
    (only the new entry and those of a retitled item are rendered again); whatever version
    within those it remembers a browser shows, the update swapped into its page gives, byte
    for byte, the page a fresh render of the new version gives, in each language."""
    versions = busy_plan(live)[-(KEPT_VERSIONS + 12):]
    engine = live.app.template_engine
    for language in ("fi", "sv"):
        previous = None
        reused = 0
        for index, plan in enumerate(versions):
            rendition = live.hub._render(plan, language, PROFESSIONALS, previous)
            kept_before = dict(rendition.kept.get(("panel-history", language), {}))
            full = PLAN_PANELS.render(engine, plan, language, PANEL_IDS)
            behind = sorted({index - back for back in (1, 2, 5, KEPT_VERSIONS - 1) if back <= index})
            for shown in [*(versions[earlier] for earlier in behind), None]:
                message = update_from(rendition, engine, plan, language, shown)
                page = PLAN_PANELS.render(engine, shown, language, PANEL_IDS) if shown is not None else {}
                assert applied(page, message) == full, (language, shown and shown.version, plan.version)
                rendition._updates.clear()
            entries = rendition.kept[("panel-history", language)]
            assert len(entries) == RECENT_CHANGES
            again = [change for change in entries if change in kept_before]
            assert all(entries[change] is kept_before[change] for change in again), "a kept entry is rendered again"
            reused += len(again)
            previous = rendition
        assert reused > (len(versions) - 1) * RECENT_CHANGES // 2


async def test_an_edit_in_place_sends_the_changed_items_alone(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    """A need's new description: the need, the goal and the step that name it, and the latest
    changes, each rendered once; a browser further behind gets every panel."""
    plans = live.app.state.plans
    plan_id = live.open_plan()
    need = live.record_need(plan_id, "Velat")
    goal = plans.set_goal(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), title="Velkaneuvonta",
                          need_ids=[need.item_id], target_date=today_in_finland() + timedelta(days=60))
    live.caught_up(goal.position)
    plan = live.app.state.views.plan(plan_id)
    day = today_in_finland() + timedelta(days=7)
    step = plans.plan_step(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), title="Talousneuvonta",
                           need_id=need.item_id, responsible_member_id=plan.expert.id,
                           planned_start=day, planned_end=day + timedelta(days=14))
    live.caught_up(step.position)
    bert = await live.socket(plan_id, BERT, version=step.version)
    sockets.append(bert)
    await joined(bert)

    edit = plans.update_need(plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), need_id=need.item_id,
                             category="health", description="Velat <kasvavat>", financial="", status="open",
                             seen_revision=live.app.state.views.plan(plan_id).needs[need.item_id].revision)
    update = await receive(bert, containing("Velat <kasvavat>"))
    assert version_in(update) == edit.version
    items = [f"need-{need.item_id}", f"goal-{goal.item_id}", f"step-{step.item_id}"]
    assert top_ids(update) == [VERSION_MARKER_ID, *items, "panel-history"]
    rendered = [ids for p, version, _, ids in live.renderer.rendered if p == plan_id and version == edit.version]
    assert rendered == [(*items, "panel-history")], "only the changed items and panels are rendered"

    # A browser further behind than the hub remembers gets every panel whole, rendered once.
    carla = await live.socket(plan_id, CARLA, version=need.version)
    sockets.append(carla)
    behind = [m for m in await joined(carla) if is_plan_update(m)]
    assert top_ids(behind[0]) == [VERSION_MARKER_ID, *PANEL_IDS]
    assert "Velat &lt;kasvavat&gt;" in behind[0]


# ---------------------------------------------------------------------------- presence


async def test_presence_tells_the_others_who_is_here_and_what_they_edit(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    version = live.version_of(plan_id)
    bert = await live.socket(plan_id, BERT, version=version)
    sockets.append(bert)
    alone = (await joined(bert))[-1]
    assert BERT.name not in alone and "<ul" not in alone

    aino = await live.socket(plan_id, AINO, version=version)
    sockets.append(aino)
    aino_sees = (await joined(aino))[-1]
    assert BERT.name in aino_sees and "Kela" in aino_sees and AINO.name not in aino_sees
    assert AINO.name in await receive(bert, is_presence)

    await aino.send('{"type": "editing", "item": "need-1234"}')
    editing = await receive(bert, lambda m: is_presence(m) and 'data-editing="need-1234"' in m)
    assert f"{AINO.name} ({AINO.organisation_name})" in editing

    carla = await live.socket(plan_id, CARLA, version=version)
    sockets.append(carla)
    in_swedish = (await joined(carla))[-1]
    assert 'data-editing="need-1234"' in in_swedish and AINO.name in in_swedish and BERT.name in in_swedish

    await aino.send('{"type": "editing", "item": null}')
    stopped = await receive(bert, lambda m: is_presence(m) and "data-editing" not in m)
    assert AINO.name in stopped

    await aino.close()
    gone = await receive(bert, lambda m: is_presence(m) and AINO.name not in m)
    assert CARLA.name in gone


async def test_messages_that_are_not_ours_are_ignored(live: LiveServer, sockets: list[ClientConnection]) -> None:
    plan_id = live.open_plan()
    version = live.version_of(plan_id)
    bert = await live.socket(plan_id, BERT, version=version)
    aino = await live.socket(plan_id, AINO, version=version)
    sockets += [bert, aino]
    await joined(bert)
    await joined(aino)
    await receive(bert, lambda m: is_presence(m) and AINO.name in m)
    for nonsense in ("hello", "{}", '{"type": "editing", "item": "<script>"}', '{"type": "shout"}'):
        await aino.send(nonsense)
    await aino.send('{"type": "editing", "item": "goal-1"}')
    # The first thing Bert hears of Aino after the nonsense is the real message.
    assert 'data-editing="goal-1"' in await receive(bert, is_presence)


# ---------------------------------------------------------------------------- refusals


async def test_a_foreign_origin_is_refused(live: LiveServer) -> None:
    plan_id = live.open_plan()
    for origin in ("http://evil.example", live.base_url.replace("127.0.0.1", "localhost"), "null"):
        with pytest.raises(InvalidStatus) as refused:
            await live.socket(plan_id, AINO, origin=origin)
        assert refused.value.response.status_code == 403


async def test_a_socket_without_a_session_is_refused(live: LiveServer) -> None:
    plan_id = live.open_plan()
    with pytest.raises((InvalidStatus, ConnectionClosed)) as refused:
        socket = await live.socket(plan_id, None)
        await socket.recv()  # a server may also accept and close at once (4401)
    if isinstance(refused.value, InvalidStatus):
        assert refused.value.response.status_code in (401, 403)
    else:
        assert refused.value.rcvd is not None and refused.value.rcvd.code in (1008, 4401)


async def test_someone_outside_the_plan_is_refused(live: LiveServer) -> None:
    plan_id = live.open_plan()
    with pytest.raises(InvalidStatus) as refused:
        await live.socket(plan_id, DAN)
    assert refused.value.response.status_code == 403
    with pytest.raises(InvalidStatus):
        await live.socket(str(uuid.uuid4()), AINO)  # no such plan
    with pytest.raises(InvalidStatus):
        await live.socket("not-a-plan-id", AINO)


def database_out(live: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """From now on the read model cannot be reached (as while PostgreSQL restarts)."""

    def unreachable(plan_id: str) -> Any:
        raise psycopg.OperationalError("the database system is starting up")

    monkeypatch.setattr(live.app.state.views, "plan", unreachable)


async def test_a_database_outage_refuses_the_handshake_to_try_again_not_as_forbidden(
    live: LiveServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_id = live.open_plan()
    database_out(live, monkeypatch)
    with pytest.raises(InvalidStatus) as refused:
        await live.socket(plan_id, BERT)
    assert refused.value.response.status_code == 503
    assert refused.value.response.headers["Retry-After"] == "2"


async def test_a_database_outage_while_connected_closes_to_reconnect_not_as_forbidden(
    live: LiveServer, sockets: list[ClientConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    plan_id = live.open_plan()
    bert = await live.socket(plan_id, BERT, version=live.version_of(plan_id))
    sockets.append(bert)
    await joined(bert)
    database_out(live, monkeypatch)
    await bert.send('{"type": "editing", "item": "need-1"}')
    assert await closed_with(bert) == 1013  # htmx reconnects on 1013 (not on 1008), then catches up


async def test_a_member_taken_out_of_the_network_is_disconnected(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    version = live.version_of(plan_id)
    bert = await live.socket(plan_id, BERT, version=version)
    aino = await live.socket(plan_id, AINO, version=version)
    sockets += [bert, aino]
    await joined(bert)
    await joined(aino)
    plan = live.app.state.views.plan(plan_id)
    member = plan.member_of_person(BERT.username)
    live.app.state.plans.remove_member(
        plan_id, by=AINO.actor, command_id=str(uuid.uuid4()), member_id=member.id, seen_revision=member.revision
    )
    assert await closed_with(bert) == 1008  # htmx does not reconnect on 1008
    update = await receive(aino, is_plan_update)
    assert f'id="member-{member.id}"' not in update


async def carla_on(live: LiveServer, plan_id: str) -> tuple[ClientConnection, str]:
    """Carla's socket on the plan, on a session of its own (returned), once it has joined."""
    session = sign_in(live.base_url, CARLA)
    headers = {"Cookie": f"polku_session={session}; lang=sv"}
    carla = await connect(
        f"{live.ws_url}/plans/{plan_id}/live?version={live.version_of(plan_id)}",
        origin=live.base_url,  # type: ignore[arg-type]
        additional_headers=headers,
        open_timeout=5,
    )
    await joined(carla)
    return carla, session


class EveryoneSignedIn:
    """A sweep that finds every session alive: only the sign-out itself may close a socket."""

    def live_sessions(self, sessions: Any) -> set[str]:
        return {session_id for session_id, _account in sessions}


async def test_signing_out_closes_the_sessions_sockets_at_once(
    live: LiveServer, sockets: list[ClientConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the sign-out's answer: not a presence nor a note more reaches the signed-out tab."""
    plan_id = live.open_plan()
    carla, session = await carla_on(live, plan_id)
    sockets.append(carla)
    monkeypatch.setattr(live.app.state.live_hub, "sessions", EveryoneSignedIn())
    with httpx.Client(base_url=live.base_url, cookies={"polku_session": session}) as http:
        token = csrf_token_in(http.get("/").text)
        assert http.post("/signout", data={"_csrf_token": token}).status_code == 303
    assert await closed_with(carla, timeout=0.5) == 1008  # htmx does not reconnect on 1008


async def test_a_session_ended_elsewhere_closes_its_sockets_within_the_sweep(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    """A sign-out through another instance, a new password or a removed account end the
    session in the store alone: the hub's sweep finds it within SESSION_SWEEP_S."""
    plan_id = live.open_plan()
    carla, session = await carla_on(live, plan_id)
    sockets.append(carla)
    live.app.state.accounts.session_delete(session)
    assert await closed_with(carla, timeout=SESSION_SWEEP_S + 2) == 1008


async def test_an_oversized_message_closes_the_socket(live: LiveServer, sockets: list[ClientConnection]) -> None:
    plan_id = live.open_plan()
    bert = await live.socket(plan_id, BERT, version=live.version_of(plan_id))
    sockets.append(bert)
    await joined(bert)
    await bert.send('{"type": "editing", "item": "need-' + "x" * 2000 + '"}')
    assert await closed_with(bert) == 1009


async def test_a_frame_too_big_is_refused_by_its_header_not_read_into_memory(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    """A frame that says it holds 8 MiB: closed (1009) on its header, while only a few bytes
    of it have come (read whole, 40 such frames held a gigabyte)."""
    plan_id = live.open_plan()
    bert = await live.socket(plan_id, BERT, version=live.version_of(plan_id))
    sockets.append(bert)
    await joined(bert)
    length, mask = 8 * 1024 * 1024, b"\x01\x02\x03\x04"
    header = bytes([0x81, 0x80 | 127]) + length.to_bytes(8, "big") + mask  # a masked text frame, as browsers send
    bert.transport.write(header + bytes(b ^ mask[n % 4] for n, b in enumerate(b"x" * 100)))
    assert await closed_with(bert) == 1009


async def test_one_account_holds_at_most_so_many_live_sockets(
    live: LiveServer, sockets: list[ClientConnection], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(live.app.state.live_hub, "sockets_per_account", 3)
    plan_id = live.open_plan()
    version = live.version_of(plan_id)
    tabs = [await live.socket(plan_id, BERT, version=version) for _ in range(4)]
    sockets += tabs
    for tab in tabs[:3]:
        await joined(tab)
    assert await closed_with(tabs[3]) == 1008
    other = await live.socket(plan_id, AINO, version=version)  # another account is not counted with Bert's
    sockets.append(other)
    await joined(other)


A_SOCKET = SimpleNamespace(scope={})
"""What a connection reads of its socket when made (no session): for tests of its outbox alone."""


def test_a_browser_that_falls_behind_is_closed_to_reconnect() -> None:
    async def scenario() -> tuple[int, str] | None:
        connection = LiveConnection(A_SOCKET, "plan", None, "fi", outbox_size=2)  # type: ignore[arg-type]
        connection.send("one")
        connection.send("two")
        assert not connection.is_closing
        connection.send("three")  # the outbox is full: the browser is not reading
        assert connection.is_closing
        connection.send_plan(9, "four")  # nothing more is queued once closing
        return connection._closing

    assert asyncio.run(scenario()) == (1013, "too far behind")  # htmx reconnects on 1013, then catches up


# ---------------------------------------------------------------------------- shutdown


async def test_shutdown_closes_every_socket_with_1012_and_drains(tmp_path: Path) -> None:
    with serving(tmp_path / "data") as server:
        plan_id = server.open_plan()
        bert = await server.socket(plan_id, BERT, version=server.version_of(plan_id))
        await joined(bert)
        hub = server.hub
        assert hub.loop is not None
        stopping = asyncio.wrap_future(asyncio.run_coroutine_threadsafe(hub.stop(), hub.loop))
        assert await closed_with(bert) == 1012  # htmx reconnects on 1012
        await asyncio.wait_for(stopping, 5)
        assert hub.connections() == []
        with pytest.raises(InvalidStatus):  # a stopped hub takes no new sockets
            await server.socket(plan_id, BERT)


# ---------------------------------------------------------------------------- the parts


class _Connection:
    def __init__(self, headers: dict[str, str], scheme: str = "ws") -> None:
        self.headers = headers
        self.scope = {"scheme": scheme}


@pytest.mark.parametrize(
    ("origin", "host", "scheme", "same"),
    [
        ("http://polku.example", "polku.example", "ws", True),
        ("https://polku.example", "polku.example", "wss", True),
        ("https://polku.example:443", "polku.example", "wss", True),
        ("http://POLKU.example", "polku.example", "ws", True),
        ("http://127.0.0.1:8000", "127.0.0.1:8000", "ws", True),
        ("http://127.0.0.1:8001", "127.0.0.1:8000", "ws", False),
        ("https://polku.example", "polku.example", "ws", False),
        ("http://polku.example", "polku.example", "wss", False),
        ("http://polku.example.evil", "polku.example", "ws", False),
        ("http://evil.example", "polku.example", "ws", False),
        ("null", "polku.example", "ws", False),
        ("", "polku.example", "ws", False),
        ("http://user@polku.example", "polku.example", "ws", False),
        ("http://polku.example:99999", "polku.example", "ws", False),
    ],
)
def test_same_origin(origin: str, host: str, scheme: str, same: bool) -> None:
    headers = {"host": host, **({"origin": origin} if origin else {})}
    assert same_origin(_Connection(headers, scheme)) is same  # type: ignore[arg-type]


def test_who_may_view_a_plan(live: LiveServer) -> None:
    from web.identity import Account

    plan = live.app.state.views.plan(live.open_plan())

    def account(person: Person, kind: str = "professional") -> Account:
        return Account(
            account_id=person.username, kind=kind, name=person.name,  # type: ignore[arg-type]
            person_id=person.username, organisation_id=person.organisation_id,
            organisation_name=person.organisation_name,
        )

    assert may_view(account(AINO), plan)  # the named expert
    assert may_view(account(BERT), plan)  # a network member
    assert may_view(account(CARLA), plan)  # the expert's organisation
    assert not may_view(account(DAN), plan)
    assert not may_view(account(CARLA, kind="admin"), plan)
    assert not may_view(None, plan)
    assert not may_view(account(AINO), None)


def test_client_messages() -> None:
    assert decode_client_message('{"type": "editing", "item": "need-4f1c-9a"}') == Editing(item="need-4f1c-9a")
    assert decode_client_message('{"type": "editing", "item": null}') == Editing(item=None)
    assert decode_client_message('{"type": "resync"}') == Resync()
    for nonsense in ('{"type": "editing", "item": "need"}', '{"type": "editing", "item": "x-<b>"}', "[]", "no"):
        assert decode_client_message(nonsense) is None


def test_presence_leaves_out_the_viewer_and_escapes_names() -> None:
    people = [
        Presence(person_id="a", name="Aino <b>", organisation="Pirha & co", editing="need-1"),
        Presence(person_id="a", name="Aino <b>", organisation="Pirha & co"),  # her second tab
        Presence(person_id="b", name="Bert", organisation="Kela"),
    ]
    html = render_presence(people, "en", me="b")
    assert html.count("<li") == 1
    assert "Aino &lt;b&gt; (Pirha &amp; co) is editing a need." in html
    assert 'hx-swap-oob="true"' in html and html.startswith('<div id="presence"')
    assert "No one else" in render_presence(people[2:], "en", me="b")


def test_a_newer_presence_replaces_the_one_waiting_in_the_outbox() -> None:
    async def scenario() -> list[str]:
        connection = LiveConnection(A_SOCKET, "plan", None, "fi", outbox_size=3)  # type: ignore[arg-type]
        connection.send("update one")
        for n in range(10):
            connection.send_presence(f"presence {n}")
        connection.send("update two")
        assert not connection.is_closing
        queued = []
        while not connection._outbox.empty():
            item = connection._outbox.get_nowait()
            if item is not None and not isinstance(item, str):  # the presence slot
                item, connection._presence = connection._presence, None
            queued.append(item)
        return queued

    assert asyncio.run(scenario()) == ["update one", "presence 9", "update two"]


async def test_a_crowd_joining_at_once_settles_without_1013_and_presence_is_coalesced(
    live: LiveServer, sockets: list[ClientConnection]
) -> None:
    plan_id = live.open_plan()
    version = live.version_of(plan_id)
    watcher = await live.socket(plan_id, AINO, version=version)
    sockets.append(watcher)
    await joined(watcher)
    crowd_size = 200  # screens of a network meeting, more than an outbox holds
    people = (BERT, CARLA)
    # Half of them come back from a restart with an old version, and get the plan too.
    crowd = await asyncio.gather(*(
        live.socket(plan_id, people[n % len(people)], version=version if n % 2 else 1) for n in range(crowd_size)
    ))
    sockets += crowd
    presences = []
    async with asyncio.timeout(10 * WITHIN):
        while not (presences and all(p.name in presences[-1] for p in people)):
            presences.append(await receive(watcher, is_presence, timeout=5 * WITHIN))
    assert len(presences) < crowd_size / 10, "presence is sent coalesced, not once per join"

    outcome = live.record_need(plan_id, "Kaikille näytöille")
    received = await asyncio.gather(*(receive(s, containing("Kaikille näytöille"), timeout=5 * WITHIN) for s in crowd))
    assert {version_in(m) for m in received} == {outcome.version}
    assert all(socket.close_code is None for socket in crowd), "nobody was closed (no 1013)"


# ---------------------------------------------------------------------------- in a browser
# live.js in a real Chromium, on a test page with the same live markup as plans/show.html.

_LIVE_PAGE = """{% extends "base.html" %}
{% block content %}
<div class="plan" hx-ext="ws" ws-connect="/plans/{{ plan.id }}/live?version={{ plan.version }}">
  <div id="live-status" class="messages" role="status" aria-live="polite"
       data-lost="LOST" data-still-lost="STILL LOST" data-back="BACK" data-stopped="STOPPED"
       data-draft-kept="DRAFT KEPT"></div>
  <div id="live-version" data-version="{{ plan.version }}" hidden></div>
  <div id="presence"></div>
  <section id="panel-needs"><ul>
    {% for need in plan.needs.values() %}
    <li id="need-{{ need.id }}" data-revision="{{ need.revision }}">{{ need.description }}
      <form method="post" action="#" data-item-form>
        <input type="hidden" name="seen_revision" value="{{ need.revision }}">
        <textarea name="description"></textarea>
      </form>
    </li>
    {% endfor %}
  </ul></section>
  <section id="panel-network"></section>
</div>
<script src="{{ url_for('static', file_path='/live.js') }}" defer></script>
{% endblock %}"""


@get("/test/live/{plan_id:str}", sync_to_thread=False)
def live_test_page(request: Request[Any, Any, Any], plan_id: FromPath[str]) -> Template:
    return Template(template_str=_LIVE_PAGE, context={"plan": request.app.state.views.plan(plan_id)})


def sync_receive(socket: SyncClientConnection, wanted: Callable[[str], bool], timeout: float = WITHIN) -> str:
    """:func:`receive` for a blocking client (the browser test is not async)."""
    deadline = time.monotonic() + timeout
    while True:
        message = socket.recv(timeout=max(deadline - time.monotonic(), 0))
        assert isinstance(message, str)
        if wanted(message):
            return message


def run_on(loop: asyncio.AbstractEventLoop, coroutine: Any) -> Any:
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=10)


@pytest.mark.browser
def test_live_js_keeps_drafts_shows_the_connection_and_catches_up(live: LiveServer, browser: Any) -> None:
    plan_id = live.open_plan()
    first = live.record_need(plan_id, "Alkuperäinen kuvaus")
    live.caught_up(first.position)
    need_id = first.item_id
    context = browser.new_context(base_url=live.base_url, locale="fi-FI")
    context.add_cookies([
        {"name": "polku_session", "value": live.cookies_of(AINO)["polku_session"], "url": live.base_url},
        {"name": "lang", "value": "fi", "url": live.base_url},
    ])
    stack = ExitStack()
    stack.callback(context.close)
    real = live.renderer.panels
    live.renderer.panels = TinyPanels()  # the test page has only these two panels
    stack.callback(setattr, live.renderer, "panels", real)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto(f"/test/live/{plan_id}")
        page.wait_for_selector("#presence p", timeout=5000)  # connected: the hub sent presence
        bert = stack.enter_context(sync_connect(
            f"{live.ws_url}/plans/{plan_id}/live?version={first.version}",
            origin=live.base_url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"polku_session={live.cookies_of(BERT)['polku_session']}"},
            open_timeout=5,
        ))
        # The first need's form is open on Aino's page: Bert is told she is editing it.
        editing = sync_receive(bert, lambda m: is_presence(m) and AINO.name in m)
        assert f'data-editing="need-{need_id}"' in editing

        # She types into it.
        page.fill(f"#need-{need_id} textarea", "Aino kirjoittaa luonnosta")

        # Bert records another need: the panel is replaced by id, her item and draft are kept.
        second = live.record_need(plan_id, "Toinen tarve", by=BERT)
        page.wait_for_selector("#panel-needs >> text=Toinen tarve", timeout=int(WITHIN * 1000))
        assert page.get_attribute("#live-version", "data-version") == str(second.version)
        assert page.get_attribute("#panel-needs", "lang") == "fi"  # the panel is the new one
        assert page.input_value(f"#need-{need_id} textarea") == "Aino kirjoittaa luonnosta"
        assert page.evaluate("document.activeElement.name") == "description"
        assert page.query_selector(f"#need-{need_id} [data-live-notice]") is None  # her need is as it was

        # Bert changes that very need: her draft is still kept, and she is told.
        plan = live.app.state.views.plan(plan_id)
        changed = live.app.state.plans.update_need(
            plan_id, by=BERT.actor, command_id=str(uuid.uuid4()), need_id=need_id,
            category="health", description="Bertin uusi kuvaus", financial="", status="open",
            seen_revision=plan.needs[need_id].revision,
        )
        page.wait_for_selector(f"#need-{need_id} [data-live-notice]", timeout=int(WITHIN * 1000))
        assert page.get_attribute("#live-version", "data-version") == str(changed.version)
        assert page.input_value(f"#need-{need_id} textarea") == "Aino kirjoittaa luonnosta"
        assert page.evaluate("document.activeElement.name") == "description"
        assert "Bertin uusi kuvaus" not in page.inner_text(f"#need-{need_id}")
        assert page.inner_text("#live-status") == "DRAFT KEPT"

        # She closes the form: the others are told, and the page fetches what it held back.
        page.evaluate(f"document.querySelector('#need-{need_id} form').remove()")
        page.wait_for_selector(f"#need-{need_id} >> text=Bertin uusi kuvaus", timeout=int(WITHIN * 1000))
        sync_receive(bert, lambda m: is_presence(m) and AINO.name in m and "data-editing" not in m)

        assert problems == []  # no console errors, CSP violations among them
        # The connection drops (the server restarts): said, retried, and caught up afterwards.
        # (The browser reports each refused reconnect as an error: those are expected.)
        loop = live.hub.loop
        assert loop is not None
        run_on(loop, live.hub.stop())
        page.wait_for_selector("#live-status >> text=LOST", timeout=5000)
        missed = live.record_need(plan_id, "Tauon aikana kirjattu", by=BERT)
        live.caught_up(missed.position)
        run_on(loop, live.hub.start())
        page.wait_for_selector("#panel-needs >> text=Tauon aikana kirjattu", timeout=15000)
        page.wait_for_selector("#live-status >> text=BACK", timeout=5000)
        assert page.get_attribute("#live-version", "data-version") == str(missed.version)
    finally:
        stack.close()


@pytest.mark.browser
def test_the_plan_page_lives_an_edit_a_kept_draft_and_the_conflict_after_it(live: LiveServer, browser: Any) -> None:
    """The real plan page (plans/show.html), as Aino, while Bert edits the same plan."""
    plan_id = live.open_plan()
    first = live.record_need(plan_id, "Alkuperäinen kuvaus")
    live.caught_up(first.position)
    need = f"#need-{first.item_id}"
    context = browser.new_context(base_url=live.base_url, locale="fi-FI")
    context.add_cookies([{"name": "polku_session", "value": live.cookies_of(AINO)["polku_session"], "url": live.base_url}])
    stack = ExitStack()
    stack.callback(context.close)
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda message: message.type == "error" and problems.append(message.text))
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        assert page.goto(f"/plans/{plan_id}").status == 200  # type: ignore[union-attr]
        page.wait_for_selector("#presence p", timeout=5000)
        bert = stack.enter_context(sync_connect(
            f"{live.ws_url}/plans/{plan_id}/live?version={first.version}",
            origin=live.base_url,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"polku_session={live.cookies_of(BERT)['polku_session']}"},
            open_timeout=5,
        ))
        sync_receive(bert, lambda m: is_presence(m) and AINO.name in m)

        # Bert's edit reaches Aino's page.
        second = live.record_need(plan_id, "Bertin kirjaama tarve", by=BERT)
        page.wait_for_selector("#panel-needs >> text=Bertin kirjaama tarve", timeout=int(WITHIN * 1000))
        page.wait_for_selector(f'#live-version[data-version="{second.version}"]', state="attached")

        # Aino opens the first need's form and types; Bert is told what she edits.
        page.click(f"{need} .item__actions button")
        page.wait_for_selector(f"{need} form[data-item-form]")
        assert f'data-editing="need-{first.item_id}"' in sync_receive(bert, lambda m: is_presence(m) and "data-editing" in m)
        page.fill(f"{need} textarea[name=description]", "Ainon luonnos")

        # Bert changes that need meanwhile: her draft and focus stay, and she is told.
        plan = live.app.state.views.plan(plan_id)
        live.app.state.plans.update_need(
            plan_id, by=BERT.actor, command_id=str(uuid.uuid4()), need_id=first.item_id, category="health",
            description="Bertin muutos", financial="", status="open", seen_revision=plan.needs[first.item_id].revision,
        )
        page.wait_for_selector(f"{need} [data-live-notice]", timeout=int(WITHIN * 1000))
        assert page.input_value(f"{need} textarea[name=description]") == "Ainon luonnos"
        assert page.evaluate("document.activeElement.name") == "description"

        # Saving shows the conflict (the safety net); saving her version again wins.
        page.click(f"{need} form[data-item-form] button[type=submit]")
        page.wait_for_selector(f"{need} .conflict >> text={BERT.name}")
        page.click(f"{need} form[data-item-form] button[type=submit]")
        page.wait_for_selector(f"{need} form[data-item-form]", state="detached")
        assert "Ainon luonnos" in page.inner_text(need)
        assert "Ainon luonnos" in sync_receive(bert, containing("Ainon luonnos"))
        version = live.version_of(plan_id)
        page.wait_for_selector(f'#live-version[data-version="{version}"]', state="attached")
    finally:
        stack.close()
    assert [p for p in problems if "409" not in p] == []  # the conflict answers 409, by design
