"""Signing in and out: ``/signin``, ``/signin/link/{token}`` (first password), ``POST /signout``.

The forms carry the CSRF token like every form. A refused sign-in says the same for an
unknown username and a wrong password; a locked username (too many failures) is told how
long to wait. After signing in, a person goes to ``next`` if it is a page of this site,
else to their landing page (:func:`web.identity.landing_page`).
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Final

import anyio.to_thread
import msgspec
from babel.dates import format_time
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery, URLEncodedBody
from litestar.response import Redirect, Template
from litestar.status_codes import HTTP_303_SEE_OTHER, HTTP_400_BAD_REQUEST, HTTP_429_TOO_MANY_REQUESTS
from litestar.types import ControllerRouterHandler

from domain.values import FINLAND
from web.accounts import MAX_PASSWORD_LENGTH, MIN_PASSWORD_LENGTH, PasswordRejected, check_new_password
from web.i18n import N_, language_of
from web.identity import Account, account_of, begin_session, end_session, landing_page, session_id_of
from web.security import safe_redirect_target

__all__ = ("SIGNIN_ROUTE_HANDLERS", "SignInController", "sign_out")

WRONG_CREDENTIALS: Final = N_("The username or password is incorrect.")
MISSING_CREDENTIALS: Final = N_("Enter your username and password.")
LINK_INVALID: Final = N_(
    "This sign-in link is not valid. It may have expired or been used already. "
    "Ask your administrator for a new link."
)
PASSWORD_TOO_SHORT: Final = N_("The password must be at least %(min)s characters long.")
PASSWORD_TOO_LONG: Final = N_("The password can be at most %(max)s characters long.")
PASSWORDS_DIFFER: Final = N_("The passwords do not match.")
SIGNED_OUT: Final = N_("You have signed out.")
# Times as written in Finland in each language (like web.i18n.format_date).
_TIME_LOCALES: Final = {"fi": "fi_FI", "sv": "sv_FI", "en": "en_FI"}


class SignInForm(msgspec.Struct):
    username: str = ""
    password: str = ""
    next: str = ""


class NewPasswordForm(msgspec.Struct):
    password: str = ""
    password_again: str = ""


class SignInController(Controller):
    path = "/signin"

    @get(name="signin:form", sync_to_thread=False)
    def form(
        self,
        request: Request[Account | None, Any, Any],
        next: FromQuery[str] = "",  # noqa: A002
        signed_out: FromQuery[bool] = False,
    ) -> Template | Redirect:
        """The sign-in form (someone signed in already goes on)."""
        account = account_of(request)
        if account is not None:
            return Redirect(path=_after_sign_in(account, next), status_code=HTTP_303_SEE_OTHER)
        return _sign_in_page(next=next, notice=SIGNED_OUT if signed_out else None)

    @post(name="signin:submit")
    async def submit(self, request: Request[Any, Any, Any], data: URLEncodedBody[SignInForm]) -> Template | Redirect:
        username = data.username.strip()
        if not username or not data.password:
            return _sign_in_page(next=data.next, username=username, error=MISSING_CREDENTIALS,
                                 status_code=HTTP_400_BAD_REQUEST)
        authenticator = request.app.state.authenticator
        result = await anyio.to_thread.run_sync(
            authenticator.authenticate, {"username": username, "password": data.password}
        )
        if result.account is None:
            if result.locked_until is not None:
                wait = max(1, math.ceil(result.locked_until - request.app.state.accounts.clock()))
                return _sign_in_page(next=data.next, username=username,
                                     locked_until=_time_of_day(result.locked_until, language_of(request)),
                                     status_code=HTTP_429_TOO_MANY_REQUESTS, headers={"retry-after": str(wait)})
            return _sign_in_page(next=data.next, username=username, error=WRONG_CREDENTIALS,
                                 status_code=HTTP_400_BAD_REQUEST)
        begin_session(request, result.account, method=authenticator.method)
        return Redirect(path=_after_sign_in(result.account, data.next), status_code=HTTP_303_SEE_OTHER)

    @get("/link/{token:str}", name="signin:link", sync_to_thread=True)
    def link(self, request: Request[Any, Any, Any], token: FromPath[str]) -> Template:
        """The first sign-in link: a form to set one's password (opening it uses nothing up)."""
        account = request.app.state.accounts.account_for_link(token)
        if account is None:
            return _link_invalid()
        return _link_page(account, token, username=request.app.state.accounts.username_of(account.account_id))

    @post("/link/{token:str}", name="signin:set-password")
    async def set_password(
        self, request: Request[Any, Any, Any], token: FromPath[str], data: URLEncodedBody[NewPasswordForm]
    ) -> Template | Redirect:
        accounts = request.app.state.accounts
        account = await anyio.to_thread.run_sync(accounts.account_for_link, token)
        if account is None:
            return _link_invalid()
        error: str | None = None
        if data.password != data.password_again:
            error = PASSWORDS_DIFFER
        else:
            try:
                check_new_password(data.password)
            except PasswordRejected as rejected:
                error = PASSWORD_TOO_LONG if rejected.code == "too_long" else PASSWORD_TOO_SHORT
        if error is not None:
            username = await anyio.to_thread.run_sync(accounts.username_of, account.account_id)
            return _link_page(account, token, username=username, error=error, status_code=HTTP_400_BAD_REQUEST)
        account = await anyio.to_thread.run_sync(accounts.set_password_with_link, token, data.password)
        if account is None:  # used or expired while the form was open
            return _link_invalid()
        begin_session(request, account)
        return Redirect(path=landing_page(account), status_code=HTTP_303_SEE_OTHER)


@post("/signout", name="signout", sync_to_thread=False, status_code=HTTP_303_SEE_OTHER)
def sign_out(request: Request[Any, Any, Any]) -> Redirect:
    """End the session, and its live sockets on this instance at once; back to the sign-in page.
    (Another instance's sockets of the session close at its next sweep, ``web.live.hub``.)"""
    session_id = session_id_of(request)
    hub = request.app.state.get("live_hub")
    if session_id and hub is not None:
        hub.session_ended(session_id)
    end_session(request)
    return Redirect(path="/signin?signed_out=1", status_code=HTTP_303_SEE_OTHER)


SIGNIN_ROUTE_HANDLERS: Final[tuple[ControllerRouterHandler, ...]] = (SignInController, sign_out)


def _after_sign_in(account: Account, next_path: str) -> str:
    target = safe_redirect_target(next_path, default="")
    if not target or target == "/" or target.startswith(("/signin", "/signout")):
        return landing_page(account)
    return target


def _time_of_day(timestamp: float, language: str) -> str:
    """``14.35`` in Finland's time, as written in ``language``."""
    moment = dt.datetime.fromtimestamp(math.ceil(timestamp / 60) * 60, FINLAND)
    return format_time(moment, "short", locale=_TIME_LOCALES.get(language, "fi_FI"))


def _sign_in_page(
    *,
    next: str = "",  # noqa: A002
    username: str = "",
    error: str | None = None,
    notice: str | None = None,
    locked_until: str | None = None,
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> Template:
    return Template(
        template_name="signin.html",
        context={
            "next": safe_redirect_target(next, default=""),
            "username": username[:200],
            "error": error,
            "notice": notice,
            "locked_until": locked_until,
        },
        status_code=status_code,
        headers=headers,
    )


def _link_page(
    account: Account, token: str, *, username: str | None, error: str | None = None, status_code: int = 200
) -> Template:
    return Template(
        template_name="signin_link.html",
        context={
            "account": account,
            "username": username or "",
            "token": token,
            "error": error,
            "min_length": MIN_PASSWORD_LENGTH,
            "max_length": MAX_PASSWORD_LENGTH,
        },
        status_code=status_code,
    )


def _link_invalid() -> Template:
    return Template(template_name="signin_link_invalid.html", context={"message": LINK_INVALID}, status_code=404)
