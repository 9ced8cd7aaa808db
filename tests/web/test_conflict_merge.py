"""Merging an edit that came too late with the changes saved since (``web.conflicts``).

The reviewer's case: Aino opens a need's form, Pekka changes only its financial situation
and saves, Aino changes only its description and saves; the conflict dialog must keep
Pekka's financial situation in Aino's draft, so that "Save my version" does not undo it.

Each test has a plan of its own on a real SQLite store, with a need, a goal, a member and a
step, written through the plan service as the web's commands write them; the form values
are the plan page's own (``ACTIONS[...].prefill``), so that a merge sees what a form posts.
The end-to-end tests at the end drive the real app (``plan_site``) from two sessions, posting
each form as a browser would post what it shows.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from html.parser import HTMLParser
from typing import Any

import httpx
import msgspec
import pytest

from domain.application import PlanService
from domain.demo import PEOPLE
from domain.errors import EditConflict
from domain.items import Item
from domain.plan import EXPERT_PART
from domain.storage import StoreSettings
from tests.web.plan_fixtures import Page, PlanSite, htmx_headers, plan_site, signed_in  # noqa: F401
from tests.web.test_plan_pages import browser_page
from web.conflicts import MERGED_FORMS, Merge, item_at_revision, merge, merge_with_saved
from web.controllers.plans import ACTIONS

AINO, PEKKA, TIMO = (PEOPLE[who][0] for who in ("aino", "pekka", "timo"))
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PlanService]:
    minutes = iter(range(10**6))
    app = PlanService(StoreSettings(data_dir=str(tmp_path_factory.mktemp("conflicts"))),
                      clock=lambda: START + timedelta(minutes=next(minutes)))
    try:
        yield app
    finally:
        app.close()


class Plan(msgspec.Struct, kw_only=True):
    """A plan of a test's own and the ids of its items."""

    id: str
    need: str
    other_need: str
    goal: str
    pekka: str
    timo: str
    step: str


@pytest.fixture
def plan(service: PlanService) -> Plan:
    plan_id = service.open_plan(by=AINO, command_id=cid(), client_name="Matti Esimerkki", segment="unemployed",
                                language="fi", referring_party="employment_services",
                                expert_profession="kuntoutusohjaaja").plan_id
    members = {}
    for person in (PEKKA, TIMO):
        service.give_consent(plan_id, by=AINO, command_id=cid(), organisation_id=person.organisation_id,
                             organisation_name=person.organisation_name, valid_from=START.date())
        members[person] = service.add_member(
            plan_id, by=AINO, command_id=cid(), person_id=person.person_id, name=person.name,
            profession=PEOPLE[person.person_id.split(".")[0]][1], organisation_id=person.organisation_id,
            organisation_name=person.organisation_name, contact="040 123 4567", part="Etuudet").item_id
    need = do(service, plan_id, "record_need", category="health", description="Pitkittynyt alaselkäkipu",
              financial="Työmarkkinatuki, vuokrarästejä")
    other_need = do(service, plan_id, "record_need", category="work_and_employment", description="Ei työpaikkaa")
    goal = do(service, plan_id, "set_goal", title="Jaksaa 4 tuntia kevyttä työtä", need_ids=[need],
              target_date=date(2026, 9, 1))
    step = do(service, plan_id, "plan_step", title="Työkyvyn arvio", need_id=need,
              responsible_member_id=members[PEKKA], planned_start=date(2026, 3, 9), planned_end=date(2026, 3, 20))
    return Plan(id=plan_id, need=need, other_need=other_need, goal=goal, pekka=members[PEKKA],
                timo=members[TIMO], step=step)


def cid() -> str:
    return str(uuid.uuid4())


def do(service: PlanService, plan_id: str, command: str, by: Any = AINO, **fields: Any) -> str:
    return getattr(service, command)(plan_id, by=by, command_id=cid(), **fields).item_id


def form_values(service: PlanService, plan_id: str, form: tuple[str, str], item: Item) -> dict[str, Any]:
    """The form's values for ``item``, as the plan page fills the form in."""
    return ACTIONS[form].prefill(service.get_plan(plan_id), item)


def posted(values: dict[str, Any], item: Item, **changes: Any) -> dict[str, Any]:
    """What the editor's browser posts: the form as it was filled in for ``item``, with the
    editor's changes, all as text (a list for a list)."""
    return {"command_id": cid(), "seen_revision": str(item.revision), **values, **changes}


# ------------------------------------------------------------------------- the merge


def test_a_field_only_the_other_person_changed_takes_their_value() -> None:
    base = {"description": "Selkäkipu", "financial": "Työmarkkinatuki"}
    mine = {"description": "Selkäkipu, leikkaus tulossa", "financial": "Työmarkkinatuki"}
    theirs = {"description": "Selkäkipu", "financial": "Työmarkkinatuki, vuokrarästit maksettu"}
    merged = merge(base, mine, theirs)
    assert merged.values == {"description": "Selkäkipu, leikkaus tulossa",
                             "financial": "Työmarkkinatuki, vuokrarästit maksettu"}
    assert merged.theirs == {"financial"}
    assert merged.clashes == frozenset()


def test_a_field_only_i_changed_keeps_mine_and_one_nobody_changed_stays() -> None:
    base = {"title": "Kuntoutus", "service": "Fysioterapia"}
    merged = merge(base, {"title": "Kuntoutusjakso", "service": "Fysioterapia"}, dict(base))
    assert merged == Merge(values={"title": "Kuntoutusjakso", "service": "Fysioterapia"})


def test_a_field_both_changed_differently_is_a_clash_that_keeps_mine() -> None:
    base = {"description": "Selkäkipu", "status": "open"}
    mine = {"description": "Selkäkipu, leikkaus tulossa", "status": "open"}
    theirs = {"description": "Selkäkipu helpottanut", "status": "being_addressed"}
    merged = merge(base, mine, theirs)
    assert merged.values == {"description": "Selkäkipu, leikkaus tulossa", "status": "being_addressed"}
    assert merged.clashes == {"description"}
    assert merged.theirs == {"status"}


def test_the_same_change_made_by_both_is_no_clash() -> None:
    merged = merge({"status": "open"}, {"status": "achieved"}, {"status": "achieved"})
    assert merged == Merge(values={"status": "achieved"})


def test_fields_of_the_command_alone_keep_what_was_posted() -> None:
    """A reschedule's reason, the command id and the revision are not the item's fields."""
    base = {"planned_start": "2026-03-09", "planned_end": "2026-03-20"}
    theirs = {"planned_start": "2026-03-09", "planned_end": "2026-03-27"}
    mine = {"command_id": "c-1", "seen_revision": "3", "planned_start": "2026-03-16",
            "planned_end": "2026-03-20", "reason": "Lääkäri sairastui"}
    merged = merge(base, mine, theirs)
    assert merged.values == {**mine, "planned_end": "2026-03-27"}
    assert merged.theirs == {"planned_end"}


def test_a_browsers_line_ends_and_surrounding_spaces_are_no_change() -> None:
    """A textarea posts CRLF line ends; the domain strips surrounding spaces."""
    base = {"part": "Etuudet\nKuntoutusraha", "contact": "040 123 4567"}
    mine = {"part": "Etuudet\r\nKuntoutusraha\r\n", "contact": " 040 123 4567 "}
    theirs = {"part": "Etuudet\nKuntoutusraha\nAsumistuki", "contact": ""}
    merged = merge(base, mine, theirs)
    assert merged.values == theirs
    assert merged.theirs == {"part", "contact"}


def test_lists_are_compared_as_the_set_of_their_values() -> None:
    base = {"need_ids": ["n1", "n2"], "title": "Työkokeilu"}
    mine = {"need_ids": ["n2", "n1", ""], "title": "Työkokeilu keväällä"}  # the page's order, an empty box
    theirs = {"need_ids": ["n1", "n2", "n3"], "title": "Työkokeilu"}
    merged = merge(base, mine, theirs)
    assert merged.values == {"need_ids": ["n1", "n2", "n3"], "title": "Työkokeilu keväällä"}
    assert merged.theirs == {"need_ids"}


def test_a_list_both_changed_differently_is_a_clash() -> None:
    merged = merge({"need_ids": ["n1"]}, {"need_ids": []}, {"need_ids": ["n1", "n2"]})
    assert merged.values == {"need_ids": []}
    assert merged.clashes == {"need_ids"}


def test_an_emptied_field_is_a_change_like_any_other() -> None:
    base = {"financial": "Työmarkkinatuki", "description": "Selkäkipu"}
    mine_emptied = merge(base, {"financial": "", "description": "Selkäkipu"},
                         {"financial": "Työmarkkinatuki", "description": "Selkäkipu, leikattu"})
    assert mine_emptied.values == {"financial": "", "description": "Selkäkipu, leikattu"}
    theirs_emptied = merge(base, {"financial": "Työmarkkinatuki", "description": "Selkäkipu, leikattu"},
                           {"financial": "", "description": "Selkäkipu"})
    assert theirs_emptied.values == {"financial": "", "description": "Selkäkipu, leikattu"}
    assert theirs_emptied.theirs == {"financial"}


# ---------------------------------------------------------- every form that merges


def test_every_merged_form_edits_an_item_and_is_filled_in_with_its_fields(service: PlanService, plan: Plan) -> None:
    items = {"client": "client", "needs": plan.need, "goals": plan.goal, "members": plan.pekka, "steps": plan.step}
    for form in MERGED_FORMS:
        action = ACTIONS[form]
        assert action.revision is not None and "seen_revision" in action.struct.__struct_fields__, form
        item = find(service.get_plan(plan.id), form[0], items[form[0]])
        assert form_values(service, plan.id, form, item).keys() <= set(action.struct.__struct_fields__), form


@pytest.mark.parametrize(
    ("form", "theirs", "mine", "expected", "clashes"),
    [
        pytest.param(("needs", "edit"), {"financial": "Toimeentulotuki haettu"},
                     {"description": "Alaselkäkipu, leikkausjono"},
                     {"financial": "Toimeentulotuki haettu", "description": "Alaselkäkipu, leikkausjono"}, set(),
                     id="need: the reviewer's case"),
        pytest.param(("needs", "edit"), {"category": "everyday_life", "status": "being_addressed"},
                     {"category": "work_and_employment"},
                     {"category": "work_and_employment", "status": "being_addressed"}, {"category"},
                     id="need: category both, status theirs"),
        pytest.param(("goals", "revise"), {"target_date": date(2026, 10, 1), "need_ids": "both needs"},
                     {"title": "Jaksaa 6 tuntia työtä"},
                     {"target_date": "2026-10-01", "need_ids": "both needs", "title": "Jaksaa 6 tuntia työtä"}, set(),
                     id="goal: a date and a list theirs"),
        pytest.param(("goals", "revise"), {"target_date": date(2026, 10, 1)},
                     {"target_date": "2026-11-15"},
                     {"target_date": "2026-11-15"}, {"target_date"},
                     id="goal: a date both"),
        pytest.param(("members", "edit"), {"contact": ""},
                     {"part": "Etuudet ja ammatillinen kuntoutus"},
                     {"contact": "", "part": "Etuudet ja ammatillinen kuntoutus"}, set(),
                     id="member: contact emptied by them"),
        pytest.param(("steps", "edit"), {"responsible_member_id": "timo", "service": "Työkyvyn arviointi"},
                     {"title": "Työkyvyn arvio lääkärillä"},
                     {"responsible_member_id": "timo", "service": "Työkyvyn arviointi",
                      "title": "Työkyvyn arvio lääkärillä"}, set(),
                     id="step: a member and a service theirs"),
        pytest.param(("steps", "reschedule"), {"planned_end": date(2026, 3, 27)},
                     {"planned_start": "2026-03-16", "reason": "Lääkäri lomalla"},
                     {"planned_end": "2026-03-27", "planned_start": "2026-03-16", "reason": "Lääkäri lomalla"}, set(),
                     id="step: dates, one each"),
        pytest.param(("steps", "outcome"), {"outcome": "Työkyky osittain alentunut"},
                     {"outcome": "Työkyky alentunut"},
                     {"outcome": "Työkyky alentunut"}, {"outcome"},
                     id="step: outcome both"),
        pytest.param(("client", "edit"), {"language": "sv", "referring_party": "kela"},
                     {"client_name": "Matti Esimerkki-Virta"},
                     {"language": "sv", "referring_party": "kela", "client_name": "Matti Esimerkki-Virta"}, set(),
                     id="client details"),
        pytest.param(("client", "contact"), {"contact": "040 765 4321"},
                     {},
                     {"contact": "040 765 4321"}, set(),
                     id="client contact: untouched takes theirs"),
    ],
)
def test_each_form_merges_its_fields(
    service: PlanService, plan: Plan, form: tuple[str, str], theirs: dict[str, Any], mine: dict[str, Any],
    expected: dict[str, Any], clashes: set[str],
) -> None:
    """The other person changes ``theirs`` (the item's own fields) and saves; the editor,
    still on the revision before, changes ``mine`` in the form and gets ``expected``."""
    kind = form[0]
    item_id = {"needs": plan.need, "goals": plan.goal, "members": plan.pekka, "steps": plan.step,
               "client": "client"}[kind]
    names = {"both needs": [plan.need, plan.other_need], "timo": plan.timo}
    theirs = {name: names.get(value, value) if isinstance(value, str) else value for name, value in theirs.items()}
    expected = {name: names.get(value, value) if isinstance(value, str) else value for name, value in expected.items()}
    seen = find(service.get_plan(plan.id), kind, item_id)
    draft = posted(form_values(service, plan.id, form, seen), seen, **mine)
    save_their_change(service, plan, form, item_id, seen, theirs)

    conflict = refusal(service, plan, form, item_id, draft)
    saved = find(service.get_plan(plan.id), kind, item_id)
    merged = merge_with_saved(service, plan_id=plan.id, conflict=conflict, form=form, saved=saved,
                              values_of=lambda item: form_values(service, plan.id, form, item), draft=draft)

    assert {name: merged.values[name] for name in expected} == expected
    assert merged.clashes == clashes
    untouched = set(form_values(service, plan.id, form, seen)) - set(mine) - set(theirs)
    assert {name: merged.values[name] for name in untouched} == {name: draft[name] for name in untouched}
    assert merged.values["command_id"] == draft["command_id"]


# ------------------------------------------------------------- the item as it was seen


def test_the_base_is_found_several_revisions_back(service: PlanService, plan: Plan) -> None:
    """Pekka saves three times after Aino opened the form: she is three revisions behind."""
    need = service.get_plan(plan.id).needs[plan.need]
    draft = posted(form_values(service, plan.id, ("needs", "edit"), need), need,
                   description="Alaselkäkipu, leikkausjono")
    revision = need.revision
    for financial, status in (("Toimeentulotuki haettu", "open"), ("Toimeentulotuki myönnetty", "open"),
                              ("Toimeentulotuki myönnetty", "being_addressed")):
        do(service, plan.id, "update_need", by=PEKKA, need_id=plan.need, seen_revision=revision,
           category="health", description=need.description, financial=financial, status=status)
        do(service, plan.id, "add_note", text="Another part of the plan changes meanwhile.")
        revision += 1

    base = item_at_revision(service, plan.id, plan.need, need.revision)
    assert base is not None and base.revision == need.revision
    assert (base.financial, base.status) == ("Työmarkkinatuki, vuokrarästejä", "open")

    conflict = refusal(service, plan, ("needs", "edit"), plan.need, draft)
    assert (conflict.seen_revision, conflict.current_revision) == (need.revision, need.revision + 3)
    saved = service.get_plan(plan.id).needs[plan.need]
    merged = merge_with_saved(service, plan_id=plan.id, conflict=conflict, form=("needs", "edit"), saved=saved,
                              values_of=lambda item: form_values(service, plan.id, ("needs", "edit"), item),
                              draft=draft)
    assert merged.values["description"] == "Alaselkäkipu, leikkausjono"
    assert (merged.values["financial"], merged.values["status"]) == ("Toimeentulotuki myönnetty", "being_addressed")
    assert merged.theirs == {"financial", "status"} and merged.clashes == frozenset()


def test_the_base_is_a_copy_the_later_changes_leave_alone(service: PlanService, plan: Plan) -> None:
    goal = service.get_plan(plan.id).goals[plan.goal]
    do(service, plan.id, "revise_goal", by=PEKKA, goal_id=plan.goal, seen_revision=goal.revision,
       title=goal.title, need_ids=[plan.need, plan.other_need], target_date=date(2026, 10, 1))
    base = item_at_revision(service, plan.id, plan.goal, goal.revision)
    assert base is not None
    assert (base.need_ids, base.target_date, base.status) == ([plan.need], date(2026, 9, 1), "set")
    now = item_at_revision(service, plan.id, plan.goal, goal.revision + 1)
    assert now is not None and now.need_ids == [plan.need, plan.other_need]


def test_no_base_for_an_unknown_item_or_a_revision_not_reached(service: PlanService, plan: Plan) -> None:
    need = service.get_plan(plan.id).needs[plan.need]
    assert item_at_revision(service, plan.id, "no-such-item", 1) is None
    assert item_at_revision(service, plan.id, plan.need, need.revision + 1) is None
    assert item_at_revision(service, plan.id, "client", 0) is not None  # the client as the plan was opened


def test_without_a_base_the_draft_stays_and_every_difference_is_a_clash(service: PlanService, plan: Plan) -> None:
    """A conflict whose revision the item never had (a form forged or from another plan)."""
    need = service.get_plan(plan.id).needs[plan.need]
    conflict = EditConflict(item_kind="need", item_id=plan.need, seen_revision=need.revision + 5,
                            current_revision=need.revision, changes=[])
    values = form_values(service, plan.id, ("needs", "edit"), need)
    draft = {**posted(values, need, description="Alaselkäkipu, leikkausjono"), "seen_revision": str(need.revision + 5)}
    merged = merge_with_saved(service, plan_id=plan.id, conflict=conflict, form=("needs", "edit"), saved=need,
                              values_of=lambda item: form_values(service, plan.id, ("needs", "edit"), item),
                              draft=draft)
    assert merged == Merge(values=draft, clashes=frozenset({"description"}))


def test_a_decision_is_not_merged_but_kept_as_posted(service: PlanService, plan: Plan) -> None:
    """The non-disclosure form posts what to do (set the order, ``active=true``), not the
    item's field: merged, Pekka's setting it would have turned Aino's "set" into "lift"."""
    do(service, plan.id, "name_counterpart", member_id=plan.pekka, seen_revision=0)
    client = service.get_plan(plan.id).client
    form = ("client", "nondisclosure")
    draft = posted(form_values(service, plan.id, form, client), client)
    assert draft["active"] == "true"
    do(service, plan.id, "set_non_disclosure", by=PEKKA, seen_revision=client.revision, active=True)
    conflict = refusal(service, plan, form, "client", {**draft, "active": True})
    saved = service.get_plan(plan.id).client
    merged = merge_with_saved(service, plan_id=plan.id, conflict=conflict, form=("client", "nondisclosure"),
                              saved=saved, values_of=lambda item: form_values(service, plan.id, form, item),
                              draft=draft)
    assert merged.values == draft
    assert merged.clashes == {"active"} and merged.theirs == frozenset()


# ---------------------------------------------------------------------------- helpers


def find(plan: Any, kind: str, item_id: str) -> Any:
    """The item of the plan page's ``kind`` (its route's segment)."""
    return plan.client if kind == "client" else getattr(plan, kind)[item_id]


_COMMANDS = {
    ("client", "edit"): "change_client_details", ("client", "contact"): "record_client_contact",
    ("needs", "edit"): "update_need", ("goals", "revise"): "revise_goal", ("members", "edit"): "update_member",
    ("steps", "edit"): "update_step", ("steps", "reschedule"): "reschedule_step",
    ("steps", "outcome"): "record_step_outcome", ("client", "nondisclosure"): "set_non_disclosure",
}


def command_fields(form: tuple[str, str], item_id: str, values: dict[str, Any]) -> dict[str, Any]:
    """A form's values as its command takes them."""
    action = ACTIONS[form]
    fields = {name: values[name] for name in action.struct.__struct_fields__ if name in values and name != "command_id"}
    if action.id_field:
        fields[action.id_field] = item_id
    return fields


def save_their_change(service: PlanService, plan: Plan, form: tuple[str, str], item_id: str, seen: Any,
                      changes: dict[str, Any]) -> None:
    """Pekka saves the same form with ``changes``, from the same revision as the editor."""
    values = {**form_values(service, plan.id, form, seen), **changes, "seen_revision": seen.revision}
    getattr(service, _COMMANDS[form])(plan.id, by=PEKKA, command_id=cid(), **command_fields(form, item_id, values))


def refusal(
    service: PlanService, plan: Plan, form: tuple[str, str], item_id: str, draft: dict[str, Any]
) -> EditConflict:
    """The editor's save of ``draft`` from the revision they saw: refused as a conflict."""
    values = {**draft, "seen_revision": int(draft["seen_revision"])}
    with pytest.raises(EditConflict) as refused:
        getattr(service, _COMMANDS[form])(plan.id, by=AINO, command_id=cid(), **command_fields(form, item_id, values))
    return refused.value


# ------------------------------------------------------------- through the real app


def test_saving_my_version_keeps_the_field_only_the_other_person_changed(plan_site: PlanSite) -> None:
    """The reviewer's steps, from two sessions: Pekka's financial situation survives Aino's
    "Save my version", and the history says Aino changed the description alone."""
    plan_id = plan_site.plans["matti"]
    with signed_in(plan_site, "aino.virtanen") as aino, signed_in(plan_site, "pekka.nieminen") as pekka:
        need_id, aino_form = open_new_need(aino, plan_id, "Uniongelmat\nHerää öisin", "Asumistuki")
        pekka_form = open_form(pekka, plan_id, need_id)
        assert post_form(pekka, pekka_form, financial="Asumistuki, vuokrarästejä").status_code == 200

        conflict = post_form(aino, aino_form, description="Uniongelmat\nHerää öisin, nukahtaa aamulla")
        assert conflict.status_code == 409
        dialog = FilledForm(conflict)
        assert dialog.values["financial"] == "Asumistuki, vuokrarästejä"  # Pekka's, not the one Aino saw
        assert dialog.values["description"] == "Uniongelmat\r\nHerää öisin, nukahtaa aamulla"
        assert "conflict__clash" not in conflict.text  # nothing both changed
        saved = post_form(aino, dialog)  # "Save my version", the form as it is

    assert saved.status_code == 200, saved.text[:500]
    need = plan_site.service.get_plan(plan_id).needs[need_id]
    assert need.financial == "Asumistuki, vuokrarästejä"
    assert need.description.splitlines() == ["Uniongelmat", "Herää öisin, nukahtaa aamulla"]
    *_, by_pekka, by_aino = plan_site.service.history(plan_id)
    assert (by_pekka.by_name, by_pekka.values["fields"]) == ("Pekka Nieminen", "financial")
    assert (by_aino.by_name, by_aino.values["fields"]) == ("Aino Virtanen", "description")
    plan_site.wait_for_views()
    with signed_in(plan_site, "aino.virtanen") as aino:
        history = aino.get(f"/plans/{plan_id}/history").text
    entry = re.search(r"Päivitti palvelutarvetta Uniongelmat\s+Herää öisin, nukahtaa aamulla: ([^<.]*)\.", history)
    assert entry and entry.group(1) == "Kuvaus"  # the description, and nothing else


def test_a_field_both_changed_is_marked_and_saving_keeps_mine(plan_site: PlanSite) -> None:
    plan_id = plan_site.plans["matti"]
    with signed_in(plan_site, "aino.virtanen") as aino, signed_in(plan_site, "pekka.nieminen") as pekka:
        need_id, aino_form = open_new_need(aino, plan_id, "Velkaantuminen", "")
        pekka_form = open_form(pekka, plan_id, need_id)
        pekkas = post_form(pekka, pekka_form, description="Velkaantuminen, ulosotto", financial="Ulosotossa")
        assert pekkas.status_code == 200

        conflict = post_form(aino, aino_form, description="Velkaantuminen, velkaneuvonta", status="being_addressed")
        assert conflict.status_code == 409
        dialog = FilledForm(conflict)
        assert (dialog.values["description"], dialog.values["financial"], dialog.values["status"]) == (
            "Velkaantuminen, velkaneuvonta", "Ulosotossa", "being_addressed")
        clashes = re.findall(r'<tr class="conflict__differs conflict__clash"><th scope="row">([^<]*) '
                             r'<span class="conflict__clash-label">\(molemmat muuttivat\)</span></th>'
                             r'<td>([^<]*)</td><td>([^<]*)</td>', conflict.text)  # said in words, not by colour alone
        assert clashes == [("Kuvaus", "Velkaantuminen, ulosotto", "Velkaantuminen, velkaneuvonta")]
        assert post_form(aino, dialog).status_code == 200

    need = plan_site.service.get_plan(plan_id).needs[need_id]
    assert (need.description, need.financial, need.status) == ("Velkaantuminen, velkaneuvonta", "Ulosotossa",
                                                               "being_addressed")


@pytest.mark.browser
def test_in_two_browsers_saving_my_version_keeps_the_other_persons_field(plan_site: PlanSite, browser: Any) -> None:
    """The reviewer's steps in two real browsers, as they were reported."""
    plan_id = plan_site.plans["matti"]
    need_id = plan_site.service.record_need(plan_id, by=AINO, command_id=cid(), category="health",
                                            description="Polven kuluma", financial="Sairauspäiväraha").item_id
    plan_site.wait_for_views()
    need = f"#need-{need_id}"
    aino, pekka = (browser_page(browser, plan_site, who) for who in ("aino.virtanen", "pekka.nieminen"))
    try:
        for tab in (aino, pekka):  # 1) Aino opens the form (Pekka too)
            tab.goto(f"{plan_site.base_url}/plans/{plan_id}")
            tab.click(f"{need} button >> text=Muokkaa")
            tab.wait_for_selector(f"{need} form[data-item-form]")
        pekka.fill(f"{need}-financial", "Sairauspäiväraha päättyy, kuntoutusraha haettu")  # 2) financial only
        pekka.click(f"{need} button[type=submit]")
        pekka.wait_for_selector(f"{need} form[data-item-form]", state="detached")

        aino.fill(f"{need}-description", "Polven kuluma, leikkaus keväällä")  # 3) description only
        aino.click(f"{need} button[type=submit]")
        aino.wait_for_selector(f"{need} .conflict >> text=Pekka Nieminen")
        assert aino.input_value(f"{need}-financial") == "Sairauspäiväraha päättyy, kuntoutusraha haettu"
        assert aino.input_value(f"{need}-description") == "Polven kuluma, leikkaus keväällä"
        aino.click(f"{need} button[type=submit] >> text=Tallenna oma versioni")
        aino.wait_for_selector(f"{need} form[data-item-form]", state="detached")
        assert "kuntoutusraha haettu" in aino.inner_text(need)
        assert aino.problems == pekka.problems == []  # (the refused save's 409 aside)
    finally:
        for tab in (aino, pekka):
            tab.context.close()

    saved = plan_site.service.get_plan(plan_id).needs[need_id]
    assert (saved.description, saved.financial) == ("Polven kuluma, leikkaus keväällä",
                                                    "Sairauspäiväraha päättyy, kuntoutusraha haettu")
    *_, by_pekka, by_aino = plan_site.service.history(plan_id)
    assert (by_pekka.by_name, by_pekka.values["fields"]) == ("Pekka Nieminen", "financial")
    assert (by_aino.by_name, by_aino.values["fields"]) == ("Aino Virtanen", "description")


def open_new_need(client: httpx.Client, plan_id: str, description: str, financial: str) -> tuple[str, FilledForm]:
    """Record a need from ``client``'s browser and open its edit form: (its id, the form)."""
    page = Page(client.get(f"/plans/{plan_id}"))
    before = set(re.findall(r'<li id="need-([0-9a-f-]{36})"', page.html))
    added = client.post(f"/plans/{plan_id}/needs/new/add", headers=htmx_headers(page),
                        data={"command_id": cid(), "category": "everyday_life",
                              "description": description.replace("\n", "\r\n"), "financial": financial})
    assert added.status_code == 200, added.text[:500]
    page = Page(client.get(f"/plans/{plan_id}"))
    (need_id,) = set(re.findall(r'<li id="need-([0-9a-f-]{36})"', page.html)) - before
    return need_id, open_form(client, plan_id, need_id)


def open_form(client: httpx.Client, plan_id: str, need_id: str) -> FilledForm:
    page = Page(client.get(f"/plans/{plan_id}"))
    response = client.get(f"/plans/{plan_id}/needs/{need_id}/edit", headers=htmx_headers(page))
    assert response.status_code == 200
    return FilledForm(response)


def post_form(client: httpx.Client, form: FilledForm, **changes: str) -> httpx.Response:
    """Submit ``form`` as the browser would, after the editor typed ``changes`` into it."""
    values = {**form.values, **{name: value.replace("\n", "\r\n") for name, value in changes.items()}}
    return client.post(form.action, data=values, headers={"hx-request": "true", "x-csrftoken": values["_csrf_token"]})


class FilledForm(HTMLParser):
    """The first posting form of a fragment, and what a browser would post from it: each
    named input, a textarea's text with CRLF line ends, each select's selected option."""

    def __init__(self, response: httpx.Response) -> None:
        super().__init__(convert_charrefs=True)
        self.action = ""
        self.values: dict[str, str] = {}
        self._inside = False
        self._textarea: str | None = None
        self._select: str | None = None
        self.feed(response.text)
        assert self.action, f"no form to post in {response.text[:300]}"

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "form" and not self.action and attributes.get("method") == "post":
            self.action = attributes["action"]
            self._inside = True
        elif not self._inside:
            return
        elif tag == "input" and "name" in attributes:
            if attributes.get("type") not in ("checkbox", "radio") or "checked" in attributes:
                self.values[attributes["name"]] = attributes.get("value", "")
        elif tag == "textarea":
            self._textarea = attributes["name"]
            self.values[self._textarea] = ""
        elif tag == "select":
            self._select = attributes["name"]
        elif tag == "option" and self._select:
            if "selected" in attributes or self._select not in self.values:
                self.values[self._select] = attributes.get("value", "")

    def handle_data(self, data: str) -> None:
        if self._textarea:
            self.values[self._textarea] += data.replace("\r\n", "\n").replace("\n", "\r\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._inside = False
        elif tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None


def test_a_conflict_after_a_handover_keeps_the_part_the_editor_wrote_back(service: PlanService, plan: Plan) -> None:
    """The handover took the default part from Aino and counted it; the editor saw that
    version, wrote the part back in, and Pekka meanwhile changed only the contact: the merge
    keeps both (the reviewer's case, which a base from before the handover lost silently)."""
    p = service.get_plan(plan.id)
    aino_member = next(m for m in p.members.values() if m.person_id == AINO.person_id)
    service.name_counterpart(plan.id, by=AINO, command_id=cid(), member_id=plan.pekka,
                             seen_revision=p.responsibility.revision)
    handover = service.propose_handover(plan.id, by=AINO, command_id=cid()).item_id
    service.accept_handover(plan.id, by=PEKKA, command_id=cid(), handover_id=handover)
    seen = service.get_plan(plan.id).members[aino_member.id]
    assert (seen.part, seen.revision) == ("", aino_member.revision + 1)
    service.update_member(plan.id, by=PEKKA, command_id=cid(), member_id=aino_member.id,
                          seen_revision=seen.revision, profession=seen.profession, contact="050 999", part="")
    draft = {"profession": seen.profession, "contact": seen.contact, "part": EXPERT_PART}
    with pytest.raises(EditConflict) as refused:
        service.update_member(plan.id, by=AINO, command_id=cid(), member_id=aino_member.id,
                              seen_revision=seen.revision, **draft)
    now = service.get_plan(plan.id)
    merged = merge_with_saved(service, plan_id=plan.id, conflict=refused.value, form=("members", "edit"),
                              saved=now.members[aino_member.id],
                              values_of=lambda m: ACTIONS[("members", "edit")].prefill(now, m), draft=draft)
    assert (merged.values["part"], merged.values["contact"]) == (EXPERT_PART, "050 999")
