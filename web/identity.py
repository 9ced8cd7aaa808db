"""Who is asking: accounts, sign-in methods, server-side sessions and the sign-in wall.

**The account.** :class:`Account` describes the signed-in person: a professional, a client
or an administrator, with their organisation (``""`` for clients) and, for a client, the
id of their plan. ``account.actor`` is the :class:`domain.values.Actor` that domain
commands want. Accounts are kept by :class:`web.accounts.AccountStore`.

**In a route handler** the account is ``request.user`` (typed ``Request[Account, Any, Any]``)
or, anywhere a connection is at hand (websocket handlers too), ``account_of(connection)``;
on the public pages it is ``None`` when nobody is signed in. Every other path is refused to
strangers before routing: a page is redirected to ``/signin?next=<the page>``, an htmx
request gets 401 (with ``HX-Redirect`` for a read; a form sent stays on its page, so that
what was typed is kept), an ``/api/`` request a 401 JSON error and a
websocket handshake a 401 (or a close with code 4401). The public paths are ``/``,
``/signin`` and everything under it, ``/static/``, ``/healthz`` and ``/language``.
:func:`require_kind` makes a guard for handlers that only some kinds of account may use.
A long-lived websocket can ask :func:`still_signed_in` now and then.

**Sessions** are Litestar's server-side sessions (:class:`SessionMiddleware` with
:class:`PolkuSessionBackend`) kept in the account store's ``sessions`` table through
:class:`SessionStore`, so that every web instance over one PostgreSQL database shares
them. The cookie (``polku_session``; ``__Host-polku_session`` when the settings say
``secure_cookies``) holds only a random id (32 bytes), is ``HttpOnly``, ``SameSite=Lax``,
``Secure`` over HTTPS, and lives as long as the browser session; the server ends a session
after :data:`IDLE_TIMEOUT` without requests and :data:`ABSOLUTE_TIMEOUT` after sign-in,
whichever comes first. Visitors who are not signed in get no session at all.
:func:`begin_session` (at sign-in) always issues a new id and forgets the old one;
:func:`end_session` (sign-out) deletes the session, so the old cookie opens nothing.

**Signing in is pluggable.** An :class:`Authenticator` turns what a sign-in form or
callback received into a :class:`~web.accounts.SignInResult`:

- :class:`PasswordAuthenticator` (now): ``{"username", "password"}``, checked against the
  argon2id hash, with the lock-out of :mod:`web.accounts`;
- an OpenID Connect provider (later, e.g. Suomi.fi identification for clients): its
  callback route would hand ``{"code", "state"}`` to an ``OidcAuthenticator`` that
  exchanges the code, checks the ID token and finds the account by the subject, then
  call :func:`begin_session` exactly like the password form does. Nothing else changes.

**Wiring.** :func:`lifespan_hook` opens the account store beside the event store
(``app.state.store_settings``), keeps it in ``app.state.accounts`` and installs the
session and sign-in middleware with :func:`install`; :data:`route_handlers` are the
sign-in pages (``web/controllers/signin.py``). The middleware wraps the application's
ASGI handler, before routing (``create_app`` takes no middleware of its own), so paths
without a route are behind the wall too; :func:`middleware` gives the same two layers as
Litestar ``DefineMiddleware`` for an app that takes middleware the usual way. Tests
install with :func:`install` and a store with a fake clock (see
``tests/web/identity_fixtures.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import quote, urlsplit

import anyio.to_thread
import msgspec
from litestar import MediaType, Request, Response
from litestar.connection import ASGIConnection
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.exceptions import NotAuthorizedException, PermissionDeniedException
from litestar.middleware import DefineMiddleware
from litestar.middleware.authentication import AbstractAuthenticationMiddleware, AuthenticationResult
from litestar.middleware.session.base import SessionMiddleware
from litestar.middleware.session.server_side import ServerSideSessionBackend, ServerSideSessionConfig
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_401_UNAUTHORIZED
from litestar.stores.base import Store
from litestar.types import Empty

from domain.values import Actor
from web.errors import guard_store_unavailable
from web.i18n import N_, language_of, translations
from web.security import safe_redirect_target

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.handlers.base import BaseRouteHandler
    from litestar.types import ASGIApp, Message, Receive, Scope, ScopeSession, Send

    from web.accounts import AccountStore, SignInResult
    from web.settings import Settings

__all__ = (
    "ABSOLUTE_TIMEOUT",
    "IDLE_TIMEOUT",
    "PUBLIC_PATHS",
    "Account",
    "Authenticator",
    "PasswordAuthenticator",
    "PolkuSessionBackend",
    "PolkuSessionConfig",
    "SessionStore",
    "SignInMiddleware",
    "account_of",
    "begin_session",
    "end_session",
    "install",
    "is_public",
    "landing_page",
    "lifespan_hook",
    "middleware",
    "require_kind",
    "route_handlers",
    "session_cookie_name",
    "still_signed_in",
)

#: A session ends after this many seconds without requests...
IDLE_TIMEOUT: Final = 30 * 60
#: ...and at the latest this many seconds after sign-in.
ABSOLUTE_TIMEOUT: Final = 12 * 60 * 60
#: How often ended sessions are deleted from the store (seconds).
PURGE_INTERVAL: Final = 10 * 60
#: Paths anyone may open (regular expressions on the path).
PUBLIC_PATHS: Final = (r"^/$", r"^/signin(/|$)", r"^/static/", r"^/healthz$", r"^/language$")
#: Paths that never touch the session at all.
_SESSIONLESS_PATHS: Final = [r"^/static/", r"^/healthz$"]

_ROTATE: Final = "polku.session.rotate"
_LOADED: Final = "polku.session.loaded"
#: (account id, account or None) read with the session, for the sign-in wall (one thread hop, not two).
_ACCOUNT: Final = "polku.session.account"
_PUBLIC = re.compile("|".join(PUBLIC_PATHS))
_SESSIONLESS = re.compile("|".join(_SESSIONLESS_PATHS))
_DOT_SEGMENT = re.compile(r"(^|/)\.\.?(/|$)")

logger = logging.getLogger(__name__)

AccountKindName = Literal["professional", "client", "admin"]

_NOT_SIGNED_IN_TITLE: Final = N_("Please sign in")
_NOT_SIGNED_IN_MESSAGE: Final = N_("Your session has ended or you have not signed in. Sign in to continue.")
_NOT_SAVED_SIGNED_OUT_MESSAGE: Final = N_(
    "Your session has ended, so this was not saved. What you wrote is still here: sign in again in a "
    "new tab, then come back to this page and send it again."
)


class Account(msgspec.Struct, frozen=True, kw_only=True):
    """The signed-in person (``request.user``)."""

    account_id: str
    kind: AccountKindName
    name: str
    person_id: str
    organisation_id: str = ""
    organisation_name: str = ""
    profession: str = ""
    plan_id: str | None = None

    @property
    def actor(self) -> Actor:
        """Who gives a domain command: this person, acting for their organisation."""
        return Actor(
            person_id=self.person_id,
            name=self.name,
            organisation_id=self.organisation_id,
            organisation_name=self.organisation_name,
        )

    @property
    def is_professional(self) -> bool:
        return self.kind == "professional"

    @property
    def is_client(self) -> bool:
        return self.kind == "client"

    @property
    def is_admin(self) -> bool:
        return self.kind == "admin"


def is_public(path: str) -> bool:
    """Whether anyone may open ``path`` (never a path with ``.``/``..`` segments)."""
    return bool(_PUBLIC.match(path)) and not _DOT_SEGMENT.search(path)


def landing_page(account: Account) -> str:
    """Where a person goes after signing in."""
    return {"professional": "/caseload", "client": "/my-plan", "admin": "/admin"}[account.kind]


# --------------------------------------------------------------------------- signing in


class Authenticator(Protocol):
    """One way of signing in (see the module docstring).

    ``authenticate`` is called in a worker thread (it may hash or call a provider) with
    what the sign-in form or callback received, and answers with the account or a refusal.
    """

    method: str

    def authenticate(self, credentials: Mapping[str, str]) -> SignInResult: ...


@dataclass(frozen=True, slots=True)
class PasswordAuthenticator:
    """Username and password against the argon2id hashes of the account store."""

    accounts: AccountStore
    method: str = "password"

    def authenticate(self, credentials: Mapping[str, str]) -> SignInResult:
        return self.accounts.verify_password(credentials.get("username", ""), credentials.get("password", ""))


def begin_session(connection: ASGIConnection[Any, Any, Any, Any], account: Account, *, method: str = "password") -> None:
    """Sign ``account`` in on this connection: a new session with a new id (the old one ends)."""
    connection.set_session({"account_id": account.account_id, "method": method, "signed_in_at": time.time()})
    connection.scope.setdefault("state", {})[_ROTATE] = True
    connection.scope["user"] = account


def end_session(connection: ASGIConnection[Any, Any, Any, Any]) -> None:
    """Sign out: the session is deleted and its cookie cleared."""
    connection.clear_session()
    connection.scope["user"] = None


def account_of(connection: ASGIConnection[Any, Any, Any, Any]) -> Account | None:
    """The signed-in account of a request or websocket, or None (on public pages only)."""
    user = connection.scope.get("user")
    return user if isinstance(user, Account) else None


def session_id_of(connection: ASGIConnection[Any, Any, Any, Any]) -> str | None:
    """The id of the session the request or websocket came with (read on arrival), or None."""
    loaded = connection.scope.get("state", {}).get(_LOADED)
    return loaded[0] if loaded else None


async def still_signed_in(connection: ASGIConnection[Any, Any, Any, Any]) -> bool:
    """Whether the connection's session is still alive (for long-lived websockets).

    Reads the session again without renewing it: an open socket does not keep a session
    alive by itself.
    """
    accounts = _accounts_of_app(connection.scope)
    session_id = session_id_of(connection)
    account = account_of(connection)
    if accounts is None or session_id is None or account is None:
        return False
    data = await anyio.to_thread.run_sync(accounts.session_get, session_id, None)
    if data is None:
        return False
    return msgspec.json.decode(data).get("account_id") == account.account_id


def require_kind(*kinds: AccountKindName) -> Callable[[ASGIConnection[Any, Any, Any, Any], BaseRouteHandler], None]:
    """A Litestar guard: only accounts of these kinds (``guards=[require_kind("professional")]``)."""

    def guard(connection: ASGIConnection[Any, Any, Any, Any], _handler: BaseRouteHandler) -> None:
        account = account_of(connection)
        if account is None:
            raise NotAuthorizedException()
        if account.kind not in kinds:
            raise PermissionDeniedException()

    return guard


# --------------------------------------------------------------------------- sessions


class SessionStore(Store):
    """Litestar's ``Store`` over the ``sessions`` table of the account store.

    ``set`` remembers which account a session belongs to (so that a new password ends
    them all) and fixes its absolute expiry when it is first stored.
    """

    def __init__(self, accounts: AccountStore, *, absolute_lifetime: float | None = ABSOLUTE_TIMEOUT) -> None:
        self.accounts = accounts
        self.absolute_lifetime = absolute_lifetime

    async def set(self, key: str, value: str | bytes, expires_in: int | timedelta | None = None) -> None:
        data = value.encode() if isinstance(value, str) else value
        account_id = _account_id_of(data)
        await anyio.to_thread.run_sync(
            lambda: self.accounts.session_set(
                key,
                data,
                expires_in=_seconds(expires_in),
                absolute_lifetime=self.absolute_lifetime,
                account_id=account_id,
            )
        )

    async def get(self, key: str, renew_for: int | timedelta | None = None) -> bytes | None:
        return await anyio.to_thread.run_sync(self.accounts.session_get, key, _seconds(renew_for))

    async def get_with_account(
        self, key: str, renew_for: int | timedelta | None = None
    ) -> tuple[bytes | None, tuple[str, Account | None] | None]:
        """:meth:`get`, and the account the session names (its id and the account, or None),
        read in the same worker-thread trip: every signed-in request needs both."""

        def read() -> tuple[bytes | None, tuple[str, Account | None] | None]:
            data = self.accounts.session_get(key, _seconds(renew_for))
            account_id = _account_id_of(data) if data is not None else None
            if account_id is None:
                return data, None
            return data, (account_id, self.accounts.account(account_id))

        return await anyio.to_thread.run_sync(read)

    async def delete(self, key: str) -> None:
        await anyio.to_thread.run_sync(self.accounts.session_delete, key)

    async def delete_all(self) -> None:
        await anyio.to_thread.run_sync(self.accounts.delete_all_sessions)

    async def exists(self, key: str) -> bool:
        return await anyio.to_thread.run_sync(self.accounts.session_exists, key)

    async def expires_in(self, key: str) -> int | None:
        return await anyio.to_thread.run_sync(self.accounts.session_expires_in, key)


@dataclass
class PolkuSessionConfig(ServerSideSessionConfig):
    """Server-side sessions in a :class:`SessionStore` (given, not looked up in ``app.stores``)."""

    session_store: Store | None = field(default=None)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._backend_class = PolkuSessionBackend  # type: ignore[assignment]

    def get_store_from_app(self, app: Litestar) -> Store:
        if self.session_store is None:
            return super().get_store_from_app(app)
        return self.session_store


class PolkuSessionBackend(ServerSideSessionBackend):
    """Litestar's server-side backend, made stricter:

    - a cookie id is used only if the store knows it (no session fixation), and a new id is
      issued at sign-in (:func:`begin_session`);
    - nothing is stored and no cookie is set for an empty session (visitors);
    - the session is written only when it changed (the store renews its expiry on reads);
    - the cookie has no ``Max-Age``: the server decides when a session ends.
    """

    config: PolkuSessionConfig

    async def load_from_connection(self, connection: ASGIConnection[Any, Any, Any, Any]) -> dict[str, Any]:
        session_id = connection.cookies.get(self.config.key)
        if session_id and 16 <= len(session_id) <= 256:
            store = self.config.get_store_from_app(connection.scope["app"])
            if isinstance(store, SessionStore):
                data, account = await store.get_with_account(session_id, renew_for=self._renew_for())
                if account is not None:
                    connection.scope.setdefault("state", {})[_ACCOUNT] = account
            else:
                data = await self.get(session_id, store=store)
            if data is not None:
                try:
                    session = msgspec.json.decode(data)
                except msgspec.DecodeError:
                    session = None
                if isinstance(session, dict):
                    connection.scope.setdefault("state", {})[_LOADED] = (session_id, data)
                    return session
        return {}

    def _renew_for(self) -> int | None:
        """What Litestar's :meth:`get` renews a read session for."""
        if not self.config.renew_on_access or self.config.max_age is None:
            return None
        return int(self.config.max_age)

    def get_session_id(self, connection: ASGIConnection[Any, Any, Any, Any]) -> str:
        loaded = connection.scope.get("state", {}).get(_LOADED)
        return loaded[0] if loaded else ""

    async def store_in_message(
        self, scope_session: ScopeSession, message: Message, connection: ASGIConnection[Any, Any, Any, Any]
    ) -> None:
        state = connection.scope.setdefault("state", {})
        loaded: tuple[str, bytes] | None = state.get(_LOADED)
        rotate = state.pop(_ROTATE, False)
        store = self.config.get_store_from_app(connection.scope["app"])
        headers = MutableScopeHeaders.from_message(message)
        if scope_session is Empty or not scope_session:
            if loaded is not None:
                await self.delete(loaded[0], store=store)
                state.pop(_LOADED, None)
            if self.config.key in connection.cookies:
                headers.add("Set-Cookie", self._cookie("", expires=0).to_header(header=""))
            return
        data = msgspec.json.encode(scope_session)
        if loaded is not None and not rotate:
            if data != loaded[1]:
                await self.set(loaded[0], data, store=store)
            return
        if loaded is not None:
            await self.delete(loaded[0], store=store)
        session_id = self.generate_session_id()
        await self.set(session_id, data, store=store)
        state[_LOADED] = (session_id, data)
        headers.add("Set-Cookie", self._cookie(session_id).to_header(header=""))

    def _cookie(self, value: str, *, expires: int | None = None) -> Cookie:
        return Cookie(
            key=self.config.key,
            value=value,
            path="/",
            expires=expires,
            secure=self.config.secure,
            httponly=True,
            samesite="lax",
            domain=None,
        )


def session_cookie_name(settings: Settings) -> str:
    return "__Host-polku_session" if settings.secure_cookies else "polku_session"


def session_config(settings: Settings, accounts: AccountStore) -> PolkuSessionConfig:
    return PolkuSessionConfig(
        key=session_cookie_name(settings),
        max_age=IDLE_TIMEOUT,
        renew_on_access=True,
        secure=settings.secure_cookies,
        httponly=True,
        samesite="lax",
        session_id_bytes=32,
        exclude=list(_SESSIONLESS_PATHS),
        session_store=SessionStore(accounts),
    )


# --------------------------------------------------------------------------- the sign-in wall


class SignInMiddleware(AbstractAuthenticationMiddleware):
    """Sets ``scope["user"]`` to the session's :class:`Account` (or None) and refuses strangers.

    Runs inside the session middleware. Public paths (:data:`PUBLIC_PATHS`) are open to
    everyone; everything else needs a signed-in account.
    """

    def __init__(self, app: ASGIApp, accounts: AccountStore) -> None:
        super().__init__(app, exclude=None)
        self.accounts = accounts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if _SESSIONLESS.match(path) and is_public(path):
            scope["user"], scope["auth"] = None, None
            await self.app(scope, receive, send)
            return
        result = await self.authenticate_request(ASGIConnection(scope, receive=receive, send=send))
        scope["user"], scope["auth"] = result.user, result.auth
        if result.user is None and not is_public(path):
            await _refuse(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def authenticate_request(self, connection: ASGIConnection[Any, Any, Any, Any]) -> AuthenticationResult:
        session = connection.scope.get("session")
        account_id = session.get("account_id") if isinstance(session, dict) else None
        if not isinstance(account_id, str):
            return AuthenticationResult(user=None, auth=None)
        read = connection.scope.get("state", {}).pop(_ACCOUNT, None)
        if read is not None and read[0] == account_id:  # read with the session, this request
            account = read[1]
        else:
            account = await anyio.to_thread.run_sync(self.accounts.account, account_id)
        if account is None:  # the account is gone: so is the session
            connection.scope["session"] = Empty
            return AuthenticationResult(user=None, auth=None)
        return AuthenticationResult(user=account, auth=session)


async def _refuse(scope: Scope, receive: Receive, send: Send) -> None:
    """401 for websockets, htmx and the API; a redirect to the sign-in page for pages."""
    if scope["type"] == "websocket":
        if "websocket.http.response" in (scope.get("extensions") or {}):
            await send({"type": "websocket.http.response.start", "status": HTTP_401_UNAUTHORIZED,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8")]})
            await send({"type": "websocket.http.response.body", "body": b"not signed in"})
        else:
            await send({"type": "websocket.close", "code": 4401, "reason": "not signed in"})
        return
    request: Request[Any, Any, Any] = Request(scope, receive=receive, send=send)
    language = language_of(request)
    _ = translations(language).gettext
    path = scope["path"]
    if path == "/api" or path.startswith("/api/"):
        body = {"error": {"code": "not_signed_in", "message": _(_NOT_SIGNED_IN_MESSAGE), "fields": []}}
        response: Response[Any] = Response(body, status_code=HTTP_401_UNAUTHORIZED, media_type=MediaType.JSON)
    elif request.headers.get("hx-request") == "true":
        response = _refuse_htmx(request, language)
    else:
        query = scope.get("query_string", b"").decode("latin-1")
        here = path + (f"?{query}" if query else "")
        target = sign_in_url(here) if scope.get("method") in ("GET", "HEAD") else "/signin"
        response = Response(
            content=b"", status_code=HTTP_303_SEE_OTHER, headers={"location": target}, media_type=MediaType.TEXT
        )
    await response.to_asgi_response(app=None, request=request)(scope, receive, send)


def _refuse_htmx(request: Request[Any, Any, Any], language: str) -> Response[Any]:
    """401 into ``#messages``. A fragment read goes on to the sign-in page (``HX-Redirect``);
    a form sent stays: leaving the page would throw away what was typed, so the message
    offers the sign-in in a new tab, after which the form can be sent again."""
    sent_a_form = request.method not in ("GET", "HEAD")
    headers = {"HX-Retarget": "#messages", "HX-Reswap": "innerHTML"}
    if not sent_a_form:
        current = urlsplit(request.headers.get("hx-current-url", ""))
        headers["HX-Redirect"] = sign_in_url(current.path + (f"?{current.query}" if current.query else ""))
    content = request.app.template_engine.render(  # type: ignore[union-attr]
        "errors/_message.html", request=request, lang=language, status_code=HTTP_401_UNAUTHORIZED,
        title=_NOT_SIGNED_IN_TITLE,
        message=_NOT_SAVED_SIGNED_OUT_MESSAGE if sent_a_form else _NOT_SIGNED_IN_MESSAGE,
        sign_in_in_new_tab=sent_a_form,
    )
    return Response(content, status_code=HTTP_401_UNAUTHORIZED, media_type=MediaType.HTML, headers=headers)


def sign_in_url(next_path: str) -> str:
    """``/signin?next=...`` for a page on this site (no ``next`` for anything else)."""
    target = safe_redirect_target(next_path, default="")
    if not target or target == "/" or target.startswith("/signin"):
        return "/signin"
    return "/signin?next=" + quote(target, safe="/")


# --------------------------------------------------------------------------- wiring


def middleware(settings: Settings, accounts: AccountStore) -> list[DefineMiddleware]:
    """The session and sign-in layers, outermost first, for ``Litestar(middleware=...)``."""
    config = session_config(settings, accounts)
    return [
        DefineMiddleware(SessionMiddleware, backend=PolkuSessionBackend(config)),
        DefineMiddleware(SignInMiddleware, accounts=accounts),
    ]


def install(
    app: Litestar,
    accounts: AccountStore,
    *,
    settings: Settings | None = None,
    authenticator: Authenticator | None = None,
) -> None:
    """Put ``app`` behind the sign-in wall, with ``accounts`` (idempotent).

    Keeps ``accounts`` and the authenticator in ``app.state.accounts`` and
    ``app.state.authenticator`` (the sign-in pages use them). The two layers read the
    account store before any route runs, outside Litestar's exception handlers, so the
    whole is wrapped in :func:`web.errors.guard_store_unavailable`: an account store that
    cannot be reached is a retryable 503 there too, not a bare 500.
    """
    if app.state.get("identity_installed"):
        return
    settings = settings or app.state.settings
    app.state.accounts = accounts
    app.state.authenticator = authenticator or PasswordAuthenticator(accounts)
    handler = app.asgi_handler
    for layer in reversed(middleware(settings, accounts)):
        handler = layer(handler)
    app.asgi_handler = guard_store_unavailable(handler)
    app.state.identity_installed = True


@asynccontextmanager
async def lifespan_hook(app: Litestar) -> AsyncIterator[None]:
    """Start-up/shutdown hook for ``web.wiring``: open the account store, install the wall.

    An app that has an account store installed already (tests) keeps it.
    """
    opened: AccountStore | None = None
    if not app.state.get("identity_installed"):
        from domain.storage import StoreSettings
        from web.accounts import AccountStore

        store_settings = app.state.get("store_settings")
        if store_settings is None:
            store_settings = msgspec.structs.replace(
                StoreSettings.from_environ(), data_dir=str(Path(app.state.settings.data_dir))
            )
        opened = await anyio.to_thread.run_sync(AccountStore.open, store_settings)
        install(app, opened)
    purger = asyncio.create_task(_purge_expired_sessions(app.state.accounts), name="polku-session-purge")
    try:
        yield
    finally:
        purger.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await purger
        if opened is not None:
            await anyio.to_thread.run_sync(opened.close)


async def _purge_expired_sessions(accounts: AccountStore, every: float = PURGE_INTERVAL) -> None:
    """Delete the sessions that ended without a sign-out, now and then."""
    while True:
        try:
            await anyio.to_thread.run_sync(accounts.purge_expired_sessions)
        except Exception:  # a busy or unreachable database: try again next time
            logger.warning("could not purge expired sessions", exc_info=True)
        await asyncio.sleep(every)


def __getattr__(name: str) -> Any:
    # route_handlers live in web.controllers.signin, which imports this module.
    if name == "route_handlers":
        from web.controllers.signin import SIGNIN_ROUTE_HANDLERS

        return SIGNIN_ROUTE_HANDLERS
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# --------------------------------------------------------------------------- helpers


def _seconds(value: int | timedelta | None) -> float | None:
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def _account_id_of(data: bytes) -> str | None:
    """The account id a stored session names, if it names one."""
    try:
        account_id = msgspec.json.decode(data).get("account_id")
    except (msgspec.DecodeError, AttributeError):
        return None
    return account_id if isinstance(account_id, str) else None


def _accounts_of_app(scope: Scope) -> AccountStore | None:
    app = scope.get("app")
    return app.state.get("accounts") if app is not None else None
