"""The client's own view (``/my-plan``) through a real server, with real sign-in.

The client accounts are linked to plans of the demo (``domain.demo``) or to plans a test
opens for itself (tests that change a plan use a plan of their own). The people signing in
are the demo professionals (password ``TEST_PASSWORD``) and the clients added here.

What is checked: the client sees their own plan in their own language; no internal note
(nor any other professionals' field) reaches the client's pages or live fragments; a client
reaches no other plan and no professional page; what the client does (comment, agree with or
question a goal, give or withdraw a consent) is recorded as events by the client; a live
update reaches the client's socket, rendered for the client's audience.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import httpx
import psycopg
import pytest
from eventsourcing.persistence import OperationalError
from markupsafe import escape
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from domain.demo import PEOPLE
from domain.errors import StoreUnavailable
from domain.values import today_in_finland
from tests.web.identity_fixtures import add_account
from tests.web.plan_fixtures import Page, PlanSite, htmx_headers, plan_site, signed_in  # noqa: F401
from web.client_page import AUDIENCE, FRAGMENT_IDS, render_client_fragments
from web.i18n import translations
from web.live.messages import VERSION_MARKER_ID

WITHIN = 3.0  # seconds: a live update reaches the client within this

#: Demo clients, by the demo plan's key: (username, name).
DEMO_CLIENTS = {
    "matti": ("matti.esimerkki", "Matti Esimerkki"),
    "liisa": ("liisa.malliasiakas", "Liisa Malliasiakas"),
    "eeva": ("eeva.kuvitteellinen", "Eeva Kuvitteellinen"),
}

#: What the demo's professionals wrote for themselves (never for the client's eyes).
INTERNAL_DEMO_TEXTS = (
    "Asiakas motivoitunut, toivoo työkokeilua keväällä.",  # Matti: an internal note
    "Työmarkkinatuki, vuokrarästejä",  # a need's financial side
    "Pitkittynyt alaselkäkipu",  # a need's description
    "Kuntoutuksen jatko Kelan ammatillisena kuntoutuksena",  # a handover's note
    "Kipu helpottanut, liikkuminen sujuu",  # a step's outcome
)


@pytest.fixture(scope="module")
def site(plan_site: PlanSite) -> PlanSite:
    """The plan site with a client account for three demo plans."""
    accounts = plan_site.app.state.accounts
    for key, (username, name) in DEMO_CLIENTS.items():
        if accounts.account_by_username(username) is None:
            add_account(accounts, username, name=name, kind="client", plan_id=plan_site.plans[key], organisation=None)
    return plan_site


def client_of(site: PlanSite, key: str, language: str | None = None) -> Any:
    """``with client_of(site, "matti") as matti:``: signed in as the client of that demo plan."""
    return signed_in(site, DEMO_CLIENTS[key][0], language or "fi")


def my_plan(client: httpx.Client) -> Page:
    response = client.get("/my-plan")
    assert response.status_code == 200, response.text[:500]
    return Page(response)


def gettext(language: str) -> Any:
    return translations(language).gettext


@dataclass
class OwnPlan:
    """A plan a test opened for itself, and its client's account."""

    plan_id: str
    username: str
    goal_id: str
    kela_consent_id: str
    internal_note: str
    client_note: str


def open_own_plan(site: PlanSite, language: str = "fi") -> OwnPlan:
    """Aino's new plan: Pekka (Kela) as the counterpart, Timo (employment services) in the
    network, a goal, a step, an internal note and a note for the client; and a client account."""
    service = site.service
    aino, pekka, timo = (PEOPLE[k][0] for k in ("aino", "pekka", "timo"))
    tag = uuid.uuid4().hex[:8]
    opened = service.open_plan(
        by=aino, command_id=str(uuid.uuid4()), client_name=f"Testi Asiakas {tag}", segment="unemployed",
        language=language, referring_party="self_referral", expert_profession="kuntoutusohjaaja",
        expert_contact="aino.virtanen@example.fi",
    )
    plan_id = opened.plan_id

    def do(command: str, by: Any = aino, **fields: Any) -> Any:
        return getattr(service, command)(plan_id, by=by, command_id=str(uuid.uuid4()), **fields)

    today = today_in_finland()
    consents = {}
    members = {}
    for who in (pekka, timo):
        consents[who.organisation_id] = do("give_consent", organisation_id=who.organisation_id,
                                           organisation_name=who.organisation_name, valid_from=today).item_id
        members[who.person_id] = do("add_member", person_id=who.person_id, name=who.name,
                                    profession=PEOPLE[who.person_id.split(".")[0]][1],
                                    organisation_id=who.organisation_id, organisation_name=who.organisation_name,
                                    contact=f"{who.person_id}@example.fi").item_id
    do("name_counterpart", member_id=members[pekka.person_id], seen_revision=0)
    need = do("record_need", category="work_and_employment", description=f"Sisäinen tarvekuvaus {tag}",
              financial=f"Sisäinen taloustieto {tag}").item_id
    goal = do("set_goal", title=f"Työkokeilu alkaa {tag}", need_ids=[need], target_date=today + timedelta(days=90)).item_id
    do("plan_step", title=f"Tapaaminen työvalmentajan kanssa {tag}", need_id=need,
       responsible_member_id=members[timo.person_id], planned_start=today + timedelta(days=7),
       planned_end=today + timedelta(days=7))
    internal = f"Sisäinen muistiinpano {tag}: vain ammattilaisille"
    client_note = f"Terveisiä asiakkaalle {tag}"
    do("add_note", text=internal)
    last = do("add_note", text=client_note, visibility="client_and_professionals")
    assert site.app.state.views.wait_for(last.position, timeout=10)
    username = f"asiakas-{tag}"
    add_account(site.app.state.accounts, username, name=f"Testi Asiakas {tag}", kind="client", plan_id=plan_id,
                organisation=None)
    return OwnPlan(plan_id=plan_id, username=username, goal_id=goal, kela_consent_id=consents[pekka.organisation_id],
                   internal_note=internal, client_note=client_note)


def last_event(site: PlanSite, plan_id: str) -> Any:
    return list(site.service.events.get(uuid.UUID(plan_id)))[-1]


# --------------------------------------------------------------------------- what the client sees


def test_the_client_sees_their_plan_in_finnish(site: PlanSite) -> None:
    _ = gettext("fi")
    with client_of(site, "matti") as matti:
        page = my_plan(matti)
    html = page.html
    plan = site.service.get_plan(site.plans["matti"])
    assert '<html lang="fi">' in html
    assert f"<h1>{escape(_('Your plan'))}</h1>" in html
    assert _("Your plan") != "Your plan", "the page speaks Finnish"
    assert "Matti Esimerkki" in html
    # who helps: the named expert and the counterpart, with their contact details
    assert "Pekka Nieminen" in html and "pekka.nieminen@example.fi" in html
    assert "Aino Virtanen" in html and "aino.virtanen@example.fi" in html
    assert str(escape(_("Your named expert"))) in html
    # the handover told in plain words: the new named expert, the earlier one still there
    notice = html[html.index('class="my-handover my-handover--done"'):]
    notice = notice[:notice.index("</p>")]
    assert "Pekka Nieminen" in notice and "Aino Virtanen" in notice
    expert = html[html.index('id="my-expert"'):]
    assert "Pekka Nieminen" in expert[:expert.index("</div>")]
    # the timeline with its table, the goals, the next steps, the network
    section = html[html.index('id="my-timeline"'):]
    assert section.index("<svg") < section.index('<table class="timeline-table"')
    for goal in plan.goals.values():
        assert str(escape(goal.title)) in html
    assert "Työkokeilu kevyissä tehtävissä" in html and "Timo Lehtonen" in html  # a step: what, who
    assert "Mikko Laine" in html and "lääkäri" in html  # the network: name, profession
    assert "Tampereen seudun työllisyysalue" in html  # ...organisation
    assert set(FRAGMENT_IDS) <= page.ids()
    assert re.search(r"\d{1,2}\.\d{1,2}\.20\d\d", html), "dates in Finnish format"


def test_the_clients_timeline_speaks_as_the_cards_do(site: PlanSite) -> None:
    """Plain words, and one word for one state: the table is what a screen reader reads."""
    with client_of(site, "matti") as matti:
        html = my_plan(matti).html
    table = html[html.index('<table class="timeline-table"'):]
    table = table[:table.index("</table>")]
    assert "<caption>Aikajanasi." in table and '<th scope="col">Osa-alue</th>' in table
    assert "Palvelu" not in table and "Tavoite asetettu" not in table  # no "Palvelupolun", "Palvelutarvekategoria"
    assert "Työn alla" in table  # a goal set, as its card says it
    svg = html[html.index("<svg"):html.index("</svg>")]
    assert "Aikajanasi" in svg and "Palvelupolun aikajana" not in svg


def test_the_client_sees_their_plan_in_the_plans_language_whatever_the_browser_says(site: PlanSite) -> None:
    _ = gettext("sv")
    with client_of(site, "eeva", language="en") as eeva:  # the browser asks for English
        html = my_plan(eeva).html
    assert '<html lang="sv">' in html  # Eeva's plan is in Swedish
    assert f"<h1>{escape(_('Your plan'))}</h1>" in html and _("Your plan") != "Your plan"
    # Eeva's handover is pending: told in plain words
    assert str(escape(_("Your named expert may change"))) in html
    assert str(escape(_("%(current)s has proposed that %(successor)s takes over.") % {
        "current": "Timo Lehtonen", "successor": "Aino Virtanen"})) in html


def test_the_language_switch_still_works_for_the_client(site: PlanSite) -> None:
    with client_of(site, "eeva") as eeva:
        page = my_plan(eeva)
        answer = eeva.post("/language", data={"_csrf_token": page.csrf, "lang": "en", "next": "/my-plan"})
        assert answer.status_code == 303 and answer.headers["location"] == "/my-plan"
        html = my_plan(eeva).html
    assert '<html lang="en">' in html and "<h1>Your plan</h1>" in html


def test_the_client_page_has_headings_in_order_and_no_inline_script_or_style(site: PlanSite) -> None:
    with client_of(site, "matti") as matti:
        html = my_plan(matti).html
    levels = [int(level) for level in re.findall(r"<h([1-6])[ >]", html)]
    assert levels[0] == 1
    assert all(after - before <= 1 for before, after in zip(levels, levels[1:], strict=False))
    main = html[html.index("<main"):]
    assert "<script>" not in main and " style=" not in main and not re.search(r"\son[a-z]+=", main)


# --------------------------------------------------------------------------- never internal


def test_no_internal_note_or_field_reaches_any_of_the_clients_pages(site: PlanSite) -> None:
    own = open_own_plan(site)
    plan = site.service.plan_record(own.plan_id)
    tag = own.username.split("-")[1]
    secrets = [own.internal_note, f"Sisäinen tarvekuvaus {tag}", f"Sisäinen taloustieto {tag}"]
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        answers = [page.html]
        answers.append(client.get(f"/my-plan/consents/{own.kela_consent_id}/withdraw").text)
        answers.append(client.get(f"/my-plan/consents/{own.kela_consent_id}/withdraw",
                                  headers=htmx_headers(page)).text)
        answers.append(client.get(f"/my-plan/consents/{own.kela_consent_id}", headers=htmx_headers(page)).text)
        refused = client.post(f"/my-plan/goals/{own.goal_id}/view", headers=htmx_headers(page),
                              data={"command_id": str(uuid.uuid4()), "seen_revision": "1", "stance": "questions"})
        assert refused.status_code == 422
        answers.append(refused.text)
        saved = client.post("/my-plan/comments", headers=htmx_headers(page),
                            data={"command_id": str(uuid.uuid4()), "text": "Kiitos tiedoista."})
        assert saved.status_code == 200
        answers.append(saved.text)
    assert str(escape(own.client_note)) in page.html, "a note for the client is shown"
    for answer in answers:
        for secret in secrets:
            assert str(escape(secret)) not in answer
    # the live hub's client fragments neither
    engine = site.app.template_engine
    for language in ("fi", "sv", "en"):
        fragments = render_client_fragments(engine, plan, language)
        assert str(escape(own.client_note)) in fragments
        for secret in secrets:
            assert str(escape(secret)) not in fragments


def test_no_internal_text_of_the_demo_reaches_the_client(site: PlanSite) -> None:
    with client_of(site, "matti") as matti:
        html = my_plan(matti).html
    for secret in INTERNAL_DEMO_TEXTS:
        assert str(escape(secret)) not in html


# --------------------------------------------------------------------------- only their own plan


def test_a_client_cannot_open_another_plan_nor_the_professional_pages(site: PlanSite) -> None:
    liisa_plan = site.service.get_plan(site.plans["liisa"])
    liisa_goal = next(iter(liisa_plan.goals))
    liisa_consent = next(iter(liisa_plan.consents))
    with client_of(site, "matti") as matti:
        page = my_plan(matti)
        # another's plan, or a guessed id: as if there were no such plan
        for plan_id in (site.plans["liisa"], site.plans["johan"], str(uuid.uuid4())):
            for path in (f"/plans/{plan_id}", f"/plans/{plan_id}/history", f"/plans/{plan_id}/goals/new",
                         f"/plans/{plan_id}/notes/new/add"):
                response = matti.get(path)
                assert response.status_code == 404, (path, response.status_code)
                assert "Liisa Malliasiakas" not in response.text and "Johan Exempel" not in response.text
        # their own plan through the professionals' pages: refused too (their view is /my-plan)
        own = site.plans["matti"]
        for path in (f"/plans/{own}", f"/plans/{own}/history", f"/plans/{own}/notes/new/add"):
            response = matti.get(path)
            assert response.status_code in (403, 404), (path, response.status_code)
            assert "Asiakas motivoitunut" not in response.text
        assert matti.get("/caseload").status_code in (403, 404)
        # a guessed id in the client's own routes is looked up in their own plan only
        assert matti.get(f"/my-plan/consents/{liisa_consent}/withdraw").status_code == 404
        before = site.event_count()
        forged = matti.post(f"/my-plan/goals/{liisa_goal}/view", headers=htmx_headers(page),
                            data={"command_id": str(uuid.uuid4()), "seen_revision": "0", "stance": "agrees"})
        assert forged.status_code == 404
        forged = matti.post(f"/my-plan/consents/{liisa_consent}/withdraw", headers=htmx_headers(page),
                            data={"command_id": str(uuid.uuid4()), "seen_revision": "0"})
        assert forged.status_code == 404
        forged = matti.post(f"/plans/{site.plans['liisa']}/notes/new/add", headers=htmx_headers(page),
                            data={"command_id": str(uuid.uuid4()), "text": "Hei", "visibility": "professionals"})
        assert forged.status_code == 404
        assert site.event_count() == before
        # a query naming another plan changes nothing: the plan comes from the account
        assert "Liisa Malliasiakas" not in matti.get(f"/my-plan?plan_id={site.plans['liisa']}").text


def test_a_professional_cannot_open_the_clients_view(site: PlanSite) -> None:
    with signed_in(site, "aino.virtanen") as aino:
        assert aino.get("/my-plan").status_code in (403, 404)


# --------------------------------------------------------------------------- what the client does


def test_a_comment_is_recorded_by_the_client_for_the_client_and_the_professionals(site: PlanSite) -> None:
    own = open_own_plan(site)
    _ = gettext("fi")
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        response = client.post(
            "/my-plan/comments", headers=htmx_headers(page),
            # a forged visibility is not taken: the client's comments are always for both
            data={"command_id": page.value("command_id"), "text": "Voinko siirtää tapaamista?",
                  "visibility": "professionals"},
        )
        assert response.status_code == 200, response.text[:500]
        assert response.headers["hx-retarget"] == "#my-notes"
        assert "Voinko siirtää tapaamista?" in response.text
        assert str(escape(_("Thank you. Your comment was sent."))) in response.text
        assert str(escape(_("You wrote"))) in response.text
    note = site.service.plan_record(own.plan_id).notes[-1]
    assert note.text == "Voinko siirtää tapaamista?"
    assert note.visibility == "client_and_professionals"
    event = last_event(site, own.plan_id)
    assert type(event).__name__ == "NoteAdded"
    assert event.actor.person_id == own.username and event.actor.organisation_id == ""
    with signed_in(site, "aino.virtanen") as aino:
        assert "Voinko siirtää tapaamista?" in aino.get(f"/plans/{own.plan_id}").text


def test_an_empty_comment_is_refused_next_to_its_field_and_records_nothing(site: PlanSite) -> None:
    own = open_own_plan(site)
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        before = site.event_count()
        response = client.post("/my-plan/comments", headers=htmx_headers(page),
                               data={"command_id": str(uuid.uuid4()), "text": "  "})
        assert response.status_code == 422
        assert site.event_count() == before
        error = Page(response).error_of("comment-new", "text")
        assert error and error != "text must not be empty."
        assert '<div id="messages" hx-swap-oob="innerHTML"></div>' in response.text  # an earlier "sent" goes


def test_a_comment_the_event_store_cannot_take_is_a_503_and_records_nothing(
    site: PlanSite, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database out of reach is no refusal of the comment (422): the page's 503 in the
    plan's language, with Retry-After, into #messages; the draft stays to send again."""
    own = open_own_plan(site)
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        before = site.event_count()

        def unreachable(*aggregates: Any, **kwargs: Any) -> Any:
            raise OperationalError("connection refused") from psycopg.OperationalError("connection refused")

        monkeypatch.setattr(site.service, "save", unreachable)
        command = {"command_id": str(uuid.uuid4()), "text": "Voinko siirtää tapaamista?"}
        response = client.post("/my-plan/comments", headers=htmx_headers(page), data=command)
        monkeypatch.undo()
        assert response.status_code == 503, response.text[:300]
        assert response.headers["retry-after"] == "2" and response.headers["hx-retarget"] == "#messages"
        assert gettext("fi")("The service could not reach its database just now. Nothing was saved. "
                             "Please try again in a moment.") in response.text
        assert site.event_count() == before
        assert client.post("/my-plan/comments", headers=htmx_headers(page), data=command).status_code == 200


def test_the_client_agrees_with_a_goal(site: PlanSite) -> None:
    own = open_own_plan(site)
    _ = gettext("fi")
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        response = client.post(
            f"/my-plan/goals/{own.goal_id}/view", headers=htmx_headers(page),
            data={"command_id": str(uuid.uuid4()), "seen_revision": "1", "stance": "agrees", "comment": ""},
        )
        assert response.status_code == 200, response.text[:500]
        assert str(escape(_("Thank you. Your view of the goal was saved."))) in response.text
    goal = site.service.get_plan(own.plan_id).goals[own.goal_id]
    assert goal.client_stance == "agrees"
    event = last_event(site, own.plan_id)
    assert type(event).__name__ == "GoalClientViewRecorded" and event.actor.person_id == own.username


@pytest.mark.parametrize("stance", ["maybe", None])
def test_a_view_of_a_goal_without_a_known_stance_is_told_above_the_buttons(site: PlanSite, stance: str | None) -> None:
    """The stance is the button pressed, so only a crafted request lacks it; it still gets a
    message, where the form shows its messages, and nothing is recorded."""
    own = open_own_plan(site)
    data = {"command_id": str(uuid.uuid4()), "seen_revision": "1", "comment": "Hmm"}
    if stance is not None:
        data["stance"] = stance
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        before = site.event_count()
        refused = client.post(f"/my-plan/goals/{own.goal_id}/view", headers=htmx_headers(page), data=data)

    assert refused.status_code == 422
    assert site.event_count() == before
    form = refused.text[refused.text.index(f'id="goal-{own.goal_id}-message"'):]
    message = form[form.index(">") + 1:form.index("</div>")]
    assert message.strip(), "the refusal says why"
    assert 'role="alert"' in refused.text


def test_questioning_a_goal_needs_words_then_both_views_show_side_by_side(site: PlanSite) -> None:
    own = open_own_plan(site)
    _ = gettext("fi")
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        before = site.event_count()
        refused = client.post(
            f"/my-plan/goals/{own.goal_id}/view", headers=htmx_headers(page),
            data={"command_id": str(uuid.uuid4()), "seen_revision": "1", "stance": "questions", "comment": ""},
        )
        assert refused.status_code == 422
        assert site.event_count() == before
        assert Page(refused).error_of(f"goal-{own.goal_id}", "comment") == _(
            "Say in your own words what you would change in the goal.")
        words = "Aloittaisin kahdella tunnilla päivässä."
        saved = client.post(
            f"/my-plan/goals/{own.goal_id}/view", headers=htmx_headers(page),
            data={"command_id": str(uuid.uuid4()), "seen_revision": "1", "stance": "questions", "comment": words},
        )
        assert saved.status_code == 200, saved.text[:500]
        html = my_plan(client).html
    goal = site.service.get_plan(own.plan_id).goals[own.goal_id]
    assert (goal.client_stance, goal.client_comment) == ("questions", words)
    assert last_event(site, own.plan_id).actor.person_id == own.username
    views = html[html.index('class="both-views"'):]
    views = views[:views.index("</li>")]
    assert views.index(str(escape(goal.title))) < views.index(words), "the plan's words, then the client's"
    # the professionals' words of the goal and the client's, side by side for the professionals too
    engine = site.app.template_engine
    beside = engine.render("client/goal_views.html", item=goal, lang="fi")
    assert beside.index(str(escape(goal.title))) < beside.index(words)
    assert str(escape(_("The client would change it"))) in beside
    with signed_in(site, "aino.virtanen") as aino:
        professional = aino.get(f"/plans/{own.plan_id}").text
    item = professional[professional.index(f'id="goal-{own.goal_id}"'):]
    item = item[:item.index("</li>")]
    assert 'class="both-views"' in item and str(escape(goal.title)) in item and words in item


def test_a_goal_changed_while_the_client_writes_keeps_their_words(site: PlanSite) -> None:
    own = open_own_plan(site)
    plan = site.service.get_plan(own.plan_id)
    goal = plan.goals[own.goal_id]
    site.service.revise_goal(own.plan_id, by=PEOPLE["aino"][0], command_id=str(uuid.uuid4()), goal_id=goal.id,
                             seen_revision=goal.revision, title="Työkokeilu alkaa keväällä",
                             need_ids=goal.need_ids, target_date=goal.target_date)
    site.wait_for_views()
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        response = client.post(
            f"/my-plan/goals/{own.goal_id}/view", headers=htmx_headers(page),
            data={"command_id": str(uuid.uuid4()), "seen_revision": str(goal.revision), "stance": "questions",
                  "comment": "Liian pian minulle."},
        )
    assert response.status_code == 422
    assert "Liian pian minulle." in response.text and "Työkokeilu alkaa keväällä" in response.text
    assert site.service.get_plan(own.plan_id).goals[own.goal_id].client_stance == ""


def test_withdrawing_a_consent_is_confirmed_first_and_takes_the_organisations_people_out(site: PlanSite) -> None:
    own = open_own_plan(site)
    _ = gettext("fi")
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        confirm = client.get(f"/my-plan/consents/{own.kela_consent_id}/withdraw", headers=htmx_headers(page))
        assert confirm.status_code == 200
        assert confirm.headers["hx-retarget"] == f"#consent-{own.kela_consent_id}"
        assert "Pekka Nieminen" in confirm.text  # who leaves the network
        assert str(escape(_("Yes, withdraw my consent"))) in confirm.text
        assert site.service.get_plan(own.plan_id).consents[own.kela_consent_id].withdrawn_on is None
        form = Page(confirm)
        response = client.post(
            f"/my-plan/consents/{own.kela_consent_id}/withdraw", headers=htmx_headers(page),
            data={"command_id": form.value("command_id"), "seen_revision": form.value("seen_revision")},
        )
        assert response.status_code == 200, response.text[:500]
        assert str(escape(_("Your consent was withdrawn."))) in response.text
        html = my_plan(client).html
    plan = site.service.get_plan(own.plan_id)
    assert plan.consents[own.kela_consent_id].withdrawn_on is not None
    assert plan.member_of_person("pekka.nieminen") is None and plan.counterpart is None
    event = last_event(site, own.plan_id)
    assert type(event).__name__ == "ConsentWithdrawn" and event.actor.person_id == own.username
    network = html[html.index('id="my-network"'):html.index('id="my-consents"')]
    assert "Pekka Nieminen" not in network
    with signed_in(site, "pekka.nieminen") as pekka:  # Kela's people no longer reach the plan
        assert pekka.get(f"/plans/{own.plan_id}").status_code in (403, 404)


def test_the_client_withdraws_a_consent_after_the_plan_was_closed(site: PlanSite) -> None:
    """The client's consent is theirs to withdraw after the plan too: Kela's people then no
    longer reach the closed plan."""
    own = open_own_plan(site)
    aino, timo = PEOPLE["aino"][0], PEOPLE["timo"][0]
    plan = site.service.get_plan(own.plan_id)
    (step,) = plan.steps.values()
    site.service.progress_step(own.plan_id, by=timo, command_id=str(uuid.uuid4()), step_id=step.id,
                               seen_revision=step.revision, status="cancelled", on=today_in_finland())
    closed = site.service.close_plan(own.plan_id, by=aino, command_id=str(uuid.uuid4()), outcome="work")
    assert site.app.state.views.wait_for(closed.position, timeout=10)
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        item = page.html[page.html.index(f'id="consent-{own.kela_consent_id}"'):]
        assert f"/my-plan/consents/{own.kela_consent_id}/withdraw" in item[:item.index("</li>")]
        confirm = Page(client.get(f"/my-plan/consents/{own.kela_consent_id}/withdraw", headers=htmx_headers(page)))
        response = client.post(
            f"/my-plan/consents/{own.kela_consent_id}/withdraw", headers=htmx_headers(page),
            data={"command_id": confirm.value("command_id"), "seen_revision": confirm.value("seen_revision")},
        )
        assert response.status_code == 200, response.text[:500]
    plan = site.service.get_plan(own.plan_id)
    assert plan.is_closed and plan.consents[own.kela_consent_id].withdrawn_on is not None
    with signed_in(site, "pekka.nieminen") as pekka:
        assert pekka.get(f"/plans/{own.plan_id}").status_code in (403, 404)


def test_the_named_experts_consent_cannot_be_withdrawn(site: PlanSite) -> None:
    own = open_own_plan(site)
    plan = site.service.get_plan(own.plan_id)
    expert_consent = next(c for c in plan.consents.values() if c.organisation_id == plan.expert.organisation_id)
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        item = page.html[page.html.index(f'id="consent-{expert_consent.id}"'):]
        assert f"/my-plan/consents/{expert_consent.id}/withdraw" not in item[:item.index("</li>")]
        before = site.event_count()
        response = client.post(f"/my-plan/consents/{expert_consent.id}/withdraw", headers=htmx_headers(page),
                               data={"command_id": str(uuid.uuid4()), "seen_revision": str(expert_consent.revision)})
        assert response.status_code == 422
        assert site.event_count() == before


def test_the_client_gives_a_consent(site: PlanSite) -> None:
    own = open_own_plan(site)
    _ = gettext("fi")
    outi = PEOPLE["outi"][0]
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        assert f'value="{outi.organisation_id}"' in page.html
        refused = client.post("/my-plan/consents/new", headers=htmx_headers(page),
                              data={"command_id": str(uuid.uuid4()), "organisation_id": "no-such-organisation"})
        assert refused.status_code == 422
        assert Page(refused).error_of("consent-new", "organisation_id") == _("Choose an organisation.")
        response = client.post("/my-plan/consents/new", headers=htmx_headers(page),
                               data={"command_id": str(uuid.uuid4()), "organisation_id": outi.organisation_id,
                                     "organisation_name": "<forged name>"})
        assert response.status_code == 200, response.text[:500]
        assert str(escape(_("Your consent was given."))) in response.text
    plan = site.service.get_plan(own.plan_id)
    consent = plan.valid_consent_for(outi.organisation_id, today_in_finland())
    assert consent is not None and consent.organisation_name == outi.organisation_name
    event = last_event(site, own.plan_id)
    assert type(event).__name__ == "ConsentGiven" and event.actor.person_id == own.username


def test_without_javascript_a_form_goes_back_to_the_page(site: PlanSite) -> None:
    own = open_own_plan(site)
    with signed_in(site, own.username) as client:
        page = my_plan(client)
        response = client.post("/my-plan/comments",
                               data={"_csrf_token": page.csrf, "command_id": str(uuid.uuid4()), "text": "Ilman skriptejä"})
        assert response.status_code == 303 and response.headers["location"].startswith("/my-plan#note-")
        confirm = client.get(f"/my-plan/consents/{own.kela_consent_id}/withdraw")
        assert confirm.status_code == 200 and '<html lang="fi">' in confirm.text
        assert "Pekka Nieminen" in confirm.text
        refused = client.post(f"/my-plan/goals/{own.goal_id}/view",
                              data={"_csrf_token": page.csrf, "command_id": str(uuid.uuid4()), "seen_revision": "1",
                                    "stance": "questions", "comment": ""})
        assert refused.status_code == 422 and '<html lang="fi">' in refused.text


def test_a_form_without_the_csrf_token_is_refused(site: PlanSite) -> None:
    own = open_own_plan(site)
    with signed_in(site, own.username) as client:
        my_plan(client)
        before = site.event_count()
        response = client.post("/my-plan/comments", data={"command_id": str(uuid.uuid4()), "text": "Hei"})
        assert response.status_code == 403
        assert site.event_count() == before


# --------------------------------------------------------------------------- live


def ws_url(site: PlanSite, path: str) -> str:
    return "ws" + site.base_url.removeprefix("http") + path


async def open_socket(site: PlanSite, client: httpx.Client, path: str, origin: str | None = None) -> ClientConnection:
    cookies = "; ".join(f"{name}={value}" for name, value in client.cookies.items())
    return await connect(ws_url(site, path), origin=origin or site.base_url,  # type: ignore[arg-type]
                         additional_headers={"Cookie": cookies}, open_timeout=5, close_timeout=2)


async def update_containing(socket: ClientConnection, text: str) -> str:
    async with asyncio.timeout(WITHIN):
        while True:
            message = await socket.recv()
            assert isinstance(message, str)
            if f'id="{VERSION_MARKER_ID}"' in message and str(escape(text)) in message:
                return message


async def test_a_live_update_reaches_the_clients_socket_without_internal_notes(site: PlanSite) -> None:
    own = open_own_plan(site)
    aino = PEOPLE["aino"][0]
    version = site.app.state.views.plan(own.plan_id).version
    with signed_in(site, own.username) as client, signed_in(site, "aino.virtanen") as professional:
        mine = await open_socket(site, client, f"/my-plan/live?version={version}")
        other_tab = await open_socket(site, client, f"/my-plan/live?version={version}")
        theirs = await open_socket(site, professional, f"/plans/{own.plan_id}/live?version={version}")
        try:
            await asyncio.sleep(0.2)
            service = site.service
            secret = f"Sisäinen huomio {uuid.uuid4().hex[:6]}"
            await asyncio.to_thread(service.add_note, own.plan_id, by=aino, command_id=str(uuid.uuid4()), text=secret)
            professional_update = await update_containing(theirs, secret)
            title = f"Uusi vaihe {uuid.uuid4().hex[:6]}"
            plan = site.app.state.views.plan(own.plan_id)
            need_id = next(iter(plan.needs))
            member_id = plan.expert.id
            day = today_in_finland() + timedelta(days=3)
            await asyncio.to_thread(service.plan_step, own.plan_id, by=aino, command_id=str(uuid.uuid4()),
                                    title=title, need_id=need_id, responsible_member_id=member_id,
                                    planned_start=day, planned_end=day)
            update = await update_containing(mine, title)
            same = await update_containing(other_tab, title)
            await update_containing(theirs, title)
        finally:
            for socket in (mine, other_tab, theirs):
                await socket.close()
    assert same == update, "rendered once for the client's audience and language: the same bytes to each tab"
    assert secret not in update and own.internal_note not in update
    assert str(escape(own.client_note)) in update
    for fragment_id in FRAGMENT_IDS:
        assert f'id="{fragment_id}"' in update
    assert 'id="panel-notes"' not in update and 'id="presence"' not in update
    assert secret in professional_update and 'id="my-notes"' not in professional_update
    hub = site.app.state.live_hub
    assert AUDIENCE in hub.audiences
    assert str(escape(translations("fi").gettext("Your plan"))) in update  # the client's language


async def test_the_clients_socket_is_refused_to_others_and_from_elsewhere(site: PlanSite) -> None:
    with client_of(site, "matti") as matti, signed_in(site, "aino.virtanen") as aino:
        for client, path, origin in (
            (aino, "/my-plan/live", None),  # a professional
            (matti, "/my-plan/live", "http://evil.example"),  # another site
            (matti, f"/plans/{site.plans['matti']}/live", None),  # the professionals' socket
            (matti, f"/plans/{site.plans['liisa']}/live", None),
        ):
            with pytest.raises(InvalidStatus) as refused:
                socket = await open_socket(site, client, path, origin=origin)
                await socket.close()
            assert refused.value.response.status_code in (401, 403), path
    with httpx.Client(base_url=site.base_url) as stranger:
        with pytest.raises(InvalidStatus):
            await open_socket(site, stranger, "/my-plan/live")


@pytest.mark.parametrize("error", [
    psycopg.OperationalError("the database system is starting up"),
    OperationalError("connection refused"),
    StoreUnavailable("the plan views could not be read"),
], ids=lambda error: type(error).__module__.split(".")[0] + "." + type(error).__name__)
async def test_a_database_outage_refuses_the_clients_socket_to_try_again_not_as_forbidden(
    site: PlanSite, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> None:
    """The plan cannot be read for the handshake: 503 with Retry-After (the browser tries
    again), never the 403 that says the client may not see their own plan."""
    with client_of(site, "matti") as matti:
        def unreachable(plan_id: str) -> Any:
            raise error

        monkeypatch.setattr(site.app.state.views, "plan", unreachable)
        with pytest.raises(InvalidStatus) as refused:
            socket = await open_socket(site, matti, "/my-plan/live")
            await socket.close()
        monkeypatch.undo()
        assert refused.value.response.status_code == 503
        assert refused.value.response.headers["Retry-After"] == "2"
        socket = await open_socket(site, matti, "/my-plan/live")  # the database is back: accepted
        await socket.close()


async def test_messages_from_the_clients_socket_are_checked_and_resync_answers(site: PlanSite) -> None:
    own = open_own_plan(site)
    with signed_in(site, own.username) as client:
        socket = await open_socket(site, client, "/my-plan/live?version=1")
        try:
            caught_up = await update_containing(socket, own.client_note)  # behind: the whole view at once
            assert own.internal_note not in caught_up
            await socket.send('{"type": "editing", "item": "goal-x"}')  # no presence for the client: ignored
            await socket.send('{"type": "resync"}')
            again = await update_containing(socket, own.client_note)
            assert again == caught_up
        finally:
            await socket.close()
        signed_out = client.post("/signout", data={"_csrf_token": my_plan(client).csrf})
        assert signed_out.status_code == 303
        assert client.get("/my-plan").status_code == 303
