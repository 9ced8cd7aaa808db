"""The live hub's races and database outages, on its own: a plan and panels of a few items,
no server (``tests/web/test_live.py`` has the hub behind a real server and browsers).

The races hold a render or a load in its worker thread, and do meanwhile what a browser
or an edit would.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import OperationalError as StoreOperationalError

from web.errors import StoreUnavailable
from web.live import hub as hubmod
from web.live.hub import PROFESSIONALS, LiveConnection, LiveHub, PanelKey
from web.live.messages import POLICY, TRY_AGAIN, version_marker

PLAN = "plan-1"

OUTAGES = [
    pytest.param(lambda: psycopg.OperationalError("connection refused"), id="psycopg"),
    pytest.param(lambda: StoreOperationalError(sqlite3.OperationalError("database is locked")), id="sqlite-locked"),
    pytest.param(lambda: StoreUnavailable("no connection came free"), id="account-store"),
]


@dataclass
class Plan:
    version: int
    items: dict[str, str] = field(default_factory=dict)


class ItemPanels:
    """One panel ``p`` made of items ``i-<key>``; notes what each render was asked for."""

    ids = ("p",)

    def __init__(self) -> None:
        self.rendered: list[tuple[int, tuple[str, ...]]] = []
        self.kept: list[tuple[int, str, dict[Any, Any]]] = []
        """(version, language, the dict the hub handed to keep things in) of each render."""

    def keys(self, plan: Plan) -> dict[str, Any]:
        return {"p": PanelKey(frame=tuple(plan.items), items=tuple((f"i-{k}", v) for k, v in plan.items.items()))}

    def render(self, engine: Any, plan: Plan, language: str, ids: Any, kept: Any) -> dict[str, str]:
        ids = tuple(ids)
        self.rendered.append((plan.version, ids))
        self.kept.append((plan.version, language, kept))
        texts = {}
        for id_ in ids:
            if id_ == "p":
                items = "".join(f'<li id="i-{k}">{v}</li>' for k, v in plan.items.items())
                texts[id_] = f'<section id="p">{items}</section>'
            else:
                texts[id_] = f'<li id="{id_}">{plan.items[id_.removeprefix("i-")]}</li>'
        return texts


class HeldPanels(ItemPanels):
    """Holds the render of one version in its worker thread until the test lets it go."""

    def __init__(self, held_version: int) -> None:
        super().__init__()
        self.held_version = held_version
        self.entered, self.gate = threading.Event(), threading.Event()

    def render(self, engine: Any, plan: Plan, language: str, ids: Any, kept: Any) -> dict[str, str]:
        if plan.version == self.held_version:
            self.entered.set()
            assert self.gate.wait(5), "the test never let the render go"
        return super().render(engine, plan, language, ids, kept)


class Views:
    """The read model: the plan it has now, or what it raises (``failure``)."""

    def __init__(self, plan: Plan) -> None:
        self.current = plan
        self.failure: Callable[[], Exception] | None = None

    def plan(self, plan_id: str) -> Plan:
        if self.failure is not None:
            raise self.failure()
        return self.current

    def add_listener(self, listener: Any) -> None:
        pass


class OpenHub(LiveHub):
    """Everyone may view an existing plan (the access rule is not what these tests are about)."""

    def _may_view(self, audience: str, account: Any, plan: Any) -> bool:
        return plan is not None


@dataclass
class Account:
    person_id: str
    account_id: str = "a-aino"


ACCOUNT = Account("aino")


@dataclass
class Socket:
    """What the hub reads of a socket: the session it came with (``web.identity``'s scope state)."""

    session_id: str

    @property
    def scope(self) -> dict[str, Any]:
        return {"state": {"polku.session.loaded": (self.session_id, b"{}")}}


class Sessions:
    """The account store's answer to the hub's sweep: the sessions alive, or what it raises."""

    def __init__(self, *alive: str) -> None:
        self.alive = set(alive)
        self.failure: Callable[[], Exception] | None = None
        self.asked: list[list[tuple[str, str]]] = []

    def live_sessions(self, sessions: Any) -> set[str]:
        pairs = list(sessions)
        self.asked.append(pairs)
        if self.failure is not None:
            raise self.failure()
        return {session_id for session_id, account_id in pairs if session_id in self.alive}


def hub_of(views: Views, panels: ItemPanels | None = None, sessions: Sessions | None = None) -> OpenHub:
    return OpenHub(views, engine=None, panels=panels or ItemPanels(), sessions=sessions)  # type: ignore[arg-type]


def connection(version: int, language: str = "fi", session_id: str = "s-1") -> LiveConnection:
    c = LiveConnection(
        socket=Socket(session_id), plan_id=PLAN, account=ACCOUNT, language=language, outbox_size=8  # type: ignore[arg-type]
    )
    c.version = version
    return c


def sent(c: LiveConnection) -> list[str]:
    """What is queued for ``c``'s browser (emptying its outbox)."""
    texts = []
    while not c._outbox.empty():
        texts.append(c._outbox.get_nowait())
    return texts


@pytest.fixture
def signed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every socket's session is Aino's and alive."""

    async def alive(socket: Any) -> bool:
        return True

    monkeypatch.setattr(hubmod, "signed_in_account", lambda socket: ACCOUNT)
    monkeypatch.setattr(hubmod, "still_signed_in", alive)


# ---------------------------------------------------------------------------- races


async def test_a_resync_never_takes_a_browser_back_to_an_older_version(signed_in: None) -> None:
    """A resync renders v7 whole; an edit sends v8 to the same browser meanwhile. Sending v7
    then would leave the browser at v7 for good (nothing sends v8 again): it gets v8 whole."""
    panels = HeldPanels(held_version=7)
    views = Views(Plan(7, {"a": "x", "b": "y"}))
    hub = hub_of(views, panels)
    viewer = connection(7)
    hub._join(viewer)
    await hub._know_keys(PLAN, PROFESSIONALS, views.current)
    resync = asyncio.create_task(hub._received(viewer, '{"type":"resync"}'))
    assert await asyncio.to_thread(panels.entered.wait, 5)
    views.current = Plan(8, {"a": "x2", "b": "y"})
    await hub._publish(PLAN)  # the edit reaches this browser meanwhile
    assert viewer.version == 8
    panels.gate.set()
    await resync
    assert viewer.version == 8
    *_, last = sent(viewer)
    assert 'data-version="8"' in last and '<section id="p"><li id="i-a">x2</li>' in last


async def test_a_resync_sends_every_panel_whole_at_the_current_version(signed_in: None) -> None:
    """Also to a browser that said it shows a later version than the read model has."""
    views = Views(Plan(7, {"a": "x"}))
    hub = hub_of(views)
    for shown in (7, 999_999_999):
        viewer = connection(shown)
        hub._join(viewer)
        await hub._received(viewer, '{"type":"resync"}')
        assert viewer.version == 7
        assert sent(viewer) == [version_marker(7) + '<section id="p"><li id="i-a">x</li></section>']


async def test_a_browser_ahead_of_the_read_model_does_not_make_every_edit_render_whole_panels() -> None:
    """One that says it shows a later version (a page from an instance whose read model is
    ahead, or ``?version=999999999``) is sent nothing, and costs no render of whole panels:
    an edit in place renders the changed item only."""
    panels = ItemPanels()
    views = Views(Plan(5, {"a": "x", "b": "y"}))
    hub = hub_of(views, panels)
    behind, ahead = connection(5), connection(999_999_999)
    for c in (behind, ahead):
        hub._join(c)
    await hub._know_keys(PLAN, PROFESSIONALS, views.current)  # as _catch_up does for a browser at the current version
    views.current = Plan(6, {"a": "x2", "b": "y"})
    await hub._publish(PLAN)
    assert sent(behind) == [version_marker(6) + '<li id="i-a">x2</li>']
    assert sent(ahead) == []
    assert panels.rendered == [(6, ("i-a",))]


async def test_a_publish_whose_last_viewer_left_meanwhile_keeps_no_rendition(signed_in: None) -> None:
    """The last viewer leaves while a publish loads and renders in its worker thread: the
    publish keeps no rendition (nor the whole plan in it) after the viewer's leaving cleared them."""
    panels = HeldPanels(held_version=5)
    hub = hub_of(Views(Plan(5, {"a": "x"})), panels)
    viewer = connection(4)
    hub._join(viewer)
    publish = asyncio.create_task(hub._publish(PLAN))
    assert await asyncio.to_thread(panels.entered.wait, 5)
    hub._leave(viewer)  # the tab closes meanwhile
    panels.gate.set()
    await publish
    assert hub._renditions == {}
    assert hub._keys == {}


async def test_a_worker_thread_takes_the_texts_of_the_previous_rendition_from_a_copy() -> None:
    """The loop adds texts to a rendition after it is kept (an update that needs a panel
    whole); a worker thread making the next rendition from it must not iterate them."""
    views = Views(Plan(7, {"a": "x"}))
    hub = hub_of(views)
    hub._join(connection(7))
    kept = await hub._rendition(PLAN, "fi", views.current)
    await hub._complete(kept, [None])
    given: list[Any] = []
    render = hub._render

    def noting_render(plan: Any, language: str, audience: str, previous: Any, keys: Any = None) -> Any:
        given.append(previous)
        return render(plan, language, audience, previous, keys)

    hub._render = noting_render  # type: ignore[method-assign]
    await hub._rendition(PLAN, "fi", Plan(8, {"a": "x"}))
    [previous] = given
    assert previous is not kept and previous.texts is not kept.texts
    assert previous.texts == kept.texts


async def test_what_the_panels_keep_goes_on_from_version_to_version_per_language_until_the_last_viewer_leaves(
    signed_in: None,
) -> None:
    """Each render of the plan in a language gets the same dict to keep things in (the
    history panel's entries), another in another language; a plan's last viewer leaving
    drops it with the renditions, and a viewer coming back starts an empty one."""
    panels = ItemPanels()
    views = Views(Plan(5, {"a": "x"}))
    hub = hub_of(views, panels)
    finnish, swedish = connection(4), connection(4, "sv")
    for c in (finnish, swedish):
        hub._join(c)
    for version in (5, 6, 7):
        views.current = Plan(version, {"a": f"x{version}", **({"b": "y"} if version == 7 else {})})
        await hub._publish(PLAN)
    kept = {language: {id(given) for _v, lang, given in panels.kept if lang == language} for language in ("fi", "sv")}
    assert len(kept["fi"]) == len(kept["sv"]) == 1 and kept["fi"] != kept["sv"]
    assert {version for version, _lang, _given in panels.kept} == {5, 6, 7}
    first = panels.kept[0][2]
    hub._leave(finnish)
    hub._leave(swedish)
    assert hub._renditions == {}
    back = connection(6)
    hub._join(back)
    await hub._publish(PLAN)
    assert panels.kept[-1][2] is not first


# ---------------------------------------------------------------------------- database outages


@pytest.mark.parametrize("failure", OUTAGES)
async def test_a_database_outage_on_a_message_closes_to_reconnect_not_as_refused(
    signed_in: None, failure: Callable[[], Exception]
) -> None:
    views = Views(Plan(7, {"a": "x"}))
    hub = hub_of(views)
    viewer = connection(7)
    hub._join(viewer)
    views.failure = failure
    await hub._received(viewer, '{"type":"editing","item":"need-1"}')
    assert viewer._closing == (TRY_AGAIN, "try again in a moment")


# ---------------------------------------------------------------------------- sessions


async def test_the_sweep_closes_the_sockets_of_ended_sessions_in_one_question() -> None:
    """A sign-out, a new password or an expiry on any instance: the socket of that session is
    closed as signed out (1008, after which the browser does not reconnect); the others stay."""
    sessions = Sessions("s-live")
    hub = hub_of(Views(Plan(7, {"a": "x"})), sessions=sessions)
    ended, live = connection(6, session_id="s-ended"), connection(6, session_id="s-live")
    for c in (ended, live):
        hub._join(c)
    await hub.check_sessions()
    [asked] = sessions.asked
    assert sorted(asked) == [("s-ended", "a-aino"), ("s-live", "a-aino")]
    assert ended._closing == (POLICY, "signed out")
    assert live._closing is None
    await hub._publish(PLAN)
    assert sent(ended) == [None]  # the close alone: nothing of the plan
    [update] = sent(live)
    assert '<li id="i-a">x</li>' in update


@pytest.mark.parametrize("failure", OUTAGES)
async def test_a_sweep_the_database_cannot_answer_closes_nothing(failure: Callable[[], Exception]) -> None:
    """Nobody knows whether the session ended: the socket is not told it signed out, and the
    next sweep asks again."""
    sessions = Sessions()
    sessions.failure = failure
    hub = hub_of(Views(Plan(7, {"a": "x"})), sessions=sessions)
    viewer = connection(7)
    hub._join(viewer)
    await hub.check_sessions()
    assert viewer._closing is None
    sessions.failure = None
    await hub.check_sessions()
    assert viewer._closing == (POLICY, "signed out")


async def test_a_sign_out_here_closes_that_sessions_sockets_at_once() -> None:
    hub = hub_of(Views(Plan(7, {"a": "x"})), sessions=Sessions("s-1", "s-2"))
    first, second = connection(7, session_id="s-1"), connection(7, "sv", session_id="s-1")
    other = connection(7, session_id="s-2")
    for c in (first, second, other):
        hub._join(c)
    hub.session_ended("s-1")
    assert first._closing == second._closing == (POLICY, "signed out")
    assert other._closing is None


async def test_the_hub_sweeps_the_sessions_while_it_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hubmod, "SESSION_SWEEP_S", 0.05)
    hub = hub_of(Views(Plan(7, {"a": "x"})), sessions=Sessions())
    viewer = connection(7)
    hub._join(viewer)
    await hub.start()
    try:
        async with asyncio.timeout(5):
            while viewer._closing is None:
                await asyncio.sleep(0.01)
    finally:
        await hub.stop(timeout=0.1)
    assert viewer._closing == (POLICY, "signed out")
    assert hub._sweeper is None


@pytest.mark.parametrize("failure", OUTAGES)
async def test_a_database_outage_on_catching_up_or_publishing_closes_to_reconnect(
    failure: Callable[[], Exception],
) -> None:
    """The browser reconnects and catches up from the version it shows: no update is lost."""
    views = Views(Plan(7, {"a": "x"}))
    hub = hub_of(views)
    views.failure = failure
    joining = connection(5)
    hub._join(joining)
    await hub._catch_up(joining)
    assert joining._closing == (TRY_AGAIN, "try again in a moment")
    watching = connection(7)
    hub._join(watching)
    hub._pending[PLAN] = 1
    await hub._flush(PLAN)
    assert watching._closing == (TRY_AGAIN, "try again in a moment")
