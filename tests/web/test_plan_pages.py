"""The plan page, editing in place, conflicts and the history, through a real server.

Every test signs in through the real sign-in form as one of the demo professionals and
works on the demo plans (``domain.demo``); tests that change a plan use items of their
own or plans of their own, so that they do not depend on each other's order.
"""

from __future__ import annotations

import ast
import concurrent.futures
import re
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest

from domain.values import today_in_finland
from tests.web.conftest import REPO_ROOT
from tests.web.identity_fixtures import TEST_PASSWORD, sign_in
from tests.web.plan_fixtures import Page, PlanSite, htmx_headers, plan_site, signed_in  # noqa: F401
from web.domain_messages import ERROR_TEMPLATES, HISTORY_TEMPLATES
from web.plan_page import PANEL_IDS, render_plan_fragments

PANELS = ("panel-timeline", "panel-client", "panel-needs", "panel-goals", "panel-network",
          "panel-steps", "panel-measures", "panel-notes", "panel-history")


@pytest.fixture
def aino(plan_site: PlanSite) -> Iterator[httpx.Client]:
    with signed_in(plan_site, "aino.virtanen") as client:
        yield client


@pytest.fixture
def mikko(plan_site: PlanSite) -> Iterator[httpx.Client]:
    with signed_in(plan_site, "mikko.laine") as client:
        yield client


def open_page(client: httpx.Client, plan_id: str) -> Page:
    response = client.get(f"/plans/{plan_id}")
    assert response.status_code == 200, response.text[:500]
    return Page(response)


def need_ids(page: Page) -> list[str]:
    return re.findall(r'<li id="need-([0-9a-f-]{36})"', page.html)


def new_need(site: PlanSite, client: httpx.Client, plan_id: str, description: str) -> str:
    """Record a need through the page (htmx); returns its id."""
    page = open_page(client, plan_id)
    before = set(need_ids(page))
    response = client.post(
        f"/plans/{plan_id}/needs/new/add",
        headers=htmx_headers(page),
        data={"command_id": str(uuid.uuid4()), "category": "everyday_life", "description": description},
    )
    assert response.status_code == 200, response.text[:800]
    (created,) = set(need_ids(open_page(client, plan_id))) - before
    return created


# ------------------------------------------------------------------------ the page


def test_plan_page_shows_the_timeline_and_every_panel(plan_site: PlanSite, aino: httpx.Client) -> None:
    page = open_page(aino, plan_site.plans["matti"])
    html = page.html
    assert "<h1>Matti Esimerkki</h1>" in html
    assert set(PANELS) <= page.ids()
    timeline = html.index('id="panel-timeline"')
    assert html.index('<svg', timeline) < html.index("<details", timeline) < html.index('<table class="timeline-table"', timeline)
    assert "Palvelupolun aikajana" in html  # the timeline speaks Finnish too
    for heading in ("Palvelutarpeet", "Tavoitteet", "Verkosto", "Palvelupolun vaiheet", "Mittaukset",
                    "Muistiinpanot", "Viimeisimmät muutokset"):
        assert f">{heading}</h2>" in html
    for category in ("Terveydentila", "Työ ja työllistyminen", "Arjen hallinta", "Osaaminen ja ammattitaito"):
        assert f">{category}</h3>" in html
    assert "Pitkittynyt alaselkäkipu" in html and "Työmarkkinatuki, vuokrarästejä" in html  # a need, its financial side
    assert 'class="badge badge--expert">Nimetty asiantuntija' in html
    assert 'class="badge badge--counterpart">Vastinpari' in html
    assert "Kela, Pirkanmaan vakuutuspiiri" in html  # consents per organisation
    assert f'href="/plans/{plan_site.plans["matti"]}/history"' in html
    assert re.search(r"\d{1,2}\.\d{1,2}\.20\d\d", html), "dates in Finnish format"


def test_headings_go_in_order(plan_site: PlanSite, aino: httpx.Client) -> None:
    levels = [int(level) for level in re.findall(r"<h([1-6])[ >]", open_page(aino, plan_site.plans["matti"]).html)]
    assert levels[0] == 1
    assert all(after - before <= 1 for before, after in zip(levels, levels[1:], strict=False))


def test_item_and_panel_ids_are_stable(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan = plan_site.service.get_plan(plan_site.plans["matti"])
    ids = open_page(aino, plan_site.plans["matti"]).ids()
    assert "client-details" in ids
    assert {f"need-{i}" for i in plan.needs} <= ids
    assert {f"goal-{i}" for i in plan.goals} <= ids
    assert {f"step-{i}" for i in plan.steps} <= ids
    assert {f"member-{i}" for i in plan.members} <= ids
    assert {f"consent-{i}" for i in plan.consents} <= ids
    assert {f"handover-{h.id}" for h in plan.handovers} <= ids


def test_a_professional_outside_the_plan_may_not_open_it(plan_site: PlanSite) -> None:
    with signed_in(plan_site, "outi.rantanen") as outi:  # third sector: in Eeva's network only
        assert outi.get(f"/plans/{plan_site.plans['eeva']}").status_code == 200
        assert outi.get(f"/plans/{plan_site.plans['matti']}").status_code == 404  # not 403: ids cannot be probed


def test_strangers_are_sent_to_sign_in(plan_site: PlanSite) -> None:
    with httpx.Client(base_url=plan_site.base_url) as stranger:
        response = stranger.get(f"/plans/{plan_site.plans['matti']}")
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin")


def test_an_unknown_plan_is_not_found(aino: httpx.Client) -> None:
    assert aino.get(f"/plans/{uuid.uuid4()}").status_code == 404
    assert aino.get("/plans/not-a-plan").status_code == 404


# --------------------------------------------------------------------- editing in place


def test_edit_button_fetches_the_form_with_a_fresh_command_id_and_the_revision(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["matti"]
    page = open_page(aino, plan_id)
    need_id = need_ids(page)[0]
    assert f'<form method="get" action="/plans/{plan_id}/needs/{need_id}/edit" hx-get=' in page.html
    first = Page(aino.get(f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page)))
    second = Page(aino.get(f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page)))
    assert first.response.status_code == 200
    assert first.response.headers["hx-retarget"] == f"#need-{need_id}"
    assert first.html.lstrip().startswith(f'<li id="need-{need_id}"')
    assert "<html" not in first.html
    assert first.value("command_id") != second.value("command_id")
    uuid.UUID(first.value("command_id"))
    revision = plan_site.service.get_plan(plan_id).needs[need_id].revision
    assert first.value("seen_revision") == str(revision)
    assert "autofocus" in first.html
    assert '<label for="need-' in first.html


def test_without_javascript_the_edit_button_opens_the_form_in_the_whole_page(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["matti"]
    need_id = need_ids(open_page(aino, plan_id))[0]
    page = Page(aino.get(f"/plans/{plan_id}/needs/{need_id}/edit"))
    assert page.response.status_code == 200
    assert "<html" in page.html and 'name="_csrf_token"' in page.html
    assert f'action="/plans/{plan_id}/needs/{need_id}/edit"' in page.html


def test_adding_a_need_with_htmx_returns_the_fragment_and_it_stays(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["matti"]
    page = open_page(aino, plan_id)
    form = Page(aino.get(f"/plans/{plan_id}/needs/new/add", headers=htmx_headers(page)))
    events = plan_site.event_count()
    response = aino.post(
        f"/plans/{plan_id}/needs/new/add",
        headers=htmx_headers(page),
        data={"command_id": form.value("command_id"), "category": "skills_and_competence",
              "description": "Tietotekniikan perustaidot puuttuvat", "financial": "Kurssimaksu 120 €"},
    )
    assert response.status_code == 200
    assert response.headers["hx-retarget"] == "#panel-needs"
    assert response.headers["hx-reswap"] == "outerHTML"
    assert response.text.lstrip().startswith('<section id="panel-needs"')
    assert "Tietotekniikan perustaidot puuttuvat" in response.text
    assert 'data-focus tabindex="-1"' in response.text  # the new item takes the focus
    # Only the changed panel and the status: the rest reaches the page through the live hub.
    assert 'id="panel-timeline"' not in response.text and 'id="panel-history"' not in response.text
    assert 'id="live-version"' not in response.text  # the hub still sends this page the update
    assert re.search(r'<div id="messages" hx-swap-oob="innerHTML"><p class="alert alert--success">Tallennettu: palvelutarve.</p>', response.text)
    assert plan_site.event_count() == events + 1
    reloaded = open_page(aino, plan_id).html
    section = reloaded[reloaded.index('id="needs-skills_and_competence-title"'):reloaded.index('id="need-new"')]
    assert "Tietotekniikan perustaidot puuttuvat" in section and "Kurssimaksu 120 €" in section


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ({"category": "health", "description": "  "}, "description", "Kuvaus ei voi olla tyhjä."),
        ({"category": "astrology", "description": "Tähtimerkki"}, "category", "Palvelutarvekategoria: valitse jokin näistä: "
         "Terveydentila, Työ ja työllistyminen, Arjen hallinta tai Osaaminen ja ammattitaito."),
    ],
)
def test_an_invalid_need_is_shown_next_to_its_field_in_finnish_and_records_nothing(
    plan_site: PlanSite, aino: httpx.Client, fields: dict[str, str], field: str, message: str
) -> None:
    plan_id = plan_site.plans["matti"]
    page = open_page(aino, plan_id)
    events = plan_site.event_count()
    response = aino.post(f"/plans/{plan_id}/needs/new/add", headers=htmx_headers(page),
                         data={"command_id": str(uuid.uuid4()), **fields})
    assert response.status_code == 422
    assert response.headers["hx-retarget"] == "#need-new"
    fragment = Page(response)
    assert fragment.error_of("need-new", field) == message
    assert fragment.html.lstrip().startswith('<div id="need-new"')
    assert "Tähtimerkki" in fragment.html or field == "description"  # the draft is kept
    assert '<div id="messages" hx-swap-oob="innerHTML"></div>' in fragment.html  # no "Saved" of before beside it
    assert plan_site.event_count() == events


def add_through_page(client: httpx.Client, plan_id: str, kind: str, fields: dict[str, str]) -> httpx.Response:
    """Send the plan page's "add" form of ``kind`` (htmx, a fresh command id) with ``fields``."""
    page = open_page(client, plan_id)
    return client.post(f"/plans/{plan_id}/{kind}/new/add", headers=htmx_headers(page),
                       data={"command_id": str(uuid.uuid4()), **fields})


def test_a_step_that_ends_before_it_starts_is_refused_next_to_the_end_date(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["matti"]
    plan = plan_site.service.get_plan(plan_id)
    events = plan_site.event_count()
    response = add_through_page(aino, plan_id, "steps", {
        "title": "Kuntosaliohjaus", "need_id": next(iter(plan.needs)), "responsible_member_id": plan.expert.id,
        "planned_start": "2026-12-10", "planned_end": "2026-12-01"})
    assert response.status_code == 422
    assert Page(response).error_of("step-new", "planned_end") == "Päättymispäivä ei voi olla ennen alkamispäivää."
    assert 'value="2026-12-10"' in response.text and "Kuntosaliohjaus" in response.text
    assert plan_site.event_count() == events


@pytest.mark.parametrize("description", [b"a%FFb", b"a%ED%A0%80b", b"a\xffb"],
                         ids=["percent-encoded byte", "lone surrogate", "raw byte"])
def test_a_form_that_is_not_utf8_is_refused_not_saved_altered(
    plan_site: PlanSite, aino: httpx.Client, description: bytes
) -> None:
    """Read leniently, these would be saved as U+FFFD or "ÿ": a text other than the one sent."""
    plan_id = plan_site.plans["matti"]
    page = open_page(aino, plan_id)
    events = plan_site.event_count()
    body = b"command_id=" + str(uuid.uuid4()).encode() + b"&category=health&description=" + description
    response = aino.post(f"/plans/{plan_id}/needs/new/add", content=body,
                         headers={**htmx_headers(page), "content-type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400
    assert "Osaa lähettämistäsi tiedoista ei voitu hyväksyä." in response.text
    assert plan_site.event_count() == events
    accepted = aino.post(f"/plans/{plan_id}/needs/new/add", content=body.replace(description, b"%C3%A4b"),
                         headers={**htmx_headers(page), "content-type": "application/x-www-form-urlencoded"})
    assert accepted.status_code == 200
    assert "äb" in {need.description for need in plan_site.service.get_plan(plan_id).needs.values()}


def test_a_goal_date_years_away_is_refused_next_to_its_field_and_the_plan_stays_readable(
    plan_site: PlanSite, aino: httpx.Client
) -> None:
    """A mistyped year (9999) is refused: recorded, it stretched the timeline past the calendar."""
    plan_id = plan_site.plans["matti"]
    plan = plan_site.service.get_plan(plan_id)
    events = plan_site.event_count()
    response = add_through_page(aino, plan_id, "goals", {
        "title": "Työkokeilu", "need_ids": next(iter(plan.needs)), "target_date": "9999-12-31"})
    assert response.status_code == 422
    error = Page(response).error_of("goal-new", "target_date")
    assert error.startswith("Tavoitepäivä: anna päivä väliltä ") and re.search(r"\d{1,2}\.\d{1,2}\.20\d\d", error), error
    assert plan_site.event_count() == events
    assert open_page(aino, plan_id).html


def test_a_form_sent_with_an_id_another_change_used_is_refused_with_a_new_id(
    plan_site: PlanSite, aino: httpx.Client
) -> None:
    """Only a faulty or crafted client reuses an id: it is told, not answered "saved" for a
    change that was never made, and the form comes back ready to be sent again."""
    plan_id = plan_site.plans["matti"]
    page = open_page(aino, plan_id)
    used = str(uuid.uuid4())
    noted = aino.post(f"/plans/{plan_id}/notes/new/add", headers=htmx_headers(page),
                      data={"command_id": used, "text": "Soitin asiakkaalle", "visibility": "professionals"})
    assert noted.status_code == 200, noted.text[:500]
    events = plan_site.event_count()
    response = aino.post(f"/plans/{plan_id}/needs/new/add", headers=htmx_headers(page),
                         data={"command_id": used, "category": "everyday_life", "description": "Velat"})
    assert response.status_code == 422
    fragment = Page(response)
    assert "Tällä lomakkeella on jo tallennettu toinen muutos." in fragment.html
    assert fragment.value("command_id") not in ("", used)
    assert plan_site.event_count() == events


def test_a_value_that_is_not_a_number_is_refused_in_swedish_too(plan_site: PlanSite) -> None:
    plan_id = plan_site.plans["matti"]
    with signed_in(plan_site, "aino.virtanen", language="sv") as aino_sv:
        page = open_page(aino_sv, plan_id)
        events = plan_site.event_count()
        response = aino_sv.post(f"/plans/{plan_id}/measures/new/add", headers=htmx_headers(page),
                                data={"command_id": str(uuid.uuid4()), "kind": "work_ability_score",
                                      "value": "paljon", "measured_on": "2026-01-01"})
    assert response.status_code == 422
    assert Page(response).error_of("measure-new", "value") == "Värde: ange ett tal."
    assert plan_site.event_count() == events


def test_a_stale_revision_shows_the_conflict_with_the_other_editor(
    plan_site: PlanSite, aino: httpx.Client, mikko: httpx.Client
) -> None:
    plan_id = plan_site.plans["matti"]
    need_id = new_need(plan_site, aino, plan_id, "Univaikeudet")
    page = open_page(aino, plan_id)
    aino_form = Page(aino.get(f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page)))
    mikko_page = open_page(mikko, plan_id)
    mikko_form = Page(mikko.get(f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(mikko_page)))
    saved = mikko.post(
        f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(mikko_page),
        data={"command_id": mikko_form.value("command_id"), "seen_revision": mikko_form.value("seen_revision"),
              "category": "health", "description": "Univaikeudet, lääkitys aloitettu", "financial": "", "status": "being_addressed"},
    )
    assert saved.status_code == 200
    events = plan_site.event_count()

    response = aino.post(
        f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page),
        data={"command_id": aino_form.value("command_id"), "seen_revision": aino_form.value("seen_revision"),
              "category": "everyday_life", "description": "Univaikeudet, nukkuu päivisin", "financial": "", "status": "open"},
    )
    assert response.status_code == 409
    assert response.headers["hx-retarget"] == f"#need-{need_id}"
    conflict = Page(response)
    assert 'role="alert"' in conflict.html and "data-conflict" in conflict.html
    assert "Joku muu muutti tätä kohdetta (palvelutarve), kun muokkasit sitä." in conflict.html
    assert "Mikko Laine (Pirkanmaan hyvinvointialue, työkyvyn tuki)" in conflict.html
    assert "Palvelutarvekategoria, Kuvaus, Tila" in conflict.html  # which fields Mikko changed
    assert "Univaikeudet, lääkitys aloitettu" in conflict.html  # the saved value...
    assert "Univaikeudet, nukkuu päivisin" in conflict.html  # ...and the draft, still in the form
    assert "Tallenna oma versioni" in conflict.html and "Hylkää muutokseni" in conflict.html
    assert plan_site.event_count() == events  # never a silent overwrite

    current = plan_site.service.get_plan(plan_id).needs[need_id].revision
    assert conflict.value("seen_revision") == str(current)
    again = aino.post(
        f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page),
        data={"command_id": conflict.value("command_id"), "seen_revision": conflict.value("seen_revision"),
              "category": "everyday_life", "description": "Univaikeudet, nukkuu päivisin", "financial": "", "status": "open"},
    )
    assert again.status_code == 200
    assert plan_site.service.get_plan(plan_id).needs[need_id].description == "Univaikeudet, nukkuu päivisin"


def test_an_edit_answers_with_the_item_unless_it_moves_in_its_panel(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["liisa"]
    need_id = new_need(plan_site, aino, plan_id, "Kielitaito")
    page = open_page(aino, plan_id)

    def edit(category: str, description: str) -> httpx.Response:
        form = Page(aino.get(f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page)))
        return aino.post(
            f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page),
            data={"command_id": form.value("command_id"), "seen_revision": form.value("seen_revision"),
                  "category": category, "description": description, "financial": "", "status": "open"},
        )

    same_place = edit("everyday_life", "Kielitaito, suomen kurssi")
    assert same_place.status_code == 200
    assert same_place.headers["hx-retarget"] == f"#need-{need_id}"
    assert same_place.text.lstrip().startswith(f'<li id="need-{need_id}"')
    assert "Kielitaito, suomen kurssi" in same_place.text and 'id="panel-needs"' not in same_place.text

    moved = edit("work_and_employment", "Kielitaito työpaikalla")
    assert moved.status_code == 200
    assert moved.headers["hx-retarget"] == "#panel-needs"
    assert moved.text.lstrip().startswith('<section id="panel-needs"')


def test_a_repeated_command_id_is_applied_once(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["liisa"]
    page = open_page(aino, plan_id)
    command_id = str(uuid.uuid4())
    events = plan_site.event_count()
    for _ in range(2):
        response = aino.post(f"/plans/{plan_id}/notes/new/add", headers=htmx_headers(page),
                             data={"command_id": command_id, "text": "Kaksoisnapsautus", "visibility": "professionals"})
        assert response.status_code == 200
    assert plan_site.event_count() == events + 1
    assert open_page(aino, plan_id).html.count("Kaksoisnapsautus") == 1


def test_a_form_sent_after_the_session_ended_keeps_the_page_and_is_saved_after_signing_in_again(
    plan_site: PlanSite,
) -> None:
    """htmx follows HX-Redirect before anything else: a form sent after the session ended
    (30 idle minutes over a long note) left the page and threw away what was typed. The
    answer stays on the page and offers the sign-in in a new tab; the same form is saved
    after it."""
    plan_id = plan_site.plans["liisa"]
    text = "Pitkä muistiinpano, kirjoitettu hitaasti"
    with signed_in(plan_site, "aino.virtanen") as client:
        page = open_page(client, plan_id)
        assert client.post("/signout", data={"_csrf_token": page.csrf}).status_code == 303
        form = {"command_id": str(uuid.uuid4()), "text": text, "visibility": "professionals"}
        events = plan_site.event_count()

        refused = client.post(f"/plans/{plan_id}/notes/new/add", headers=htmx_headers(page), data=form)

        assert refused.status_code == 401
        assert "hx-redirect" not in refused.headers, "leaving the page loses the draft"
        assert refused.headers["hx-retarget"] == "#messages"
        assert "ei tallentunut" in refused.text and 'href="/signin" target="_blank"' in refused.text
        assert plan_site.event_count() == events
        sign_in(client, plan_site.base_url, "aino.virtanen")  # in the other tab
        saved = client.post(f"/plans/{plan_id}/notes/new/add", headers=htmx_headers(page), data=form)
    assert saved.status_code == 200, saved.text[:300]
    assert plan_site.event_count() == events + 1


def test_a_fragment_read_after_the_session_ended_goes_to_the_sign_in_page(plan_site: PlanSite) -> None:
    plan_id = plan_site.plans["liisa"]
    with signed_in(plan_site, "aino.virtanen") as client:
        page = open_page(client, plan_id)
        client.post("/signout", data={"_csrf_token": page.csrf})
        read = client.get(f"/plans/{plan_id}/notes/new/add",
                          headers={"hx-request": "true", "hx-current-url": f"{plan_site.base_url}/plans/{plan_id}"})
    assert read.status_code == 401
    assert read.headers["hx-redirect"] == f"/signin?next=/plans/{plan_id}"


def test_the_step_forms_offer_the_service_catalogue_and_take_another_service_too(
    plan_site: PlanSite, aino: httpx.Client
) -> None:
    plan_site.app.state.accounts.add_service("Työkokeilu")
    plan_site.app.state.accounts.add_service("Fysioterapia")
    plan_id = plan_site.plans["liisa"]
    page = open_page(aino, plan_id)

    catalogue = page.html[page.html.index('<datalist id="service-catalogue">'):]
    catalogue = catalogue[:catalogue.index("</datalist>")]
    assert re.findall(r'<option value="([^"]*)">', catalogue) == ["Fysioterapia", "Työkokeilu"]
    opened = aino.get(f"/plans/{plan_id}/steps/new/add", headers=htmx_headers(page))
    assert re.search(r'<input id="step-new-service" name="service"[^>]* list="service-catalogue"', opened.text)

    form = Page(opened)
    need_id = re.search(r'<option value="([^"]+)"', opened.text[opened.text.index('name="need_id"'):]).group(1)  # type: ignore[union-attr]
    member_id = re.search(r'<option value="([^"]+)"',
                          opened.text[opened.text.index('name="responsible_member_id"'):]).group(1)  # type: ignore[union-attr]
    saved = aino.post(f"/plans/{plan_id}/steps/new/add", headers=htmx_headers(page), data={
        "command_id": form.value("command_id"), "title": "Vapaaehtoistyö", "need_id": need_id,
        "responsible_member_id": member_id, "service": "Kirjaston vapaaehtoistyö",
        "planned_start": str(today_in_finland() + timedelta(days=7)),
        "planned_end": str(today_in_finland() + timedelta(days=17))})
    assert saved.status_code == 200, saved.text[:500]
    services = [step.service for step in plan_site.service.get_plan(plan_id).steps.values()]
    assert "Kirjaston vapaaehtoistyö" in services


def test_a_plain_post_is_redirected_back_to_the_item(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["liisa"]
    page = open_page(aino, plan_id)
    response = aino.post(f"/plans/{plan_id}/notes/new/add",
                         data={"_csrf_token": page.csrf, "command_id": str(uuid.uuid4()),
                               "text": "Ilman JavaScriptiä", "visibility": "client_and_professionals"})
    assert response.status_code == 303
    location = response.headers["location"]
    assert location.startswith(f"/plans/{plan_id}#note-")
    assert "Ilman JavaScriptiä" in open_page(aino, plan_id).html


def test_a_plain_post_with_an_error_gets_the_whole_page_with_the_form_open(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["liisa"]
    page = open_page(aino, plan_id)
    response = aino.post(f"/plans/{plan_id}/notes/new/add",
                         data={"_csrf_token": page.csrf, "command_id": str(uuid.uuid4()), "text": "", "visibility": "professionals"})
    assert response.status_code == 422
    whole = Page(response)
    assert "<html" in whole.html and 'id="panel-needs"' in whole.html
    assert whole.error_of("note-new", "text") == "Muistiinpano ei voi olla tyhjä."


def test_cancel_gives_the_item_back(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["matti"]
    page = open_page(aino, plan_id)
    need_id = need_ids(page)[0]
    response = aino.get(f"/plans/{plan_id}/needs/{need_id}", headers=htmx_headers(page))
    assert response.status_code == 200
    assert response.text.lstrip().startswith(f'<li id="need-{need_id}"') and "<form method=\"post\"" not in response.text
    assert aino.get(f"/plans/{plan_id}/needs/{need_id}").status_code == 303


def test_a_new_block_of_a_kind_that_has_none_is_not_found(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["matti"]
    page = open_page(aino, plan_id)
    assert aino.get(f"/plans/{plan_id}/client/new", headers=htmx_headers(page)).status_code == 404
    assert aino.get(f"/plans/{plan_id}/needs/new", headers=htmx_headers(page)).status_code == 200


def test_a_rule_of_the_plan_is_shown_above_the_form(plan_site: PlanSite) -> None:
    plan_id = plan_site.plans["eeva"]  # Timo proposed a handover to Aino; only Aino decides
    with signed_in(plan_site, "timo.lehtonen") as timo:
        page = open_page(timo, plan_id)
        handover = plan_site.service.get_plan(plan_id).pending_handover
        events = plan_site.event_count()
        response = timo.post(f"/plans/{plan_id}/handovers/{handover.id}/accept", headers=htmx_headers(page),
                             data={"command_id": str(uuid.uuid4()), "note": ""})
    assert response.status_code == 422
    assert 'role="alert"' in response.text and "Tätä vastuunsiirtoa ei ehdotettu sinulle." in response.text
    assert plan_site.event_count() == events


def test_a_client_name_with_markup_is_escaped(plan_site: PlanSite, aino: httpx.Client) -> None:
    outcome = plan_site.service.open_plan(
        by=plan_site.actor("aino"), command_id=f"xss-{uuid.uuid4()}", client_name="<script>alert('x')</script> Testi",
        segment="unemployed", language="fi", referring_party="other", expert_profession="kuntoutusohjaaja",
    )
    plan_site.wait_for_views()
    html = open_page(aino, outcome.plan_id).html
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; Testi" in html
    caseload = aino.get("/caseload").text
    assert "<script>alert" not in caseload and "&lt;script&gt;alert" in caseload


# --------------------------------------------------------------------------- history


def test_history_at_an_earlier_version_shows_the_earlier_state(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["matti"]
    first = aino.get(f"/plans/{plan_id}/history", params={"at": "1"})
    assert first.status_code == 200
    early = first.text
    assert "Pitkittynyt alaselkäkipu" not in panels_of(early)  # no needs yet at version 1
    assert "Pitkittynyt alaselkäkipu" in early  # but the full history below says it came later
    assert 'type="range"' in early and 'name="at"' in early and 'value="1"' in early
    assert "Avasi suunnitelman asiakkaalle Matti Esimerkki (Työtön), ohjaava taho: Työllisyyspalvelut." in early
    assert "Muokkaa" not in early and 'method="post" action="/plans/' not in early  # read-only
    assert "ws-connect" not in early

    plan = plan_site.service.get_plan(plan_id)
    recorded = next(entry.version for entry in plan_site.service.history(plan_id) if "need" in entry.template)
    later = aino.get(f"/plans/{plan_id}/history", params={"at": str(recorded)}).text
    assert "Pitkittynyt alaselkäkipu" in panels_of(later)
    assert plan.version > recorded


def test_history_at_a_moment_shows_the_plan_as_it_was_then(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["ahmed"]
    entries = plan_site.service.history(plan_id)
    closing = next(entry for entry in entries if entry.template.startswith("Closed"))
    before = (closing.at - timedelta(minutes=1)).isoformat(timespec="minutes")
    page = aino.get(f"/plans/{plan_id}/history", params={"at": before})
    assert page.status_code == 200
    assert "Suljettu" not in page.text.split('id="panel-client"')[1].split("</section>")[0]
    assert aino.get(f"/plans/{plan_id}/history", params={"at": "eilen"}).status_code == 200


def test_history_marks_the_moment_shown_on_the_timeline_not_today(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["ahmed"]
    timeline = aino.get(f"/plans/{plan_id}/history", params={"at": "2"}).text.split('id="panel-timeline"')[1]
    timeline = timeline.split("</section>")[0]
    assert "Näytetty hetki" in timeline and "Tänään" not in timeline
    now = aino.get(f"/plans/{plan_id}").text.split('id="panel-timeline"')[1].split("</section>")[0]
    assert "Tänään" in now and "Näytetty hetki" not in now


def test_history_before_the_opening_says_the_plan_did_not_exist_yet(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan_id = plan_site.plans["ahmed"]
    opened = plan_site.service.history(plan_id)[0].at
    before = (opened - timedelta(days=400)).isoformat(timespec="minutes")
    page = aino.get(f"/plans/{plan_id}/history", params={"at": before})
    assert page.status_code == 200
    assert "Suunnitelmaa ei ollut vielä olemassa valitsemanasi hetkenä" in page.text
    at_opening = aino.get(f"/plans/{plan_id}/history", params={"at": opened.isoformat(timespec="seconds")})
    assert "Suunnitelmaa ei ollut vielä" not in at_opening.text


@pytest.mark.parametrize("at", ["²", "9" * 5000, "abc"])
def test_history_at_something_that_is_no_version_or_moment_asks_for_one(
    plan_site: PlanSite, aino: httpx.Client, at: str
) -> None:
    page = aino.get(f"/plans/{plan_site.plans['ahmed']}/history", params={"at": at})
    assert page.status_code == 200
    assert "Valitse suunnitelman historiasta versio tai päivämäärä ja kellonaika." in page.text


def panels_of(history_page: str) -> str:
    """The plan's panels on the history page (without the list of all changes)."""
    return history_page.split('class="plan plan--history"')[1].split('id="history-list-title"')[0]


# ------------------------------------------------------------------------ live fragments


def test_render_plan_fragments_gives_every_fragment_out_of_band_without_request_data(plan_site: PlanSite) -> None:
    plan = plan_site.app.state.views.plan(plan_site.plans["matti"])
    html = render_plan_fragments(plan_site.app.template_engine, plan, "sv")
    top_level = TopLevel.of(html)
    assert [attributes.get("id") for attributes in top_level] == list(PANEL_IDS)
    assert all(attributes.get("hx-swap-oob") == "true" for attributes in top_level)
    assert "Servicestigens tidslinje" in html  # Swedish
    assert 'method="post"' not in html and "command_id" not in html and "_csrf_token" not in html


# ------------------------------------------------------------------------ translations


def test_every_domain_message_template_is_listed_for_translation() -> None:
    """A refusal or history sentence added to the domain must reach the catalogues."""
    listed = set(ERROR_TEMPLATES) | set(HISTORY_TEMPLATES)
    found = set()
    for path in (REPO_ROOT / "domain").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _is_error_call(node):
                found |= {arg.value for arg in node.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and " " in arg.value}
        if path.name == "history.py":
            found |= {node.value for node in ast.walk(ast.parse(path.read_text()))
                      if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.endswith((".", "s"))
                      and node.value[:1].isupper() and " " in node.value and "\n" not in node.value}
    missing = {template for template in found if template not in listed}
    assert not missing, f"add these to web/domain_messages.py (and translate them): {missing}"


class TopLevel(HTMLParser):
    """The attributes of the top-level elements of an HTML fragment."""

    VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}

    def __init__(self) -> None:
        super().__init__()
        self.depth = 0
        self.found: list[dict[str, str | None]] = []

    @classmethod
    def of(cls, html: str) -> list[dict[str, str | None]]:
        parser = cls()
        parser.feed(html)
        parser.close()
        assert parser.depth == 0, "unbalanced fragment"
        return parser.found

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            self.found.append(dict(attrs))
        if tag not in self.VOID:
            self.depth += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.depth == 0:
            self.found.append(dict(attrs))

    def handle_endtag(self, tag: str) -> None:
        if tag not in self.VOID:
            self.depth -= 1


def _is_error_call(node: ast.Call) -> bool:
    name = node.func.id if isinstance(node.func, ast.Name) else node.func.attr if isinstance(node.func, ast.Attribute) else ""
    return name in {"InvalidValue", "RuleViolation", "NotFound", "NotYours", "DomainError", "_require_expert", "__init__"}


def test_the_plan_templates_have_no_inline_script_or_style() -> None:
    for path in (REPO_ROOT / "web" / "templates" / "plans").rglob("*.html"):
        text = path.read_text()
        assert "<script>" not in text and "style=" not in text and not re.search(r"\son[a-z]+=", text), path
    assert Path(REPO_ROOT / "web" / "templates" / "caseload.html").read_text().count("style=") == 0


# ------------------------------------------------------------------------ in a browser

ARTIFACTS = REPO_ROOT / "test-artifacts"


def browser_page(browser: object, site: PlanSite, username: str) -> object:
    page = browser.new_page(locale="fi-FI", viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
    problems: list[str] = []
    expected = ("status of 409", "status of 422")  # a refused form: the browser notes its status
    page.on("console", lambda message: problems.append(message.text)
            if message.type == "error" and not message.text.endswith(tuple(f"{e} (Conflict)" for e in expected[:1]) + tuple(f"{e} (Unprocessable Entity)" for e in expected[1:]))
            else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    page.problems = problems
    page.goto(f"{site.base_url}/signin")
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.click("form button[type=submit] >> text=Kirjaudu")
    page.wait_for_url(f"{site.base_url}/caseload")
    return page


@pytest.mark.browser
def test_in_a_browser_the_edit_form_takes_the_focus_and_gives_it_back(plan_site: PlanSite, browser: object) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    plan_id = plan_site.plans["matti"]
    page = browser_page(browser, plan_site, "aino.virtanen")
    page.screenshot(path=str(ARTIFACTS / "caseload.png"), full_page=True)
    page.goto(f"{plan_site.base_url}/plans/{plan_id}")
    page.wait_for_selector("#panel-needs")
    page.screenshot(path=str(ARTIFACTS / "plan.png"), full_page=True)

    need_id = page.get_attribute("#panel-needs li.item", "id")
    page.click(f"#{need_id} button >> text=Muokkaa")
    page.wait_for_selector(f"#{need_id} form[data-item-form]")
    page.wait_for_selector(f"#{need_id}-category:focus")
    page.fill(f"#{need_id}-financial", "Toimeentulotuki haettu")
    page.screenshot(path=str(ARTIFACTS / "plan-editing.png"), full_page=False)
    page.click(f"#{need_id} button[type=submit]")
    page.wait_for_selector(f"#{need_id}:not(.item--editing)")
    page.wait_for_selector(f"#{need_id}:focus")
    assert "Toimeentulotuki haettu" in page.inner_text(f"#{need_id}")
    assert "Tallennettu: palvelutarve." in page.inner_text("#messages")
    # The answer was the needs panel only; the rest (the latest changes) came through the
    # live hub, and the page ends on the plan's new version with the edit in place.
    version = plan_site.app.state.views.plan(plan_id).version
    page.wait_for_selector(f'#live-version[data-version="{version}"]', state="attached")
    title = page.inner_text(f"#{need_id} .item__title")
    page.wait_for_selector(f"#panel-history .changes li:first-child >> text={title[:40]}")
    assert "Toimeentulotuki haettu" in page.inner_text(f"#{need_id}")
    assert page.locator("#panel-timeline svg").count() == 1
    page.screenshot(path=str(ARTIFACTS / "plan-after-edit.png"), full_page=True)
    assert page.problems == []
    page.close()


@pytest.mark.browser
def test_in_a_browser_a_conflict_is_shown_and_focused(plan_site: PlanSite, browser: object) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    plan_id = plan_site.plans["liisa"]
    page = browser_page(browser, plan_site, "sanna.koski")
    page.goto(f"{plan_site.base_url}/plans/{plan_id}")
    plan = plan_site.service.get_plan(plan_id)
    need = next(iter(plan.needs.values()))
    page.click(f"#need-{need.id} button >> text=Muokkaa")
    page.wait_for_selector(f"#need-{need.id} form[data-item-form]")
    plan_site.service.update_need(
        plan_id, by=plan_site.actor("kalle"), command_id=str(uuid.uuid4()), need_id=need.id,
        seen_revision=need.revision, category=need.category, description=need.description + " (tarkennettu)",
        financial=need.financial, status="being_addressed",
    )
    page.fill(f"#need-{need.id}-description", "Uupumus, sairausloma jatkuu")
    page.click(f"#need-{need.id} button[type=submit]")
    page.wait_for_selector(f"#need-{need.id} .conflict")
    page.wait_for_selector(f"#need-{need.id} .conflict:focus")
    assert "Kalle Hakala" in page.inner_text(f"#need-{need.id} .conflict")
    assert page.input_value(f"#need-{need.id}-description") == "Uupumus, sairausloma jatkuu"
    page.locator(f"#need-{need.id}").screenshot(path=str(ARTIFACTS / "plan-conflict.png"))
    assert page.problems == []
    page.goto(f"{plan_site.base_url}/plans/{plan_id}/history?at=3")
    page.screenshot(path=str(ARTIFACTS / "plan-history.png"), full_page=True)
    page.close()


# ------------------------------------------------------------------- every form, end to end


class Worker:
    """Works through the plan page as htmx would: opens a form, fills it, saves it."""

    def __init__(self, site: PlanSite, client: httpx.Client, plan_id: str) -> None:
        self.site, self.client, self.plan_id = site, client, plan_id
        self.page = open_page(client, plan_id)

    def open(self, path: str) -> Page:
        response = self.client.get(f"/plans/{self.plan_id}/{path}", headers=htmx_headers(self.page))
        assert response.status_code == 200, response.text[:800]
        return Page(response)

    def save(self, path: str, expect: int = 200, **fields: object) -> Page:
        form = self.open(path)
        data = {"command_id": form.value("command_id"), **fields}
        if 'name="seen_revision"' in form.html:
            data["seen_revision"] = form.value("seen_revision")
        response = self.client.post(f"/plans/{self.plan_id}/{path}", headers=htmx_headers(self.page), data=data)
        assert response.status_code == expect, response.text[:1500]
        return Page(response)

    @property
    def plan(self):  # noqa: ANN201
        return self.site.service.get_plan(self.plan_id)


def test_edits_waiting_for_a_lagging_read_model_hold_no_worker_thread(plan_site: PlanSite) -> None:
    """Two edits whose read model lags (the follower held here, as a writer on another
    instance can lag) wait on the event loop: a page asked for meanwhile is answered at
    once, not after their 5-s wait, with the app's two worker threads."""
    views = plan_site.app.state.views
    held, process = threading.Event(), views.projection.process_event

    def held_back(*args: Any) -> Any:
        assert held.wait(30), "the test never let the follower go"
        return process(*args)

    def edit(description: str) -> int:
        with signed_in(plan_site, "aino.virtanen") as client:
            work = Worker(plan_site, client, plan_site.plans["matti"])
            return work.save("needs/new/add", category="health", description=description).response.status_code

    views.projection.process_event = held_back
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            edits = [pool.submit(edit, f"Odottaa lukumallia {n}") for n in range(2)]
            for _ in range(100):  # both recorded, both answers waiting for the read model
                if len(views._waiting) >= 2:
                    break
                time.sleep(0.05)
            assert len(views._waiting) >= 2
            with signed_in(plan_site, "pekka.nieminen") as pekka:
                assert pekka.get(f"/plans/{plan_site.plans['matti']}").status_code == 200
            assert not any(e.done() for e in edits), "the page was answered only after the edits gave up waiting"
            held.set()
            assert [e.result(timeout=10) for e in edits] == [200, 200]
    finally:
        held.set()
        del views.projection.process_event


def test_a_whole_plan_can_be_worked_through_on_the_page(plan_site: PlanSite, aino: httpx.Client) -> None:
    opened = plan_site.service.open_plan(
        by=plan_site.actor("aino"), command_id=f"worked-{uuid.uuid4()}", client_name="Venla Työnhakija",
        segment="unemployed", language="fi", referring_party="kela", expert_profession="kuntoutusohjaaja",
    )
    plan_site.wait_for_views()
    work = Worker(plan_site, aino, opened.plan_id)
    kela = plan_site.actor("pekka")

    work.save("client/details/edit", client_name="Venla Työnhakija-Esimerkki", segment="employed", language="sv",
              referring_party="health_centre")
    assert work.plan.client.name == "Venla Työnhakija-Esimerkki"
    refused = work.save("consents/new/add", expect=422, organisation_id="ei-ole", valid_from="2026-01-01")
    assert "Ei ole organisaatiota, jonka tunnus on ei-ole." in refused.html
    saved = work.save("consents/new/add", organisation_id=kela.organisation_id, organisation_name="Väärä Kela",
                      valid_from="2026-01-01")
    assert kela.organisation_name in saved.html and "Väärä Kela" not in saved.html  # the register's name, not a typed one
    before = work.plan.version
    for person_id, organisation_id in (("olli.olematon", kela.organisation_id),  # no such account
                                       (plan_site.actor("aino").person_id, kela.organisation_id)):  # not in Kela
        refused = work.save("members/new/add", expect=422, organisation_id=organisation_id, person_id=person_id,
                            profession="Kelan asiantuntija")
        assert f"ei ole ketään käyttäjätunnuksella {person_id}" in refused.html
        assert 'aria-invalid="true"' in refused.html.split('name="person_id"')[0].rsplit("<input", 1)[1] + \
            refused.html.split('name="person_id"')[1].split(">")[0]
    assert work.plan.version == before  # nothing recorded
    saved = work.save("members/new/add", organisation_id=kela.organisation_id, name="Väärä Nimi", person_id=kela.person_id,
                      profession="Kelan asiantuntija", contact="", part="Ammatillinen kuntoutus")
    assert "Pekka Nieminen" in saved.html and "Väärä Nimi" not in saved.html  # the account's name, not a typed one
    member_id = next(m.id for m in work.plan.members.values() if m.person_id == kela.person_id)
    work.save(f"members/{member_id}/edit", profession="Kuntoutusasiantuntija", contact="pekka@example.fi", part="Kela")
    work.save(f"members/{member_id}/counterpart")
    assert work.plan.counterpart.person_id == kela.person_id

    work.save("needs/new/add", category="health", description="Selkäkipu", financial="Sairauspäiväraha")
    need_id = next(iter(work.plan.needs))
    work.save(f"needs/{need_id}/edit", category="health", description="Selkäkipu, pitkittynyt", financial="",
              status="being_addressed")
    work.save("goals/new/add", title="Takaisin töihin", need_ids=[need_id], target_date="2027-06-01")
    goal_id = next(iter(work.plan.goals))
    work.save(f"goals/{goal_id}/revise", title="Takaisin töihin osa-aikaisesti", need_ids=[need_id],
              target_date="2027-08-01")
    work.save("steps/new/add", title="Fysioterapia", need_id=need_id, responsible_member_id=member_id,
              planned_start="2026-01-05", planned_end="2027-02-27", service="Fysioterapia")
    step_id = next(iter(work.plan.steps))
    work.save(f"steps/{step_id}/edit", title="Fysioterapiajakso", need_id=need_id, responsible_member_id=member_id,
              service="Fysioterapia")
    work.save(f"steps/{step_id}/reschedule", planned_start="2026-01-12", planned_end="2027-03-06", reason="Jono")
    work.save(f"steps/{step_id}/progress", status="started", on="2026-01-12", outcome="")
    work.save(f"steps/{step_id}/outcome", outcome="Liikkuvuus parani")
    work.save("measures/new/add", kind="other", value="3.5", measured_on="2026-01-12", scale_name="Kipu-VAS",
              scale_min="0", scale_max="10")
    work.save("notes/new/add", text="Hyvä alku", visibility="client_and_professionals")
    work.save(f"goals/{goal_id}/settle", status="achieved", note="Töissä")

    proposed = work.save("handovers/new/propose", note="Kela jatkaa")
    assert "Odottaa päätöstä: Pekka Nieminen." in proposed.html
    handover_id = work.plan.pending_handover.id
    with signed_in(plan_site, "pekka.nieminen") as pekka:
        Worker(plan_site, pekka, opened.plan_id).save(f"handovers/{handover_id}/accept", note="Otan vastuun")
    assert work.plan.expert.person_id == kela.person_id

    consent_id = next(c.id for c in work.plan.consents.values() if c.organisation_id != kela.organisation_id)
    withdrawn = work.save(f"consents/{consent_id}/withdraw")  # Aino's organisation, now the counterpart's
    assert work.plan.consents[consent_id].withdrawn_on is not None
    people = {m.person_id for m in work.plan.members.values()}
    assert kela.person_id in people and "aino.virtanen" not in people  # her organisation's people left
    # ...and the plan is no longer hers to see: not even in the answer to her own withdrawal
    assert withdrawn.response.headers["hx-redirect"] == "/caseload" and "Pekka Nieminen" not in withdrawn.html
    assert aino.get(f"/plans/{opened.plan_id}").status_code == 404


def test_every_form_of_the_demo_opens(plan_site: PlanSite, aino: httpx.Client) -> None:
    plan = plan_site.service.get_plan(plan_site.plans["eeva"])
    work = Worker(plan_site, aino, plan_site.plans["eeva"])
    step = next(s for s in plan.steps.values() if s.status in ("planned", "started"))
    member = next(m for m in plan.members.values() if m.id not in (plan.responsibility.expert_id, plan.responsibility.counterpart_id))
    paths = [
        "client/details/edit", "client/details/close", "needs/new/add", "goals/new/add", "steps/new/add",
        "members/new/add", "consents/new/add", "measures/new/add", "notes/new/add",
        f"needs/{next(iter(plan.needs))}/edit", f"goals/{next(iter(plan.goals))}/revise", f"goals/{next(iter(plan.goals))}/settle",
        f"steps/{step.id}/edit", f"steps/{step.id}/reschedule", f"steps/{step.id}/progress", f"steps/{step.id}/outcome",
        f"members/{member.id}/edit", f"members/{member.id}/remove", f"members/{member.id}/counterpart",
        f"consents/{next(iter(plan.consents))}/withdraw",
        f"handovers/{plan.pending_handover.id}/accept", f"handovers/{plan.pending_handover.id}/decline",
        f"handovers/{plan.pending_handover.id}/withdraw",
    ]
    focused = {}
    for path in paths:
        form = work.open(path)
        assert 'method="post"' in form.html and 'name="command_id"' in form.html, path
        focused[path] = re.findall(r"<(?:input|textarea|select)[^>]*\bautofocus\b[^>]*>", form.html)
        assert len(focused[path]) <= 1, path
        assert aino.get(f"/plans/{plan_site.plans['eeva']}/{path}").status_code == 200  # and without JavaScript
    # A form whose first field is a choice opens with the focus on it (the chosen one), not on the page.
    for path in (f"steps/{step.id}/progress", f"goals/{next(iter(plan.goals))}/settle"):
        [field] = focused[path]
        assert 'type="radio"' in field and 'name="status"' in field, field
    assert aino.get(f"/plans/{plan_site.plans['eeva']}/needs/new/nonsense").status_code == 404
    assert aino.get(f"/plans/{plan_site.plans['eeva']}/spaceships/new/add").status_code == 404


def test_the_edit_post_asks_for_at_most_one_dependency() -> None:
    """Litestar resolves two or more dependencies of one handler in a task group (two tasks on
    every edit): the hot path takes the plan service from the app's state instead."""
    import inspect

    from web.controllers.plans import PlanController

    parameters = inspect.signature(PlanController.submit.fn).parameters.values()
    dependencies = [p.name for p in parameters if "NamedDependency" in str(p.annotation)]
    assert dependencies == ["views"]


def test_no_handler_resolves_its_dependencies_in_a_task_group(tmp_path: Path) -> None:
    """Litestar resolves the dependencies of one handler that do not depend on each other in
    an anyio task group (two tasks a request). The plan service depends on the views
    (``web.wiring``), so the history page and the client's pages, which ask for both,
    resolve them one after the other; every batch of every route holds one dependency."""
    from litestar.routes import HTTPRoute

    from domain.storage import StoreSettings
    from tests.web.conftest import TEST_SECRET_KEY
    from web.settings import Settings
    from web.wiring import build_app

    app = build_app(Settings(secret_key=TEST_SECRET_KEY, data_dir=tmp_path), StoreSettings(data_dir=str(tmp_path)))
    batches = {
        (route.path, method): [sorted(dependency.key for dependency in batch) for batch in model.dependency_batches]
        for route in app.routes if isinstance(route, HTTPRoute)
        for method, (_handler, model) in route.route_handler_map.items()
    }
    assert batches[("/plans/{plan_id:str}/history", "GET")] == [["views"], ["plans"]]
    assert batches[("/my-plan/comments", "POST")] == [["views"], ["plans"]]
    crowded = {key: found for key, found in batches.items() if any(len(batch) > 1 for batch in found)}
    assert not crowded
