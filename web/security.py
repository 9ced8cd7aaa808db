"""Protections that every response gets: security headers, CSRF, safe redirects.

CSRF: Litestar's CSRF middleware checks every unsafe request (POST, PUT, PATCH, DELETE)
for a token equal to the one in its cookie. Pages carry the token in
``<meta name="csrf-token">`` and on ``<body hx-headers>`` so that every htmx request sends it
in the ``x-csrftoken`` header; plain forms carry it in a hidden ``_csrf_token`` input. No
script reads the cookie, so it is ``HttpOnly``; it is ``Secure`` (and named
``__Host-csrftoken``) when the settings say the service is reached over HTTPS.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import urlsplit

from litestar.config.csrf import CSRFConfig
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.middleware.csrf import generate_csrf_token
from litestar.utils.empty import value_or_default
from litestar.utils.scope.state import ScopeState

if TYPE_CHECKING:
    from litestar.connection import Request
    from litestar.types import Message, Scope

    from web.settings import Settings

__all__ = (
    "CONTENT_SECURITY_POLICY",
    "CSRF_FORM_FIELD",
    "CSRF_HEADER_NAME",
    "SECURITY_HEADERS",
    "add_security_headers",
    "csrf_config",
    "csrf_token_of",
    "issue_csrf_cookie",
    "safe_redirect_target",
)

CSRF_HEADER_NAME: Final = "x-csrftoken"
#: The form field Litestar's CSRF middleware reads.
CSRF_FORM_FIELD: Final = "_csrf_token"

CONTENT_SECURITY_POLICY: Final = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "frame-ancestors 'none'",
        "base-uri 'self'",
        "form-action 'self'",
    )
)

SECURITY_HEADERS: Final = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
    "x-frame-options": "DENY",
    "cross-origin-opener-policy": "same-origin",
}

# Paths whose requests never need a CSRF token (nor a cookie set on them).
_CSRF_EXEMPT_PATHS: Final = ["^/static/", "^/healthz$"]
_MAX_REDIRECT_LENGTH: Final = 2048


def csrf_config(settings: Settings) -> CSRFConfig:
    """The CSRF configuration for ``settings``."""
    return CSRFConfig(
        secret=settings.derive_key("csrf"),
        cookie_name="__Host-csrftoken" if settings.secure_cookies else "csrftoken",
        cookie_path="/",
        cookie_secure=settings.secure_cookies,
        cookie_httponly=True,
        cookie_samesite="lax",
        header_name=CSRF_HEADER_NAME,
        exclude=list(_CSRF_EXEMPT_PATHS),
    )


async def add_security_headers(message: Message, scope: Scope) -> None:
    """``before_send`` hook: the security headers on every HTTP response, even 404s of no route.

    HTML is also marked ``Cache-Control: no-store``: pages show personal data.
    """
    if message["type"] != "http.response.start":
        return
    headers = MutableScopeHeaders.from_message(message)
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value
    if headers.get("content-type", "").startswith("text/html"):
        headers["cache-control"] = "no-store"


def csrf_token_of(request: Request) -> str:
    """The CSRF token to put into the page rendered for ``request`` ("" if there is none).

    The CSRF middleware leaves it in the scope; a page it did not see (an error page for a
    path with no route) uses the token of the cookie, or one made by :func:`issue_csrf_cookie`.
    """
    token = value_or_default(ScopeState.from_scope(request.scope).csrf_token, "")
    if token:
        return token
    config = request.app.csrf_config
    return request.cookies.get(config.cookie_name, "") if config else ""


def issue_csrf_cookie(request: Request) -> Cookie | None:
    """Make a CSRF token for a request that has none; return the cookie to set with it.

    Error pages outside the CSRF middleware use it so that their forms (the language
    switch) work even when the error page is the first page the browser loads.
    """
    config = request.app.csrf_config
    if config is None or csrf_token_of(request):
        return None
    token = generate_csrf_token(secret=config.secret)
    ScopeState.from_scope(request.scope).csrf_token = token
    return Cookie(
        key=config.cookie_name,
        value=token,
        path=config.cookie_path,
        secure=config.cookie_secure,
        httponly=config.cookie_httponly,
        samesite=config.cookie_samesite,
        domain=config.cookie_domain,
    )


def safe_redirect_target(target: str | None, default: str = "/") -> str:
    """``target`` if it is a path on this site (``/plans/1?tab=goals``), else ``default``.

    Refuses anything a browser could take to another site: absolute and scheme-relative
    URLs (``https://x``, ``//x``), backslashes (``/\\x``), control characters and spaces
    (browsers drop tabs and newlines: ``/\\t/x`` becomes ``//x``), and non-ASCII.
    """
    if not target or len(target) > _MAX_REDIRECT_LENGTH:
        return default
    if not target.startswith("/") or target.startswith("//") or "\\" in target:
        return default
    if any(not ("\x21" <= character <= "\x7e") for character in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target
