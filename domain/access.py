"""Who may see and do what with a plan: the one table the server decides by.

A person's relation to a plan follows from the plan itself: the named expert,
the counterpart, another network member, a colleague in the expert's or the
counterpart's organisation while the client's consent for that organisation
is valid, the client, an administrator, or nobody in particular. Every page,
every form and every websocket message asks `may(relation, action)`; the
plan's own rules (only the counterpart accepts a handover, and so on) are
checked by the aggregate on top of this.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from domain.plan import ClientPlan


class Relation(StrEnum):
    EXPERT = "expert"
    COUNTERPART = "counterpart"
    MEMBER = "member"
    COLLEAGUE = "colleague"
    CLIENT = "client"
    ADMIN = "admin"
    OUTSIDER = "outsider"


class Action(StrEnum):
    VIEW_PLAN = "view_plan"
    VIEW_HISTORY = "view_history"
    VIEW_INTERNAL_NOTES = "view_internal_notes"
    VIEW_CLIENT_CONTACT = "view_client_contact"
    EDIT_PLAN = "edit_plan"
    SET_NON_DISCLOSURE = "set_non_disclosure"
    CLOSE_PLAN = "close_plan"
    CLIENT_VIEW = "client_view"
    CLIENT_COMMENT = "client_comment"
    CLIENT_GOAL_VIEW = "client_goal_view"
    CLIENT_CONSENT = "client_consent"
    VIEW_OWN_ACCESS_LOG = "view_own_access_log"
    EXPORT_ACCESS_LOG = "export_access_log"
    ERASE_PLAN = "erase_plan"


PROFESSIONALS = frozenset({Relation.EXPERT, Relation.COUNTERPART, Relation.MEMBER, Relation.COLLEAGUE})
RESPONSIBLE = frozenset({Relation.EXPERT, Relation.COUNTERPART})
CLIENT_ONLY = frozenset({Relation.CLIENT})

PERMISSIONS: dict[Action, frozenset[Relation]] = {
    Action.VIEW_PLAN: PROFESSIONALS,
    Action.VIEW_HISTORY: PROFESSIONALS,
    Action.VIEW_INTERNAL_NOTES: PROFESSIONALS,
    Action.VIEW_CLIENT_CONTACT: PROFESSIONALS,
    Action.EDIT_PLAN: PROFESSIONALS,
    Action.SET_NON_DISCLOSURE: RESPONSIBLE,
    Action.CLOSE_PLAN: RESPONSIBLE,
    Action.CLIENT_VIEW: CLIENT_ONLY,
    Action.CLIENT_COMMENT: CLIENT_ONLY,
    Action.CLIENT_GOAL_VIEW: CLIENT_ONLY,
    Action.CLIENT_CONSENT: CLIENT_ONLY,
    Action.VIEW_OWN_ACCESS_LOG: CLIENT_ONLY,
    Action.EXPORT_ACCESS_LOG: frozenset({Relation.ADMIN}),
    Action.ERASE_PLAN: frozenset({Relation.ADMIN}),
}
"""Every action, and the relations to the plan that allow it."""

NON_DISCLOSURE_READERS = RESPONSIBLE
"""Who still sees the client's contact details under a non-disclosure order."""

PROFESSIONAL_COMMANDS: frozenset[str] = frozenset(
    {
        "change_client_details",
        "record_client_contact",
        "set_non_disclosure",
        "give_consent",
        "withdraw_consent",
        "record_need",
        "update_need",
        "set_goal",
        "revise_goal",
        "settle_goal",
        "add_member",
        "update_member",
        "remove_member",
        "name_counterpart",
        "propose_handover",
        "accept_handover",
        "decline_handover",
        "withdraw_handover",
        "plan_step",
        "update_step",
        "reschedule_step",
        "progress_step",
        "record_step_outcome",
        "record_measure",
        "add_note",
        "close_plan",
        "reopen_plan",
    }
)
"""The plan service's commands a professional gives from the plan page (EDIT_PLAN)."""

PROFESSIONAL_COMMAND_ACTIONS: dict[str, Action] = {
    "set_non_disclosure": Action.SET_NON_DISCLOSURE,
    "close_plan": Action.CLOSE_PLAN,
    "reopen_plan": Action.CLOSE_PLAN,
}
"""Professional commands that need an action of their own besides EDIT_PLAN.

Closing and reopening are the responsible pair's: the named expert (or the counterpart
who shares the responsibility) coordinates the agreed measures through the whole process
and decides the client's route onwards (seeds/000: "Seuranta yhteyshenkilö koordinoi
jatkopolkua"; seeds/001: the asiakasvastaava "koordinoi ja seuraa sovittuja toimenpiteitä
koko prosessin ajan"); a colleague who only shares their organisation does not."""

CLIENT_COMMANDS: dict[str, Action] = {
    "add_note": Action.CLIENT_COMMENT,
    "record_client_view_on_goal": Action.CLIENT_GOAL_VIEW,
    "give_consent": Action.CLIENT_CONSENT,
    "withdraw_consent": Action.CLIENT_CONSENT,
}
"""The commands a client gives from their own view, and the action each needs."""


def relation_to(
    plan: ClientPlan,
    *,
    kind: str,
    person_id: str,
    organisation_id: str,
    client_plan_id: str | None,
    today: date,
) -> Relation:
    """How a signed-in person stands to the plan, decided from the plan alone."""
    if kind == "admin":
        return Relation.ADMIN
    if kind == "client":
        return Relation.CLIENT if client_plan_id == str(plan.id) else Relation.OUTSIDER
    if kind != "professional":
        return Relation.OUTSIDER
    member = plan.member_of_person(person_id)
    if member is not None:
        if member.id == plan.responsibility.expert_id:
            return Relation.EXPERT
        if member.id == plan.responsibility.counterpart_id:
            return Relation.COUNTERPART
        return Relation.MEMBER
    responsible_organisations = {plan.expert.organisation_id}
    if plan.counterpart is not None:
        responsible_organisations.add(plan.counterpart.organisation_id)
    if organisation_id in responsible_organisations and plan.valid_consent_for(organisation_id, today):
        return Relation.COLLEAGUE
    return Relation.OUTSIDER


def may(relation: Relation, action: Action) -> bool:
    return relation in PERMISSIONS[action]


def may_give(relation: Relation, command: str) -> bool:
    """Whether someone of this relation may give this plan service command."""
    if relation == Relation.CLIENT:
        return command in CLIENT_COMMANDS and may(relation, CLIENT_COMMANDS[command])
    if command not in PROFESSIONAL_COMMANDS or not may(relation, Action.EDIT_PLAN):
        return False
    return may(relation, PROFESSIONAL_COMMAND_ACTIONS.get(command, Action.EDIT_PLAN))


def may_see_client_contact(plan: ClientPlan, relation: Relation) -> bool:
    """Contact details under a non-disclosure order: the expert and counterpart only."""
    if plan.client.non_disclosure:
        return relation in NON_DISCLOSURE_READERS
    return may(relation, Action.VIEW_CLIENT_CONTACT) or relation == Relation.CLIENT
