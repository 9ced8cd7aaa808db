"""The whole Polku web application: the foundation of :mod:`web.app` plus the plan pages.

:func:`build_app` is what ``polku serve`` and ``uvicorn --factory web.server:app_factory``
run. On start-up it opens one long-lived :class:`~domain.application.PlanService` (the
write side) and one :class:`~projections.plans.PlanViews` (the read model, following the
event log), keeps them in ``app.state.plans`` and ``app.state.views``, and closes them on
shutdown. Route handlers ask for them by name::

    async def show(self, plans: NamedDependency[PlanService], views: NamedDependency[PlanViews]): ...

:func:`build_projector_app` is what ``polku project`` runs: the same plan service and read
model, no pages, only ``/healthz`` and ``/readyz``; it writes the read model for the web
instances (docs/deployment.md, "A dedicated projector").

Other parts of the web layer plug in at the two marked extension points below: their
route handlers (:func:`extra_route_handlers`) and their start-up/shutdown work
(:func:`lifespan_hooks`, entered after the plan service and views are open, left before
they close, so a hook may use ``app.state.views``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import anyio.to_thread
import msgspec
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import NamedDependency, Provide
from litestar.types import ControllerRouterHandler

from domain.application import PlanService
from domain.storage import StoreSettings
from projections.leader import StartupLock
from projections.plans import PlanViews
from web.app import create_app
from web.controllers.admin import ADMIN_ROUTE_HANDLERS, access_log_lifespan, provide_access_log
from web.controllers.admin import EXCEPTION_HANDLERS as ACCESS_LOG_EXCEPTION_HANDLERS
from web.controllers.caseload import CASELOAD_ROUTE_HANDLERS
from web.controllers.plans import PLAN_ROUTE_HANDLERS
from web.settings import Settings

__all__ = (
    "LifespanHook",
    "build_app",
    "build_projector_app",
    "extra_route_handlers",
    "lifespan_hooks",
    "store_settings_for",
)

LifespanHook = Callable[[Litestar], AbstractAsyncContextManager[Any]]
"""Start-up/shutdown work: ``hook(app)`` gives an async context manager, entered on start-up
(after ``app.state.plans``/``app.state.views`` exist) and left on shutdown (before they close)."""


def build_app(web_settings: Settings | None = None, store_settings: StoreSettings | None = None) -> Litestar:
    """The Polku application with the plan pages, the plan service and the read model.

    ``web_settings`` default to :meth:`Settings.from_env`; ``store_settings`` to
    :func:`store_settings_for` them (the POLKU_* variables, with the SQLite files in the
    web settings' data folder).
    """
    web_settings = web_settings or Settings.from_env()
    store = store_settings or store_settings_for(web_settings)
    app = create_app(
        web_settings,
        route_handlers=[*CASELOAD_ROUTE_HANDLERS, *PLAN_ROUTE_HANDLERS, *extra_route_handlers()],
        dependencies={
            "plans": Provide(_plans_of, sync_to_thread=False),
            "views": Provide(_views_of, sync_to_thread=False),
            "access_log": Provide(provide_access_log, sync_to_thread=False),  # app.state.access_log
        },
    )
    app.exception_handlers.update(ACCESS_LOG_EXCEPTION_HANDLERS)  # a read that cannot be logged: 503
    app.state.store_settings = store
    lifespan = _Lifespan(store, lifespan_hooks())
    app.on_startup.append(lifespan.start)
    app.on_shutdown.append(lifespan.stop)
    return app


def build_projector_app(store_settings: StoreSettings | None = None) -> Litestar:
    """The read model's dedicated writer (``polku project``): no pages, ``/healthz`` and ``/readyz``.

    It opens the plan service and read model as an instance does, and its election of the
    read model's writer is a dedicated candidate (``PlanViews(dedicated=True)``):
    the web instances leave the writer's lock to it, and take it back when it is gone.
    PostgreSQL only: over SQLite the one ``polku serve`` writes its own read model.
    """
    from web.controllers.health import health_check, readiness_hook

    store = store_settings or StoreSettings.from_environ()
    if store.kind != "postgres":
        raise ValueError("`polku project` needs POLKU_STORE=postgres (over SQLite `polku serve` writes its read model)")
    app = Litestar(route_handlers=[health_check], openapi_config=None)
    app.state.projector = True  # /readyz: this process needs no notices (it has no browsers to tell)
    lifespan = _Lifespan(store, [readiness_hook], dedicated=True)
    app.on_startup.append(lifespan.start)
    app.on_shutdown.append(lifespan.stop)
    return app


def store_settings_for(web_settings: Settings, environ: dict[str, str] | None = None) -> StoreSettings:
    """The store of the POLKU_* variables; a SQLite store lives in the web settings' data folder."""
    settings = StoreSettings.from_environ(environ)
    if settings.kind == "sqlite":
        settings = msgspec.structs.replace(settings, data_dir=str(Path(web_settings.data_dir)))
    return settings


# ----------------------------------------------------------------------------------------
# EXTENSION POINT 1 — route handlers of the other parts of the web layer.
# Add one line per module, e.g.:
#     from web import identity;  handlers += identity.route_handlers
#     from web import live;      handlers += live.route_handlers
# ----------------------------------------------------------------------------------------
def extra_route_handlers() -> list[ControllerRouterHandler]:
    handlers: list[ControllerRouterHandler] = []
    from web import identity, live

    handlers += identity.route_handlers

    handlers += ADMIN_ROUTE_HANDLERS  # /admin: organisations, people, statistics, the access log

    handlers += live.route_handlers

    from web.controllers.client import CLIENT_ROUTE_HANDLERS

    handlers += CLIENT_ROUTE_HANDLERS  # /my-plan: the client's own view, and its live socket
    return handlers


# ----------------------------------------------------------------------------------------
# EXTENSION POINT 2 — start-up/shutdown hooks (see LifespanHook), entered in this order
# after the plan service and views are open, left in reverse order before they close.
# Add one line per module, e.g.:
#     from web import live;  hooks += live.lifespan_hooks
# ----------------------------------------------------------------------------------------
def lifespan_hooks() -> list[LifespanHook]:
    hooks: list[LifespanHook] = []
    from web import identity, live

    hooks += [identity.lifespan_hook]  # first: the sign-in wall and the account store

    from web.controllers.health import readiness_hook

    hooks += [readiness_hook]  # after the wall: /readyz is answered in front of it (no session)

    hooks += [access_log_lifespan]  # before the live hub: its sockets' first loads are logged

    hooks += live.lifespan_hooks

    from web.controllers import client

    hooks += [client.lifespan_hook]  # after the live hub: registers the client's audience with it
    return hooks


# ---------------------------------------------------------------------------- helpers


def _plans_of(state: State, views: NamedDependency[PlanViews]) -> PlanService:
    """The plan service; ``views`` only orders the two dependencies.

    Litestar resolves the dependencies of a handler that do not depend on each other
    together, in an anyio task group (two tasks on every request of the history page and
    the client's pages, which ask for both); one after the other they cost a call each.
    The plan service waits for the views rather than the other way round: most handlers
    ask for the views alone.
    """
    return state.plans


def _views_of(state: State) -> PlanViews:
    return state.views


class _Lifespan:
    """Opens the plan service and views on start-up, closes them on shutdown."""

    def __init__(self, store: StoreSettings, hooks: list[LifespanHook], *, dedicated: bool = False) -> None:
        self.store = store
        self.hooks = hooks
        self.dedicated = dedicated
        """Whether the read model's writer is a dedicated candidate (``polku project``)."""
        self.stack: AsyncExitStack | None = None

    async def start(self, app: Litestar) -> None:
        stack = AsyncExitStack()
        await stack.__aenter__()
        # One instance at a time creates the schemas and tables (docs/deployment.md).
        startup = await anyio.to_thread.run_sync(StartupLock.hold, self.store)
        try:
            await stack.enter_async_context(self._service_and_views(app))
            for hook in self.hooks:
                await stack.enter_async_context(hook(app))
        except BaseException:
            await stack.aclose()
            raise
        finally:
            await anyio.to_thread.run_sync(startup.release)
        self.stack = stack

    async def stop(self, app: Litestar) -> None:
        stack, self.stack = self.stack, None
        if stack is not None:
            await stack.aclose()

    @asynccontextmanager
    async def _service_and_views(self, app: Litestar) -> AsyncIterator[None]:
        plans = await anyio.to_thread.run_sync(PlanService, self.store)
        try:
            views = await anyio.to_thread.run_sync(lambda: PlanViews(self.store, dedicated=self.dedicated))
        except BaseException:
            plans.close()
            raise
        app.state.plans = plans
        app.state.views = views
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(views.close)
            await anyio.to_thread.run_sync(plans.close)
