from collections import Counter
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from timeline import CATEGORIES, assign_rows, layout
from tests.timeline.helpers import TODAY, days, goal, marker, plan, step

D = date(2026, 3, 2)


def rows_of(lay, category="health"):
    lane = next(lane for lane in lay.lanes if lane.category == category)
    return {p.step.id: p.row for p in lane.steps}


# --- lanes -------------------------------------------------------------------------


def test_an_empty_plan_has_the_four_lanes_in_order():
    lay = layout(plan())
    assert [lane.category for lane in lay.lanes] == list(CATEGORIES)
    assert all(lane.rows == 0 and not lane.steps and not lane.goals for lane in lay.lanes)


def test_lanes_stay_four_and_in_order_when_steps_come_in_any_order():
    steps = [step(c, D, D + days(3), category=c) for c in reversed(CATEGORIES)]
    lay = layout(plan(steps, today=D))
    assert [lane.category for lane in lay.lanes] == list(CATEGORIES)
    assert [[p.step.id for p in lane.steps] for lane in lay.lanes] == [[c] for c in CATEGORIES]


# --- stacking ----------------------------------------------------------------------


def test_overlapping_steps_take_two_rows():
    lay = layout(plan([step("a", D, D + days(10)), step("b", D + days(5), D + days(20))], today=D))
    assert rows_of(lay) == {"a": 0, "b": 1}
    assert lay.lanes[0].rows == 2


def test_steps_that_do_not_overlap_share_a_row():
    lay = layout(plan([step("a", D, D + days(10)), step("b", D + days(11), D + days(20))], today=D))
    assert rows_of(lay) == {"a": 0, "b": 0}
    assert lay.lanes[0].rows == 1


def test_steps_touching_the_same_day_overlap():
    lay = layout(plan([step("a", D, D + days(10)), step("b", D + days(10), D + days(20))], today=D))
    assert rows_of(lay) == {"a": 0, "b": 1}


def test_a_freed_row_is_reused():
    steps = [step("a", D, D + days(5)), step("b", D, D + days(20)), step("c", D + days(6), D + days(9))]
    assert rows_of(layout(plan(steps, today=D))) == {"a": 0, "b": 1, "c": 0}


def test_steps_in_different_lanes_do_not_interact():
    steps = [step("a", D, D + days(10), category="health"),
             step("b", D, D + days(10), category="everyday_life")]
    lay = layout(plan(steps, today=D))
    assert rows_of(lay, "health") == {"a": 0}
    assert rows_of(lay, "everyday_life") == {"b": 0}
    assert [lane.rows for lane in lay.lanes] == [1, 0, 1, 0]


def test_steps_are_ordered_by_start_then_id_whatever_the_input_order():
    steps = [step("b", D, D + days(2)), step("a", D, D + days(9)), step("c", D - days(1), D)]
    forwards = layout(plan(steps, today=D))
    backwards = layout(plan(reversed(steps), today=D))
    assert [p.step.id for p in forwards.lanes[0].steps] == ["c", "a", "b"]
    assert forwards.lanes == backwards.lanes
    assert forwards.axis == backwards.axis


def test_assign_rows_works_on_any_comparable_intervals():
    assert assign_rows([(0.0, 1.0), (0.5, 2.0), (1.5, 3.0), (2.1, 2.5)]) == [0, 1, 0, 1]
    assert assign_rows([(0, 2), (2, 3)]) == [0, 1]  # a shared end point collides


def _max_overlap(steps):
    """The most steps in progress on one day (steps are closed intervals of days)."""
    counter = Counter()
    for s in steps:
        for n in range((s.end - s.start).days + 1):
            counter[s.start + days(n)] += 1
    return max(counter.values(), default=0)


step_strategy = st.builds(
    lambda i, category, offset, length: step(f"s{i:03}", D + days(offset), D + days(offset + length),
                                             category=category),
    i=st.integers(0, 999),
    category=st.sampled_from(CATEGORIES),
    offset=st.integers(-60, 60),
    length=st.integers(0, 30),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(step_strategy, max_size=25, unique_by=lambda s: s.id))
def test_rows_never_collide_and_are_as_few_as_possible(steps):
    lay = layout(plan(steps, today=D))
    for lane in lay.lanes:
        by_row = {}
        for placed in lane.steps:
            by_row.setdefault(placed.row, []).append(placed.step)
        for row_steps in by_row.values():
            ordered = sorted(row_steps, key=lambda s: s.start)
            for earlier, later in zip(ordered, ordered[1:]):
                assert earlier.end < later.start
        lane_steps = [s for s in steps if s.category == lane.category]
        assert lane.rows == _max_overlap(lane_steps)
        assert sorted(by_row) == list(range(lane.rows))


# --- axis --------------------------------------------------------------------------


def _items_days(p):
    result = [p.opened_on, p.today] + ([p.closed_on] if p.closed_on else [])
    for s in p.steps:
        result += [s.start, s.end]
    result += [g.target for g in p.goals] + [m.on for m in p.markers]
    return result


@settings(max_examples=200, deadline=None)
@given(
    st.lists(step_strategy, max_size=10, unique_by=lambda s: s.id),
    st.lists(st.integers(-2000, 2000), max_size=4),
    st.integers(-400, 400),
    st.integers(-3000, 0),
)
def test_the_axis_covers_every_item_and_today_with_padding(steps, goal_offsets, today_offset, opened):
    goals = [goal(f"g{i}", D + days(o)) for i, o in enumerate(goal_offsets)]
    p = plan(steps, goals, [marker("opened", D + days(opened))], today=D + days(today_offset),
             opened_on=D + days(opened))
    lay = layout(p)
    covered = _items_days(p)
    assert lay.axis.start < min(covered) and max(covered) < lay.axis.end
    for placed in (s for lane in lay.lanes for s in lane.steps):
        assert 0 < placed.x0 < placed.x1 < 1
    for g in (g for lane in lay.lanes for g in lane.goals):
        assert 0 < g.x < 1
    assert all(0 < m.x < 1 for m in lay.markers)
    assert 0 < lay.today_x < 1
    xs = [t.x for t in lay.axis.ticks]
    assert xs == sorted(xs) and all(0 <= x <= 1 for x in xs)
    assert sum(t.labelled for t in lay.axis.ticks) <= 12


def test_positions_are_fractions_of_whole_days():
    lay = layout(plan([step("a", D, D)], today=D))
    placed = lay.lanes[0].steps[0]
    assert placed.x1 - placed.x0 == 1 / lay.axis.days
    assert placed.x0 < lay.today_x < placed.x1  # today is the middle of its day


def test_the_axis_reaches_back_to_the_opening_day():
    lay = layout(plan(today=TODAY, opened_on=TODAY - days(30)))
    assert lay.axis.start < TODAY - days(30) and lay.axis.end > TODAY


def test_a_six_week_plan_has_week_ticks_on_mondays():
    lay = layout(plan([step("a", D, D + days(41))], today=D, opened_on=D))
    assert lay.axis.granularity == "week"
    assert lay.axis.ticks and all(t.on.weekday() == 0 for t in lay.axis.ticks)


def test_a_one_year_plan_has_month_ticks():
    lay = layout(plan([step("a", D, D + days(364))], today=D, opened_on=D))
    assert lay.axis.granularity == "month"
    assert all(t.on.day == 1 for t in lay.axis.ticks)
    assert len(lay.axis.ticks) in (12, 13)


def test_a_four_year_plan_has_year_ticks():
    lay = layout(plan([step("a", D, D + days(4 * 365))], today=D, opened_on=D))
    assert lay.axis.granularity == "year"
    assert [t.on for t in lay.axis.ticks] == [date(y, 1, 1) for y in (2027, 2028, 2029, 2030)]
    assert all(t.labelled for t in lay.axis.ticks)


def test_a_three_year_plan_in_months_labels_only_some_months():
    lay = layout(plan([step("a", D, D + days(3 * 365 - 30))], today=D, opened_on=D))
    assert lay.axis.granularity == "month"
    labelled = [t.on for t in lay.axis.ticks if t.labelled]
    assert len(labelled) <= 12
    assert all((d.month - 1) % 3 == 0 for d in labelled)  # on quarter boundaries


def test_the_granularity_can_be_asked_for():
    lay = layout(plan([step("a", D, D + days(364))], today=D, opened_on=D), granularity="quarter")
    assert lay.axis.granularity == "quarter"
    assert all(t.on.month in (1, 4, 7, 10) and t.on.day == 1 for t in lay.axis.ticks)


# --- goals and markers ---------------------------------------------------------------


def test_a_goal_appears_in_the_lane_of_each_of_its_categories():
    g = goal("g", D + days(30), "health", "skills_and_competence", "health")
    lay = layout(plan(goals=[g], today=D))
    assert [[pg.goal.id for pg in lane.goals] for lane in lay.lanes] == [["g"], [], [], ["g"]]
    assert lay.lanes[0].goals[0].x == lay.lanes[3].goals[0].x == lay.axis.centre(D + days(30))


def test_markers_sit_on_the_axis_in_date_order():
    markers = [marker("handover_accepted", D + days(5), "Maija"), marker("opened", D)]
    lay = layout(plan(markers=markers, today=D + days(10), opened_on=D))
    assert [m.marker.kind for m in lay.markers] == ["opened", "handover_accepted"]
    assert lay.markers[1].x == lay.axis.centre(D + days(5))


def test_a_plan_of_several_years_lays_out():
    start = date(2022, 1, 10)
    steps = [step(f"s{i:02}", start + days(90 * i), start + days(90 * i + 120),
                  category=CATEGORIES[i % 4]) for i in range(24)]
    lay = layout(plan(steps, [goal("g", start + days(2200))], today=date(2026, 11, 23),
                      opened_on=start, closed_on=start + days(2300)))
    assert lay.axis.granularity == "year"
    assert sum(len(lane.steps) for lane in lay.lanes) == 24
    assert all(lane.rows == 1 for lane in lay.lanes)  # each lane's steps are a year apart


# --- dates at the calendar's ends ---------------------------------------------------


def test_dates_at_the_ends_of_the_calendar_keep_the_plan_drawable():
    """A plan recorded before the ten-year rule (``domain.plan.PLAN_REACH``) may hold a goal in
    9999 and a step begun in year 1: the axis reaches 25 years past the plan's own days, and
    what lies further sits at the axis's end instead of stretching it over millennia."""
    steps = [step("ancient", date.min, D + days(5)), step("endless", D, date.max)]
    lay = layout(plan(steps, [goal("far", date.max, "health")], today=D, opened_on=D))
    assert D.replace(year=D.year - 28) <= lay.axis.start < D.replace(year=D.year - 25)  # 3 % padding
    assert D.replace(year=D.year + 25) < lay.axis.end <= D.replace(year=D.year + 28)
    assert len(lay.axis.ticks) <= 53
    placed = {p.step.id: p for p in lay.lanes[0].steps}
    assert placed["ancient"].x0 == 0.0 and 0.0 < placed["ancient"].x1 < 1.0
    assert 0.0 < placed["endless"].x0 < 1.0 and placed["endless"].x1 == 1.0
    assert lay.lanes[0].goals[0].x == 1.0
