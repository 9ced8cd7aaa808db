"""WCAG 2.1 A/AA checks of every kind of page, in a real Chromium, with axe-core.

axe-core (``tests/web/vendor/axe-core``) finds what a machine can find: missing names and
labels, contrast, landmarks, ARIA misuse, duplicate ids, language of the page. It runs on
the pages as people meet them, in the three languages: signed out, the caseload, the plan
page with every add form open and with a refused form's errors shown, the timeline's table,
the history, the client's own view and the administration. Keyboard use is checked
separately: an edit opened with the keyboard puts the focus in its form.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.web.conftest import REPO_ROOT
from tests.web.identity_fixtures import TEST_PASSWORD, add_account
from tests.web.plan_fixtures import PlanSite, plan_site  # noqa: F401
from tests.web.test_client_view import open_own_plan

pytestmark = pytest.mark.browser

AXE = (REPO_ROOT / "tests/web/vendor/axe-core/axe.min.js").read_text(encoding="utf-8")
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "best-practice"]
"""WCAG 2.1 A and AA, and axe's best practices (two landmarks of one name are one too many
in a screen reader's list of them)."""
LANGUAGES = {"fi": "fi-FI", "sv": "sv-SE", "en": "en-GB"}
PANELS_WITH_ADD_FORMS = ("needs", "goals", "network", "steps", "measures", "notes")


def violations(page: Any) -> list[str]:
    """axe's WCAG 2.1 A/AA and best-practice violations on the page as it is now, one line each."""
    page.evaluate(AXE)
    result = page.evaluate(
        "async (tags) => await axe.run(document, {runOnly: {type: 'tag', values: tags}})", AXE_TAGS
    )
    return [
        f"{violation['id']} ({violation['impact']}): {violation['help']} at "
        + ", ".join(" ".join(node["target"]) for node in violation["nodes"][:5])
        for violation in result["violations"]
    ]


@pytest.fixture
def new_page(browser: Any, plan_site: PlanSite) -> Iterator[Any]:  # noqa: F811
    """Opens pages, each in a browser context of its own (own cookies) speaking a language.

    The contexts bypass the Content-Security-Policy only so that axe's script can be
    evaluated in the page; the pages themselves load as always.
    """
    contexts = []

    def new(language: str = "fi") -> Any:
        context = browser.new_context(base_url=plan_site.base_url, locale=LANGUAGES[language], bypass_csp=True)
        contexts.append(context)
        return context.new_page()

    yield new
    for context in contexts:
        context.close()


def sign_in(page: Any, username: str) -> None:
    page.goto("/signin")
    page.fill("#username", username)
    page.fill("#password", TEST_PASSWORD)
    page.click(".signin-form button[type=submit]")
    page.wait_for_load_state("networkidle")


@pytest.mark.parametrize("language", LANGUAGES)
def test_signed_out_pages(new_page: Any, language: str) -> None:
    page = new_page(language)
    page.goto("/")
    assert page.get_attribute("html", "lang") == language
    assert violations(page) == []
    page.goto("/signin")
    assert violations(page) == []
    page.fill("#username", "nobody")
    page.fill("#password", "wrong password")
    page.click(".signin-form button[type=submit]")
    page.wait_for_selector("#signin-error")
    assert page.get_attribute("#username", "aria-invalid") == "true"
    assert violations(page) == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_professional_pages(new_page: Any, plan_site: PlanSite, language: str) -> None:  # noqa: F811
    page = new_page(language)
    sign_in(page, "aino.virtanen")
    assert page.url.endswith("/caseload")
    assert violations(page) == []

    plan = f"/plans/{plan_site.plans['eeva']}"
    page.goto(plan)
    page.wait_for_load_state("networkidle")
    assert page.get_attribute("html", "lang") == language
    assert violations(page) == []

    page.click("#panel-timeline details summary")
    assert violations(page) == [], "the timeline as a table"

    page.goto(f"{plan}/history")
    assert violations(page) == []


@pytest.mark.parametrize("panel", PANELS_WITH_ADD_FORMS)
def test_every_add_form_open_and_refused(new_page: Any, plan_site: PlanSite, panel: str) -> None:  # noqa: F811
    page = new_page("fi")
    sign_in(page, "aino.virtanen")
    page.goto(f"/plans/{plan_site.plans['eeva']}")
    page.wait_for_load_state("networkidle")
    page.locator(f"#panel-{panel} > * button").last.click()
    form = page.locator(f"#panel-{panel} form[data-item-form]").last
    form.wait_for()
    assert violations(page) == [], f"the {panel} form, open"

    form.evaluate("form => form.noValidate = true")
    form.locator("button[type=submit]").last.click()
    page.wait_for_selector(f"#panel-{panel} [aria-invalid=true]")
    assert violations(page) == [], f"the {panel} form, refused"


def test_an_edit_opened_by_keyboard_puts_the_focus_in_its_form(new_page: Any, plan_site: PlanSite) -> None:  # noqa: F811
    page = new_page("fi")
    sign_in(page, "aino.virtanen")
    page.goto(f"/plans/{plan_site.plans['eeva']}")
    page.wait_for_load_state("networkidle")
    page.locator("#panel-needs button", has_text="Muokkaa").first.focus()
    page.keyboard.press("Enter")
    page.wait_for_selector("#panel-needs form[data-item-form]")
    assert page.evaluate("document.activeElement.closest('form[data-item-form]') !== null")


def test_client_and_admin_pages(new_page: Any, plan_site: PlanSite) -> None:  # noqa: F811
    own = open_own_plan(plan_site)
    client = new_page("fi")
    sign_in(client, own.username)
    client.goto("/my-plan")
    client.wait_for_load_state("networkidle")
    assert violations(client) == []

    add_account(plan_site.app.state.accounts, "a11y.admin", name="Pääkäyttäjä", kind="admin")
    admin = new_page("sv")
    sign_in(admin, "a11y.admin")
    admin.goto("/admin")
    assert violations(admin) == []


def test_the_check_finds_a_violation_when_there_is_one(new_page: Any) -> None:
    page = new_page("fi")
    page.goto("/")
    page.evaluate("document.querySelector('main').insertAdjacentHTML('beforeend', '<input id=unnamed>')")
    assert any(line.startswith("label ") for line in violations(page))
