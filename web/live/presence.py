"""Who else is on a plan now, and what they are editing: the ``#presence`` fragment.

It is rendered for each viewer (it leaves the viewer out), which costs a few string
operations per person; the plan's fragments are the expensive part and are rendered once
per language (:mod:`web.live.hub`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from markupsafe import Markup

from web.i18n import N_, translations

__all__ = ("PRESENCE_ID", "Presence", "render_presence")

PRESENCE_ID = "presence"

# What someone is editing, by the kind of item (the element id's prefix: "need-<id>").
_EDITING = {
    "need": N_("%(name)s (%(organisation)s) is editing a need."),
    "goal": N_("%(name)s (%(organisation)s) is editing a goal."),
    "step": N_("%(name)s (%(organisation)s) is editing a step of the service path."),
    "member": N_("%(name)s (%(organisation)s) is editing the network."),
    "consent": N_("%(name)s (%(organisation)s) is editing a consent."),
    "measure": N_("%(name)s (%(organisation)s) is editing a measure."),
    "note": N_("%(name)s (%(organisation)s) is editing a note."),
    "client": N_("%(name)s (%(organisation)s) is editing the client's details."),
}
_EDITING_OTHER = N_("%(name)s (%(organisation)s) is editing the plan.")
_VIEWING = N_("%(name)s (%(organisation)s) is viewing the plan.")
_ALONE = N_("No one else is on this plan now.")
_REGION = N_("Others on this plan now")


@dataclass(frozen=True, slots=True)
class Presence:
    """One person on the plan: who, for which organisation, editing what (an element id)."""

    person_id: str
    name: str
    organisation: str
    editing: str | None = None


def render_presence(people: Iterable[Presence], language: str, *, me: str | None = None) -> str:
    """The ``#presence`` fragment in ``language``, leaving out the person ``me``.

    A person with two tabs open is listed once (editing, if either tab is).
    """
    gettext = translations(language).gettext
    others: dict[str, Presence] = {}
    for person in people:
        if person.person_id == me:
            continue
        known = others.get(person.person_id)
        if known is None or (known.editing is None and person.editing is not None):
            others[person.person_id] = person
    if not others:
        body = Markup('<p class="muted">{}</p>').format(gettext(_ALONE))
    else:
        items = []
        for person in sorted(others.values(), key=lambda p: (p.editing is None, p.name.casefold())):
            if person.editing is None:
                text = gettext(_VIEWING) % {"name": person.name, "organisation": person.organisation}
                items.append(Markup("<li>{}</li>").format(text))
            else:
                kind = person.editing.split("-", 1)[0]
                sentence = gettext(_EDITING.get(kind, _EDITING_OTHER))
                text = sentence % {"name": person.name, "organisation": person.organisation}
                items.append(Markup('<li data-editing="{}">{}</li>').format(person.editing, text))
        body = Markup('<ul class="presence__list">{}</ul>').format(Markup("").join(items))
    return str(
        Markup('<div id="{id}" class="presence" role="region" aria-label="{label}" hx-swap-oob="true">{body}</div>').format(
            id=PRESENCE_ID, label=gettext(_REGION), body=body
        )
    )

