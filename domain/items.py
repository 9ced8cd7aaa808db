"""The parts of a client plan, as the aggregate keeps them.

They are mutable msgspec Structs: the aggregate's events change them in
place, and a snapshot stores them through one generic transcoding per type
(`domain.transcodings`). An editable part is an `Item` with a revision that
counts its changes and a short list of the latest changes, so that a stale
edit can be told what changed since and by whom (the read side keeps a longer
list, for pages).
"""

from __future__ import annotations

from datetime import date, datetime

import msgspec

from domain.values import Actor

KEPT_CHANGES = 20
"""How many of an item's latest changes the read side (`PlanRecord`) shows."""

CONFLICT_CHANGES = 1
"""How many of an item's latest changes the write side keeps to tell an editor, whose
edit came too late, what changed since and by whom. One covers the usual conflict (one
change behind); for an older one `PlanService` reads the plan's events. Each change kept
per item cost a fifth of a 10,000-event plan's snapshot (about 130 kB)."""


class Change(msgspec.Struct, kw_only=True):
    revision: int
    by: Actor
    at: datetime
    action: str
    fields: list[str]


class Item(msgspec.Struct, kw_only=True):
    id: str
    revision: int = 0
    changes: list[Change] = []

    def record_change(self, by: Actor, at: datetime, action: str, fields: list[str], *, keep: int) -> None:
        """Count a change and remember it among the latest `keep`."""
        self.revision += 1
        self.changes.append(Change(revision=self.revision, by=by, at=at, action=action, fields=fields))
        del self.changes[:-keep]

    def changes_since(self, revision: int) -> list[Change]:
        return [change for change in self.changes if change.revision > revision]


class Client(Item, kw_only=True):
    name: str
    segment: str
    language: str
    referring_party: str
    contact: str = ""
    non_disclosure: bool = False


class Responsibility(Item, kw_only=True):
    """Who answers for the plan: the named expert and the counterpart."""

    expert_id: str
    counterpart_id: str | None = None


class Consent(Item, kw_only=True):
    organisation_id: str
    organisation_name: str
    valid_from: date
    withdrawn_on: date | None = None

    def is_valid_on(self, day: date) -> bool:
        return self.valid_from <= day and self.withdrawn_on is None


class Need(Item, kw_only=True):
    category: str
    description: str
    financial: str = ""
    status: str = "open"


class Goal(Item, kw_only=True):
    title: str
    need_ids: list[str]
    target_date: date
    status: str = "set"
    settled_on: date | None = None
    settled_note: str = ""
    client_stance: str = ""
    client_comment: str = ""


class Member(Item, kw_only=True):
    person_id: str
    name: str
    profession: str
    organisation_id: str
    organisation_name: str
    contact: str = ""
    part: str = ""


class Schedule(msgspec.Struct, kw_only=True):
    start: date
    end: date
    changed_at: datetime
    by: Actor
    reason: str = ""


class Step(Item, kw_only=True):
    title: str
    need_id: str
    service: str = ""
    responsible_member_id: str | None
    planned_start: date
    planned_end: date
    status: str = "planned"
    started_on: date | None = None
    finished_on: date | None = None
    outcome: str = ""
    earlier_schedules: list[Schedule] = []


class Measure(msgspec.Struct, kw_only=True):
    id: str
    kind: str
    scale_name: str
    scale_min: float
    scale_max: float
    value: float
    measured_on: date
    recorded_by: Actor


class Note(msgspec.Struct, kw_only=True):
    id: str
    text: str
    visibility: str = "professionals"
    """Snapshots from before notes had a visibility hold internal notes."""
    written_by: Actor
    written_at: datetime


class Handover(msgspec.Struct, kw_only=True):
    id: str
    from_member_id: str
    to_member_id: str
    note: str
    status: str
    proposed_by: Actor
    proposed_at: datetime
    decided_by: Actor | None = None
    decided_at: datetime | None = None
    decision_note: str = ""


class Closing(msgspec.Struct, kw_only=True):
    outcome: str
    note: str
    closed_on: date
    closed_by: Actor


class Receipt(msgspec.Struct, frozen=True, kw_only=True):
    """What a command recorded: enough to answer a repeat of it the same way."""

    item_id: str | None
    version: int
    event: str = ""
    """The event's class name: a repeat records the same kind of event ("" in a receipt kept
    before receipts named it: any command with its id counts as its repeat)."""
    person_id: str = ""
    """Who gave the command ("" as for ``event``)."""
