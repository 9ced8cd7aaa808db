"""``/plans/{plan_id}/live``: the websocket a plan page connects to (htmx ws extension).

The handshake is refused (HTTP 403: the socket is closed before it is accepted) unless the
``Origin`` is this site, the session is signed in, and the account may view the plan. When
the plan cannot be read (the database is unavailable) it is refused with HTTP 503 (close
1013 where the server cannot answer a handshake with a status): the browser tries again,
and nobody is told they lack access.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from litestar import Litestar, WebSocket, websocket
from litestar.params import FromPath

from web.errors import UNAVAILABLE, refuse_websocket_unavailable
from web.forms import whole_number
from web.i18n import language_of
from web.live.access import may_view, same_origin, signed_in_account
from web.live.hub import LiveHub
from web.live.messages import POLICY, TRY_AGAIN

__all__ = ("LIVE_PATH", "live_hub_lifespan", "live_path", "plan_live", "refuse_handshake", "shown_version")

LIVE_PATH = "/plans/{plan_id:str}/live"

logger = logging.getLogger(__name__)


def live_path(plan_id: str, version: int) -> str:
    """The ``ws-connect`` of a plan page that shows ``version`` of the plan."""
    return f"/plans/{plan_id}/live?version={int(version)}"


@websocket(LIVE_PATH, name="plan:live")
async def plan_live(socket: WebSocket, plan_id: FromPath[str]) -> None:
    hub: LiveHub | None = getattr(socket.app.state, "live_hub", None)
    if hub is None or not hub.accepting:
        await refuse_handshake(socket, TRY_AGAIN, "not serving live updates now")
        return
    if not same_origin(socket):
        await refuse_handshake(socket, POLICY, "foreign origin")
        return
    account = signed_in_account(socket)
    if account is None:
        await refuse_handshake(socket, POLICY, "not signed in")
        return
    try:
        plan_id = str(uuid.UUID(plan_id))
    except ValueError:
        await refuse_handshake(socket, POLICY, "no such plan")
        return
    try:
        plan = await hub.load(plan_id)
    except UNAVAILABLE as error:
        logger.warning("live socket refused, the database is unavailable: %s (%s)", socket.url.path, error)
        await refuse_websocket_unavailable(socket.scope, socket.send)
        return
    if not may_view(account, plan):
        await refuse_handshake(socket, POLICY, "not allowed")
        return
    await socket.accept()
    await hub.serve(socket, plan_id, account, language_of(socket), shown_version(socket))


@asynccontextmanager
async def live_hub_lifespan(app: Litestar) -> AsyncIterator[LiveHub]:
    """Start the hub with the app (``app.state.live_hub``) and drain its sockets on shutdown."""
    hub = LiveHub(app.state.views, app.template_engine, sessions=app.state.get("accounts"),
                  sockets_per_account=app.state.settings.sockets_per_account)
    await hub.start()
    app.state.live_hub = hub
    try:
        yield hub
    finally:
        await hub.stop()


async def refuse_handshake(socket: WebSocket, code: int, why: str) -> None:
    """Refuse the handshake: a close before accepting is answered with HTTP 403."""
    logger.info("live socket refused (%s): %s", why, socket.url.path)
    await socket.close(code=code, reason=why)


def shown_version(socket: WebSocket) -> int | None:
    """The plan's version the page showed when it connected (None if it named none)."""
    return whole_number(socket.query_params.get("version", ""))
