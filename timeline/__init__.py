"""Polku's timeline: a plan's service path drawn as lanes on a time axis.

Pure functions, no web, no database: build a `TimelineInput`, `layout` it, then
`render_svg` the picture and `render_table` its accessible equivalent. The CSS
classes the rendering uses are listed in `timeline.render`.

    lay = layout(TimelineInput(today=..., opened_on=..., steps=(...), goals=(...)))
    svg = render_svg(lay, gettext, "fi")
    table = render_table(lay, gettext, "fi")
"""

from timeline.layout import (
    Axis,
    Lane,
    Layout,
    PlacedGoal,
    PlacedMarker,
    PlacedStep,
    Tick,
    assign_rows,
    choose_granularity,
    layout,
)
from timeline.model import (
    CATEGORIES,
    GOAL_STATUSES,
    MARKER_KINDS,
    STEP_STATUSES,
    TimelineGoal,
    TimelineInput,
    TimelineMarker,
    TimelineStep,
)
from timeline.render import (
    category_labels,
    format_day,
    marker_label,
    render,
    render_svg,
    render_table,
    status_labels,
)

__all__ = [
    "Axis",
    "CATEGORIES",
    "GOAL_STATUSES",
    "Lane",
    "Layout",
    "MARKER_KINDS",
    "PlacedGoal",
    "PlacedMarker",
    "PlacedStep",
    "STEP_STATUSES",
    "Tick",
    "TimelineGoal",
    "TimelineInput",
    "TimelineMarker",
    "TimelineStep",
    "assign_rows",
    "category_labels",
    "choose_granularity",
    "format_day",
    "layout",
    "marker_label",
    "render",
    "render_svg",
    "render_table",
    "status_labels",
]
