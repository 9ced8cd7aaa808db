"""The pages in a real headless Chromium: no CSP violations, htmx configured, switch works."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.web.conftest import LiveServer

pytestmark = pytest.mark.browser



@pytest.fixture
def page(browser: object, live_server: LiveServer) -> Iterator[object]:
    context = browser.new_context(base_url=live_server.base_url, locale="fi-FI")  # type: ignore[attr-defined]
    page = context.new_page()
    page.problems = []  # console errors and uncaught exceptions, CSP violations among them
    page.on("console", lambda message: message.type == "error" and page.problems.append(message.text))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    yield page
    context.close()


def test_home_page_has_no_csp_violations_and_htmx_is_configured(page: object) -> None:
    page.goto("/")  # type: ignore[attr-defined]
    page.wait_for_function("window.htmx !== undefined")  # type: ignore[attr-defined]
    assert page.evaluate("htmx.version") == "2.0.11"  # type: ignore[attr-defined]
    config = page.evaluate("htmx.config")  # type: ignore[attr-defined]
    assert config["includeIndicatorStyles"] is False
    assert config["allowEval"] is False
    assert config["selfRequestsOnly"] is True
    assert config["historyCacheSize"] == 0
    assert page.evaluate("document.querySelectorAll('style').length") == 0  # type: ignore[attr-defined]
    assert page.problems == []  # type: ignore[attr-defined]


def test_language_switch_in_the_browser(page: object) -> None:
    page.goto("/?from=test")  # type: ignore[attr-defined]
    assert page.get_attribute("html", "lang") == "fi"  # type: ignore[attr-defined]
    page.click("button[value=sv]")  # type: ignore[attr-defined]
    page.wait_for_url("**/?from=test")  # type: ignore[attr-defined]
    assert page.get_attribute("html", "lang") == "sv"  # type: ignore[attr-defined]
    assert page.inner_text("h1") == "En klient, en plan"  # type: ignore[attr-defined]
    assert page.get_attribute("button[value=sv]", "aria-current") == "true"  # type: ignore[attr-defined]
    assert page.problems == []  # type: ignore[attr-defined]


def test_skip_link_moves_focus_to_main(page: object) -> None:
    page.goto("/")  # type: ignore[attr-defined]
    page.keyboard.press("Tab")  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.className") == "skip-link"  # type: ignore[attr-defined]
    page.keyboard.press("Enter")  # type: ignore[attr-defined]
    assert page.evaluate("document.activeElement.id") == "main"  # type: ignore[attr-defined]


def test_htmx_error_fragment_is_shown_in_the_messages_region(page: object) -> None:
    page.goto("/test/htmx")  # type: ignore[attr-defined]
    page.wait_for_function("window.htmx !== undefined")  # type: ignore[attr-defined]
    page.click("#missing")  # type: ignore[attr-defined]
    page.wait_for_selector("#messages [role=alert]")  # type: ignore[attr-defined]
    assert "Sivua ei löytynyt" in page.inner_text("#messages")  # type: ignore[attr-defined]
    assert page.inner_text("#result") == ""  # type: ignore[attr-defined]


def test_htmx_requests_carry_the_csrf_header(page: object) -> None:
    page.goto("/test/htmx")  # type: ignore[attr-defined]
    page.wait_for_function("window.htmx !== undefined")  # type: ignore[attr-defined]
    with page.expect_request("**/api/test/echo") as request_info:  # type: ignore[attr-defined]
        page.click("#post")  # type: ignore[attr-defined]
    token = page.get_attribute('meta[name="csrf-token"]', "content")  # type: ignore[attr-defined]
    assert request_info.value.headers["x-csrftoken"] == token
