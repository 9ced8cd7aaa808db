"""Input types of the timeline: a plan's view reduced to what a timeline shows.

These are the timeline package's own types, so that it depends on nothing else in
Polku: the projection (or a test) builds a `TimelineInput`, either directly or with
`msgspec.convert(mapping, TimelineInput)`, and hands it to `timeline.layout`.

Every struct checks its own invariants on construction (`__post_init__`), so a
layout never has to guess what an unknown category or a step that ends before it
starts would mean. `msgspec.convert` raises `msgspec.ValidationError` for the same
problems; direct construction raises `ValueError`.
"""

from __future__ import annotations

from datetime import date

import msgspec

#: The four need categories, in lane order (TOIKE client plan). The financial
#: situation runs through all of them and is deliberately not a lane.
CATEGORIES: tuple[str, ...] = (
    "health",
    "work_and_employment",
    "everyday_life",
    "skills_and_competence",
)

STEP_STATUSES: tuple[str, ...] = ("planned", "started", "done", "cancelled")
GOAL_STATUSES: tuple[str, ...] = ("set", "achieved", "revised", "dropped")

#: Marker kinds the renderer has words for; any other kind is allowed and is
#: shown with its own label (or a generic "Event").
MARKER_KINDS: tuple[str, ...] = (
    "opened",
    "closed",
    "handover_proposed",
    "handover_accepted",
    "handover_declined",
)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


class TimelineStep(msgspec.Struct, frozen=True, kw_only=True):
    """One step of the service path, in one need category's lane.

    `start` and `end` are both inclusive: a one-day appointment has start == end.
    """

    id: str
    title: str
    category: str
    start: date
    end: date
    status: str = "planned"

    def __post_init__(self) -> None:
        _require(self.category in CATEGORIES, f"unknown category {self.category!r}")
        _require(self.status in STEP_STATUSES, f"unknown step status {self.status!r}")
        _require(self.end >= self.start, f"step {self.id!r} ends before it starts")


class TimelineGoal(msgspec.Struct, frozen=True, kw_only=True):
    """A goal with a target date; shown in the lane of each of its categories."""

    id: str
    title: str
    categories: tuple[str, ...]
    target: date
    status: str = "set"

    def __post_init__(self) -> None:
        _require(bool(self.categories), f"goal {self.id!r} has no category")
        for category in self.categories:
            _require(category in CATEGORIES, f"unknown category {category!r}")
        _require(self.status in GOAL_STATUSES, f"unknown goal status {self.status!r}")


class TimelineMarker(msgspec.Struct, frozen=True, kw_only=True):
    """A dated event of the whole plan (opened, closed, handover accepted ...).

    `label` is already in the reader's words (for example a person's name); when it
    is empty the renderer uses the translated name of `kind`.
    """

    kind: str
    on: date
    label: str = ""


class TimelineInput(msgspec.Struct, frozen=True, kw_only=True):
    """Everything the timeline of one plan shows, as of `today`.

    `past` says that `today` is the moment an earlier version of the plan is shown at (its
    history), not the present: its line is then marked "Moment shown", not "Today".
    """

    today: date
    opened_on: date
    past: bool = False
    closed_on: date | None = None
    steps: tuple[TimelineStep, ...] = ()
    goals: tuple[TimelineGoal, ...] = ()
    markers: tuple[TimelineMarker, ...] = ()

    def __post_init__(self) -> None:
        if self.closed_on is not None:
            _require(self.closed_on >= self.opened_on, "plan closes before it opens")
