"""The live hub: pushes a changed plan to every browser that has it open.

How an edit reaches the browsers (``shared/DESIGN.md``, "The way one edit travels")::

    projection thread: PlanViews applied an event of plan P at position N
      -> LiveHub._applied(P, N)  (a notice only: loop.call_soon_threadsafe, no rendering here)
    event loop: LiveHub._changed(P, N)  -> remembers the latest N for P, starts one flusher for P
      -> flusher, in one worker-thread trip: load P from the read model once, work out its
         panel keys once, render its changed panels once per language among the viewers who
         are behind (a burst of events is rendered once, at the latest state)
      -> back on the loop: drop viewers who may no longer see P (nothing was sent to them)
      -> the same text to every viewer of that language who showed the same version, through
         each one's outbox

Only what changed travels. The panels say, without rendering, what each one's text depends on
(``keys``, e.g. ``web.plan_page.PlanPanels``); a panel made of items (needs, goals...) has a
:class:`PanelKey`: its frame (which items, in what order, and what is around them) and each
item's own key. The hub remembers the keys of the latest versions it saw (:data:`KEPT_VERSIONS`).
A browser that shows one of those versions gets the version marker and what changed since:
of a panel whose frame is the same, only the items whose keys changed (each replaces the
element with its id), else the whole panel; one further behind (or that asks to resync) gets
every panel. Texts are rendered when an update first needs them, once per (plan, audience,
language) and kept with their keys (:class:`Rendition`): an edit of one item in place renders
that item and the items that show it, not its panel. The panels may also keep parts of their
texts from one version to the next (``kept``, a dict per plan, audience and language): the plan
page keeps the latest changes' entries, so that an edit renders the history's new entry only.

Each connection has an outbox (a bounded queue) and one writer task, so a slow browser never
holds up the others: when its outbox is full it is closed with 1013 and, on reconnecting,
gets the current plan. A browser says which plan version it shows when it connects
(``?version=N``); it gets what it missed at once if it is behind, nothing if it is not.
A database that cannot be asked just now (to load the plan, or check a session) closes a
socket with 1013 too, never as "not allowed" (1008, after which a browser does not reconnect).

Presence is coalesced per plan: a join, a leave or an "editing" message marks the plan's
presence as due, and it is sent at most every :data:`PRESENCE_INTERVAL_S`, the latest list,
rendered once per language (:class:`web.live.presence.PresenceList`; leaving each viewer out
of their own list is a join of rendered items). A connection holds at most one presence
message in its outbox: a newer one replaces it there, so a crowd joining at once cannot
fill an outbox with presence.

Audiences: the professionals of the network see the plan page's panels, with presence; the
plan's client sees their own view (``web.client_page``), registered with :meth:`LiveHub.add_audience`
by ``web.controllers.client`` and rendered whole (:class:`WholePlan`: every update is the whole
view). A plan is rendered once per audience and language among its viewers, each audience's
text goes only to the sockets of that audience (the caches are kept per audience), and each
audience has its own access rule, asked on the handshake, on every message and before every
update. The client audience takes no part in presence: it neither sees nor appears in it.

Across processes only small notices travel (a later issue: PostgreSQL LISTEN/NOTIFY wakes the
read model of every instance, whose listener is this hub's path); every instance renders for
its own browsers. Presence is per instance for now.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import TYPE_CHECKING, Any, Protocol

import anyio.to_thread

from web.errors import UNAVAILABLE
from web.i18n import format_date
from web.live.access import Viewer, may_view, session_of, signed_in_account, still_signed_in
from web.live.messages import (
    MAX_CLIENT_MESSAGE,
    POLICY,
    RESTART,
    TOO_BIG,
    TRY_AGAIN,
    ClientMessage,
    Editing,
    Resync,
    decode_client_message,
    version_marker,
)
from web.live.presence import Presence, PresenceList
from web.settings import DEFAULT_SOCKETS_PER_ACCOUNT

if TYPE_CHECKING:
    from litestar import WebSocket

    from domain.plan import ClientPlan
    from projections.plans import PlanViews

__all__ = (
    "PROFESSIONALS", "Audience", "LiveConnection", "LiveHub", "PanelKey", "Panels", "Renderer", "Rendition", "WholePlan",
)

logger = logging.getLogger(__name__)

Renderer = Callable[[Any, "ClientPlan", str], str]
"""``render(engine, plan, language) -> html``: every fragment of an audience's view as
top-level elements with stable ids and ``hx-swap-oob`` (``web.client_page.render_client_fragments``)."""


@dataclass(frozen=True)
class PanelKey:
    """The key of a panel made of items that can be sent alone (``web.plan_page.PlanPanels``).

    ``frame`` is everything the panel's text depends on besides its items' own texts: which
    items it holds and in what order, and all around them. ``items`` is, in page order, each
    item's element id with the key of its own text. Between two versions whose frames are
    equal, the panel changed exactly in the items whose keys changed, and those items alone
    bring a browser up to date (each replaces the element with its id).
    """

    frame: Hashable
    items: tuple[tuple[str, Hashable], ...]

    def changed_since(self, before: Hashable) -> list[str] | None:
        """The ids of the items that changed since ``before``, or None when the whole panel must go
        (``before`` unknown or not made of items, its frame or its list of items different)."""
        if not isinstance(before, PanelKey) or before.frame != self.frame or len(before.items) != len(self.items):
            return None
        changed = []
        for (item, key), (item_before, key_before) in zip(self.items, before.items, strict=True):
            if item != item_before:
                return None
            if key != key_before:
                changed.append(item)
        return changed


class Panels(Protocol):
    """An audience's fragments, one panel at a time (``web.plan_page.PlanPanels``)."""

    ids: tuple[str, ...]
    """Every panel, in page order."""

    def keys(self, plan: ClientPlan) -> Mapping[str, Hashable]:
        """Per panel, all its text depends on besides the language (cheap: no rendering); a
        :class:`PanelKey` for a panel whose items can be sent alone."""
        ...

    def render(
        self, engine: Any, plan: ClientPlan, language: str, ids: Iterable[str], kept: dict[Hashable, Any]
    ) -> Mapping[str, str]:
        """The panels and items ``ids`` (items: the element ids of their :class:`PanelKey`),
        each a top-level element with an id: a panel with ``hx-swap-oob``, an item as the
        item's own answer has it (the browser's ws extension swaps every top-level element
        by its id).

        ``kept`` is the same dict at every render of the plan for the audience in the
        language (the hub drops it with the plan's renditions): what the panels put there,
        such as parts of a panel's text, they may take again at a later version, if they
        key it by what it was made of (two renders of different versions may use it at once).
        """
        ...


class LiveSessions(Protocol):
    """Where the hub asks whose sessions still live (``web.accounts.AccountStore``)."""

    def live_sessions(self, sessions: Iterable[tuple[str, str]]) -> set[str]:
        """Of the (session id, account id) pairs, the session ids alive for that account."""
        ...


class WholePlan:
    """An audience rendered whole: one panel, keyed by the plan version (every update is all of it)."""

    ids = ("plan",)

    def __init__(self, render: Renderer) -> None:
        self.render_all = render

    def keys(self, plan: ClientPlan) -> Mapping[str, Hashable]:
        return {"plan": plan.version}

    def render(
        self, engine: Any, plan: ClientPlan, language: str, ids: Iterable[str], kept: dict[Hashable, Any]
    ) -> Mapping[str, str]:
        return {"plan": self.render_all(engine, plan, language)}

OUTBOX_SIZE = 64
SEND_TIMEOUT_S = 10.0
DRAIN_TIMEOUT_S = 5.0
MESSAGES_PER_WINDOW = 30
MESSAGE_WINDOW_S = 10.0
SESSION_SWEEP_S = 2.0
"""How often the sessions of every open socket are asked about (one query): a sign-out,
a new password or an expiry on any instance closes the sockets of that session within this."""
PRESENCE_INTERVAL_S = 0.5
"""A plan's presence is sent at most this often (the latest list)."""
KEPT_VERSIONS = 16
"""How many of a plan's latest versions the hub remembers the panel keys of (for deltas)."""
INTERNAL_ERROR = 1011
PROFESSIONALS = "professionals"
"""The plan page's audience: rendered with ``LiveHub.panels``, allowed by ``may_view``, with presence."""


def plan_panels() -> Panels:
    """The plan page's panels, imported when first used (the hub starts without them)."""
    from web.plan_page import PLAN_PANELS

    return PLAN_PANELS


@dataclass(frozen=True)
class Audience:
    """Another audience of a plan than its professionals: what they are sent, and who belongs.

    ``panels`` give the audience's fragments (top-level elements with ids and ``hx-swap-oob``);
    ``may_view(account, plan)`` is asked on every message and before every update, like
    ``may_view`` for the professionals.
    """

    name: str
    panels: Panels
    may_view: Callable[[Viewer | None, "ClientPlan | None"], bool]


@dataclass
class Rendition:
    """One audience's panels of a plan in one language at one version, and the updates made of them.

    Texts are rendered when an update first needs them (:meth:`missing`, then :meth:`add`):
    an edit that changed one item in place renders that item, and the whole panel only
    when a browser needs it whole (one further behind, a resync, a new page).
    """

    version: int
    plan: ClientPlan
    """What the missing texts are rendered from."""
    audience: str
    language: str
    keys: Mapping[str, Hashable]
    texts: dict[str, str] = field(default_factory=dict)
    """The panels rendered so far, by id."""
    items: dict[str, str] = field(default_factory=dict)
    """The items rendered so far, by element id."""
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    """Held while rendering what is missing: one render of a text, however many ask."""
    kept: dict[Hashable, Any] = field(default_factory=dict)
    """What the panels keep between renders (``Panels.render``), shared by the renditions of
    the plan for the audience in the language, from one version to the next."""
    _updates: dict[int, str] = field(default_factory=dict)

    def _pieces(self, since: Mapping[str, Hashable] | None) -> list[tuple[bool, str]]:
        """What brings a browser showing ``since`` up to date, in page order: (is a panel, id)."""
        pieces: list[tuple[bool, str]] = []
        for panel, key in self.keys.items():
            before = since.get(panel) if since is not None else None
            if since is not None and before == key:
                continue
            items = key.changed_since(before) if since is not None and isinstance(key, PanelKey) else None
            if items is None:
                pieces.append((True, panel))
            else:
                pieces.extend((False, item) for item in items)
        return pieces

    def missing(self, since: Mapping[str, Hashable] | None) -> list[str]:
        """The panels and items an update from ``since`` needs that are not rendered yet."""
        return [id_ for panel, id_ in self._pieces(since) if id_ not in (self.texts if panel else self.items)]

    def add(self, rendered: Mapping[str, str]) -> None:
        """Texts rendered for :meth:`missing`, by panel or item id."""
        for id_, text in rendered.items():
            (self.texts if id_ in self.keys else self.items)[id_] = text

    def update(self, since: Mapping[str, Hashable] | None, since_version: int = 0) -> str | None:
        """The version marker and what changed since ``since`` (every panel without it): the
        changed items of a panel that changed only in them, else the changed panels. None
        while a text it needs is missing.

        ``since`` is the keys of the version ``since_version`` that the browser shows.
        """
        if since is None:
            since_version = -1
        known = self._updates.get(since_version)
        if known is None:
            pieces = self._pieces(since)
            if any(id_ not in (self.texts if panel else self.items) for panel, id_ in pieces):
                return None
            changed = [self.texts[id_] if panel else self.items[id_] for panel, id_ in pieces]
            known = self._updates[since_version] = version_marker(self.version) + "\n".join(changed)
        return known


_PRESENCE = object()
"""In an outbox: the connection's latest presence message goes here."""


class LiveConnection:
    """One browser tab's socket on one plan."""

    def __init__(
        self,
        socket: WebSocket,
        plan_id: str,
        account: Viewer,
        language: str,
        outbox_size: int,
        audience: str = PROFESSIONALS,
    ) -> None:
        self.socket = socket
        self.plan_id = plan_id
        self.account = account
        self.language = language
        self.audience = audience
        """Whose fragments this socket gets: :data:`PROFESSIONALS` or a registered :class:`Audience`."""
        self.version = 0
        """The plan version this browser shows (what it said on connecting, then what it was sent)."""
        self.editing: str | None = None
        self.session_id = session_of(socket)
        self.finished = asyncio.Event()
        self._outbox: asyncio.Queue[str | object | None] = asyncio.Queue(maxsize=outbox_size)
        self._presence: str | None = None
        """The presence message waiting in the outbox (as :data:`_PRESENCE`), if any."""
        self._closing: tuple[int, str] | None = None
        self._received: deque[float] = deque()

    @property
    def presence(self) -> Presence:
        actor = self.account.actor
        return Presence(
            person_id=self.account.person_id,
            name=actor.name,
            organisation=actor.organisation_name,
            editing=self.editing,
        )

    @property
    def is_closing(self) -> bool:
        return self._closing is not None

    def send(self, text: str) -> None:
        """Queue ``text`` for this browser; one that has fallen this far behind is closed (1013)."""
        self._queue(text)

    def _queue(self, item: str | object) -> None:
        if self._closing is not None:
            return
        try:
            self._outbox.put_nowait(item)
        except asyncio.QueueFull:
            self.close(TRY_AGAIN, "too far behind")

    def send_presence(self, text: str) -> None:
        """Queue the presence list, replacing one still waiting in the outbox."""
        if self._closing is not None:
            return
        waiting = self._presence is not None
        self._presence = text
        if not waiting:
            self._queue(_PRESENCE)

    def send_plan(self, version: int, text: str) -> None:
        """Queue a plan update unless this browser already shows that version or a later one."""
        if version <= self.version or self._closing is not None:
            return
        self.version = version
        self.send(text)

    def send_whole(self, version: int, text: str) -> None:
        """Queue every panel of ``version``, which this browser then shows, whatever it said before."""
        self.version = version
        self.send(text)

    def close(self, code: int, reason: str = "") -> None:
        """Close the socket with ``code`` after what is queued (or at once, if the outbox is full)."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        while True:
            try:
                self._outbox.put_nowait(None)
                return
            except asyncio.QueueFull:
                self._outbox.get_nowait()

    def allow_message(self) -> bool:
        """At most MESSAGES_PER_WINDOW messages from the browser per MESSAGE_WINDOW_S."""
        now = time.monotonic()
        while self._received and now - self._received[0] > MESSAGE_WINDOW_S:
            self._received.popleft()
        self._received.append(now)
        return len(self._received) <= MESSAGES_PER_WINDOW

    async def run(self, on_message: Callable[[LiveConnection, str], Awaitable[None]]) -> None:
        """Send the outbox and receive messages until either side closes."""
        writer = asyncio.create_task(self._write(), name=f"live-writer-{self.plan_id}")
        reader = asyncio.create_task(self._read(on_message), name=f"live-reader-{self.plan_id}")
        try:
            await asyncio.wait({writer, reader}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (writer, reader):
                task.cancel()
            for outcome in await asyncio.gather(writer, reader, return_exceptions=True):
                if isinstance(outcome, Exception):
                    logger.error("live socket of plan %s failed", self.plan_id, exc_info=outcome)
            self.finished.set()

    async def _write(self) -> None:
        while True:
            text = await self._outbox.get()
            if text is None:
                code, reason = self._closing or (RESTART, "")
                await _quietly(self.socket.close(code=code, reason=reason))
                return
            if text is _PRESENCE:
                text, self._presence = self._presence, None
                if text is None:
                    continue
            try:
                async with asyncio.timeout(SEND_TIMEOUT_S):  # no task per send, as wait_for makes
                    await self.socket.send_text(text)
            except TimeoutError:
                logger.info("live socket of plan %s stopped reading; closing it", self.plan_id)
                await _quietly(asyncio.wait_for(self.socket.close(code=TRY_AGAIN), 1.0))
                return
            except Exception:  # the browser went away while we were sending
                return

    async def _read(self, on_message: Callable[[LiveConnection, str], Awaitable[None]]) -> None:
        while True:
            event = await self.socket.receive()
            if event["type"] == "websocket.disconnect":
                return
            if event["type"] != "websocket.receive" or self._closing is not None:
                continue
            text = event.get("text")
            if text is None:
                continue  # binary frames mean nothing here
            if len(text) > MAX_CLIENT_MESSAGE:
                self.close(TOO_BIG, "message too big")
                continue
            await on_message(self, text)


class LiveHub:
    """Every live socket of this process, by plan; started and stopped with the app."""

    def __init__(
        self,
        views: PlanViews,
        engine: Any,
        *,
        panels: Panels | None = None,
        outbox_size: int = OUTBOX_SIZE,
        sessions: LiveSessions | None = None,
        sockets_per_account: int = DEFAULT_SOCKETS_PER_ACCOUNT,
    ) -> None:
        self.views = views
        self.engine = engine
        self.sessions = sessions
        """Asked every :data:`SESSION_SWEEP_S` which sockets' sessions still live (None: not asked)."""
        self.panels: Panels = panels or plan_panels()
        """The professionals' panels, read at every render: a test may wrap them to count renders."""
        self.audiences: dict[str, Audience] = {}
        """The other audiences (:meth:`add_audience`), by name."""
        self.outbox_size = outbox_size
        self.sockets_per_account = sockets_per_account
        """Live sockets one account may hold here (``web.settings.DEFAULT_SOCKETS_PER_ACCOUNT``)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        self._listening = False
        self._warm_up: asyncio.Task[None] | None = None
        self._viewers: dict[str, set[LiveConnection]] = {}
        self._watched: frozenset[str] = frozenset()  # read by the projection thread
        self._pending: dict[str, int] = {}
        self._flushers: dict[str, asyncio.Task[None]] = {}
        self._renditions: dict[tuple[str, str, str], tuple[int, asyncio.Future[Rendition]]] = {}
        """The latest rendition by (plan, audience, language)."""
        self._keys: dict[tuple[str, str], OrderedDict[int, Mapping[str, Hashable]]] = {}
        """The panel keys of the latest versions seen, by (plan, audience)."""
        self._presence_due: dict[str, asyncio.TimerHandle] = {}
        self._presence_sent: dict[str, float] = {}
        self._sweeper: asyncio.Task[None] | None = None

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Listen to the read model (from the event loop that serves the sockets)."""
        self._loop = asyncio.get_running_loop()
        self._stopping = False
        if not self._listening:  # PlanViews cannot forget a listener: add it once
            self.views.add_listener(self._applied)
            self._listening = True
        if self._warm_up is None:
            self._warm_up = asyncio.create_task(anyio.to_thread.run_sync(self._prepare), name="live-warm-up")
        if self.sessions is not None and self._sweeper is None:
            self._sweeper = asyncio.create_task(self._sweep_sessions(), name="live-session-sweep")

    async def warmed_up(self) -> None:
        """Wait until the templates are compiled (started in the background by :meth:`start`)."""
        if self._warm_up is not None:
            await asyncio.shield(self._warm_up)

    def _prepare(self) -> None:
        """Compile every template in every language, and load the date formats, ahead of use.

        The first render of a plan would otherwise take half a second a language (Jinja
        compiles each language's templates separately) and the first edit after a start
        would reach the browsers late.
        """
        try:
            for language, environment in getattr(self.engine, "environments", {}).items():
                for name in environment.list_templates(extensions=["html"]):
                    environment.get_template(name)
                format_date(date.today(), language)
        except Exception:
            logger.exception("could not prepare the templates ahead of use")

    async def stop(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Close every socket with 1012 (htmx reconnects) and wait for them to finish."""
        self._stopping = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None
        connections = self.connections()
        for connection in connections:
            connection.close(RESTART, "server restarting")
        if connections:
            waiters = [asyncio.create_task(connection.finished.wait()) for connection in connections]
            _done, late = await asyncio.wait(waiters, timeout=timeout)
            for waiter in late:
                waiter.cancel()
            if late:
                logger.warning("%d live sockets did not close within %.0f s", len(late), timeout)
        for due in self._presence_due.values():
            due.cancel()
        self._presence_due.clear()
        for flusher in list(self._flushers.values()):
            flusher.cancel()
        await asyncio.gather(*self._flushers.values(), return_exceptions=True)
        if self._warm_up is not None and not self._warm_up.done():
            await asyncio.wait({self._warm_up}, timeout=timeout)  # a worker thread: not cancellable
        self._loop = None

    def _sockets_of(self, account: Viewer) -> list[LiveConnection]:
        return [c for c in self.connections() if c.account.account_id == account.account_id and not c.is_closing]

    def connections(self, plan_id: str | None = None) -> list[LiveConnection]:
        if plan_id is not None:
            return list(self._viewers.get(plan_id, ()))
        return [connection for viewers in self._viewers.values() for connection in viewers]

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None:
        """The event loop the hub serves its sockets on (None when stopped)."""
        return self._loop

    @property
    def accepting(self) -> bool:
        return self._loop is not None and not self._stopping

    def add_audience(
        self, name: str, *, render: Renderer, may_view: Callable[[Viewer | None, ClientPlan | None], bool]
    ) -> None:
        """Serve another audience than the professionals (``serve(..., audience=name)``), rendered whole."""
        if name == PROFESSIONALS:
            raise ValueError("the professionals' audience is the hub's own")
        self.audiences[name] = Audience(name=name, panels=WholePlan(render), may_view=may_view)

    def _panels_of(self, audience: str) -> Panels:
        return self.panels if audience == PROFESSIONALS else self.audiences[audience].panels

    def _may_view(self, audience: str, account: Viewer | None, plan: ClientPlan | None) -> bool:
        """The audience's own access rule (an unknown audience sees nothing)."""
        if audience == PROFESSIONALS:
            return may_view(account, plan)
        registered = self.audiences.get(audience)
        return registered is not None and registered.may_view(account, plan)

    # ------------------------------------------------------------------ one socket

    async def load(self, plan_id: str) -> ClientPlan | None:
        """The plan as the read model has it, or None: shared with other readers, never changed (read in a worker thread)."""
        return await anyio.to_thread.run_sync(self.views.plan, plan_id)

    async def serve(
        self,
        socket: WebSocket,
        plan_id: str,
        account: Viewer,
        language: str,
        known_version: int | None,
        audience: str = PROFESSIONALS,
    ) -> None:
        """Serve one accepted socket until it closes.

        ``known_version`` is the plan version the browser shows (None: unknown); a browser
        that is behind gets the whole current plan first. ``audience`` says whose fragments
        it gets (the caller has checked on the handshake that the account belongs to it).
        """
        connection = LiveConnection(socket, plan_id, account, language, self.outbox_size, audience)
        if known_version is not None:
            connection.version = known_version
        too_many = len(self._sockets_of(account)) >= self.sockets_per_account
        self._join(connection)  # before reading the plan: no event can fall between the two
        try:
            if not self.accepting:
                connection.close(RESTART, "server restarting")
            elif too_many:
                connection.close(POLICY, "too many live connections")
            else:
                await self._catch_up(connection)
            await connection.run(self._received)
        finally:
            self._leave(connection)

    async def _catch_up(self, connection: LiveConnection) -> None:
        try:
            plan = await self.load(connection.plan_id)
            if not self._may_view(connection.audience, connection.account, plan):
                connection.close(POLICY, "not allowed")
                return
            assert plan is not None
            if connection.version < plan.version:
                rendition = await self._rendition(connection.plan_id, connection.language, plan, connection.audience)
                await self._send_update(connection, rendition)
            elif connection.version == plan.version:
                await self._know_keys(connection.plan_id, connection.audience, plan)
        except UNAVAILABLE as error:
            _unavailable(connection, error)
            return
        except Exception:
            logger.exception("could not catch up a live socket of plan %s", connection.plan_id)
            connection.close(INTERNAL_ERROR, "internal error")
            return
        self._presence_changed(connection.plan_id)

    async def _received(self, connection: LiveConnection, text: str) -> None:
        """A message from the browser (a database that cannot be asked closes the socket to reconnect)."""
        if not connection.allow_message():
            connection.close(POLICY, "too many messages")
            return
        message = decode_client_message(text)
        if message is None:
            return
        try:
            await self._answer(connection, message)
        except UNAVAILABLE as error:
            _unavailable(connection, error)

    async def _answer(self, connection: LiveConnection, message: ClientMessage) -> None:
        """Who sends ``message``, and may they still see the plan? Then what it asks."""
        account = signed_in_account(connection.socket)
        shown = connection.version
        plan = await self.load(connection.plan_id)
        if (
            account is None
            or account.person_id != connection.account.person_id
            or not self._may_view(connection.audience, account, plan)
            or not await still_signed_in(connection.socket)
        ):
            connection.close(POLICY, "not allowed")
            return
        assert plan is not None
        connection.account = account
        if isinstance(message, Editing):
            if connection.audience == PROFESSIONALS and message.item != connection.editing:
                connection.editing = message.item
                self._presence_changed(connection.plan_id)
        elif isinstance(message, Resync):
            await self._resync(connection, plan, shown)

    async def _resync(self, connection: LiveConnection, plan: ClientPlan, shown: int) -> None:
        """Every panel of ``plan`` whole (the browser held an update back to keep a draft).

        ``shown`` is the version the connection had when ``plan`` was loaded. An update sent
        to it while the panels were rendered is newer than ``plan``: the plan is loaded again
        (and its access asked again), as sending ``plan`` would take the browser back to a
        version that nothing would send it past.
        """
        while True:
            rendition = await self._rendition(connection.plan_id, connection.language, plan, connection.audience)
            await self._complete(rendition, [None])
            if connection.version == shown or connection.version <= rendition.version:
                break
            shown = connection.version
            loaded = await self.load(connection.plan_id)
            if not self._may_view(connection.audience, connection.account, loaded):
                connection.close(POLICY, "not allowed")
                return
            assert loaded is not None
            plan = loaded
        text = rendition.update(None)
        assert text is not None
        connection.send_whole(rendition.version, text)

    def _join(self, connection: LiveConnection) -> None:
        self._viewers.setdefault(connection.plan_id, set()).add(connection)
        self._watched = frozenset(self._viewers)

    def _joined(self, connection: LiveConnection) -> bool:
        """Whether ``connection`` is still a viewer of its plan (it has not left)."""
        return connection in self._viewers.get(connection.plan_id, ())

    def _leave(self, connection: LiveConnection) -> None:
        plan_id = connection.plan_id
        viewers = self._viewers.get(plan_id)
        if viewers is None:
            return
        viewers.discard(connection)
        if viewers:
            self._presence_changed(plan_id)
            return
        del self._viewers[plan_id]
        self._watched = frozenset(self._viewers)
        self._pending.pop(plan_id, None)
        for key in [key for key in self._renditions if key[0] == plan_id]:
            del self._renditions[key]
        for key in [key for key in self._keys if key[0] == plan_id]:
            del self._keys[key]
        due = self._presence_due.pop(plan_id, None)
        if due is not None:
            due.cancel()
        self._presence_sent.pop(plan_id, None)

    # ------------------------------------------------------------------ presence

    def _presence_changed(self, plan_id: str) -> None:
        """Someone joined, left or opened a form: send the plan's presence soon (coalesced)."""
        if plan_id in self._presence_due or self._loop is None:
            return
        now = self._loop.time()
        delay = max(0.0, self._presence_sent.get(plan_id, now - PRESENCE_INTERVAL_S) + PRESENCE_INTERVAL_S - now)
        self._presence_due[plan_id] = self._loop.call_later(delay, self._send_presence, plan_id)

    def _send_presence(self, plan_id: str) -> None:
        """The plan's latest presence to each of its professionals, rendered once per language."""
        self._presence_due.pop(plan_id, None)
        if self._loop is not None:
            self._presence_sent[plan_id] = self._loop.time()
        viewers = [
            connection
            for connection in self._viewers.get(plan_id, ())
            if connection.audience == PROFESSIONALS and not connection.is_closing
        ]
        people = [connection.presence for connection in viewers]
        lists: dict[str, PresenceList] = {}
        for connection in viewers:
            language = connection.language
            if language not in lists:
                lists[language] = PresenceList(people, language)
            connection.send_presence(lists[language].without(connection.account.person_id))

    # ------------------------------------------------------------------ fan-out

    def _applied(self, plan_id: str | None, position: int) -> None:
        """PlanViews' listener, in the projection thread: hand a notice to the loop, no more."""
        loop = self._loop
        if plan_id is None or loop is None or self._stopping or plan_id not in self._watched:
            return
        try:
            loop.call_soon_threadsafe(self._changed, plan_id, position)
        except RuntimeError:  # the loop has closed: the app is shutting down
            pass

    def _changed(self, plan_id: str, position: int) -> None:
        if self._stopping or plan_id not in self._viewers:
            return
        self._pending[plan_id] = max(position, self._pending.get(plan_id, 0))
        if plan_id not in self._flushers:
            self._flushers[plan_id] = asyncio.create_task(self._flush(plan_id), name=f"live-flush-{plan_id}")

    async def _flush(self, plan_id: str) -> None:
        """Publish plan_id until no notice is pending: a burst becomes one render."""
        try:
            while self._pending.pop(plan_id, None) is not None and plan_id in self._viewers:
                try:
                    await self._publish(plan_id)
                except UNAVAILABLE as error:
                    for connection in self.connections(plan_id):
                        _unavailable(connection, error)
                except Exception:
                    logger.exception("could not publish plan %s to its live sockets", plan_id)
        finally:
            self._flushers.pop(plan_id, None)

    async def _publish(self, plan_id: str) -> None:
        """Bring every viewer of ``plan_id`` up to date: one trip to a worker thread loads the
        plan and renders what the viewers miss (:meth:`_load_and_render`); then, on the loop, each
        viewer's access is asked again and those still allowed are sent their update."""
        viewers = [connection for connection in self.connections(plan_id) if not connection.is_closing]
        if not viewers:
            return
        shows: dict[tuple[str, str], dict[int, Mapping[str, Hashable] | None]] = {}
        for connection in viewers:
            shows.setdefault((connection.audience, connection.language), {})[connection.version] = (
                self._shown_keys(connection)
            )
        previous = {group: self._kept_rendition(plan_id, *group) for group in shows}
        plan, prepared = await anyio.to_thread.run_sync(self._load_and_render, plan_id, shows, previous)
        allowed = []
        for connection in self.connections(plan_id):
            if self._may_view(connection.audience, connection.account, plan):
                allowed.append(connection)
            else:
                connection.close(POLICY, "not allowed")
        if plan is None or not allowed:
            return
        renditions: dict[tuple[str, str], Rendition] = {}
        for connection in allowed:
            if connection.version >= plan.version or connection.is_closing or not self._joined(connection):
                continue  # a connection that left meanwhile: its plan's renditions may be gone for good
            group = (connection.audience, connection.language)
            rendition = renditions.get(group)
            if rendition is None:
                ready = prepared.get(group)
                if ready is not None:
                    rendition = await self._adopt(plan_id, ready)
                else:  # joined during the trip: rendered for it now
                    rendition = await self._rendition(plan_id, connection.language, plan, connection.audience)
                renditions[group] = rendition
            await self._send_update(connection, rendition)

    def _load_and_render(
        self,
        plan_id: str,
        shows: Mapping[tuple[str, str], Mapping[int, Mapping[str, Hashable] | None]],
        previous: Mapping[tuple[str, str], Rendition | None],
    ) -> tuple[ClientPlan | None, dict[tuple[str, str], Rendition]]:
        """In a worker thread: the plan as the read model has it, and for each (audience,
        language) with a viewer behind it, its rendition with every text the updates from the
        versions ``shows`` says the viewers show need (the keys worked out once an audience)."""
        plan = self.views.plan(plan_id)
        if plan is None:
            return None, {}
        keys: dict[str, Mapping[str, Hashable]] = {}
        prepared: dict[tuple[str, str], Rendition] = {}
        for (audience, language), versions in shows.items():
            behind = [since for version, since in versions.items() if version < plan.version]
            if not behind:
                continue
            panels = self._panels_of(audience)
            if audience not in keys:
                keys[audience] = panels.keys(plan)
            rendition = self._render(plan, language, audience, previous.get((audience, language)), keys[audience])
            missing = list(dict.fromkeys(id_ for since in behind for id_ in rendition.missing(since)))
            if missing:
                rendition.add(_rendered(panels, self.engine, plan, language, missing, rendition.kept))
            prepared[(audience, language)] = rendition
        return plan, prepared

    def _kept_rendition(self, plan_id: str, audience: str, language: str) -> Rendition | None:
        """A copy of the latest finished rendition of (plan, audience, language), for a worker
        thread to take its unchanged texts from while the loop may add to the original."""
        known = self._renditions.get((plan_id, audience, language))
        rendition = _finished(known[1]) if known is not None else None
        if rendition is None:
            return None
        return Rendition(version=rendition.version, plan=rendition.plan, audience=audience, language=language,
                         keys=rendition.keys, texts=dict(rendition.texts), items=dict(rendition.items),
                         kept=rendition.kept)

    async def _adopt(self, plan_id: str, rendition: Rendition) -> Rendition:
        """Keep ``rendition`` as the latest of its plan, audience and language, unless a later
        one is on its way or one of the same version is ready (made meanwhile for a socket that
        joined): that one."""
        key = (plan_id, rendition.audience, rendition.language)
        known = self._renditions.get(key)
        if known is not None and known[0] > rendition.version:
            return await asyncio.shield(known[1])
        if known is not None and known[0] == rendition.version:
            ready = _finished(known[1])
            if ready is not None:
                return ready
        future: asyncio.Future[Rendition] = asyncio.get_running_loop().create_future()
        future.set_result(rendition)
        self._renditions[key] = (rendition.version, future)
        self._remember_keys(plan_id, rendition.audience, rendition.version, rendition.keys)
        return rendition

    def _shown_keys(self, connection: LiveConnection) -> Mapping[str, Hashable] | None:
        """The panel keys of the version ``connection`` shows, if the hub remembers them."""
        return self._keys.get((connection.plan_id, connection.audience), {}).get(connection.version)

    async def _send_update(self, connection: LiveConnection, rendition: Rendition) -> None:
        """What ``connection`` misses of ``rendition``: the changed items and panels if the hub
        knows the version it shows, else every panel (rendering what is missing first)."""
        while True:
            shown = connection.version
            text = rendition.update(self._shown_keys(connection), shown)
            if text is not None:
                connection.send_plan(rendition.version, text)
                return
            await self._complete(rendition, [self._shown_keys(connection)])

    async def _complete(self, rendition: Rendition, since: Iterable[Mapping[str, Hashable] | None]) -> None:
        """Render, once, what the updates of ``rendition`` from each of ``since`` miss (in a worker thread)."""
        async with rendition.lock:
            missing = list(dict.fromkeys(id_ for keys in since for id_ in rendition.missing(keys)))
            if missing:
                panels = self._panels_of(rendition.audience)
                rendition.add(await anyio.to_thread.run_sync(
                    _rendered, panels, self.engine, rendition.plan, rendition.language, missing, rendition.kept
                ))

    # ------------------------------------------------------------------ sessions

    def session_ended(self, session_id: str) -> None:
        """A session ended on this instance (a sign-out): close its sockets now, before anything more is sent."""
        for connection in self.connections():
            if connection.session_id == session_id:
                connection.close(POLICY, "signed out")

    async def check_sessions(self) -> None:
        """Close the sockets whose session has ended (on any instance), asking the store once.

        A store that cannot answer closes nothing (the next sweep asks again); a socket is
        not told it signed out when nobody knows.
        """
        open_ = [c for c in self.connections() if not c.is_closing]
        if self.sessions is None or not open_:
            return
        pairs = [(c.session_id or "", c.account.account_id) for c in open_]
        try:
            alive = await anyio.to_thread.run_sync(self.sessions.live_sessions, pairs)
        except UNAVAILABLE as error:
            logger.warning("could not check the sessions of the live sockets: %s", error)
            return
        for connection in open_:
            if connection.session_id not in alive:
                connection.close(POLICY, "signed out")

    async def _sweep_sessions(self) -> None:
        while True:
            await asyncio.sleep(SESSION_SWEEP_S)
            try:
                await self.check_sessions()
            except Exception:
                logger.exception("could not check the sessions of the live sockets")

    async def _rendition(
        self, plan_id: str, language: str, plan: ClientPlan, audience: str = PROFESSIONALS
    ) -> Rendition:
        """``audience``'s panels of ``plan`` in ``language`` at its version: rendered once,
        however many ask; only the panels whose keys changed since the previous rendition."""
        version = plan.version
        key = (plan_id, audience, language)
        known = self._renditions.get(key)
        if known is not None and known[0] >= version:
            return await asyncio.shield(known[1])
        previous = self._kept_rendition(plan_id, audience, language)
        future: asyncio.Future[Rendition] = asyncio.get_running_loop().create_future()
        self._renditions[key] = (version, future)
        try:
            rendition = await anyio.to_thread.run_sync(self._render, plan, language, audience, previous)
        except BaseException as error:
            if self._renditions.get(key, (0, None))[1] is future:
                del self._renditions[key]
            if isinstance(error, asyncio.CancelledError):
                future.cancel()
            else:
                future.set_exception(error)
                future.exception()  # retrieved: the caller re-raises it
            raise
        self._remember_keys(plan_id, audience, version, rendition.keys)
        future.set_result(rendition)
        return rendition

    def _render(
        self,
        plan: ClientPlan,
        language: str,
        audience: str,
        previous: Rendition | None,
        keys: Mapping[str, Hashable] | None = None,
    ) -> Rendition:
        """In a worker thread: ``plan``'s keys (given, or worked out), with the texts of
        ``previous`` that they leave unchanged (a panel whose key is the same; an item whose
        key and panel's frame are) and what its panels kept; the rest is rendered when an
        update needs it."""
        if keys is None:
            keys = self._panels_of(audience).keys(plan)
        rendition = Rendition(version=plan.version, plan=plan, audience=audience, language=language, keys=keys)
        if previous is not None:
            rendition.kept = previous.kept
            rendition.texts = {panel: text for panel, text in previous.texts.items() if previous.keys.get(panel) == keys[panel]}
            rendition.items = _kept_items(previous, keys)
        return rendition

    async def _know_keys(self, plan_id: str, audience: str, plan: ClientPlan) -> None:
        """Remember the panel keys of the version a browser shows, so its first update is a delta."""
        if plan.version not in self._keys.get((plan_id, audience), {}):
            keys = await anyio.to_thread.run_sync(self._panels_of(audience).keys, plan)
            self._remember_keys(plan_id, audience, plan.version, keys)

    def _remember_keys(self, plan_id: str, audience: str, version: int, keys: Mapping[str, Hashable]) -> None:
        if plan_id not in self._viewers:
            return  # everyone left meanwhile
        kept = self._keys.setdefault((plan_id, audience), OrderedDict())
        kept[version] = keys
        kept.move_to_end(version)
        while len(kept) > KEPT_VERSIONS:
            kept.popitem(last=False)


def _rendered(
    panels: Panels, engine: Any, plan: ClientPlan, language: str, ids: list[str], kept: dict[Hashable, Any]
) -> Mapping[str, str]:
    """``panels.render`` of ``ids``, every one of them (in a worker thread)."""
    rendered = panels.render(engine, plan, language, ids, kept)
    left_out = [id_ for id_ in ids if id_ not in rendered]
    if left_out:
        raise LookupError(f"the panels rendered none of {left_out}")
    return rendered


def _kept_items(previous: Rendition, keys: Mapping[str, Hashable]) -> dict[str, str]:
    """The item texts of ``previous`` still right under ``keys``: the same item key in the same frame."""
    kept: dict[str, str] = {}
    for panel, key in keys.items():
        before = previous.keys.get(panel)
        if isinstance(key, PanelKey) and isinstance(before, PanelKey) and before.frame == key.frame:
            earlier = dict(before.items)
            kept.update(
                (item, previous.items[item])
                for item, item_key in key.items
                if item in previous.items and earlier.get(item) == item_key
            )
    return kept


def _unavailable(connection: LiveConnection, error: BaseException) -> None:
    """The database could not be asked (an outage, a restart): close with 1013, so that the
    browser reconnects and catches up; never taken for "not allowed" (1008, no reconnect)."""
    logger.info("live socket of plan %s closed to reconnect, the database is unavailable: %s", connection.plan_id, error)
    connection.close(TRY_AGAIN, "try again in a moment")


def _finished(future: asyncio.Future[Rendition]) -> Rendition | None:
    """The rendition if it is ready (not failed, not cancelled), else None."""
    if not future.done() or future.cancelled() or future.exception() is not None:
        return None
    return future.result()


async def _quietly(awaitable: Awaitable[Any]) -> None:
    try:
        await awaitable
    except Exception:  # noqa: S110 - the socket is going away anyway
        pass
