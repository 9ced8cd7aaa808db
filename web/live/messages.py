"""What travels over a plan's live socket.

Browser -> server: small JSON messages (at most :data:`MAX_CLIENT_MESSAGE` characters)::

    {"type": "editing", "item": "need-4f1c…"}   an edit form of that item is open
    {"type": "editing", "item": null}           no edit form is open any more
    {"type": "resync"}                          send me the whole current plan again

Server -> browser: HTML whose every top-level element has an ``id`` and ``hx-swap-oob``,
so that htmx 2's ws extension swaps each one out of band, replacing by id (idempotent,
safe to receive twice). A plan update is :func:`version_marker` followed by the panels
that changed since the version the browser showed, or by every panel
(``web.plan_page.PlanPanels``); presence is one ``<div id="presence">``
(:mod:`web.live.presence`).

Close codes: :data:`POLICY` (1008: not, or no longer, allowed; the browser does not
reconnect), :data:`TOO_BIG` (1009), :data:`RESTART` (1012: server shutting down) and
:data:`TRY_AGAIN` (1013: the browser fell behind, or the database could not be asked just
now); htmx reconnects on 1012 and 1013 and the server then sends what the browser missed.
"""

from __future__ import annotations

import re

import msgspec
from markupsafe import Markup

__all__ = (
    "MAX_CLIENT_MESSAGE",
    "POLICY",
    "RESTART",
    "TOO_BIG",
    "TRY_AGAIN",
    "VERSION_MARKER_ID",
    "ClientMessage",
    "Editing",
    "Resync",
    "decode_client_message",
    "version_marker",
)

POLICY = 1008
TOO_BIG = 1009
RESTART = 1012
TRY_AGAIN = 1013

MAX_CLIENT_MESSAGE = 1024
VERSION_MARKER_ID = "live-version"
ITEM_ID = re.compile(r"^[a-z][a-z_]{0,30}-[A-Za-z0-9_-]{1,80}$")


class Editing(msgspec.Struct, tag="editing", tag_field="type"):
    """The sender opened an edit form of ``item`` (an element id such as ``need-<id>``), or closed it."""

    item: str | None = None


class Resync(msgspec.Struct, tag="resync", tag_field="type"):
    """The sender wants the whole current plan (after a kept draft held back an update)."""


ClientMessage = Editing | Resync
_DECODER = msgspec.json.Decoder(ClientMessage)


def decode_client_message(text: str) -> ClientMessage | None:
    """The message, or None when it is not one we know (it is then ignored)."""
    try:
        message = _DECODER.decode(text)
    except msgspec.DecodeError:
        return None
    if isinstance(message, Editing) and message.item is not None and not ITEM_ID.match(message.item):
        return None
    return message


def version_marker(version: int) -> str:
    """The element that tells the browser which plan version it now shows."""
    return str(
        Markup('<div id="{id}" data-version="{version}" hidden hx-swap-oob="true"></div>').format(
            id=VERSION_MARKER_ID, version=int(version)
        )
    )
