"""The client's own view of their plan (``/my-plan``): what it shows, and its live fragments.

The client sees their plan in plain language, on a phone, in their own language. The
templates (``web/templates/client/``) never get the plan itself: they get a
:class:`ClientView`, which hands out only what is meant for the client:

- who helps them: the named expert and the counterpart (name, profession, organisation,
  contact details), and a handover in plain words (proposed, or accepted lately);
- the timeline (the SVG with its table), goals with the client's own view beside the
  professionals' wording, the next steps (what, when, who), the network (name, profession,
  organisation), the notes written for the client (``client_and_professionals``) and the
  client's own comments, consents per organisation, and who has looked at the plan.

Never: internal notes (``professionals``), needs and their financial side, measures, step
outcomes, members' parts, handover notes, the history, the client's own contact details.

The page is made of fragments with stable ids, each a top-level element of its own
(:data:`FRAGMENT_IDS`); :func:`render_client_fragments` renders them all out of band for
the live hub's client audience, without a request: forms in them carry no CSRF token
(htmx sends the page's token in a header) and no command id (``polku.js`` gives each
form its own).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from domain.access import Action, Relation, may, relation_to
from domain.plan import ClientPlan
from domain.values import (
    ClientStance,
    GoalStatus,
    HandoverStatus,
    NoteVisibility,
    StepStatus,
    day_in_finland,
    today_in_finland,
)
from timeline import layout, render_svg, render_table
from web.domain_messages import VOCABULARIES
from web.i18n import LANGUAGES, LANGUAGE_COOKIE, N_, format_date, format_moment, translations
from web.plan_page import FormState, build_timeline_input

__all__ = (
    "ACCESS_LOG_LIMIT",
    "AUDIENCE",
    "FRAGMENT_IDS",
    "FRAGMENT_TEMPLATES",
    "AccessLine",
    "ClientView",
    "client_language",
    "client_may_view",
    "page_context",
    "render_client_fragments",
)

#: The live hub's name for the client's audience (the professionals' is "professionals").
AUDIENCE = "client"

#: The page's fragments, in page order.
FRAGMENT_IDS = (
    "my-header",
    "my-people",
    "my-steps",
    "my-goals",
    "my-timeline",
    "my-notes",
    "my-network",
    "my-consents",
    "my-access-log",
)

FRAGMENT_TEMPLATES = {
    "my-header": "client/_header.html",
    "my-people": "client/_people.html",
    "my-steps": "client/_steps.html",
    "my-goals": "client/_goals.html",
    "my-timeline": "client/_timeline.html",
    "my-notes": "client/_notes.html",
    "my-network": "client/_network.html",
    "my-consents": "client/_consents.html",
    "my-access-log": "client/_access_log.html",
}

#: How many of the latest reads of the plan the client's list shows.
ACCESS_LOG_LIMIT = 50

# Plain words for the client (the professionals' vocabularies are too technical here).
_GOAL_STATUS = {
    GoalStatus.SET.value: N_("Working on it"),
    GoalStatus.REVISED.value: N_("Changed, working on it"),
    GoalStatus.ACHIEVED.value: N_("Reached"),
    GoalStatus.DROPPED.value: N_("Not pursued any more"),
}
_NOT_MARKED_DONE = N_("Not marked done yet")
"""A planned step whose time has passed: not "coming up" any more."""
_READS = {
    "page": N_("Your plan"),
    "history": N_("Earlier versions of your plan"),
    "export": N_("A copy of your plan (export)"),
}
_STEP_STATUS = {
    StepStatus.PLANNED.value: N_("Coming up"),
    StepStatus.STARTED.value: N_("Going on now"),
    StepStatus.DONE.value: N_("Done"),
    StepStatus.CANCELLED.value: N_("Cancelled"),
}


_TIMELINE_IN_CLIENT_WORDS = {
    "Service path timeline": N_("Your timeline"),
    "Need category": N_("Area"),
    "Goal set": _GOAL_STATUS[GoalStatus.SET.value],
    "Goal revised": _GOAL_STATUS[GoalStatus.REVISED.value],
    "Goal achieved": _GOAL_STATUS[GoalStatus.ACHIEVED.value],
    "Goal dropped": _GOAL_STATUS[GoalStatus.DROPPED.value],
    "Planned": _STEP_STATUS[StepStatus.PLANNED.value],
    "Started": _STEP_STATUS[StepStatus.STARTED.value],
}
"""The timeline's words (``timeline.render``) that the client's page says as its cards do."""


def _in_client_words(gettext: Callable[[str], str]) -> Callable[[str], str]:
    """``gettext`` for the client's timeline: its picture and table in the words of the cards."""
    return lambda message: gettext(_TIMELINE_IN_CLIENT_WORDS.get(message, message))


def client_may_view(account: Any, plan: ClientPlan | None) -> bool:
    """Whether ``account`` is the client of ``plan`` (``domain.access``: relation CLIENT).

    The plan comes from the account (``account.plan_id``), never from a URL; this asks the
    domain's one table again, on every request and every live message.
    """
    if account is None or plan is None or getattr(account, "kind", None) != "client":
        return False
    relation = relation_to(
        plan,
        kind=account.kind,
        person_id=account.person_id,
        organisation_id=account.organisation_id,
        client_plan_id=account.plan_id,
        today=today_in_finland(),
    )
    return relation == Relation.CLIENT and may(relation, Action.CLIENT_VIEW)


def client_language(connection: Any, plan: ClientPlan | None) -> str:
    """The client's language: the one they chose with the language switch, else the plan's."""
    chosen = connection.cookies.get(LANGUAGE_COOKIE)
    if chosen in LANGUAGES:
        return chosen
    if plan is not None and plan.client.language in LANGUAGES:
        return plan.client.language
    from web.i18n import language_of

    return language_of(connection)


# ------------------------------------------------------------------ what the client sees


@dataclass(frozen=True)
class Person:
    id: str
    name: str
    profession: str
    organisation: str
    contact: str = ""
    role: str = "member"
    """``expert``, ``counterpart`` or ``member``."""


@dataclass(frozen=True)
class HandoverNotice:
    id: str
    from_name: str
    to_name: str
    to_organisation: str
    on: date
    status: str


@dataclass(frozen=True)
class GoalView:
    id: str
    title: str
    target_date: date
    status: str
    status_words: str
    categories: list[str]
    stance: str
    comment: str
    viewed_on: date | None
    changed_since_view: bool
    revision: int
    is_open: bool

    @property
    def disagrees(self) -> bool:
        return self.stance == ClientStance.QUESTIONS.value

    @property
    def agrees(self) -> bool:
        return self.stance == ClientStance.AGREES.value


@dataclass(frozen=True)
class StepView:
    id: str
    title: str
    service: str
    start: date
    end: date
    status: str
    status_words: str
    who: Person | None


@dataclass(frozen=True)
class NoteView:
    id: str
    text: str
    by_name: str
    by_organisation: str
    at: datetime
    from_client: bool


@dataclass(frozen=True)
class ConsentView:
    id: str
    organisation_id: str
    organisation_name: str
    valid_from: date
    withdrawn_on: date | None
    revision: int
    of_expert: bool
    """The named expert works in this organisation: the consent cannot be withdrawn now."""
    leaving: list[str]
    """Who would leave the network if the consent were withdrawn."""


@dataclass(frozen=True)
class AccessLine:
    """One read of the plan, as the client's list shows it."""

    who: str
    organisation: str
    at: datetime
    what: str
    """What was read: ``page``, ``history`` or ``export`` (``web.accesslog``)."""


class ClientView:
    """The client's plan, as the client may see it: nothing else reaches the templates."""

    def __init__(self, plan: ClientPlan, gettext: Callable[[str], str], lang: str, today: date) -> None:
        self._plan = plan
        self.gettext = gettext
        self.lang = lang
        self.today = today

    # -- the plan -------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._plan.client.name

    @property
    def version(self) -> int:
        return self._plan.version

    @property
    def opened_on(self) -> date:
        return self._plan.opened_on

    @property
    def is_closed(self) -> bool:
        return self._plan.is_closed

    @property
    def closed_on(self) -> date | None:
        return self._plan.closing.closed_on if self._plan.closing else None

    @property
    def closing_outcome(self) -> str:
        closing = self._plan.closing
        if closing is None:
            return ""
        label = VOCABULARIES["closing_outcome"].get(closing.outcome)
        return self.gettext(label) if label else closing.outcome

    # -- who helps --------------------------------------------------------------------------

    def _person(self, member: Any, role: str, *, contact: bool = False) -> Person:
        return Person(
            id=member.id,
            name=member.name,
            profession=member.profession,
            organisation=member.organisation_name,
            contact=member.contact if contact else "",
            role=role,
        )

    @property
    def expert(self) -> Person:
        return self._person(self._plan.expert, "expert", contact=True)

    @property
    def counterpart(self) -> Person | None:
        counterpart = self._plan.counterpart
        return self._person(counterpart, "counterpart", contact=True) if counterpart else None

    def _member_name(self, member_id: str) -> tuple[str, str]:
        member = self._plan.members.get(member_id)
        return (member.name, member.organisation_name) if member else ("", "")

    @property
    def pending_handover(self) -> HandoverNotice | None:
        handover = self._plan.pending_handover
        if handover is None:
            return None
        return self._notice(handover, handover.proposed_at)

    @property
    def latest_handover(self) -> HandoverNotice | None:
        """The latest accepted handover, when no other is pending: who took over, when."""
        if self._plan.pending_handover is not None:
            return None
        for handover in reversed(self._plan.handovers):
            if handover.status == HandoverStatus.ACCEPTED and handover.decided_at is not None:
                return self._notice(handover, handover.decided_at)
        return None

    def _notice(self, handover: Any, moment: datetime) -> HandoverNotice:
        from_name, _from_organisation = self._member_name(handover.from_member_id)
        to_name, to_organisation = self._member_name(handover.to_member_id)
        return HandoverNotice(
            id=handover.id,
            from_name=from_name or handover.proposed_by.name,
            to_name=to_name,
            to_organisation=to_organisation,
            on=day_in_finland(moment),
            status=handover.status,
        )

    @property
    def network(self) -> list[Person]:
        roles = self._plan.responsibility
        order = {"expert": 0, "counterpart": 1, "member": 2}
        people = []
        for member in self._plan.members.values():
            role = (
                "expert"
                if member.id == roles.expert_id
                else "counterpart"
                if member.id == roles.counterpart_id
                else "member"
            )
            people.append(self._person(member, role))
        return sorted(people, key=lambda p: (order[p.role], p.name))

    # -- goals and steps ----------------------------------------------------------------------

    @property
    def goals(self) -> list[GoalView]:
        categories = VOCABULARIES["category"]
        found = []
        for goal in sorted(self._plan.goals.values(), key=lambda g: (g.target_date, g.title)):
            lanes = dict.fromkeys(
                self.gettext(categories[self._plan.needs[n].category])
                for n in goal.need_ids
                if n in self._plan.needs
            )
            viewed = [c for c in goal.changes if c.action == "GoalClientViewRecorded"]
            revised = [c for c in goal.changes if c.action == "GoalRevised"]
            last_view = viewed[-1] if viewed else None
            changed_since = bool(
                goal.client_stance and last_view is not None and revised and revised[-1].revision > last_view.revision
            )
            found.append(
                GoalView(
                    id=goal.id,
                    title=goal.title,
                    target_date=goal.target_date,
                    status=goal.status,
                    status_words=self.gettext(_GOAL_STATUS.get(goal.status, goal.status)),
                    categories=list(lanes),
                    stance=goal.client_stance,
                    comment=goal.client_comment,
                    viewed_on=day_in_finland(last_view.at) if last_view else None,
                    changed_since_view=changed_since,
                    revision=goal.revision,
                    is_open=goal.status not in (GoalStatus.ACHIEVED, GoalStatus.DROPPED),
                )
            )
        return found

    def _step(self, step: Any) -> StepView:
        member = self._plan.members.get(step.responsible_member_id) if step.responsible_member_id else None
        return StepView(
            id=step.id,
            title=step.title,
            service=step.service,
            start=step.started_on or step.planned_start,
            end=step.planned_end,
            status=step.status,
            status_words=self.gettext(
                _NOT_MARKED_DONE
                if step.status == StepStatus.PLANNED and step.planned_end < self.today
                else _STEP_STATUS.get(step.status, step.status)
            ),
            who=self._person(member, "member") if member else None,
        )

    @property
    def next_steps(self) -> list[StepView]:
        """Steps going on now and coming up: what, when, who; the soonest first."""
        open_steps = [
            s for s in self._plan.steps.values() if s.status in (StepStatus.PLANNED, StepStatus.STARTED)
        ]
        open_steps.sort(key=lambda s: (s.status != StepStatus.STARTED, s.planned_start, s.planned_end, s.title))
        return [self._step(s) for s in open_steps]

    @property
    def done_steps(self) -> list[StepView]:
        finished = [s for s in self._plan.steps.values() if s.status == StepStatus.DONE]
        finished.sort(key=lambda s: (s.finished_on or s.planned_end), reverse=True)
        return [self._step(s) for s in finished]

    # -- notes and consents -------------------------------------------------------------------

    @property
    def notes(self) -> list[NoteView]:
        """The notes written for the client, and the client's own comments; newest first.

        Internal notes (visibility ``professionals``) are left out here, once, for every
        page and live fragment of the client.
        """
        shown = [n for n in self._plan.notes if n.visibility == NoteVisibility.CLIENT_AND_PROFESSIONALS]
        shown.sort(key=lambda n: n.written_at, reverse=True)
        return [
            NoteView(
                id=note.id,
                text=note.text,
                by_name=note.written_by.name,
                by_organisation=note.written_by.organisation_name,
                at=note.written_at,
                from_client=not note.written_by.organisation_id,
            )
            for note in shown
        ]

    @property
    def consents(self) -> list[ConsentView]:
        expert_organisation = self._plan.expert.organisation_id
        found = []
        for consent in self._plan.consents.values():
            leaving = sorted(
                m.name for m in self._plan.members.values() if m.organisation_id == consent.organisation_id
            )
            found.append(
                ConsentView(
                    id=consent.id,
                    organisation_id=consent.organisation_id,
                    organisation_name=consent.organisation_name,
                    valid_from=consent.valid_from,
                    withdrawn_on=consent.withdrawn_on,
                    revision=consent.revision,
                    of_expert=consent.organisation_id == expert_organisation,
                    leaving=leaving if consent.withdrawn_on is None else [],
                )
            )
        found.sort(key=lambda c: (c.withdrawn_on is not None, c.organisation_name.casefold(), c.valid_from))
        return found

    def consent(self, consent_id: str) -> ConsentView | None:
        return next((c for c in self.consents if c.id == consent_id), None)

    def consent_choices(self, organisations: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
        """The organisations the client may give a consent for: known ones without a valid consent."""
        valid = {c.organisation_id for c in self._plan.consents.values() if c.withdrawn_on is None}
        known = dict(organisations)
        for consent in self._plan.consents.values():
            known.setdefault(consent.organisation_id, consent.organisation_name)
        return sorted(((i, n) for i, n in known.items() if i not in valid), key=lambda pair: pair[1].casefold())

    # -- words --------------------------------------------------------------------------------

    def read_words(self, what: str) -> str:
        """What a professional looked at, in words (an access log entry's ``what``)."""
        label = _READS.get(what)
        return self.gettext(label) if label else what

    def day(self, value: date | datetime | None) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            value = day_in_finland(value)
        return format_date(value, self.lang)

    def period(self, start: date, end: date) -> str:
        if start == end:
            return self.day(start)
        return f"{self.day(start)} – {self.day(end)}"

    def moment(self, value: datetime) -> str:
        return format_moment(value, self.lang)


# -------------------------------------------------------------------------- the context


def page_context(
    plan: ClientPlan,
    lang: str,
    *,
    access_log: Sequence[AccessLine] = (),
    organisations: Iterable[tuple[str, str]] = (),
    forms: Mapping[str, FormState] | None = None,
    live: bool = False,
    oob: bool = False,
    focus: str = "",
    today: date | None = None,
) -> dict[str, Any]:
    """The client templates' context for ``plan`` (add ``request`` for a whole page).

    ``forms`` maps a form's element id (``goal-<id>``, ``comment-new``, ``consent-<id>``,
    ``consent-new``) to its state (draft, errors); the others are blank. ``live`` renders
    for the live hub: no command ids (each browser makes its own). ``oob`` marks every
    fragment ``hx-swap-oob``.
    """
    gettext = translations(lang).gettext
    today = today or today_in_finland()
    view = ClientView(plan, gettext, lang, today)
    timeline = layout(build_timeline_input(plan, today, gettext))
    opened = dict(forms or {})

    def form_for(dom_id: str, seen_revision: int | None = None) -> FormState:
        state = opened.get(dom_id)
        if state is not None:
            return state
        return FormState(form="", command_id="" if live else str(uuid.uuid4()), seen_revision=seen_revision)

    return {
        "lang": lang,
        "me": view,
        "today": today,
        "timeline_svg": render_svg(timeline, _in_client_words(gettext), lang),
        "timeline_table": render_table(timeline, _in_client_words(gettext), lang),
        "access_log": list(access_log),
        "consent_choices": view.consent_choices(organisations),
        "forms": opened,
        "form_for": form_for,
        "oob": oob,
        "focus": focus,
        "live": live,
    }


def render_client_fragments(
    engine: Any,
    plan: ClientPlan,
    lang: str,
    *,
    access_log: Sequence[AccessLine] = (),
    organisations: Iterable[tuple[str, str]] = (),
) -> str:
    """Every fragment of ``/my-plan`` for ``plan`` in ``lang``, each with ``hx-swap-oob``.

    For the live hub's client audience: the same text for every socket of the plan's
    client that reads ``lang``; no request, no CSRF token, no command id in it.
    """
    context = page_context(plan, lang, access_log=access_log, organisations=organisations, live=True, oob=True)
    return "\n".join(engine.render(FRAGMENT_TEMPLATES[fragment_id], **context) for fragment_id in FRAGMENT_IDS)
