"""Who may open a plan's live socket, and from where.

Three checks, each one function, so that later issues change one place:

- :func:`same_origin` — the handshake comes from a page of this site (the browser sends
  ``Origin``; websockets are not covered by the CSRF middleware);
- :func:`signed_in_account` — the session's account (``web.identity.account_of``), or None,
  :func:`session_of` — the id of the session the socket came with, and
  :func:`still_signed_in` — whether that session is still alive (sign-out, expiry);
- :func:`may_view` — whether that account may see that plan: ``domain.access``'s one table
  (:func:`relation_of` the account to the plan, then ``may(relation, VIEW_PLAN)``), the
  same question every plan page asks. It is asked on the handshake, on every message the
  browser sends, and before every fragment the hub sends. Withdrawing a consent or
  removing a member is an event of the plan, so the hub loads the plan and asks again for
  every open socket of it: a socket that may no longer see the plan is closed with 1008
  before anything more is sent to it.
"""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

from domain.access import Action, Relation, may, relation_to
from domain.values import today_in_finland

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection

    from domain.plan import ClientPlan
    from domain.values import Actor

__all__ = (
    "Viewer",
    "may_view",
    "relation_of",
    "same_origin",
    "session_of",
    "signed_in_account",
    "still_signed_in",
    "today_in_finland",
)

_DEFAULT_PORTS = {"http": 80, "https": 443}


class Viewer(Protocol):
    """What the live hub needs of an account (``web.identity.Account`` has it)."""

    actor: Actor
    account_id: str
    kind: str
    person_id: str
    organisation_id: str
    # and, for a client, ``plan_id``: the plan the account belongs to (read with getattr)


def signed_in_account(connection: ASGIConnection[Any, Any, Any, Any]) -> Viewer | None:
    """The signed-in account of ``connection`` (its session, read on the handshake), or None."""
    from web.identity import account_of

    return account_of(connection)


def session_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The id of the session the socket was opened with, or None."""
    from web.identity import session_id_of

    return session_id_of(connection)


async def still_signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the session the socket was opened with is still alive (read from the store)."""
    from web.identity import still_signed_in as alive

    return await alive(connection)


def relation_of(account: Viewer, plan: ClientPlan, today: date | None = None) -> Relation:
    """How ``account`` stands to ``plan`` today (``domain.access.relation_to``)."""
    return relation_to(
        plan,
        kind=account.kind,
        person_id=account.person_id,
        organisation_id=account.organisation_id or "",
        client_plan_id=getattr(account, "plan_id", None),
        today=today or today_in_finland(),
    )


def may_view(account: Viewer | None, plan: ClientPlan | None) -> bool:
    """Whether ``account`` may see ``plan`` live: the plan page's rule, ``VIEW_PLAN``.

    A network member (the named expert and the counterpart are members too), or a colleague
    in the named expert's or the counterpart's organisation while the client's consent for
    that organisation is valid today.
    """
    if account is None or plan is None:
        return False
    return may(relation_of(account, plan), Action.VIEW_PLAN)


def same_origin(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the ``Origin`` of a websocket handshake is this site (its ``Host``).

    ``ws`` goes with ``http`` and ``wss`` with ``https`` (behind a TLS proxy, uvicorn's
    ``proxy_headers`` makes the scheme ``wss`` from ``X-Forwarded-Proto``). A missing
    Origin is refused: every browser sends one on a websocket handshake.
    """
    origin = connection.headers.get("origin")
    host = connection.headers.get("host")
    if not origin or not host:
        return False
    scheme = "https" if connection.scope.get("scheme") in ("wss", "https") else "http"
    try:
        given = urlsplit(origin)
        own = urlsplit(f"{scheme}://{host}")
        given_port = given.port or _DEFAULT_PORTS.get(given.scheme)
        own_port = own.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return False
    return (
        given.scheme == scheme
        and bool(given.hostname)
        and given.hostname == own.hostname
        and given_port == own_port
        and not given.path.strip("/")
        and not given.username
    )
