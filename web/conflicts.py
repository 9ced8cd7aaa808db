"""An edit that came too late, merged with what was saved since: three ways, field by field.

An edit form posts every field of the item and the item's revision the editor saw. When
someone else changed the item after the form was opened, the domain refuses the edit
(:class:`~domain.errors.EditConflict`) and the form comes back with the conflict dialog.
Putting the editor's draft back as it was posted would make "Save my version" write, into
every field the editor never touched, the value the editor happened to see: the other
person's change undone without anyone deciding so. So the draft is merged first, for each
field, against the item as the editor saw it (the *base*) and the item as saved now:

- a field the editor did not change takes the saved value;
- a field only the editor changed keeps the draft's value;
- a field both changed, to different values, is a real conflict: the draft keeps the
  editor's value ("Save my version" means it) and :attr:`Merge.clashes` names the field,
  so that the dialog can show both values as the one choice left to make.

Only forms whose fields are the item's own values are merged (:data:`MERGED_FORMS`); the
others post a decision (set or lift a non-disclosure order, start a step, settle a goal),
which is the editor's to make again on the item as it is now.

The base comes from the plan's events through the plan service (the write side never reads
a read model): one replay of the plan, up to the change that followed the editor's
revision, paid only when an edit conflicts.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from domain.application import PlanService
from domain.errors import EditConflict
from domain.inputs import plain_text
from domain.items import Item
from domain.plan import ClientPlan, PlanRecord

__all__ = ("MERGED_FORMS", "Merge", "item_at_revision", "merge", "merge_with_saved")

MERGED_FORMS: frozenset[tuple[str, str]] = frozenset({
    ("client", "edit"),
    ("client", "contact"),
    ("needs", "edit"),
    ("goals", "revise"),
    ("members", "edit"),
    ("steps", "edit"),
    ("steps", "reschedule"),
    ("steps", "outcome"),
})
"""The forms, as (kind, form) of the plan page's routes, whose prefilled values are the
item's own fields, so that the base and the saved item give each field's value to merge."""


@dataclass(frozen=True)
class Merge:
    """The draft to put back into the conflict dialog's form, and what became of each field."""

    values: dict[str, Any]
    """Every field of the draft: the saved value where only the other person changed it."""
    theirs: frozenset[str] = frozenset()
    """The fields that took the saved value (the editor had left them as they were)."""
    clashes: frozenset[str] = frozenset()
    """The fields both changed to different values: the draft keeps the editor's."""


def merge(base: Mapping[str, Any], mine: Mapping[str, Any], theirs: Mapping[str, Any]) -> Merge:
    """Merge the draft ``mine`` with the saved ``theirs``, against ``base`` (the item as the
    editor saw it), for each field of ``mine``.

    Values are form values: text (dates as ISO text, ids) or lists of text (a goal's needs).
    A field that ``base`` or ``theirs`` lacks is the command's own input rather than the
    item's (a reschedule's reason): it keeps the draft's value. Two values are the same if
    they say the same once surrounding spaces and a browser's line ends (CRLF) are left
    aside, as the domain stores them; two lists if they hold the same values in any order.
    """
    values = dict(mine)
    taken: set[str] = set()
    clashes: set[str] = set()
    for name, my_value in mine.items():
        if name not in base or name not in theirs:
            continue
        they_changed = not _same(base[name], theirs[name])
        if not they_changed or _same(my_value, theirs[name]):
            continue
        if _same(my_value, base[name]):
            values[name] = theirs[name]
            taken.add(name)
        else:
            clashes.add(name)
    return Merge(values=values, theirs=frozenset(taken), clashes=frozenset(clashes))


def merge_with_saved(
    plans: PlanService,
    *,
    plan_id: str,
    conflict: EditConflict,
    form: tuple[str, str],
    saved: Item,
    values_of: Callable[[Item], Mapping[str, Any]],
    draft: Mapping[str, Any],
) -> Merge:
    """The ``draft`` of ``form`` that ``conflict`` refused, merged with the ``saved`` item.

    ``values_of(item)`` gives an item's values as the form shows them (the form's prefill);
    the base is the item at the revision the editor saw (:func:`item_at_revision`). When
    the form is not one that merges (:data:`MERGED_FORMS`) or the base cannot be found, the
    draft stays as it was posted and every field in which it differs from the saved item
    counts as a clash: nothing says who changed it.
    """
    theirs = values_of(saved)
    base = None
    if form in MERGED_FORMS and 0 <= conflict.seen_revision < conflict.current_revision:
        # A revision the item never had (posted by hand) is not looked for: no replay for it.
        base = item_at_revision(plans, plan_id, conflict.item_id, conflict.seen_revision)
    if base is None:
        differing = {name for name in draft if name in theirs and not _same(draft[name], theirs[name])}
        return Merge(values=dict(draft), clashes=frozenset(differing))
    return merge(values_of(base), draft, theirs)


def item_at_revision(plans: PlanService, plan_id: str, item_id: str, revision: int) -> Item | None:
    """The item ``item_id`` of the plan as it was at its ``revision``: None if it never was
    (no such plan or item, or a revision it has not reached).

    The plan's events are replayed into a :class:`~domain.plan.PlanRecord`, as
    ``PlanService.plan_record`` and ``history`` do, up to the event that took the item past
    ``revision``. ``plan_record(version=...)`` would need the plan's version at that revision,
    which no query answers; finding it by trying versions would replay the plan many times.
    The last state at ``revision`` is the one an editor saw: an event that changes an item
    without counting its revision would otherwise leave an older base behind.
    """
    found = None
    record = None
    for event in plans.events.get(uuid.UUID(plan_id)):
        record = PlanRecord.fold(event, record)
        item = _item(record, item_id)
        if item is None:
            continue
        if item.revision > revision:
            break
        if item.revision == revision:
            found = copy.deepcopy(item)  # the replay goes on changing the record's own
    return found


# ---------------------------------------------------------------------------- helpers


_ITEM_PARTS = ("needs", "goals", "members", "steps", "consents")
"""The parts of a plan that hold items by id; the client and the responsibility are one each."""


def _item(plan: ClientPlan, item_id: str) -> Item | None:
    for name in _ITEM_PARTS:
        item = getattr(plan, name).get(item_id)
        if item is not None:
            return item
    for item in (plan.client, plan.responsibility):
        if item.id == item_id:
            return item
    return None


def _same(one: Any, other: Any) -> bool:
    return _comparable(one) == _comparable(other)


def _comparable(value: Any) -> Any:
    if isinstance(value, Iterable) and not isinstance(value, str):
        return frozenset(text for text in map(_comparable, value) if text)
    if value is None:
        return ""
    return plain_text(str(value))  # as domain.inputs keeps texts
