"""The live hub: plan pages kept up to date over websockets, with who else is on the plan.

| module | what |
| --- | --- |
| `access.py` | `may_view(account, plan)`, `same_origin(connection)`, `signed_in_account(connection)` |
| `hub.py` | `LiveHub` (fan-out of the changed panels from the read model, coalesced presence, drain on shutdown), `LiveConnection` |
| `messages.py` | what travels on the socket: client JSON, the version marker, close codes |
| `presence.py` | the `#presence` fragment, rendered once per plan and language (`PresenceList`) |
| `routes.py` | the websocket route `/plans/{plan_id}/live`, the lifespan hook |

Wiring (``web/wiring.py``): ``route_handlers`` and ``lifespan_hooks`` below; the hub is
``app.state.live_hub``. The plan page (``plans/show.html``) connects with
``hx-ext="ws" ws-connect="/plans/<id>/live?version=<the version it shows>"`` (``live_path``),
holds ``#live-status``, ``#live-version`` and ``#presence`` (``plans/_live.html``) and loads
``/static/live.js``: drafts kept, connection status, the version on reconnecting, and
``editing`` messages. Message formats and close codes: :mod:`web.live.messages`.
"""

from __future__ import annotations

from web.live.access import may_view, same_origin, signed_in_account
from web.live.hub import LiveConnection, LiveHub
from web.live.routes import LIVE_PATH, live_hub_lifespan, live_path, plan_live

__all__ = (
    "LIVE_PATH",
    "LiveConnection",
    "LiveHub",
    "lifespan_hooks",
    "live_path",
    "may_view",
    "route_handlers",
    "same_origin",
    "signed_in_account",
)

route_handlers = [plan_live]
lifespan_hooks = [live_hub_lifespan]
