"""web.server: the uvicorn server that the polku command starts."""

from __future__ import annotations

from pathlib import Path

import httpx

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
