"""An escorted handover end to end, in a real headless Chromium, three people at once.

The named expert (Aino Virtanen, the wellbeing services county) proposes on the plan page to
hand responsibility over, with a note; the counterpart (Pekka Nieminen, Kela) sees the
proposal in their caseload and on the plan, and accepts it; the client, on a phone, is told
in plain words that their named expert may change, then sees the new named expert, live,
and after a reload the counterpart's read of the plan in their list of who has looked at it.

Screenshots go to ``test-artifacts/`` (``handover-*.png``).
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Error as PlaywrightError

from tests.web.conftest import REPO_ROOT
from tests.web.identity_fixtures import TEST_PASSWORD
from tests.web.plan_fixtures import PlanSite, plan_site  # noqa: F401
from tests.web.test_client_view import open_own_plan

pytestmark = pytest.mark.browser

ARTIFACTS = REPO_ROOT / "test-artifacts"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
LIVE_WITHIN_MS = 5000


def signed_in_page(browser: Any, site: PlanSite, username: str, *, viewport: dict[str, int] = DESKTOP) -> Any:
    """A browser context of its own (its own cookies), signed in through the sign-in form."""
    context = browser.new_context(base_url=site.base_url, locale="fi-FI", viewport=viewport)
    page = context.new_page()
    page.problems = []  # console errors and uncaught exceptions, CSP violations among them
    page.on("console", lambda message: message.type == "error" and page.problems.append(f"{message.text} {message.location}"))
    page.on("pageerror", lambda error: page.problems.append(str(error)))
    page.goto("/signin")
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.click(".signin-form button[type=submit]")
    page.wait_for_url(re.compile(r".*/(caseload|my-plan)$"))
    return page


def shot(page: Any, name: str, *, full_page: bool = True) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    # caret="initial": hiding the caret would leave style="" on the page's inputs, which htmx
    # then copies into swapped elements: a CSP violation the page itself never makes.
    page.screenshot(path=str(ARTIFACTS / f"handover-{name}.png"), full_page=full_page, caret="initial")


def scroll_to(page: Any, selector: str) -> None:
    """Scroll ``selector`` into view for a screenshot. The live echo of the page's own save
    may replace the element while it is being scrolled to: then it is found again."""
    for _attempt in range(5):
        try:
            page.locator(selector).scroll_into_view_if_needed(timeout=2000)
            return
        except PlaywrightError as error:
            if "not attached" not in str(error):
                raise
    page.locator(selector).scroll_into_view_if_needed(timeout=2000)


def test_an_escorted_handover_with_three_browsers(plan_site: PlanSite, browser: Any) -> None:  # noqa: F811
    site = plan_site
    own = open_own_plan(site)
    plan_id = own.plan_id
    client_name = site.service.get_plan(plan_id).client.name
    note = "Kelan ammatillinen kuntoutus alkaa: Pekka ottaa vastuun, minä jään vastinpariksi."

    client = signed_in_page(browser, site, own.username, viewport=PHONE)
    expert = signed_in_page(browser, site, "aino.virtanen")
    counterpart = signed_in_page(browser, site, "pekka.nieminen")
    try:
        # The client has their plan open on a phone, live.
        with client.expect_websocket(lambda socket: "/my-plan/live" in socket.url):
            client.goto("/my-plan")
        assert "Aino Virtanen" in client.inner_text("#my-expert")
        client.wait_for_timeout(300)  # the socket is open before anything happens

        # 1. The named expert proposes the handover, with a note, on the plan page.
        expert.goto(f"/plans/{plan_id}")
        expert.click("#handover-new button[type=submit]")
        expert.wait_for_selector("#handover-new-note")
        expert.fill("#handover-new-note", note)
        shot(expert, "1-expert-proposes", full_page=False)
        expert.click("#handover-new form[data-item-form] button[type=submit]")
        proposed = expert.wait_for_selector(".item--handover.item--proposed")
        assert "Pekka Nieminen" in proposed.inner_text() and note in proposed.inner_text()

        # 2. The client is told, live and in plain words; the professionals' note is not theirs.
        notice = client.wait_for_selector(".my-handover.alert", timeout=LIVE_WITHIN_MS)
        told = notice.inner_text()
        assert "Aino Virtanen" in told and "Pekka Nieminen" in told
        assert "Oma asiantuntijasi voi vaihtua" in told
        assert note not in client.content()
        scroll_to(client, "#my-people")
        shot(client, "2-client-told-on-a-phone", full_page=False)

        # 3. The counterpart sees it in their caseload, and on the plan, and accepts.
        counterpart.goto("/caseload")
        row = counterpart.wait_for_selector(".caseload-row--awaits-me")
        assert client_name in row.inner_text() and "Aino Virtanen" in row.inner_text()
        shot(counterpart, "3-counterpart-caseload")
        counterpart.click(f'a[href="/plans/{plan_id}"]')
        counterpart.wait_for_url(f"**/plans/{plan_id}")
        waiting = counterpart.wait_for_selector(".item--handover.item--proposed")
        assert note in waiting.inner_text()
        counterpart.click('.item--handover form[action$="/accept"] button[type=submit]')
        counterpart.wait_for_selector(".item--handover textarea[name=note]")
        counterpart.fill(".item--handover textarea[name=note]", "Otan vastuun.")
        counterpart.click(".item--handover form[data-item-form] button[type=submit]")
        accepted = counterpart.wait_for_selector(".item--handover.item--accepted")
        assert "Otan vastuun." in accepted.inner_text()
        shot(counterpart, "4-counterpart-accepted", full_page=False)

        # The expert's page follows, live: the roles have swapped.
        expert.wait_for_selector(".item--handover.item--accepted", timeout=LIVE_WITHIN_MS)

        # 4. The client sees the new named expert, live.
        client.wait_for_function(
            "document.querySelector('#my-expert') && document.querySelector('#my-expert').innerText.includes('Pekka Nieminen')",
            timeout=LIVE_WITHIN_MS,
        )
        assert "Aino Virtanen" in client.inner_text("#my-counterpart")
        assert client.query_selector(".my-handover.alert") is None
        assert "Pekka Nieminen" in client.inner_text(".my-handover--done")
        scroll_to(client, "#my-people")
        shot(client, "5-client-new-expert-live", full_page=False)

        # ...and after a reload, who has looked at the plan: the counterpart's read among them.
        client.reload()
        assert "Pekka Nieminen" in client.inner_text("#my-expert")
        reads = client.inner_text("#my-access-log")
        assert "Pekka Nieminen" in reads and "Kela, Pirkanmaan vakuutuspiiri" in reads
        assert "Aino Virtanen" in reads
        scroll_to(client, "#my-access-log")
        shot(client, "6-client-who-has-looked", full_page=False)
        shot(client, "7-client-whole-page-on-a-phone")

        # Nothing internal reached the client's page on the way.
        html = client.content()
        assert own.internal_note not in html and note not in html and "Otan vastuun." not in html

        for who, page in (("client", client), ("expert", expert), ("counterpart", counterpart)):
            assert page.problems == [], (who, page.problems)
    finally:
        for page in (client, expert, counterpart):
            page.context.close()


def test_the_clients_view_on_a_phone_has_no_sideways_scrolling(plan_site: PlanSite, browser: Any) -> None:  # noqa: F811
    own = open_own_plan(plan_site)
    page = signed_in_page(browser, plan_site, own.username, viewport=PHONE)
    try:
        page.goto("/my-plan")
        # The page fits the phone's width; only the timeline's picture scrolls inside its frame.
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
        # Withdrawing a consent is confirmed first, in place, and says who would leave.
        page.click(f"#consent-{own.kela_consent_id} a.button")
        confirm = page.wait_for_selector(f"#consent-{own.kela_consent_id} form.my-confirm")
        assert "Pekka Nieminen" in confirm.inner_text()
        scroll_to(page, f"#consent-{own.kela_consent_id}")
        shot(page, "8-client-confirms-withdrawal", full_page=False)
        page.click(f"#consent-{own.kela_consent_id} a.button--secondary")  # cancel
        page.wait_for_selector(f"#consent-{own.kela_consent_id} form.my-confirm", state="detached")
        # Questioning a goal without words is answered next to the field.
        goal = f"#goal-{own.goal_id}"
        page.click(f"{goal} button[value=questions]")
        error = page.wait_for_selector(f"{goal}-comment-error")
        assert error.inner_text()
        page.fill(f"{goal}-comment", "Aloittaisin kahdella tunnilla päivässä.")
        page.click(f"{goal} button[value=questions]")
        page.wait_for_selector(f"{goal} .both-views")
        scroll_to(page, goal)
        shot(page, "9-client-both-views", full_page=False)
        assert plan_site.service.get_plan(own.plan_id).goals[own.goal_id].client_stance == "questions"
        expected = "the server responded with a status of 422"
        assert [p for p in page.problems if expected not in p] == []
    finally:
        page.context.close()
