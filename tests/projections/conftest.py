"""Fixtures of the projection tests: one store of each kind, the write side and followers.

`settings` is parametrized over a SQLite data folder (real files in tmp_path) and a fresh
PostgreSQL schema (`pg_schema`) with a random POLKU_MASTER_KEY. On PostgreSQL the plan
read model lives in the schema `<schema>_views` and the keys in `<schema>_keys`; both are
dropped after the test. `<schema>_views` is created here beforehand, because
`projections.plans.open_view_store` does not create it (see
`test_postgres_view_schema_is_created_by_polku` in test_plan_views.py).
"""

from __future__ import annotations

import base64
import os
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from domain.application import PlanService
from domain.storage import StoreSettings
from projections.plans import PlanViews, _NotifyingProjection


def _pg_connect(postgres_env: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(
        host=postgres_env["POLKU_PG_HOST"],
        port=int(postgres_env["POLKU_PG_PORT"]),
        user=postgres_env["POLKU_PG_USER"],
        dbname=postgres_env["POLKU_PG_DB"],
        connect_timeout=3,
        autocommit=True,
    )


def postgres_store_env(postgres_env: dict[str, str], schema: str) -> dict[str, str]:
    """The POLKU_* variables of a PostgreSQL store in `schema`, with a random master key."""
    return {
        **postgres_env,
        "POLKU_PG_SCHEMA": schema,
        "POLKU_MASTER_KEY": base64.b64encode(os.urandom(32)).decode(),
    }


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store_env(request: pytest.FixtureRequest, data_dir: Path) -> Iterator[dict[str, str]]:
    """The POLKU_* variables of a fresh, empty store of each kind."""
    if request.param == "sqlite":
        yield {"POLKU_STORE": "sqlite", "POLKU_DATA_DIR": str(data_dir)}
        return
    postgres_env = request.getfixturevalue("postgres_env")
    schema = request.getfixturevalue("pg_schema")
    extra = [f"{schema}_views", f"{schema}_keys"]
    try:
        yield {**postgres_store_env(postgres_env, schema), "POLKU_DATA_DIR": str(data_dir)}
    finally:
        with _pg_connect(postgres_env) as conn:
            conn.execute("SET lock_timeout = '30s'")
            for name in extra:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(name)))


@pytest.fixture
def settings(store_env: dict[str, str]) -> StoreSettings:
    return StoreSettings.from_environ(store_env)


@pytest.fixture
def service(settings: StoreSettings) -> Iterator[PlanService]:
    """The write side; closed after the test."""
    app = PlanService(settings)
    try:
        yield app
    finally:
        app.close()


@pytest.fixture
def open_views(settings: StoreSettings) -> Iterator[Callable[..., PlanViews]]:
    """Opens `PlanViews` on the test's store; whatever is still open is closed after the test.

    Call `close(views)` (returned by the factory's `.close`) to stop one in the middle.
    """
    opened: list[PlanViews] = []

    def open_(follow: bool = True, dedicated: bool = False) -> PlanViews:
        views = PlanViews(settings, follow=follow, dedicated=dedicated)
        opened.append(views)
        return views

    def close(views: PlanViews) -> None:
        opened.remove(views)
        views.close()

    open_.close = close  # type: ignore[attr-defined]
    try:
        yield open_
    finally:
        errors = []
        for views in reversed(opened):
            try:
                views.close()
            except Exception as error:  # noqa: BLE001 - close every one, then report
                errors.append(error)
        if errors:
            raise errors[0]


@pytest.fixture
def applied(monkeypatch: pytest.MonkeyPatch) -> Counter[int]:
    """How many times the follower applied each notification id (to prove exactly once)."""
    calls: Counter[int] = Counter()
    original = _NotifyingProjection.process_event

    def counting(self: _NotifyingProjection, domain_event: object, tracking: object) -> str | None:
        calls[tracking.notification_id] += 1  # type: ignore[attr-defined]
        return original(self, domain_event, tracking)

    monkeypatch.setattr(_NotifyingProjection, "process_event", counting)
    return calls
