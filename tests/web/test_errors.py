"""Error pages and API errors: the user's language, no stack traces."""

from __future__ import annotations

import logging
import socket
import time
from typing import Any

import httpx
import pytest

from tests.web.conftest import LiveServer, csrf_token_in
from web.errors import refuse_websocket_unavailable

SECRET_DETAIL = "/srv/polku/very-private.py"


def test_not_found_page_is_in_the_chosen_language(client: httpx.Client) -> None:
    client.cookies.set("lang", "sv")
    response = client.get("/no/such/page")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert '<html lang="sv">' in response.text
    assert "Sidan hittades inte" in response.text
    assert "Traceback" not in response.text and "NotFoundException" not in response.text


def test_not_found_page_in_finnish_by_default(client: httpx.Client) -> None:
    response = client.get("/no/such/page")
    assert "Sivua ei löytynyt" in response.text


def test_language_switch_works_from_a_not_found_page(client: httpx.Client) -> None:
    """The 404 page is rendered outside the CSRF middleware but still carries a usable token."""
    page = client.get("/no/such/page")
    token = csrf_token_in(page.text)
    assert token
    response = client.post("/language", data={"lang": "en", "next": "/no/such/page", "_csrf_token": token})
    assert response.status_code == 303


def test_not_found_for_htmx_is_a_fragment_for_the_messages_region(client: httpx.Client) -> None:
    client.cookies.set("lang", "en")
    response = client.get("/no/such/page", headers={"hx-request": "true"})
    assert response.status_code == 404
    assert response.headers["hx-retarget"] == "#messages"
    assert response.headers["hx-reswap"] == "innerHTML"
    assert "<html" not in response.text
    assert 'role="alert"' in response.text
    assert "Page not found" in response.text


def test_api_not_found_is_structured_json(client: httpx.Client) -> None:
    response = client.get("/api/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {
        "error": {
            "code": "not_found",
            "message": "Etsimääsi sivua ei löytynyt. Tarkista osoite tai siirry etusivulle.",
            "fields": [],
        }
    }


def test_api_validation_error_lists_the_fields(client: httpx.Client) -> None:
    token = csrf_token_in(client.get("/").text)
    response = client.post(
        "/api/test/echo",
        json={"score": "not a number"},
        headers={"x-csrftoken": token, "accept-language": "en"},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "validation_failed"
    assert error["message"].startswith("Some of the information you sent could not be accepted")
    assert error["fields"], error
    assert all(set(field) == {"name", "source", "message"} for field in error["fields"])


def test_api_accepts_valid_json(client: httpx.Client) -> None:
    token = csrf_token_in(client.get("/").text)
    response = client.post("/api/test/echo", json={"score": 7, "name": "Aino"}, headers={"x-csrftoken": token})
    assert response.status_code == 201
    assert response.json() == {"score": 7, "name": "Aino"}


def test_validation_error_for_htmx_is_a_translated_fragment(client: httpx.Client) -> None:
    client.cookies.set("lang", "sv")
    token = csrf_token_in(client.get("/").text)
    response = client.post(
        "/language", data={"lang": "klingon"}, headers={"x-csrftoken": token, "hx-request": "true"}
    )
    assert response.status_code == 400
    assert response.headers["hx-retarget"] == "#messages"
    assert "Uppgifterna kunde inte godkännas" in response.text
    assert "<html" not in response.text


def test_unexpected_error_shows_a_generic_page_and_is_logged(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    client.cookies.set("lang", "en")
    with caplog.at_level(logging.ERROR, logger="web.errors"):
        response = client.get("/test/explode")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert SECRET_DETAIL not in response.text
    assert "Traceback" not in response.text and "RuntimeError" not in response.text
    logged = [record for record in caplog.records if record.name == "web.errors"]
    assert logged and logged[0].exc_info is not None
    assert SECRET_DETAIL in str(logged[0].exc_info[1])


def test_a_client_gone_before_its_body_arrived_is_no_server_error(
    client: httpx.Client, live_server: LiveServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A closed tab or a lost network mid-upload: logged as such, not as a 500 with a traceback."""
    token = csrf_token_in(client.get("/").text)
    url = httpx.URL(live_server.base_url)
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    with caplog.at_level(logging.INFO, logger="web.errors"):
        with socket.create_connection((url.host, url.port)) as raw:
            raw.sendall(
                f"POST /api/test/echo HTTP/1.1\r\nHost: {url.host}\r\nCookie: {cookies}\r\n"
                f"X-CSRFToken: {token}\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                "Content-Length: 1000\r\n\r\nscore=1".encode()
            )
        deadline = time.monotonic() + 5
        while not [r for r in caplog.records if r.name == "web.errors"] and time.monotonic() < deadline:
            time.sleep(0.02)
    logged = [record for record in caplog.records if record.name == "web.errors"]
    assert [record.levelno for record in logged] == [logging.INFO]
    assert "went away" in logged[0].getMessage() and logged[0].exc_info is None


def test_unexpected_api_error_is_generic_json(client: httpx.Client) -> None:
    response = client.get("/api/test/explode", headers={"accept-language": "sv"})
    assert response.status_code == 500
    assert response.json()["error"]["code"] == "internal_error"
    assert response.json()["error"]["message"].startswith("Tjänsten kunde inte behandla")
    assert SECRET_DETAIL not in response.text


def test_wrong_method_is_explained(client: httpx.Client) -> None:
    response = client.get("/language", headers={"accept-language": "en"})
    assert response.status_code == 405
    assert "This address does not accept that kind of request." in response.text


@pytest.mark.parametrize("extensions, expected", [
    ({"websocket.http.response": {}}, ["websocket.http.response.start", "websocket.http.response.body"]),
    ({}, ["websocket.close"]),
], ids=["the server answers a handshake with a status", "it cannot"])
async def test_a_websocket_refused_for_the_database_is_asked_to_try_again(
    extensions: dict[str, Any], expected: list[str]
) -> None:
    """503 with Retry-After, or close 1013 (try again later): never the close before accepting
    that a server answers 403, as if the account had no access."""
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(message)

    await refuse_websocket_unavailable({"type": "websocket", "extensions": extensions}, send)
    assert [message["type"] for message in sent] == expected
    if extensions:
        assert sent[0]["status"] == 503 and (b"retry-after", b"2") in sent[0]["headers"]
    else:
        assert sent[0]["code"] == 1013
