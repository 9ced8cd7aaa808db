"""Value objects of the client plan: the closed vocabularies and the actor.

Every vocabulary is a `StrEnum` whose values are what the events store, so a
stored event stays readable whatever the Python names become. `parse` turns
the text that arrives from a form, an API or a file into a member, or refuses
it with a `DomainError` that names the field and the allowed values.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import TypeVar
from zoneinfo import ZoneInfo

import msgspec

from domain.errors import InvalidValue
from domain.inputs import chosen

FINLAND = ZoneInfo("Europe/Helsinki")
"""The service's time zone: a plan's days (today, "not in the future", a consent valid
today) are days in Finland, where 00:30 on 4 December is still 3 December in UTC."""


def day_in_finland(moment: datetime) -> date:
    """The day it is in Finland at ``moment`` (aware; the commands' ``at`` is UTC)."""
    return moment.astimezone(FINLAND).date()


def today_in_finland() -> date:
    """The day it is in Finland now."""
    return day_in_finland(datetime.now(UTC))

E = TypeVar("E", bound=StrEnum)


def parse(vocabulary: type[E], value: object, field: str) -> E:
    """Return the member of `vocabulary` named by `value`, or refuse it.

    Nothing chosen is asked for; anything else is refused with the allowed values
    (which the web layer says in words), never with the value itself: it is what a
    form or a program sent, not anything the person chose.
    """
    try:
        return vocabulary(value)
    except ValueError:
        chosen(value, field)
        raise InvalidValue(
            field,
            "%(field)s: choose one of %(allowed)s.",
            allowed=", ".join(member.value for member in vocabulary),
        ) from None


class NeedCategory(StrEnum):
    """The four need categories of the TOIKE client plan.

    The financial situation is not a fifth category: every need carries its
    own financial side.
    """

    HEALTH = "health"
    WORK_AND_EMPLOYMENT = "work_and_employment"
    EVERYDAY_LIFE = "everyday_life"
    SKILLS_AND_COMPETENCE = "skills_and_competence"


class Segment(StrEnum):
    UNEMPLOYED = "unemployed"
    EMPLOYED = "employed"
    ENTREPRENEUR = "entrepreneur"


class ReferringParty(StrEnum):
    """Where the client came from (the seeds' "Mistä asiakas ohjautuu?")."""

    SELF_REFERRAL = "self_referral"
    EMPLOYMENT_SERVICES = "employment_services"
    MUNICIPAL_EMPLOYMENT_PILOT = "municipal_employment_pilot"
    EMPLOYMENT_SERVICE_PROVIDER = "employment_service_provider"
    JOINT_EMPLOYMENT_SERVICE = "joint_employment_service"
    KELA = "kela"
    HEALTH_CENTRE = "health_centre"
    SOCIAL_SERVICES = "social_services"
    THIRD_SECTOR = "third_sector"
    IMMIGRANT_COMPETENCE_CENTRE = "immigrant_competence_centre"
    OCCUPATIONAL_HEALTH_CARE = "occupational_health_care"
    STUDENT_HEALTH_CARE = "student_health_care"
    SPECIALIST_CARE = "specialist_care"
    OTHER = "other"


class Language(StrEnum):
    FINNISH = "fi"
    SWEDISH = "sv"
    ENGLISH = "en"


class NeedStatus(StrEnum):
    OPEN = "open"
    BEING_ADDRESSED = "being_addressed"
    RESOLVED = "resolved"


class GoalStatus(StrEnum):
    SET = "set"
    ACHIEVED = "achieved"
    REVISED = "revised"
    DROPPED = "dropped"


class StepStatus(StrEnum):
    PLANNED = "planned"
    STARTED = "started"
    DONE = "done"
    CANCELLED = "cancelled"


class ClientStance(StrEnum):
    """The client's own view of a goal, recorded beside the professionals' one."""

    AGREES = "agrees"
    QUESTIONS = "questions"


class HandoverStatus(StrEnum):
    PROPOSED = "proposed"
    ACCEPTED = "accepted"
    DECLINED = "declined"
    WITHDRAWN = "withdrawn"


class ClosingOutcome(StrEnum):
    """How a plan ends: the client's route onwards."""

    WORK = "work"
    STUDIES = "studies"
    DISABILITY_PENSION = "disability_pension"
    CONTINUATION_TYP = "continuation_typ"
    CONTINUATION_KELA = "continuation_kela"
    CONTINUATION_EMPLOYMENT_SERVICES = "continuation_employment_services"
    CONTINUATION_SOCIAL_CARE = "continuation_social_care"


class NoteVisibility(StrEnum):
    """Who reads a note: the network's professionals only, or the client too."""

    PROFESSIONALS = "professionals"
    CLIENT_AND_PROFESSIONALS = "client_and_professionals"


class MeasureKind(StrEnum):
    """What a measure measures.

    The self-assessment (Kykyviisari) and the work ability score are both on
    the 0–10 scale; any other named scale brings its own bounds.
    """

    SELF_ASSESSMENT = "self_assessment"
    WORK_ABILITY_SCORE = "work_ability_score"
    OTHER = "other"


class Actor(msgspec.Struct, frozen=True, kw_only=True):
    """Who gave a command: a person acting for an organisation."""

    person_id: str
    name: str
    organisation_id: str
    organisation_name: str
