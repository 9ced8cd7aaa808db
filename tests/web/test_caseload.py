"""The caseload page: my plans, my organisation's plans, search, what changed, handovers."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator

import httpx
import pytest

from tests.web.identity_fixtures import add_account
from tests.web.plan_fixtures import Page, PlanSite, htmx_headers, plan_site, signed_in  # noqa: F401


@pytest.fixture
def aino(plan_site: PlanSite) -> Iterator[httpx.Client]:
    with signed_in(plan_site, "aino.virtanen") as client:
        yield client


def section(html: str, title_id: str) -> str:
    start = html.index(f'id="{title_id}"')
    end = html.find("</section>", start)
    return html[start:end]


def rows(html: str) -> dict[str, str]:
    """Each row of a caseload table by its client's name."""
    found = {}
    for row in re.findall(r'<tr class="caseload-row[^"]*">.*?</tr>', html, re.S):
        name = re.search(r'<a href="/plans/[^"]+">([^<]+)</a>', row)
        assert name
        found[name.group(1)] = row
    return found


def test_caseload_lists_my_plans_and_my_organisations(plan_site: PlanSite, aino: httpx.Client) -> None:
    response = aino.get("/caseload")
    assert response.status_code == 200
    html = response.text
    mine = rows(section(html, "mine-title"))
    assert {"Matti Esimerkki", "Eeva Kuvitteellinen"} <= set(mine)
    organisation = rows(section(html, "organisation-title"))
    assert {"Liisa Malliasiakas", "Ahmed Testinen", "Johan Exempel"} <= set(organisation)
    assert not set(mine) & set(organisation)
    matti = mine["Matti Esimerkki"]
    assert f'href="/plans/{plan_site.plans["matti"]}"' in matti
    assert "Työtön" in matti  # segment
    assert "Pekka Nieminen" in matti and "Vastinpari: Aino Virtanen" in matti  # expert and counterpart
    assert "Työkokeilu kevyissä tehtävissä" in matti  # next step
    assert '<td data-label="Roolini">Vastinpari</td>' in matti  # my role
    assert "Suljettu" in organisation["Ahmed Testinen"]


def test_a_handover_awaiting_me_is_highlighted(aino: httpx.Client) -> None:
    mine = rows(section(aino.get("/caseload").text, "mine-title"))
    eeva = mine["Eeva Kuvitteellinen"]
    assert "caseload-row--awaits-me" in eeva
    assert "Odottaa päätöstäsi: siirtäjänä Timo Lehtonen" in eeva
    assert "caseload-row--awaits-me" not in mine["Matti Esimerkki"]


def test_the_handover_is_not_highlighted_for_the_one_who_proposed_it(plan_site: PlanSite) -> None:
    with signed_in(plan_site, "timo.lehtonen") as timo:
        eeva = rows(section(timo.get("/caseload").text, "mine-title"))["Eeva Kuvitteellinen"]
    assert "caseload-row--awaits-me" not in eeva
    assert "Timo Lehtonen" in eeva and "Aino Virtanen" in eeva


def test_search_by_the_clients_name(aino: httpx.Client) -> None:
    html = aino.get("/caseload", params={"q": "kuvitteelli"}).text
    assert set(rows(html)) == {"Eeva Kuvitteellinen"}
    assert 'value="kuvitteelli"' in html
    assert set(rows(aino.get("/caseload", params={"q": "%"}).text)) == set()
    assert "Malliasiakas" in aino.get("/caseload", params={"q": "LIISA"}).text


def test_changed_since_you_last_looked(plan_site: PlanSite) -> None:
    plan_id = plan_site.plans["johan"]
    with signed_in(plan_site, "riikka.salo") as riikka, signed_in(plan_site, "jari.heikkinen") as jari:
        johan = rows(riikka.get("/caseload").text)["Johan Exempel"]
        assert "Uusi sinulle" in johan
        riikka.get(f"/plans/{plan_id}")  # opening the plan marks it seen
        johan = rows(riikka.get("/caseload").text)["Johan Exempel"]
        assert "badge--changed" not in johan

        page = Page(jari.get(f"/plans/{plan_id}"))
        saved = jari.post(f"/plans/{plan_id}/notes/new/add", headers=htmx_headers(page),
                          data={"command_id": str(uuid.uuid4()), "text": "Soitto työnantajalle", "visibility": "professionals"})
        assert saved.status_code == 200
        johan = rows(riikka.get("/caseload").text)["Johan Exempel"]
        assert "Muuttunut edellisen katselusi jälkeen" in johan
        # Jari's own edit does not count as news for Jari.
        assert "badge--changed" not in rows(jari.get("/caseload").text)["Johan Exempel"]


def test_the_caseload_speaks_swedish(plan_site: PlanSite) -> None:
    with signed_in(plan_site, "aino.virtanen", language="sv") as aino_sv:
        html = aino_sv.get("/caseload").text
    assert "Mina klienter" in html and "Planer som jag arbetar med" in html
    assert "Arbetslös" in rows(html)["Matti Esimerkki"]


def test_only_professionals_have_a_caseload(plan_site: PlanSite) -> None:
    accounts = plan_site.app.state.accounts
    add_account(accounts, "client.eeva", name="Eeva Kuvitteellinen", organisation=None, kind="client",
                plan_id=plan_site.plans["eeva"])
    with signed_in(plan_site, "client.eeva") as client:
        assert client.get("/caseload").status_code == 403
        assert client.get(f"/plans/{plan_site.plans['eeva']}").status_code == 403
