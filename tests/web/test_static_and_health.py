"""Static files (vendored htmx) and the health check."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import anyio.to_thread
import httpx
import pytest
from litestar import Litestar

from domain.storage import StoreSettings
from tests.web.conftest import TEST_SECRET_KEY, running
from web.app import STATIC_DIR
from web.settings import Settings
from web.wiring import build_app


def test_healthz_says_ok(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    assert response.json() == {"status": "ok"}
    assert "set-cookie" not in response.headers


def test_htmx_is_served_as_javascript(client: httpx.Client) -> None:
    response = client.get("/static/vendor/htmx.min.js")
    assert response.status_code == 200
    assert response.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
    assert response.content == (STATIC_DIR / "vendor" / "htmx.min.js").read_bytes()
    assert b'version:"2.0.11"' in response.content


def test_ws_extension_and_own_assets_are_served(client: httpx.Client) -> None:
    ws = client.get("/static/vendor/ws.js")
    assert ws.status_code == 200 and "javascript" in ws.headers["content-type"]
    assert b"htmx.defineExtension('ws'" in ws.content
    css = client.get("/static/polku.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert client.get("/static/polku.js").status_code == 200


def test_vendored_libraries_keep_their_licences() -> None:
    vendor = STATIC_DIR / "vendor"
    assert "Zero-Clause BSD" in (vendor / "htmx.org.LICENSE").read_text()
    assert "BSD Zero Clause License" in (vendor / "htmx-ext-ws.LICENSE").read_text()
    readme = (vendor / "README.md").read_text()
    assert "htmx.org" in readme and "2.0.11" in readme
    assert "htmx-ext-ws" in readme and "2.0.4" in readme


def test_base_page_loads_the_assets(client: httpx.Client) -> None:
    html = client.get("/").text
    for asset in ("/static/vendor/htmx.min.js", "/static/vendor/ws.js", "/static/polku.js", "/static/polku.css"):
        assert asset in html, asset


def test_static_files_do_not_escape_their_folder(client: httpx.Client) -> None:
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py"):
        response = client.get(path)
        assert response.status_code == 404, path
        assert b"create_app" not in response.content


def test_missing_static_file_is_not_found(client: httpx.Client) -> None:
    assert client.get("/static/vendor/nope.js").status_code == 404


def test_readiness_answers_while_every_worker_thread_is_busy(tmp_path: Path) -> None:
    """The probe has a thread of its own: edits waiting for the read model (or any slow
    blocking call) in every worker thread must not make a healthy instance look not ready."""
    release, taken = threading.Event(), threading.Event()

    def occupy() -> None:
        taken.set()
        release.wait(20)

    async def take_the_worker_thread(app: Litestar) -> None:
        app.state.busy = asyncio.get_running_loop().create_task(anyio.to_thread.run_sync(occupy))

    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path, worker_threads=1)
    app = build_app(settings, StoreSettings(data_dir=str(tmp_path)))
    app.on_startup.append(take_the_worker_thread)
    with running(app) as base_url:
        try:
            assert taken.wait(10)
            ready = httpx.get(f"{base_url}/readyz", timeout=10)
            assert (ready.status_code, ready.json()["status"]) == (200, "ready")
        finally:
            release.set()  # before the server stops: it waits for its worker thread


def test_the_allowed_read_model_lag_is_a_whole_number_or_the_start_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    from web.controllers.health import DEFAULT_MAX_LAG, max_lag

    monkeypatch.delenv("POLKU_READY_MAX_LAG", raising=False)
    assert max_lag() == DEFAULT_MAX_LAG == 100
    monkeypatch.setenv("POLKU_READY_MAX_LAG", " 250 ")
    assert max_lag() == 250
    for wrong in ("-1", "many", "2.5"):
        monkeypatch.setenv("POLKU_READY_MAX_LAG", wrong)
        with pytest.raises(ValueError, match="POLKU_READY_MAX_LAG must be a whole number"):
            max_lag()
