"""The caseload page (``/caseload``): the plans of the signed-in professional."""

from __future__ import annotations

from litestar.types import ControllerRouterHandler

CASELOAD_ROUTE_HANDLERS: tuple[ControllerRouterHandler, ...] = ()
