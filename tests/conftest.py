"""Shared pytest fixtures for the whole test suite.

Sections:
- PostgreSQL: `postgres_env` (session) and `pg_schema` (per test).
- Files: `data_dir`.

PostgreSQL tests connect to the server named by POLKU_TEST_PG_HOST / POLKU_TEST_PG_PORT /
POLKU_TEST_PG_USER / POLKU_TEST_PG_DB (defaults 127.0.0.1 / 5432 / postgres / polku_test),
without a password. `make test` runs scripts/ensure-postgres.sh first, which starts or
installs a local server when it can. When no server is reachable the PostgreSQL tests are
skipped with the reason, except in CI (CI=true), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

# --- PostgreSQL ---------------------------------------------------------------------------


def _test_pg_settings() -> dict[str, str]:
    """The test server's connection settings, from POLKU_TEST_PG_* or their defaults."""
    return {
        "host": os.environ.get("POLKU_TEST_PG_HOST", "127.0.0.1"),
        "port": os.environ.get("POLKU_TEST_PG_PORT", "5432"),
        "user": os.environ.get("POLKU_TEST_PG_USER", "postgres"),
        "dbname": os.environ.get("POLKU_TEST_PG_DB", "polku_test"),
    }


def _connect(settings: dict[str, str]) -> psycopg.Connection:
    return psycopg.connect(
        host=settings["host"],
        port=int(settings["port"]),
        user=settings["user"],
        dbname=settings["dbname"],
        connect_timeout=3,
        autocommit=True,
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses the PostgreSQL fixtures `postgres`, so `-m "not postgres"` works."""
    for item in items:
        if "postgres_env" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_env() -> dict[str, str]:
    """Settings for running Polku against the test PostgreSQL database, as environment variables.

    Returns ``{"POLKU_STORE": "postgres", "POLKU_PG_HOST": ..., "POLKU_PG_PORT": ...,
    "POLKU_PG_DB": ..., "POLKU_PG_USER": ..., "POLKU_PG_PASSWORD": ""}`` (all strings), taken
    from POLKU_TEST_PG_*. Add ``"POLKU_PG_SCHEMA": pg_schema`` to isolate a test.

    Checks once per session that the server answers (``SELECT 1``). If it does not, the
    requesting tests fail when CI=true and are skipped with the reason otherwise.
    """
    settings = _test_pg_settings()
    where = f"{settings['user']}@{settings['host']}:{settings['port']}/{settings['dbname']}"
    reason = None
    try:
        with _connect(settings) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if reason is not None:
        message = (
            f"PostgreSQL not reachable at {where}: {reason} "
            "(run scripts/ensure-postgres.sh, or set POLKU_TEST_PG_HOST/PORT/USER/DB)"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return {
        "POLKU_STORE": "postgres",
        "POLKU_PG_HOST": settings["host"],
        "POLKU_PG_PORT": settings["port"],
        "POLKU_PG_DB": settings["dbname"],
        "POLKU_PG_USER": settings["user"],
        "POLKU_PG_PASSWORD": "",
    }


@pytest.fixture
def pg_schema(postgres_env: dict[str, str]) -> Iterator[str]:
    """A fresh, empty schema in the test database, unique to this test; dropped (CASCADE) after,
    together with the schemas Polku derives from it (``<schema>_keys``, ``_views``, ...).

    Yields the schema's name (``t_`` and 12 hex digits). Close every connection that uses it
    before the test ends: the drop waits at most 30 s for their locks, then errors.
    """
    settings = _test_pg_settings()
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _connect(settings) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with _connect(settings) as conn:
            conn.execute("SET lock_timeout = '30s'")
            derived = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = %s OR nspname LIKE %s",
                (name, f"{name}\\_%"),
            ).fetchall()
            for (schema,) in derived:
                conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


# --- Files --------------------------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """An empty data folder for this test (``tmp_path / "data"``), like POLKU_DATA_DIR."""
    path = tmp_path / "data"
    path.mkdir()
    return path
