"""What the plan page shows, shaped for its templates, and its fragments for the live hub.

The plan page is made of fragments with stable ids, each a top-level element of its own:

==================  ==========================================================
``plan-header``     the client's name (the page's ``<h1>``) and the plan's state
``panel-timeline``  the service path as a picture, with its table in ``<details>``
``panel-client``    the client's details; closing and reopening the plan
``panel-needs``     needs by the four categories, each with its financial side
``panel-goals``     goals with their needs and target dates
``panel-network``   members (expert and counterpart marked), handovers, consents
``panel-steps``     the steps of the service path
``panel-measures``  measures over time
``panel-notes``     notes
``panel-history``   the latest changes, with a link to the full history
==================  ==========================================================

Items inside them have ids of their own: ``client-details``, ``need-<id>``,
``goal-<id>``, ``member-<id>``, ``consent-<id>``, ``handover-<id>``, ``step-<id>``,
``measure-<id>``, ``note-<id>``; the blocks that hold an "add" form are ``<kind>-new``
(``need-new``, ``goal-new``...).

:class:`PlanPanels` renders them, out of band, for the live hub, one panel at a time and
only those whose inputs changed (:func:`render_plan_fragments`: all of them): it does not
depend on a request, and the fragments hold no form that posts (their buttons fetch a form
for the person who clicks them), so no CSRF token or command id is shared between viewers.

**Who sees what (``domain.access``).** A page rendered for one request knows its viewer:
:func:`audience_of` gives the :class:`Audience` (the viewer's relation to the plan, and
whether they may see and record the client's contact details and set or lift a
non-disclosure order), and the templates show or leave out those parts. The live hub
renders its fragments once per language for every viewer of the plan, so they cannot
depend on the viewer: they are rendered with ``audience=None`` and hold everything but the
client's contact details and the controls for them. In their place, ``client-contact``
is a placeholder that fetches the viewer's own version (``GET /plans/<id>/contact``,
``hx-trigger="load"``), decided by ``domain.access`` for that request like any page.
So a non-disclosure order (turvakielto) hides the contact details from everyone but the
named expert and the counterpart on the page, in every live update, in the history and
in the plan's forms and conflict views. We chose this over rendering the fragments per
(language, may see the contact): it keeps the hub's one render per language, and a
viewer's own request is where the table is asked anyway.
"""

from __future__ import annotations

import hashlib
import heapq
import operator
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, NamedTuple

import msgspec

from domain.access import Relation, may_give, may_see_client_contact
from domain.errors import EditConflict
from domain.items import Item
from domain.plan import ClientPlan
from domain.values import FINLAND, HandoverStatus, StepStatus, day_in_finland, today_in_finland
from timeline import TimelineGoal, TimelineInput, TimelineMarker, TimelineStep, layout, render_svg, render_table
from web.domain_messages import ITEM_KINDS, VOCABULARIES, field_label, vocabulary_label
from web.i18n import N_, format_date, format_moment, translations
from web.live.hub import PanelKey

__all__ = (
    "PANEL_IDS",
    "PANEL_TEMPLATES",
    "PLAN_PANELS",
    "Audience",
    "ConflictView",
    "FormState",
    "PlanPanels",
    "RecentChange",
    "audience_of",
    "build_timeline_input",
    "page_context",
    "recent_changes",
    "render_plan_fragments",
)


#: The page's fragments, in page order.
PANEL_IDS = (
    "plan-header",
    "panel-timeline",
    "panel-client",
    "panel-needs",
    "panel-goals",
    "panel-network",
    "panel-steps",
    "panel-measures",
    "panel-notes",
    "panel-history",
)

#: The template of each fragment.
PANEL_TEMPLATES = {
    "plan-header": "plans/_header.html",
    "panel-timeline": "plans/_timeline.html",
    "panel-client": "plans/_client.html",
    "panel-needs": "plans/_needs.html",
    "panel-goals": "plans/_goals.html",
    "panel-network": "plans/_network.html",
    "panel-steps": "plans/_steps.html",
    "panel-measures": "plans/_measures.html",
    "panel-notes": "plans/_notes.html",
    "panel-history": "plans/_history.html",
}

#: How many of the latest changes the history panel lists.
RECENT_CHANGES = 8


def render_plan_fragments(engine: Any, plan: ClientPlan, lang: str) -> str:
    """Every fragment of the plan page for ``plan``, in ``lang``, each with ``hx-swap-oob="true"``.

    ``engine`` is the app's template engine (``app.template_engine``). The result is the
    same for every viewer of the plan who reads ``lang`` (see :class:`PlanPanels`). It
    holds nothing that depends on the viewer: the client's contact details are a
    placeholder that each browser fills with its own request (see the module's docstring).
    """
    return "\n".join(PLAN_PANELS.render(engine, plan, lang, PANEL_IDS).values())


def _untranslated(message: str) -> str:
    return message


_ENCODE = msgspec.msgpack.Encoder().encode


def _digest(*parts: Any) -> bytes:
    """A short fingerprint of plan parts (msgspec Structs, dicts and lists of them, dates)."""
    return hashlib.blake2b(_ENCODE(parts), digest_size=16).digest()


_CHANGES_AT = [field.name for field in msgspec.structs.fields(Item)].index("changes")


def _values(item: Item) -> tuple[Any, ...]:
    """What a panel key takes of an item: every value but its list of changes.

    The list (up to 20 changes, each with who made it) is most of what encoding an item
    costs, and adds nothing to a key: each change counts the item's ``revision`` up, which
    is kept (the history panel, which shows the changes, has the plan's version in its key).
    """
    values = msgspec.structs.astuple(item)
    return values[:_CHANGES_AT] + values[_CHANGES_AT + 1:]


class PlanPanels:
    """The plan page's fragments for the live hub, one panel at a time.

    :meth:`keys` tells, cheaply and without rendering, what each panel's text depends on
    besides the language: the parts of the plan its template reads, and today's date
    (the timeline's today mark, the consents valid today). Two versions of a plan whose
    keys of a panel are equal give that panel the same text, so the hub renders a panel
    only when its key changes and sends a browser only the panels whose keys differ from
    those of the version the browser shows. A part a template starts to read must be
    added to its key here (``tests/web/test_live.py`` checks the keys against renders).
    """

    ids = PANEL_IDS

    def keys(self, plan: ClientPlan) -> dict[str, Hashable]:
        """The needs, goals, steps and network panels' keys are :class:`PanelKey`: their frame
        (which items in what order, and what is around them) and each item's own key, so that
        an item changed in place is sent alone (``items/<kind>.html``, as the edit's own answer
        renders it)."""
        today = today_in_finland()
        closing = plan.closing
        view = PlanView(plan, _untranslated, "en")
        needs = [need for category in view.categories for need in view.needs_in(category)]
        goals, members, steps = view.goals, view.members, view.steps
        client, responsibility = _values(plan.client), _values(plan.responsibility)
        return {
            "plan-header": _digest(today, client, [_values(member) for member in members], responsibility, closing,
                                   plan.opened_on),
            "panel-timeline": build_timeline_input(plan, today, _untranslated),
            "panel-client": _digest(today, client, responsibility, closing, plan.opened_on),  # who may close it
            "panel-needs": PanelKey(
                _digest(today, closing, [(need.id, need.category) for need in needs]),
                tuple((f"need-{need.id}", _digest(_values(need))) for need in needs),
            ),
            "panel-goals": PanelKey(
                _digest(today, closing, [goal.id for goal in goals]),
                tuple((f"goal-{goal.id}", _digest(_values(goal), [view.need_title(n) for n in goal.need_ids]))
                      for goal in goals),
            ),
            "panel-network": PanelKey(
                _digest(today, closing, responsibility, plan.handovers, [_values(c) for c in plan.consents.values()],
                        [(member.id, member.name, member.organisation_id) for member in members]),
                tuple((f"member-{member.id}", _digest(_values(member))) for member in members),
            ),
            "panel-steps": PanelKey(
                _digest(today, closing, [step.id for step in steps]),
                tuple((f"step-{step.id}", _digest(_values(step), _need_and_person_of_step(view, step))) for step in steps),
            ),
            "panel-measures": _digest(today, plan.measures, closing),
            "panel-notes": _digest(today, plan.notes, closing),
            "panel-history": (today, plan.version),  # every change of the plan is listed there
        }

    def render(
        self, engine: Any, plan: ClientPlan, lang: str, ids: Iterable[str], kept: dict[Hashable, Any] | None = None
    ) -> dict[str, str]:
        """The panels and items ``ids`` (shared by every viewer): the panels out of band, by id
        in page order; the items (``need-<id>``...) as the edit's own answer renders them.

        ``kept`` is where the hub keeps, from one render of the plan in ``lang`` to the next,
        the texts of the latest changes (the history panel's entries): an edit adds one entry,
        and the others are taken from there instead of being rendered again.
        """
        wanted = list(ids)
        context = page_context(plan, lang, oob=True, audience=None, with_timeline="panel-timeline" in wanted,
                               kept_changes=kept.get(("panel-history", lang)) if kept is not None else None)
        texts = {
            panel_id: engine.render(PANEL_TEMPLATES[panel_id], **context) for panel_id in PANEL_IDS if panel_id in wanted
        }
        if kept is not None and "panel-history" in texts:
            kept["panel-history", lang] = context["recent"].texts
        items = [item_id for item_id in wanted if item_id not in PANEL_TEMPLATES]
        if items:
            # The items' forms macros, made once for them all (each item would import them anew).
            context = dict(context, forms=engine.module("plans/_forms.html", **context), state=None)
        for item_id in items:
            kind, _, key = item_id.partition("-")
            item = getattr(plan, _ITEM_PARTS[kind])[key]
            texts[item_id] = engine.render(f"plans/items/{kind}.html", **dict(context, item=item))
        return texts


PLAN_PANELS = PlanPanels()

#: The plan's part that holds each kind of item sent alone, by the kind in its element id.
_ITEM_PARTS = {"need": "needs", "goal": "goals", "member": "members", "step": "steps"}


def _need_and_person_of_step(view: PlanView, step: Any) -> tuple[str, str, str]:
    """What a step's item shows of other items: its need and who is responsible."""
    need = view.plan.needs.get(step.need_id)
    return (need.category if need else "", need.description if need else "", view.member_name(step.responsible_member_id))


@dataclass(frozen=True)
class Audience:
    """One viewer of a plan: what ``domain.access`` lets them see and do beyond the plan itself."""

    relation: Relation
    may_see_contact: bool
    """The client's contact details (hidden under a non-disclosure order from all but the
    named expert and the counterpart)."""
    may_record_contact: bool
    may_set_non_disclosure: bool


def audience_of(plan: ClientPlan, relation: Relation, *, shown: ClientPlan | None = None) -> Audience:
    """The :class:`Audience` of someone of ``relation`` to ``plan`` (the plan as it is now).

    ``shown`` is the plan as the page shows it when that is another version (the history):
    the contact details are then shown only if both versions allow it, so that lifting an
    order later never reveals an address recorded while it was in force, and an order set
    since hides what was recorded before it.
    """
    see = may_see_client_contact(plan, relation) and (shown is None or may_see_client_contact(shown, relation))
    return Audience(
        relation=relation,
        may_see_contact=see,
        may_record_contact=see and may_give(relation, "record_client_contact"),
        may_set_non_disclosure=may_give(relation, "set_non_disclosure"),
    )


@dataclass
class ConflictView:
    """What the editor is told when the item changed after they opened it."""

    item_kind: str
    changes: list[dict[str, Any]]
    """Each: ``by_name``, ``by_organisation``, ``at`` (datetime), ``fields`` (labels)."""
    rows: list[tuple[str, str, str, bool]]
    """Per field of the form: (label, the current value, the editor's draft, whether both
    changed it: a clash, where the draft keeps the editor's value)."""
    current_revision: int


@dataclass
class FormState:
    """An open form of one item (or one "add" block): what it shows."""

    form: str
    """Which form: ``new``, ``edit``, ``settle``, ``reschedule``, ``progress``..."""
    values: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    message: str = ""
    conflict: ConflictView | None = None
    command_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    seen_revision: int | None = None

    def value(self, name: str, default: Any = "") -> Any:
        value = self.values.get(name)
        return default if value is None else value


class RecentChange(NamedTuple):
    """One of the latest changes in words; a tuple, so that the history panel's kept entries
    are found by it cheaply (:meth:`LazyChanges.text`)."""

    at: datetime
    by_name: str
    by_organisation: str
    what: str
    """The item's kind, translated (``need``, ``step``...)."""
    title: str
    action: str
    """What happened, translated."""
    fields: tuple[str, ...]
    anchor: str
    """The id of the item on the page, or ""."""


def build_timeline_input(
    plan: ClientPlan, today: date, gettext: Callable[[str], str], *, past: bool = False
) -> TimelineInput:
    """The timeline of ``plan`` as of ``today``: steps in their needs' lanes, goals, markers.
    ``past``: ``today`` is the moment an earlier version is shown at (the history view)."""
    steps = []
    for step in plan.steps.values():
        need = plan.needs.get(step.need_id)
        if need is None:
            continue
        start = step.started_on or step.planned_start
        end = step.finished_on if step.status in (StepStatus.DONE, StepStatus.CANCELLED) and step.finished_on else step.planned_end
        if step.status == StepStatus.PLANNED:
            start, end = step.planned_start, step.planned_end
        steps.append(
            TimelineStep(id=step.id, title=step.title, category=need.category, start=min(start, end), end=max(start, end), status=step.status)
        )
    goals = []
    for goal in plan.goals.values():
        categories = tuple(dict.fromkeys(plan.needs[n].category for n in goal.need_ids if n in plan.needs))
        if categories:
            goals.append(TimelineGoal(id=goal.id, title=goal.title, categories=categories, target=goal.target_date, status=goal.status))
    markers = [TimelineMarker(kind="opened", on=plan.opened_on)]
    for handover in plan.handovers:
        markers.append(TimelineMarker(kind="handover_proposed", on=day_in_finland(handover.proposed_at)))
        if handover.decided_at is not None:
            kind = {
                HandoverStatus.ACCEPTED: "handover_accepted",
                HandoverStatus.DECLINED: "handover_declined",
            }.get(HandoverStatus(handover.status))
            label = "" if kind else gettext(N_("Handover withdrawn"))
            markers.append(TimelineMarker(kind=kind or "handover_withdrawn", on=day_in_finland(handover.decided_at), label=label))
    closed_on = plan.closing.closed_on if plan.closing else None
    if closed_on is not None:
        markers.append(TimelineMarker(kind="closed", on=closed_on))
    return TimelineInput(
        today=today,
        opened_on=plan.opened_on,
        closed_on=closed_on if closed_on and closed_on >= plan.opened_on else None,
        steps=tuple(steps),
        goals=tuple(goals),
        markers=tuple(markers),
        past=past,
    )


def page_context(
    plan: ClientPlan,
    lang: str,
    *,
    today: date | None = None,
    editing: Mapping[str, FormState] | None = None,
    readonly: bool = False,
    oob: bool = False,
    focus: str = "",
    audience: Audience | None = None,
    with_timeline: bool = True,
    kept_changes: Mapping[RecentChange, str] | None = None,
    past: bool = False,
) -> dict[str, Any]:
    """The templates' context for ``plan`` (add ``request`` for a whole page).

    ``editing`` maps an item's id (``need-<id>``, ``need-new``...) to its open form;
    ``readonly`` shows the plan without any control (the history page); ``oob`` marks
    every fragment ``hx-swap-oob``; ``focus`` names the item to focus after a save;
    ``audience`` is the viewer (:func:`audience_of`), or None for the live hub's
    fragments shared by every viewer (the client's contact details are then a placeholder);
    ``with_timeline=False`` leaves out the timeline (half the work of a whole page) for
    renders without ``panel-timeline``; ``kept_changes`` are texts of the latest changes
    that an earlier render made in ``lang`` (:class:`LazyChanges`); ``past``: ``today`` is
    the moment an earlier version is shown at, and the timeline marks it so (not "Today").
    """
    gettext = translations(lang).gettext
    today = today or today_in_finland()
    timeline = layout(build_timeline_input(plan, today, gettext, past=past)) if with_timeline else None
    return {
        "lang": lang,
        "plan": plan,
        "plan_id": str(plan.id),
        "view": PlanView(plan, gettext, lang),
        "today": today,
        "timeline_svg": render_svg(timeline, gettext, lang) if timeline else "",
        "timeline_table": render_table(timeline, gettext, lang) if timeline else "",
        "editing": dict(editing or {}),
        "readonly": readonly or plan.is_closed,
        "history_mode": readonly,
        "oob": oob,
        "focus": focus,
        "vocabularies": VOCABULARIES,
        "item_kinds": ITEM_KINDS,
        "recent": LazyChanges(plan, gettext, kept_changes),
        "audience": audience,
    }


class PlanView:
    """Questions the templates ask about a plan, answered in one place."""

    def __init__(self, plan: ClientPlan, gettext: Callable[[str], str], lang: str) -> None:
        self.plan = plan
        self.gettext = gettext
        self.lang = lang

    def options(self, vocabulary: str) -> list[tuple[str, str]]:
        """A vocabulary's values with their words: the options of a select or radio group."""
        return [(value, self.gettext(label)) for value, label in VOCABULARIES[vocabulary].items()]

    @property
    def need_options(self) -> list[tuple[str, str]]:
        labels = VOCABULARIES["category"]
        return [(n.id, f"{n.description} ({self.gettext(labels[n.category])})") for n in self.plan.needs.values()]

    @property
    def member_options(self) -> list[tuple[str, str]]:
        return [(m.id, f"{m.name}, {m.organisation_name}") for m in self.members]

    def needs_in(self, category: str) -> list[Any]:
        return [n for n in self.plan.needs.values() if n.category == category]

    @property
    def categories(self) -> list[str]:
        return list(VOCABULARIES["category"])

    def need_title(self, need_id: str) -> str:
        need = self.plan.needs.get(need_id)
        return need.description if need else "–"

    def member_name(self, member_id: str | None) -> str:
        member = self.plan.members.get(member_id) if member_id else None
        return member.name if member else ""

    def role_of(self, member_id: str) -> str:
        roles = self.plan.responsibility
        if member_id == roles.expert_id:
            return "expert"
        if member_id == roles.counterpart_id:
            return "counterpart"
        return "member"

    @property
    def members(self) -> list[Any]:
        order = {"expert": 0, "counterpart": 1, "member": 2}
        return sorted(self.plan.members.values(), key=lambda m: (order[self.role_of(m.id)], m.name))

    @property
    def goals(self) -> list[Any]:
        return sorted(self.plan.goals.values(), key=lambda g: (g.target_date, g.title))

    @property
    def steps(self) -> list[Any]:
        return sorted(self.plan.steps.values(), key=lambda s: (s.planned_start, s.planned_end, s.title))

    @property
    def measures(self) -> list[Any]:
        return sorted(self.plan.measures, key=lambda m: (m.measured_on, m.id), reverse=True)

    @property
    def notes(self) -> list[Any]:
        return sorted(self.plan.notes, key=lambda n: n.written_at, reverse=True)

    @property
    def consents(self) -> list[Any]:
        return sorted(self.plan.consents.values(), key=lambda c: (c.withdrawn_on is not None, c.organisation_name))

    @property
    def consented_organisations(self) -> list[tuple[str, str]]:
        """(id, name) of the organisations with a consent in force today."""
        today = today_in_finland()
        seen: dict[str, str] = {}
        for consent in self.plan.consents.values():
            if consent.is_valid_on(today):
                seen.setdefault(consent.organisation_id, consent.organisation_name)
        return sorted(seen.items(), key=lambda pair: pair[1])

    @property
    def handovers(self) -> list[Any]:
        return list(reversed(self.plan.handovers))

    def is_open_step(self, step: Any) -> bool:
        return step.status in (StepStatus.PLANNED, StepStatus.STARTED)

    def next_statuses(self, step: Any) -> list[str]:
        return {
            StepStatus.PLANNED: ["started", "done", "cancelled"],
            StepStatus.STARTED: ["done", "cancelled"],
        }.get(StepStatus(step.status), [])

    def progress_options(self, step: Any) -> list[tuple[str, str]]:
        allowed = self.next_statuses(step)
        return [(value, label) for value, label in self.options("step_status") if value in allowed]

    def measure_name(self, measure: Any) -> str:
        if measure.kind == "other":
            return measure.scale_name
        return vocabulary_label("measure_kind", measure.kind, self.gettext)

    def number(self, value: float) -> str:
        text = f"{value:g}"
        return text.replace(".", ",") if self.lang in ("fi", "sv") else text

    def day(self, value: date | datetime | None) -> str:
        if value is None:
            return ""
        if isinstance(value, datetime):
            value = day_in_finland(value)
        return format_date(value, self.lang)

    def moment(self, value: datetime) -> str:
        return format_moment(value, self.lang)


_ACTIONS = {
    "recorded": N_("recorded"),
    "NeedUpdated": N_("updated"),
    "set": N_("set"),
    "GoalRevised": N_("revised"),
    "GoalSettled": N_("settled"),
    "added": N_("added to the network"),
    "MemberUpdated": N_("updated"),
    "planned": N_("planned"),
    "StepUpdated": N_("updated"),
    "StepRescheduled": N_("rescheduled"),
    "StepProgressed": N_("status changed"),
    "StepOutcomeRecorded": N_("outcome recorded"),
    "changed": N_("changed"),
    "given": N_("given"),
    "withdrawn": N_("withdrawn"),
    "CounterpartNamed": N_("counterpart named"),
    "HandoverDecided": N_("responsibility handed over"),
    "responsible left the network": N_("responsible person left the network"),
    "counterpart left the network": N_("counterpart left the network"),
    "measured": N_("recorded"),
    "written": N_("written"),
    "proposed": N_("handover proposed"),
    "ClientContactRecorded": N_("contact details recorded"),
    "NonDisclosureChanged": N_("non-disclosure order changed"),
    "GoalClientViewRecorded": N_("the client's view recorded"),
}

#: Fields of the change lists that are labelled under another name.
_FIELD_NAMES = {"non_disclosure": "active"}


def recent_changes(plan: ClientPlan, gettext: Callable[[str], str], limit: int = RECENT_CHANGES) -> list[RecentChange]:
    """The latest changes of the plan's items, newest first, from the items' own change lists.

    An item's changes, the plan's notes and its handovers are kept in the order they were
    recorded, so only the last ``limit`` of each list can be among the newest: the cost
    grows with the plan's items, not with all they went through (measures, placed on the
    day measured whenever recorded, are all looked at). Only the newest are put into words.
    """
    found: list[tuple[datetime, str, str, str, Any]] = []
    found.extend((change.at, "client", plan.client.name, "client-details", change)
                 for change in plan.client.changes[-limit:])
    found.extend((change.at, "responsibility", "", "panel-network", change)
                 for change in plan.responsibility.changes[-limit:])
    for kind, part, title in _CHANGING_PARTS:
        anchor = _ANCHOR_OF[kind]
        for item in getattr(plan, part).values():
            name, item_anchor = getattr(item, title), f"{anchor}-{item.id}"
            found.extend((change.at, kind, name, item_anchor, change) for change in item.changes[-limit:])
    found.extend((_measure_time(m), "measure", "", f"measure-{m.id}", m)
                 for m in heapq.nlargest(limit, plan.measures, key=_MEASURED_ON))
    found.extend((note.written_at, "note", "", f"note-{note.id}", note) for note in plan.notes[-limit:])
    found.extend((h.proposed_at, "handover", _member(plan, h.to_member_id), f"handover-{h.id}", h)
                 for h in plan.handovers[-limit:])
    newest = heapq.nlargest(limit, found, key=_WHEN)  # as sorted(found, key=_WHEN, reverse=True)[:limit]
    view = PlanView(plan, gettext, "en")
    return [_in_words(entry, gettext, view) for entry in newest]


#: The parts of a plan whose items keep change lists: (kind, part, the attribute that names an item).
_CHANGING_PARTS = (
    ("need", "needs", "description"),
    ("goal", "goals", "title"),
    ("network member", "members", "name"),
    ("consent", "consents", "organisation_name"),
    ("step", "steps", "title"),
)
_ANCHOR_OF = {"need": "need", "goal": "goal", "network member": "member", "consent": "consent", "step": "step"}


_WHEN = operator.itemgetter(0)
"""When an entry of :func:`recent_changes` happened."""


def _in_words(entry: tuple[datetime, str, str, str, Any], gettext: Callable[[str], str], view: PlanView) -> RecentChange:
    """One of :func:`recent_changes`' entries as the panel shows it."""
    at, kind, title, anchor, change = entry
    fields: tuple[str, ...] = ()
    if kind == "measure":
        by, title, action = change.recorded_by, view.measure_name(change), "measured"
    elif kind == "note":
        by, action = change.written_by, "written"
    elif kind == "handover":
        by, action = change.proposed_by, "proposed"
    else:
        by, action = change.by, change.action
        fields = tuple(field_label(_FIELD_NAMES.get(f, f), gettext) for f in change.fields)
    label = _ACTIONS.get(action)
    return RecentChange(at=at, by_name=by.name, by_organisation=by.organisation_name, what=gettext(ITEM_KINDS[kind]),
                        title=title, action=gettext(label) if label else action, fields=fields, anchor=anchor)


class LazyChanges:
    """:func:`recent_changes` worked out when a template first reads them (``recent``).

    Most renders (an item, a panel other than the history) never do. The history panel
    takes each change's text from ``kept`` (the texts an earlier render made in the same
    language) when there (:meth:`with_kept`), so that after an edit only the new entry and
    those whose words changed (an item's new title) are rendered.
    """

    def __init__(
        self, plan: ClientPlan, gettext: Callable[[str], str], kept: Mapping[RecentChange, str] | None = None
    ) -> None:
        self._plan = plan
        self._gettext = gettext
        self._changes: list[RecentChange] | None = None
        self._kept = kept or {}
        self.texts: dict[RecentChange, str] = {}
        """The text of each change shown so far: what the next render may take."""

    def with_kept(self) -> Iterator[tuple[RecentChange, str | None]]:
        """Each change with its text kept from an earlier render, or None: the template renders
        that one and hands it to :meth:`keep`. A change equal in every field has the same text."""
        for change in self._list():
            text = self._kept.get(change)
            if text is not None:
                self.texts[change] = text
            yield change, text

    def keep(self, change: RecentChange, text: str) -> str:
        """``text``, the template's text of ``change``, kept for the next render."""
        self.texts[change] = text
        return text

    def _list(self) -> list[RecentChange]:
        if self._changes is None:
            self._changes = recent_changes(self._plan, self._gettext)
        return self._changes

    def __iter__(self) -> Iterator[RecentChange]:
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._list())

    def __bool__(self) -> bool:
        return bool(self._list())


def conflict_view(
    error: EditConflict,
    rows: list[tuple[str, str, str, bool]],
    gettext: Callable[[str], str],
) -> ConflictView:
    """The conflict dialog's content for an :class:`EditConflict`."""
    kind = ITEM_KINDS.get(error.item_kind)
    return ConflictView(
        item_kind=gettext(kind) if kind else error.item_kind,
        changes=[
            {
                "by_name": change["by_name"],
                "by_organisation": change["by_organisation"],
                "at": datetime.fromisoformat(change["at"]),
                "fields": [field_label(_FIELD_NAMES.get(f, f), gettext) for f in change.get("fields", [])],
            }
            for change in error.changes
        ],
        rows=rows,
        current_revision=error.current_revision,
    )


def _member(plan: ClientPlan, member_id: str) -> str:
    member = plan.members.get(member_id)
    return member.name if member else ""


_MEASURED_ON = operator.attrgetter("measured_on")
"""A measure's place among the latest changes (the day: :func:`_measure_time` is noon of it)."""


def _measure_time(measure: Any) -> datetime:
    # A measure keeps its day, not the moment it was recorded: place it at noon of that day.
    return datetime.combine(measure.measured_on, datetime.min.time().replace(hour=12), FINLAND)

