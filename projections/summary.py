"""What a caseload shows of a plan, and who the plan belongs to."""

from __future__ import annotations

from typing import Any

from domain.plan import ClientPlan
from domain.values import StepStatus
from projections.views import Person


def summarise(plan: ClientPlan) -> dict[str, Any]:
    """The plan's caseload line: client, status, people, next step, pending handover.

    It also carries what the read model keeps in summary columns and rows
    (``projections.views``): the need counts of the statistics and the consent days of
    the caseload's access rule, so that no page decodes a whole plan for them.
    """
    counterpart = plan.counterpart
    handover = plan.pending_handover
    next_step = min(
        (s for s in plan.steps.values() if s.status in (StepStatus.PLANNED, StepStatus.STARTED)),
        key=lambda s: (s.planned_end if s.status == StepStatus.STARTED else s.planned_start, s.title),
        default=None,
    )
    return {
        "client_name": plan.client.name,
        "segment": plan.client.segment,
        "language": plan.client.language,
        "is_closed": plan.is_closed,
        "closing_outcome": plan.closing.outcome if plan.closing else None,
        "opened_on": plan.opened_on.isoformat(),
        "expert": {"name": plan.expert.name, "organisation": plan.expert.organisation_name},
        "counterpart": (
            {"name": counterpart.name, "organisation": counterpart.organisation_name} if counterpart else None
        ),
        "next_step": (
            {
                "title": next_step.title,
                "status": next_step.status,
                "start": next_step.planned_start.isoformat(),
                "end": next_step.planned_end.isoformat(),
            }
            if next_step
            else None
        ),
        "pending_handover": (
            {
                "from_name": plan.members[handover.from_member_id].name,
                "to_name": plan.members[handover.to_member_id].name,
                "to_person_id": plan.members[handover.to_member_id].person_id,
                "proposed_at": handover.proposed_at.isoformat(),
            }
            if handover
            else None
        ),
        "open_needs": sum(1 for need in plan.needs.values() if need.status != "resolved"),
        "needs_by_category": needs_by_category(plan),
        "consent_from": consent_from(plan),
    }


def needs_by_category(plan: ClientPlan) -> dict[str, dict[str, int]]:
    """For the statistics: per need category, how many needs and how many not yet resolved."""
    counts: dict[str, dict[str, int]] = {}
    for need in plan.needs.values():
        count = counts.setdefault(str(need.category), {"all": 0, "open": 0})
        count["all"] += 1
        count["open"] += need.status != "resolved"
    return counts


def consent_from(plan: ClientPlan) -> dict[str, str]:
    """For the caseload's access rule: per organisation, the first day its consent is valid.

    ``Consent.is_valid_on``: a consent is valid from its first day on until it is
    withdrawn, and a withdrawn consent is never valid again, so an organisation's consent
    is valid on exactly the days from the earliest start of its consents not withdrawn.
    A day written as ISO text orders as the day does.
    """
    starts: dict[str, str] = {}
    for consent in plan.consents.values():
        if consent.withdrawn_on is None:
            start = consent.valid_from.isoformat()
            starts[consent.organisation_id] = min(start, starts.get(consent.organisation_id, start))
    return starts


def people_of(plan: ClientPlan) -> list[Person]:
    """Everyone in the plan's network, with their role in it."""
    roles = {plan.responsibility.expert_id: "expert"}
    if plan.responsibility.counterpart_id:
        roles[plan.responsibility.counterpart_id] = "counterpart"
    return [
        Person(person_id=member.person_id, organisation_id=member.organisation_id, role=roles.get(member.id, "member"))
        for member in plan.members.values()
    ]
