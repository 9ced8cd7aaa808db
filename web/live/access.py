"""Who may open a plan's live socket, and from where.

Three checks, each one function, so that later issues change one place:

- :func:`same_origin` — the handshake comes from a page of this site (the browser sends
  ``Origin``; websockets are not covered by the CSRF middleware);
- :func:`signed_in_account` — the session's account (``web.identity.account_of``), or None,
  and :func:`still_signed_in` — whether that session is still alive (sign-out, expiry);
- :func:`may_view` — whether that account may see that plan. It is asked on the handshake,
  on every message the browser sends, and before every fragment the hub sends (so a
  member taken out of the network stops receiving the plan at once).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from litestar.connection import ASGIConnection

    from domain.plan import ClientPlan
    from domain.values import Actor

__all__ = ("Viewer", "may_view", "same_origin", "signed_in_account", "still_signed_in")

PROFESSIONAL = "professional"
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Viewer(Protocol):
    """What the live hub needs of an account (``web.identity.Account`` has it)."""

    actor: Actor
    kind: str
    person_id: str
    organisation_id: str


def signed_in_account(connection: ASGIConnection[Any, Any, Any, Any]) -> Viewer | None:
    """The signed-in account of ``connection`` (its session, read on the handshake), or None."""
    from web.identity import account_of

    return account_of(connection)


async def still_signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the session the socket was opened with is still alive (read from the store)."""
    from web.identity import still_signed_in as alive

    return await alive(connection)


def may_view(account: Viewer | None, plan: ClientPlan | None) -> bool:
    """Whether ``account`` may see ``plan`` live.

    For now: a signed-in professional who is in the plan's network (the named expert and
    the counterpart are members too), or who works in the named expert's or the
    counterpart's organisation.
    """
    if account is None or plan is None or account.kind != PROFESSIONAL:
        return False
    if plan.member_of_person(account.person_id) is not None:
        return True
    organisations = {plan.expert.organisation_id}
    counterpart = plan.counterpart
    if counterpart is not None:
        organisations.add(counterpart.organisation_id)
    return account.organisation_id in organisations


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
