"""The domain's and the timeline's words, marked for the gettext catalogues, and how to say them.

The domain (``domain/``) and the timeline (``timeline/``) speak English: a refused command
carries a message template with named values (``DomainError.template``/``.params``), a
history entry a sentence template (``HistoryEntry.template``/``.values``), and the
timeline calls the ``gettext`` it is given with plain English words. Message extraction
only looks at ``web/``, so every one of those strings is listed here with :func:`N_`;
a test checks that the list stays complete.

:func:`translate_message` translates a template and fills it in, translating the values
that are words of the domain too (a field name, a need category, a step status...).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from web.i18n import N_, format_date

__all__ = (
    "ERROR_TEMPLATES",
    "FIELD_LABELS",
    "HISTORY_TEMPLATES",
    "ITEM_KINDS",
    "TIMELINE_WORDS",
    "VOCABULARIES",
    "field_label",
    "translate_message",
    "vocabulary_label",
)

Gettext = Callable[[str], str]

#: Why a command was refused (``domain/errors.py``, ``inputs.py``, ``values.py``, ``plan.py``).
ERROR_TEMPLATES = (
    N_("There is no plan %(plan_id)s."),
    N_("The plan is closed: reopen it before changing it."),
    N_("This %(item_kind)s was changed by %(names)s after you opened it."),
    N_("The plan %(plan_id)s has been erased at the end of its retention period."),
    N_("The plan is busy with other edits; please try again."),
    N_("Only a closed plan can be erased."),
    N_("%(field)s: choose one."),
    N_("No one in %(organisation)s has the user id %(person_id)s."),
    N_("No organisation has the id %(organisation_id)s."),
    N_("%(field)s: choose one of %(allowed)s."),
    N_("%(field)s must be a date (YYYY-MM-DD)."),
    N_("%(field)s must not be empty."),
    N_("%(field)s must be text."),
    N_("%(field)s contains a forbidden character."),
    N_("%(field)s is too long: at most %(limit)s characters."),
    N_("%(field)s must be a number."),
    N_("%(field)s must be a finite number."),
    N_("%(field)s must be a whole number of 0 or more."),
    N_("%(field)s must be a non-empty identifier."),
    N_("%(field)s must be a non-empty identifier without surrounding spaces."),
    N_("There is no handover %(id)s on this plan."),
    N_("This consent has already been withdrawn."),
    N_("A goal is settled as achieved or dropped."),
    N_("A handover is pending: it must be decided before the counterpart changes."),
    N_("The named expert cannot be their own counterpart."),
    N_("%(name)s is the counterpart already."),
    N_("Name a counterpart before proposing a handover."),
    N_("A handover is already pending."),
    N_("A handover is pending: it must be decided before the plan is closed."),
    N_("The plan is open already."),
    N_("A command must say who gives it."),
    N_("need_ids must be a list of needs."),
    N_("A goal must be linked to at least one need."),
    N_("The end date cannot be before the start date."),
    N_("This handover was not proposed to you."),
    N_("The client's consent for %(organisation)s is already recorded."),
    N_(
        "The named expert works for %(organisation)s: hand responsibility over to the "
        "counterpart before the consent for it is withdrawn."
    ),
    N_("%(name)s is already in the network."),
    N_("The client has not given a valid consent for %(organisation)s to take part in the network."),
    N_("%(name)s is the named expert or the counterpart: name someone else first."),
    N_("%(name)s is responsible for open steps (%(steps)s): give them to someone else first."),
    N_("Only the named expert can name the counterpart."),
    N_("Only the named expert or the counterpart can change a non-disclosure order."),
    N_("%(field)s must be yes or no."),
    N_("Say in your own words what you would change in the goal."),
    N_("Only the named expert can propose a handover."),
    N_("The counterpart must work in another organisation than the named expert (%(organisation)s)."),
    N_("A %(current)s step cannot become %(new)s."),
    N_("%(field)s cannot be in the future."),
    N_("A step cannot end before it started (%(started)s)."),
    N_("The scale's upper bound must be above its lower bound."),
    N_("The value must be between %(low)s and %(high)s."),
    N_("The %(scale)s is a whole number."),
    N_("There is no revision %(seen)s of this item yet."),
    N_("There is no %(kind)s %(id)s on this plan."),
    N_("The target date cannot be before the plan was opened (%(opened)s)."),
    N_("%(field)s must be between %(earliest)s and %(latest)s."),
    N_("This form was already used for another change. Send it again to save this one."),
    N_("The goal is %(status)s already; set a new goal instead."),
    N_("The step is %(status)s: it can no longer be changed."),
    N_("This handover was %(status)s already."),
    N_("Only the expert who proposed the handover can withdraw it."),
    N_("Only the named expert or the counterpart can close the plan."),
    N_("Only the named expert or the counterpart can reopen the plan."),
    N_(
        "Steps are still planned or started (%(steps)s): mark each one done or cancelled "
        "before the plan is closed."
    ),
    N_("The planned end cannot be before the plan was opened (%(opened)s)."),
)

#: How a list of allowed choices ends ("a, b or c"), in the reader's language.
LAST_OF_CHOICES = N_("%(choices)s or %(last)s")

#: The sentences of a plan's history (``domain/history.py``).
HISTORY_TEMPLATES = (
    N_("Opened the plan for %(client)s (%(segment)s), referred by %(referrer)s."),
    N_("Changed the client's details: %(fields)s."),
    N_("Recorded the client's contact details."),
    N_("Set a non-disclosure order on the client's details."),
    N_("Lifted the non-disclosure order on the client's details."),
    N_("Recorded the client's view of the goal %(title)s: %(stance)s."),
    N_("Recorded the client's consent for %(organisation)s from %(date)s."),
    N_("Recorded that the client withdrew the consent for %(organisation)s."),
    N_("Recorded a need (%(category)s): %(description)s"),
    N_("Updated the need %(description)s: %(fields)s."),
    N_("Set the goal %(title)s by %(date)s."),
    N_("Revised the goal %(title)s, now by %(date)s."),
    N_("Marked the goal %(title)s as %(status)s."),
    N_("Added %(name)s (%(profession)s, %(organisation)s) to the network."),
    N_("Updated %(name)s's part in the network."),
    N_("Removed %(name)s from the network."),
    N_("Named %(name)s as the counterpart."),
    N_("Proposed to hand responsibility over to %(name)s."),
    N_("The handover to %(name)s was %(status)s."),
    N_("Planned the step %(title)s for %(start)s – %(end)s."),
    N_("Updated the step %(title)s."),
    N_("Rescheduled the step %(title)s to %(start)s – %(end)s."),
    N_("Marked the step %(title)s as %(status)s on %(date)s."),
    N_("Recorded the outcome of the step %(title)s."),
    N_("Recorded %(scale)s: %(value)s on %(date)s."),
    N_("Wrote a note."),
    N_("Closed the plan with the outcome %(outcome)s."),
    N_("Reopened the plan: %(reason)s"),
)

#: The words the timeline package asks its ``gettext`` for (``timeline/render.py``).
TIMELINE_WORDS = (
    N_("Health"),
    N_("Work and employment"),
    N_("Everyday life"),
    N_("Skills and competence"),
    N_("Planned"),
    N_("Started"),
    N_("Done"),
    N_("Cancelled"),
    N_("Goal set"),
    N_("Goal achieved"),
    N_("Goal revised"),
    N_("Goal dropped"),
    N_("Plan opened"),
    N_("Plan closed"),
    N_("Handover proposed"),
    N_("Handover accepted"),
    N_("Handover declined"),
    N_("Event"),
    N_("Service path timeline"),
    N_("Today"),
    N_("Moment shown"),
    N_("Steps"),
    N_("Goals"),
    N_("Step"),
    N_("Goal"),
    N_("Whole plan"),
    N_("Date"),
    N_("End date"),
    N_("What"),
    N_("Type"),
    N_("Need category"),
    N_("Status"),
    N_("Nothing on the timeline yet."),
)

#: Names of the commands' fields, as a form labels them.
FIELD_LABELS = {
    "client_name": N_("Client's name"),
    "segment": N_("Segment"),
    "language": N_("Language of the client"),
    "referring_party": N_("Referred by"),
    "category": N_("Need category"),
    "description": N_("Description"),
    "financial": N_("Financial situation"),
    "status": N_("Status"),
    "title": N_("Title"),
    "need_ids": N_("Needs"),
    "need_id": N_("Need"),
    "target_date": N_("Target date"),
    "person_id": N_("Person's user id"),
    "name": N_("Name"),
    "profession": N_("Profession"),
    "organisation_id": N_("Organisation id"),
    "organisation_name": N_("Organisation name"),
    "contact": N_("Contact details"),
    "part": N_("Part in the plan"),
    "member_id": N_("Network member"),
    "responsible_member_id": N_("Responsible"),
    "service": N_("Service"),
    "planned_start": N_("Planned start"),
    "planned_end": N_("Planned end"),
    "reason": N_("Reason"),
    "on": N_("Date"),
    "outcome": N_("Outcome"),
    "note": N_("Note"),
    "kind": N_("Measure"),
    "value": N_("Value"),
    "measured_on": N_("Measured on"),
    "scale_name": N_("Name of the scale"),
    "active": N_("Non-disclosure order"),
    "stance": N_("The client's view"),
    "comment": N_("Comment"),
    "scale_min": N_("Lowest value of the scale"),
    "scale_max": N_("Highest value of the scale"),
    "text": N_("Note"),
    "visibility": N_("Who can read it"),
    "valid_from": N_("Valid from"),
    "consent_id": N_("Consent"),
    "handover_id": N_("Handover"),
    "seen_revision": N_("Revision"),
    "expert_id": N_("Named expert"),
    "counterpart_id": N_("Counterpart"),
    "organisation": N_("Organisation name"),
    "started_on": N_("Started on"),
    "finished_on": N_("Ended on"),
    "settled_on": N_("Settled on"),
    "settled_note": N_("Note"),
    "client_stance": N_("The client's view"),
    "client_comment": N_("The client's comment"),
    "non_disclosure": N_("Non-disclosure order"),
    "withdrawn_on": N_("Withdrawn on"),
    "command_id": N_("Command id"),
}

#: Names of the plan's items, as a sentence names them ("This need was changed by ...").
ITEM_KINDS = {
    "client": N_("client's details"),
    "need": N_("need"),
    "goal": N_("goal"),
    "step": N_("step"),
    "consent": N_("consent"),
    "network member": N_("network member"),
    "responsibility": N_("responsibility"),
    "measure": N_("measure"),
    "note": N_("note"),
    "handover": N_("handover"),
    "plan": N_("plan"),
}

#: The closed vocabularies of the domain (``domain/values.py``), by the fields that hold them.
VOCABULARIES: dict[str, dict[str, str]] = {
    "category": {
        "health": N_("Health"),
        "work_and_employment": N_("Work and employment"),
        "everyday_life": N_("Everyday life"),
        "skills_and_competence": N_("Skills and competence"),
    },
    "segment": {
        "unemployed": N_("Unemployed"),
        "employed": N_("Employed"),
        "entrepreneur": N_("Entrepreneur"),
    },
    "language": {
        "fi": N_("Finnish"),
        "sv": N_("Swedish"),
        "en": N_("English"),
    },
    "referring_party": {
        "self_referral": N_("Self-referral"),
        "employment_services": N_("Employment services"),
        "municipal_employment_pilot": N_("Municipal employment pilot"),
        "employment_service_provider": N_("Employment service provider"),
        "joint_employment_service": N_("Joint multi-sector employment service (TYP)"),
        "kela": N_("Kela (Social Insurance Institution)"),
        "health_centre": N_("Health centre"),
        "social_services": N_("Social services"),
        "third_sector": N_("Third sector"),
        "immigrant_competence_centre": N_("Immigrant competence centre"),
        "occupational_health_care": N_("Occupational health care"),
        "student_health_care": N_("Student health care"),
        "specialist_care": N_("Specialist care"),
        "other": N_("Other"),
    },
    "need_status": {
        "open": N_("Open"),
        "being_addressed": N_("Being addressed"),
        "resolved": N_("Resolved"),
    },
    "goal_status": {
        "set": N_("Set"),
        "achieved": N_("Achieved"),
        "revised": N_("Revised"),
        "dropped": N_("Dropped"),
    },
    "step_status": {
        "planned": N_("Planned"),
        "started": N_("Started"),
        "done": N_("Done"),
        "cancelled": N_("Cancelled"),
    },
    "handover_status": {
        "proposed": N_("proposed"),
        "accepted": N_("accepted"),
        "declined": N_("declined"),
        "withdrawn": N_("withdrawn"),
    },
    "closing_outcome": {
        "work": N_("Work"),
        "studies": N_("Studies"),
        "disability_pension": N_("Disability pension"),
        "continuation_typ": N_("Continuation plan with TYP"),
        "continuation_kela": N_("Continuation plan with Kela"),
        "continuation_employment_services": N_("Continuation plan with employment services"),
        "continuation_social_care": N_("Continuation plan with social care"),
    },
    "visibility": {
        "professionals": N_("Professionals only, not the client"),
        "client_and_professionals": N_("The client and the professionals"),
    },
    "measure_kind": {
        "self_assessment": N_("Self-assessment (Kykyviisari)"),
        "work_ability_score": N_("Work ability score"),
        "other": N_("Other scale"),
    },
    "stance": {
        "agrees": N_("agrees"),
        "questions": N_("questions the goal"),
    },
    "role": {
        "expert": N_("Named expert"),
        "counterpart": N_("Counterpart"),
        "member": N_("Network member"),
    },
}

# Which vocabulary a template's value belongs to, by the value's name.
_VALUE_VOCABULARIES = {
    "category": "category",
    "segment": "segment",
    "referrer": "referring_party",
    "outcome": "closing_outcome",
    "current": "step_status",
    "new": "step_status",
    "scale": "measure_kind",
    "stance": "stance",
}
_STATUS_VOCABULARIES = ("step_status", "goal_status", "handover_status", "need_status")
_FIELD_LIST_VALUES = ("fields",)
_DATE_VALUES = ("date", "start", "end", "started", "opened", "earliest", "latest")
#: What the history says when an update changed no field.
NO_CHANGE = N_("no change")


def vocabulary_label(vocabulary: str, value: str, gettext: Gettext) -> str:
    """The word for ``value`` of a vocabulary in the reader's language (the value itself if unknown)."""
    label = VOCABULARIES.get(vocabulary, {}).get(value)
    return gettext(label) if label else value


def field_label(field: str, gettext: Gettext) -> str:
    label = FIELD_LABELS.get(field)
    return gettext(label) if label else field


def translate_message(template: str, params: Mapping[str, Any], gettext: Gettext, language: str) -> str:
    """``template`` in the reader's language, filled in with ``params`` said in it too."""
    values = {name: _say(name, value, params, gettext, language) for name, value in params.items()}
    translated = gettext(template)
    try:
        return translated % values if values else translated
    except (KeyError, TypeError, ValueError):  # a broken translation must not hide the message
        return template % values if values else template


def _say(name: str, value: Any, params: Mapping[str, Any], gettext: Gettext, language: str) -> str:
    if name == "field":
        return field_label(str(value), gettext)
    if name in ("kind", "item_kind"):
        label = ITEM_KINDS.get(str(value))
        return gettext(label) if label else str(value)
    if name == "allowed":
        vocabulary = _vocabulary_of_field(str(params.get("field", "")))
        words = [w.strip() for w in str(value).split(",")]
        if vocabulary is None and params.get("field") == "status":
            return _choices([_status_word(w, gettext) for w in words], gettext)
        return _choices([vocabulary_label(vocabulary, w, gettext) if vocabulary else w for w in words], gettext)
    if name == "status":
        return _status_word(str(value), gettext)
    if name in _VALUE_VOCABULARIES:
        return vocabulary_label(_VALUE_VOCABULARIES[name], str(value), gettext)
    if name in _FIELD_LIST_VALUES:
        if str(value) == "no change":
            return gettext(NO_CHANGE)
        return ", ".join(field_label(f.strip(), gettext) for f in str(value).split(",") if f.strip()) or str(value)
    if name in _DATE_VALUES:
        day = _as_date(value)
        return format_date(day, language) if day else str(value)
    return str(value)


def _choices(words: list[str], gettext: Gettext) -> str:
    """``a, b or c`` in the reader's language."""
    if len(words) < 2:
        return "".join(words)
    return gettext(LAST_OF_CHOICES) % {"choices": ", ".join(words[:-1]), "last": words[-1]}


def _status_word(value: str, gettext: Gettext) -> str:
    for vocabulary in _STATUS_VOCABULARIES:
        if value in VOCABULARIES[vocabulary]:
            return vocabulary_label(vocabulary, value, gettext).lower()
    return value


def _vocabulary_of_field(field: str) -> str | None:
    return {
        "category": "category",
        "segment": "segment",
        "language": "language",
        "referring_party": "referring_party",
        "outcome": "closing_outcome",
        "visibility": "visibility",
        "kind": "measure_kind",
        "stance": "stance",
    }.get(field)


def _as_date(value: Any) -> date | None:
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None
