"""Rendering a timeline `Layout` as an SVG picture and as an equivalent HTML table.

Both functions take the caller's `gettext` (every word shown goes through it, with
plain English msgids) and a babel locale name ("fi", "sv", "en") for dates. Every
piece of text is escaped with markupsafe, and characters XML cannot hold are
dropped, so titles typed by users cannot break or inject markup.

The SVG scales to its container (viewBox, width 100%, top-left anchored); its text
scales with it. It carries presentation attributes as defaults, so it reads without
any stylesheet; CSS rules on the classes below override them. Status is never shown
by colour alone (WCAG 1.4.1): planned bars have a dashed outline, started a solid
one, done bars a hatch pattern and a check mark, cancelled bars a dotted outline and
a strike line; goals are open, filled, dashed or crossed diamonds. The SVG is
`role="img"` (assistive technology reads its title and description only); offer
`render_table` next to it for screen readers and print.

CSS classes used
----------------
SVG:
  timeline                       the <svg> element
  timeline__axis                 group of tick gridlines and labels
  timeline__tick, timeline__tick--labelled, timeline__tick-label
  timeline__lane, timeline__lane--<category>      lane group (category key, e.g. health)
  timeline__backgrounds          group of the lane backgrounds (under the gridlines)
  timeline__lane-bg, timeline__lane-bg--<category>, timeline__lane-separator
  timeline__lane-heading
  step, step--planned, step--started, step--done, step--cancelled   bar group
  step__bar, step__hatch, step__check, step__strike, step__label
  goal, goal--set, goal--achieved, goal--revised, goal--dropped     goal group
  goal__symbol, goal__cross, goal__label
  timeline__marker, timeline__marker--<kind>      plan event (opened, closed, ...)
  timeline__marker-line, timeline__marker-label
  timeline__today, timeline__today-line, timeline__today-label   today, or the moment an
                                 earlier version is shown at (`TimelineInput.past`: "Moment shown")
Table:
  timeline-table                 the <table>
  timeline-table__row, timeline-table__row--step / --goal / --marker
  timeline-table__empty          the row shown when there is nothing to list
  status, status--<status>       the status cell (step or goal status key)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from datetime import date
from typing import Any

from babel.dates import format_date, format_skeleton
from markupsafe import Markup, escape

from timeline.layout import Layout, Lane, PlacedStep, assign_rows, layout
from timeline.model import TimelineGoal, TimelineInput, TimelineMarker, TimelineStep

Gettext = Callable[[str], str]

# Geometry, in viewBox units.
WIDTH = 1000
MARGIN = 8
FONT = 12
HEADING_FONT = 14
CHAR_WIDTH = 0.6 * FONT  # a generous average for sans-serif, to avoid overlaps
TICK_BAND = 24
MARKER_ROW = 15
LANE_HEADING = 24
GOAL_ROW = 18
STEP_ROW = 24
BAR = 18
MIN_BAR = 4.0  # a one-day step in a long plan stays visible
LABEL_CHARS = 40  # longest visible label; the full text is in the tooltip and table

_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


# --- words ------------------------------------------------------------------------
# Written as literal gettext calls so that message extraction finds them.


def category_labels(gettext: Gettext) -> dict[str, str]:
    return {
        "health": gettext("Health"),
        "work_and_employment": gettext("Work and employment"),
        "everyday_life": gettext("Everyday life"),
        "skills_and_competence": gettext("Skills and competence"),
    }


def status_labels(gettext: Gettext) -> dict[str, str]:
    """Words for step statuses and goal statuses (their keys do not overlap)."""
    return {
        "planned": gettext("Planned"),
        "started": gettext("Started"),
        "done": gettext("Done"),
        "cancelled": gettext("Cancelled"),
        "set": gettext("Goal set"),
        "achieved": gettext("Goal achieved"),
        "revised": gettext("Goal revised"),
        "dropped": gettext("Goal dropped"),
    }


def marker_label(marker: TimelineMarker, gettext: Gettext) -> str:
    """The marker's own label, or the translated name of its kind."""
    if marker.label:
        return marker.label
    return {
        "opened": gettext("Plan opened"),
        "closed": gettext("Plan closed"),
        "handover_proposed": gettext("Handover proposed"),
        "handover_accepted": gettext("Handover accepted"),
        "handover_declined": gettext("Handover declined"),
    }.get(marker.kind) or gettext("Event")


def today_label(source: TimelineInput, gettext: Gettext) -> str:
    """The word for the line at `source.today`: "Today", or "Moment shown" on an earlier version."""
    return gettext("Moment shown") if source.past else gettext("Today")


# --- markup helpers ---------------------------------------------------------------


def _clean(text: str) -> str:
    """Drop characters that XML 1.0 cannot hold (they would make the SVG unparseable)."""
    return _NOT_XML.sub("", text)


def _num(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".")


def _el(name: str, attrs: Mapping[str, Any] | None = None, *children: Any) -> Markup:
    """An element with escaped attributes and children; None attributes are left out.

    Children that are `Markup` are trusted, anything else is text and is escaped. Built
    with plain strings and `escape` (`Markup.format` took most of a timeline's time).
    """
    parts = ["<", name]
    for key, value in (attrs or {}).items():  # the names are this module's own literals
        if value is None:
            continue
        if isinstance(value, float):
            text = _num(value)
        elif isinstance(value, int):
            text = str(value)
        else:
            text = escape(_clean(str(value)))
        parts += (" ", key, '="', text, '"')
    if not children:
        parts.append("/>")
    else:
        parts.append(">")
        parts += (child if isinstance(child, Markup) else escape(_clean(str(child))) for child in children)
        parts += ("</", name, ">")
    return Markup("".join(parts))


def _truncate(text: str, chars: int) -> str:
    if chars < 1:
        return ""
    return text if len(text) <= chars else text[: max(chars - 1, 0)].rstrip() + "…"


def _text_width(text: str, font: float = FONT) -> float:
    return len(text) * font * 0.6


# --- dates ------------------------------------------------------------------------


def format_day(day: date, locale: str) -> str:
    """A full date in the reader's format: 23.11.2026 in Finnish, and in Swedish as written
    in Finland (CLDR's Swedish ``medium`` is "23 nov. 2026")."""
    return format_date(day, format="d.M.y" if locale.startswith("sv") else "medium", locale=locale)


def _day_range(start: date, end: date, locale: str) -> str:
    if start == end:
        return format_day(start, locale)
    return f"{format_day(start, locale)} – {format_day(end, locale)}"


def _tick_label(day: date, granularity: str, first: bool, locale: str) -> str:
    """Short labels: 5.1. for weeks (the first with its year), tammi for months
    (with the year in January and on the first label), 1. nelj. 2026 for quarters,
    2026 for years."""
    if granularity == "week":
        return format_skeleton("yMMMd" if first else "MMMd", day, locale=locale)
    if granularity == "month":
        skeleton = "yMMM" if first or day.month == 1 else "MMM"
        return format_skeleton(skeleton, day, locale=locale)
    if granularity == "quarter":
        return format_skeleton("yQQQ", day, locale=locale)
    return format_skeleton("y", day, locale=locale)


# --- SVG --------------------------------------------------------------------------


class _Frame:
    """Maps axis fractions to viewBox x coordinates."""

    def __init__(self, width: float) -> None:
        self.left = MARGIN
        self.right = width - MARGIN

    def x(self, fraction: float) -> float:
        return self.left + fraction * (self.right - self.left)


def _point_labels(
    items: Iterable[tuple[float, str, Any]], frame: _Frame, gap: float
) -> list[tuple[float, str, float, str, int, Any]]:
    """Place labels of points `(x, text, payload)` in rows so that no two overlap.

    A label sits `gap` right of its point, or left of it when it would run off the
    right edge. Returns `(x, text, text_x, text_anchor, row, payload)` per item.
    """
    placed = []
    for x, text, payload in items:
        width = _text_width(text)
        if x + gap + width > frame.right:
            placed.append(((x - gap - width, x + gap), x, text, x - gap, "end", payload))
        else:
            placed.append(((x - gap, x + gap + width), x, text, x + gap, "start", payload))
    placed.sort(key=lambda p: p[0])
    rows = assign_rows(p[0] for p in placed)
    return [(x, text, tx, anchor, row, payload)
            for (_, x, text, tx, anchor, payload), row in zip(placed, rows)]


def _defs(prefix: str) -> Markup:
    hatch = _el(
        "pattern",
        {
            "id": f"{prefix}-hatch",
            "width": 6,
            "height": 6,
            "patternUnits": "userSpaceOnUse",
            "patternTransform": "rotate(45)",
        },
        _el("line", {"x1": 0, "y1": 0, "x2": 0, "y2": 6, "stroke": "#1b5e20", "stroke-width": 1.5}),
    )
    return _el("defs", None, hatch)


def _axis_svg(lay: Layout, frame: _Frame, locale: str, bottom: float) -> Markup:
    parts = []
    first, free_from = True, frame.left
    for tick in lay.axis.ticks:
        x = frame.x(tick.x)
        cls = "timeline__tick timeline__tick--labelled" if tick.labelled else "timeline__tick"
        parts.append(
            _el("line", {"class": cls, "x1": x, "y1": TICK_BAND - 6, "x2": x, "y2": bottom,
                         "stroke": "#c8c8c8", "stroke-width": 1 if tick.labelled else 0.5})
        )
        if not tick.labelled:
            continue
        label = _tick_label(tick.on, lay.axis.granularity, first, locale)
        if x + 3 < free_from or x + 3 + _text_width(label) > frame.right:
            continue  # would overlap the previous label or be cut off at the right edge
        first, free_from = False, x + 3 + _text_width(label) + 6
        parts.append(
            _el("text", {"class": "timeline__tick-label", "x": x + 3, "y": TICK_BAND - 9,
                         "font-size": FONT, "fill": "#333"}, label)
        )
    return _el("g", {"class": "timeline__axis"}, *parts)


def _marker_band(lay: Layout, frame: _Frame, gettext: Gettext) -> tuple[list, float]:
    """Labels of plan markers and of today, stacked; returns them and the band height.

    Today's payload is None; a marker's payload is its TimelineMarker."""
    points = [
        (frame.x(m.x), _truncate(marker_label(m.marker, gettext), LABEL_CHARS), m.marker)
        for m in lay.markers
    ]
    points.append((frame.x(lay.today_x), today_label(lay.source, gettext), None))
    labels = _point_labels(points, frame, gap=4)
    rows = max(row for *_, row, _ in labels) + 1
    return labels, rows * MARKER_ROW + 4


def _markers_svg(lay: Layout, labels: list, top: float, bottom: float, locale: str) -> Markup:
    """Vertical lines for plan markers (dotted) and today (solid, bold label)."""
    parts = []
    for x, text, tx, anchor, row, marker in labels:
        y = top + (row + 1) * MARKER_ROW - 4
        day = lay.today if marker is None else marker.on
        kind = "today" if marker is None else marker.kind
        css = "timeline__today" if marker is None else f"timeline__marker timeline__marker--{kind}"
        prefix = "timeline__today" if marker is None else "timeline__marker"
        colour = "#b71c1c" if marker is None else "#555"
        parts.append(_el(
            "g", {"class": css},
            _el("title", None, f"{text}: {format_day(day, locale)}"),
            _el("line", {"class": f"{prefix}-line", "x1": x, "y1": y + 3, "x2": x, "y2": bottom,
                         "stroke": colour, "stroke-width": 2 if marker is None else 1,
                         "stroke-dasharray": None if marker is None else "2 3"}),
            _el("text", {"class": f"{prefix}-label", "x": tx, "y": y, "text-anchor": anchor,
                         "font-size": FONT, "fill": colour,
                         "font-weight": "bold" if marker is None else None}, text),
        ))
    return Markup("").join(parts)


def _goal_svg(x: float, y: float, goal: TimelineGoal, text_x: float, anchor: str,
              text: str, tooltip: str) -> Markup:
    """A diamond at the goal's target day: open (set), filled (achieved), dashed
    (revised) or crossed (dropped), with its label beside it."""
    r = 6
    diamond = f"M{_num(x)} {_num(y - r)} L{_num(x + r)} {_num(y)} L{_num(x)} {_num(y + r)} L{_num(x - r)} {_num(y)} Z"
    fill = "#4a148c" if goal.status == "achieved" else "#fff"
    dash = "2 2" if goal.status == "revised" else None
    children = [
        _el("title", None, tooltip),
        _el("path", {"class": "goal__symbol", "d": diamond, "fill": fill, "stroke": "#4a148c",
                     "stroke-width": 1.5, "stroke-dasharray": dash}),
    ]
    if goal.status == "dropped":
        cross = f"M{_num(x - r)} {_num(y - r)} L{_num(x + r)} {_num(y + r)} M{_num(x + r)} {_num(y - r)} L{_num(x - r)} {_num(y + r)}"
        children.append(_el("path", {"class": "goal__cross", "d": cross, "stroke": "#4a148c",
                                     "stroke-width": 1.5}))
    children.append(_el("text", {"class": "goal__label", "x": text_x, "y": y + 4, "text-anchor": anchor,
                                 "font-size": FONT, "fill": "#222"}, text))
    return _el("g", {"class": f"goal goal--{goal.status}", "data-id": goal.id}, *children)


def _step_svg(placed: PlacedStep, next_x0: float | None, frame: _Frame, y: float,
              prefix: str, status_word: str, locale: str) -> Markup:
    step = placed.step
    x0, x1 = frame.x(placed.x0), frame.x(placed.x1)
    width = max(x1 - x0, MIN_BAR)
    tooltip = f"{step.title} ({status_word}) {_day_range(step.start, step.end, locale)}"
    stroke = {"planned": "4 3", "cancelled": "1 2"}.get(step.status)
    fill = {"planned": "#fff", "started": "#bbdefb", "done": "#c8e6c9", "cancelled": "#eeeeee"}[step.status]
    children = [
        _el("title", None, tooltip),
        _el("rect", {"class": "step__bar", "x": x0, "y": y, "width": width, "height": BAR, "rx": 3,
                     "fill": fill, "stroke": "#37474f", "stroke-width": 1.5, "stroke-dasharray": stroke}),
    ]
    text_x = x0 + 4
    if step.status == "done":
        children.append(_el("rect", {"class": "step__hatch", "x": x0, "y": y, "width": width, "height": BAR,
                                     "rx": 3, "fill": f"url(#{prefix}-hatch)", "opacity": 0.35}))
        if width >= 16:
            check = f"M{_num(x0 + 4)} {_num(y + 9)} l3.5 4 l6 -8"
            children.append(_el("path", {"class": "step__check", "d": check, "fill": "none",
                                         "stroke": "#1b5e20", "stroke-width": 2}))
            text_x = x0 + 17
    if step.status == "cancelled":
        children.append(_el("line", {"class": "step__strike", "x1": x0, "y1": y + BAR / 2,
                                     "x2": x0 + width, "y2": y + BAR / 2, "stroke": "#37474f",
                                     "stroke-width": 1.5}))
    label = _bar_label(step.title, text_x, x0 + width, next_x0, frame)
    if label:
        text, lx = label
        children.append(_el("text", {"class": "step__label", "x": lx, "y": y + BAR / 2 + 4,
                                     "font-size": FONT, "fill": "#111"}, text))
    return _el("g", {"class": f"step step--{step.status}", "data-id": step.id}, *children)


def _bar_label(title: str, inside_x: float, bar_end: float, next_x0: float | None,
               frame: _Frame) -> tuple[str, float] | None:
    """The visible label of a bar: inside it when at least a few letters fit, else
    to its right when there is room before the next bar in the row."""
    title = _truncate(title, LABEL_CHARS)
    chars = int((bar_end - inside_x - 3) / (FONT * 0.6))
    if chars >= min(len(title), 4):
        return _truncate(title, chars), inside_x
    room_end = frame.right if next_x0 is None else next_x0 - 4
    chars = int((room_end - bar_end - 4) / (FONT * 0.6))
    if chars >= min(len(title), 4):
        return _truncate(title, chars), bar_end + 4
    return None


def _lane_svg(lane: Lane, index: int, frame: _Frame, top: float, prefix: str,
              gettext: Gettext, locale: str) -> tuple[Markup, Markup, float]:
    """One lane: heading, goals (stacked label rows), then step rows.

    Returns the lane's background (drawn under the gridlines), its content (drawn
    over them) and its height."""
    words = status_labels(gettext)
    heading = category_labels(gettext)[lane.category]
    goal_labels = _point_labels(
        ((frame.x(g.x), _truncate(g.goal.title, LABEL_CHARS), g.goal) for g in lane.goals),
        frame,
        gap=9,  # the diamond's half-width and a little air
    )
    goal_rows = max((row for *_, row, _ in goal_labels), default=-1) + 1
    steps_top = top + LANE_HEADING + goal_rows * GOAL_ROW
    height = LANE_HEADING + goal_rows * GOAL_ROW + max(lane.rows, 1) * STEP_ROW + 4

    shade = "#f7f7f7" if index % 2 == 0 else "#fff"
    background = Markup("").join((
        _el("rect", {"class": f"timeline__lane-bg timeline__lane-bg--{lane.category}", "x": 0,
                     "y": top, "width": frame.right + MARGIN, "height": height, "fill": shade}),
        _el("line", {"class": "timeline__lane-separator", "x1": 0, "y1": top + height,
                     "x2": frame.right + MARGIN, "y2": top + height, "stroke": "#9e9e9e",
                     "stroke-width": 1}),
    ))
    parts = [
        _el("text", {"class": "timeline__lane-heading", "x": frame.left, "y": top + 17,
                     "font-size": HEADING_FONT, "font-weight": "bold", "fill": "#111"}, heading),
    ]
    for x, text, tx, anchor, row, goal in goal_labels:
        tooltip = f"{goal.title} ({words[goal.status]}) {format_day(goal.target, locale)}"
        y = top + LANE_HEADING + row * GOAL_ROW + GOAL_ROW / 2
        parts.append(_goal_svg(x, y, goal, tx, anchor, text, tooltip))
    for placed, next_x0 in zip(lane.steps, _next_in_row(lane, frame)):
        y = steps_top + placed.row * STEP_ROW + (STEP_ROW - BAR) / 2
        parts.append(_step_svg(placed, next_x0, frame, y, prefix, words[placed.step.status], locale))
    group = _el("g", {"class": f"timeline__lane timeline__lane--{lane.category}"}, *parts)
    return background, group, height


def _next_in_row(lane: Lane, frame: _Frame) -> list[float | None]:
    """For each step, the x where the next bar of its row starts (None if last)."""
    following: list[float | None] = [None] * len(lane.steps)
    last_in_row: dict[int, int] = {}
    for index, placed in enumerate(lane.steps):
        if placed.row in last_in_row:
            following[last_in_row[placed.row]] = frame.x(placed.x0)
        last_in_row[placed.row] = index
    return following


def _description(lay: Layout, gettext: Gettext, locale: str) -> str:
    source = lay.source
    parts = [f"{gettext('Plan opened')}: {format_day(source.opened_on, locale)}."]
    if source.closed_on is not None:
        parts.append(f"{gettext('Plan closed')}: {format_day(source.closed_on, locale)}.")
    parts.append(f"{today_label(source, gettext)}: {format_day(lay.today, locale)}.")
    parts.append(f"{gettext('Steps')}: {len(source.steps)}.")
    parts.append(f"{gettext('Goals')}: {len(source.goals)}.")
    return " ".join(parts)


def render_svg(
    lay: Layout,
    gettext: Gettext,
    locale: str,
    *,
    id_prefix: str = "timeline",
    width: int = WIDTH,
) -> Markup:
    """The timeline as an inline SVG that scales to the width of its container.

    `id_prefix` keeps element ids unique when a page shows several timelines.
    `width` is the viewBox width; a smaller one makes the text relatively larger
    (useful for phone layouts), since text scales together with the picture.
    """
    frame = _Frame(width)
    marker_labels, marker_height = _marker_band(lay, frame, gettext)
    lanes_top = TICK_BAND + marker_height
    backgrounds, lanes, y = [], [], lanes_top
    for index, lane in enumerate(lay.lanes):
        background, group, height = _lane_svg(lane, index, frame, y, id_prefix, gettext, locale)
        backgrounds.append(background)
        lanes.append(group)
        y += height
    bottom = y
    title_id, desc_id = f"{id_prefix}-title", f"{id_prefix}-desc"
    return _el(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "timeline",
            "viewBox": f"0 0 {width} {_num(bottom + 2)}",
            "width": "100%",
            "preserveAspectRatio": "xMinYMin meet",
            "role": "img",
            "aria-labelledby": f"{title_id} {desc_id}",
            "font-family": "sans-serif",
        },
        _el("title", {"id": title_id}, gettext("Service path timeline")),
        _el("desc", {"id": desc_id}, _description(lay, gettext, locale)),
        _defs(id_prefix),
        _el("g", {"class": "timeline__backgrounds"}, *backgrounds),
        _axis_svg(lay, frame, locale, bottom),
        *lanes,
        _markers_svg(lay, marker_labels, TICK_BAND, bottom, locale),
    )


# --- table ------------------------------------------------------------------------


def _table_rows(source: TimelineInput) -> list[tuple[tuple, str, Any]]:
    """Every step, goal and marker once, sorted by date. On one day the plan's
    opening comes first and its closing last."""
    rows: list[tuple[tuple, str, Any]] = []
    for step in source.steps:
        rows.append(((step.start, 1, step.id), "step", step))
    for goal in source.goals:
        rows.append(((goal.target, 2, goal.id), "goal", goal))
    for marker in source.markers:
        order = {"opened": 0, "closed": 3}.get(marker.kind, 1)
        rows.append(((marker.on, order, marker.kind + "\0" + marker.label), "marker", marker))
    rows.sort(key=lambda row: row[0])
    return rows


def _time(day: date | None, locale: str) -> Markup | str:
    if day is None:
        return ""
    return _el("time", {"datetime": day.isoformat()}, format_day(day, locale))


def _table_row(kind: str, item: Any, gettext: Gettext, locale: str) -> Markup:
    categories = category_labels(gettext)
    statuses = status_labels(gettext)
    if kind == "step":
        step: TimelineStep = item
        cells = (step.start, step.end, step.title, gettext("Step"), categories[step.category], step.status)
    elif kind == "goal":
        goal: TimelineGoal = item
        lanes = ", ".join(categories[c] for c in dict.fromkeys(goal.categories))
        cells = (goal.target, None, goal.title, gettext("Goal"), lanes, goal.status)
    else:
        marker: TimelineMarker = item
        cells = (marker.on, None, marker_label(marker, gettext), gettext("Event"),
                 gettext("Whole plan"), None)
    start, end, title, type_word, lane, status = cells
    return _el(
        "tr", {"class": f"timeline-table__row timeline-table__row--{kind}"},
        _el("td", None, _time(start, locale)),
        _el("td", None, _time(end, locale)),
        _el("th", {"scope": "row"}, title),
        _el("td", None, type_word),
        _el("td", None, lane),
        _el("td", {"class": f"status status--{status}"} if status else None,
            statuses[status] if status else ""),
    )


def render_table(
    timeline: Layout | TimelineInput, gettext: Gettext, locale: str
) -> Markup:
    """The timeline as an HTML table: the accessible (and printable) equivalent of
    the SVG, listing every step, goal and plan event once, by date."""
    source = timeline.source if isinstance(timeline, Layout) else timeline
    headers = (gettext("Date"), gettext("End date"), gettext("What"), gettext("Type"),
               gettext("Need category"), gettext("Status"))
    head = _el("thead", None, _el("tr", None, *(_el("th", {"scope": "col"}, h) for h in headers)))
    rows = [_table_row(kind, item, gettext, locale) for _, kind, item in _table_rows(source)]
    if not rows:
        rows = [_el("tr", {"class": "timeline-table__empty"},
                    _el("td", {"colspan": len(headers)}, gettext("Nothing on the timeline yet.")))]
    caption = f"{gettext('Service path timeline')}. {today_label(source, gettext)}: {format_day(source.today, locale)}"
    return _el(
        "table", {"class": "timeline-table"},
        _el("caption", None, caption),
        head,
        _el("tbody", None, *rows),
    )


def render(timeline_input: TimelineInput, gettext: Gettext, locale: str, **kwargs: Any) -> Markup:
    """Convenience: lay out and render the SVG in one call (kwargs go to render_svg)."""
    return render_svg(layout(timeline_input), gettext, locale, **kwargs)
