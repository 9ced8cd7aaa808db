"""The Litestar application: :func:`create_app` builds it from :class:`~web.settings.Settings`.

Adding pages: write a ``Controller`` (see ``web/controllers/home.py``) whose handlers
return ``litestar.response.Template`` for ``web/templates/<name>.html`` (extending
``base.html``), and pass it, with the dependencies it needs, to :func:`create_app`::

    app = create_app(settings, route_handlers=[PlanController],
                     dependencies={"plans": Provide(lambda: plan_service, use_cache=True)})

Every handler can ask for ``settings: NamedDependency[Settings]``.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Mapping, Sequence

import anyio.to_thread
from litestar import Litestar
from litestar.datastructures import State
from litestar.di import Provide
from litestar.logging import LoggingConfig
from litestar.static_files import create_static_files_router
from litestar.template import TemplateConfig
from litestar.types import ControllerRouterHandler

from web.controllers import BASE_ROUTE_HANDLERS
from web.errors import EXCEPTION_HANDLERS
from web.forms import refuse_malformed_form
from web.i18n import ensure_compiled
from web.security import add_security_headers, csrf_config
from web.settings import Settings
from web.templating import LocalisedJinjaEngine

__all__ = ("STATIC_DIR", "create_app")

STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(
    settings: Settings | None = None,
    *,
    route_handlers: Sequence[ControllerRouterHandler] = (),
    dependencies: Mapping[str, Provide] | None = None,
) -> Litestar:
    """The Polku web application.

    ``settings`` default to :meth:`Settings.from_env`; ``route_handlers`` (controllers,
    routers, handlers) and ``dependencies`` come on top of the base pages (front page,
    language switch, ``/healthz``, ``/static``).
    """
    settings = settings or Settings.from_env()
    ensure_compiled()
    engine = LocalisedJinjaEngine(auto_reload=settings.debug)  # templates change only with a new release
    return Litestar(
        route_handlers=[
            *BASE_ROUTE_HANDLERS,
            create_static_files_router(path="/static", directories=[STATIC_DIR], name="static"),
            *route_handlers,
        ],
        dependencies={"settings": Provide(lambda: settings, use_cache=True, sync_to_thread=False),
                      **(dependencies or {})},
        template_config=TemplateConfig(instance=engine),
        csrf_config=csrf_config(settings),
        exception_handlers=EXCEPTION_HANDLERS,
        before_request=refuse_malformed_form,
        before_send=[add_security_headers],
        # web.errors logs unexpected errors itself, once, with their traceback.
        logging_config=LoggingConfig(log_exceptions="never"),
        state=State({"settings": settings}),
        openapi_config=None,
        debug=settings.debug,
        on_startup=[_limit_worker_threads],
    )


def _limit_worker_threads(app: Litestar) -> None:
    """Run at most ``POLKU_WORKER_THREADS`` blocking calls at once, in each of the two ways they
    leave the event loop: ``anyio.to_thread`` (Polku's own calls; anyio's default limiter belongs
    to the running loop) and the loop's default executor (Litestar's sync handlers and dependencies)."""
    threads = app.state.settings.worker_threads
    anyio.to_thread.current_default_thread_limiter().total_tokens = threads
    asyncio.get_running_loop().set_default_executor(ThreadPoolExecutor(threads, thread_name_prefix="polku-sync"))
