"""A real Polku server with the demo plans and the demo professionals, for the plan pages.

Import the fixtures into a test module::

    from tests.web.plan_fixtures import PlanSite, plan_site, signed_in  # noqa: F401

- ``plan_site`` (module scope): ``web.wiring.build_app`` on a temporary data folder with
  ``domain.demo.load_demo`` loaded, behind the sign-in wall with an account (password
  :data:`~tests.web.identity_fixtures.TEST_PASSWORD`) for each of the 12 demo
  professionals (usernames are their person ids, e.g. ``aino.virtanen``), served by
  uvicorn on a free port.
- :func:`signed_in`: ``with signed_in(site, "aino.virtanen") as client:`` a new
  ``httpx.Client`` of that site, signed in through the real sign-in form, speaking
  Finnish unless told otherwise.
- :class:`Page`: what the tests read from a page: the CSRF token, form values, errors.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from litestar import Litestar

from domain.application import PlanService
from domain.demo import PEOPLE, load_demo
from domain.values import Actor
from tests.web.conftest import TEST_SECRET_KEY, running
from tests.web.identity_fixtures import FAST_HASHER, add_account, sign_in, with_identity
from web.accounts import AccountStore
from web.settings import Settings
from web.wiring import build_app, store_settings_for

__all__ = ("DEMO", "Page", "PlanSite", "plan_site", "signed_in")

#: The demo plans by their client's first name, as ``load_demo`` returns them.
DEMO = ("matti", "liisa", "ahmed", "eeva", "johan")

_ORGANISATION_TYPES = {
    "pirha-toike": "wellbeing_services_county",
    "kela-pirkanmaa": "kela",
    "tampere-tyollisyys": "employment_services",
    "vire-ry": "third_sector",
    "kuntoutus-oy": "private_provider",
}


@dataclass(frozen=True)
class PlanSite:
    base_url: str
    app: Litestar
    plans: dict[str, str]
    """Plan ids by the demo client's first name (``matti``...)."""

    @property
    def service(self) -> PlanService:
        return self.app.state.plans

    def event_count(self) -> int:
        """How many events the store holds (a refused command adds none)."""
        return self.service.recorder.max_notification_id() or 0

    def actor(self, who: str) -> Actor:
        return PEOPLE[who][0]

    def wait_for_views(self) -> None:
        assert self.app.state.views.wait_for(self.event_count(), timeout=10)


@pytest.fixture(scope="module")
def plan_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlanSite]:
    data = tmp_path_factory.mktemp("plan-site")
    settings = Settings(secret_key=TEST_SECRET_KEY, data_dir=data)
    store = store_settings_for(settings, environ={})
    service = PlanService(store)
    try:
        ids = load_demo(service)
    finally:
        service.close()
    accounts = AccountStore.sqlite(data / "test-accounts.sqlite3", hasher=FAST_HASHER)
    for actor, profession in PEOPLE.values():
        add_account(
            accounts,
            actor.person_id,
            name=actor.name,
            organisation=(actor.organisation_id, actor.organisation_name, _ORGANISATION_TYPES[actor.organisation_id]),
            profession=profession,
        )
    app = with_identity(build_app(settings, store), accounts)
    try:
        with running(app) as base_url:
            site = PlanSite(base_url=base_url, app=app, plans=dict(zip(DEMO, ids, strict=True)))
            site.wait_for_views()
            yield site
    finally:
        accounts.close()


@contextmanager
def signed_in(site: PlanSite, username: str, language: str = "fi") -> Iterator[httpx.Client]:
    """A browser-like client of ``site``, signed in as ``username``, for a ``with`` block."""
    with httpx.Client(
        base_url=site.base_url, follow_redirects=False, timeout=15, headers={"accept-language": language}
    ) as client:
        sign_in(client, site.base_url, username)
        yield client


_META_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]*)">')


class Page:
    """A page or fragment as the tests read it."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.html = response.text

    @property
    def csrf(self) -> str:
        match = _META_CSRF.search(self.html)
        assert match, "the page has no csrf-token meta element"
        return match.group(1)

    def value(self, name: str) -> str:
        """The value of the (first) hidden or text input ``name``."""
        match = re.search(rf'<input[^>]*name="{re.escape(name)}"[^>]*value="([^"]*)"', self.html)
        assert match, f"no input {name!r} in {self.html[:500]}"
        return match.group(1)

    def error_of(self, prefix: str, field: str) -> str | None:
        """The error shown next to the field ``<prefix>-<field>``, checked to be tied to it."""
        match = re.search(rf'<span class="field-error" id="{re.escape(prefix)}-{field}-error">([^<]*)</span>', self.html)
        if not match:
            return None
        control = re.search(rf'<(?:input|select|textarea|fieldset)[^>]*id="{re.escape(prefix)}-{field}"[^>]*>', self.html) or re.search(
            rf'<fieldset[^>]*aria-describedby="[^"]*{re.escape(prefix)}-{field}-error[^"]*"[^>]*>', self.html
        )
        assert control, f"no control for {prefix}-{field}"
        tag = control.group(0)
        assert 'aria-invalid="true"' in tag, tag
        assert f"{prefix}-{field}-error" in tag, tag
        return match.group(1)

    def ids(self) -> set[str]:
        return set(re.findall(r'\sid="([^"]+)"', self.html))


def htmx_headers(page: Page, **extra: Any) -> dict[str, str]:
    """What htmx sends with a request from ``page`` (its CSRF header included)."""
    return {"hx-request": "true", "x-csrftoken": page.csrf, **{k.replace("_", "-"): v for k, v in extra.items()}}
