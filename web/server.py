"""Running the web application with uvicorn.

``serve()`` is what the ``polku`` command calls. The same app can be started by uvicorn
directly (settings from the environment)::

    uvicorn --factory web.server:app_factory --host 127.0.0.1 --port 8000

``project()`` runs the read model's dedicated writer (``polku project``,
:func:`web.wiring.build_projector_app`) the same way: uvicorn, graceful on SIGTERM, serving
only ``/healthz`` and ``/readyz``.

Either way the garbage collector runs under :class:`web.gc_policy.GcPolicy` (``POLKU_GC``,
docs/deployment.md): the long-lived heap frozen, full collections over it rare.
"""

from __future__ import annotations

from typing import Any

import uvicorn
from collections.abc import Callable

from litestar import Litestar

from web import log_redaction
from web.gc_policy import GcPolicy
from web.settings import Settings
from web.wiring import build_app, build_projector_app

__all__ = ("app_factory", "build_server", "project", "serve")


def serve(host: str, port: int, settings: Settings | None = None) -> None:
    """Serve Polku on ``host:port`` until interrupted (Ctrl-C or SIGTERM)."""
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
    }
    options.update(config)
    log_redaction.install()  # the filter outlives uvicorn's logging set-up in its Config
    if app is not None:
        return uvicorn.Server(uvicorn.Config(app, **options))
    policy = gc_policy or GcPolicy.from_env()  # read now: a bad value stops the command before it serves

    def factory() -> Litestar:
        built = build() if build is not None else build_app(settings or Settings.from_env())
        policy.install(built)
        return built

    return uvicorn.Server(uvicorn.Config(factory, factory=True, **options))


def app_factory() -> Litestar:
    """The whole app with settings from the environment, for ``uvicorn --factory``."""
    log_redaction.install()
    app = build_app(Settings.from_env())
    GcPolicy.from_env().install(app)
    return app
