"""Caseloads: per person and role, per organisation, search, what changed since seen, summary lines.

Every test runs on a SQLite data folder and on a fresh PostgreSQL schema (see conftest.py).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest

from domain.application import Outcome, PlanService
from domain.demo import load_demo
from domain.storage import StoreSettings
from domain.values import Actor
from projections.plans import PlanViews, rebuild
from projections.views import CaseloadEntry
from tests.projections.helpers import ACTORS, catch_up, today

DEMO = ("matti", "liisa", "ahmed", "eeva", "johan")

SEEKER = Actor(person_id="p-haku", name="Hilkka Haku", organisation_id="org-haku", organisation_name="Hakupalvelu")
COLLEAGUE = Actor(person_id="p-kollega", name="Kaisa Kollega", organisation_id="org-haku", organisation_name="Hakupalvelu")
OUTSIDER = Actor(person_id="p-muu", name="Mauri Muu", organisation_id="org-muu", organisation_name="Muu palvelu")


def roles(entries: list[CaseloadEntry], plans: dict[str, str]) -> dict[str, str]:
    names = {plan_id: name for name, plan_id in plans.items()}
    return {names[e.plan_id]: e.role for e in entries}


def names_of(entries: list[CaseloadEntry]) -> list[str]:
    return sorted(e.summary["client_name"] for e in entries)


def open_for(service: PlanService, by: Actor, name: str) -> Outcome:
    return service.open_plan(
        by=by,
        command_id=f"open-{name}",
        client_name=name,
        segment="unemployed",
        language="fi",
        referring_party="self_referral",
        expert_profession="asiantuntija",
    )


@pytest.fixture
def demo_views(service: PlanService, open_views: Callable[..., PlanViews]) -> tuple[PlanViews, dict[str, str]]:
    views = open_views()
    plans = dict(zip(DEMO, load_demo(service), strict=True))
    catch_up(views, service)
    return views, plans


def test_demo_caseloads_per_person_and_organisation_follow_network_changes(
    service: PlanService, demo_views: tuple[PlanViews, dict[str, str]]
) -> None:
    views, plans = demo_views
    expected = {
        "aino.virtanen": {"matti": "counterpart", "eeva": "counterpart"},  # expert of matti until the handover
        "pekka.nieminen": {"matti": "expert"},
        "mikko.laine": {"matti": "member"},
        "timo.lehtonen": {"matti": "member", "eeva": "expert"},
        "sanna.koski": {"liisa": "expert"},
        "kalle.hakala": {"liisa": "member"},
        "riikka.salo": {"liisa": "counterpart", "johan": "counterpart"},
        "leena.makinen": {"ahmed": "expert"},
        "hanna.jarvinen": {"ahmed": "counterpart"},
        "jari.heikkinen": {"ahmed": "member", "johan": "expert"},
        "outi.rantanen": {"eeva": "member"},
        "maria.lindqvist": {"eeva": "member"},
        "nobody": {},
    }
    assert {person: roles(views.caseload(person_id=person), plans) for person in expected} == expected

    per_organisation = {
        "pirha-toike": {"matti", "liisa", "ahmed", "eeva", "johan"},
        "kela-pirkanmaa": {"matti", "liisa", "johan"},
        "tampere-tyollisyys": {"matti", "ahmed", "eeva"},
        "vire-ry": {"eeva"},
        "kuntoutus-oy": {"liisa", "eeva"},
        "org-nobody": set(),
    }
    found = {
        organisation: set(roles(views.caseload(person_id="aino.virtanen", organisation_id=organisation), plans))
        for organisation in per_organisation
    }
    assert found == per_organisation
    whole = views.caseload(person_id="aino.virtanen", organisation_id="pirha-toike")
    assert len(whole) == len({e.plan_id for e in whole})  # one line per plan, however many colleagues

    # the summary line, and a pending handover in the counterpart's caseload
    lines = {e.plan_id: e.summary for e in views.caseload(person_id="aino.virtanen")}
    handover = lines[plans["eeva"]]["pending_handover"]
    assert handover["to_person_id"] == "aino.virtanen"
    assert (handover["from_name"], handover["to_name"]) == ("Timo Lehtonen", "Aino Virtanen")
    assert lines[plans["matti"]]["pending_handover"] is None  # accepted long ago
    timo = {e.plan_id: e.summary for e in views.caseload(person_id="timo.lehtonen")}
    assert timo[plans["eeva"]]["pending_handover"]["to_person_id"] == "aino.virtanen"
    assert timo[plans["eeva"]]["expert"]["name"] == "Timo Lehtonen"
    assert timo[plans["eeva"]]["counterpart"]["name"] == "Aino Virtanen"
    ahmed = {e.plan_id: e.summary for e in views.caseload(person_id="leena.makinen")}[plans["ahmed"]]
    assert (ahmed["client_name"], ahmed["language"], ahmed["is_closed"], ahmed["closing_outcome"]) == (
        "Ahmed Testinen",
        "en",
        True,
        "work",
    )
    assert ahmed["expert"] == {"name": "Leena Mäkinen", "organisation": "Pirkanmaan hyvinvointialue, työkyvyn tuki"}
    assert ahmed["next_step"] is None

    # then the network changes: a member leaves, a handover is accepted, a consent withdrawn
    pekka, aino, sanna = ACTORS["pekka.nieminen"], ACTORS["aino.virtanen"], ACTORS["sanna.koski"]
    matti = service.get_plan(plans["matti"])
    mikko = matti.member_of_person("mikko.laine")
    service.remove_member(plans["matti"], by=pekka, command_id="remove-mikko", member_id=mikko.id, seen_revision=mikko.revision)
    eeva = service.get_plan(plans["eeva"])
    service.accept_handover(plans["eeva"], by=aino, command_id="accept-eeva", handover_id=eeva.pending_handover.id)
    liisa = service.get_plan(plans["liisa"])
    kela = next(c for c in liisa.consents.values() if c.organisation_id == "kela-pirkanmaa")
    service.withdraw_consent(plans["liisa"], by=sanna, command_id="withdraw-kela", consent_id=kela.id, seen_revision=kela.revision)
    catch_up(views, service)

    assert views.caseload(person_id="mikko.laine") == []
    assert roles(views.caseload(person_id="aino.virtanen"), plans) == {"matti": "counterpart", "eeva": "expert"}
    lines = {e.plan_id: e.summary for e in views.caseload(person_id="aino.virtanen")}
    assert lines[plans["eeva"]]["pending_handover"] is None
    assert lines[plans["eeva"]]["expert"]["name"] == "Aino Virtanen"
    assert roles(views.caseload(person_id="timo.lehtonen"), plans) == {"matti": "member", "eeva": "counterpart"}
    assert roles(views.caseload(person_id="riikka.salo"), plans) == {"johan": "counterpart"}
    kela_plans = views.caseload(person_id="pekka.nieminen", organisation_id="kela-pirkanmaa")
    assert set(roles(kela_plans, plans)) == {"matti", "johan"}
    summary = {e.plan_id: e.summary for e in views.caseload(person_id="sanna.koski")}[plans["liisa"]]
    assert summary["counterpart"] is None


SEARCHABLE = [
    "Väinö Äijälä",
    "Sini Öhman",
    "Tiina 100% Virta",
    "Anna_Maria Berg",
    "AnnaXMaria Berg",
    "Jussi\\Pekka Salo",
]


SEARCHES = {
    "": SEARCHABLE,
    "äijä": ["Väinö Äijälä"],
    "ÄIJÄLÄ": ["Väinö Äijälä"],
    "väinö ä": ["Väinö Äijälä"],
    "öh": ["Sini Öhman"],
    "ÖHMAN": ["Sini Öhman"],
    "berg": ["Anna_Maria Berg", "AnnaXMaria Berg"],
    "%": ["Tiina 100% Virta"],
    "0% v": ["Tiina 100% Virta"],
    "_": ["Anna_Maria Berg"],
    "a_m": ["Anna_Maria Berg"],
    "\\": ["Jussi\\Pekka Salo"],
    "%berg": [],
    "zzz": [],
    "äijälä väinö": ["Väinö Äijälä"],  # the words of a name in any order
    "  berg   maria ": ["Anna_Maria Berg", "AnnaXMaria Berg"],
    "salo jussi": ["Jussi\\Pekka Salo"],
    "berg\x00maria\x07": ["Anna_Maria Berg", "AnnaXMaria Berg"],  # PostgreSQL's text holds no NUL
    "berg zzz": [],
    "   ": SEARCHABLE,
}


def test_search_by_client_name_is_case_insensitive_in_any_word_order_and_takes_wildcards_literally(
    service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    views = open_views()
    for name in SEARCHABLE:
        open_for(service, SEEKER, name)
    open_for(service, OUTSIDER, "Väinö Äijälä Toinen")  # someone else's plan: never found
    catch_up(views, service)

    own = {search: names_of(views.caseload(person_id=SEEKER.person_id, search=search)) for search in SEARCHES}
    organisation = {
        search: names_of(views.caseload(person_id=SEEKER.person_id, organisation_id="org-haku", search=search))
        for search in SEARCHES
    }
    expected = {search: sorted(names) for search, names in SEARCHES.items()}
    assert own == expected
    assert organisation == expected


def test_search_follows_a_renamed_client(service: PlanService, open_views: Callable[..., PlanViews]) -> None:
    views = open_views()
    plan_id = open_for(service, SEEKER, "Sini Öhman").plan_id
    client = service.get_plan(plan_id).client
    renamed = service.change_client_details(
        plan_id,
        by=SEEKER,
        command_id="rename",
        seen_revision=client.revision,
        client_name="Sini Åkerman",
        segment=client.segment,
        language=client.language,
        referring_party=client.referring_party,
    )
    assert views.wait_for(renamed.position, timeout=5)
    assert views.caseload(person_id=SEEKER.person_id, search="öhman") == []
    assert names_of(views.caseload(person_id=SEEKER.person_id, search="ÅKER")) == ["Sini Åkerman"]


def test_changed_since_seen_before_and_after_mark_seen_and_after_a_new_edit(
    settings: StoreSettings, service: PlanService, open_views: Callable[..., PlanViews]
) -> None:
    views = open_views()
    first = open_for(service, SEEKER, "Eka Asiakas").plan_id
    second = open_for(service, SEEKER, "Toka Asiakas").plan_id
    for plan_id in (first, second):
        service.add_member(
            plan_id,
            by=SEEKER,
            command_id=f"colleague-{plan_id}",
            person_id=COLLEAGUE.person_id,
            name=COLLEAGUE.name,
            profession="sosiaalityöntekijä",
            organisation_id=COLLEAGUE.organisation_id,
            organisation_name=COLLEAGUE.organisation_name,
        )
    catch_up(views, service)

    def changed(person: str, organisation: str | None = None) -> dict[str, bool]:
        return {e.plan_id: e.changed_since_seen for e in views.caseload(person_id=person, organisation_id=organisation)}

    assert changed(SEEKER.person_id) == {first: True, second: True}
    entry = next(e for e in views.caseload(person_id=SEEKER.person_id) if e.plan_id == first)
    assert entry.seen_version is None

    views.mark_seen(SEEKER.person_id, first, entry.version)

    assert changed(SEEKER.person_id) == {first: False, second: True}
    assert changed(SEEKER.person_id, "org-haku") == {first: False, second: True}
    assert changed(COLLEAGUE.person_id) == {first: True, second: True}  # seen by someone else only

    edit = service.add_note(first, by=COLLEAGUE, command_id="new-note", text="Uusi käänne.")
    assert views.wait_for(edit.position, timeout=5)
    assert changed(SEEKER.person_id) == {first: True, second: True}
    entry_after = next(e for e in views.caseload(person_id=SEEKER.person_id) if e.plan_id == first)
    assert (entry_after.version, entry_after.seen_version) == (edit.version, entry.version)
    assert views.caseload(person_id=SEEKER.person_id)[0].plan_id == first  # newest change first

    views.mark_seen(SEEKER.person_id, first, edit.version)
    assert changed(SEEKER.person_id) == {first: False, second: True}

    # what people have seen is not derived from events: it survives a rebuild
    open_views.close(views)
    rebuild(settings)
    assert {e.plan_id: e.changed_since_seen for e in open_views(follow=False).caseload(person_id=SEEKER.person_id)} == {
        first: False,
        second: True,
    }


def test_mark_seen_keeps_the_newest_version_and_a_repeat_costs_no_write(
    service: PlanService, open_views: Callable[..., PlanViews], monkeypatch: pytest.MonkeyPatch
) -> None:
    views = open_views()
    plan_id = open_for(service, SEEKER, "Katsottu Asiakas").plan_id
    for number in range(3):
        service.add_note(plan_id, by=SEEKER, command_id=f"note-{number}", text="Käänne.")
    catch_up(views, service)

    def seen_version() -> int | None:
        return next(e.seen_version for e in views.caseload(person_id=SEEKER.person_id) if e.plan_id == plan_id)

    stored: list[int] = []
    store_mark = views.store.mark_seen

    def counting(person_id: str, plan_id: str, version: int, seen_at: str) -> None:
        stored.append(version)
        store_mark(person_id, plan_id, version, seen_at)

    monkeypatch.setattr(views.store, "mark_seen", counting)
    views.mark_seen(SEEKER.person_id, plan_id, 3)
    views.mark_seen(SEEKER.person_id, plan_id, 3)
    views.mark_seen(SEEKER.person_id, plan_id, 2)  # a page of an older version, rendered late
    assert (stored, seen_version()) == ([3], 3)

    # another process (or instance) that marks an older version does not take the mark back
    other = open_views(follow=False)
    other.mark_seen(SEEKER.person_id, plan_id, 2)
    assert seen_version() == 3
    other.mark_seen(SEEKER.person_id, plan_id, 4)
    assert seen_version() == 4
    views.mark_seen(SEEKER.person_id, plan_id, 4)  # this process has not marked 4 itself: it asks the store
    assert stored == [3, 4]


def test_the_next_step_is_the_earliest_open_step(service: PlanService, open_views: Callable[..., PlanViews]) -> None:
    views = open_views()
    plan_id = open_for(service, SEEKER, "Askel Asiakas").plan_id
    need = service.record_need(plan_id, by=SEEKER, command_id="need", category="health", description="Selkä").item_id
    expert_id = service.get_plan(plan_id).responsibility.expert_id
    day = today()

    def step(title: str, start: int, end: int) -> str:
        return service.plan_step(
            plan_id,
            by=SEEKER,
            command_id=f"step-{title}",
            title=title,
            need_id=need,
            responsible_member_id=expert_id,
            planned_start=day + timedelta(days=start),
            planned_end=day + timedelta(days=end),
        ).item_id

    def progress(step_id: str, status: str) -> Outcome:
        revision = service.get_plan(plan_id).steps[step_id].revision
        return service.progress_step(
            plan_id, by=SEEKER, command_id=f"{status}-{step_id}", step_id=step_id, seen_revision=revision, status=status, on=day
        )

    def next_step() -> dict | None:
        catch_up(views, service)
        (entry,) = views.caseload(person_id=SEEKER.person_id)
        return entry.summary["next_step"]

    assert next_step() is None
    done = step("Arvio", -40, 0)  # begun before the plan (a step may not end before it)
    cancelled = step("Peruttu", -20, 0)
    later = step("Myöhempi", 30, 40)
    soon = step("Seuraava", 5, 6)
    progress(done, "done")
    progress(cancelled, "cancelled")

    assert next_step() == {
        "title": "Seuraava",
        "status": "planned",
        "start": (day + timedelta(days=5)).isoformat(),
        "end": (day + timedelta(days=6)).isoformat(),
    }
    progress(soon, "started")
    assert (next_step()["title"], next_step()["status"]) == ("Seuraava", "started")
    progress(soon, "done")
    assert next_step()["title"] == "Myöhempi"
    progress(later, "cancelled")
    assert next_step() is None
    (entry,) = views.caseload(person_id=SEEKER.person_id)
    assert entry.summary["open_needs"] == 1
