"""Random editing sessions on real stores: the plan's rules hold after every command, and
the plan read back from its events is the plan the editors worked on.

`PlanEditing` is a hypothesis state machine. Six people of three organisations (a health
centre, social services, Kela) give random commands through `PlanService` to a few plans
on a real store, many of them invalid on purpose: unknown categories and statuses, stale
and future revisions, handovers decided by the wrong person, commands on closed and on
erased plans, repeated command ids. Each command is judged before it is sent, from the
plan as the editor sees it: refused (it must raise a `DomainError` and record nothing) or
accepted (it must record exactly one event, and its version is the answer).

After every step, for every plan:
- the rules hold: every need in one of the four categories; the expert and the counterpart
  are members of different organisations; at most one pending handover, between them;
  every member's organisation holds a valid consent; every step's need exists and its
  responsible member exists or is None; goals link to existing needs;
- no command id was recorded twice, and the plan's version counts the accepted commands;
- the plan from the service (aggregate cache) equals the plan replayed from the store with
  snapshots (taken every 4 events here) and the plan replayed from its events alone
  (a second service with neither cache nor snapshots);
and at the end of each run a fresh service on the same store reads the same plans.

The machine runs on SQLite; `test_plan_editing_on_postgres` runs it with fewer examples on
PostgreSQL. The deterministic tests at the end pin defects found on the way, now fixed.
"""

from __future__ import annotations

import base64
import copy
import os
import shutil
import tempfile
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from psycopg import sql

from domain.application import Outcome, PlanService
from domain.errors import DomainError, InvalidValue, PlanErased, RuleViolation
from domain.inputs import has_forbidden_character, plain_text
from domain.plan import ClientPlan, PlanRecord
from domain.storage import StoreSettings
from domain.values import (
    Actor,
    ClosingOutcome,
    GoalStatus,
    HandoverStatus,
    Language,
    MeasureKind,
    NeedCategory,
    NeedStatus,
    NoteVisibility,
    ReferringParty,
    Segment,
    StepStatus,
)

# --- the people and the rules -------------------------------------------------------------

ORGANISATIONS = {
    "org-hc": "Oulun terveysasema",
    "org-so": "Oulun sosiaalipalvelut",
    "org-kela": "Kela, Oulun toimisto",
}
PEOPLE = [
    Actor(person_id="p-aino", name="Aino Lehto", organisation_id="org-hc", organisation_name=ORGANISATIONS["org-hc"]),
    Actor(person_id="p-eero", name="Eero Salo", organisation_id="org-hc", organisation_name=ORGANISATIONS["org-hc"]),
    Actor(person_id="p-sanna", name="Sanna Koski", organisation_id="org-so", organisation_name=ORGANISATIONS["org-so"]),
    Actor(person_id="p-olli", name="Olli Niemi", organisation_id="org-so", organisation_name=ORGANISATIONS["org-so"]),
    Actor(person_id="p-kaisa", name="Kaisa Rinne", organisation_id="org-kela", organisation_name=ORGANISATIONS["org-kela"]),
    Actor(person_id="p-ville", name="Ville Aho", organisation_id="org-kela", organisation_name=ORGANISATIONS["org-kela"]),
]
PERSON = {actor.person_id: actor for actor in PEOPLE}
CLIENT = Actor(person_id="client-asiakas", name="Matti Virtanen", organisation_id="", organisation_name="")
"""A client giving his own view of a goal: a person of no organisation."""

CATEGORIES = [c.value for c in NeedCategory]
OPEN_STEP = {StepStatus.PLANNED.value, StepStatus.STARTED.value}
STEP_MOVES = {
    StepStatus.PLANNED.value: {StepStatus.STARTED.value, StepStatus.DONE.value, StepStatus.CANCELLED.value},
    StepStatus.STARTED.value: {StepStatus.DONE.value, StepStatus.CANCELLED.value},
}
START = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SNAPSHOT_EVERY = 4


def check_plan_rules(plan: ClientPlan, today: date) -> None:
    """The rules every recorded plan satisfies, whatever commands it went through."""
    for need in plan.needs.values():
        assert need.category in CATEGORIES, f"need {need.id} has category {need.category!r}"
    roles = plan.responsibility
    expert = plan.members.get(roles.expert_id)
    assert expert is not None, "the named expert is not a network member"
    counterpart = None
    if roles.counterpart_id is not None:
        counterpart = plan.members.get(roles.counterpart_id)
        assert counterpart is not None, "the counterpart is not a network member"
        assert counterpart.organisation_id != expert.organisation_id, "expert and counterpart share an organisation"
    pending = [h for h in plan.handovers if h.status == HandoverStatus.PROPOSED]
    assert len(pending) <= 1, f"{len(pending)} pending handovers"
    if pending:
        assert pending[0] is plan.handovers[-1]
        assert (pending[0].from_member_id, pending[0].to_member_id) == (expert.id, roles.counterpart_id)
        assert plan.pending_handover is pending[0]
    persons = [member.person_id for member in plan.members.values()]
    assert len(persons) == len(set(persons)), "a person is in the network twice"
    for member in plan.members.values():
        assert plan.valid_consent_for(member.organisation_id, today), (
            f"{member.name} ({member.organisation_name}) is in the network without a valid consent"
        )
    for step in plan.steps.values():
        assert step.need_id in plan.needs, f"step {step.title!r} is for an unknown need"
        assert step.planned_start <= step.planned_end
        assert step.responsible_member_id is None or step.responsible_member_id in plan.members
    for goal in plan.goals.values():
        assert goal.need_ids, f"goal {goal.title!r} is linked to no need"
        assert set(goal.need_ids) <= set(plan.needs), f"goal {goal.title!r} is linked to an unknown need"


def plan_state(plan: ClientPlan) -> dict[str, Any]:
    """What a plan is, for comparing two readings of it: its attributes (not the pending
    events) and the order of its receipts (which decides which ones it forgets first)."""
    state = {name: value for name, value in vars(plan).items() if name != "_pending_events"}
    state["receipt order"] = list(plan.receipts)
    return state


def write_side_state(record: PlanRecord) -> dict[str, Any]:
    """What the write side keeps of a read-side plan: its state, trimmed the way an old
    snapshot of the whole record is upcast (no notes, measures, earlier schedules; the
    latest few changes of each item)."""
    state = copy.deepcopy(plan_state(record))
    ClientPlan.upcast_v1_v2(state)
    return state


# --- services -----------------------------------------------------------------------------


class SnapshottingPlanService(PlanService):
    """The plan service, snapshotting often enough for short runs to read snapshots."""

    name = PlanService.name  # the library names an application's tables after it
    snapshotting_intervals = {ClientPlan: SNAPSHOT_EVERY}


class EventsOnlyPlanService(PlanService):
    """Reads plans from their events alone: no snapshots, no aggregate cache."""

    name = PlanService.name
    snapshotting_intervals = None

    def construct_env(self, name: str, env: Any = None) -> Any:
        environment = super().construct_env(name, env)
        environment["IS_SNAPSHOTTING_ENABLED"] = "n"
        environment.pop("AGGREGATE_CACHE_MAXSIZE", None)
        return environment


def master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def _sqlite_settings(root: Path) -> Callable[[], tuple[StoreSettings, Callable[[], None]]]:
    def make() -> tuple[StoreSettings, Callable[[], None]]:
        folder = tempfile.mkdtemp(dir=root)
        return StoreSettings(data_dir=folder), lambda: shutil.rmtree(folder, ignore_errors=True)

    return make


def _postgres_settings(environ: dict[str, str]) -> Callable[[], tuple[StoreSettings, Callable[[], None]]]:
    def make() -> tuple[StoreSettings, Callable[[], None]]:
        return StoreSettings.from_environ(environ), lambda: None

    return make


# --- the state machine --------------------------------------------------------------------

REFUSED, ACCEPTED = "refused", "accepted"



often = st.sampled_from([True] * 7 + [False])
"""True seven times in eight (hypothesis draws small integers, such as 0, more often than
others, so the rarer choice comes last)."""


def mostly(good: st.SearchStrategy[Any], *bad: Any) -> st.SearchStrategy[Any]:
    """Seven times in eight a valid value, else one of the `bad` ones."""
    return often.flatmap(lambda valid: good if valid else st.sampled_from(bad))


texts = mostly(
    st.one_of(
        st.sampled_from(
            [
                "Selkäkipu haittaa pitkää istumista.",
                "Toimeentulotuen hakemus kesken",
                "Haluaa kouluttautua lähihoitajaksi",
                "Arki sujuu, kun päivärytmi pysyy",
            ]
        ),
        st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=12),
    ),
    "",
    "  ",
    "väärä\x00merkki",
)
revisions = mostly(st.just("current"), "stale", "future")


def _blank(text: str) -> bool:
    return not plain_text(text) or _bad_optional(text)


def _bad_optional(text: str) -> bool:
    return has_forbidden_character(text)


class PlanEditing(RuleBasedStateMachine):
    """Editors of three organisations working on a few plans at once."""

    make_settings: Callable[[], tuple[StoreSettings, Callable[[], None]]]
    max_plans = 3

    def __init__(self) -> None:
        super().__init__()
        self.settings, self._cleanup = type(self).make_settings()
        self.now = START
        self.service = SnapshottingPlanService(self.settings, clock=self._clock)
        self.reader = EventsOnlyPlanService(self.settings, clock=self._clock)
        self.run = uuid.uuid4().hex[:8]
        self.commands = 0
        self.opened = 0
        self.plans: dict[str, KnownPlan] = {}
        self.erased: dict[str, int] = {}

    # ---------------------------------------------------------------- helpers

    def _clock(self) -> datetime:
        self.now += timedelta(seconds=1)
        return self.now

    @property
    def today(self) -> date:
        return self.now.date()

    def new_command_id(self) -> str:
        self.commands += 1
        return f"{self.run}-cmd-{self.commands}"

    def stored_version(self, plan_id: str) -> int:
        records = self.service.recorder.select_events(uuid.UUID(plan_id), desc=True, limit=1)
        return records[0].originator_version if records else 0

    def attempt(self, plan_id: str, command: str, by: Actor, expect: str, **fields: Any) -> Outcome | None:
        record = self.plans[plan_id]
        command_id = self.new_command_id()
        try:
            outcome = getattr(self.service, command)(plan_id, by=by, command_id=command_id, **fields)
        except DomainError as error:
            assert expect != ACCEPTED, f"{command}({fields}) by {by.name} was refused: {error}"
            assert self.stored_version(plan_id) == record.version, f"refused {command} recorded something"
            return None
        assert expect != REFUSED, f"{command}({fields}) by {by.name} was accepted"
        assert not outcome.repeated
        record.version += 1
        assert outcome.version == record.version == self.stored_version(plan_id)
        record.answers[command_id] = (command, outcome, by, fields)
        return outcome

    def pick_plan(self, data: st.DataObject) -> tuple[str, ClientPlan]:
        plan_id = data.draw(st.sampled_from(list(self.plans)), label="plan")
        return plan_id, self.service.get_plan(plan_id)

    def pick_actor(self, data: st.DataObject, plan: ClientPlan, *preferred: str | None) -> Actor:
        """Usually the person the command is meant for, sometimes anyone."""
        people = [PERSON[person_id] for person_id in preferred if person_id in PERSON]
        if people and data.draw(often, label="the right person?"):
            return data.draw(st.sampled_from(people), label="by")
        return data.draw(st.sampled_from(PEOPLE), label="by")

    @staticmethod
    def pick_id(data: st.DataObject, ids: Any, label: str) -> str:
        known = list(ids)  # in the order they were made: ids differ from run to run
        if known and data.draw(often, label=f"{label} known?"):
            return data.draw(st.sampled_from(known), label=label)
        return "no-such-" + label

    @staticmethod
    def pick_revision(data: st.DataObject, current: int) -> tuple[int, bool]:
        """A revision to send and whether it is the current one."""
        choice = data.draw(revisions, label="revision")
        if choice == "stale" and current > 0:
            return current - 1, False
        if choice == "future":
            return current + 1, False
        return current, True

    # ---------------------------------------------------------------- opening

    @initialize(by=st.sampled_from(PEOPLE), network=often)
    def open_first_plan(self, by: Actor, network: bool) -> None:
        self.open_plan(by, network)

    @precondition(lambda self: self.opened < self.max_plans)
    @rule(by=st.sampled_from(PEOPLE), network=often)
    def open_plan(self, by: Actor, network: bool) -> None:
        """Open a plan; with `network`, also bring one person of each other organisation
        in (with the client's consent) and record a need, so that the deeper rules
        (counterparts, handovers, steps) are reached in short runs."""
        self.opened += 1
        command_id = self.new_command_id()
        fields = {
            "client_name": f"Asiakas {self.opened} Virtanen",
            "segment": Segment.UNEMPLOYED.value,
            "language": Language.FINNISH.value,
            "referring_party": ReferringParty.EMPLOYMENT_SERVICES.value,
            "expert_profession": "TOIKE-asiantuntija",
        }
        outcome = self.service.open_plan(by=by, command_id=command_id, **fields)
        assert not outcome.repeated and outcome.version == 1
        self.plans[outcome.plan_id] = KnownPlan(opening=(command_id, fields, by))
        again = self.service.open_plan(by=by, command_id=command_id, **fields)
        assert again.repeated and again.plan_id == outcome.plan_id
        if by != PEOPLE[0]:
            with pytest.raises(RuleViolation, match="already used"):
                self.service.open_plan(by=PEOPLE[0], command_id=command_id, **fields)
        assert self.stored_version(outcome.plan_id) == 1
        if network:
            self.bring_in_a_network(outcome.plan_id, by)

    def bring_in_a_network(self, plan_id: str, expert: Actor) -> None:
        """One person of each other organisation (with the client's consent), a need, a
        goal, a counterpart and a step: a plan where every rule can be reached."""
        members = []
        for organisation_id, name in ORGANISATIONS.items():
            if organisation_id == expert.organisation_id:
                continue
            self.attempt(
                plan_id, "give_consent", expert, ACCEPTED,
                organisation_id=organisation_id, organisation_name=name, valid_from=self.today,
            )
            person = next(p for p in PEOPLE if p.organisation_id == organisation_id)
            added = self.attempt(
                plan_id, "add_member", expert, ACCEPTED,
                person_id=person.person_id, name=person.name, profession="asiantuntija",
                organisation_id=organisation_id, organisation_name=name,
            )
            members.append(added.item_id)
        need = self.attempt(
            plan_id, "record_need", expert, ACCEPTED,
            category=NeedCategory.HEALTH.value, description="Selkäkipu", financial="Sairauspäiväraha",
        )
        self.attempt(
            plan_id, "set_goal", expert, ACCEPTED,
            title="Osa-aikatyö syksyyn mennessä", need_ids=[need.item_id], target_date=self.today + timedelta(days=180),
        )
        self.attempt(plan_id, "name_counterpart", expert, ACCEPTED, member_id=members[0], seen_revision=0)
        self.attempt(
            plan_id, "plan_step", expert, ACCEPTED,
            title="Työkyvyn arvio", need_id=need.item_id, responsible_member_id=members[1],
            planned_start=self.today, planned_end=self.today + timedelta(days=30),
        )

    # ---------------------------------------------------------------- client and consents

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def change_client_details(self, data: st.DataObject) -> None:
        plan_id, plan = self.pick_plan(data)
        seen, current = self.pick_revision(data, plan.client.revision)
        name = data.draw(texts, label="name")
        segment = data.draw(mostly(st.sampled_from(list(Segment)), "student"), label="segment")
        language = data.draw(mostly(st.sampled_from(list(Language)), "de"), label="language")
        problems = [
            plan.is_closed,
            not current,
            _blank(name) or len(plain_text(name)) > 200,
            segment not in set(Segment),
            language not in set(Language),
        ]
        self.attempt(
            plan_id,
            "change_client_details",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            seen_revision=seen,
            client_name=name,
            segment=str(segment),
            language=str(language),
            referring_party=ReferringParty.KELA.value,
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), contact=mostly(st.sampled_from(["040 111 2233", "Isokatu 1 A 2, Oulu", ""]), "x" * 301, "a\x00b"))
    def record_client_contact(self, data: st.DataObject, contact: str) -> None:
        plan_id, plan = self.pick_plan(data)
        seen, current = self.pick_revision(data, plan.client.revision)
        problems = [plan.is_closed, not current, len(contact) > 300, _bad_optional(contact)]
        self.attempt(
            plan_id,
            "record_client_contact",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            seen_revision=seen,
            contact=contact,
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), active=mostly(st.booleans(), "yes", 1, None))
    def set_non_disclosure(self, data: st.DataObject, active: Any) -> None:
        """Only the named expert or the counterpart sets or lifts a non-disclosure order."""
        plan_id, plan = self.pick_plan(data)
        responsible = [plan.expert.person_id] + ([plan.counterpart.person_id] if plan.counterpart else [])
        by = self.pick_actor(data, plan, *responsible)
        seen, current = self.pick_revision(data, plan.client.revision)
        problems = [plan.is_closed, not current, not isinstance(active, bool), by.person_id not in responsible]
        self.attempt(
            plan_id, "set_non_disclosure", by, REFUSED if any(problems) else ACCEPTED, seen_revision=seen, active=active
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), organisation_id=st.sampled_from(list(ORGANISATIONS)), days=mostly(st.integers(-30, 0), 1, 10))
    def give_consent(self, data: st.DataObject, organisation_id: str, days: int) -> None:
        plan_id, plan = self.pick_plan(data)
        active = any(c.organisation_id == organisation_id and c.withdrawn_on is None for c in plan.consents.values())
        self.attempt(
            plan_id,
            "give_consent",
            self.pick_actor(data, plan),
            REFUSED if plan.is_closed or active else ACCEPTED,
            organisation_id=organisation_id,
            organisation_name=ORGANISATIONS[organisation_id],
            valid_from=self.today + timedelta(days=days),
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def withdraw_consent(self, data: st.DataObject) -> None:
        plan_id, plan = self.pick_plan(data)
        consent_id = self.pick_id(data, plan.consents, "consent")
        consent = plan.consents.get(consent_id)
        seen, current = self.pick_revision(data, consent.revision if consent else 0)
        problems = [
            consent is None,
            not current,
            consent is not None and consent.withdrawn_on is not None,
            consent is not None and consent.organisation_id == plan.expert.organisation_id,
        ]
        self.attempt(
            plan_id,
            "withdraw_consent",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            consent_id=consent_id,
            seen_revision=seen,
        )

    # ---------------------------------------------------------------- needs and goals

    @precondition(lambda self: self.plans)
    @rule(
        data=st.data(),
        category=mostly(st.sampled_from(CATEGORIES), "financial", "HEALTH", "", "talous"),
        description=texts,
        financial=texts,
    )
    def record_need(self, data: st.DataObject, category: str, description: str, financial: str) -> None:
        plan_id, plan = self.pick_plan(data)
        problems = [plan.is_closed, category not in CATEGORIES, _blank(description), _bad_optional(financial)]
        self.attempt(
            plan_id,
            "record_need",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            category=category,
            description=description,
            financial=financial,
        )

    @precondition(lambda self: self.plans)
    @rule(
        data=st.data(),
        category=mostly(st.sampled_from(CATEGORIES), "money"),
        status=mostly(st.sampled_from([s.value for s in NeedStatus]), "closed"),
        description=texts,
    )
    def update_need(self, data: st.DataObject, category: str, status: str, description: str) -> None:
        plan_id, plan = self.pick_plan(data)
        need_id = self.pick_id(data, plan.needs, "need")
        need = plan.needs.get(need_id)
        seen, current = self.pick_revision(data, need.revision if need else 0)
        problems = [
            plan.is_closed,
            need is None,
            not current,
            category not in CATEGORIES,
            status not in set(NeedStatus),
            _blank(description),
        ]
        self.attempt(
            plan_id,
            "update_need",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            need_id=need_id,
            seen_revision=seen,
            category=category,
            description=description,
            financial="",
            status=status,
        )

    def _goal_fields(self, data: st.DataObject, plan: ClientPlan) -> tuple[dict[str, Any], bool]:
        known = list(plan.needs)
        need_ids = data.draw(st.lists(st.sampled_from(known), min_size=1, max_size=3), label="needs") if known else []
        fault = data.draw(mostly(st.none(), "no needs", "unknown need"), label="needs fault")
        if fault == "no needs":
            need_ids = []
        elif fault == "unknown need":
            need_ids.append("no-such-need")
        target = plan.opened_on + timedelta(days=data.draw(mostly(st.integers(0, 400), -5, -1), label="target in"))
        title = data.draw(texts, label="title")
        bad = not need_ids or "no-such-need" in need_ids or target < plan.opened_on or _blank(title)
        return {"title": title, "need_ids": need_ids, "target_date": target}, bad

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def set_goal(self, data: st.DataObject) -> None:
        plan_id, plan = self.pick_plan(data)
        fields, bad = self._goal_fields(data, plan)
        self.attempt(
            plan_id, "set_goal", self.pick_actor(data, plan), REFUSED if plan.is_closed or bad else ACCEPTED, **fields
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def revise_goal(self, data: st.DataObject) -> None:
        plan_id, plan = self.pick_plan(data)
        goal_id = self.pick_id(data, plan.goals, "goal")
        goal = plan.goals.get(goal_id)
        seen, current = self.pick_revision(data, goal.revision if goal else 0)
        fields, bad = self._goal_fields(data, plan)
        settled = goal is not None and goal.status in (GoalStatus.ACHIEVED, GoalStatus.DROPPED)
        problems = [plan.is_closed, goal is None, not current, settled, bad]
        self.attempt(
            plan_id,
            "revise_goal",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            goal_id=goal_id,
            seen_revision=seen,
            **fields,
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), status=mostly(st.sampled_from(["achieved", "dropped"]), "set", "revised", "won"))
    def settle_goal(self, data: st.DataObject, status: str) -> None:
        plan_id, plan = self.pick_plan(data)
        goal_id = self.pick_id(data, plan.goals, "goal")
        goal = plan.goals.get(goal_id)
        seen, current = self.pick_revision(data, goal.revision if goal else 0)
        settled = goal is not None and goal.status in (GoalStatus.ACHIEVED, GoalStatus.DROPPED)
        problems = [plan.is_closed, goal is None, not current, settled, status not in ("achieved", "dropped")]
        self.attempt(
            plan_id,
            "settle_goal",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            goal_id=goal_id,
            seen_revision=seen,
            status=status,
            note="Tavoite arvioitu verkostopalaverissa",
        )

    @precondition(lambda self: self.plans)
    @rule(
        data=st.data(),
        stance=mostly(st.sampled_from(["agrees", "questions"]), "disagrees"),
        comment=st.one_of(st.just(""), texts),
    )
    def record_client_view_on_goal(self, data: st.DataObject, stance: str, comment: str) -> None:
        """The client agrees with a goal or questions it, in his own words."""
        plan_id, plan = self.pick_plan(data)
        goal_id = self.pick_id(data, plan.goals, "goal")
        goal = plan.goals.get(goal_id)
        seen, current = self.pick_revision(data, goal.revision if goal else 0)
        problems = [
            plan.is_closed,
            goal is None,
            not current,
            stance not in ("agrees", "questions"),
            _bad_optional(comment),
            stance == "questions" and not plain_text(comment),
        ]
        self.attempt(
            plan_id,
            "record_client_view_on_goal",
            CLIENT,
            REFUSED if any(problems) else ACCEPTED,
            goal_id=goal_id,
            seen_revision=seen,
            stance=stance,
            comment=comment,
        )

    # ---------------------------------------------------------------- the network

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), person=st.sampled_from(PEOPLE), profession=texts)
    def add_member(self, data: st.DataObject, person: Actor, profession: str) -> None:
        plan_id, plan = self.pick_plan(data)
        problems = [
            plan.is_closed,
            plan.member_of_person(person.person_id) is not None,
            plan.valid_consent_for(person.organisation_id, self.today) is None,
            _blank(profession),
        ]
        self.attempt(
            plan_id,
            "add_member",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            person_id=person.person_id,
            name=person.name,
            profession=profession,
            organisation_id=person.organisation_id,
            organisation_name=person.organisation_name,
            contact="040 123 4567",
            part="Kuntoutusohjaus",
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), profession=texts)
    def update_member(self, data: st.DataObject, profession: str) -> None:
        plan_id, plan = self.pick_plan(data)
        member_id = self.pick_id(data, plan.members, "member")
        member = plan.members.get(member_id)
        seen, current = self.pick_revision(data, member.revision if member else 0)
        problems = [plan.is_closed, member is None, not current, _blank(profession)]
        self.attempt(
            plan_id,
            "update_member",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            member_id=member_id,
            seen_revision=seen,
            profession=profession,
            contact="",
            part="Työkykyarvio",
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def remove_member(self, data: st.DataObject) -> None:
        plan_id, plan = self.pick_plan(data)
        member_id = self.pick_id(data, plan.members, "member")
        member = plan.members.get(member_id)
        seen, current = self.pick_revision(data, member.revision if member else 0)
        responsible = any(
            s.responsible_member_id == member_id and s.status in OPEN_STEP for s in plan.steps.values()
        )
        roles = plan.responsibility
        problems = [
            plan.is_closed,
            member is None,
            not current,
            member_id in (roles.expert_id, roles.counterpart_id),
            responsible,
        ]
        self.attempt(
            plan_id,
            "remove_member",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            member_id=member_id,
            seen_revision=seen,
        )

    # ---------------------------------------------------------------- responsibility

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def name_counterpart(self, data: st.DataObject) -> None:
        plan_id, plan = self.pick_plan(data)
        by = self.pick_actor(data, plan, plan.expert.person_id)
        member_id = self.pick_id(data, plan.members, "member")
        member = plan.members.get(member_id)
        seen, current = self.pick_revision(data, plan.responsibility.revision)
        problems = [
            plan.is_closed,
            not current,
            by.person_id != plan.expert.person_id,
            plan.pending_handover is not None,
            member is None,
            member is not None and member.organisation_id == plan.expert.organisation_id,
            member_id == plan.responsibility.counterpart_id,
        ]
        self.attempt(
            plan_id,
            "name_counterpart",
            by,
            REFUSED if any(problems) else ACCEPTED,
            member_id=member_id,
            seen_revision=seen,
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def propose_handover(self, data: st.DataObject) -> None:
        plan_id, plan = self.pick_plan(data)
        by = self.pick_actor(data, plan, plan.expert.person_id)
        problems = [
            plan.is_closed,
            by.person_id != plan.expert.person_id,
            plan.counterpart is None,
            plan.pending_handover is not None,
        ]
        outcome = self.attempt(
            plan_id,
            "propose_handover",
            by,
            REFUSED if any(problems) else ACCEPTED,
            note="Siirtyy TE-palveluiden asiakkaaksi",
        )
        if outcome is not None:
            assert self.service.get_plan(plan_id).pending_handover.id == outcome.item_id

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), decision=st.sampled_from(["accept", "decline", "withdraw"]))
    def decide_handover(self, data: st.DataObject, decision: str) -> None:
        plan_id, plan = self.pick_plan(data)
        pending = plan.pending_handover
        if pending is not None and data.draw(often, label="the pending handover?"):
            handover_id = pending.id
        else:
            handover_id = self.pick_id(data, [h.id for h in plan.handovers], "handover")
        handover = next((h for h in plan.handovers if h.id == handover_id), None)
        decider = None
        if handover is not None and handover.status == HandoverStatus.PROPOSED:
            member_id = handover.from_member_id if decision == "withdraw" else handover.to_member_id
            decider = plan.members[member_id].person_id
        by = self.pick_actor(data, plan, decider)
        problems = [
            plan.is_closed,
            handover is None,
            handover is not None and handover.status != HandoverStatus.PROPOSED,
            by.person_id != decider,
        ]
        before = plan.responsibility
        outcome = self.attempt(
            plan_id, f"{decision}_handover", by, REFUSED if any(problems) else ACCEPTED, handover_id=handover_id
        )
        if outcome is not None and decision == "accept":
            after = self.service.get_plan(plan_id).responsibility
            assert (after.expert_id, after.counterpart_id) == (before.counterpart_id, before.expert_id)

    # ---------------------------------------------------------------- the service path

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), title=texts, starts_in=st.integers(-20, 60), lasts=mostly(st.integers(0, 90), -1, -3))
    def plan_step(self, data: st.DataObject, title: str, starts_in: int, lasts: int) -> None:
        plan_id, plan = self.pick_plan(data)
        need_id = self.pick_id(data, plan.needs, "need")
        member_id = self.pick_id(data, plan.members, "member")
        start = self.today + timedelta(days=starts_in)
        problems = [plan.is_closed, need_id not in plan.needs, member_id not in plan.members, lasts < 0, _blank(title)]
        problems.append(start + timedelta(days=lasts) < plan.opened_on)
        self.attempt(
            plan_id,
            "plan_step",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            title=title,
            need_id=need_id,
            responsible_member_id=member_id,
            planned_start=start,
            planned_end=start + timedelta(days=lasts),
            service="Työkokeilu",
        )

    def _pick_step(self, data: st.DataObject, plan: ClientPlan) -> tuple[str, Any, int, list[bool]]:
        step_id = self.pick_id(data, plan.steps, "step")
        step = plan.steps.get(step_id)
        seen, current = self.pick_revision(data, step.revision if step else 0)
        return step_id, step, seen, [plan.is_closed, step is None, not current]

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), title=texts)
    def update_step(self, data: st.DataObject, title: str) -> None:
        plan_id, plan = self.pick_plan(data)
        step_id, step, seen, problems = self._pick_step(data, plan)
        need_id = self.pick_id(data, plan.needs, "need")
        member_id = self.pick_id(data, plan.members, "member")
        problems += [
            step is not None and step.status not in OPEN_STEP,
            need_id not in plan.needs,
            member_id not in plan.members,
            _blank(title),
        ]
        self.attempt(
            plan_id,
            "update_step",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            step_id=step_id,
            seen_revision=seen,
            title=title,
            need_id=need_id,
            responsible_member_id=member_id,
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), starts_in=st.integers(-20, 60), lasts=mostly(st.integers(0, 90), -1, -3))
    def reschedule_step(self, data: st.DataObject, starts_in: int, lasts: int) -> None:
        plan_id, plan = self.pick_plan(data)
        step_id, step, seen, problems = self._pick_step(data, plan)
        start = self.today + timedelta(days=starts_in)
        problems += [step is not None and step.status not in OPEN_STEP, lasts < 0]
        problems.append(start + timedelta(days=lasts) < plan.opened_on)
        self.attempt(
            plan_id,
            "reschedule_step",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            step_id=step_id,
            seen_revision=seen,
            planned_start=start,
            planned_end=start + timedelta(days=lasts),
            reason="Sairausloma",
        )

    @precondition(lambda self: self.plans)
    @rule(
        data=st.data(),
        status=mostly(st.sampled_from([s.value for s in StepStatus]), "paused"),
        days_ago=mostly(st.integers(0, 30), -1, -3),
    )
    def progress_step(self, data: st.DataObject, status: str, days_ago: int) -> None:
        plan_id, plan = self.pick_plan(data)
        step_id, step, seen, problems = self._pick_step(data, plan)
        on = self.today - timedelta(days=days_ago)
        if step is not None:
            problems += [
                status not in STEP_MOVES.get(step.status, set()),
                on > self.today,
                step.started_on is not None and on < step.started_on,
            ]
        self.attempt(
            plan_id,
            "progress_step",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            step_id=step_id,
            seen_revision=seen,
            status=status,
            on=on,
            outcome="",
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), outcome=texts)
    def record_step_outcome(self, data: st.DataObject, outcome: str) -> None:
        plan_id, plan = self.pick_plan(data)
        step_id, _step, seen, problems = self._pick_step(data, plan)
        self.attempt(
            plan_id,
            "record_step_outcome",
            self.pick_actor(data, plan),
            REFUSED if any(problems) or _blank(outcome) else ACCEPTED,
            step_id=step_id,
            seen_revision=seen,
            outcome=outcome,
        )

    # ---------------------------------------------------------------- measures and notes

    @precondition(lambda self: self.plans)
    @rule(
        data=st.data(),
        kind=mostly(st.sampled_from([k.value for k in MeasureKind]), "bmi"),
        value=mostly(st.one_of(st.integers(0, 10), st.floats(0, 10)), -1, 11, 2.5, float("nan"), float("inf"), True, "7"),
        days_ago=mostly(st.integers(0, 60), -1),
    )
    def record_measure(self, data: st.DataObject, kind: str, value: Any, days_ago: int) -> None:
        plan_id, plan = self.pick_plan(data)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
        number = number and abs(value) != float("inf")
        if kind == MeasureKind.OTHER:
            low, high = 1.0, 5.0
            fits = number and low <= value <= high
        else:
            low = high = None
            fits = number and value == int(value) and 0 <= value <= 10
        problems = [plan.is_closed, kind not in set(MeasureKind), not fits, days_ago < 0]
        self.attempt(
            plan_id,
            "record_measure",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            kind=kind,
            value=value,
            measured_on=self.today - timedelta(days=days_ago),
            scale_name="Koettu jaksaminen (1-5)",
            scale_min=low,
            scale_max=high,
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), text=texts, visibility=mostly(st.sampled_from([v.value for v in NoteVisibility]), "public"))
    def add_note(self, data: st.DataObject, text: str, visibility: str) -> None:
        plan_id, plan = self.pick_plan(data)
        problems = [plan.is_closed, _blank(text), visibility not in set(NoteVisibility)]
        self.attempt(
            plan_id,
            "add_note",
            self.pick_actor(data, plan),
            REFUSED if any(problems) else ACCEPTED,
            text=text,
            visibility=visibility,
        )

    # ---------------------------------------------------------------- closing, erasing

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), outcome=st.sampled_from([*(o.value for o in ClosingOutcome), "moved_away"]))
    def close_plan(self, data: st.DataObject, outcome: str) -> None:
        plan_id, plan = self.pick_plan(data)
        if data.draw(st.sampled_from(["not now"] * 4 + ["close"]), label="close for real?") != "close":
            outcome = "moved_away"  # mostly refused, so that plans stay open for the other rules
        responsible = [plan.expert.person_id] + ([plan.counterpart.person_id] if plan.counterpart else [])
        by = self.pick_actor(data, plan, *responsible)
        problems = [plan.is_closed, plan.pending_handover is not None, outcome not in set(ClosingOutcome)]
        problems += [by.person_id not in responsible, any(s.status in OPEN_STEP for s in plan.steps.values())]
        self.attempt(
            plan_id,
            "close_plan",
            by,
            REFUSED if any(problems) else ACCEPTED,
            outcome=outcome,
            note="Asiakas siirtyy työhön",
        )

    @precondition(lambda self: self.plans)
    @rule(data=st.data(), reason=texts)
    def reopen_plan(self, data: st.DataObject, reason: str) -> None:
        closed = [plan_id for plan_id in self.plans if self.service.get_plan(plan_id).is_closed]
        if closed and data.draw(often, label="a closed plan?"):
            plan_id = data.draw(st.sampled_from(closed), label="plan")
            plan = self.service.get_plan(plan_id)
        else:
            plan_id, plan = self.pick_plan(data)
        responsible = [plan.expert.person_id] + ([plan.counterpart.person_id] if plan.counterpart else [])
        by = self.pick_actor(data, plan, *responsible)
        self.attempt(
            plan_id,
            "reopen_plan",
            by,
            REFUSED if not plan.is_closed or _blank(reason) or by.person_id not in responsible else ACCEPTED,
            reason=reason,
        )

    @precondition(lambda self: len(self.plans) >= 2)
    @rule(data=st.data())
    def erase_plan(self, data: st.DataObject) -> None:
        """Erase a plan; an open plan is refused. Erasing leaves the other plans intact."""
        plan_id, plan = self.pick_plan(data)
        by = self.pick_actor(data, plan)
        try:
            self.service.erase_plan(plan_id, by=by, reason="Säilytysaika päättynyt")
        except DomainError:
            assert not plan.is_closed
            assert self.stored_version(plan_id) == self.plans[plan_id].version
            return
        assert plan.is_closed, "an open plan was erased"
        self.erased[plan_id] = self.plans.pop(plan_id).version

    @precondition(lambda self: self.erased)
    @rule(data=st.data(), by=st.sampled_from(PEOPLE))
    def command_on_erased_plan(self, data: st.DataObject, by: Actor) -> None:
        plan_id = data.draw(st.sampled_from(list(self.erased)), label="erased plan")
        with pytest.raises(PlanErased):
            self.service.add_note(plan_id, by=by, command_id=self.new_command_id(), text="Vielä yksi huomio")
        with pytest.raises(PlanErased):
            self.service.reopen_plan(plan_id, by=by, command_id=self.new_command_id(), reason="Asiakas palasi")

    # ---------------------------------------------------------------- repeats and time

    @precondition(lambda self: any(record.answers for record in self.plans.values()))
    @rule(data=st.data(), by=st.sampled_from(PEOPLE))
    def repeat_command(self, data: st.DataObject, by: Actor) -> None:
        """A command id sent again (double click, retry) is answered like the first time, when
        it is the same command from the same person; sent as a note by anyone, it is answered
        only if it was that person's note, and refused otherwise."""
        plan_id = data.draw(st.sampled_from([p for p, r in self.plans.items() if r.answers]), label="plan")
        record = self.plans[plan_id]
        command_id = data.draw(st.sampled_from(list(record.answers)), label="repeated command")
        command, first, first_by, fields = record.answers[command_id]
        if data.draw(st.booleans(), label="the same command again"):
            again = getattr(self.service, command)(plan_id, by=first_by, command_id=command_id, **fields)
        else:
            try:
                again = self.service.add_note(plan_id, by=by, command_id=command_id, text="Tuplaklikkaus")
            except RuleViolation as refusal:
                assert (command, by.person_id) != ("add_note", first_by.person_id)
                assert refusal.field == "command_id"
                assert self.stored_version(plan_id) == record.version
                return
            assert (command, by.person_id) == ("add_note", first_by.person_id)
        assert again.repeated
        assert again.version == first.version
        assert again.item_id == first.item_id
        assert self.stored_version(plan_id) == record.version

    @precondition(lambda self: self.plans)
    @rule(data=st.data())
    def repeat_opening(self, data: st.DataObject) -> None:
        plan_id = data.draw(st.sampled_from(list(self.plans)), label="plan")
        command_id, fields, by = self.plans[plan_id].opening
        again = self.service.open_plan(by=by, command_id=command_id, **fields)
        assert again.repeated and again.plan_id == plan_id
        assert self.stored_version(plan_id) == self.plans[plan_id].version

    @rule(days=st.integers(0, 40))
    def time_passes(self, days: int) -> None:
        self.now = (self.now + timedelta(days=days)).replace(hour=9, minute=0, second=0)

    # ---------------------------------------------------------------- invariants

    @invariant()
    def plans_keep_their_rules_and_replay_the_same(self) -> None:
        for plan_id, record in self.plans.items():
            identifier = uuid.UUID(plan_id)
            live = self.service.get_plan(plan_id)
            assert live.version == record.version
            check_plan_rules(live, self.today)

            events = list(self.reader.events.get(identifier))
            assert [e.originator_version for e in events] == list(range(1, record.version + 1))
            repeated = [cid for cid, n in Counter(e.command_id for e in events).items() if n > 1]
            assert not repeated, f"command ids recorded twice: {repeated}"

            replayed = None
            for event in events:
                replayed = event.mutate(replayed)
            from_snapshot = self.service.repository.get(identifier, version=record.version)
            assert plan_state(replayed) == plan_state(live)
            assert plan_state(from_snapshot) == plan_state(live)
            assert write_side_state(self.reader.plan_record(plan_id)) == plan_state(live)

    @invariant()
    def erased_plans_stay_erased(self) -> None:
        for plan_id, version in self.erased.items():
            with pytest.raises(PlanErased):
                self.service.get_plan(plan_id)
            assert self.stored_version(plan_id) == version, "something was recorded on an erased plan"

    def teardown(self) -> None:
        try:
            self.service.flush_snapshots()
            fresh = PlanService(self.settings, clock=self._clock)
            try:
                for plan_id, record in self.plans.items():
                    plan = fresh.get_plan(plan_id)
                    assert plan_state(plan) == plan_state(self.service.get_plan(plan_id))
                    if record.version >= SNAPSHOT_EVERY:
                        snapshots = list(self.service.snapshots.get(uuid.UUID(plan_id), desc=True, limit=1))
                        assert snapshots and snapshots[0].originator_version % SNAPSHOT_EVERY == 0
                listed = {str(plan_id) for plan_id in fresh.plan_ids()}
                assert set(self.plans) <= listed
                assert not listed & set(self.erased)
            finally:
                fresh.close()
        finally:
            self.service.close()
            self.reader.close()
            self._cleanup()


class KnownPlan:
    """What the machine knows of one plan: its version and the answers it gave."""

    def __init__(self, opening: tuple[str, dict[str, Any], Actor]):
        self.opening = opening
        self.version = 1
        self.answers: dict[str, tuple[str, Outcome, Actor, dict[str, Any]]] = {}
        """Per command id: the command, its answer, who gave it and its fields."""


def _machine_on(make: Callable[[], tuple[StoreSettings, Callable[[], None]]]) -> type[PlanEditing]:
    return type("PlanEditingRun", (PlanEditing,), {"make_settings": staticmethod(make)})


def test_plan_editing_on_sqlite(tmp_path: Path) -> None:
    run_state_machine_as_test(
        _machine_on(_sqlite_settings(tmp_path)),
        settings=settings(
            max_examples=40,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


@pytest.fixture
def postgres_environ(postgres_env: dict[str, str], pg_schema: str) -> Iterator[dict[str, str]]:
    """Settings on the test schema; also drops the keys schema (`<schema>_keys`), which
    `pg_schema` does not know about."""
    yield {**postgres_env, "POLKU_PG_SCHEMA": pg_schema, "POLKU_MASTER_KEY": master_key()}
    drop_keys_schema(postgres_env, pg_schema)


def drop_keys_schema(postgres_env: dict[str, str], schema: str) -> None:
    with psycopg.connect(
        host=postgres_env["POLKU_PG_HOST"],
        port=int(postgres_env["POLKU_PG_PORT"]),
        user=postgres_env["POLKU_PG_USER"],
        dbname=postgres_env["POLKU_PG_DB"],
        autocommit=True,
    ) as conn:
        conn.execute("SET lock_timeout = '30s'")
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(f"{schema}_keys")))


def test_plan_editing_on_postgres(postgres_environ: dict[str, str]) -> None:
    run_state_machine_as_test(
        _machine_on(_postgres_settings(postgres_environ)),
        settings=settings(
            max_examples=10,
            stateful_step_count=30,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )


# --- defects found on the way -------------------------------------------------------------


@pytest.fixture
def service(data_dir: Path) -> Iterator[PlanService]:
    clock = iter(START + timedelta(minutes=n) for n in range(10_000))
    plan_service = PlanService(StoreSettings(data_dir=str(data_dir)), clock=lambda: next(clock))
    yield plan_service
    plan_service.close()


def _open(service: PlanService) -> str:
    return service.open_plan(
        by=PEOPLE[0],
        command_id="open-1",
        client_name="Matti Virtanen",
        segment="unemployed",
        language="fi",
        referring_party="kela",
        expert_profession="TOIKE-asiantuntija",
    ).plan_id


def test_finished_step_keeps_a_removed_member(service: PlanService) -> None:
    plan_id = _open(service)
    sanna = PEOPLE[2]
    need = service.record_need(plan_id, by=PEOPLE[0], command_id="n", category="health", description="Selkä")
    service.give_consent(
        plan_id, by=PEOPLE[0], command_id="c", organisation_id=sanna.organisation_id,
        organisation_name=sanna.organisation_name, valid_from=START.date(),
    )
    member = service.add_member(
        plan_id, by=PEOPLE[0], command_id="m", person_id=sanna.person_id, name=sanna.name,
        profession="sosiaalityöntekijä", organisation_id=sanna.organisation_id,
        organisation_name=sanna.organisation_name,
    )
    step = service.plan_step(
        plan_id, by=PEOPLE[0], command_id="s", title="Palveluohjaus", need_id=need.item_id,
        responsible_member_id=member.item_id, planned_start=START.date(), planned_end=START.date(),
    )
    service.progress_step(
        plan_id, by=sanna, command_id="done", step_id=step.item_id, seen_revision=1, status="done", on=START.date()
    )
    service.remove_member(plan_id, by=PEOPLE[0], command_id="rm", member_id=member.item_id, seen_revision=1)
    plan = service.get_plan(plan_id)
    responsible = plan.steps[step.item_id].responsible_member_id
    assert responsible is None or responsible in plan.members


def test_text_with_a_lone_surrogate_is_refused(service: PlanService) -> None:
    plan_id = _open(service)
    with pytest.raises(InvalidValue):
        service.add_note(plan_id, by=PEOPLE[0], command_id="note", text="rikki \ud800")


def test_huge_measure_value_is_refused(service: PlanService) -> None:
    plan_id = _open(service)
    with pytest.raises(InvalidValue):
        service.record_measure(
            plan_id, by=PEOPLE[0], command_id="m", kind="work_ability_score", value=10**400, measured_on=START.date()
        )
