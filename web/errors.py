"""Errors, answered in one place, in the user's language, without stack traces.

- Paths under ``/api/`` get JSON:
  ``{"error": {"code": "validation_failed", "message": "...", "fields": [...]}}``.
- htmx requests get a small fragment, sent (``HX-Retarget``) into the page's
  ``#messages`` live region; ``static/polku.js`` lets htmx swap it despite the 4xx/5xx.
- Other requests get a whole page.

An unexpected exception becomes a generic 500 and is logged with its traceback; the user
only sees that something went wrong. A store that cannot be reached (a database restart;
:class:`~domain.errors.StoreUnavailable` from the plan service or the account store, which
also raises it for a table locked past the timeout) is a retryable 503 with ``Retry-After``,
also when it happens outside Litestar's handlers, in the session and sign-in layers that
:func:`guard_store_unavailable` wraps (``web.identity.install`` does).

A route that wants to re-render its own form with the errors catches the validation itself;
these handlers are the fallback for everything else.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Final

import psycopg
from eventsourcing.persistence import InterfaceError as StoreInterfaceError
from eventsourcing.persistence import OperationalError as StoreOperationalError
from litestar import MediaType, Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.status_codes import HTTP_400_BAD_REQUEST, HTTP_500_INTERNAL_SERVER_ERROR, HTTP_503_SERVICE_UNAVAILABLE
from litestar.types import ASGIApp, ExceptionHandlersMap, Message, Receive, Scope, Send

from domain.errors import StoreUnavailable
from web.i18n import N_, language_of, translations
from web.security import issue_csrf_cookie

__all__ = (
    "EXCEPTION_HANDLERS",
    "MESSAGES_TARGET",
    "UNAVAILABLE",
    "StoreUnavailable",
    "guard_store_unavailable",
    "is_api_request",
    "is_htmx_request",
    "refuse_websocket_unavailable",
)

logger = logging.getLogger(__name__)

#: The element of ``base.html`` that error fragments of htmx requests go into.
MESSAGES_TARGET: Final = "#messages"
_CSRF_FAILURE_DETAIL: Final = "CSRF token verification failed"
_CLIENT_GONE: Final = "client disconnected prematurely"
"""How Litestar says that a request's body ended with the connection: no fault of the
service (a closed tab, a lost network), nor anyone to answer."""


@dataclass(frozen=True, slots=True)
class _ErrorText:
    code: str
    title: str
    message: str


_TEXTS: Final = {
    400: _ErrorText(
        "validation_failed",
        N_("The information could not be accepted"),
        N_("Some of the information you sent could not be accepted. Please check it and try again."),
    ),
    403: _ErrorText(
        "forbidden",
        N_("Not allowed"),
        N_("You do not have permission to do this."),
    ),
    404: _ErrorText(
        "not_found",
        N_("Page not found"),
        N_("We could not find the page you were looking for. Check the address or go to the front page."),
    ),
    405: _ErrorText(
        "method_not_allowed",
        N_("Not allowed"),
        N_("This address does not accept that kind of request."),
    ),
    503: _ErrorText(
        "store_unavailable",
        N_("The service is busy"),
        N_("The service could not reach its database just now. Nothing was saved. Please try again in a moment."),
    ),
    500: _ErrorText(
        "internal_error",
        N_("Something went wrong"),
        N_("The service could not complete your request. Please try again in a moment."),
    ),
}
_CSRF_TEXT: Final = _ErrorText(
    "csrf_failed",
    N_("The page has expired"),
    N_("For your security, the form could not be sent. Reload the page and try again."),
)
_OTHER_CLIENT_ERROR: Final = _ErrorText(
    "request_failed",
    N_("The request could not be completed"),
    N_("The service could not complete your request. Check what you sent and try again."),
)


def is_api_request(request: Request[Any, Any, Any]) -> bool:
    """Whether ``request`` is for the JSON API (a path under ``/api/``)."""
    path = request.url.path
    return path == "/api" or path.startswith("/api/")


def is_htmx_request(request: Request[Any, Any, Any]) -> bool:
    """Whether htmx sent ``request`` to swap a fragment (not to restore history)."""
    headers = request.headers
    return headers.get("hx-request") == "true" and headers.get("hx-history-restore-request") != "true"


def handle_validation_error(request: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    fields = [
        {"name": item.get("key"), "source": item.get("source"), "message": item.get("message")}
        for item in (exc.extra if isinstance(exc.extra, list) else [])
        if isinstance(item, dict)
    ]
    return _error_response(request, exc.status_code, _TEXTS[400], fields=fields)


def handle_http_error(request: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    if exc.status_code >= HTTP_500_INTERNAL_SERVER_ERROR:
        return handle_internal_error(request, exc)
    if exc.status_code == 403 and exc.detail == _CSRF_FAILURE_DETAIL:
        text = _CSRF_TEXT
    else:
        text = _TEXTS.get(exc.status_code, _OTHER_CLIENT_ERROR)
    return _error_response(request, exc.status_code, text, headers=exc.headers)


def handle_store_unavailable(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    """The database was unreachable or locked (a restart, a failover): a retryable 503."""
    logger.warning("store unavailable for %s %s: %s", request.method, request.url.path, exc)
    return _error_response(request, HTTP_503_SERVICE_UNAVAILABLE, _TEXTS[503], headers={"Retry-After": "2"})


def handle_internal_error(request: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    if isinstance(exc, HTTPException) and exc.detail == _CLIENT_GONE:
        logger.info("%s %s: the client went away before its request had arrived", request.method, request.url.path)
        return _error_response(request, HTTP_400_BAD_REQUEST, _TEXTS[400])
    logger.error("unhandled error for %s %s", request.method, request.url.path, exc_info=exc)
    return _error_response(request, HTTP_500_INTERNAL_SERVER_ERROR, _TEXTS[500])


#: What "the database is unavailable just now" is raised as: a retryable 503.
UNAVAILABLE: Final = (StoreOperationalError, StoreInterfaceError, psycopg.OperationalError, StoreUnavailable)

EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {
    ValidationException: handle_validation_error,
    HTTPException: handle_http_error,
    **dict.fromkeys(UNAVAILABLE, handle_store_unavailable),
    Exception: handle_internal_error,
}

#: A websocket refused before its handshake when the server cannot take it just now (RFC 6455, 1013).
_TRY_AGAIN_LATER: Final = 1013


def guard_store_unavailable(app: ASGIApp) -> ASGIApp:
    """``app`` with an :data:`UNAVAILABLE` error raised before its answer began answered as
    inside Litestar: 503 (page, fragment or JSON), or a websocket refused with 503 (close
    1013 where the server cannot answer a handshake with a status).

    For the layers that wrap the application outside its exception handlers (the session
    and sign-in middleware of :func:`web.identity.install`), which read the account store
    before any route runs.
    """

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        started = False

        async def noting_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await app(scope, receive, noting_send)
        except UNAVAILABLE as error:
            if started or scope["type"] not in ("http", "websocket"):
                raise
            if scope["type"] == "websocket":
                logger.warning("store unavailable for websocket %s: %s", scope["path"], error)
                await refuse_websocket_unavailable(scope, send)
                return
            request: Request[Any, Any, Any] = Request(scope, receive=receive, send=send)
            response = handle_store_unavailable(request, error)
            await response.to_asgi_response(app=None, request=request)(scope, receive, send)

    return guarded


async def refuse_websocket_unavailable(scope: Scope, send: Send) -> None:
    """Refuse a websocket not yet accepted because the database cannot be asked just now:
    HTTP 503 with ``Retry-After``, or close 1013 where the server cannot answer a handshake
    with a status. The browser tries again; nobody is told they lack access (a close
    before accepting would be answered 403)."""
    if "websocket.http.response" in (scope.get("extensions") or {}):
        await send({"type": "websocket.http.response.start", "status": HTTP_503_SERVICE_UNAVAILABLE,
                    "headers": [(b"content-type", b"text/plain; charset=utf-8"), (b"retry-after", b"2")]})
        await send({"type": "websocket.http.response.body", "body": b"try again in a moment"})
    else:
        await send({"type": "websocket.close", "code": _TRY_AGAIN_LATER, "reason": "try again in a moment"})


def _error_response(
    request: Request[Any, Any, Any],
    status_code: int,
    text: _ErrorText,
    *,
    fields: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> Response[Any]:
    language = language_of(request)
    _ = translations(language).gettext
    headers = dict(headers or {})
    if is_api_request(request):
        body = {"error": {"code": text.code, "message": _(text.message), "fields": fields or []}}
        return Response(body, status_code=status_code, media_type=MediaType.JSON, headers=headers)
    cookie = issue_csrf_cookie(request)
    fragment = is_htmx_request(request)
    if fragment:
        headers |= {"HX-Retarget": MESSAGES_TARGET, "HX-Reswap": "innerHTML"}
    template = "errors/_message.html" if fragment else "errors/error.html"
    context = {"request": request, "lang": language, "status_code": status_code,
               "title": text.title, "message": text.message}
    try:
        content = request.app.template_engine.render(template, **context)  # type: ignore[union-attr]
    except Exception:  # the error page itself failed: still say something, never a traceback
        logger.exception("could not render %s", template)
        content = f"<!doctype html><title>{status_code}</title><p>{status_code}</p>"
    return Response(
        content,
        status_code=status_code,
        media_type=MediaType.HTML,
        headers=headers,
        cookies=[cookie] if cookie else None,
    )
