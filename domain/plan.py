"""The `ClientPlan` aggregate: one client's work-ability support plan.

Every command method checks the plan's rules first and refuses with a
`DomainError` before anything happens, then triggers exactly one event; the
event's `apply` is the only place state changes, so replaying the events
rebuilds the same plan. Each event records who gave the command (`actor`)
and the command's id, so a repeated command is recognised
(`receipt_for`, `Repeated`) and answered like the first time; an id
used by another command is refused.

A command that edits an existing item names the item's revision that the
editor saw; if the item has changed since, the command is refused with an
`EditConflict` listing those changes. Commands on different items never
conflict with each other.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import typing
import uuid
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta
from typing import Any, ClassVar

import msgspec
from eventsourcing.domain import Aggregate
from eventsourcing.utils import get_topic

from domain.errors import EditConflict, InvalidValue, NotFound, NotYours, PlanClosed, Repeated, RuleViolation
from domain.inputs import (
    LONG_TEXT,
    as_date,
    as_command_id,
    as_identifier,
    as_number,
    as_revision,
    chosen,
    optional_text,
    required_text,
)
from domain.items import (
    CONFLICT_CHANGES,
    KEPT_CHANGES,
    Client,
    Closing,
    Consent,
    Goal,
    Handover,
    Item,
    Measure,
    Member,
    Need,
    Note,
    Receipt,
    Responsibility,
    Schedule,
    Step,
)
from domain.values import (
    Actor,
    ClientStance,
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
    day_in_finland,
    parse,
)

PLAN_REACH = timedelta(days=3653)
"""Ten years: a plan's dates lie no earlier than this before it was opened and no later
than this after the day they are given (a goal, a step, a measure, a consent)."""

REMEMBERED_COMMANDS = 500
"""How many of the latest command ids a plan remembers to answer repeats.

A repeat arrives within seconds or minutes (a double click, a retry after a
dropped connection); remembering the last 500 commands covers that window
while keeping the plan and its snapshots small.
"""

ZERO_TO_TEN = (0.0, 10.0)

ITEM_NAMESPACE = uuid.UUID("6f1c0f55-5a53-4a8e-9d0e-3c3f2f4f3b10")

EXPERT_PART = "named expert"
"""The part in the plan of whoever is the named expert, unless someone wrote another.

The opening gives it to the expert; an accepted handover passes it on with the
responsibility (`HandoverDecided`). The counterpart's default part is none: their badge
says what they are."""


class ClientPlan(Aggregate):
    """A client's plan, as its rules need it: the write side.

    It keeps the current needs, goals, network, responsibility, consents, steps and
    handovers, the latest change of each item (to explain a conflict) and the
    receipts of recent commands. What only readers need (notes, measures, a step's
    earlier schedules, an item's longer list of changes) is handed by the events to
    hooks (`keep_note`, `keep_measure`, `keep_earlier_schedule`, `kept_changes`)
    that this class ignores and `PlanRecord` keeps, so snapshots stay small however
    long the plan lives.
    """

    class_version = 3
    """Version 2 no longer keeps notes, measures, earlier schedules and old changes;
    version 3 takes the opening day as the day in Finland, not in UTC."""

    kept_changes: ClassVar[int] = CONFLICT_CHANGES

    class Event(Aggregate.Event):
        actor: Actor
        command_id: str
        subject: ClassVar[str | None] = None
        """The name of the attribute holding the id of the item the event is about."""

        @property
        def item_id(self) -> str | None:
            """The id of the item the event is about, as its command returned it."""
            return getattr(self, self.subject) if self.subject else None

        def mutate(self, aggregate: Any) -> Any:
            plan = super().mutate(aggregate)
            plan.remember(self)
            return plan

    class Opened(Event, Aggregate.Created):
        client_name: str
        segment: str
        language: str
        referring_party: str
        expert: dict[str, str]
        consent_id: str

        def mutate(self, aggregate: Any) -> Any:
            plan = Aggregate.Created.mutate(self, aggregate)
            plan.remember(self)
            return plan

        def apply(self, plan: ClientPlan) -> None:
            plan.opened_at = self.timestamp
            plan.opened_on = day_in_finland(self.timestamp)
            plan.client = Client(
                id="client",
                name=self.client_name,
                segment=self.segment,
                language=self.language,
                referring_party=self.referring_party,
            )
            expert = Member(**self.expert)
            plan.consents[self.consent_id] = Consent(
                id=self.consent_id,
                organisation_id=expert.organisation_id,
                organisation_name=expert.organisation_name,
                valid_from=plan.opened_on,
            )
            plan.members[expert.id] = expert
            plan.responsibility = Responsibility(id="responsibility", expert_id=expert.id)

    class ClientDetailsChanged(Event):
        @property
        def item_id(self) -> str:
            return "client"

        client_name: str
        segment: str
        language: str
        referring_party: str

        def apply(self, plan: ClientPlan) -> None:
            client = plan.client
            new = {
                "name": self.client_name,
                "segment": self.segment,
                "language": self.language,
                "referring_party": self.referring_party,
            }
            changed = [field for field, value in new.items() if getattr(client, field) != value]
            for field, value in new.items():
                setattr(client, field, value)
            plan.record_change(client, self.actor, self.timestamp, "changed", changed)

    class ClientContactRecorded(Event):
        """The client's own contact details (phone, address), encrypted like all else."""

        contact: str

        @property
        def item_id(self) -> str:
            return "client"

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(plan.client, self, contact=self.contact)

    class NonDisclosureChanged(Event):
        """A non-disclosure order (turvakielto) set or lifted: while it is set, the
        client's contact details are shown to the named expert and counterpart only."""

        active: bool

        @property
        def item_id(self) -> str:
            return "client"

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(plan.client, self, non_disclosure=self.active)

    class ConsentGiven(Event):
        subject = "consent_id"
        consent_id: str
        organisation_id: str
        organisation_name: str
        valid_from: date

        def apply(self, plan: ClientPlan) -> None:
            consent = Consent(
                id=self.consent_id,
                organisation_id=self.organisation_id,
                organisation_name=self.organisation_name,
                valid_from=self.valid_from,
            )
            plan.record_change(consent, self.actor, self.timestamp, "given", ["valid_from"])
            plan.consents[self.consent_id] = consent

    class ConsentWithdrawn(Event):
        """Withdrawing a consent takes the organisation's people out of the network."""

        subject = "consent_id"
        consent_id: str
        withdrawn_on: date

        def apply(self, plan: ClientPlan) -> None:
            consent = plan.consents[self.consent_id]
            consent.withdrawn_on = self.withdrawn_on
            plan.record_change(consent, self.actor, self.timestamp, "withdrawn", ["withdrawn_on"])
            leaving = [m.id for m in plan.members.values() if m.organisation_id == consent.organisation_id]
            for member_id in leaving:
                plan.detach_member(member_id, self.actor, self.timestamp)

    class NeedRecorded(Event):
        subject = "need_id"
        need_id: str
        category: str
        description: str
        financial: str

        def apply(self, plan: ClientPlan) -> None:
            need = Need(
                id=self.need_id,
                category=self.category,
                description=self.description,
                financial=self.financial,
            )
            plan.record_change(need, self.actor, self.timestamp, "recorded", ["category", "description", "financial"])
            plan.needs[self.need_id] = need

    class NeedUpdated(Event):
        subject = "need_id"
        need_id: str
        category: str
        description: str
        financial: str
        status: str

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(
                plan.needs[self.need_id],
                self,
                category=self.category,
                description=self.description,
                financial=self.financial,
                status=self.status,
            )

    class GoalSet(Event):
        subject = "goal_id"
        goal_id: str
        title: str
        need_ids: list[str]
        target_date: date

        def apply(self, plan: ClientPlan) -> None:
            goal = Goal(
                id=self.goal_id,
                title=self.title,
                need_ids=list(self.need_ids),
                target_date=self.target_date,
            )
            plan.record_change(goal, self.actor, self.timestamp, "set", ["title", "need_ids", "target_date"])
            plan.goals[self.goal_id] = goal

    class GoalRevised(Event):
        subject = "goal_id"
        goal_id: str
        title: str
        need_ids: list[str]
        target_date: date

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(
                plan.goals[self.goal_id],
                self,
                title=self.title,
                need_ids=list(self.need_ids),
                target_date=self.target_date,
                status=GoalStatus.REVISED.value,
            )

    class GoalSettled(Event):
        """A goal was achieved or dropped; either way it is final."""

        subject = "goal_id"
        goal_id: str
        status: str
        settled_on: date
        note: str

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(
                plan.goals[self.goal_id],
                self,
                status=self.status,
                settled_on=self.settled_on,
                settled_note=self.note,
            )

    class GoalClientViewRecorded(Event):
        """The client's own view of a goal, kept beside the professionals' wording."""

        subject = "goal_id"
        goal_id: str
        stance: str
        comment: str

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(plan.goals[self.goal_id], self, client_stance=self.stance, client_comment=self.comment)

    class MemberAdded(Event):
        subject = "member_id"
        member_id: str
        person_id: str
        name: str
        profession: str
        organisation_id: str
        organisation_name: str
        contact: str
        part: str

        def apply(self, plan: ClientPlan) -> None:
            member = Member(
                id=self.member_id,
                person_id=self.person_id,
                name=self.name,
                profession=self.profession,
                organisation_id=self.organisation_id,
                organisation_name=self.organisation_name,
                contact=self.contact,
                part=self.part,
            )
            plan.record_change(member, self.actor, self.timestamp, "added", ["name", "profession", "organisation"])
            plan.members[self.member_id] = member

    class MemberUpdated(Event):
        subject = "member_id"
        member_id: str
        profession: str
        contact: str
        part: str

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(
                plan.members[self.member_id],
                self,
                profession=self.profession,
                contact=self.contact,
                part=self.part,
            )

    class MemberRemoved(Event):
        subject = "member_id"
        member_id: str

        def apply(self, plan: ClientPlan) -> None:
            plan.detach_member(self.member_id, self.actor, self.timestamp)

    class CounterpartNamed(Event):
        subject = "member_id"
        member_id: str

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(plan.responsibility, self, counterpart_id=self.member_id)

    class HandoverProposed(Event):
        subject = "handover_id"
        handover_id: str
        from_member_id: str
        to_member_id: str
        note: str

        def apply(self, plan: ClientPlan) -> None:
            plan.handovers.append(
                Handover(
                    id=self.handover_id,
                    from_member_id=self.from_member_id,
                    to_member_id=self.to_member_id,
                    note=self.note,
                    status=HandoverStatus.PROPOSED.value,
                    proposed_by=self.actor,
                    proposed_at=self.timestamp,
                )
            )

    class HandoverDecided(Event):
        """The counterpart accepted or declined, or the proposer withdrew.

        On acceptance the expert and the counterpart swap roles: both stay
        named on the plan. Version 2 (`passes_part`): the default part of the named
        expert (`EXPERT_PART`) goes with the responsibility, counted as a change of
        both members (an edit form opened before it is then a conflict, not a silent
        undoing): the one handing over loses it, the one taking over gets it if they
        had no part of their own; a part someone wrote stays. A version 1 handover,
        recorded before that rule, changes no part, as it did when snapshots and read
        models were folded from it.
        """

        class_version = 2
        subject = "handover_id"
        handover_id: str
        status: str
        note: str
        passes_part: bool

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["passes_part"] = False

        def apply(self, plan: ClientPlan) -> None:
            handover = plan.handover(self.handover_id)
            handover.status = self.status
            handover.decided_by = self.actor
            handover.decided_at = self.timestamp
            handover.decision_note = self.note
            if self.status == HandoverStatus.ACCEPTED:
                roles = plan.responsibility
                plan.update_item(
                    roles,
                    self,
                    expert_id=handover.to_member_id,
                    counterpart_id=handover.from_member_id,
                )
                if self.passes_part:
                    plan.pass_expert_part(self, plan.members[handover.from_member_id], plan.members[handover.to_member_id])

    class StepPlanned(Event):
        subject = "step_id"
        step_id: str
        title: str
        need_id: str
        service: str
        responsible_member_id: str
        planned_start: date
        planned_end: date

        def apply(self, plan: ClientPlan) -> None:
            step = Step(
                id=self.step_id,
                title=self.title,
                need_id=self.need_id,
                service=self.service,
                responsible_member_id=self.responsible_member_id,
                planned_start=self.planned_start,
                planned_end=self.planned_end,
            )
            plan.record_change(step, self.actor, self.timestamp, "planned", ["title", "need_id", "planned_start"])
            plan.steps[self.step_id] = step

    class StepUpdated(Event):
        subject = "step_id"
        step_id: str
        title: str
        need_id: str
        service: str
        responsible_member_id: str

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(
                plan.steps[self.step_id],
                self,
                title=self.title,
                need_id=self.need_id,
                service=self.service,
                responsible_member_id=self.responsible_member_id,
            )

    class StepRescheduled(Event):
        """New planned dates; the earlier schedule is kept in the step's history."""

        subject = "step_id"
        step_id: str
        planned_start: date
        planned_end: date
        reason: str

        def apply(self, plan: ClientPlan) -> None:
            step = plan.steps[self.step_id]
            plan.keep_earlier_schedule(
                step,
                Schedule(
                    start=step.planned_start,
                    end=step.planned_end,
                    changed_at=self.timestamp,
                    by=self.actor,
                    reason=self.reason,
                ),
            )
            plan.update_item(step, self, planned_start=self.planned_start, planned_end=self.planned_end)

    class StepProgressed(Event):
        """A step started, was done or was cancelled."""

        subject = "step_id"
        step_id: str
        status: str
        on: date
        outcome: str

        def apply(self, plan: ClientPlan) -> None:
            step = plan.steps[self.step_id]
            changes: dict[str, Any] = {"status": self.status}
            if self.status == StepStatus.STARTED:
                changes["started_on"] = self.on
            else:
                changes["finished_on"] = self.on
                if self.status == StepStatus.DONE and step.started_on is None:
                    changes["started_on"] = self.on
            if self.outcome:
                changes["outcome"] = self.outcome
            plan.update_item(step, self, **changes)

    class StepOutcomeRecorded(Event):
        subject = "step_id"
        step_id: str
        outcome: str

        def apply(self, plan: ClientPlan) -> None:
            plan.update_item(plan.steps[self.step_id], self, outcome=self.outcome)

    class MeasureRecorded(Event):
        subject = "measure_id"
        measure_id: str
        kind: str
        scale_name: str
        scale_min: float
        scale_max: float
        value: float
        measured_on: date

        def apply(self, plan: ClientPlan) -> None:
            plan.keep_measure(
                Measure(
                    id=self.measure_id,
                    kind=self.kind,
                    scale_name=self.scale_name,
                    scale_min=self.scale_min,
                    scale_max=self.scale_max,
                    value=self.value,
                    measured_on=self.measured_on,
                    recorded_by=self.actor,
                )
            )

    class NoteAdded(Event):
        """A note; version 2 says who may read it (version 1 notes were internal)."""

        class_version = 2
        subject = "note_id"
        note_id: str
        text: str
        visibility: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["visibility"] = NoteVisibility.PROFESSIONALS.value

        def apply(self, plan: ClientPlan) -> None:
            plan.keep_note(
                Note(
                    id=self.note_id,
                    text=self.text,
                    visibility=self.visibility,
                    written_by=self.actor,
                    written_at=self.timestamp,
                )
            )

    class Closed(Event):
        outcome: str
        note: str
        closed_on: date

        def apply(self, plan: ClientPlan) -> None:
            plan.closing = Closing(outcome=self.outcome, note=self.note, closed_on=self.closed_on, closed_by=self.actor)

    class Reopened(Event):
        reason: str

        def apply(self, plan: ClientPlan) -> None:
            plan.closing = None

    def __init__(self) -> None:
        self.opened_at: datetime
        self.opened_on: date
        self.client: Client
        self.responsibility: Responsibility
        self.consents: dict[str, Consent] = {}
        self.needs: dict[str, Need] = {}
        self.goals: dict[str, Goal] = {}
        self.members: dict[str, Member] = {}
        self.steps: dict[str, Step] = {}
        self.handovers: list[Handover] = []
        self.closing: Closing | None = None
        self.receipts: dict[str, Receipt] = {}

    @classmethod
    def upcast_v1_v2(cls, state: dict[str, Any]) -> None:
        """A version 1 snapshot held the plan's whole record: keep what version 2 keeps.

        Version 1 kept every note and measure, every earlier schedule of a step and
        up to 20 changes of each item; the rules read none of them, and they made a
        10,000-event plan's snapshot 4.8 MB.
        """
        state.pop("notes", None)
        state.pop("measures", None)
        for item in _items_in(state):
            del item.changes[: -cls.kept_changes]
            if isinstance(item, Step):
                item.earlier_schedules = []

    @classmethod
    def upcast_v2_v3(cls, state: dict[str, Any]) -> None:
        """Up to version 2 the opening day was the UTC day of the opening: a plan opened
        between midnight and 02:00 (03:00 in summer) in Finland showed the day before.

        The opening consent (the first, as `Opened` records it first) was valid from
        that day too, and moves with it.
        """
        utc_day, opened_on = state["opened_on"], day_in_finland(state["opened_at"])
        state["opened_on"] = opened_on
        opening_consent = next(iter(state["consents"].values()), None)
        if opening_consent is not None and opening_consent.valid_from == utc_day:
            opening_consent.valid_from = opened_on

    def __deepcopy__(self, memo: dict[int, Any]) -> ClientPlan:
        """A copy that a command may change without touching the original.

        The repository hands `get_plan` (a reader, or a command run again on the fresh
        plan) a copy of the cached plan. Every part an event can change is copied; what never changes once recorded (an item's
        remembered changes, earlier schedules) is shared.
        """
        twin = object.__new__(type(self))
        twin.__dict__.update(self.__dict__)
        twin.client = _copy_part(self.client)
        twin.responsibility = _copy_part(self.responsibility)
        for name in ("consents", "needs", "goals", "members", "steps"):
            setattr(twin, name, {key: _copy_part(part) for key, part in getattr(self, name).items()})
        twin.handovers = [_copy_part(handover) for handover in self.handovers]
        twin.receipts = dict(self.receipts)
        twin._pending_events = list(self._pending_events)
        return twin

    # ----------------------------------------------------------------- opening

    @classmethod
    def open(
        cls,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        client_name: str,
        segment: str,
        language: str,
        referring_party: str,
        expert_profession: str,
        expert_contact: str = "",
        plan_id: uuid.UUID | None = None,
    ) -> ClientPlan:
        """Open a plan; the person opening it becomes its named expert.

        Coming to the service, the client consents to the expert's
        organisation taking part: that first consent is recorded with the
        opening.
        """
        _check_sender(by, command_id)
        plan_id = plan_id or uuid.uuid5(ITEM_NAMESPACE, f"plan:{command_id}")
        expert = Member(
            id=str(uuid.uuid5(plan_id, f"{command_id}:expert")),
            person_id=as_identifier(by.person_id, "person_id"),
            name=required_text(by.name, "name"),
            profession=required_text(expert_profession, "profession"),
            organisation_id=as_identifier(by.organisation_id, "organisation_id"),
            organisation_name=required_text(by.organisation_name, "organisation_name"),
            contact=optional_text(expert_contact, "contact", 300),
            part=EXPERT_PART,
        )
        return cls._create(
            cls.Opened,
            id=plan_id,
            timestamp=at,
            actor=by,
            command_id=command_id,
            client_name=required_text(client_name, "client_name"),
            segment=parse(Segment, segment, "segment").value,
            language=parse(Language, language, "language").value,
            referring_party=parse(ReferringParty, referring_party, "referring_party").value,
            expert={f: getattr(expert, f) for f in expert.__struct_fields__ if f not in ("revision", "changes")},
            consent_id=str(uuid.uuid5(plan_id, f"{command_id}:consent")),
        )

    # ------------------------------------------------------------------ queries

    @property
    def is_closed(self) -> bool:
        return self.closing is not None

    @property
    def expert(self) -> Member:
        return self.members[self.responsibility.expert_id]

    @property
    def counterpart(self) -> Member | None:
        counterpart_id = self.responsibility.counterpart_id
        return self.members[counterpart_id] if counterpart_id else None

    @property
    def pending_handover(self) -> Handover | None:
        if self.handovers and self.handovers[-1].status == HandoverStatus.PROPOSED:
            return self.handovers[-1]
        return None


    def valid_consent_for(self, organisation_id: str, day: date) -> Consent | None:
        for consent in self.consents.values():
            if consent.organisation_id == organisation_id and consent.is_valid_on(day):
                return consent
        return None

    def member_of_person(self, person_id: str) -> Member | None:
        for member in self.members.values():
            if member.person_id == person_id:
                return member
        return None

    def handover(self, handover_id: str) -> Handover:
        for handover in self.handovers:
            if handover.id == handover_id:
                return handover
        raise NotFound("There is no handover %(id)s on this plan.", field="handover_id", id=handover_id)

    # ---------------------------------------------------------------- commands

    def change_client_details(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        seen_revision: int,
        client_name: str,
        segment: str,
        language: str,
        referring_party: str,
    ) -> str:
        self._start(by, command_id, self.ClientDetailsChanged)
        self._require_revision(self.client, "client", seen_revision)
        self._trigger(
            self.ClientDetailsChanged,
            by,
            command_id,
            at,
            client_name=required_text(client_name, "client_name"),
            segment=parse(Segment, segment, "segment").value,
            language=parse(Language, language, "language").value,
            referring_party=parse(ReferringParty, referring_party, "referring_party").value,
        )
        return self.client.id

    def record_client_contact(
        self, *, by: Actor, command_id: str, at: datetime, seen_revision: int, contact: str
    ) -> str:
        self._start(by, command_id, self.ClientContactRecorded)
        self._require_revision(self.client, "client", seen_revision)
        self._trigger(
            self.ClientContactRecorded, by, command_id, at, contact=optional_text(contact, "contact", 300)
        )
        return self.client.id

    def set_non_disclosure(
        self, *, by: Actor, command_id: str, at: datetime, seen_revision: int, active: bool
    ) -> str:
        """Only the named expert or the counterpart sets or lifts a non-disclosure order."""
        self._start(by, command_id, self.NonDisclosureChanged)
        self._require_revision(self.client, "client", seen_revision)
        if not isinstance(active, bool):
            raise InvalidValue("active", "%(field)s must be yes or no.")
        self._require_responsible(by, "Only the named expert or the counterpart can change a non-disclosure order.")
        self._trigger(self.NonDisclosureChanged, by, command_id, at, active=active)
        return self.client.id

    def give_consent(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        organisation_id: str,
        organisation_name: str,
        valid_from: date | str,
    ) -> str:
        self._start(by, command_id, self.ConsentGiven)
        organisation_id = as_identifier(organisation_id, "organisation_id")
        valid_from = self._plan_day(valid_from, "valid_from", at)
        if any(
            c.organisation_id == organisation_id and c.withdrawn_on is None for c in self.consents.values()
        ):
            raise RuleViolation(
                "The client's consent for %(organisation)s is already recorded.",
                field="organisation_id",
                organisation=organisation_name,
            )
        consent_id = self._new_id(command_id)
        self._trigger(
            self.ConsentGiven,
            by,
            command_id,
            at,
            consent_id=consent_id,
            organisation_id=organisation_id,
            organisation_name=required_text(organisation_name, "organisation_name"),
            valid_from=valid_from,
        )
        return consent_id

    def withdraw_consent(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        consent_id: str,
        seen_revision: int,
    ) -> str:
        """Withdraw a consent: the organisation's people leave the network, and its
        colleagues lose their view of the plan. Also on a closed plan: the client's
        voluntariness does not end with the plan, nor should an organisation's access."""
        self._start(by, command_id, self.ConsentWithdrawn, also_closed=True)
        consent = self._find(self.consents, consent_id, "consent", "consent_id")
        self._require_revision(consent, "consent", seen_revision)
        if consent.withdrawn_on is not None:
            raise RuleViolation("This consent has already been withdrawn.", field="consent_id")
        if consent.organisation_id == self.expert.organisation_id:
            raise RuleViolation(
                "The named expert works for %(organisation)s: hand responsibility over to the "
                "counterpart before the consent for it is withdrawn.",
                field="consent_id",
                organisation=consent.organisation_name,
            )
        self._trigger(
            self.ConsentWithdrawn, by, command_id, at, consent_id=consent_id, withdrawn_on=day_in_finland(at)
        )
        return consent_id

    def record_need(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        category: str,
        description: str,
        financial: str = "",
    ) -> str:
        self._start(by, command_id, self.NeedRecorded)
        need_id = self._new_id(command_id)
        self._trigger(
            self.NeedRecorded,
            by,
            command_id,
            at,
            need_id=need_id,
            category=parse(NeedCategory, category, "category").value,
            description=required_text(description, "description", LONG_TEXT),
            financial=optional_text(financial, "financial"),
        )
        return need_id

    def update_need(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        need_id: str,
        seen_revision: int,
        category: str,
        description: str,
        financial: str,
        status: str,
    ) -> str:
        self._start(by, command_id, self.NeedUpdated)
        need = self._find(self.needs, need_id, "need", "need_id")
        self._require_revision(need, "need", seen_revision)
        self._trigger(
            self.NeedUpdated,
            by,
            command_id,
            at,
            need_id=need_id,
            category=parse(NeedCategory, category, "category").value,
            description=required_text(description, "description", LONG_TEXT),
            financial=optional_text(financial, "financial"),
            status=parse(NeedStatus, status, "status").value,
        )
        return need_id

    def set_goal(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        title: str,
        need_ids: Iterable[str],
        target_date: date | str,
    ) -> str:
        self._start(by, command_id, self.GoalSet)
        goal_id = self._new_id(command_id)
        self._trigger(
            self.GoalSet,
            by,
            command_id,
            at,
            goal_id=goal_id,
            title=required_text(title, "title", LONG_TEXT),
            need_ids=self._known_needs(need_ids),
            target_date=self._target_date(target_date, at),
        )
        return goal_id

    def revise_goal(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        goal_id: str,
        seen_revision: int,
        title: str,
        need_ids: Iterable[str],
        target_date: date | str,
    ) -> str:
        self._start(by, command_id, self.GoalRevised)
        goal = self._unsettled_goal(goal_id, seen_revision)
        self._trigger(
            self.GoalRevised,
            by,
            command_id,
            at,
            goal_id=goal.id,
            title=required_text(title, "title", LONG_TEXT),
            need_ids=self._known_needs(need_ids),
            target_date=self._target_date(target_date, at),
        )
        return goal_id

    def settle_goal(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        goal_id: str,
        seen_revision: int,
        status: str,
        note: str = "",
    ) -> str:
        """Mark a goal achieved or dropped."""
        self._start(by, command_id, self.GoalSettled)
        goal = self._unsettled_goal(goal_id, seen_revision)
        settled = parse(GoalStatus, status, "status")
        if settled not in (GoalStatus.ACHIEVED, GoalStatus.DROPPED):
            raise InvalidValue("status", "A goal is settled as achieved or dropped.")
        self._trigger(
            self.GoalSettled,
            by,
            command_id,
            at,
            goal_id=goal.id,
            status=settled.value,
            settled_on=day_in_finland(at),
            note=optional_text(note, "note"),
        )
        return goal_id

    def record_client_view_on_goal(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        goal_id: str,
        seen_revision: int,
        stance: str,
        comment: str = "",
    ) -> str:
        """The client agrees with a goal or questions it; a question needs the client's words."""
        self._start(by, command_id, self.GoalClientViewRecorded)
        goal = self._find(self.goals, goal_id, "goal", "goal_id")
        self._require_revision(goal, "goal", seen_revision)
        client_stance = parse(ClientStance, stance, "stance")
        text = optional_text(comment, "comment")
        if client_stance == ClientStance.QUESTIONS and not text:
            raise InvalidValue("comment", "Say in your own words what you would change in the goal.")
        self._trigger(
            self.GoalClientViewRecorded,
            by,
            command_id,
            at,
            goal_id=goal.id,
            stance=client_stance.value,
            comment=text,
        )
        return goal.id

    def add_member(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        person_id: str,
        name: str,
        profession: str,
        organisation_id: str,
        organisation_name: str,
        contact: str = "",
        part: str = "",
    ) -> str:
        self._start(by, command_id, self.MemberAdded)
        person_id = as_identifier(person_id, "person_id")
        organisation_id = as_identifier(organisation_id, "organisation_id")
        organisation_name = required_text(organisation_name, "organisation_name")
        if self.member_of_person(person_id):
            raise RuleViolation("%(name)s is already in the network.", field="person_id", name=name)
        if not self.valid_consent_for(organisation_id, day_in_finland(at)):
            raise RuleViolation(
                "The client has not given a valid consent for %(organisation)s to take part in the network.",
                field="organisation_id",
                organisation=organisation_name,
            )
        member_id = self._new_id(command_id)
        self._trigger(
            self.MemberAdded,
            by,
            command_id,
            at,
            member_id=member_id,
            person_id=person_id,
            name=required_text(name, "name"),
            profession=required_text(profession, "profession"),
            organisation_id=organisation_id,
            organisation_name=organisation_name,
            contact=optional_text(contact, "contact", 300),
            part=optional_text(part, "part", LONG_TEXT),
        )
        return member_id

    def update_member(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        member_id: str,
        seen_revision: int,
        profession: str,
        contact: str,
        part: str,
    ) -> str:
        self._start(by, command_id, self.MemberUpdated)
        member = self._find(self.members, member_id, "network member", "member_id")
        self._require_revision(member, "network member", seen_revision)
        self._trigger(
            self.MemberUpdated,
            by,
            command_id,
            at,
            member_id=member_id,
            profession=required_text(profession, "profession"),
            contact=optional_text(contact, "contact", 300),
            part=optional_text(part, "part", LONG_TEXT),
        )
        return member_id

    def remove_member(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        member_id: str,
        seen_revision: int,
    ) -> str:
        self._start(by, command_id, self.MemberRemoved)
        member = self._find(self.members, member_id, "network member", "member_id")
        self._require_revision(member, "network member", seen_revision)
        if member_id in (self.responsibility.expert_id, self.responsibility.counterpart_id):
            raise RuleViolation(
                "%(name)s is the named expert or the counterpart: name someone else first.",
                field="member_id",
                name=member.name,
            )
        open_steps = [s.title for s in self._open_steps() if s.responsible_member_id == member_id]
        if open_steps:
            raise RuleViolation(
                "%(name)s is responsible for open steps (%(steps)s): give them to someone else first.",
                field="member_id",
                name=member.name,
                steps=", ".join(open_steps),
            )
        self._trigger(self.MemberRemoved, by, command_id, at, member_id=member_id)
        return member_id

    def name_counterpart(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        member_id: str,
        seen_revision: int,
    ) -> str:
        """The named expert names a counterpart from another organisation."""
        self._start(by, command_id, self.CounterpartNamed)
        self._require_revision(self.responsibility, "responsibility", seen_revision)
        self._require_expert(by, "Only the named expert can name the counterpart.")
        if self.pending_handover:
            raise RuleViolation("A handover is pending: it must be decided before the counterpart changes.")
        member = self._find(self.members, member_id, "network member", "member_id")
        if member.id == self.responsibility.expert_id:
            raise RuleViolation("The named expert cannot be their own counterpart.", field="member_id")
        if member.id == self.responsibility.counterpart_id:
            raise RuleViolation("%(name)s is the counterpart already.", field="member_id", name=member.name)
        if member.organisation_id == self.expert.organisation_id:
            raise RuleViolation(
                "The counterpart must work in another organisation than the named expert (%(organisation)s).",
                field="member_id",
                organisation=self.expert.organisation_name,
            )
        self._trigger(self.CounterpartNamed, by, command_id, at, member_id=member_id)
        return member_id

    def propose_handover(self, *, by: Actor, command_id: str, at: datetime, note: str = "") -> str:
        """The named expert proposes to hand responsibility to the counterpart."""
        self._start(by, command_id, self.HandoverProposed)
        self._require_expert(by, "Only the named expert can propose a handover.")
        counterpart = self.counterpart
        if counterpart is None:
            raise RuleViolation("Name a counterpart before proposing a handover.")
        if self.pending_handover:
            raise RuleViolation("A handover is already pending.")
        handover_id = self._new_id(command_id)
        self._trigger(
            self.HandoverProposed,
            by,
            command_id,
            at,
            handover_id=handover_id,
            from_member_id=self.expert.id,
            to_member_id=counterpart.id,
            note=optional_text(note, "note"),
        )
        return handover_id

    def accept_handover(self, *, by: Actor, command_id: str, at: datetime, handover_id: str, note: str = "") -> str:
        return self._decide_handover(by, command_id, at, handover_id, HandoverStatus.ACCEPTED, note)

    def decline_handover(self, *, by: Actor, command_id: str, at: datetime, handover_id: str, note: str = "") -> str:
        return self._decide_handover(by, command_id, at, handover_id, HandoverStatus.DECLINED, note)

    def withdraw_handover(self, *, by: Actor, command_id: str, at: datetime, handover_id: str, note: str = "") -> str:
        return self._decide_handover(by, command_id, at, handover_id, HandoverStatus.WITHDRAWN, note)

    def plan_step(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        title: str,
        need_id: str,
        responsible_member_id: str,
        planned_start: date | str,
        planned_end: date | str,
        service: str = "",
    ) -> str:
        self._start(by, command_id, self.StepPlanned)
        self._find(self.needs, need_id, "need", "need_id")
        self._find(self.members, responsible_member_id, "network member", "responsible_member_id")
        start, end = self._period(planned_start, planned_end, at)
        step_id = self._new_id(command_id)
        self._trigger(
            self.StepPlanned,
            by,
            command_id,
            at,
            step_id=step_id,
            title=required_text(title, "title"),
            need_id=need_id,
            service=optional_text(service, "service", 300),
            responsible_member_id=responsible_member_id,
            planned_start=start,
            planned_end=end,
        )
        return step_id

    def update_step(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        step_id: str,
        seen_revision: int,
        title: str,
        need_id: str,
        responsible_member_id: str,
        service: str = "",
    ) -> str:
        self._start(by, command_id, self.StepUpdated)
        step = self._open_step(step_id, seen_revision)
        self._find(self.needs, need_id, "need", "need_id")
        self._find(self.members, responsible_member_id, "network member", "responsible_member_id")
        self._trigger(
            self.StepUpdated,
            by,
            command_id,
            at,
            step_id=step.id,
            title=required_text(title, "title"),
            need_id=need_id,
            service=optional_text(service, "service", 300),
            responsible_member_id=responsible_member_id,
        )
        return step_id

    def reschedule_step(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        step_id: str,
        seen_revision: int,
        planned_start: date | str,
        planned_end: date | str,
        reason: str = "",
    ) -> str:
        self._start(by, command_id, self.StepRescheduled)
        step = self._open_step(step_id, seen_revision)
        start, end = self._period(planned_start, planned_end, at)
        self._trigger(
            self.StepRescheduled,
            by,
            command_id,
            at,
            step_id=step.id,
            planned_start=start,
            planned_end=end,
            reason=optional_text(reason, "reason"),
        )
        return step_id

    def progress_step(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        step_id: str,
        seen_revision: int,
        status: str,
        on: date | str,
        outcome: str = "",
    ) -> str:
        """Start, finish or cancel a step, on a day no later than today."""
        self._start(by, command_id, self.StepProgressed)
        step = self._open_step(step_id, seen_revision)
        new_status = parse(StepStatus, status, "status")
        day = self._plan_day(on, "on", at)
        allowed = {
            StepStatus.PLANNED: {StepStatus.STARTED, StepStatus.DONE, StepStatus.CANCELLED},
            StepStatus.STARTED: {StepStatus.DONE, StepStatus.CANCELLED},
        }[StepStatus(step.status)]
        if new_status not in allowed:
            raise RuleViolation(
                "A %(current)s step cannot become %(new)s.",
                field="status",
                current=step.status,
                new=new_status.value,
            )
        if day > day_in_finland(at):
            raise InvalidValue("on", "%(field)s cannot be in the future.")
        if step.started_on and day < step.started_on:
            raise InvalidValue("on", "A step cannot end before it started (%(started)s).", started=step.started_on)
        self._trigger(
            self.StepProgressed,
            by,
            command_id,
            at,
            step_id=step.id,
            status=new_status.value,
            on=day,
            outcome=optional_text(outcome, "outcome"),
        )
        return step_id

    def record_step_outcome(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        step_id: str,
        seen_revision: int,
        outcome: str,
    ) -> str:
        self._start(by, command_id, self.StepOutcomeRecorded)
        step = self._find(self.steps, step_id, "step", "step_id")
        self._require_revision(step, "step", seen_revision)
        self._trigger(
            self.StepOutcomeRecorded,
            by,
            command_id,
            at,
            step_id=step.id,
            outcome=required_text(outcome, "outcome", LONG_TEXT),
        )
        return step_id

    def record_measure(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        kind: str,
        value: float,
        measured_on: date | str,
        scale_name: str = "",
        scale_min: float | None = None,
        scale_max: float | None = None,
    ) -> str:
        self._start(by, command_id, self.MeasureRecorded)
        measure_kind = parse(MeasureKind, kind, "kind")
        number = as_number(value, "value")
        day = self._plan_day(measured_on, "measured_on", at)
        if day > day_in_finland(at):
            raise InvalidValue("measured_on", "%(field)s cannot be in the future.")
        if measure_kind == MeasureKind.OTHER:
            name = required_text(scale_name, "scale_name")
            low = as_number(scale_min, "scale_min")
            high = as_number(scale_max, "scale_max")
            if low >= high:
                raise InvalidValue("scale_max", "The scale's upper bound must be above its lower bound.")
        else:
            name, (low, high) = measure_kind.value, ZERO_TO_TEN
            if number != int(number):
                raise InvalidValue("value", "The %(scale)s is a whole number.", scale=name)
        if not low <= number <= high:
            raise InvalidValue(
                "value",
                "The value must be between %(low)s and %(high)s.",
                low=_plain(low),
                high=_plain(high),
            )
        measure_id = self._new_id(command_id)
        self._trigger(
            self.MeasureRecorded,
            by,
            command_id,
            at,
            measure_id=measure_id,
            kind=measure_kind.value,
            scale_name=name,
            scale_min=low,
            scale_max=high,
            value=number,
            measured_on=day,
        )
        return measure_id

    def add_note(
        self,
        *,
        by: Actor,
        command_id: str,
        at: datetime,
        text: str,
        visibility: str = NoteVisibility.PROFESSIONALS.value,
    ) -> str:
        """Write a note; by default only the professionals of the network read it."""
        self._start(by, command_id, self.NoteAdded)
        note_id = self._new_id(command_id)
        self._trigger(
            self.NoteAdded,
            by,
            command_id,
            at,
            note_id=note_id,
            text=required_text(text, "text", LONG_TEXT),
            visibility=parse(NoteVisibility, visibility, "visibility").value,
        )
        return note_id

    def close(self, *, by: Actor, command_id: str, at: datetime, outcome: str, note: str = "") -> None:
        """The named expert or the counterpart closes the plan once every step is settled.

        The responsible pair coordinates the agreed measures to the end and decides the
        client's route onwards (seeds/000, seeds/001); a step still planned or started
        would be shown to the client as going on in a plan that has ended.
        """
        self._start(by, command_id, self.Closed)
        self._require_responsible(by, "Only the named expert or the counterpart can close the plan.")
        closing_outcome = parse(ClosingOutcome, outcome, "outcome")
        if self.pending_handover:
            raise RuleViolation("A handover is pending: it must be decided before the plan is closed.")
        open_steps = self._open_steps()
        if open_steps:
            raise RuleViolation(
                "Steps are still planned or started (%(steps)s): mark each one done or cancelled "
                "before the plan is closed.",
                steps=", ".join(step.title for step in open_steps),
            )
        self._trigger(
            self.Closed,
            by,
            command_id,
            at,
            outcome=closing_outcome.value,
            note=optional_text(note, "note"),
            closed_on=day_in_finland(at),
        )

    def reopen(self, *, by: Actor, command_id: str, at: datetime, reason: str) -> None:
        """The named expert or the counterpart reopens a closed plan, saying why."""
        _check_sender(by, command_id)
        self._check_repeat(by, command_id, self.Reopened)
        if not self.is_closed:
            raise RuleViolation("The plan is open already.")
        self._require_responsible(by, "Only the named expert or the counterpart can reopen the plan.")
        self._trigger(self.Reopened, by, command_id, at, reason=required_text(reason, "reason", LONG_TEXT))

    def receipt_for(self, command_id: str) -> Receipt | None:
        return self.receipts.get(command_id)

    # ------------------------------------------------------- used by the events

    def remember(self, event: ClientPlan.Event) -> None:
        """Keep the receipt of the command an event answered."""
        self.receipts[event.command_id] = Receipt(
            item_id=event.item_id,
            version=event.originator_version,
            event=type(event).__name__,
            person_id=event.actor.person_id,
        )
        if len(self.receipts) > REMEMBERED_COMMANDS:
            del self.receipts[next(iter(self.receipts))]

    def update_item(self, item: Item, event: ClientPlan.Event, **values: Any) -> None:
        changed = [field for field, value in values.items() if getattr(item, field) != value]
        for field, value in values.items():
            setattr(item, field, value)
        self.record_change(item, event.actor, event.timestamp, type(event).__name__, changed)

    def pass_expert_part(self, event: ClientPlan.Event, handing_over: Member, taking_over: Member) -> None:
        """The default part (`EXPERT_PART`) goes with the responsibility; a part someone wrote stays."""
        if handing_over.part == EXPERT_PART:
            self.update_item(handing_over, event, part="")
        if not taking_over.part:
            self.update_item(taking_over, event, part=EXPERT_PART)

    def record_change(self, item: Item, by: Actor, at: datetime, action: str, fields: list[str]) -> None:
        """Count the item's change and keep the latest `kept_changes` of them."""
        item.record_change(by, at, action, fields, keep=self.kept_changes)

    def keep_note(self, note: Note) -> None:
        """No rule reads notes: the write side drops them (`PlanRecord` keeps them)."""

    def keep_measure(self, measure: Measure) -> None:
        """No rule reads measures: the write side drops them (`PlanRecord` keeps them)."""

    def keep_earlier_schedule(self, step: Step, schedule: Schedule) -> None:
        """No rule reads a step's earlier dates: the write side drops them (`PlanRecord` keeps them)."""

    def detach_member(self, member_id: str, by: Actor, at: datetime) -> None:
        """Take a member out of the network, with what hangs on them.

        Every step they answered for, finished ones too, loses its responsible
        member: a step never points at someone outside the network (the events
        still tell who did what)."""
        del self.members[member_id]
        for step in self.steps.values():
            if step.responsible_member_id == member_id:
                step.responsible_member_id = None
                self.record_change(step, by, at, "responsible left the network", ["responsible_member_id"])
        if self.responsibility.counterpart_id == member_id:
            self.responsibility.counterpart_id = None
            self.record_change(self.responsibility, by, at, "counterpart left the network", ["counterpart_id"])
        pending = self.pending_handover
        if pending and member_id in (pending.from_member_id, pending.to_member_id):
            pending.status = HandoverStatus.WITHDRAWN.value
            pending.decided_by = by
            pending.decided_at = at
            pending.decision_note = "counterpart left the network"

    # ----------------------------------------------------------------- helpers

    def _trigger(self, event_class: type, by: Actor, command_id: str, at: datetime, **fields: Any) -> None:
        self.trigger_event(event_class, timestamp=at, actor=by, command_id=command_id, **fields)

    def _new_id(self, command_id: str) -> str:
        """Item ids follow from the command id, so a retried command names the same item."""
        return str(uuid.uuid5(self.id, command_id))

    def _start(
        self, by: Actor, command_id: str, records: type[ClientPlan.Event], *, also_closed: bool = False
    ) -> None:
        """Check the sender and the command id, then that the plan is open (unless the
        command is one given `also_closed`). ``records`` is the event the command records:
        a repeat of it is answered (:meth:`_check_repeat`)."""
        _check_sender(by, command_id)
        self._check_repeat(by, command_id, records)
        if self.is_closed and not also_closed:
            raise PlanClosed()

    def _check_repeat(self, by: Actor, command_id: str, records: type[ClientPlan.Event]) -> None:
        """Raise :class:`Repeated` if this command (the same kind, from the same person) was
        recorded already, for `PlanService` to check it asks for the same change; refuse an
        id that some other command used, so that a client reusing ids is told instead of
        answered "saved" for a change that was never made."""
        receipt = self.receipts.get(command_id)
        if receipt is None:
            return
        if receipt.event in ("", records.__name__) and receipt.person_id in ("", by.person_id):
            raise Repeated(receipt)
        raise form_used_for_another_change()

    @staticmethod
    def _require_revision(item: Item, kind: str, seen_revision: int) -> None:
        seen = as_revision(seen_revision, "seen_revision")
        if seen == item.revision:
            return
        if seen > item.revision:
            raise InvalidValue("seen_revision", "There is no revision %(seen)s of this item yet.", seen=seen)
        raise _conflict(item, kind, seen)

    def _responsible_person_ids(self) -> set[str]:
        counterpart = self.counterpart
        return {self.expert.person_id} | ({counterpart.person_id} if counterpart else set())

    def _require_responsible(self, by: Actor, message: str) -> None:
        if by.person_id not in self._responsible_person_ids():
            raise NotYours(message)

    def _require_expert(self, by: Actor, message: str) -> None:
        if by.person_id != self.expert.person_id:
            raise NotYours(message)

    @staticmethod
    def _find(items: dict[str, Any], item_id: str, kind: str, field: str) -> Any:
        """The item named by the input `field`, or a refusal that names that input."""
        if not isinstance(item_id, str) or item_id not in items:
            chosen(item_id, field)
            raise NotFound("There is no %(kind)s %(id)s on this plan.", field=field, kind=kind, id=item_id)
        return items[item_id]

    def _known_needs(self, need_ids: Iterable[str]) -> list[str]:
        if isinstance(need_ids, str) or not isinstance(need_ids, Iterable):
            raise InvalidValue("need_ids", "need_ids must be a list of needs.")
        ids = list(dict.fromkeys(need_ids))
        if not ids:
            raise InvalidValue("need_ids", "A goal must be linked to at least one need.")
        for need_id in ids:
            self._find(self.needs, need_id, "need", "need_ids")
        return ids

    def _plan_day(self, value: date | str, field: str, at: datetime, *, earliest: date | None = None) -> date:
        """A date given to the plan, no further from it than :data:`PLAN_REACH` (nor before
        ``earliest``, if given): a typo of the year (20266, 0202) is refused instead of
        stretching the timeline over millennia."""
        day = as_date(value, field)
        earliest, latest = earliest or self.opened_on - PLAN_REACH, day_in_finland(at) + PLAN_REACH
        if not earliest <= day <= latest:
            raise InvalidValue(
                field,
                "%(field)s must be between %(earliest)s and %(latest)s.",
                earliest=earliest.isoformat(),
                latest=latest.isoformat(),
            )
        return day

    def _target_date(self, target_date: date | str, at: datetime) -> date:
        target = as_date(target_date, "target_date")
        if target < self.opened_on:
            raise InvalidValue(
                "target_date",
                "The target date cannot be before the plan was opened (%(opened)s).",
                opened=self.opened_on.isoformat(),
            )
        return self._plan_day(target, "target_date", at, earliest=self.opened_on)

    def _unsettled_goal(self, goal_id: str, seen_revision: int) -> Goal:
        goal = self._find(self.goals, goal_id, "goal", "goal_id")
        self._require_revision(goal, "goal", seen_revision)
        if goal.status in (GoalStatus.ACHIEVED, GoalStatus.DROPPED):
            raise RuleViolation("The goal is %(status)s already; set a new goal instead.", status=goal.status)
        return goal

    def _period(self, start: date | str, end: date | str, at: datetime) -> tuple[date, date]:
        """A step's planned dates: it may have begun before the plan, not ended before it.

        A service already going on when the client came (a rehabilitation period, an
        assessment begun at the health centre) belongs on the path: the expert goes
        through the client's earlier history and builds on it (seeds/001). A step planned
        to be over before the plan was opened is no part of the plan, like a goal.
        """
        first = self._plan_day(start, "planned_start", at)
        last = as_date(end, "planned_end")
        if last < first:
            raise InvalidValue("planned_end", "The end date cannot be before the start date.")
        if last < self.opened_on:
            raise InvalidValue(
                "planned_end",
                "The planned end cannot be before the plan was opened (%(opened)s).",
                opened=self.opened_on.isoformat(),
            )
        return first, self._plan_day(last, "planned_end", at, earliest=self.opened_on)

    def _open_steps(self) -> list[Step]:
        return [s for s in self.steps.values() if s.status in (StepStatus.PLANNED, StepStatus.STARTED)]

    def _open_step(self, step_id: str, seen_revision: int) -> Step:
        step = self._find(self.steps, step_id, "step", "step_id")
        self._require_revision(step, "step", seen_revision)
        if step.status not in (StepStatus.PLANNED, StepStatus.STARTED):
            raise RuleViolation("The step is %(status)s: it can no longer be changed.", status=step.status)
        return step

    def _decide_handover(
        self, by: Actor, command_id: str, at: datetime, handover_id: str, decision: HandoverStatus, note: str
    ) -> str:
        self._start(by, command_id, self.HandoverDecided)
        handover = self.handover(handover_id)
        if handover.status != HandoverStatus.PROPOSED:
            raise RuleViolation("This handover was %(status)s already.", status=handover.status)
        decider_id = handover.from_member_id if decision == HandoverStatus.WITHDRAWN else handover.to_member_id
        if by.person_id != self.members[decider_id].person_id:
            if decision == HandoverStatus.WITHDRAWN:
                raise NotYours("Only the expert who proposed the handover can withdraw it.")
            raise NotYours("This handover was not proposed to you.")
        self._trigger(
            self.HandoverDecided,
            by,
            command_id,
            at,
            handover_id=handover_id,
            status=decision.value,
            note=optional_text(note, "note"),
            passes_part=True,
        )
        return handover_id


class PlanRecord(ClientPlan):
    """The plan with everything it has recorded, for reading: the read side.

    The same events, applied by the same code, build it; it also keeps every note
    and measure, each step's earlier schedules and the latest 20 changes of each
    item, which pages, the history view and `polku plan` show. It is folded from
    events (`fold`) by the read model and for a plan at an earlier version, and is
    never saved: commands run on `ClientPlan`.
    """

    class_version = 1
    """A read-side plan keeps everything a version 1 plan kept: nothing to upcast."""

    kept_changes: ClassVar[int] = KEPT_CHANGES

    def __init__(self) -> None:
        super().__init__()
        self.measures: list[Measure] = []
        self.notes: list[Note] = []

    @classmethod
    def fold(cls, event: ClientPlan.Event, record: PlanRecord | None) -> PlanRecord:
        """`record` after `event`; an `Opened` event starts a new record."""
        if isinstance(event, ClientPlan.Opened):
            return dataclasses.replace(event, originator_topic=get_topic(cls)).mutate(None)
        return event.mutate(record)

    @classmethod
    def replay(cls, events: Iterable[ClientPlan.Event]) -> PlanRecord | None:
        record = None
        for event in events:
            record = cls.fold(event, record)
        return record

    def __deepcopy__(self, memo: dict[int, Any]) -> PlanRecord:
        twin = super().__deepcopy__(memo)
        twin.measures = list(self.measures)
        twin.notes = list(self.notes)
        return twin

    def explain(self, conflict: EditConflict) -> EditConflict:
        """The conflict again, with the longer list of changes this record keeps.

        The write side remembers only each item's latest change; an editor further
        behind is told up to `KEPT_CHANGES` changes from the record at the same version.
        """
        item = next((item for item in _items_in(vars(self)) if item.id == conflict.item_id), None)
        if item is None:
            return conflict
        return _conflict(item, conflict.item_kind, conflict.seen_revision)

    def keep_note(self, note: Note) -> None:
        self.notes.append(note)

    def keep_measure(self, measure: Measure) -> None:
        self.measures.append(measure)

    def keep_earlier_schedule(self, step: Step, schedule: Schedule) -> None:
        step.earlier_schedules.append(schedule)


def _conflict(item: Item, kind: str, seen: int) -> EditConflict:
    """A refusal of an edit made on revision `seen` of `item`, with the changes since that the plan remembers."""
    return EditConflict(
        item_kind=kind,
        item_id=item.id,
        seen_revision=seen,
        current_revision=item.revision,
        changes=[
            {
                "revision": change.revision,
                "by_name": change.by.name,
                "by_organisation": change.by.organisation_name,
                "at": change.at.isoformat(),
                "action": change.action,
                "fields": list(change.fields),
            }
            for change in item.changes_since(seen)
        ],
    )


def _items_in(state: dict[str, Any]) -> Iterator[Item]:
    """Every item of a plan's state: the client, the roles, consents, needs, goals, members, steps."""
    yield state["client"]
    yield state["responsibility"]
    for name in ("consents", "needs", "goals", "members", "steps"):
        yield from state[name].values()


def _copy_part(part: Any) -> Any:
    """A new Struct with the same values and lists of its own (their elements never change)."""
    twin = copy.copy(part)
    for name in _list_fields(type(part)):
        setattr(twin, name, list(getattr(part, name)))
    return twin


@functools.cache
def _list_fields(struct_type: type[msgspec.Struct]) -> tuple[str, ...]:
    """The names of a part's list fields (looked up once per type: every command copies every part)."""
    return tuple(
        field.name for field in msgspec.structs.fields(struct_type) if typing.get_origin(field.type) is list
    )


def form_used_for_another_change() -> RuleViolation:
    """The refusal of a command id that recorded another change (another kind, another
    person, or other content: `PlanService` compares a repeat with what was recorded)."""
    return RuleViolation("This form was already used for another change. Send it again to save this one.",
                         field="command_id")


def _check_sender(by: object, command_id: object) -> None:
    if not isinstance(by, Actor):
        raise InvalidValue("actor", "A command must say who gives it.")
    as_command_id(command_id)


def _plain(number: float) -> str:
    return str(int(number)) if number == int(number) else str(number)
