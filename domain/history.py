"""A plan's history as sentences: who, from which organisation, when, what.

Each entry keeps its sentence as an English template with named values, so
the web layer can translate the template through gettext; `text` is the
English sentence for the command line and logs.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from domain.plan import ClientPlan


class HistoryEntry(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    at: datetime
    by_name: str
    by_organisation: str
    template: str
    values: dict[str, str]

    @property
    def text(self) -> str:
        return self.template % self.values


def describe(event: ClientPlan.Event, after: ClientPlan, member_names: dict[str, str]) -> HistoryEntry:
    """Describe one event, with the plan just after it and the names of every member
    the plan has had (someone removed by the event is no longer in the plan)."""
    template, values = _SENTENCES[type(event).__name__](event, member_names, after)
    return HistoryEntry(
        version=event.originator_version,
        at=event.timestamp,
        by_name=event.actor.name,
        by_organisation=event.actor.organisation_name,
        template=template,
        values={key: str(value) for key, value in values.items()},
    )


def _member_name(names: dict[str, str], member_id: str | None) -> str:
    return names.get(member_id, "-") if member_id else "-"


def _step_title(plan: ClientPlan, step_id: str) -> str:
    return plan.steps[step_id].title


Sentence = tuple[str, dict[str, Any]]

_SENTENCES: dict[str, Any] = {
    "Opened": lambda e, n, a: (
        "Opened the plan for %(client)s (%(segment)s), referred by %(referrer)s.",
        {"client": e.client_name, "segment": e.segment, "referrer": e.referring_party},
    ),
    "ClientDetailsChanged": lambda e, n, a: (
        "Changed the client's details: %(fields)s.",
        {"fields": ", ".join(a.client.changes[-1].fields) or "no change"},
    ),
    "ClientContactRecorded": lambda e, n, a: ("Recorded the client's contact details.", {}),
    "NonDisclosureChanged": lambda e, n, a: (
        ("Set a non-disclosure order on the client's details.", {})
        if e.active
        else ("Lifted the non-disclosure order on the client's details.", {})
    ),
    "GoalClientViewRecorded": lambda e, n, a: (
        "Recorded the client's view of the goal %(title)s: %(stance)s.",
        {"title": a.goals[e.goal_id].title, "stance": e.stance},
    ),
    "ConsentGiven": lambda e, n, a: (
        "Recorded the client's consent for %(organisation)s from %(date)s.",
        {"organisation": e.organisation_name, "date": e.valid_from.isoformat()},
    ),
    "ConsentWithdrawn": lambda e, n, a: (
        "Recorded that the client withdrew the consent for %(organisation)s.",
        {"organisation": a.consents[e.consent_id].organisation_name},
    ),
    "NeedRecorded": lambda e, n, a: (
        "Recorded a need (%(category)s): %(description)s",
        {"category": e.category, "description": e.description},
    ),
    "NeedUpdated": lambda e, n, a: (
        "Updated the need %(description)s: %(fields)s.",
        {"description": e.description, "fields": ", ".join(a.needs[e.need_id].changes[-1].fields) or "no change"},
    ),
    "GoalSet": lambda e, n, a: ("Set the goal %(title)s by %(date)s.", {"title": e.title, "date": e.target_date}),
    "GoalRevised": lambda e, n, a: (
        "Revised the goal %(title)s, now by %(date)s.",
        {"title": e.title, "date": e.target_date},
    ),
    "GoalSettled": lambda e, n, a: (
        "Marked the goal %(title)s as %(status)s.",
        {"title": a.goals[e.goal_id].title, "status": e.status},
    ),
    "MemberAdded": lambda e, n, a: (
        "Added %(name)s (%(profession)s, %(organisation)s) to the network.",
        {"name": e.name, "profession": e.profession, "organisation": e.organisation_name},
    ),
    "MemberUpdated": lambda e, n, a: (
        "Updated %(name)s's part in the network.",
        {"name": _member_name(n, e.member_id)},
    ),
    "MemberRemoved": lambda e, n, a: (
        "Removed %(name)s from the network.",
        {"name": _member_name(n, e.member_id)},
    ),
    "CounterpartNamed": lambda e, n, a: (
        "Named %(name)s as the counterpart.",
        {"name": _member_name(n, e.member_id)},
    ),
    "HandoverProposed": lambda e, n, a: (
        "Proposed to hand responsibility over to %(name)s.",
        {"name": _member_name(n, e.to_member_id)},
    ),
    "HandoverDecided": lambda e, n, a: (
        "The handover to %(name)s was %(status)s.",
        {"name": _member_name(n, a.handover(e.handover_id).to_member_id), "status": e.status},
    ),
    "StepPlanned": lambda e, n, a: (
        "Planned the step %(title)s for %(start)s – %(end)s.",
        {"title": e.title, "start": e.planned_start, "end": e.planned_end},
    ),
    "StepUpdated": lambda e, n, a: ("Updated the step %(title)s.", {"title": e.title}),
    "StepRescheduled": lambda e, n, a: (
        "Rescheduled the step %(title)s to %(start)s – %(end)s.",
        {"title": _step_title(a, e.step_id), "start": e.planned_start, "end": e.planned_end},
    ),
    "StepProgressed": lambda e, n, a: (
        "Marked the step %(title)s as %(status)s on %(date)s.",
        {"title": _step_title(a, e.step_id), "status": e.status, "date": e.on},
    ),
    "StepOutcomeRecorded": lambda e, n, a: (
        "Recorded the outcome of the step %(title)s.",
        {"title": _step_title(a, e.step_id)},
    ),
    "MeasureRecorded": lambda e, n, a: (
        "Recorded %(scale)s: %(value)s on %(date)s.",
        {"scale": e.scale_name, "value": f"{e.value:g}", "date": e.measured_on},
    ),
    "NoteAdded": lambda e, n, a: ("Wrote a note.", {}),
    "Closed": lambda e, n, a: ("Closed the plan with the outcome %(outcome)s.", {"outcome": e.outcome}),
    "Reopened": lambda e, n, a: ("Reopened the plan: %(reason)s", {"reason": e.reason}),
}
