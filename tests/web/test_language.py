"""Choosing the interface language: the switch, its cookie, Accept-Language."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.web.conftest import csrf_token_in


def html_lang(html: str) -> str:
    match = re.search(r'<html lang="([a-z]+)">', html)
    assert match
    return match.group(1)


def choose_language(client: httpx.Client, lang: str, next_path: str = "/") -> httpx.Response:
    token = csrf_token_in(client.get("/").text)
    return client.post("/language", data={"lang": lang, "next": next_path, "_csrf_token": token})


def test_finnish_is_the_default(client: httpx.Client) -> None:
    html = client.get("/").text
    assert html_lang(html) == "fi"
    assert "Yksi asiakas, yksi suunnitelma" in html
    assert "Siirry pääsisältöön" in html


def test_accept_language_picks_swedish(client: httpx.Client) -> None:
    html = client.get("/", headers={"accept-language": "sv-FI,sv;q=0.9,en;q=0.5"}).text
    assert html_lang(html) == "sv"
    assert "En klient, en plan" in html


def test_accept_language_follows_quality_values(client: httpx.Client) -> None:
    html = client.get("/", headers={"accept-language": "de, en;q=0.4, sv;q=0.8"}).text
    assert html_lang(html) == "sv"


def test_unsupported_accept_language_falls_back_to_finnish(client: httpx.Client) -> None:
    assert html_lang(client.get("/", headers={"accept-language": "de-DE,fr;q=0.5"}).text) == "fi"


@pytest.mark.parametrize(
    ("lang", "heading", "skip_link"),
    [
        ("sv", "En klient, en plan", "Hoppa till huvudinnehållet"),
        ("en", "One client, one plan", "Skip to main content"),
        ("fi", "Yksi asiakas, yksi suunnitelma", "Siirry pääsisältöön"),
    ],
)
def test_language_switch_sets_cookie_and_changes_the_page(
    client: httpx.Client, lang: str, heading: str, skip_link: str
) -> None:
    response = choose_language(client, lang, next_path="/?tab=1")
    assert response.status_code == 303
    assert response.headers["location"] == "/?tab=1"
    set_cookie = response.headers["set-cookie"].lower()
    assert set_cookie.startswith(f"lang={lang};")
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie

    # The cookie beats the browser's Accept-Language.
    html = client.get("/", headers={"accept-language": "fi"}).text
    assert html_lang(html) == lang
    assert heading in html
    assert skip_link in html
    assert re.search(rf'value="{lang}" lang="{lang}" aria-current="true"', html)
    assert html.count('aria-current="true"') == 1


def test_language_switch_refuses_to_redirect_to_another_site(client: httpx.Client) -> None:
    response = choose_language(client, "en", next_path="https://evil.example")
    assert response.status_code == 303
    assert response.headers["location"] == "/"


def test_language_switch_refuses_scheme_relative_redirects(client: httpx.Client) -> None:
    assert choose_language(client, "en", next_path="//evil.example/x").headers["location"] == "/"
    assert choose_language(client, "en", next_path="/\\evil.example").headers["location"] == "/"


def test_unknown_language_is_a_friendly_validation_error(client: httpx.Client) -> None:
    client.cookies.set("lang", "sv")
    response = choose_language(client, "xx")
    assert response.status_code == 400
    assert html_lang(response.text) == "sv"
    assert "Uppgifterna kunde inte godkännas" in response.text
    assert "Traceback" not in response.text


def test_unknown_language_cookie_is_ignored(client: httpx.Client) -> None:
    client.cookies.set("lang", "de")
    assert html_lang(client.get("/", headers={"accept-language": "en"}).text) == "en"


def test_dates_are_written_the_finnish_way(client: httpx.Client) -> None:
    html = client.get("/").text
    assert re.search(r"Tänään on \d{1,2}\.\d{1,2}\.\d{4}\.", html)
