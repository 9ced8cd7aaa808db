"""Fixtures for the web tests: a real uvicorn server on a free loopback port, and httpx."""

from __future__ import annotations

import os
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import msgspec
import pytest
import uvicorn
from litestar import Litestar, get, post
from litestar.params import JSONBody
from litestar.response import Template

from web.app import create_app
from web.i18n import ensure_compiled
from web.server import build_server
from web.settings import Settings

TEST_SECRET_KEY = "test-secret-key-that-is-long-enough-0123456789"
_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


@dataclass(frozen=True)
class LiveServer:
    base_url: str
    settings: Settings


@pytest.fixture(scope="session", autouse=True)
def compiled_catalogues() -> None:
    """The .mo files are not in git: compile them before any test renders a page."""
    ensure_compiled()


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The app with two test-only routes, served by uvicorn in a background thread."""
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path_factory.mktemp("data"))
    app = create_app(settings, route_handlers=[explode, explode_in_api, echo_in_api, htmx_playground])
    with running(app) as base_url:
        yield LiveServer(base_url=base_url, settings=settings)


@pytest.fixture
def client(live_server: LiveServer) -> Iterator[httpx.Client]:
    """A fresh browser-like client (its own cookies) for each test."""
    with httpx.Client(base_url=live_server.base_url, follow_redirects=False, timeout=10) as http:
        yield http


def running(app: Litestar | uvicorn.Server) -> _RunningServer:
    """Context manager: serve ``app`` (or a ready uvicorn server) on a free port; yields the base URL."""
    return _RunningServer(app)


def csrf_token_in(html: str) -> str:
    """The token of ``<meta name="csrf-token">`` in a page."""
    match = _META_CSRF.search(html)
    assert match, "the page has no csrf-token meta element"
    return match.group(1)


class _RunningServer:
    def __init__(self, app: Litestar | uvicorn.Server) -> None:
        if isinstance(app, uvicorn.Server):
            self.server = app
        else:
            self.server = build_server("127.0.0.1", 0, app=app, log_level="warning")
        self.socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(("127.0.0.1", 0))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.socket]}, daemon=True)

    def __enter__(self) -> str:
        self.thread.start()
        for _ in range(500):
            if self.server.started:
                break
            if not self.thread.is_alive():
                raise RuntimeError("the test server stopped while starting")
            threading.Event().wait(0.01)
        else:
            raise RuntimeError("the test server did not start within 5 s")
        host, port = self.socket.getsockname()
        return f"http://{host}:{port}"

    def __exit__(self, *exc_info: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.socket.close()
        assert not self.thread.is_alive(), "the test server did not stop"


# Test-only routes: an unexpected error on a page and in the API, and an API that validates.


@get("/test/explode", sync_to_thread=False)
def explode() -> str:
    raise RuntimeError("secret internal detail /srv/polku/very-private.py")


@get("/api/test/explode", sync_to_thread=False)
def explode_in_api() -> dict[str, str]:
    raise RuntimeError("secret internal detail /srv/polku/very-private.py")


class Echo(msgspec.Struct):
    score: int
    name: str


@post("/api/test/echo", sync_to_thread=False)
def echo_in_api(data: JSONBody[Echo]) -> Echo:
    return data


_PLAYGROUND = """{% extends "base.html" %}
{% block content %}
<button id="missing" class="button" hx-get="/no/such/page" hx-target="#result">404</button>
<button id="post" class="button" hx-post="/api/test/echo" hx-target="#result">POST</button>
<div id="result"></div>
{% endblock %}"""


@get("/test/htmx", sync_to_thread=False)
def htmx_playground() -> Template:
    """A page with htmx buttons, for the browser tests."""
    return Template(template_str=_PLAYGROUND)


REPO_ROOT = Path(__file__).resolve().parents[2]


# --- a real browser -----------------------------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
"""Debian's Chromium, which `make test` installs (scripts/ensure-debian-tool.sh)."""


@pytest.fixture(scope="module")
def browser() -> Iterator[object]:
    """Debian's Chromium driven by Playwright, one per test module.

    Missing Chromium skips the browser tests with the reason, except in CI (CI=true),
    where it is an error: there the browser tests must run.
    """
    if not CHROMIUM.exists():
        message = f"{CHROMIUM} is missing (make test installs it with scripts/ensure-debian-tool.sh)"
        if os.environ.get("CI") == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()
