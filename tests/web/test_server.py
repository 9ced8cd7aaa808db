"""web.server: the uvicorn server that the polku command starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import psycopg
import pytest
from litestar import Litestar

from tests.web.conftest import TEST_SECRET_KEY, running
from web.server import build_server
from web.settings import Settings


def test_build_server_serves_the_app(tmp_path: Path) -> None:
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path)
    server = build_server("127.0.0.1", 0, settings, log_level="warning")
    with running(server) as base_url:
        response = httpx.get(f"{base_url}/healthz", timeout=10)
        assert response.json() == {"status": "ok"}
        assert "server" not in response.headers
        page = httpx.get(f"{base_url}/", headers={"accept-language": "sv"}, timeout=10)
        assert '<html lang="sv">' in page.text
        head = httpx.head(f"{base_url}/", headers={"accept-language": "sv"}, timeout=10)
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-type"] == page.headers["content-type"]
        assert httpx.head(f"{base_url}/signin", timeout=10).status_code == 200


def free_port() -> int:
    """A port nothing listens on (bound for a moment, then closed)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.parametrize("command", ["serve", "project"])
def test_starting_over_an_unreachable_database_says_so_in_one_line_and_exits_75(
    tmp_path: Path, command: str
) -> None:
    """As every other polku command: no traceback from uvicorn, EX_TEMPFAIL to try again."""
    environment = {name: value for name, value in os.environ.items() if not name.startswith("POLKU_")}
    environment |= {"POLKU_STORE": "postgres", "POLKU_PG_HOST": "127.0.0.1", "POLKU_PG_PORT": str(free_port()),
                    "POLKU_PG_DB": "polku", "POLKU_PG_USER": "polku", "POLKU_DATA_DIR": str(tmp_path)}
    started = subprocess.run(
        [sys.executable, "-m", "web.cli", command, "--port", str(free_port())],
        env=environment, capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2],
    )
    assert started.returncode == os.EX_TEMPFAIL, started.stderr
    assert "Traceback" not in started.stdout + started.stderr
    assert started.stderr.splitlines()[-1].startswith("polku: could not reach the database (connection failed: ")
    assert started.stderr.endswith("; try again in a moment.\n")


def failing_at_startup(error: BaseException) -> Litestar:
    def fail() -> None:
        raise error

    return Litestar(on_startup=[fail])


def test_a_database_out_of_reach_at_startup_is_raised_from_run(tmp_path: Path) -> None:
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path)
    down = psycopg.OperationalError("connection refused")
    server = build_server("127.0.0.1", free_port(), settings, log_level="critical",
                          build=lambda: failing_at_startup(down))
    with pytest.raises(psycopg.OperationalError) as raised:
        server.run()
    assert raised.value is down


def test_any_other_failure_at_startup_stays_uvicorns_exit_3(tmp_path: Path) -> None:
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path)
    server = build_server("127.0.0.1", free_port(), settings, log_level="critical",
                          build=lambda: failing_at_startup(RuntimeError("a bug")))
    with pytest.raises(SystemExit) as raised:
        server.run()
    assert raised.value.code == 3
