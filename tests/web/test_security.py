"""Security headers, CSP without inline code, CSRF."""

from __future__ import annotations

import re

import httpx

from tests.web.conftest import csrf_token_in
from web.security import CONTENT_SECURITY_POLICY, safe_redirect_target


def test_every_response_carries_the_security_headers(client: httpx.Client) -> None:
    for path in ("/", "/healthz", "/static/polku.css", "/no-such-page", "/api/no-such-thing"):
        response = client.get(path)
        headers = response.headers
        assert headers["content-security-policy"] == CONTENT_SECURITY_POLICY, path
        assert headers["x-content-type-options"] == "nosniff", path
        assert headers["referrer-policy"] == "same-origin", path
        assert "camera=()" in headers["permissions-policy"], path
        assert "server" not in headers, path


def test_content_security_policy_allows_nothing_inline_and_no_framing(client: httpx.Client) -> None:
    policy = client.get("/").headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["img-src"] == "'self' data:"
    assert directives["connect-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'self'"
    assert directives["form-action"] == "'self'"
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_html_pages_are_not_stored_by_caches(client: httpx.Client) -> None:
    assert client.get("/").headers["cache-control"] == "no-store"
    assert client.get("/no-such-page").headers["cache-control"] == "no-store"


def test_pages_have_no_inline_scripts_or_styles(client: httpx.Client) -> None:
    html = client.get("/").text
    for script in re.findall(r"<script\b[^>]*>", html):
        assert 'src="/static/' in script, script
    assert re.search(r"<script\b[^>]*>\s*[^<\s]", html) is None, "a script element has inline code"
    assert "<style" not in html
    assert re.search(r"\sstyle=", html) is None
    assert re.search(r"\son[a-z]+=", html) is None, "inline event handler"


def test_htmx_is_configured_for_the_content_security_policy(client: httpx.Client) -> None:
    html = client.get("/").text
    assert '"includeIndicatorStyles": false' in html
    assert '"allowEval": false' in html
    assert '"selfRequestsOnly": true' in html
    assert '"historyCacheSize": 0' in html


def test_pages_hand_the_csrf_token_to_htmx_and_to_forms(client: httpx.Client) -> None:
    html = client.get("/").text
    token = csrf_token_in(html)
    assert len(token) > 64
    assert f"hx-headers='{{\"x-csrftoken\": \"{token}\"}}'" in html
    assert f'name="_csrf_token" value="{token}"' in html


def test_csrf_cookie_is_httponly_and_samesite(client: httpx.Client) -> None:
    set_cookie = client.get("/").headers["set-cookie"].lower()
    assert set_cookie.startswith("csrftoken=")
    assert "httponly" in set_cookie
    assert "samesite=lax" in set_cookie


def test_post_without_csrf_token_is_refused(client: httpx.Client) -> None:
    client.get("/")  # has the cookie, but does not send the token
    response = client.post("/language", data={"lang": "sv", "next": "/"})
    assert response.status_code == 403
    assert "lang" not in response.cookies


def test_post_with_a_forged_csrf_token_is_refused(client: httpx.Client) -> None:
    client.get("/")
    response = client.post("/language", data={"lang": "sv", "_csrf_token": "0" * 128})
    assert response.status_code == 403


def test_post_with_the_csrf_token_in_the_form_succeeds(client: httpx.Client) -> None:
    token = csrf_token_in(client.get("/").text)
    response = client.post("/language", data={"lang": "sv", "next": "/", "_csrf_token": token})
    assert response.status_code == 303


def test_htmx_post_with_the_csrf_header_succeeds(client: httpx.Client) -> None:
    token = csrf_token_in(client.get("/").text)
    response = client.post(
        "/language", data={"lang": "en"}, headers={"x-csrftoken": token, "hx-request": "true"}
    )
    assert response.status_code == 303


def test_refused_csrf_is_explained_in_the_users_language(client: httpx.Client) -> None:
    client.cookies.set("lang", "sv")
    client.get("/")
    response = client.post("/language", data={"lang": "fi"})
    assert response.status_code == 403
    assert "Av säkerhetsskäl kunde formuläret inte skickas" in response.text


def test_only_paths_on_this_site_are_redirect_targets() -> None:
    assert safe_redirect_target("/plans/1?tab=goals#x") == "/plans/1?tab=goals#x"
    for hostile in (
        "https://evil.example",
        "//evil.example",
        "///evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
        "javascript:alert(1)",
        "evil.example",
        "/ä",
        "",
        None,
        "/" + "a" * 5000,
    ):
        assert safe_redirect_target(hostile) == "/", hostile
