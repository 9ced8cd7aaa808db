"""The election's and listeners' own connections notice a dead peer as the store's do."""

from __future__ import annotations

import pytest

from domain.postgres import KEEPALIVES
from domain.storage import StoreSettings
from projections.leader import connect
from tests.domain.test_postgres_store import _keepalive_settings

pytestmark = pytest.mark.postgres


def test_a_lock_or_listen_connection_has_the_stores_keepalives_and_asks_the_server_for_them(
    postgres_env: dict[str, str],
) -> None:
    expected = (KEEPALIVES["keepalives_idle"], KEEPALIVES["keepalives_interval"], KEEPALIVES["keepalives_count"])
    with connect(StoreSettings.from_environ(postgres_env).pg_conninfo) as conn:
        assert _keepalive_settings(conn) == (1, *expected)
        server = conn.execute(
            "SELECT setting::int FROM pg_settings WHERE name IN"
            " ('tcp_keepalives_idle', 'tcp_keepalives_interval', 'tcp_keepalives_count') ORDER BY name"
        ).fetchall()
    assert tuple(value for (value,) in server) == (expected[2], expected[0], expected[1])  # count, idle, interval
