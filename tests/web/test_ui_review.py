"""What a review of the pages as real people use them found, pinned: who is offered which
handover action, focus after a form closes, a phone's timeline and tables, the live status
message, htmx without CSP errors, the caseload's table names, overdue steps.

The server-rendered HTML is read with httpx; the behaviour in a real headless Chromium
(``pytest -m browser``). Screenshots go to ``test-artifacts/`` (``review-*.png``).
"""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Iterator
from datetime import date, timedelta
from typing import Any

import httpx
import pytest

from tests.web.conftest import REPO_ROOT
from tests.web.plan_fixtures import Page, PlanSite, plan_site, signed_in  # noqa: F401
from tests.web.test_client_view import open_own_plan
from tests.web.test_handover_e2e import signed_in_page
from web.plan_page import PLAN_PANELS
from web.templating import HTMX_CONFIG, step_overdue

ARTIFACTS = REPO_ROOT / "test-artifacts"
PHONE = {"width": 375, "height": 812}


def plan_page(site: PlanSite, username: str, plan: str) -> str:
    with signed_in(site, username) as client:
        response = client.get(f"/plans/{site.plans[plan]}")
    assert response.status_code == 200
    return response.text


def only_for(html: str) -> list[tuple[str, bool, str]]:
    """Each element shown to one person: (their person id, marked as the viewer's, its text)."""
    found = []
    for match in re.finditer(r'<div(?: [^>]*)? data-only-for="([^"]+)"([^>]*)>(.*?)</div>', html, re.S):
        found.append((match.group(1), "data-mine" in match.group(2), match.group(3)))
    return found


def shown_to(html: str, marker: str) -> str | None:
    """The person id whose element holds ``marker`` (a form action's end), if any."""
    for person, _mine, inner in only_for(html):
        if marker in inner:
            return person
    return None


def mine(html: str) -> set[str]:
    """The actions (form actions' last part) marked as the viewer's own on a page."""
    actions = set()
    for _person, is_mine, inner in only_for(html):
        if is_mine:
            actions |= set(re.findall(r'action="/plans/[^"]+/(?:handovers/[^"/]+|handovers/new)/(\w+)"', inner))
    return actions


# ----------------------------------------------------------------------- handover actions


def test_a_pending_handover_offers_each_person_only_what_they_may_do(plan_site: PlanSite) -> None:  # noqa: F811
    # Eeva's plan: Timo (named expert) proposed to hand over to Aino (counterpart).
    assert mine(plan_page(plan_site, "aino.virtanen", "eeva")) == {"accept", "decline"}
    assert mine(plan_page(plan_site, "timo.lehtonen", "eeva")) == {"withdraw"}
    assert mine(plan_page(plan_site, "outi.rantanen", "eeva")) == set()  # a network member


def test_only_the_named_expert_is_offered_to_propose_a_handover(plan_site: PlanSite) -> None:  # noqa: F811
    # Matti's plan: Pekka is the named expert, Aino the counterpart, nothing pending.
    html = plan_page(plan_site, "aino.virtanen", "matti")
    assert shown_to(html, "/handovers/new/propose") == "pekka.nieminen"
    assert mine(html) == set()
    assert mine(plan_page(plan_site, "pekka.nieminen", "matti")) == {"propose"}


def test_the_live_fragments_mark_no_ones_actions_and_the_page_says_who_views_it(plan_site: PlanSite) -> None:  # noqa: F811
    plan = plan_site.service.get_plan(plan_site.plans["eeva"])
    network = PLAN_PANELS.render(plan_site.app.template_engine, plan, "fi", ["panel-network"])["panel-network"]
    assert shown_to(network, "/accept") == "aino.virtanen"
    assert shown_to(network, "/withdraw") == "timo.lehtonen"
    assert "data-mine" not in network  # the same for every viewer: the browser marks its own
    assert 'data-viewer="aino.virtanen"' in plan_page(plan_site, "aino.virtanen", "eeva")


def test_the_handover_buttons_say_which_handover_they_decide(plan_site: PlanSite) -> None:  # noqa: F811
    html = plan_page(plan_site, "aino.virtanen", "eeva")
    subject = "vastuun siirto henkilöltä Timo Lehtonen henkilölle Aino Virtanen"
    for word in ("Hyväksy", "Kieltäydy", "Peru"):
        assert re.search(rf'>{word}<span class="visually-hidden">: [^<]*{subject}</span></button>', html), word


# ---------------------------------------------------------------------------- overdue steps


def test_a_step_past_its_planned_end_is_overdue_while_planned_or_started() -> None:
    today = date(2026, 12, 3)
    past, later = date(2026, 11, 17), date(2026, 12, 20)
    assert step_overdue("planned", past, today) and step_overdue("started", past, today)
    assert not step_overdue("done", past, today) and not step_overdue("cancelled", past, today)
    assert not step_overdue("started", later, today) and not step_overdue("started", today, today)


def test_the_plan_page_flags_an_overdue_step_in_words(plan_site: PlanSite) -> None:  # noqa: F811
    plan = plan_site.service.get_plan(plan_site.plans["eeva"])
    today = date.today()
    html = plan_page(plan_site, "aino.virtanen", "eeva")
    for step in plan.steps.values():
        item = re.search(rf'<li id="step-{step.id}".*?</li>', html, re.S)
        assert item
        flagged = '<span class="badge badge--overdue">Myöhässä</span>' in item.group(0)
        assert flagged == step_overdue(step.status, step.planned_end, today), step.title
    assert any(step_overdue(s.status, s.planned_end, today) for s in plan.steps.values())  # one is


def test_the_caseload_flags_an_overdue_next_step(plan_site: PlanSite) -> None:  # noqa: F811
    plan_id = plan_site.plans["liisa"]
    plan = plan_site.service.get_plan(plan_id)
    step = min(  # the caseload's next step (projections.summary)
        (s for s in plan.steps.values() if s.status in ("planned", "started")),
        key=lambda s: (s.planned_end if s.status == "started" else s.planned_start, s.title),
    )
    start = date.today() - timedelta(days=40)
    plan_site.service.reschedule_step(
        plan_id, by=plan_site.actor("sanna"), command_id=str(uuid.uuid4()), step_id=step.id,
        seen_revision=step.revision, planned_start=start, planned_end=start + timedelta(days=10), reason="",
    )
    plan_site.wait_for_views()
    with signed_in(plan_site, "sanna.koski") as client:
        html = client.get("/caseload").text
    row = re.search(r'<tr class="caseload-row[^"]*">(?:(?!</tr>).)*Liisa Malliasiakas.*?</tr>', html, re.S)
    assert row and "Myöhässä" in row.group(0)
    with signed_in(plan_site, "sanna.koski", "sv") as client:
        assert "Försenad" in client.get("/caseload").text


# ------------------------------------------------------------------------- names and tables


def test_the_caseload_tables_are_named_by_their_headings_not_a_repeated_caption(plan_site: PlanSite) -> None:  # noqa: F811
    with signed_in(plan_site, "aino.virtanen") as client:
        html = client.get("/caseload").text
    assert "<caption" not in html
    assert html.count(">Suunnitelmat, joissa olen mukana<") == 1  # the heading alone says it
    assert 'aria-label="Taulukko: Suunnitelmat, joissa olen mukana"' in html  # its scrolling frame, named apart
    assert '<table class="data-table caseload-table" aria-labelledby="mine-title">' in html
    assert '<table class="data-table caseload-table" aria-labelledby="organisation-title">' in html


def test_scrolling_frames_take_the_focus_and_have_names(plan_site: PlanSite) -> None:  # noqa: F811
    html = plan_page(plan_site, "aino.virtanen", "matti")
    frames = re.findall(r'<div class="(?:timeline-frame|table-scroll)"[^>]*>', html)
    assert len(frames) >= 3  # the picture, its table, the measures
    names = []
    for frame in frames:
        assert 'tabindex="0"' in frame and 'role="region"' in frame, frame
        names.append(re.search(r'aria-label(?:ledby)?="([^"]+)"', frame).group(1))  # type: ignore[union-attr]
    # Named apart from the sections that hold them: a landmark list shows each once (axe landmark-unique).
    sections = re.findall(r'<section [^>]*aria-labelledby="([^"]+)"', html)
    assert len(set(names)) == len(names) and not set(names) & set(sections), (names, sections)
    assert 'aria-label="Aikajana kuvana"' in html
    assert 'aria-describedby="panel-timeline-hint"' in html and 'id="panel-timeline-hint"' in html


def test_the_measures_cells_say_what_they_are_for_a_phone(plan_site: PlanSite) -> None:  # noqa: F811
    html = plan_page(plan_site, "aino.virtanen", "matti")
    measures = html[html.index('id="panel-measures"'):]
    measures = measures[:measures.index("</table>")]
    assert 'data-label="Arvo"' in measures and 'data-label="Mittauspäivä"' in measures


def test_a_failed_sign_in_keeps_the_focus_on_the_username(plan_site: PlanSite) -> None:  # noqa: F811
    with httpx.Client(base_url=plan_site.base_url, headers={"accept-language": "fi"}) as client:
        page = Page(client.get("/signin"))
        refused = client.post("/signin", data={"_csrf_token": page.csrf, "username": "nobody", "password": "wrong", "next": ""})
    field = re.search(r'<input type="text" id="username"[^>]*>', refused.text, re.S)
    assert field and "autofocus" in field.group(0) and 'aria-invalid="true"' in field.group(0)


def test_htmx_does_not_settle_style_attributes() -> None:
    assert "style" not in HTMX_CONFIG["attributesToSettle"]


# ------------------------------------------------------------------------------ in a browser


@pytest.fixture
def pages(browser: Any, plan_site: PlanSite) -> Iterator[Any]:  # noqa: F811
    """Signed-in pages, each in a context of its own, closed at the end."""
    opened: list[Any] = []

    def new(username: str, **options: Any) -> Any:
        page = signed_in_page(browser, plan_site, username, **options)
        opened.append(page)
        return page

    yield new
    for page in opened:
        page.context.close()


def focused(page: Any) -> str:
    """What has the focus: the text of a button, else the element's tag and id."""
    return page.evaluate(
        "() => { const e = document.activeElement; return e.tagName === 'BUTTON' ? e.innerText.trim() + ' in ' +"
        " e.closest('form').getAttribute('action') : e.tagName + '#' + e.id; }"
    )


def wait_for_focus(page: Any, selector: str) -> None:
    """Wait until the focused element matches ``selector`` (polled: the CSP forbids the eval
    that ``wait_for_function`` needs), and until htmx has settled what it swapped in: it
    makes the new links and buttons its own only then (20 ms), and a key pressed sooner
    follows a link's plain href."""
    for _ in range(50):
        if page.evaluate("s => !!document.activeElement && document.activeElement.matches(s)", selector):
            page.wait_for_timeout(100)
            return
        page.wait_for_timeout(100)
    raise AssertionError(f"the focus is on {focused(page)}, not {selector}")


def plan_page_of(pages: Any, site: PlanSite, username: str = "aino.virtanen", client: str = "matti") -> Any:
    """The client's plan page, loaded, in a browser signed in as ``username``."""
    page = pages(username)
    page.goto(f"/plans/{site.plans[client]}")
    page.wait_for_load_state("networkidle")
    return page


def described(button: Any) -> str:
    """A button as :func:`focused` describes it: its text and its form's action."""
    return f"{button.inner_text().strip()} in {button.evaluate('b => b.form.getAttribute(`action`)')}"


@pytest.mark.browser
def test_cancel_and_escape_give_the_focus_back_to_the_button_that_opened_the_form(
    plan_site: PlanSite, pages: Any  # noqa: F811
) -> None:
    page = plan_page_of(pages, plan_site)
    need = page.get_attribute("#panel-needs li.item", "id")
    edit = page.locator(f"#{need} .item__actions button").first
    opener = described(edit)

    # A style the page set through the CSSOM (allowed), as a browser or a tool may: htmx's
    # settling must not copy it as an attribute (refused by the CSP, an error every swap).
    page.locator(f"#{need}").evaluate("e => { e.style.outlineOffset = '1px'; }")
    edit.focus()
    page.keyboard.press("Enter")
    wait_for_focus(page, f"#{need} form[data-item-form] *")
    page.click(f"#{need} [data-cancel]")
    wait_for_focus(page, f"#{need}:not(.item--editing) button")
    assert focused(page) == opener

    page.keyboard.press("Enter")  # the same button opens it again; Escape closes it
    wait_for_focus(page, f"#{need} form[data-item-form] *")
    page.keyboard.press("Escape")
    wait_for_focus(page, f"#{need}:not(.item--editing) button")
    assert focused(page) == opener

    page.click("#measure-new button[type=submit]")  # an add form: back to its button too
    wait_for_focus(page, "#measure-new form[data-item-form] *")
    page.keyboard.press("Escape")
    wait_for_focus(page, "#measure-new:not(.add-block--open) button")
    assert focused(page).endswith("/measures/new/add")
    assert page.problems == []


@pytest.mark.browser
def test_escape_after_a_refused_save_gives_the_focus_back_to_the_button_that_opened_the_form(
    plan_site: PlanSite, pages: Any  # noqa: F811
) -> None:
    page = plan_page_of(pages, plan_site)
    opener_form = page.locator('#panel-steps form[hx-get$="/progress"]').first
    step = opener_form.evaluate("f => f.closest('li').id")
    opener = described(opener_form.locator("button"))
    opener_form.locator("button").focus()
    page.keyboard.press("Enter")
    wait_for_focus(page, f"#{step} form[data-item-form] *")
    # No status chosen: refused by the server (a radio group has no native "required" here).
    page.locator(f"#{step} form[data-item-form] button[type=submit]").focus()
    page.keyboard.press("Enter")
    wait_for_focus(page, f"#{step} fieldset[aria-invalid='true'] input")  # the refused choice
    page.keyboard.press("Escape")
    wait_for_focus(page, f"#{step}:not(.item--editing) button")
    assert focused(page) == opener
    assert [p for p in page.problems if "status of 422" not in p] == []


@pytest.mark.browser
def test_after_a_failed_sign_in_the_focus_is_on_the_username(browser: Any, plan_site: PlanSite) -> None:  # noqa: F811
    context = browser.new_context(base_url=plan_site.base_url, locale="fi-FI")
    try:
        page = context.new_page()
        page.goto("/signin")
        page.fill("#username", "nobody")
        page.fill("#password", "wrong password")
        page.click(".signin-form button[type=submit]")
        page.wait_for_selector("#signin-error")
        assert page.evaluate("document.activeElement.id") == "username"
    finally:
        context.close()


@pytest.mark.browser
def test_handover_actions_are_shown_only_to_who_may_take_them_also_after_a_live_update(
    plan_site: PlanSite, pages: Any  # noqa: F811
) -> None:
    plan_id = plan_site.plans["eeva"]
    aino, timo = pages("aino.virtanen"), pages("timo.lehtonen")
    for page in (aino, timo):
        with page.expect_websocket(lambda socket: "/live" in socket.url):
            page.goto(f"/plans/{plan_id}")
        page.wait_for_timeout(300)

    def visible(page: Any) -> set[str]:
        return {
            button.inner_text().split(":")[0].strip()
            for button in page.locator(".item--handover button").all()
            if button.is_visible()
        }

    assert visible(aino) == {"Hyväksy", "Kieltäydy"}
    assert visible(timo) == {"Peru"}

    # A change of the network panel reaches both, live, as one fragment for every viewer.
    plan = plan_site.service.get_plan(plan_id)
    member = next(m for m in plan.members.values() if m.person_id == "outi.rantanen")
    plan_site.service.update_member(
        plan_id, by=plan_site.actor("outi"), command_id=str(uuid.uuid4()), member_id=member.id,
        seen_revision=member.revision, profession=member.profession, contact=member.contact, part="Vertaisryhmän ohjaus",
    )
    for page in (aino, timo):
        page.wait_for_selector("#panel-network >> text=Vertaisryhmän ohjaus", timeout=5000)
    assert visible(aino) == {"Hyväksy", "Kieltäydy"}
    assert visible(timo) == {"Peru"}
    ARTIFACTS.mkdir(exist_ok=True)
    aino.locator("#panel-network").screenshot(path=str(ARTIFACTS / "review-handover-counterpart.png"))
    timo.locator("#panel-network").screenshot(path=str(ARTIFACTS / "review-handover-expert.png"))
    assert aino.problems == [] and timo.problems == []  # no CSP error from htmx's swaps either


@pytest.mark.browser
def test_the_someone_else_changed_message_goes_when_the_form_closes(plan_site: PlanSite, pages: Any) -> None:  # noqa: F811
    plan_id = plan_site.plans["liisa"]
    page = pages("sanna.koski")
    with page.expect_websocket(lambda socket: "/live" in socket.url):
        page.goto(f"/plans/{plan_id}")
    page.wait_for_timeout(300)
    plan = plan_site.service.get_plan(plan_id)
    need = next(iter(plan.needs.values()))
    page.click(f"#need-{need.id} .item__actions button >> nth=0")
    page.wait_for_selector(f"#need-{need.id} form[data-item-form]")
    plan_site.service.update_need(
        plan_id, by=plan_site.actor("kalle"), command_id=str(uuid.uuid4()), need_id=need.id,
        seen_revision=need.revision, category=need.category, description=need.description + " (tarkennettu)",
        financial=need.financial, status=need.status,
    )
    page.wait_for_selector("#live-status .alert", timeout=5000)
    assert "muutti" in page.inner_text("#live-status")
    page.click(f"#need-{need.id} [data-cancel]")
    page.wait_for_selector(f"#need-{need.id}:not(.item--editing)")
    page.wait_for_selector("#live-status:empty", state="attached", timeout=5000)
    assert "(tarkennettu)" in page.inner_text(f"#need-{need.id}")  # and the held-back update arrived
    assert page.problems == []


@pytest.mark.browser
def test_on_a_phone_the_timeline_scrolls_in_a_focusable_frame_and_no_measure_is_hidden(
    plan_site: PlanSite, pages: Any  # noqa: F811
) -> None:
    page = pages("aino.virtanen", viewport=PHONE)
    page.goto(f"/plans/{plan_site.plans['matti']}")
    page.wait_for_load_state("networkidle")
    frame = page.locator("#panel-timeline .timeline-frame")
    assert page.is_visible("#panel-timeline-hint")
    assert frame.evaluate("f => f.scrollWidth > f.clientWidth")  # it scrolls...
    label = page.locator("#panel-timeline svg text").first
    assert label.evaluate("t => t.getBoundingClientRect().height") >= 11  # ...so the text keeps its size
    frame.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.wait_for_timeout(300)
    assert frame.evaluate("f => f.scrollLeft") > 0
    ARTIFACTS.mkdir(exist_ok=True)
    page.locator("#panel-timeline").screenshot(path=str(ARTIFACTS / "review-phone-timeline.png"))

    value = page.locator("#panel-measures td.number").first
    value.scroll_into_view_if_needed()
    box = value.bounding_box()
    assert box and box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    page.locator("#panel-measures").screenshot(path=str(ARTIFACTS / "review-phone-measures.png"))
    assert page.problems == []


@pytest.mark.browser
def test_the_clients_cancel_and_escape_give_the_focus_back_too(plan_site: PlanSite, pages: Any) -> None:  # noqa: F811
    own = open_own_plan(plan_site)
    page = pages(own.username, viewport=PHONE)
    page.goto("/my-plan")
    page.wait_for_load_state("networkidle")
    withdraw = 'a[hx-get$="/withdraw"]'
    consent = page.locator(f"li:has({withdraw})").first.get_attribute("id")
    page.locator(f"#{consent} {withdraw}").focus()
    page.keyboard.press("Enter")
    wait_for_focus(page, f"#{consent} form[data-edit-form] *")
    page.click(f"#{consent} [data-cancel]")
    wait_for_focus(page, f"#{consent} {withdraw}")

    page.keyboard.press("Enter")
    wait_for_focus(page, f"#{consent} form[data-edit-form] *")
    page.keyboard.press("Escape")
    wait_for_focus(page, f"#{consent} {withdraw}")
    assert page.problems == []


@pytest.mark.browser
def test_the_focus_finds_the_new_comment_when_the_live_echo_comes_before_the_answer(
    plan_site: PlanSite, pages: Any  # noqa: F811
) -> None:
    """The live update of the client's own comment replaces the notes, form and all, before
    the form's answer comes (held back here): the focus goes to the new comment, not the page."""
    own = open_own_plan(plan_site)
    page = pages(own.username)
    page.goto("/my-plan")
    page.wait_for_load_state("networkidle")

    def answer_late(route: Any) -> None:
        answer = route.fetch()
        time.sleep(1.5)  # the browser takes the live update meanwhile
        route.fulfill(response=answer)

    page.route("**/my-plan/comments", answer_late)
    page.fill("#comment-new-text", "Kiitos, tämä sopii minulle.")
    page.locator("#comment-new button[type=submit]").focus()
    page.keyboard.press("Enter")
    wait_for_focus(page, "#my-notes li.my-note--mine")
    assert page.evaluate("() => document.activeElement.innerText").count("Kiitos, tämä sopii minulle.") == 1
    assert page.problems == []


@pytest.mark.browser
def test_a_new_message_to_the_client_is_announced_when_it_arrives(plan_site: PlanSite, pages: Any) -> None:  # noqa: F811
    """A screen reader does not see a message arrive: the status region says who sent it."""
    own = open_own_plan(plan_site)
    page = pages(own.username)
    page.goto("/my-plan")
    page.wait_for_load_state("networkidle")
    assert page.inner_text("#live-status") == ""
    aino = plan_site.actor("aino")
    plan_site.service.add_note(own.plan_id, by=aino, command_id=str(uuid.uuid4()), text="Huomenna klo 10",
                               visibility="client_and_professionals")
    page.wait_for_selector("#my-notes >> text=Huomenna klo 10")
    assert page.inner_text("#live-status") == f"Uusi viesti: {aino.name}."
    assert page.get_attribute("#live-status", "aria-live") == "polite"
    plan_site.service.add_note(own.plan_id, by=aino, command_id=str(uuid.uuid4()), text="Sisäinen", visibility="professionals")
    page.wait_for_timeout(1000)
    assert "Sisäinen" not in page.content()  # (an internal note sends nothing to the client's page)
    assert page.problems == []


def test_only_the_responsible_pair_is_offered_to_close_the_plan(plan_site: PlanSite) -> None:  # noqa: F811
    # Matti's plan: Pekka is the named expert, Aino the counterpart; Sanna, Pekka's colleague
    # outside the network, may view and edit it but not close it (domain.access.CLOSE_PLAN).
    for person, offered in (("pekka.nieminen", True), ("aino.virtanen", True), ("sanna.koski", False)):
        html = plan_page(plan_site, person, "matti")
        (closing,) = [(people, is_mine) for people, is_mine, inner in only_for(html) if '/client/details/close"' in inner]
        assert (set(closing[0].split()), closing[1]) == ({"pekka.nieminen", "aino.virtanen"}, offered)


def test_only_the_named_expert_is_offered_to_name_the_counterpart(plan_site: PlanSite) -> None:  # noqa: F811
    html = plan_page(plan_site, "aino.virtanen", "matti")
    naming = [people for people, _mine, inner in only_for(html) if "/counterpart" in inner]
    assert naming and set(naming) == {"pekka.nieminen"}
