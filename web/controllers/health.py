"""Liveness check for load balancers and the operator."""

from __future__ import annotations

from litestar import get


@get("/healthz", name="healthz", sync_to_thread=False, cache_control=None, include_in_schema=False)
def health_check() -> dict[str, str]:
    """``{"status": "ok"}`` while the process serves requests."""
    return {"status": "ok"}
