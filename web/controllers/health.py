"""Liveness and readiness checks for load balancers, orchestrators and the operator.

- ``GET /healthz`` (liveness): ``{"status": "ok"}`` while the process serves requests. It
  touches nothing else, so a database outage does not get healthy instances restarted.
- ``GET /readyz`` (readiness): whether this instance should get traffic. JSON, 200 when
  ready, 503 when not::

      {"status": "ready", "role": "web", "database": true, "event_log_head": 1234,
       "read_model_position": 1234, "lag": 0, "heard_position": 1234,
       "writer": false, "listening": true, "max_lag": 100, "reasons": []}

  Not ready when the database does not answer within ``READY_TIMEOUT_S``, when the read
  model is more than ``POLKU_READY_MAX_LAG`` events (default 100) behind the event log, or
  (PostgreSQL) when this instance does not hear the read model's notices, so its browsers
  would not get live updates. ``writer`` says whether this instance runs the projection
  (docs/deployment.md).

``polku project`` (the read model's dedicated writer, :func:`web.wiring.build_projector_app`)
answers the same two paths with the same report; it has no browsers, so not hearing the
notices does not make it unready, and ``"role": "projector"`` tells it from a web instance.

``/readyz`` is answered by a thin layer in front of the application (:func:`readiness_hook`,
installed on start-up after the sign-in wall), because a probe carries no session; it
shows positions only, nothing about any plan or person.
"""

from __future__ import annotations

import functools
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.to_thread
import msgspec
from litestar import Litestar, get

__all__ = ("READY_PATH", "health_check", "readiness", "readiness_hook")

READY_PATH = "/readyz"
READY_TIMEOUT_S = 3.0
DEFAULT_MAX_LAG = 100


@get("/healthz", name="healthz", sync_to_thread=False, cache_control=None, include_in_schema=False)
def health_check() -> dict[str, str]:
    """``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}


def max_lag() -> int:
    """``POLKU_READY_MAX_LAG`` (default 100); a value that is no whole number of 0 or more is
    refused at start (:func:`readiness_hook`), as every other setting is."""
    text = os.environ.get("POLKU_READY_MAX_LAG", "").strip()
    if not text:
        return DEFAULT_MAX_LAG
    if not text.isdigit():
        raise ValueError(f"POLKU_READY_MAX_LAG must be a whole number of 0 or more; got {text!r}")
    return int(text)


def readiness(
    plans: Any, views: Any, *, allowed_lag: int | None = None, projector: bool = False
) -> tuple[bool, dict[str, Any]]:
    """(ready?, the report) of an instance with this plan service and read model. Blocking.

    ``projector``: the process is ``polku project``, which needs no notices.
    """
    from domain.application import PlanService

    allowed = max_lag() if allowed_lag is None else allowed_lag
    report: dict[str, Any] = {
        "status": "not ready",
        "role": "projector" if projector else "web",
        "database": False,
        "event_log_head": None,
        "read_model_position": None,
        "lag": None,
        "heard_position": views.position,
        "writer": views.is_leader,
        "listening": views.is_listening,
        "max_lag": allowed,
        "reasons": [],
    }
    try:
        head = plans.recorder.max_notification_id() or 0
        position = views.store.max_tracking_id(PlanService.name) or 0
    except Exception as error:  # noqa: BLE001 - any failure means "not ready", with its kind
        report["reasons"].append(f"database: {type(error).__name__}")
        return False, report
    lag = max(head - position, 0)
    report.update(database=True, event_log_head=head, read_model_position=position, lag=lag)
    if lag > allowed:
        report["reasons"].append(f"read model {lag} events behind the event log")
    if not views.is_listening and not projector:
        report["reasons"].append("not hearing the read model's notices")
    if views.superseded is not None:
        report["reasons"].append(f"read model superseded: {views.superseded}")
    ready = not report["reasons"]
    report["status"] = "ready" if ready else "not ready"
    return ready, report


def _readiness_limiter(app: Litestar) -> anyio.CapacityLimiter:
    """A thread of its own for the readiness check (made on the app's loop at first use): the
    shared worker threads (``POLKU_WORKER_THREADS``, two by default) may all be busy with edits
    that wait for the read model, and a probe that waits behind them would call a healthy
    instance not ready."""
    limiter = app.state.get("readiness_limiter")
    if limiter is None:
        limiter = app.state.readiness_limiter = anyio.CapacityLimiter(1)
    return limiter


async def _answer(app: Litestar, scope: Any, send: Any) -> None:
    if scope["method"] not in ("GET", "HEAD"):
        status, body = 405, {"status": "method not allowed"}
    else:
        plans, views = app.state.get("plans"), app.state.get("views")
        status, body = 503, {"status": "starting", "reasons": ["not started"]}
        if plans is not None and views is not None:
            body = {"status": "not ready", "database": False, "reasons": ["database: no answer in time"]}
            with anyio.move_on_after(READY_TIMEOUT_S):
                check = functools.partial(readiness, plans, views, projector=app.state.get("projector", False))
                ready, body = await anyio.to_thread.run_sync(check, abandon_on_cancel=True,
                                                             limiter=_readiness_limiter(app))
                status = 200 if ready else 503
    payload = msgspec.json.encode(body)
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(payload)).encode()),
            (b"cache-control", b"no-store"),
            (b"x-content-type-options", b"nosniff"),
        ],
    })
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else payload})


@asynccontextmanager
async def readiness_hook(app: Litestar) -> AsyncIterator[None]:
    """Start-up hook for ``web.wiring``: answer ``/readyz`` in front of the application.

    Enter it after the sign-in wall is installed (its lifespan hook), so the probe is
    answered before the wall asks for a session.
    """
    max_lag()  # a bad value stops the start, not every answer of /readyz
    inner = app.asgi_handler

    async def probe(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == READY_PATH:
            await _answer(app, scope, send)
            return
        await inner(scope, receive, send)

    app.asgi_handler = probe
    try:
        yield
    finally:
        app.asgi_handler = inner
