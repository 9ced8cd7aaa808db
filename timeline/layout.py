"""Placing a plan's steps, goals and markers on a time axis.

Positions are fractions 0..1 of the axis width, so a renderer can scale them to any
size. The axis runs over whole days: day `d` occupies `[axis.x(d), axis.x(d + 1))`.
A step's bar covers all of its days (a one-day step still has a width); goals,
markers and today are points at the middle of their day (`axis.centre`).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from datetime import date, timedelta
from typing import Any

import msgspec

from timeline.model import (
    CATEGORIES,
    TimelineGoal,
    TimelineInput,
    TimelineMarker,
    TimelineStep,
)

GRANULARITIES: tuple[str, ...] = ("week", "month", "quarter", "year")

#: Longest axis (in days) that still gets week ticks: about four months.
WEEK_MAX_DAYS = 123
#: Longest axis (in days) that still gets month ticks: about three years.
MONTH_MAX_DAYS = 3 * 365 + 1

#: How far the axis reaches at most before the earliest and after the latest of the plan's
#: opening, closing and today (25 years). The plan's rules keep new dates within ten years
#: (``domain.plan.PLAN_REACH``); this keeps any plan drawable, whatever dates it holds.
AXIS_REACH_DAYS = 25 * 366

#: Label every n-th tick, choosing n from these so that labels fall on natural
#: boundaries (every quarter, every half year, every fifth year ...).
_LABEL_STRIDES: dict[str, tuple[int, ...]] = {
    "week": (1, 2, 4, 8, 13, 26, 52),
    "month": (1, 2, 3, 6, 12),
    "quarter": (1, 2, 4),
    "year": (1, 2, 5, 10, 20, 50, 100),
}


class Tick(msgspec.Struct, frozen=True, kw_only=True):
    """A gridline at the start of a week, month, quarter or year.

    Only `labelled` ticks get a text label, so labels never crowd each other.
    """

    on: date
    x: float
    labelled: bool


class Axis(msgspec.Struct, frozen=True, kw_only=True):
    """The time axis: `start` and `end` are both inclusive days."""

    start: date
    end: date
    granularity: str
    ticks: tuple[Tick, ...]

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    def x(self, day: date) -> float:
        """Fraction of the axis at the beginning of `day` (0 or 1 for a day off the axis)."""
        return _within_axis((day - self.start).days / self.days)

    def centre(self, day: date) -> float:
        """Fraction of the axis at the middle of `day` (0 or 1 for a day off the axis)."""
        return _within_axis(((day - self.start).days + 0.5) / self.days)


def _within_axis(fraction: float) -> float:
    return min(max(fraction, 0.0), 1.0)


class PlacedStep(msgspec.Struct, frozen=True, kw_only=True):
    """A step in its lane: `row` 0 is the top row, `x0..x1` its whole days."""

    step: TimelineStep
    row: int
    x0: float
    x1: float


class PlacedGoal(msgspec.Struct, frozen=True, kw_only=True):
    goal: TimelineGoal
    x: float


class PlacedMarker(msgspec.Struct, frozen=True, kw_only=True):
    marker: TimelineMarker
    x: float


class Lane(msgspec.Struct, frozen=True, kw_only=True):
    """One need category's lane; `rows` is 0 when the lane has no steps."""

    category: str
    rows: int
    steps: tuple[PlacedStep, ...]
    goals: tuple[PlacedGoal, ...]


class Layout(msgspec.Struct, frozen=True, kw_only=True):
    """A whole timeline, ready to render. `source` is the input it was made from."""

    axis: Axis
    lanes: tuple[Lane, ...]
    markers: tuple[PlacedMarker, ...]
    today: date
    today_x: float
    source: TimelineInput


# --- public functions -------------------------------------------------------------

def assign_rows(intervals: Iterable[tuple[Any, Any]]) -> list[int]:
    """Give each closed interval `(start, end)` the first row it fits in.

    An interval fits a row when the row's last interval ends strictly before it
    starts, so intervals sharing an end point (steps touching the same day) never
    share a row. With the intervals sorted by start this first-fit greedy is
    optimal for interval graphs: the number of rows equals the largest number of
    intervals that overlap at one point.
    """
    row_ends: list[Any] = []
    rows: list[int] = []
    for start, end in intervals:
        for index, last_end in enumerate(row_ends):
            if last_end < start:
                row_ends[index] = end
                rows.append(index)
                break
        else:
            row_ends.append(end)
            rows.append(len(row_ends) - 1)
    return rows


def choose_granularity(days: int) -> str:
    """Weeks up to about four months, months up to about three years, then years.

    `days` is the span the plan covers, before padding, so that "a three-year plan"
    means what its reader expects.

    Quarters are never chosen here (a three-year span in months is labelled every
    quarter anyway, see `_LABEL_STRIDES`), but can be asked for with
    `layout(..., granularity="quarter")`.
    """
    if days <= WEEK_MAX_DAYS:
        return "week"
    if days <= MONTH_MAX_DAYS:
        return "month"
    return "year"


def layout(
    timeline_input: TimelineInput,
    *,
    granularity: str | None = None,
    max_labels: int = 12,
    padding: float = 0.03,
    min_padding_days: int = 3,
) -> Layout:
    """Lay out a plan's timeline: the axis, the four lanes and the plan's markers.

    The axis covers the opening day, every step, goal, marker, the closing day and
    today, plus `padding` of the span (at least `min_padding_days`) on each side.
    """
    if granularity is not None and granularity not in GRANULARITIES:
        raise ValueError(f"unknown granularity {granularity!r}")
    axis = _axis(timeline_input, granularity, max_labels, padding, min_padding_days)
    lanes = tuple(
        _lane(category, timeline_input.steps, timeline_input.goals, axis)
        for category in CATEGORIES
    )
    markers = tuple(
        PlacedMarker(marker=m, x=axis.centre(m.on))
        for m in sorted(timeline_input.markers, key=lambda m: (m.on, m.kind, m.label))
    )
    return Layout(
        axis=axis,
        lanes=lanes,
        markers=markers,
        today=timeline_input.today,
        today_x=axis.centre(timeline_input.today),
        source=timeline_input,
    )


# --- the axis ---------------------------------------------------------------------


def _covered_days(timeline_input: TimelineInput) -> list[date]:
    """Every day the axis must show, those further than :data:`AXIS_REACH_DAYS` from the
    plan's own days taken as that far (their items then sit at the axis's end)."""
    anchors = [timeline_input.opened_on, timeline_input.today]
    if timeline_input.closed_on is not None:
        anchors.append(timeline_input.closed_on)
    days = list(anchors)
    for step in timeline_input.steps:
        days += (step.start, step.end)
    days += (goal.target for goal in timeline_input.goals)
    days += (marker.on for marker in timeline_input.markers)
    earliest, latest = _shifted(min(anchors), -AXIS_REACH_DAYS), _shifted(max(anchors), AXIS_REACH_DAYS)
    return [min(max(day, earliest), latest) for day in days]


def _shifted(day: date, days: int) -> date:
    """``day`` moved by ``days``, held within the calendar instead of overflowing it."""
    return date.fromordinal(min(max(day.toordinal() + days, 1), date.max.toordinal()))


def _axis(
    timeline_input: TimelineInput,
    granularity: str | None,
    max_labels: int,
    padding: float,
    min_padding_days: int,
) -> Axis:
    days = _covered_days(timeline_input)
    first, last = min(days), max(days)
    span = (last - first).days + 1
    pad = max(min_padding_days, math.ceil(span * padding))
    start, end = _shifted(first, -pad), _shifted(last, pad)
    chosen = granularity or choose_granularity(span)
    bare = Axis(start=start, end=end, granularity=chosen, ticks=())
    boundaries = list(_boundaries(start, end, chosen))
    stride = _label_stride(len(boundaries), chosen, max_labels)
    ticks = tuple(
        Tick(on=d, x=bare.x(d), labelled=_unit_index(d, chosen) % stride == 0)
        for d in boundaries
    )
    return Axis(start=start, end=end, granularity=chosen, ticks=ticks)


def _floor(day: date, granularity: str) -> date:
    """The first day of the week (Monday), month, quarter or year holding `day`."""
    if granularity == "week":
        return day - timedelta(days=day.weekday())
    if granularity == "month":
        return day.replace(day=1)
    if granularity == "quarter":
        return date(day.year, (day.month - 1) // 3 * 3 + 1, 1)
    return date(day.year, 1, 1)


def _next(boundary: date, granularity: str) -> date:
    if granularity == "week":
        return boundary + timedelta(days=7)
    months = {"month": 1, "quarter": 3, "year": 12}[granularity]
    index = boundary.year * 12 + boundary.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _boundaries(start: date, end: date, granularity: str) -> Iterable[date]:
    boundary = _floor(start, granularity)
    if boundary < start:
        boundary = _next(boundary, granularity)
    while boundary <= end:
        yield boundary
        boundary = _next(boundary, granularity)


def _unit_index(day: date, granularity: str) -> int:
    """A running number of the week/month/quarter/year, used to pick labelled ticks."""
    if granularity == "week":
        return (day.toordinal() - 1) // 7  # date.min, ordinal 1, is a Monday
    if granularity == "month":
        return day.year * 12 + day.month - 1
    if granularity == "quarter":
        return day.year * 4 + (day.month - 1) // 3
    return day.year


def _label_stride(count: int, granularity: str, max_labels: int) -> int:
    for stride in _LABEL_STRIDES[granularity]:
        if math.ceil(count / stride) <= max_labels:
            return stride
    return max(1, math.ceil(count / max(1, max_labels)))


# --- lanes ------------------------------------------------------------------------


def _lane(
    category: str,
    steps: Sequence[TimelineStep],
    goals: Sequence[TimelineGoal],
    axis: Axis,
) -> Lane:
    own = sorted((s for s in steps if s.category == category), key=lambda s: (s.start, s.id))
    rows = assign_rows((s.start, s.end) for s in own)
    placed = tuple(
        PlacedStep(step=s, row=row, x0=axis.x(s.start), x1=axis.x(_shifted(s.end, 1)))
        for s, row in zip(own, rows)
    )
    own_goals = sorted(
        (g for g in goals if category in g.categories), key=lambda g: (g.target, g.id)
    )
    return Lane(
        category=category,
        rows=max(rows, default=-1) + 1,
        steps=placed,
        goals=tuple(PlacedGoal(goal=g, x=axis.centre(g.target)) for g in own_goals),
    )
