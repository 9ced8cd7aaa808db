"""Running the web application with uvicorn.

``serve()`` is what the ``polku`` command calls. The same app can be started by uvicorn
directly (settings from the environment)::

    uvicorn --factory web.server:app_factory --host 127.0.0.1 --port 8000

``project()`` runs the read model's dedicated writer (``polku project``,
:func:`web.wiring.build_projector_app`) the same way: uvicorn, graceful on SIGTERM, serving
only ``/healthz`` and ``/readyz``.

Either way the garbage collector runs under :class:`web.gc_policy.GcPolicy` (``POLKU_GC``,
docs/deployment.md): the long-lived heap frozen, full collections over it rare.

A database out of reach while the app starts (:data:`web.errors.UNAVAILABLE` from a
lifespan hook) is raised from ``serve()`` and ``project()`` as that error, which ``polku``
says in one line with exit code 75 (:func:`web.cli.main`), where uvicorn would log its
traceback and exit 3.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from collections.abc import Callable

from litestar import Litestar
from litestar.types import ASGIApp, Message, Receive, Scope, Send

from web import log_redaction
from web.errors import UNAVAILABLE
from web.gc_policy import GcPolicy
from web.live.messages import MAX_CLIENT_MESSAGE
from web.settings import Settings
from web.wiring import build_app, build_projector_app, store_settings_for

WS_MAX_FRAME = 4 * MAX_CLIENT_MESSAGE + 256
"""Bytes of the largest websocket frame taken in: the longest message the hub accepts, every
character four bytes of UTF-8, and room to spare."""

__all__ = ("app_factory", "build_server", "project", "serve")


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Serve Polku on ``host:port`` until interrupted (Ctrl-C or SIGTERM).

    The settings are read first: a bad one stops the command with its message
    (:class:`~domain.errors.ConfigurationError`) instead of a failed start-up's traceback."""
    settings = settings or Settings.from_env()
    store_settings_for(settings)
    build_server(host, port, settings).run()


def project(host: str, port: int) -> None:
    """Write the read model, with its health checks on ``host:port``, until interrupted (Ctrl-C or SIGTERM).

    On SIGTERM the projection stops between two events and the writer's lock is released
    with its connection: a web instance takes over within a second.
    """
    build_server(host, port, build=build_projector_app).run()


def build_server(
    host: str,
    port: int,
    settings: Settings | None = None,
    *,
    app: Litestar | None = None,
    gc_policy: GcPolicy | None = None,
    build: Callable[[], Litestar] | None = None,
    **config: Any,
) -> uvicorn.Server:
    """A uvicorn server for Polku, not yet started.

    It serves ``app`` if given (tests add routes that way), else ``build()`` if given (the
    projector), else ``build_app(settings)`` (:mod:`web.wiring`: the base pages, the plan
    pages, the plan service and read model), built when the server starts. ``config``
    overrides uvicorn options.

    The app built here runs under ``gc_policy`` (default :meth:`GcPolicy.from_env`); a given
    ``app`` is served as it is.
    """
    options: dict[str, Any] = {
        "host": host,
        "port": port,
        "server_header": False,  # do not advertise the server software
        "proxy_headers": True,  # trusts X-Forwarded-* from FORWARDED_ALLOW_IPS (default 127.0.0.1)
        "lifespan": "on",
        "timeout_graceful_shutdown": 10,  # then open websockets are closed (1012) and drained
        # permessage-deflate compresses every live update once per socket: 0.2-0.4 ms per
        # 34 KB each, half the server's CPU for a plan on 200 screens (docs/performance.md).
        "ws_per_message_deflate": False,
        # A browser sends small JSON messages: a frame over this is refused (1009) as it
        # arrives, not after it is in memory (uvicorn's default: 16 MiB a frame).
        "ws_max_size": WS_MAX_FRAME,
    }
    options.update(config)
    log_redaction.install()  # the filter outlives uvicorn's logging set-up in its Config
    if app is not None:
        return uvicorn.Server(uvicorn.Config(app, **options))
    policy = gc_policy or GcPolicy.from_env()  # read now: a bad value stops the command before it serves

    def factory() -> ASGIApp:
        built = build() if build is not None else build_app(settings or Settings.from_env())
        policy.install(built)
        return _reporting_unavailable_at_startup(_head_as_get(built), server)

    server = _Server(uvicorn.Config(factory, factory=True, **options))
    return server


class _Server(uvicorn.Server):
    """uvicorn's server, except that a start-up that failed because the database is out of
    reach (:attr:`unavailable`, noted by :func:`_reporting_unavailable_at_startup`) is
    raised as that error rather than uvicorn's ``SystemExit(3)``."""

    unavailable: BaseException | None = None

    async def startup(self, sockets: Any = None) -> None:
        try:
            await super().startup(sockets)
        except SystemExit:
            if self.unavailable is None:
                raise
            raise self.unavailable from None


def _head_as_get(app: ASGIApp) -> ASGIApp:
    """``app``, answering a HEAD request as its GET: HTTP asks a server to take HEAD wherever
    it takes GET (monitors and link checkers use it), and Litestar routes only the methods a
    handler names. uvicorn, which knows the request was a HEAD, sends the headers alone."""

    async def answering_head(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await app(scope, receive, send)

    return answering_head


def _reporting_unavailable_at_startup(app: ASGIApp, server: _Server) -> ASGIApp:
    """``app``, whose start-up failing only because the database is out of reach is noted
    on ``server`` and reported to uvicorn without a message, so that its log does not show
    the traceback (Litestar sends it as the failure's message). Any other failure is
    reported as it is."""

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return
        failure: Message | None = None

        async def holding_failure(message: Message) -> None:
            nonlocal failure
            if message["type"] == "lifespan.startup.failed":
                failure = message  # Litestar raises the error next
            else:
                await send(message)

        try:
            await app(scope, receive, holding_failure)
        except BaseException as error:
            unavailable = _unavailable_only(error) if failure is not None else None
            if unavailable is None:
                if failure is not None:
                    await send(failure)
                raise
            server.unavailable = unavailable
            await send({"type": "lifespan.startup.failed", "message": ""})
        else:
            if failure is not None:
                await send(failure)

    return guarded


def _unavailable_only(error: BaseException) -> BaseException | None:
    """``error`` if it is :data:`~web.errors.UNAVAILABLE`, or the first of a group of only
    such errors (Litestar's lifespan runs its hooks in a task group); else None."""
    if isinstance(error, BaseExceptionGroup):
        found, rest = error.split(UNAVAILABLE)
        if found is None or rest is not None:
            return None
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        return found
    return error if isinstance(error, UNAVAILABLE) else None


def app_factory() -> Litestar:
    """The whole app with settings from the environment, for ``uvicorn --factory``."""
    log_redaction.install()
    app = build_app(Settings.from_env())
    GcPolicy.from_env().install(app)
    return app
