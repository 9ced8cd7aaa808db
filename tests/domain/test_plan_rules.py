"""The rules of the client plan, pinned one behaviour per test on the aggregate itself.

Every test works on `ClientPlan` directly (no store): it opens a plan, gives commands and
looks at the events the plan recorded (`collect_events`). A refused command is checked
with `refused(...)`: the error is of exactly the expected class, its message carries the
words a user needs, its `field` names the input at fault, and nothing was recorded — the
plan's version, pending events and state are all as they were.

The people are the fixtures of `conftest.py`: Anna (health centre nurse, the named
expert), Aino (health centre physiotherapist), Bert (Kela, the counterpart), Carla
(employment services).
"""

from __future__ import annotations

import copy
import dataclasses
import inspect
import itertools
import math
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from domain.errors import (
    DomainError,
    EditConflict,
    InvalidValue,
    NotFound,
    NotYours,
    PlanClosed,
    Repeated,
    RuleViolation,
)
from domain.access import Relation, relation_to
from domain.inputs import LONG_TEXT, SHORT_TEXT
from domain.items import CONFLICT_CHANGES, KEPT_CHANGES, Receipt
from domain.plan import EXPERT_PART, PLAN_REACH, REMEMBERED_COMMANDS, ClientPlan, PlanRecord
from domain.values import (
    Actor,
    ClosingOutcome,
    GoalStatus,
    HandoverStatus,
    Language,
    NeedCategory,
    NeedStatus,
    NoteVisibility,
    ReferringParty,
    Segment,
    StepStatus,
)

OPENED_AT = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
OPENING_DAY = OPENED_AT.date()
NOW = OPENED_AT + timedelta(days=14)
"""When the commands after the opening are given, unless a test says otherwise."""
TODAY = NOW.date()
TOMORROW = TODAY + timedelta(days=1)

_command_ids = itertools.count(1)


def cid() -> str:
    """A fresh command id."""
    return f"cmd-{next(_command_ids)}"


# --- helpers ---------------------------------------------------------------------------


def open_plan(
    by: Actor,
    *,
    command_id: str | None = None,
    at: datetime = OPENED_AT,
    plan_class: type[ClientPlan] = ClientPlan,
    **overrides: Any,
) -> ClientPlan:
    fields: dict[str, Any] = {
        "client_name": "Maija Mäkinen",
        "segment": "unemployed",
        "language": "fi",
        "referring_party": "employment_services",
        "expert_profession": "nurse",
    }
    fields.update(overrides)
    return plan_class.open(by=by, command_id=command_id or cid(), at=at, **fields)


def do(plan: ClientPlan, command: str, by: Actor, *, at: datetime = NOW, **fields: Any) -> Any:
    """Give a command that is expected to succeed; return what it returns."""
    return getattr(plan, command)(by=by, command_id=cid(), at=at, **fields)


def recorded(plan: ClientPlan) -> list[str]:
    """The names of the events recorded since the last call (and forget them)."""
    return [type(event).__name__ for event in plan.collect_events()]


def give_consent_for(
    plan: ClientPlan, by: Actor, person: Actor, *, valid_from: date = OPENING_DAY, at: datetime = NOW
) -> str:
    return do(
        plan,
        "give_consent",
        by,
        at=at,
        organisation_id=person.organisation_id,
        organisation_name=person.organisation_name,
        valid_from=valid_from,
    )


def add_to_network(
    plan: ClientPlan, by: Actor, person: Actor, *, profession: str = "adviser", at: datetime = NOW, **fields: Any
) -> str:
    return do(
        plan,
        "add_member",
        by,
        at=at,
        person_id=person.person_id,
        name=person.name,
        profession=profession,
        organisation_id=person.organisation_id,
        organisation_name=person.organisation_name,
        **fields,
    )


def record_need(plan: ClientPlan, by: Actor, *, category: str = "health", **fields: Any) -> str:
    fields.setdefault("description", "Back pain limits sitting work")
    return do(plan, "record_need", by, category=category, **fields)


def plan_step(
    plan: ClientPlan,
    by: Actor,
    need_id: str,
    responsible_id: str,
    *,
    title: str = "Physiotherapy assessment",
    start: date = TODAY,
    end: date = TODAY + timedelta(days=14),
) -> str:
    return do(
        plan,
        "plan_step",
        by,
        title=title,
        need_id=need_id,
        responsible_member_id=responsible_id,
        planned_start=start,
        planned_end=end,
    )


def progress(plan: ClientPlan, by: Actor, step_id: str, status: str, *, on: date = TODAY, at: datetime = NOW) -> str:
    return do(
        plan,
        "progress_step",
        by,
        at=at,
        step_id=step_id,
        seen_revision=plan.steps[step_id].revision,
        status=status,
        on=on,
    )


def state_of(plan: ClientPlan) -> dict[str, Any]:
    return copy.deepcopy({name: value for name, value in vars(plan).items() if name != "_pending_events"})


_ANY = object()


@contextmanager
def refused(
    plan: ClientPlan | None, error_class: type[DomainError], *words: str, field: Any = _ANY
) -> Iterator[pytest.ExceptionInfo[DomainError]]:
    """Expect the block to be refused with exactly `error_class`, and nothing recorded."""
    if plan is not None:
        version, pending, state = plan.version, list(plan.pending_events), state_of(plan)
    with pytest.raises(DomainError) as caught:
        yield caught
    error = caught.value
    assert type(error) is error_class, f"{type(error).__name__}: {error}"
    for word in words:
        assert word.lower() in str(error).lower(), f"{word!r} is not in {str(error)!r}"
    if field is not _ANY:
        assert error.field == field
    if plan is not None:
        assert plan.version == version
        assert plan.pending_events == pending
        assert state_of(plan) == state


# --- fixtures --------------------------------------------------------------------------


@pytest.fixture
def plan(anna: Actor) -> ClientPlan:
    """A plan Anna has just opened, its opening already collected."""
    opened = open_plan(anna)
    opened.collect_events()
    return opened


@dataclass
class Scene:
    """A plan in use: Anna the named expert, Bert (Kela) her counterpart, Carla
    (employment services) and Aino (health centre) in the network, one health need with
    a goal, and a step Aino is responsible for. Consents for Kela and the employment
    services were given from the opening day."""

    plan: ClientPlan
    anna: Actor
    aino: Actor
    bert: Actor
    carla: Actor
    anna_id: str
    aino_id: str
    bert_id: str
    carla_id: str
    health_centre_consent: str
    kela_consent: str
    te_consent: str
    need_id: str
    goal_id: str
    step_id: str

    def propose(self) -> str:
        """The id of a handover from Anna to Bert, proposed now if none is pending."""
        pending = self.plan.pending_handover
        handover_id = pending.id if pending else do(self.plan, "propose_handover", self.anna, note="I am on leave")
        self.plan.collect_events()
        return handover_id

    def settle_steps(self) -> None:
        """Mark every step still planned or started done, as a plan must be before it closes."""
        for step_id, step in list(self.plan.steps.items()):
            if step.status in ("planned", "started"):
                progress(self.plan, self.aino, step_id, "done")
        self.plan.collect_events()

    def close(self, outcome: str = "work") -> None:
        """Anna closes the plan, its steps settled first; the events are collected."""
        self.settle_steps()
        do(self.plan, "close", self.anna, outcome=outcome)
        self.plan.collect_events()


@pytest.fixture
def s(anna: Actor, aino: Actor, bert: Actor, carla: Actor) -> Scene:
    return make_scene(ClientPlan, anna, aino, bert, carla)


@pytest.fixture
def r(anna: Actor, aino: Actor, bert: Actor, carla: Actor) -> Scene:
    """The same scene as read back: a `PlanRecord`, which also keeps what the rules never read."""
    return make_scene(PlanRecord, anna, aino, bert, carla)


def make_scene(plan_class: type[ClientPlan], anna: Actor, aino: Actor, bert: Actor, carla: Actor) -> Scene:
    plan = open_plan(anna, plan_class=plan_class)
    (health_centre_consent,) = plan.consents
    kela_consent = give_consent_for(plan, anna, bert)
    te_consent = give_consent_for(plan, anna, carla)
    bert_id = add_to_network(plan, anna, bert, profession="benefits officer")
    carla_id = add_to_network(plan, anna, carla, profession="employment adviser")
    aino_id = add_to_network(plan, anna, aino, profession="physiotherapist")
    do(plan, "name_counterpart", anna, member_id=bert_id, seen_revision=plan.responsibility.revision)
    need_id = record_need(plan, anna, financial="Sickness allowance ends in May")
    goal_id = do(
        plan,
        "set_goal",
        anna,
        title="Back to part-time work",
        need_ids=[need_id],
        target_date=TODAY + timedelta(days=90),
    )
    step_id = plan_step(plan, anna, need_id, aino_id)
    plan.collect_events()
    return Scene(
        plan=plan,
        anna=anna,
        aino=aino,
        bert=bert,
        carla=carla,
        anna_id=plan.expert.id,
        aino_id=aino_id,
        bert_id=bert_id,
        carla_id=carla_id,
        health_centre_consent=health_centre_consent,
        kela_consent=kela_consent,
        te_consent=te_consent,
        need_id=need_id,
        goal_id=goal_id,
        step_id=step_id,
    )


# --- opening ---------------------------------------------------------------------------


def test_opening_records_one_event_with_the_client(anna: Actor) -> None:
    opened = open_plan(anna, client_name="  Maija Mäkinen ", segment="employed", language="sv", referring_party="kela")

    assert opened.version == 1
    assert recorded(opened) == ["Opened"]
    assert opened.client.name == "Maija Mäkinen"
    assert (opened.client.segment, opened.client.language, opened.client.referring_party) == ("employed", "sv", "kela")
    assert opened.opened_on == OPENING_DAY
    assert not opened.is_closed


@pytest.mark.parametrize(
    "field, value, vocabulary",
    [
        pytest.param("segment", "retired", Segment),
        pytest.param("referring_party", "neighbour", ReferringParty),
        pytest.param("language", "de", Language),
    ],
)
def test_opening_refuses_an_unknown_value_and_names_the_allowed_ones(
    anna: Actor, field: str, value: str, vocabulary: type
) -> None:
    with refused(None, InvalidValue, "choose one of", field=field) as caught:
        open_plan(anna, **{field: value})
    for member in vocabulary:
        assert member.value in str(caught.value)
    assert caught.value.params == {"field": field, "allowed": ", ".join(member.value for member in vocabulary)}


@pytest.mark.parametrize("value", ["", "  ", None])
def test_nothing_chosen_is_asked_for_without_a_list(anna: Actor, value: str | None) -> None:
    with refused(None, InvalidValue, "choose one.", field="segment") as caught:
        open_plan(anna, segment=value)
    assert caught.value.template == "%(field)s: choose one."


@pytest.mark.parametrize("name", [pytest.param(n) for n in ("", "   ", None)])
def test_opening_refuses_an_empty_client_name(anna: Actor, name: str | None) -> None:
    with refused(None, InvalidValue, "must not be empty", field="client_name"):
        open_plan(anna, client_name=name)


def test_opening_refuses_a_client_name_longer_than_a_short_text(anna: Actor) -> None:
    with refused(None, InvalidValue, "too long", str(SHORT_TEXT), field="client_name"):
        open_plan(anna, client_name="M" * (SHORT_TEXT + 1))


def test_opening_refuses_an_empty_expert_profession(anna: Actor) -> None:
    with refused(None, InvalidValue, "must not be empty", field="profession"):
        open_plan(anna, expert_profession=" ")


def test_the_person_opening_the_plan_becomes_its_member_and_named_expert(anna: Actor) -> None:
    opened = open_plan(anna, expert_profession="nurse", expert_contact="anna.aalto@hc.example")

    expert = opened.expert
    assert list(opened.members) == [expert.id]
    assert (expert.person_id, expert.name, expert.organisation_id) == (anna.person_id, anna.name, anna.organisation_id)
    assert (expert.profession, expert.contact, expert.part) == ("nurse", "anna.aalto@hc.example", "named expert")
    assert opened.responsibility.expert_id == expert.id
    assert opened.counterpart is None


def test_opening_records_the_consent_for_the_experts_organisation_from_the_opening_day(anna: Actor) -> None:
    opened = open_plan(anna)

    (consent,) = opened.consents.values()
    assert (consent.organisation_id, consent.organisation_name) == (anna.organisation_id, anna.organisation_name)
    assert consent.valid_from == OPENING_DAY
    assert consent.withdrawn_on is None
    assert opened.valid_consent_for(anna.organisation_id, OPENING_DAY) is consent


def test_the_opening_day_is_the_day_in_finland_not_in_utc(anna: Actor) -> None:
    """A plan opened at 01:30 in Helsinki on 4 December (23:30 on the 3rd in UTC) was opened
    on the 4th: its consent starts then, and a goal for the 3rd is before the opening."""
    opened = open_plan(anna, at=datetime(2026, 12, 3, 23, 30, tzinfo=UTC))
    fourth = date(2026, 12, 4)

    (consent,) = opened.consents.values()
    assert (opened.opened_on, consent.valid_from) == (fourth, fourth)
    need_id = record_need(opened, anna, description="Selkäkipu")
    with refused(opened, InvalidValue, "before the plan was opened", fourth.isoformat(), field="target_date"):
        do(opened, "set_goal", anna, title="Työkokeilu", need_ids=[need_id], target_date=fourth - timedelta(days=1))


def test_the_plan_id_follows_from_the_opening_command_id(anna: Actor) -> None:
    assert open_plan(anna, command_id="open-x").id == open_plan(anna, command_id="open-x").id
    assert open_plan(anna, command_id="open-x").id != open_plan(anna, command_id="open-y").id


# --- client details --------------------------------------------------------------------


def test_changing_the_client_details_records_which_fields_changed(plan: ClientPlan, anna: Actor) -> None:
    do(
        plan,
        "change_client_details",
        anna,
        seen_revision=0,
        client_name="Maija Mäkinen",
        segment="employed",
        language="fi",
        referring_party="employment_services",
    )

    assert recorded(plan) == ["ClientDetailsChanged"]
    assert plan.client.segment == "employed"
    assert plan.client.revision == 1
    assert plan.client.changes[-1].fields == ["segment"]


def test_changing_the_client_details_from_a_stale_revision_is_an_edit_conflict(
    plan: ClientPlan, anna: Actor, bert: Actor
) -> None:
    details = {"segment": "unemployed", "language": "fi", "referring_party": "kela"}
    do(plan, "change_client_details", bert, seen_revision=0, client_name="Maija Virtanen", **details)
    plan.collect_events()

    with refused(plan, EditConflict, bert.name):
        do(plan, "change_client_details", anna, seen_revision=0, client_name="Maija M.", **details)


# --- needs -----------------------------------------------------------------------------


def test_there_are_exactly_four_need_categories() -> None:
    assert {category.value for category in NeedCategory} == {
        "health",
        "work_and_employment",
        "everyday_life",
        "skills_and_competence",
    }


@pytest.mark.parametrize("category", [c.value for c in NeedCategory])
def test_a_need_is_recorded_in_any_of_the_four_categories(plan: ClientPlan, anna: Actor, category: str) -> None:
    need_id = record_need(plan, anna, category=category, description="Something to work on")

    assert recorded(plan) == ["NeedRecorded"]
    need = plan.needs[need_id]
    assert (need.category, need.description, need.status, need.revision) == (
        category,
        "Something to work on",
        "open",
        1,
    )


@pytest.mark.parametrize("category", ["financial", "housing"])
def test_an_unknown_need_category_is_refused_naming_the_four(plan: ClientPlan, anna: Actor, category: str) -> None:
    """The financial situation runs through every category: it is not a fifth one."""
    with refused(plan, InvalidValue, "choose one of", *[c.value for c in NeedCategory], field="category"):
        record_need(plan, anna, category=category)


def test_a_need_without_a_category_is_asked_for_one(plan: ClientPlan, anna: Actor) -> None:
    with refused(plan, InvalidValue, "category: choose one.", field="category"):
        record_need(plan, anna, category="")


@pytest.mark.parametrize("description", ["", "  \n ", None])
def test_a_need_without_a_description_is_refused(plan: ClientPlan, anna: Actor, description: str | None) -> None:
    with refused(plan, InvalidValue, "must not be empty", field="description"):
        record_need(plan, anna, description=description)


def test_a_need_description_longer_than_a_long_text_is_refused(plan: ClientPlan, anna: Actor) -> None:
    with refused(plan, InvalidValue, "too long", str(LONG_TEXT), field="description"):
        record_need(plan, anna, description="x" * (LONG_TEXT + 1))


def test_a_need_description_of_exactly_a_long_text_is_accepted(plan: ClientPlan, anna: Actor) -> None:
    need_id = record_need(plan, anna, description="x" * LONG_TEXT)
    assert len(plan.needs[need_id].description) == LONG_TEXT


def test_a_financial_side_longer_than_a_long_text_is_refused(plan: ClientPlan, anna: Actor) -> None:
    with refused(plan, InvalidValue, "too long", field="financial"):
        record_need(plan, anna, financial="€" * (LONG_TEXT + 1))


@pytest.mark.parametrize("character", ["\x00", "\ud800"])
def test_a_text_with_a_character_no_text_is_stored_with_is_refused(
    plan: ClientPlan, anna: Actor, character: str
) -> None:
    with refused(plan, InvalidValue, "forbidden character", field="description"):
        record_need(plan, anna, description=f"Back{character}pain")


def test_a_text_is_kept_as_it_shows_without_what_is_not_seen(plan: ClientPlan, anna: Actor) -> None:
    """Direction overrides, invisible spaces, soft hyphens and stray control characters make
    a text show other than it reads ("Matti \u202eikkremisE" as "Matti Esimerkki") and hide
    it from a search: they go. A word processor's line breaks are line breaks."""
    need_id = record_need(plan, anna, description="Selkä\u202ekipu\u200b haittaa\u00ad istu\x07mista\ufeff")
    assert plan.needs[need_id].description == "Selkäkipu haittaa istumista"
    pasted = record_need(plan, anna, description="rivi 1\x0brivi 2\u2028rivi 3\r\nrivi 4\x0crivi 5\x85rivi 6")
    assert plan.needs[pasted].description == "rivi 1\nrivi 2\nrivi 3\nrivi 4\nrivi 5\nrivi 6"
    with refused(plan, InvalidValue, "must not be empty", field="description"):
        record_need(plan, anna, description="\u200b\u202e")


def test_tabs_line_breaks_joiners_and_direction_marks_are_text(plan: ClientPlan, anna: Actor) -> None:
    text = "Kipu\tselässä\nperhe 👨\u200d👩\u200d👧 \u200fשלום\u200e ja \u200cmuuta"
    need_id = record_need(plan, anna, description=text)
    assert plan.needs[need_id].description == text


def test_the_financial_side_of_a_need_is_optional(plan: ClientPlan, anna: Actor) -> None:
    without = record_need(plan, anna)
    with_it = record_need(plan, anna, financial="  Debts of 4000 €  ")

    assert plan.needs[without].financial == ""
    assert plan.needs[with_it].financial == "Debts of 4000 €"


def test_line_breaks_are_kept_as_newlines_whatever_the_browser_sends(plan: ClientPlan, anna: Actor) -> None:
    need_id = record_need(plan, anna, financial="Debts\r\nRent unpaid\rSavings none")
    assert plan.needs[need_id].financial == "Debts\nRent unpaid\nSavings none"


def test_a_text_posted_again_with_the_browsers_line_breaks_is_not_a_change(s: Scene) -> None:
    """A textarea posts CRLF: a field saved with LF (the demo, a command line) and sent back
    unchanged from a browser must not be recorded, and shown in the history, as changed."""
    def update(financial: str, revision: int) -> None:
        do(s.plan, "update_need", s.bert, need_id=s.need_id, seen_revision=revision, category="health",
           description="Back pain", financial=financial, status="being_addressed")

    update("Sickness allowance ends in May\nHousing allowance applied", 1)
    update("Sickness allowance ends in May\r\nHousing allowance applied", 2)

    need = s.plan.needs[s.need_id]
    assert need.financial == "Sickness allowance ends in May\nHousing allowance applied"
    assert "financial" not in need.changes[-1].fields


def test_updating_a_need_from_its_current_revision_bumps_the_revision(s: Scene) -> None:
    do(
        s.plan,
        "update_need",
        s.bert,
        need_id=s.need_id,
        seen_revision=1,
        category="health",
        description="Back pain",
        financial="Sickness allowance ends in May",
        status="being_addressed",
    )

    assert recorded(s.plan) == ["NeedUpdated"]
    need = s.plan.needs[s.need_id]
    assert (need.revision, need.description, need.status) == (2, "Back pain", "being_addressed")
    change = need.changes[-1]
    assert (change.revision, change.by, change.at) == (2, s.bert, NOW)
    assert change.fields == ["description", "status"]


def test_updating_a_need_from_a_stale_revision_lists_who_changed_what(s: Scene) -> None:
    later = NOW + timedelta(hours=2)
    do(
        s.plan,
        "update_need",
        s.bert,
        at=later,
        need_id=s.need_id,
        seen_revision=1,
        category="health",
        description="Back pain",
        financial="",
        status="open",
    )
    s.plan.collect_events()

    with refused(s.plan, EditConflict, "need", "changed by", s.bert.name) as caught:
        do(
            s.plan,
            "update_need",
            s.carla,
            need_id=s.need_id,
            seen_revision=1,
            category="work_and_employment",
            description="Back pain",
            financial="",
            status="open",
        )

    conflict = caught.value
    assert (conflict.item_kind, conflict.item_id) == ("need", s.need_id)
    assert (conflict.seen_revision, conflict.current_revision) == (1, 2)
    (change,) = conflict.changes
    assert change["by_name"] == s.bert.name
    assert change["by_organisation"] == s.bert.organisation_name
    assert change["fields"] == ["description", "financial"]
    assert change["revision"] == 2
    assert change["at"] == later.isoformat()


def test_a_revision_the_item_has_not_reached_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "no revision 5", field="seen_revision"):
        do(
            s.plan,
            "update_need",
            s.bert,
            need_id=s.need_id,
            seen_revision=5,
            category="health",
            description="x",
            financial="",
            status="open",
        )


@pytest.mark.parametrize("revision", [-1, True, "1", 1.0])
def test_a_revision_that_is_not_a_whole_number_is_refused(s: Scene, revision: Any) -> None:
    with refused(s.plan, InvalidValue, "whole number", field="seen_revision"):
        do(
            s.plan,
            "update_need",
            s.bert,
            need_id=s.need_id,
            seen_revision=revision,
            category="health",
            description="x",
            financial="",
            status="open",
        )


@pytest.mark.parametrize("status", [status.value for status in NeedStatus])
def test_a_need_can_take_each_need_status(s: Scene, status: str) -> None:
    do(
        s.plan,
        "update_need",
        s.anna,
        need_id=s.need_id,
        seen_revision=1,
        category="health",
        description="Back pain",
        financial="",
        status=status,
    )
    assert s.plan.needs[s.need_id].status == status


def test_the_need_statuses_are_open_being_addressed_and_resolved() -> None:
    assert [status.value for status in NeedStatus] == ["open", "being_addressed", "resolved"]


def test_an_unknown_need_status_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "open", "being_addressed", "resolved", field="status"):
        do(
            s.plan,
            "update_need",
            s.anna,
            need_id=s.need_id,
            seen_revision=1,
            category="health",
            description="Back pain",
            financial="",
            status="closed",
        )


def test_updating_an_unknown_need_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no need", field="need_id"):
        do(
            s.plan,
            "update_need",
            s.anna,
            need_id="no-such-need",
            seen_revision=1,
            category="health",
            description="x",
            financial="",
            status="open",
        )


# --- goals -----------------------------------------------------------------------------


def test_a_goal_is_linked_to_the_needs_it_serves(s: Scene) -> None:
    second_need = record_need(s.plan, s.anna, category="work_and_employment", description="No work for a year")
    s.plan.collect_events()

    goal_id = do(
        s.plan,
        "set_goal",
        s.anna,
        title="  Work trial  ",
        need_ids=[s.need_id, second_need, s.need_id],
        target_date="2026-09-30",
    )

    assert recorded(s.plan) == ["GoalSet"]
    goal = s.plan.goals[goal_id]
    assert goal.need_ids == [s.need_id, second_need]
    assert (goal.title, goal.target_date, goal.status) == ("Work trial", date(2026, 9, 30), "set")


@pytest.mark.parametrize("need_ids", [[], (), "need-id-as-text", 42])
def test_a_goal_without_a_list_of_needs_is_refused(s: Scene, need_ids: Any) -> None:
    with refused(s.plan, InvalidValue, "need", field="need_ids"):
        do(s.plan, "set_goal", s.anna, title="Work trial", need_ids=need_ids, target_date=TODAY)


def test_a_goal_linked_to_an_unknown_need_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no need", "no-such-need", field="need_ids"):
        do(s.plan, "set_goal", s.anna, title="Work trial", need_ids=[s.need_id, "no-such-need"], target_date=TODAY)


def test_a_goal_targeted_before_the_plan_was_opened_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "before the plan was opened", OPENING_DAY.isoformat(), field="target_date"):
        do(
            s.plan,
            "set_goal",
            s.anna,
            title="Work trial",
            need_ids=[s.need_id],
            target_date=OPENING_DAY - timedelta(days=1),
        )


def test_a_goal_may_be_targeted_on_the_opening_day(s: Scene) -> None:
    goal_id = do(s.plan, "set_goal", s.anna, title="First meeting", need_ids=[s.need_id], target_date=OPENING_DAY)
    assert s.plan.goals[goal_id].target_date == OPENING_DAY


@pytest.mark.parametrize("target", ["30.9.2026", "", None, datetime(2026, 9, 30, tzinfo=UTC)])
def test_a_goal_target_that_is_not_a_date_is_refused(s: Scene, target: Any) -> None:
    with refused(s.plan, InvalidValue, "must be a date", field="target_date"):
        do(s.plan, "set_goal", s.anna, title="Work trial", need_ids=[s.need_id], target_date=target)


def test_a_goal_without_a_title_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "must not be empty", field="title"):
        do(s.plan, "set_goal", s.anna, title="", need_ids=[s.need_id], target_date=TODAY)


def test_revising_a_goal_marks_it_revised(s: Scene) -> None:
    new_target = TODAY + timedelta(days=120)
    do(
        s.plan,
        "revise_goal",
        s.bert,
        goal_id=s.goal_id,
        seen_revision=1,
        title="Back to half-time work",
        need_ids=[s.need_id],
        target_date=new_target,
    )

    assert recorded(s.plan) == ["GoalRevised"]
    goal = s.plan.goals[s.goal_id]
    assert (goal.title, goal.target_date, goal.status, goal.revision) == (
        "Back to half-time work",
        new_target,
        "revised",
        2,
    )


def test_revising_a_goal_from_a_stale_revision_is_an_edit_conflict(s: Scene) -> None:
    do(
        s.plan,
        "revise_goal",
        s.bert,
        goal_id=s.goal_id,
        seen_revision=1,
        title="Half-time",
        need_ids=[s.need_id],
        target_date=TODAY,
    )
    s.plan.collect_events()

    with refused(s.plan, EditConflict, s.bert.name):
        do(
            s.plan,
            "revise_goal",
            s.carla,
            goal_id=s.goal_id,
            seen_revision=1,
            title="Full-time",
            need_ids=[s.need_id],
            target_date=TODAY,
        )


def test_revising_a_goal_to_a_target_before_the_opening_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "before the plan was opened", field="target_date"):
        do(
            s.plan,
            "revise_goal",
            s.anna,
            goal_id=s.goal_id,
            seen_revision=1,
            title="x",
            need_ids=[s.need_id],
            target_date=OPENING_DAY - timedelta(days=1),
        )


@pytest.mark.parametrize("status", ["achieved", "dropped"])
def test_a_goal_is_settled_as_achieved_or_dropped(s: Scene, status: str) -> None:
    do(s.plan, "settle_goal", s.anna, goal_id=s.goal_id, seen_revision=1, status=status, note="  Client decided  ")

    assert recorded(s.plan) == ["GoalSettled"]
    goal = s.plan.goals[s.goal_id]
    assert (goal.status, goal.settled_on, goal.settled_note) == (status, TODAY, "Client decided")


@pytest.mark.parametrize("status", ["set", "revised"])
def test_a_goal_cannot_be_settled_as_set_or_revised(s: Scene, status: str) -> None:
    with refused(s.plan, InvalidValue, "achieved or dropped", field="status"):
        do(s.plan, "settle_goal", s.anna, goal_id=s.goal_id, seen_revision=1, status=status)


def test_a_goal_cannot_be_settled_with_an_unknown_status(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "choose one of", field="status"):
        do(s.plan, "settle_goal", s.anna, goal_id=s.goal_id, seen_revision=1, status="half-done")


@pytest.mark.parametrize("settled_as", ["achieved", "dropped"])
@pytest.mark.parametrize("then", ["revise_goal", "settle_goal"])
def test_a_settled_goal_can_be_neither_revised_nor_settled_again(s: Scene, settled_as: str, then: str) -> None:
    do(s.plan, "settle_goal", s.anna, goal_id=s.goal_id, seen_revision=1, status=settled_as)
    s.plan.collect_events()
    fields: dict[str, Any] = (
        {"title": "Again", "need_ids": [s.need_id], "target_date": TODAY}
        if then == "revise_goal"
        else {"status": "achieved"}
    )

    with refused(s.plan, RuleViolation, f"is {settled_as} already", "new goal"):
        do(s.plan, then, s.anna, goal_id=s.goal_id, seen_revision=2, **fields)


def test_the_goal_statuses_are_set_achieved_revised_dropped() -> None:
    assert {status.value for status in GoalStatus} == {"set", "achieved", "revised", "dropped"}


# --- consent ---------------------------------------------------------------------------


def test_a_member_of_an_organisation_without_consent_is_refused(plan: ClientPlan, anna: Actor, carla: Actor) -> None:
    with refused(plan, RuleViolation, "valid consent", carla.organisation_name, field="organisation_id"):
        add_to_network(plan, anna, carla)


def test_a_member_of_an_organisation_with_consent_is_added(plan: ClientPlan, anna: Actor, carla: Actor) -> None:
    give_consent_for(plan, anna, carla)
    assert recorded(plan) == ["ConsentGiven"]

    member_id = add_to_network(
        plan, anna, carla, profession="employment adviser", contact="carla@te.example", part="work trial"
    )

    assert recorded(plan) == ["MemberAdded"]
    member = plan.members[member_id]
    assert (member.person_id, member.name, member.organisation_id) == (
        carla.person_id,
        carla.name,
        carla.organisation_id,
    )
    assert (member.profession, member.contact, member.part) == ("employment adviser", "carla@te.example", "work trial")


def test_a_consent_from_a_later_day_is_not_valid_yet(plan: ClientPlan, anna: Actor, carla: Actor) -> None:
    next_week = TODAY + timedelta(days=7)
    give_consent_for(plan, anna, carla, valid_from=next_week)
    plan.collect_events()

    with refused(plan, RuleViolation, "valid consent", field="organisation_id"):
        add_to_network(plan, anna, carla)

    add_to_network(plan, anna, carla, at=NOW + timedelta(days=7))
    assert recorded(plan) == ["MemberAdded"]


def test_a_consent_is_given_from_a_day_given_as_iso_text(plan: ClientPlan, anna: Actor, carla: Actor) -> None:
    consent_id = do(
        plan,
        "give_consent",
        anna,
        organisation_id=carla.organisation_id,
        organisation_name=carla.organisation_name,
        valid_from="2026-03-10",
    )
    assert plan.consents[consent_id].valid_from == date(2026, 3, 10)


def test_a_consent_from_no_date_is_refused(plan: ClientPlan, anna: Actor, carla: Actor) -> None:
    with refused(plan, InvalidValue, "date", field="valid_from"):
        do(
            plan,
            "give_consent",
            anna,
            organisation_id=carla.organisation_id,
            organisation_name=carla.organisation_name,
            valid_from="next week",
        )


@pytest.mark.parametrize("existing_from", [OPENING_DAY, TODAY + timedelta(days=30)])
def test_a_second_active_consent_for_the_same_organisation_is_refused(
    plan: ClientPlan, anna: Actor, carla: Actor, existing_from: date
) -> None:
    give_consent_for(plan, anna, carla, valid_from=existing_from)
    plan.collect_events()

    with refused(plan, RuleViolation, "already recorded", carla.organisation_name, field="organisation_id"):
        give_consent_for(plan, anna, carla)


def test_the_consent_for_the_experts_organisation_is_already_recorded_at_opening(plan: ClientPlan, anna: Actor) -> None:
    with refused(plan, RuleViolation, "already recorded", field="organisation_id"):
        give_consent_for(plan, anna, anna)


def test_a_consent_can_be_given_again_after_it_was_withdrawn(s: Scene) -> None:
    do(s.plan, "withdraw_consent", s.anna, consent_id=s.te_consent, seen_revision=1)
    s.plan.collect_events()

    give_consent_for(s.plan, s.anna, s.carla, valid_from=TODAY)
    add_to_network(s.plan, s.anna, s.carla)

    assert recorded(s.plan) == ["ConsentGiven", "MemberAdded"]


def test_withdrawing_a_consent_takes_the_organisations_people_out_of_the_network(s: Scene, bert: Actor) -> None:
    berit = Actor(
        person_id="p-berit",
        name="Berit Nieminen",
        organisation_id=bert.organisation_id,
        organisation_name=bert.organisation_name,
    )
    berit_id = add_to_network(s.plan, s.anna, berit)
    s.plan.collect_events()

    do(s.plan, "withdraw_consent", s.anna, consent_id=s.kela_consent, seen_revision=1)

    assert recorded(s.plan) == ["ConsentWithdrawn"]
    assert s.bert_id not in s.plan.members
    assert berit_id not in s.plan.members
    assert {s.anna_id, s.aino_id, s.carla_id} <= set(s.plan.members)
    consent = s.plan.consents[s.kela_consent]
    assert consent.withdrawn_on == TODAY
    assert s.plan.valid_consent_for(s.bert.organisation_id, TODAY) is None


def test_withdrawing_a_consent_unassigns_the_open_steps_of_the_organisations_people(s: Scene) -> None:
    open_step = plan_step(s.plan, s.anna, s.need_id, s.carla_id, title="Work trial")
    started_step = plan_step(s.plan, s.anna, s.need_id, s.carla_id, title="Job search")
    progress(s.plan, s.carla, started_step, "started")
    s.plan.collect_events()

    do(s.plan, "withdraw_consent", s.anna, consent_id=s.te_consent, seen_revision=1)

    assert s.plan.steps[open_step].responsible_member_id is None
    assert s.plan.steps[started_step].responsible_member_id is None
    assert s.plan.steps[open_step].changes[-1].fields == ["responsible_member_id"]
    assert s.plan.steps[s.step_id].responsible_member_id == s.aino_id


def test_withdrawing_the_counterparts_consent_clears_the_counterpart(s: Scene) -> None:
    do(s.plan, "withdraw_consent", s.anna, consent_id=s.kela_consent, seen_revision=1)

    assert s.plan.counterpart is None
    assert s.plan.responsibility.counterpart_id is None
    assert s.plan.expert.id == s.anna_id


def test_withdrawing_a_consent_withdraws_a_pending_handover_involving_its_people(s: Scene) -> None:
    handover_id = s.propose()

    do(s.plan, "withdraw_consent", s.carla, consent_id=s.kela_consent, seen_revision=1)

    handover = s.plan.handover(handover_id)
    assert handover.status == HandoverStatus.WITHDRAWN
    assert handover.decided_by == s.carla
    assert s.plan.pending_handover is None


def test_withdrawing_the_consent_of_the_experts_organisation_is_refused(s: Scene) -> None:
    with refused(s.plan, RuleViolation, "named expert", s.anna.organisation_name, field="consent_id"):
        do(s.plan, "withdraw_consent", s.anna, consent_id=s.health_centre_consent, seen_revision=0)


def test_withdrawing_a_consent_twice_is_refused(s: Scene) -> None:
    do(s.plan, "withdraw_consent", s.anna, consent_id=s.te_consent, seen_revision=1)
    s.plan.collect_events()

    with refused(s.plan, RuleViolation, "already been withdrawn", field="consent_id"):
        do(s.plan, "withdraw_consent", s.anna, consent_id=s.te_consent, seen_revision=2)


def test_withdrawing_an_unknown_consent_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no consent", field="consent_id"):
        do(s.plan, "withdraw_consent", s.anna, consent_id="no-such-consent", seen_revision=1)


# --- network ---------------------------------------------------------------------------


def test_the_same_person_cannot_join_the_network_twice(s: Scene) -> None:
    with refused(s.plan, RuleViolation, s.carla.name, "already in the network", field="person_id"):
        add_to_network(s.plan, s.anna, s.carla, profession="another role")


def test_the_expert_cannot_join_the_network_a_second_time(s: Scene) -> None:
    with refused(s.plan, RuleViolation, "already in the network", field="person_id"):
        add_to_network(s.plan, s.anna, s.anna)


def test_a_member_without_a_profession_is_refused(plan: ClientPlan, anna: Actor, aino: Actor) -> None:
    with refused(plan, InvalidValue, "must not be empty", field="profession"):
        add_to_network(plan, anna, aino, profession="")


def test_removing_a_member_takes_them_out_of_the_network(s: Scene) -> None:
    do(s.plan, "remove_member", s.anna, member_id=s.carla_id, seen_revision=1)

    assert recorded(s.plan) == ["MemberRemoved"]
    assert s.carla_id not in s.plan.members
    assert s.plan.member_of_person(s.carla.person_id) is None


def test_removing_the_named_expert_is_refused(s: Scene) -> None:
    with refused(s.plan, RuleViolation, s.anna.name, "named expert or the counterpart", field="member_id"):
        do(s.plan, "remove_member", s.bert, member_id=s.anna_id, seen_revision=0)


def test_removing_the_counterpart_is_refused(s: Scene) -> None:
    with refused(s.plan, RuleViolation, s.bert.name, "counterpart", field="member_id"):
        do(s.plan, "remove_member", s.anna, member_id=s.bert_id, seen_revision=1)


def test_removing_a_member_responsible_for_open_steps_is_refused_naming_the_steps(s: Scene) -> None:
    plan_step(s.plan, s.anna, s.need_id, s.aino_id, title="Ergonomics visit")
    s.plan.collect_events()

    with refused(s.plan, RuleViolation, s.aino.name, "Physiotherapy assessment", "Ergonomics visit", field="member_id"):
        do(s.plan, "remove_member", s.anna, member_id=s.aino_id, seen_revision=1)


def test_a_member_whose_steps_are_all_finished_can_be_removed(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "done")
    s.plan.collect_events()

    do(s.plan, "remove_member", s.anna, member_id=s.aino_id, seen_revision=1)

    assert recorded(s.plan) == ["MemberRemoved"]


def test_removing_a_member_from_a_stale_revision_is_an_edit_conflict(s: Scene) -> None:
    do(
        s.plan,
        "update_member",
        s.carla,
        member_id=s.carla_id,
        seen_revision=1,
        profession="employment adviser",
        contact="040 123",
        part="",
    )
    s.plan.collect_events()

    with refused(s.plan, EditConflict, s.carla.name):
        do(s.plan, "remove_member", s.anna, member_id=s.carla_id, seen_revision=1)


def test_updating_a_member_changes_profession_contact_and_part(s: Scene) -> None:
    do(
        s.plan,
        "update_member",
        s.carla,
        member_id=s.carla_id,
        seen_revision=1,
        profession="senior adviser",
        contact="040 123 4567",
        part="Finds the work trial place",
    )

    assert recorded(s.plan) == ["MemberUpdated"]
    member = s.plan.members[s.carla_id]
    assert (member.profession, member.contact, member.part, member.revision) == (
        "senior adviser",
        "040 123 4567",
        "Finds the work trial place",
        2,
    )
    assert member.changes[-1].fields == ["profession", "contact", "part"]


def test_updating_a_member_from_a_stale_revision_is_an_edit_conflict(s: Scene) -> None:
    do(
        s.plan,
        "update_member",
        s.carla,
        member_id=s.carla_id,
        seen_revision=1,
        profession="senior adviser",
        contact="",
        part="",
    )
    s.plan.collect_events()

    with refused(s.plan, EditConflict, s.carla.name) as caught:
        do(
            s.plan,
            "update_member",
            s.anna,
            member_id=s.carla_id,
            seen_revision=1,
            profession="adviser",
            contact="",
            part="",
        )
    assert caught.value.changes[0]["fields"] == ["profession"]


def test_updating_an_unknown_member_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no network member"):
        do(s.plan, "update_member", s.anna, member_id="nobody", seen_revision=1, profession="x", contact="", part="")


@pytest.mark.parametrize(
    "command, fields, field",
    [
        pytest.param("update_member", {"seen_revision": 1, "profession": "x", "contact": "", "part": ""}, "member_id"),
        pytest.param("remove_member", {"seen_revision": 1}, "member_id"),
        pytest.param("name_counterpart", {"seen_revision": 1}, "member_id"),
    ],
)
def test_an_unknown_member_is_reported_on_the_input_that_named_it(
    s: Scene, command: str, fields: dict[str, Any], field: str
) -> None:
    with refused(s.plan, NotFound, "no network member", field=field):
        do(s.plan, command, s.anna, member_id="nobody", **fields)


# --- counterpart -----------------------------------------------------------------------


def test_the_named_expert_names_a_counterpart_from_another_organisation(s: Scene) -> None:
    do(s.plan, "name_counterpart", s.anna, member_id=s.carla_id, seen_revision=s.plan.responsibility.revision)

    assert recorded(s.plan) == ["CounterpartNamed"]
    assert s.plan.counterpart.id == s.carla_id
    assert s.plan.expert.id == s.anna_id


def test_the_counterpart_must_be_a_network_member(s: Scene) -> None:
    with refused(s.plan, NotFound, "no network member"):
        do(s.plan, "name_counterpart", s.anna, member_id="nobody", seen_revision=1)


def test_the_expert_cannot_be_their_own_counterpart(s: Scene) -> None:
    with refused(s.plan, RuleViolation, "own counterpart", field="member_id"):
        do(s.plan, "name_counterpart", s.anna, member_id=s.anna_id, seen_revision=1)


def test_the_counterpart_must_be_in_another_organisation(s: Scene) -> None:
    with refused(s.plan, RuleViolation, "another organisation", s.anna.organisation_name, field="member_id"):
        do(s.plan, "name_counterpart", s.anna, member_id=s.aino_id, seen_revision=1)


def test_naming_the_counterpart_again_is_refused_and_records_nothing(s: Scene) -> None:
    """It would record a change that changes nothing, and tell the history it happened."""
    counterpart = s.plan.counterpart
    assert counterpart is not None

    with refused(s.plan, RuleViolation, "counterpart already", counterpart.name, field="member_id"):
        do(s.plan, "name_counterpart", s.anna, member_id=counterpart.id, seen_revision=s.plan.responsibility.revision)


@pytest.mark.parametrize("who", ["bert", "carla", "aino"])
def test_only_the_named_expert_names_the_counterpart(s: Scene, who: str) -> None:
    with refused(s.plan, NotYours, "Only the named expert"):
        do(s.plan, "name_counterpart", getattr(s, who), member_id=s.carla_id, seen_revision=1)


def test_the_counterpart_cannot_change_while_a_handover_is_pending(s: Scene) -> None:
    s.propose()

    with refused(s.plan, RuleViolation, "handover is pending"):
        do(s.plan, "name_counterpart", s.anna, member_id=s.carla_id, seen_revision=1)


def test_naming_the_counterpart_from_a_stale_revision_is_an_edit_conflict(s: Scene) -> None:
    with refused(s.plan, EditConflict, s.anna.name):
        do(s.plan, "name_counterpart", s.anna, member_id=s.carla_id, seen_revision=0)


# --- handover --------------------------------------------------------------------------


def test_the_named_expert_proposes_a_handover_to_the_counterpart(s: Scene) -> None:
    handover_id = do(s.plan, "propose_handover", s.anna, note="Kela leads from now on")

    assert recorded(s.plan) == ["HandoverProposed"]
    handover = s.plan.pending_handover
    assert handover.id == handover_id
    assert (handover.from_member_id, handover.to_member_id) == (s.anna_id, s.bert_id)
    assert (handover.status, handover.note, handover.proposed_by, handover.proposed_at) == (
        "proposed",
        "Kela leads from now on",
        s.anna,
        NOW,
    )


@pytest.mark.parametrize("who", ["bert", "carla", "aino"])
def test_only_the_named_expert_proposes_a_handover(s: Scene, who: str) -> None:
    with refused(s.plan, NotYours, "Only the named expert"):
        do(s.plan, "propose_handover", getattr(s, who))


def test_a_handover_needs_a_counterpart(plan: ClientPlan, anna: Actor) -> None:
    with refused(plan, RuleViolation, "Name a counterpart"):
        do(plan, "propose_handover", anna)


def test_only_one_handover_is_pending_at_a_time(s: Scene) -> None:
    s.propose()

    with refused(s.plan, RuleViolation, "already pending"):
        do(s.plan, "propose_handover", s.anna)


def test_accepting_a_handover_swaps_the_expert_and_the_counterpart(s: Scene) -> None:
    handover_id = s.propose()

    do(s.plan, "accept_handover", s.bert, handover_id=handover_id, note="Glad to")

    assert recorded(s.plan) == ["HandoverDecided"]
    assert s.plan.expert.id == s.bert_id
    assert s.plan.counterpart.id == s.anna_id
    assert {s.anna_id, s.bert_id} <= set(s.plan.members)
    handover = s.plan.handover(handover_id)
    assert (handover.status, handover.decided_by, handover.decided_at, handover.decision_note) == (
        "accepted",
        s.bert,
        NOW,
        "Glad to",
    )
    assert s.plan.pending_handover is None


def test_after_a_handover_the_new_expert_leads_and_can_hand_back(s: Scene) -> None:
    do(s.plan, "accept_handover", s.bert, handover_id=s.propose())
    s.plan.collect_events()

    with refused(s.plan, NotYours, "Only the named expert"):
        do(s.plan, "propose_handover", s.anna)
    back = do(s.plan, "propose_handover", s.bert)
    do(s.plan, "accept_handover", s.anna, handover_id=back)

    assert s.plan.expert.id == s.anna_id
    assert s.plan.counterpart.id == s.bert_id


def test_the_named_experts_part_goes_with_the_responsibility(s: Scene) -> None:
    """The opening gave Anna the part "named expert"; Bert, who had none, takes it over."""
    anna, bert = s.plan.members[s.anna_id], s.plan.members[s.bert_id]
    assert (anna.part, bert.part) == (EXPERT_PART, "")
    revisions = (anna.revision, bert.revision)

    do(s.plan, "accept_handover", s.bert, handover_id=s.propose())

    assert recorded(s.plan) == ["HandoverDecided"]
    anna, bert = s.plan.members[s.anna_id], s.plan.members[s.bert_id]
    assert (anna.part, bert.part) == ("", EXPERT_PART)
    # Counted as a change of both: a member's form opened before the handover is a conflict.
    assert (anna.revision, bert.revision) == (revisions[0] + 1, revisions[1] + 1)
    assert anna.changes[-1].fields == bert.changes[-1].fields == ["part"]
    with refused(s.plan, EditConflict, field=None):
        do(s.plan, "update_member", s.anna, member_id=s.anna_id, seen_revision=revisions[0],
           profession=anna.profession, contact="040 123", part=EXPERT_PART)

    do(s.plan, "accept_handover", s.anna, handover_id=do(s.plan, "propose_handover", s.bert))

    assert (s.plan.members[s.anna_id].part, s.plan.members[s.bert_id].part) == (EXPERT_PART, "")


def test_a_part_someone_wrote_stays_through_a_handover(s: Scene) -> None:
    bert = s.plan.members[s.bert_id]
    do(s.plan, "update_member", s.bert, member_id=s.bert_id, seen_revision=bert.revision,
       profession=bert.profession, contact="", part="Kela benefits and rehabilitation")
    s.plan.collect_events()
    bert_revision = s.plan.members[s.bert_id].revision

    do(s.plan, "accept_handover", s.bert, handover_id=s.propose())

    assert s.plan.members[s.anna_id].part == ""
    assert s.plan.members[s.bert_id].part == "Kela benefits and rehabilitation"
    assert s.plan.members[s.bert_id].revision == bert_revision


def test_the_parts_after_a_handover_follow_from_the_events(anna: Actor, bert: Actor) -> None:
    """Replaying the events (as the read side does) gives the same parts."""
    plan = open_plan(anna)
    give_consent_for(plan, anna, bert)
    bert_id = add_to_network(plan, anna, bert)
    do(plan, "name_counterpart", anna, member_id=bert_id, seen_revision=plan.responsibility.revision)
    do(plan, "accept_handover", bert, handover_id=do(plan, "propose_handover", anna))

    record = PlanRecord.replay(plan.collect_events())

    assert {m.id: m.part for m in record.members.values()} == {plan.expert.id: EXPERT_PART, plan.counterpart.id: ""}
    assert plan.expert.id == bert_id


def test_a_handover_recorded_before_the_rule_passes_no_part(anna: Actor, bert: Actor) -> None:
    """A version 1 `HandoverDecided` (upcast with ``passes_part=False``) folds as it did when
    snapshots and read models were made from it: the roles swap, the parts and revisions stay."""
    plan = open_plan(anna)
    give_consent_for(plan, anna, bert)
    bert_id = add_to_network(plan, anna, bert)
    do(plan, "name_counterpart", anna, member_id=bert_id, seen_revision=plan.responsibility.revision)
    do(plan, "accept_handover", bert, handover_id=do(plan, "propose_handover", anna))
    events = plan.collect_events()
    before = PlanRecord.replay(events[:-1])
    old_decision = dataclasses.replace(events[-1], passes_part=False)

    record = PlanRecord.replay([*events[:-1], old_decision])

    assert record.expert.id == bert_id
    assert {m.id: (m.part, m.revision) for m in record.members.values()} == {
        m.id: (m.part, m.revision) for m in before.members.values()}


def test_declining_a_handover_keeps_the_roles(s: Scene) -> None:
    handover_id = s.propose()

    do(s.plan, "decline_handover", s.bert, handover_id=handover_id, note="Not now")

    assert recorded(s.plan) == ["HandoverDecided"]
    assert s.plan.expert.id == s.anna_id
    assert s.plan.counterpart.id == s.bert_id
    assert s.plan.handover(handover_id).status == "declined"
    assert s.plan.pending_handover is None


def test_a_new_handover_can_be_proposed_after_one_was_declined(s: Scene) -> None:
    do(s.plan, "decline_handover", s.bert, handover_id=s.propose())
    s.plan.collect_events()

    do(s.plan, "propose_handover", s.anna)

    assert recorded(s.plan) == ["HandoverProposed"]


@pytest.mark.parametrize("decision", ["accept_handover", "decline_handover"])
@pytest.mark.parametrize("who", ["anna", "carla", "aino"])
def test_only_the_counterpart_accepts_or_declines_a_handover(s: Scene, decision: str, who: str) -> None:
    handover_id = s.propose()

    with refused(s.plan, NotYours, "not proposed to you"):
        do(s.plan, decision, getattr(s, who), handover_id=handover_id)


def test_the_proposer_can_withdraw_a_handover(s: Scene) -> None:
    handover_id = s.propose()

    do(s.plan, "withdraw_handover", s.anna, handover_id=handover_id, note="Back from leave early")

    assert recorded(s.plan) == ["HandoverDecided"]
    assert s.plan.handover(handover_id).status == "withdrawn"
    assert s.plan.expert.id == s.anna_id


@pytest.mark.parametrize("who", ["bert", "carla"])
def test_only_the_proposer_can_withdraw_a_handover(s: Scene, who: str) -> None:
    handover_id = s.propose()

    with refused(s.plan, NotYours, "Only the expert who proposed"):
        do(s.plan, "withdraw_handover", getattr(s, who), handover_id=handover_id)


@pytest.mark.parametrize("first", ["accept_handover", "decline_handover", "withdraw_handover"])
@pytest.mark.parametrize("then", ["accept_handover", "decline_handover", "withdraw_handover"])
def test_a_decided_handover_cannot_be_decided_again(s: Scene, first: str, then: str) -> None:
    handover_id = s.propose()
    decider = {"accept_handover": s.bert, "decline_handover": s.bert, "withdraw_handover": s.anna}
    do(s.plan, first, decider[first], handover_id=handover_id)
    s.plan.collect_events()
    status = {"accept_handover": "accepted", "decline_handover": "declined", "withdraw_handover": "withdrawn"}[first]

    with refused(s.plan, RuleViolation, f"was {status} already"):
        do(s.plan, then, decider[then], handover_id=handover_id)


def test_deciding_an_unknown_handover_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no handover", field="handover_id"):
        do(s.plan, "accept_handover", s.bert, handover_id="no-such-handover")


def test_the_handover_statuses_are_proposed_accepted_declined_withdrawn() -> None:
    assert {status.value for status in HandoverStatus} == {"proposed", "accepted", "declined", "withdrawn"}


# --- steps -----------------------------------------------------------------------------


def test_a_step_is_planned_for_a_need_with_a_responsible_member(s: Scene) -> None:
    step_id = do(
        s.plan,
        "plan_step",
        s.carla,
        title=" Work trial ",
        need_id=s.need_id,
        responsible_member_id=s.carla_id,
        planned_start="2026-04-01",
        planned_end="2026-04-01",
        service="Work trial at a café",
    )

    assert recorded(s.plan) == ["StepPlanned"]
    step = s.plan.steps[step_id]
    assert (step.title, step.need_id, step.responsible_member_id, step.service) == (
        "Work trial",
        s.need_id,
        s.carla_id,
        "Work trial at a café",
    )
    assert (step.planned_start, step.planned_end, step.status) == (date(2026, 4, 1), date(2026, 4, 1), "planned")


def test_a_step_for_an_unknown_need_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no need", field="need_id"):
        plan_step(s.plan, s.anna, "no-such-need", s.carla_id)


def test_a_step_for_an_unknown_member_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no network member", "nobody"):
        plan_step(s.plan, s.anna, s.need_id, "nobody")


def test_a_step_for_an_unknown_member_is_reported_on_the_responsible_member_field(s: Scene) -> None:
    with refused(s.plan, NotFound, field="responsible_member_id"):
        plan_step(s.plan, s.anna, s.need_id, "nobody")


def test_a_step_ending_before_it_starts_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "end date cannot be before the start date", field="planned_end"):
        plan_step(s.plan, s.anna, s.need_id, s.carla_id, start=TODAY, end=TODAY - timedelta(days=1))


def test_a_step_planned_to_end_before_the_plan_was_opened_is_refused(s: Scene) -> None:
    """Like a goal before the opening: 1.1.–1.2.2019 on a plan opened in 2026 is no part of it."""
    with refused(s.plan, InvalidValue, "cannot be before the plan was opened", OPENING_DAY.isoformat(),
                 field="planned_end") as caught:
        plan_step(s.plan, s.anna, s.need_id, s.carla_id, start=date(2019, 1, 1), end=date(2019, 2, 1))
    assert caught.value.params["opened"] == OPENING_DAY.isoformat()
    with refused(s.plan, InvalidValue, "before the plan was opened", field="planned_end"):
        plan_step(s.plan, s.anna, s.need_id, s.carla_id, start=OPENING_DAY - timedelta(days=9),
                  end=OPENING_DAY - timedelta(days=1))


def test_a_step_already_going_on_when_the_plan_was_opened_is_planned(s: Scene) -> None:
    """A service begun before the client came (a rehabilitation period) belongs on the path."""
    step_id = plan_step(s.plan, s.anna, s.need_id, s.aino_id, start=OPENING_DAY - timedelta(days=30), end=OPENING_DAY)
    progress(s.plan, s.aino, step_id, "started", on=OPENING_DAY - timedelta(days=30))

    assert recorded(s.plan) == ["StepPlanned", "StepProgressed"]
    assert s.plan.steps[step_id].started_on == OPENING_DAY - timedelta(days=30)


def test_a_step_cannot_be_rescheduled_to_end_before_the_plan_was_opened(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "before the plan was opened", field="planned_end"):
        do(s.plan, "reschedule_step", s.aino, step_id=s.step_id, seen_revision=1,
           planned_start=date(2019, 1, 1), planned_end=date(2019, 2, 1))


@pytest.mark.parametrize("missing", ["", "  ", None])
def test_a_step_without_a_chosen_need_or_responsible_is_asked_for_them(s: Scene, missing: str | None) -> None:
    with refused(s.plan, InvalidValue, "Need_id: choose one.", field="need_id"):
        plan_step(s.plan, s.anna, missing, s.carla_id)
    with refused(s.plan, InvalidValue, "choose one.", field="responsible_member_id"):
        plan_step(s.plan, s.anna, s.need_id, missing)


def test_a_step_without_a_title_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "must not be empty", field="title"):
        plan_step(s.plan, s.anna, s.need_id, s.carla_id, title="  ")


def test_updating_a_step_changes_its_need_service_and_responsible(s: Scene) -> None:
    second_need = record_need(s.plan, s.anna, category="everyday_life", description="Sleep rhythm")
    s.plan.collect_events()

    do(
        s.plan,
        "update_step",
        s.aino,
        step_id=s.step_id,
        seen_revision=1,
        title="Physiotherapy",
        need_id=second_need,
        responsible_member_id=s.carla_id,
        service="Group",
    )

    assert recorded(s.plan) == ["StepUpdated"]
    step = s.plan.steps[s.step_id]
    assert (step.title, step.need_id, step.responsible_member_id, step.service, step.revision) == (
        "Physiotherapy",
        second_need,
        s.carla_id,
        "Group",
        2,
    )


def test_updating_a_step_to_an_unknown_need_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no need", field="need_id"):
        do(
            s.plan,
            "update_step",
            s.aino,
            step_id=s.step_id,
            seen_revision=1,
            title="x",
            need_id="no-such-need",
            responsible_member_id=s.carla_id,
        )


def test_updating_a_step_to_an_unknown_member_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no network member"):
        do(
            s.plan,
            "update_step",
            s.aino,
            step_id=s.step_id,
            seen_revision=1,
            title="x",
            need_id=s.need_id,
            responsible_member_id="nobody",
        )


@pytest.mark.parametrize(
    "path",
    [["started", "done"], ["done"], ["cancelled"], ["started", "cancelled"]],
    ids=["planned-started-done", "planned-done", "planned-cancelled", "planned-started-cancelled"],
)
def test_a_step_moves_forward_through_its_statuses(s: Scene, path: list[str]) -> None:
    for status in path:
        progress(s.plan, s.aino, s.step_id, status)

    assert recorded(s.plan) == ["StepProgressed"] * len(path)
    assert s.plan.steps[s.step_id].status == path[-1]


@pytest.mark.parametrize(
    "path, then",
    [([], "planned"), (["started"], "started"), (["started"], "planned")],
    ids=["planned-planned", "started-started", "started-planned"],
)
def test_a_step_cannot_go_back_or_repeat_its_status(s: Scene, path: list[str], then: str) -> None:
    for status in path:
        progress(s.plan, s.aino, s.step_id, status)
    s.plan.collect_events()
    current = s.plan.steps[s.step_id].status

    with refused(s.plan, RuleViolation, f"A {current} step cannot become {then}", field="status"):
        progress(s.plan, s.aino, s.step_id, then)


@pytest.mark.parametrize("final", ["done", "cancelled"])
@pytest.mark.parametrize("then", ["started", "done", "cancelled", "planned"])
def test_a_done_or_cancelled_step_is_final(s: Scene, final: str, then: str) -> None:
    progress(s.plan, s.aino, s.step_id, final)
    s.plan.collect_events()

    with refused(s.plan, RuleViolation, f"is {final}", "can no longer be changed"):
        progress(s.plan, s.aino, s.step_id, then)


@pytest.mark.parametrize("final", ["done", "cancelled"])
def test_a_finished_step_can_be_neither_updated_nor_rescheduled(s: Scene, final: str) -> None:
    progress(s.plan, s.aino, s.step_id, final)
    s.plan.collect_events()

    with refused(s.plan, RuleViolation, "can no longer be changed"):
        do(
            s.plan,
            "update_step",
            s.aino,
            step_id=s.step_id,
            seen_revision=2,
            title="x",
            need_id=s.need_id,
            responsible_member_id=s.aino_id,
        )
    with refused(s.plan, RuleViolation, "can no longer be changed"):
        do(
            s.plan,
            "reschedule_step",
            s.aino,
            step_id=s.step_id,
            seen_revision=2,
            planned_start=TODAY,
            planned_end=TODAY,
        )


def test_starting_then_finishing_a_step_records_both_days(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "started", on=TODAY - timedelta(days=3))
    progress(s.plan, s.aino, s.step_id, "done", on=TODAY)

    step = s.plan.steps[s.step_id]
    assert (step.started_on, step.finished_on) == (TODAY - timedelta(days=3), TODAY)


def test_a_step_done_straight_from_planned_starts_and_ends_on_the_same_day(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "done", on=TODAY - timedelta(days=1))

    step = s.plan.steps[s.step_id]
    assert (step.status, step.started_on, step.finished_on) == (
        "done",
        TODAY - timedelta(days=1),
        TODAY - timedelta(days=1),
    )


def test_a_cancelled_planned_step_never_started(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "cancelled")

    step = s.plan.steps[s.step_id]
    assert (step.status, step.started_on, step.finished_on) == ("cancelled", None, TODAY)


def test_progress_on_a_day_in_the_future_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "cannot be in the future", field="on"):
        progress(s.plan, s.aino, s.step_id, "started", on=TOMORROW)


@pytest.mark.parametrize("then", ["done", "cancelled"])
def test_a_step_cannot_end_before_it_started(s: Scene, then: str) -> None:
    progress(s.plan, s.aino, s.step_id, "started", on=TODAY - timedelta(days=2))
    s.plan.collect_events()

    with refused(
        s.plan, InvalidValue, "cannot end before it started", (TODAY - timedelta(days=2)).isoformat(), field="on"
    ):
        progress(s.plan, s.aino, s.step_id, then, on=TODAY - timedelta(days=3))


def test_an_unknown_step_status_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "choose one of", field="status"):
        progress(s.plan, s.aino, s.step_id, "paused")


def test_progress_from_a_stale_revision_is_an_edit_conflict(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "started")
    s.plan.collect_events()

    with refused(s.plan, EditConflict, s.aino.name, "step"):
        do(s.plan, "progress_step", s.carla, step_id=s.step_id, seen_revision=1, status="cancelled", on=TODAY)


def test_the_step_statuses_are_planned_started_done_cancelled() -> None:
    assert [status.value for status in StepStatus] == ["planned", "started", "done", "cancelled"]


def test_rescheduling_a_step_keeps_the_earlier_schedules(r: Scene) -> None:
    original = (r.plan.steps[r.step_id].planned_start, r.plan.steps[r.step_id].planned_end)
    later = NOW + timedelta(days=1)
    do(
        r.plan,
        "reschedule_step",
        r.aino,
        step_id=r.step_id,
        seen_revision=1,
        planned_start=TODAY + timedelta(days=7),
        planned_end=TODAY + timedelta(days=21),
        reason="Waiting list",
    )
    do(
        r.plan,
        "reschedule_step",
        r.bert,
        at=later,
        step_id=r.step_id,
        seen_revision=2,
        planned_start=TODAY + timedelta(days=10),
        planned_end=TODAY + timedelta(days=24),
    )

    assert recorded(r.plan) == ["StepRescheduled", "StepRescheduled"]
    step = r.plan.steps[r.step_id]
    assert (step.planned_start, step.planned_end) == (TODAY + timedelta(days=10), TODAY + timedelta(days=24))
    first, second = step.earlier_schedules
    assert (first.start, first.end, first.by, first.changed_at, first.reason) == (
        *original,
        r.aino,
        NOW,
        "Waiting list",
    )
    assert (second.start, second.end, second.by, second.changed_at) == (
        TODAY + timedelta(days=7),
        TODAY + timedelta(days=21),
        r.bert,
        later,
    )


def test_rescheduling_a_step_needs_its_current_revision(s: Scene) -> None:
    do(s.plan, "reschedule_step", s.aino, step_id=s.step_id, seen_revision=1, planned_start=TODAY, planned_end=TODAY)
    s.plan.collect_events()

    with refused(s.plan, EditConflict, s.aino.name) as caught:
        do(
            s.plan,
            "reschedule_step",
            s.bert,
            step_id=s.step_id,
            seen_revision=1,
            planned_start=TODAY,
            planned_end=TOMORROW,
        )
    assert caught.value.changes[0]["fields"] == ["planned_end"]


def test_rescheduling_a_step_to_end_before_it_starts_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "end date", field="planned_end"):
        do(
            s.plan,
            "reschedule_step",
            s.aino,
            step_id=s.step_id,
            seen_revision=1,
            planned_start=TOMORROW,
            planned_end=TODAY,
        )


def test_a_started_step_gets_its_outcome(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "started")
    s.plan.collect_events()

    do(s.plan, "record_step_outcome", s.aino, step_id=s.step_id, seen_revision=2, outcome="  Can sit for 2 hours  ")

    assert recorded(s.plan) == ["StepOutcomeRecorded"]
    step = s.plan.steps[s.step_id]
    assert (step.outcome, step.status, step.revision) == ("Can sit for 2 hours", "started", 3)


def test_finishing_a_step_may_record_its_outcome(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "started")
    do(
        s.plan,
        "progress_step",
        s.aino,
        step_id=s.step_id,
        seen_revision=2,
        status="done",
        on=TODAY,
        outcome="Referred to a work trial",
    )

    assert s.plan.steps[s.step_id].outcome == "Referred to a work trial"


def test_an_empty_step_outcome_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "must not be empty", field="outcome"):
        do(s.plan, "record_step_outcome", s.aino, step_id=s.step_id, seen_revision=1, outcome=" ")


def test_a_step_outcome_from_a_stale_revision_is_an_edit_conflict(s: Scene) -> None:
    progress(s.plan, s.aino, s.step_id, "started")
    s.plan.collect_events()

    with refused(s.plan, EditConflict, s.aino.name):
        do(s.plan, "record_step_outcome", s.bert, step_id=s.step_id, seen_revision=1, outcome="Fine")


def test_an_outcome_for_an_unknown_step_is_refused(s: Scene) -> None:
    with refused(s.plan, NotFound, "no step", field="step_id"):
        do(s.plan, "record_step_outcome", s.aino, step_id="no-such-step", seen_revision=1, outcome="Fine")


# --- measures --------------------------------------------------------------------------

ZERO_TO_TEN_KINDS = ["work_ability_score", "self_assessment"]


@pytest.mark.parametrize("kind", ZERO_TO_TEN_KINDS)
@pytest.mark.parametrize("value", [0, 10, 7, 7.0])
def test_a_zero_to_ten_measure_takes_whole_numbers_from_zero_to_ten(r: Scene, kind: str, value: float) -> None:
    measure_id = do(r.plan, "record_measure", r.anna, kind=kind, value=value, measured_on=TODAY)

    assert recorded(r.plan) == ["MeasureRecorded"]
    (measure,) = r.plan.measures
    assert measure.id == measure_id
    assert (measure.kind, measure.scale_name, measure.scale_min, measure.scale_max) == (kind, kind, 0.0, 10.0)
    assert (measure.value, measure.measured_on, measure.recorded_by) == (float(value), TODAY, r.anna)


@pytest.mark.parametrize("kind", ZERO_TO_TEN_KINDS)
@pytest.mark.parametrize(
    "value, words",
    [
        (11, ["between 0 and 10"]),
        (-1, ["between 0 and 10"]),
        (10.000001, ["whole number"]),
        (7.5, ["whole number"]),
        pytest.param(math.nan, ["finite"]),
        pytest.param(math.inf, ["finite"]),
        pytest.param(True, ["number"]),
        pytest.param("7", ["number"]),
        pytest.param(None, ["number"]),
    ],
    ids=["11", "-1", "10.000001", "7.5", "nan", "inf", "True", "text-7", "None"],
)
def test_a_zero_to_ten_measure_refuses_anything_else(s: Scene, kind: str, value: Any, words: list[str]) -> None:
    with refused(s.plan, InvalidValue, *words, field="value"):
        do(s.plan, "record_measure", s.anna, kind=kind, value=value, measured_on=TODAY)


def test_a_measure_on_another_scale_brings_its_name_and_bounds(r: Scene) -> None:
    do(
        r.plan,
        "record_measure",
        r.carla,
        kind="other",
        value=3.5,
        measured_on="2026-03-10",
        scale_name="  Motivation (1–5) ",
        scale_min=1,
        scale_max=5,
    )

    (measure,) = r.plan.measures
    assert (measure.kind, measure.scale_name, measure.scale_min, measure.scale_max, measure.value) == (
        "other",
        "Motivation (1–5)",
        1.0,
        5.0,
        3.5,
    )
    assert measure.measured_on == date(2026, 3, 10)


def test_a_measure_on_another_scale_needs_the_scales_name(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "must not be empty", field="scale_name"):
        do(s.plan, "record_measure", s.carla, kind="other", value=3, measured_on=TODAY, scale_min=1, scale_max=5)


@pytest.mark.parametrize("bounds, field", [({"scale_max": 5}, "scale_min"), ({"scale_min": 1}, "scale_max")])
def test_a_measure_on_another_scale_needs_both_bounds(s: Scene, bounds: dict[str, float], field: str) -> None:
    with refused(s.plan, InvalidValue, "must be a number", field=field):
        do(
            s.plan,
            "record_measure",
            s.carla,
            kind="other",
            value=3,
            measured_on=TODAY,
            scale_name="Motivation",
            **bounds,
        )


@pytest.mark.parametrize("low, high", [(5, 5), (5, 1)])
def test_the_lower_bound_of_a_scale_must_be_below_its_upper_bound(s: Scene, low: float, high: float) -> None:
    with refused(s.plan, InvalidValue, "upper bound must be above its lower bound", field="scale_max"):
        do(
            s.plan,
            "record_measure",
            s.carla,
            kind="other",
            value=5,
            measured_on=TODAY,
            scale_name="Motivation",
            scale_min=low,
            scale_max=high,
        )


@pytest.mark.parametrize("value", [0.5, 5.5])
def test_a_measure_outside_its_own_scale_is_refused(s: Scene, value: float) -> None:
    with refused(s.plan, InvalidValue, "between 1 and 5", field="value"):
        do(
            s.plan,
            "record_measure",
            s.carla,
            kind="other",
            value=value,
            measured_on=TODAY,
            scale_name="Motivation",
            scale_min=1,
            scale_max=5,
        )


def test_a_measure_dated_in_the_future_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "cannot be in the future", field="measured_on"):
        do(s.plan, "record_measure", s.anna, kind="work_ability_score", value=6, measured_on=TOMORROW)


def test_a_measure_dated_today_or_earlier_is_accepted(r: Scene) -> None:
    do(r.plan, "record_measure", r.anna, kind="work_ability_score", value=6, measured_on=TODAY)
    do(r.plan, "record_measure", r.anna, kind="work_ability_score", value=4, measured_on=OPENING_DAY)

    assert [m.value for m in r.plan.measures] == [6.0, 4.0]


def test_an_unknown_measure_kind_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "self_assessment", "work_ability_score", "other", field="kind"):
        do(s.plan, "record_measure", s.anna, kind="bmi", value=6, measured_on=TODAY)


# --- notes -----------------------------------------------------------------------------


def test_a_note_is_for_the_professionals_by_default(r: Scene) -> None:
    note_id = do(r.plan, "add_note", r.bert, text="  Called the client  ")

    assert recorded(r.plan) == ["NoteAdded"]
    (note,) = r.plan.notes
    assert (note.id, note.text, note.visibility) == (note_id, "Called the client", "professionals")
    assert (note.written_by, note.written_at) == (r.bert, NOW)


def test_a_note_can_be_shared_with_the_client(r: Scene) -> None:
    do(r.plan, "add_note", r.bert, text="See you on Monday", visibility="client_and_professionals")
    assert r.plan.notes[0].visibility == NoteVisibility.CLIENT_AND_PROFESSIONALS


def edit_the_need_often(scene: Scene, times: int) -> None:
    for n in range(times):
        need = scene.plan.needs[scene.need_id]
        do(
            scene.plan,
            "update_need",
            scene.bert,
            need_id=scene.need_id,
            seen_revision=need.revision,
            category=need.category,
            description=f"Back pain, week {n}",
            financial=need.financial,
            status=need.status,
        )


def test_the_plan_keeps_only_what_its_rules_read_and_its_record_keeps_the_rest(s: Scene, r: Scene) -> None:
    for scene in (s, r):
        do(scene.plan, "add_note", scene.bert, text="Called the client")
        do(scene.plan, "record_measure", scene.anna, kind="work_ability_score", value=6, measured_on=TODAY)
        do(
            scene.plan,
            "reschedule_step",
            scene.aino,
            step_id=scene.step_id,
            seen_revision=1,
            planned_start=TODAY + timedelta(days=7),
            planned_end=TODAY + timedelta(days=21),
        )
        edit_the_need_often(scene, KEPT_CHANGES + 5)

    assert not hasattr(s.plan, "notes") and not hasattr(s.plan, "measures")
    assert s.plan.steps[s.step_id].earlier_schedules == []
    assert [len(r.plan.notes), len(r.plan.measures), len(r.plan.steps[r.step_id].earlier_schedules)] == [1, 1, 1]
    lean, whole = s.plan.needs[s.need_id], r.plan.needs[r.need_id]
    assert lean.revision == whole.revision == KEPT_CHANGES + 6
    assert len(lean.changes) == CONFLICT_CHANGES and len(whole.changes) == KEPT_CHANGES
    assert lean.changes == whole.changes[-CONFLICT_CHANGES:]
    assert (lean.description, s.plan.version) == (whole.description, r.plan.version)


def test_a_conflict_tells_the_latest_changes_the_plan_keeps(s: Scene) -> None:
    edit_the_need_often(s, CONFLICT_CHANGES + 2)
    need = s.plan.needs[s.need_id]

    with pytest.raises(EditConflict) as caught:
        do(
            s.plan,
            "update_need",
            s.carla,
            need_id=s.need_id,
            seen_revision=1,
            category=need.category,
            description="Too late",
            financial="",
            status=need.status,
        )

    conflict = caught.value
    assert (conflict.seen_revision, conflict.current_revision) == (1, need.revision)
    assert [change["revision"] for change in conflict.changes] == list(range(need.revision - CONFLICT_CHANGES + 1, need.revision + 1))
    assert {change["by_name"] for change in conflict.changes} == {s.bert.name}


@pytest.mark.parametrize("text", ["", "   ", None])
def test_an_empty_note_is_refused(s: Scene, text: str | None) -> None:
    with refused(s.plan, InvalidValue, "must not be empty", field="text"):
        do(s.plan, "add_note", s.bert, text=text)


def test_a_note_with_an_unknown_visibility_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "professionals", "client_and_professionals", field="visibility"):
        do(s.plan, "add_note", s.bert, text="Hello", visibility="everyone")


# --- closing ---------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", [o.value for o in ClosingOutcome])
def test_a_plan_closes_with_an_outcome(s: Scene, outcome: str) -> None:
    s.settle_steps()
    do(s.plan, "close", s.anna, outcome=outcome, note="  Started at a café  ")

    assert recorded(s.plan) == ["Closed"]
    assert s.plan.is_closed
    closing = s.plan.closing
    assert (closing.outcome, closing.note, closing.closed_on, closing.closed_by) == (
        outcome,
        "Started at a café",
        TODAY,
        s.anna,
    )


@pytest.mark.parametrize("who", ["aino", "carla"])
def test_only_the_named_expert_or_the_counterpart_closes_the_plan(s: Scene, who: str) -> None:
    """Aino shares Anna's organisation, Carla is in the network: neither answers for the plan."""
    s.settle_steps()
    with refused(s.plan, NotYours, "Only the named expert or the counterpart can close the plan."):
        do(s.plan, "close", getattr(s, who), outcome="work")


def test_the_counterpart_can_close_the_plan(s: Scene) -> None:
    s.settle_steps()
    do(s.plan, "close", s.bert, outcome="studies")
    assert recorded(s.plan) == ["Closed"]


@pytest.mark.parametrize("status", ["planned", "started"])
def test_a_plan_with_steps_still_going_on_cannot_be_closed(s: Scene, status: str) -> None:
    if status == "started":
        progress(s.plan, s.aino, s.step_id, "started")
    second = plan_step(s.plan, s.anna, s.need_id, s.carla_id, title="Work trial")
    s.plan.collect_events()

    with refused(s.plan, RuleViolation, "still planned or started", "Physiotherapy assessment, Work trial",
                 "done or cancelled"):
        do(s.plan, "close", s.anna, outcome="work")

    progress(s.plan, s.aino, s.step_id, "done")
    progress(s.plan, s.anna, second, "cancelled")
    do(s.plan, "close", s.anna, outcome="work")
    assert s.plan.is_closed


@pytest.mark.parametrize("who", ["aino", "carla"])
def test_only_the_named_expert_or_the_counterpart_reopens_the_plan(s: Scene, who: str) -> None:
    s.close()
    with refused(s.plan, NotYours, "Only the named expert or the counterpart can reopen the plan."):
        do(s.plan, "reopen", getattr(s, who), reason="New need")


def test_closing_with_an_unknown_outcome_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "work", "disability_pension", "continuation_kela", field="outcome"):
        do(s.plan, "close", s.anna, outcome="moved away")


def test_closing_with_a_pending_handover_is_refused(s: Scene) -> None:
    s.propose()

    with refused(s.plan, RuleViolation, "handover is pending", "before the plan is closed"):
        do(s.plan, "close", s.anna, outcome="work")


def test_reopening_an_open_plan_is_refused(s: Scene) -> None:
    with refused(s.plan, RuleViolation, "open already"):
        do(s.plan, "reopen", s.anna, reason="New need")


def test_reopening_needs_a_reason(s: Scene) -> None:
    s.close()

    with refused(s.plan, InvalidValue, "must not be empty", field="reason"):
        do(s.plan, "reopen", s.anna, reason="")


def test_a_reopened_plan_can_be_edited_again(s: Scene) -> None:
    s.settle_steps()
    do(s.plan, "close", s.anna, outcome="work")
    do(s.plan, "reopen", s.bert, reason="The work trial ended early")

    need_id = record_need(s.plan, s.bert, category="work_and_employment", description="Find a new trial")

    assert recorded(s.plan) == ["Closed", "Reopened", "NeedRecorded"]
    assert not s.plan.is_closed
    assert s.plan.closing is None
    assert need_id in s.plan.needs


# --- every command -----------------------------------------------------------------------
#
# One valid use of every command on the Scene's plan, as (who, fields). The tests below
# check that each is accepted as given, so that refusing it (closed plan, no actor, no
# command id) can only be for the reason under test.

Command = Callable[[Scene], tuple[Actor, dict[str, Any]]]

CLIENT = Actor(person_id="client-maija", name="Maija Mäkinen", organisation_id="", organisation_name="")
"""The client herself: a person of no organisation."""

COMMANDS: dict[str, Command] = {
    "change_client_details": lambda s: (
        s.anna,
        {
            "seen_revision": s.plan.client.revision,
            "client_name": "Maija Mäkinen",
            "segment": "employed",
            "language": "sv",
            "referring_party": "kela",
        },
    ),
    "record_client_contact": lambda s: (
        s.anna,
        {"seen_revision": s.plan.client.revision, "contact": "040 123 4567, Hämeenkatu 1, Tampere"},
    ),
    "set_non_disclosure": lambda s: (s.anna, {"seen_revision": s.plan.client.revision, "active": True}),
    "record_client_view_on_goal": lambda s: (
        CLIENT,
        {"goal_id": s.goal_id, "seen_revision": s.plan.goals[s.goal_id].revision, "stance": "agrees"},
    ),
    "give_consent": lambda s: (
        s.anna,
        {"organisation_id": "org-social", "organisation_name": "Oulu Social Services", "valid_from": TODAY},
    ),
    "withdraw_consent": lambda s: (s.anna, {"consent_id": s.te_consent, "seen_revision": 1}),
    "record_need": lambda s: (s.bert, {"category": "everyday_life", "description": "Debts are piling up"}),
    "update_need": lambda s: (
        s.bert,
        {
            "need_id": s.need_id,
            "seen_revision": 1,
            "category": "health",
            "description": "Back pain",
            "financial": "",
            "status": "being_addressed",
        },
    ),
    "set_goal": lambda s: (
        s.anna,
        {"title": "Finish the work trial", "need_ids": [s.need_id], "target_date": TODAY + timedelta(days=60)},
    ),
    "revise_goal": lambda s: (
        s.anna,
        {
            "goal_id": s.goal_id,
            "seen_revision": 1,
            "title": "Half-time work",
            "need_ids": [s.need_id],
            "target_date": TODAY + timedelta(days=120),
        },
    ),
    "settle_goal": lambda s: (s.anna, {"goal_id": s.goal_id, "seen_revision": 1, "status": "achieved"}),
    "add_member": lambda s: (
        s.anna,
        {
            "person_id": "p-berit",
            "name": "Berit Nieminen",
            "profession": "rehabilitation adviser",
            "organisation_id": s.bert.organisation_id,
            "organisation_name": s.bert.organisation_name,
        },
    ),
    "update_member": lambda s: (
        s.carla,
        {
            "member_id": s.carla_id,
            "seen_revision": 1,
            "profession": "employment adviser",
            "contact": "040 123 4567",
            "part": "Work trial",
        },
    ),
    "remove_member": lambda s: (s.anna, {"member_id": s.carla_id, "seen_revision": 1}),
    "name_counterpart": lambda s: (s.anna, {"member_id": s.carla_id, "seen_revision": s.plan.responsibility.revision}),
    "propose_handover": lambda s: (s.anna, {"note": "I am on leave"}),
    "accept_handover": lambda s: (s.bert, {"handover_id": s.propose()}),
    "decline_handover": lambda s: (s.bert, {"handover_id": s.propose()}),
    "withdraw_handover": lambda s: (s.anna, {"handover_id": s.propose()}),
    "plan_step": lambda s: (
        s.carla,
        {
            "title": "Work trial",
            "need_id": s.need_id,
            "responsible_member_id": s.carla_id,
            "planned_start": TODAY,
            "planned_end": TODAY + timedelta(days=30),
        },
    ),
    "update_step": lambda s: (
        s.aino,
        {
            "step_id": s.step_id,
            "seen_revision": 1,
            "title": "Physiotherapy",
            "need_id": s.need_id,
            "responsible_member_id": s.aino_id,
            "service": "Group",
        },
    ),
    "reschedule_step": lambda s: (
        s.aino,
        {
            "step_id": s.step_id,
            "seen_revision": 1,
            "planned_start": TODAY + timedelta(days=7),
            "planned_end": TODAY + timedelta(days=21),
            "reason": "Waiting list",
        },
    ),
    "progress_step": lambda s: (s.aino, {"step_id": s.step_id, "seen_revision": 1, "status": "started", "on": TODAY}),
    "record_step_outcome": lambda s: (
        s.aino,
        {"step_id": s.step_id, "seen_revision": 1, "outcome": "Can sit for 2 hours"},
    ),
    "record_measure": lambda s: (s.anna, {"kind": "work_ability_score", "value": 6, "measured_on": TODAY}),
    "add_note": lambda s: (s.bert, {"text": "Called the client"}),
    "close": lambda s: (s.settle_steps(), (s.anna, {"outcome": "work"}))[1],
}


def test_every_command_of_the_plan_is_listed_here() -> None:
    commands = {
        name
        for name, member in vars(ClientPlan).items()
        if callable(getattr(ClientPlan, name))
        and not name.startswith("_")
        and {"by", "command_id", "at"} <= set(inspect.signature(getattr(ClientPlan, name)).parameters)
    }
    assert commands - {"open", "reopen"} == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_records_exactly_one_event(s: Scene, command: str) -> None:
    by, fields = COMMANDS[command](s)
    version = s.plan.version

    getattr(s.plan, command)(by=by, command_id=cid(), at=NOW, **fields)

    assert len(s.plan.collect_events()) == 1
    assert s.plan.version == version + 1


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"withdraw_consent"}))
def test_every_command_on_a_closed_plan_is_refused(s: Scene, command: str) -> None:
    by, fields = COMMANDS[command](s)
    if s.plan.pending_handover:
        do(s.plan, "withdraw_handover", s.anna, handover_id=s.plan.pending_handover.id)
    s.close()

    with refused(s.plan, PlanClosed, "closed", "reopen"):
        getattr(s.plan, command)(by=by, command_id=cid(), at=NOW, **fields)


def test_a_consent_is_withdrawn_on_a_closed_plan_too_and_ends_the_organisations_view(s: Scene) -> None:
    """The client's voluntariness does not end with the plan: after the withdrawal Kela's
    people are out of the network and Kela's other people no longer see the plan."""
    s.close()
    kela_colleague = dict(kind="professional", person_id="p-kela-2", organisation_id=s.bert.organisation_id,
                          client_plan_id=None, today=TODAY)
    assert relation_to(s.plan, **kela_colleague) is Relation.COLLEAGUE

    do(s.plan, "withdraw_consent", s.anna, consent_id=s.kela_consent, seen_revision=1)

    assert recorded(s.plan) == ["ConsentWithdrawn"]
    assert s.plan.is_closed and s.plan.counterpart is None and s.bert_id not in s.plan.members
    assert relation_to(s.plan, **kela_colleague) is Relation.OUTSIDER


def test_the_named_experts_consent_stays_on_a_closed_plan(s: Scene) -> None:
    s.close()
    with refused(s.plan, RuleViolation, "hand responsibility over", field="consent_id"):
        do(s.plan, "withdraw_consent", s.anna, consent_id=s.health_centre_consent, seen_revision=0)


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("by", [None, "p-anna"], ids=["none", "text"])
def test_every_command_needs_an_actor(s: Scene, command: str, by: Any) -> None:
    _, fields = COMMANDS[command](s)

    with refused(s.plan, InvalidValue, "who gives it", field="actor"):
        getattr(s.plan, command)(by=by, command_id=cid(), at=NOW, **fields)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_needs_a_command_id(s: Scene, command: str) -> None:
    by, fields = COMMANDS[command](s)

    with refused(s.plan, InvalidValue, "identifier", field="command_id"):
        getattr(s.plan, command)(by=by, command_id="", at=NOW, **fields)


@pytest.mark.parametrize(
    "command_id", ["   ", None, 42, "x" * (SHORT_TEXT + 1)], ids=["blank", "none", "number", "too-long"]
)
def test_a_malformed_command_id_is_refused(s: Scene, command_id: Any) -> None:
    with refused(s.plan, InvalidValue, "identifier", field="command_id"):
        s.plan.add_note(by=s.bert, command_id=command_id, at=NOW, text="Hello")


def test_opening_needs_an_actor() -> None:
    with refused(None, InvalidValue, "who gives it", field="actor"):
        ClientPlan.open(
            by=None,
            command_id=cid(),
            at=OPENED_AT,
            client_name="Maija",
            segment="unemployed",
            language="fi",
            referring_party="kela",
            expert_profession="nurse",
        )


@pytest.mark.parametrize("command_id", ["  ", " open-1 ", None], ids=["blank", "spaced", "none"])
def test_opening_needs_a_command_id_taken_exactly(anna: Actor, command_id: Any) -> None:
    with refused(None, InvalidValue, "identifier", field="command_id"):
        ClientPlan.open(
            by=anna,
            command_id=command_id,
            at=OPENED_AT,
            client_name="Maija Mäkinen",
            segment="unemployed",
            language="fi",
            referring_party="employment_services",
            expert_profession="nurse",
        )


def test_opening_with_a_given_plan_id_still_needs_a_command_id(anna: Actor) -> None:
    with pytest.raises(InvalidValue) as refusal:
        ClientPlan.open(
            by=anna,
            command_id="",
            at=OPENED_AT,
            plan_id=uuid.uuid4(),
            client_name="Maija Mäkinen",
            segment="unemployed",
            language="fi",
            referring_party="employment_services",
            expert_profession="nurse",
        )
    assert refusal.value.field == "command_id"


# --- idempotency -------------------------------------------------------------------------


def test_a_command_leaves_a_receipt_with_its_item_and_version(s: Scene) -> None:
    command_id = cid()
    need_id = s.plan.record_need(by=s.anna, command_id=command_id, at=NOW, category="health", description="Sleep")

    assert s.plan.receipt_for(command_id) == Receipt(
        item_id=need_id, version=s.plan.version, event="NeedRecorded", person_id=s.anna.person_id
    )


def test_a_repeated_command_is_answered_from_its_receipt_and_records_nothing(s: Scene) -> None:
    need_id = s.plan.record_need(by=s.anna, command_id="need-once", at=NOW, category="health", description="Sleep")
    version = s.plan.version

    with pytest.raises(Repeated) as repeat:
        s.plan.record_need(by=s.anna, command_id="need-once", at=NOW, category="health", description="Sleep")

    assert (repeat.value.receipt.item_id, repeat.value.receipt.version) == (need_id, version)
    assert s.plan.version == version


def test_a_closed_plan_still_answers_the_repeat_of_its_closing(s: Scene) -> None:
    s.settle_steps()
    s.plan.close(by=s.anna, command_id="close-once", at=NOW, outcome="work")
    with pytest.raises(Repeated):
        s.plan.close(by=s.anna, command_id="close-once", at=NOW, outcome="work")


@pytest.mark.parametrize("by", ["anna", "carla"])
def test_a_command_id_used_by_another_command_is_refused(s: Scene, by: str) -> None:
    s.plan.add_note(by=s.anna, command_id="used-once", at=NOW, text="Called the client")
    with refused(s.plan, RuleViolation, "already used", field="command_id"):
        if by == "anna":  # another kind of command
            s.plan.record_need(by=s.anna, command_id="used-once", at=NOW, category="health", description="Sleep")
        else:  # the same kind, by someone else
            s.plan.add_note(by=s.carla, command_id="used-once", at=NOW, text="Called the client")


def test_a_receipt_kept_before_receipts_named_their_command_counts_any_command_as_its_repeat(s: Scene) -> None:
    """Snapshots made before receipts named the event and the person hold receipts without
    them: a repeat is recognised as before, by the id alone."""
    s.plan.receipts["old-1"] = Receipt(item_id=None, version=3)
    with pytest.raises(Repeated):
        s.plan.add_note(by=s.carla, command_id="old-1", at=NOW, text="Called the client")


def test_the_opening_leaves_a_receipt_for_version_one(anna: Actor) -> None:
    opened = open_plan(anna, command_id="open-receipt")
    assert opened.receipt_for("open-receipt") == Receipt(
        item_id=None, version=1, event="Opened", person_id=anna.person_id
    )


def test_an_unknown_command_has_no_receipt(s: Scene) -> None:
    assert s.plan.receipt_for("never-given") is None


def test_a_refused_command_leaves_no_receipt(s: Scene) -> None:
    with pytest.raises(RuleViolation):
        s.plan.remove_member(by=s.anna, command_id="refused-1", at=NOW, member_id=s.anna_id, seen_revision=0)
    assert s.plan.receipt_for("refused-1") is None


def test_item_ids_follow_from_the_command_id(anna: Actor) -> None:
    first = open_plan(anna, command_id="open-same")
    again = open_plan(anna, command_id="open-same")
    other = open_plan(anna, command_id="open-other")

    ids = [
        p.record_need(by=anna, command_id="need-1", at=NOW, category="health", description="x")
        for p in (first, again, other)
    ]

    assert ids[0] == ids[1]
    assert ids[0] != ids[2]
    assert first.record_need(by=anna, command_id="need-2", at=NOW, category="health", description="x") != ids[0]


def test_a_plan_remembers_the_latest_commands_only(plan: ClientPlan, anna: Actor) -> None:
    (opening_command,) = [command for command in plan.receipts]
    for n in range(REMEMBERED_COMMANDS):
        plan.add_note(by=anna, command_id=f"note-{n}", at=NOW, text="x")

    assert len(plan.receipts) == REMEMBERED_COMMANDS
    assert plan.receipt_for(opening_command) is None
    assert plan.receipt_for("note-0") is not None
    assert plan.receipt_for(f"note-{REMEMBERED_COMMANDS - 1}").version == plan.version


def test_today_is_the_day_in_finland_not_in_utc(s: Scene) -> None:
    """At 00:30 in Helsinki it is still yesterday in UTC: what was measured and done today
    is not "in the future" (the commands' ``at`` is UTC)."""
    just_after_midnight = datetime(2026, 3, 20, 22, 30, tzinfo=UTC)  # 00:30 on 21 March in Finland
    finnish_today = date(2026, 3, 21)
    do(s.plan, "record_measure", s.anna, at=just_after_midnight, kind="work_ability_score", value=5,
       measured_on=finnish_today)
    do(s.plan, "progress_step", s.aino, at=just_after_midnight, step_id=s.step_id, seen_revision=1,
       status="started", on=finnish_today)
    assert s.plan.steps[s.step_id].started_on == finnish_today
    with refused(s.plan, InvalidValue, "future", field="measured_on"):
        do(s.plan, "record_measure", s.anna, at=just_after_midnight, kind="work_ability_score", value=5,
           measured_on=finnish_today + timedelta(days=1))


def test_an_id_with_a_nul_is_refused(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "identifier", field="organisation_id"):
        do(s.plan, "give_consent", s.anna, organisation_id="te\x00toimisto", organisation_name="TE", valid_from=TODAY)


@pytest.mark.parametrize("command_id", ["need\x009", "need\n9", "need\ud8009"])
def test_a_command_id_with_a_control_character_or_a_lone_surrogate_is_refused(s: Scene, command_id: str) -> None:
    with refused(s.plan, InvalidValue, "identifier", field="command_id"):
        s.plan.record_need(by=s.anna, command_id=command_id, at=NOW, category="health", description="x")


def test_a_command_id_with_surrounding_spaces_is_refused_so_repeats_match_exactly(s: Scene) -> None:
    with refused(s.plan, InvalidValue, "surrounding spaces", field="command_id"):
        s.plan.record_need(by=s.anna, command_id=" need-9 ", at=NOW, category="health", description="x")


# --- the client's own details, non-disclosure, the client's view of a goal ---------------


def test_the_clients_contact_details_are_recorded_with_a_revision(s: Scene) -> None:
    do(s.plan, "record_client_contact", s.anna, seen_revision=0, contact="040 123 4567")
    assert s.plan.client.contact == "040 123 4567"
    assert s.plan.client.revision == 1
    with refused(s.plan, EditConflict, s.anna.name):
        do(s.plan, "record_client_contact", s.bert, seen_revision=0, contact="050 765 4321")


@pytest.mark.parametrize("who", ["anna", "bert"])
def test_the_expert_or_the_counterpart_sets_a_non_disclosure_order(s: Scene, who: str) -> None:
    do(s.plan, "set_non_disclosure", getattr(s, who), seen_revision=0, active=True)
    assert s.plan.client.non_disclosure is True
    do(s.plan, "set_non_disclosure", getattr(s, who), seen_revision=1, active=False)
    assert s.plan.client.non_disclosure is False


@pytest.mark.parametrize("who", ["aino", "carla"])
def test_other_network_members_cannot_change_a_non_disclosure_order(s: Scene, who: str) -> None:
    with refused(s.plan, NotYours, "non-disclosure"):
        do(s.plan, "set_non_disclosure", getattr(s, who), seen_revision=0, active=True)


def test_a_non_disclosure_order_is_yes_or_no(s: Scene) -> None:
    with refused(s.plan, InvalidValue, field="active"):
        do(s.plan, "set_non_disclosure", s.anna, seen_revision=0, active="yes")


def test_the_client_agrees_with_a_goal_beside_the_professionals_wording(s: Scene) -> None:
    goal = s.plan.goals[s.goal_id]
    title = goal.title
    do(s.plan, "record_client_view_on_goal", CLIENT, goal_id=s.goal_id, seen_revision=goal.revision, stance="agrees")
    assert (goal.client_stance, goal.title) == ("agrees", title)


def test_a_client_who_questions_a_goal_says_why_and_both_views_stay(s: Scene) -> None:
    goal = s.plan.goals[s.goal_id]
    with refused(s.plan, InvalidValue, "own words", field="comment"):
        do(s.plan, "record_client_view_on_goal", CLIENT, goal_id=s.goal_id, seen_revision=goal.revision, stance="questions")
    do(
        s.plan,
        "record_client_view_on_goal",
        CLIENT,
        goal_id=s.goal_id,
        seen_revision=goal.revision,
        stance="questions",
        comment="Four hours a day is too much for now",
    )
    assert goal.client_stance == "questions"
    assert goal.client_comment == "Four hours a day is too much for now"
    assert goal.title and goal.status == "set"


def test_an_unknown_stance_on_a_goal_is_refused(s: Scene) -> None:
    goal = s.plan.goals[s.goal_id]
    with refused(s.plan, InvalidValue, "agrees, questions", field="stance"):
        do(s.plan, "record_client_view_on_goal", CLIENT, goal_id=s.goal_id, seen_revision=goal.revision, stance="maybe")


@pytest.mark.parametrize("command", COMMANDS)
def test_a_copy_of_a_plan_can_be_changed_without_touching_the_original(s: Scene, command: str) -> None:
    """The repository hands each command a copy of the cached plan (ClientPlan.__deepcopy__)."""
    by, fields = COMMANDS[command](s)
    before = state_of(s.plan)
    twin = copy.deepcopy(s.plan)
    assert state_of(twin) == before

    getattr(twin, command)(by=by, command_id=cid(), at=NOW, **fields)

    assert twin.version == s.plan.version + 1
    assert state_of(s.plan) == before


# --- how far a plan's dates may lie --------------------------------------------------

EARLIEST = OPENING_DAY - PLAN_REACH
LATEST = TODAY + PLAN_REACH


def _dated_commands(s: Scene) -> dict[str, Callable[[date], Any]]:
    """Every command that takes a date from the user, given that date."""
    return {
        "goal target_date": lambda day: do(s.plan, "set_goal", s.anna, title="Work trial", need_ids=[s.need_id],
                                           target_date=day),
        "goal revised target_date": lambda day: do(s.plan, "revise_goal", s.anna, goal_id=s.goal_id, seen_revision=1,
                                                   title="Work trial", need_ids=[s.need_id], target_date=day),
        "step planned_start": lambda day: plan_step(s.plan, s.anna, s.need_id, s.carla_id, start=day,
                                                  end=max(day, TODAY)),
        "step planned_end": lambda day: plan_step(s.plan, s.anna, s.need_id, s.carla_id, start=TODAY, end=day),
        "step rescheduled planned_end": lambda day: do(s.plan, "reschedule_step", s.aino, step_id=s.step_id,
                                                       seen_revision=1, planned_start=TODAY, planned_end=day),
        "step progress on": lambda day: do(s.plan, "progress_step", s.aino, step_id=s.step_id, seen_revision=1,
                                           status="started", on=day),
        "measure measured_on": lambda day: do(s.plan, "record_measure", s.anna, kind="work_ability_score", value=5,
                                              measured_on=day),
        "consent valid_from": lambda day: do(s.plan, "give_consent", s.anna, organisation_id="pension-fund",
                                             organisation_name="Eläkekassa", valid_from=day),
    }


TOO_EARLY = {"step planned_start", "step progress on", "measure measured_on", "consent valid_from"}
"""A goal's target and a step's end are never before the opening (their own rule and message)."""
FROM_THE_OPENING = {"goal target_date", "goal revised target_date", "step planned_end", "step rescheduled planned_end"}
TOO_LATE = {"goal target_date", "goal revised target_date", "step planned_start", "step planned_end",
            "step rescheduled planned_end", "consent valid_from"}


@pytest.mark.parametrize("command", sorted(TOO_LATE))
@pytest.mark.parametrize("day", [LATEST + timedelta(days=1), date(9999, 12, 31)])
def test_a_date_more_than_ten_years_ahead_is_refused(s: Scene, command: str, day: date) -> None:
    """A mistyped year (9999, 20266) would stretch the plan's timeline over millennia."""
    field = command.rsplit(" ", 1)[1]
    earliest = OPENING_DAY if command in FROM_THE_OPENING else EARLIEST
    with refused(s.plan, InvalidValue, earliest.isoformat(), LATEST.isoformat(), field=field):
        _dated_commands(s)[command](day)


@pytest.mark.parametrize("command", sorted(TOO_EARLY))
@pytest.mark.parametrize("day", [EARLIEST - timedelta(days=1), date(1, 1, 1)])
def test_a_date_more_than_ten_years_before_the_opening_is_refused(s: Scene, command: str, day: date) -> None:
    field = command.rsplit(" ", 1)[1]
    with refused(s.plan, InvalidValue, EARLIEST.isoformat(), LATEST.isoformat(), field=field):
        _dated_commands(s)[command](day)


@pytest.mark.parametrize("command", sorted(TOO_LATE))
def test_a_date_ten_years_ahead_is_taken(s: Scene, command: str) -> None:
    _dated_commands(s)[command](LATEST)


@pytest.mark.parametrize("command", sorted(TOO_EARLY))
def test_a_date_ten_years_before_the_opening_is_taken(s: Scene, command: str) -> None:
    """A goal is never before the opening; a step begun, a measure taken or a consent given
    years before the plan belongs to the client's history the plan builds on."""
    _dated_commands(s)[command](EARLIEST)
