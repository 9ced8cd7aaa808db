"""Who else is on a plan now, and what they are editing: the ``#presence`` fragment.

It is rendered once per plan and language (:class:`PresenceList`); each viewer's copy
leaves the viewer out by joining the other people's rendered lines (:mod:`web.live.hub`
sends it coalesced, at most every half second).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from markupsafe import Markup

from web.i18n import N_, translations

__all__ = ("PRESENCE_ID", "Presence", "PresenceList", "render_presence")

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


class PresenceList:
    """Everyone on a plan, rendered once in one language: each viewer's list leaves them out.

    Each person's line is rendered once; a viewer's fragment is a join of the others' lines,
    kept per person (a plan's screens are often fewer people than sockets).
    A person with two tabs open is listed once (editing, if either tab is).
    """

    def __init__(self, people: Iterable[Presence], language: str) -> None:
        gettext = translations(language).gettext
        unique: dict[str, Presence] = {}
        for person in people:
            known = unique.get(person.person_id)
            if known is None or (known.editing is None and person.editing is not None):
                unique[person.person_id] = person
        ordered = sorted(unique.values(), key=lambda p: (p.editing is None, p.name.casefold()))
        self._lines = [(person.person_id, _line(person, gettext)) for person in ordered]
        self._open = str(
            Markup('<div id="{id}" class="presence" role="region" aria-label="{label}" hx-swap-oob="true">').format(
                id=PRESENCE_ID, label=gettext(_REGION)
            )
        )
        self._alone = str(Markup('<p class="muted">{}</p>').format(gettext(_ALONE)))
        self._by_viewer: dict[str | None, str] = {}

    def without(self, me: str | None) -> str:
        """The ``#presence`` fragment for the person ``me`` (left out of it)."""
        known = self._by_viewer.get(me)
        if known is None:
            others = [line for person_id, line in self._lines if person_id != me]
            body = f'<ul class="presence__list">{"".join(others)}</ul>' if others else self._alone
            known = self._by_viewer[me] = f"{self._open}{body}</div>"
        return known


def _line(person: Presence, gettext: Callable[[str], str]) -> str:
    names = {"name": person.name, "organisation": person.organisation}
    if person.editing is None:
        return str(Markup("<li>{}</li>").format(gettext(_VIEWING) % names))
    kind = person.editing.split("-", 1)[0]
    sentence = gettext(_EDITING.get(kind, _EDITING_OTHER))
    return str(Markup('<li data-editing="{}">{}</li>').format(person.editing, sentence % names))


def render_presence(people: Iterable[Presence], language: str, *, me: str | None = None) -> str:
    """The ``#presence`` fragment in ``language``, leaving out the person ``me``."""
    return PresenceList(people, language).without(me)
