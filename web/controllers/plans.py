"""The plan pages (``/plans/{id}``): the plan, its panels, editing in place, history."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

PLAN_ROUTE_HANDLERS: tuple[ControllerRouterHandler, ...] = ()
