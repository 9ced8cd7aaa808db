import re
import xml.etree.ElementTree as ET
from datetime import date
from pathlib import Path

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st
from markupsafe import Markup

from timeline import CATEGORIES, layout, render, render_svg, render_table
from tests.timeline.golden_sample import sample
from tests.timeline.helpers import TODAY, days, goal, marker, plan, step, upper

SVG = "{http://www.w3.org/2000/svg}"
EVIL = "<script>alert(1)</script> & Kela's \"plan\""


def identity(text):
    return text


def sample_plan(title="Physiotherapy"):
    return plan(
        steps=[
            step("a", date(2026, 10, 1), date(2026, 10, 1), status="done", title="Occupational doctor"),
            step("b", date(2026, 10, 5), date(2027, 1, 15), status="started", title=title),
            step("c", date(2026, 11, 1), date(2026, 11, 30), status="planned", category="everyday_life"),
            step("d", date(2026, 10, 20), date(2026, 10, 30), status="cancelled",
                 category="skills_and_competence"),
            step("e", date(2026, 12, 1), date(2027, 2, 27), category="work_and_employment",
                 title="Work try-out"),
        ],
        goals=[
            goal("g1", date(2027, 3, 1), "work_and_employment", "health", title="Back to work"),
            goal("g2", date(2026, 11, 1), "health", status="achieved", title="Better sleep"),
            goal("g3", date(2026, 12, 15), "everyday_life", status="dropped"),
            goal("g4", date(2027, 1, 10), "skills_and_competence", status="revised"),
        ],
        markers=[
            marker("opened", date(2026, 9, 28)),
            marker("handover_accepted", date(2026, 11, 10), "Maija Meikäläinen (Kela)"),
        ],
        opened_on=date(2026, 9, 28),
    )


def svg_of(p, gettext=identity, locale="fi", **kwargs):
    markup = render_svg(layout(p), gettext, locale, **kwargs)
    assert isinstance(markup, Markup)
    return markup, ET.fromstring(str(markup))


def texts(root):
    return [t for t in root.itertext()]


# --- SVG -------------------------------------------------------------------------


def test_svg_is_well_formed_responsive_and_labelled():
    markup, root = svg_of(sample_plan())
    assert root.tag == f"{SVG}svg"
    assert root.get("width") == "100%"
    assert re.fullmatch(r"0 0 1000 [\d.]+", root.get("viewBox"))
    assert root.get("preserveAspectRatio") == "xMinYMin meet"
    assert root.get("role") == "img"
    ids = {el.get("id") for el in root.iter() if el.get("id")}
    labelled_by = root.get("aria-labelledby").split()
    assert labelled_by == ["timeline-title", "timeline-desc"] and set(labelled_by) <= ids
    assert root.find(f"{SVG}title").text == "Service path timeline"
    assert "Steps: 5. Goals: 4." in root.find(f"{SVG}desc").text


def test_svg_draws_four_lane_headings_in_order_even_when_empty():
    _, root = svg_of(plan())
    headings = [el.text for el in root.iter(f"{SVG}text") if el.get("class") == "timeline__lane-heading"]
    assert headings == ["Health", "Work and employment", "Everyday life", "Skills and competence"]
    lanes = [el.get("class") for el in root.iter(f"{SVG}g") if "timeline__lane " in (el.get("class") or "")]
    assert lanes == [f"timeline__lane timeline__lane--{c}" for c in CATEGORIES]


def test_every_step_and_goal_has_a_tooltip_and_a_status_class():
    _, root = svg_of(sample_plan())
    groups = {el.get("data-id"): el for el in root.iter(f"{SVG}g") if el.get("data-id")}
    assert groups["a"].get("class") == "step step--done"
    assert groups["b"].get("class") == "step step--started"
    assert groups["c"].get("class") == "step step--planned"
    assert groups["d"].get("class") == "step step--cancelled"
    assert groups["g3"].get("class") == "goal goal--dropped"
    for group in groups.values():
        assert group.find(f"{SVG}title").text
    assert groups["b"].find(f"{SVG}title").text == "Physiotherapy (Started) 5.10.2026 – 15.1.2027"


def test_status_is_not_shown_by_colour_alone():
    """Each step status has its own shape: outline dashes, hatch and check, strike."""
    _, root = svg_of(sample_plan())
    groups = {el.get("data-id"): el for el in root.iter(f"{SVG}g") if el.get("data-id")}

    def bar(id):
        return groups[id].find(f"{SVG}rect[@class='step__bar']")

    dashes = {id: bar(id).get("stroke-dasharray") for id in "abcde"}
    assert dashes["c"] != dashes["b"] != dashes["d"] != dashes["c"]
    assert groups["a"].find(f"{SVG}rect[@class='step__hatch']") is not None
    assert groups["d"].find(f"{SVG}line[@class='step__strike']") is not None
    long_done = plan([step("x", TODAY, TODAY + days(30), status="done")])
    _, root = svg_of(long_done)
    assert root.find(f".//{SVG}path[@class='step__check']") is not None
    symbols = {g: groups[g].find(f"{SVG}path[@class='goal__symbol']") for g in ("g1", "g2", "g4")}
    assert symbols["g1"].get("fill") != symbols["g2"].get("fill")  # open vs filled
    assert symbols["g4"].get("stroke-dasharray")  # revised: dashed
    assert groups["g3"].find(f"{SVG}path[@class='goal__cross']") is not None


def test_svg_has_a_today_line_and_markers():
    _, root = svg_of(sample_plan())
    today = root.find(f".//{SVG}g[@class='timeline__today']")
    assert today.find(f"{SVG}text").text == "Today"
    assert today.find(f"{SVG}title").text == "Today: 23.11.2026"
    labels = [el.text for el in root.iter(f"{SVG}text") if el.get("class") == "timeline__marker-label"]
    assert labels == ["Plan opened", "Maija Meikäläinen (Kela)"]


def test_an_earlier_version_marks_the_moment_shown_not_today():
    past = msgspec.structs.replace(sample_plan(), past=True)
    _, root = svg_of(past)
    line = root.find(f".//{SVG}g[@class='timeline__today']")
    assert line.find(f"{SVG}text").text == "Moment shown"
    assert line.find(f"{SVG}title").text == "Moment shown: 23.11.2026"
    assert "Today" not in str(render(past, identity, "fi"))
    table, _ = table_rows(past)
    assert table.find("caption").text == "Service path timeline. Moment shown: 23.11.2026"


def test_svg_escapes_titles():
    markup, root = svg_of(sample_plan(title=EVIL))
    assert "<script>" not in markup
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; Kela" in markup
    tooltips = [el.text for el in root.iter(f"{SVG}title")]
    assert any(t.startswith(EVIL) for t in tooltips)


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=60), st.text(max_size=30))
def test_svg_and_table_stay_well_formed_whatever_the_text(title, label):
    p = plan([step("a", TODAY, TODAY + days(3), title=title)], [goal("g", TODAY, title=title)],
             [marker("other", TODAY, label)])
    ET.fromstring(str(render_svg(layout(p), identity, "fi")))
    ET.fromstring(str(render_table(p, identity, "fi")))


def test_tick_labels_use_the_locale():
    p = plan([step("a", date(2026, 1, 5), date(2026, 2, 10))], today=date(2026, 1, 5),
             opened_on=date(2026, 1, 5))
    labels = {loc: [el.text for el in svg_of(p, locale=loc)[1].iter(f"{SVG}text")
                    if el.get("class") == "timeline__tick-label"] for loc in ("fi", "sv", "en")}
    assert labels["fi"][:2] == ["5.1.2026", "12.1."]  # the first label has the year
    assert "12 jan." in labels["sv"]
    assert "Jan 12" in labels["en"]


def test_month_and_year_ticks_are_labelled_in_finnish():
    year = plan([step("a", date(2026, 1, 5), date(2026, 12, 20))], today=date(2026, 1, 5),
                opened_on=date(2026, 1, 5))
    labels = [el.text for el in svg_of(year)[1].iter(f"{SVG}text") if el.get("class") == "timeline__tick-label"]
    assert labels[:3] == ["tammi 2026", "helmi", "maalis"] and "kesä" in labels


def test_an_empty_plan_renders():
    p = plan(opened_on=TODAY)
    _, root = svg_of(p)
    assert root.find(f".//{SVG}g[@class='timeline__today']") is not None
    table = ET.fromstring(str(render_table(p, identity, "fi")))
    assert table.find(".//tr[@class='timeline-table__empty']/td").text == "Nothing on the timeline yet."


def test_a_plan_of_several_years_renders_with_year_labels():
    start = date(2021, 3, 1)
    steps = [step(f"s{i:02}", start + days(70 * i), start + days(70 * i + 200),
                  category=CATEGORIES[i % 4], status=("done", "started", "planned", "cancelled")[i % 4])
             for i in range(30)]
    p = plan(steps, [goal("g", start + days(2000))], today=date(2026, 11, 23), opened_on=start)
    _, root = svg_of(p)
    labels = [el.text for el in root.iter(f"{SVG}text") if el.get("class") == "timeline__tick-label"]
    assert labels == [str(y) for y in range(2021, 2028)]
    assert len([el for el in root.iter(f"{SVG}g") if (el.get("class") or "").startswith("step ")]) == 30


def test_ids_are_unique_per_prefix():
    markup, root = svg_of(sample_plan(), id_prefix="plan-42")
    assert root.get("aria-labelledby") == "plan-42-title plan-42-desc"
    assert 'url(#plan-42-hatch)' in markup and 'id="plan-42-hatch"' in markup
    assert 'id="timeline-' not in markup


def test_every_word_of_the_svg_goes_through_gettext():
    _, root = svg_of(sample_plan(), gettext=upper)
    words = [el.text for el in root.iter(f"{SVG}text")
             if el.get("class") in ("timeline__lane-heading", "timeline__today-label")]
    assert words == ["HEALTH", "WORK AND EMPLOYMENT", "EVERYDAY LIFE", "SKILLS AND COMPETENCE", "TODAY"]
    assert root.find(f"{SVG}title").text == "SERVICE PATH TIMELINE"
    assert root.find(f"{SVG}desc").text.startswith("PLAN OPENED: 28.9.2026.")
    marker_labels = [el.text for el in root.iter(f"{SVG}text") if el.get("class") == "timeline__marker-label"]
    assert marker_labels == ["PLAN OPENED", "Maija Meikäläinen (Kela)"]  # own labels are kept


def test_render_lays_out_and_renders_in_one_call():
    p = sample_plan()
    assert render(p, identity, "fi") == render_svg(layout(p), identity, "fi")


# --- table -----------------------------------------------------------------------


def table_rows(p, gettext=identity, locale="fi"):
    root = ET.fromstring(str(render_table(p, gettext, locale)))
    return root, [
        [("".join(cell.itertext())) for cell in tr] for tr in root.find("tbody").findall("tr")
    ]


def test_table_lists_every_step_goal_and_marker_once_in_date_order():
    p = sample_plan()
    root, rows = table_rows(p)
    titles = [row[2] for row in rows]
    expected = [s.title for s in p.steps] + [g.title for g in p.goals] + ["Plan opened", "Maija Meikäläinen (Kela)"]
    assert sorted(titles) == sorted(expected) and len(set(titles)) == len(titles)
    starts = [date(*reversed([int(n) for n in row[0].split(".")])) for row in rows]
    assert starts == sorted(starts)
    assert rows[0] == ["28.9.2026", "", "Plan opened", "Event", "Whole plan", ""]
    assert rows[1] == ["1.10.2026", "1.10.2026", "Occupational doctor", "Step", "Health", "Done"]
    back_to_work = next(row for row in rows if row[2] == "Back to work")
    assert back_to_work == ["1.3.2027", "", "Back to work", "Goal", "Work and employment, Health", "Goal set"]


def test_table_is_accessible():
    root, _ = table_rows(sample_plan())
    assert root.find("caption").text == "Service path timeline. Today: 23.11.2026"
    assert [th.get("scope") for th in root.find("thead").iter("th")] == ["col"] * 6
    assert all(tr.find("th").get("scope") == "row" for tr in root.find("tbody"))
    times = [t.get("datetime") for t in root.iter("time")]
    assert "2026-10-05" in times and "2027-01-15" in times


def test_table_words_go_through_gettext_and_dates_are_finnish():
    root, rows = table_rows(sample_plan(), gettext=upper)
    assert [th.text for th in root.find("thead").iter("th")] == [
        "DATE", "END DATE", "WHAT", "TYPE", "NEED CATEGORY", "STATUS"]
    assert root.find("caption").text == "SERVICE PATH TIMELINE. TODAY: 23.11.2026"
    assert {row[3] for row in rows} == {"STEP", "GOAL", "EVENT"}
    assert {row[5] for row in rows} == {
        "", "DONE", "STARTED", "PLANNED", "CANCELLED", "GOAL SET", "GOAL ACHIEVED", "GOAL REVISED",
        "GOAL DROPPED"}
    assert {row[4] for row in rows} >= {"HEALTH", "EVERYDAY LIFE", "SKILLS AND COMPETENCE", "WHOLE PLAN"}
    physio = next(row for row in rows if row[2] == "Physiotherapy")
    assert physio[:2] == ["5.10.2026", "15.1.2027"]


def test_table_dates_follow_the_locale():
    _, rows = table_rows(sample_plan(), locale="en")
    assert rows[1][:2] == ["Oct 1, 2026", "Oct 1, 2026"]
    _, rows = table_rows(sample_plan(), locale="sv")
    assert rows[1][0] == "1.10.2026"  # Swedish as written in Finland


def test_table_accepts_a_layout_or_its_input():
    p = sample_plan()
    assert render_table(layout(p), identity, "fi") == render_table(p, identity, "fi")


def test_table_escapes_titles():
    markup = render_table(sample_plan(title=EVIL), identity, "fi")
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "&amp; Kela" in markup


def test_table_opening_comes_first_and_closing_last_on_the_same_day():
    p = plan([step("a", TODAY, TODAY)], markers=[marker("closed", TODAY), marker("opened", TODAY)],
             closed_on=TODAY)
    _, rows = table_rows(p)
    assert [row[2] for row in rows] == ["Plan opened", "Step a", "Plan closed"]


def _label_boxes(root, css):
    """Estimated extents (x0, x1, y) of text labels, as the renderer estimates them."""
    boxes = []
    for el in root.iter(f"{SVG}text"):
        if el.get("class") != css:
            continue
        x, width = float(el.get("x")), len(el.text) * 12 * 0.6
        x0 = x - width if el.get("text-anchor") == "end" else x
        boxes.append((x0, x0 + width, float(el.get("y"))))
    return boxes


def _overlapping(boxes):
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:]
            if a[2] == b[2] and a[0] < b[1] and b[0] < a[1]]


def test_tick_labels_do_not_overlap_even_on_a_narrow_canvas():
    p = plan([step("a", date(2026, 1, 5), date(2028, 12, 20))], today=date(2026, 1, 5),
             opened_on=date(2026, 1, 5))
    for lay in (layout(p), layout(p, granularity="quarter"), layout(p, granularity="week")):
        markup = render_svg(lay, identity, "fi", width=360)
        boxes = _label_boxes(ET.fromstring(str(markup)), "timeline__tick-label")
        assert boxes and not _overlapping(boxes)


def test_goal_and_marker_labels_on_the_same_day_stack_instead_of_overlapping():
    goals = [goal(f"g{i}", TODAY, title=f"Goal number {i}") for i in range(5)]
    markers = [marker("other", TODAY, f"Event {i}") for i in range(3)]
    _, root = svg_of(plan(goals=goals, markers=markers))
    goal_boxes = _label_boxes(root, "goal__label")
    assert len(goal_boxes) == 5 and not _overlapping(goal_boxes)
    assert len({y for *_, y in goal_boxes}) == 5
    marker_boxes = _label_boxes(root, "timeline__marker-label") + _label_boxes(root, "timeline__today-label")
    assert len(marker_boxes) == 4 and not _overlapping(marker_boxes)


def test_output_is_byte_for_byte_what_it_was():
    """The SVG and the table of a sample with every element and escaped text, as rendered
    before the renderer was rewritten for speed (``golden/``, made by the earlier code)."""
    golden = Path(__file__).parent / "golden"
    lay = layout(sample())
    for lang in ("fi", "en"):
        assert str(render_svg(lay, lambda s: s + "§", lang)) == (golden / f"sample_{lang}.svg").read_text()
        assert str(render_table(lay, lambda s: s + "§", lang)) == (golden / f"sample_{lang}.html").read_text()
