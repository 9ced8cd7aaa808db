"""A plan's write to the read model is all or nothing (on PostgreSQL one call of a function).

``save_plan`` writes the plan's row, its summary rows, the tracking record and (on
PostgreSQL) the notice together: a row that moved under the writer (StaleRow) or a position
the read model has already passed (the tracking fence) leaves everything as it was.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import pytest
from eventsourcing.persistence import IntegrityError, Tracking

from domain.application import PlanService
from projections.plans import PlanViews, _is_fenced
from projections.summary import people_of, summarise
from projections.views import PlanRow, StaleRow
from tests.projections.helpers import all_plan_ids, catch_up, random_commands


def snapshot(views: PlanViews, plan_id: str) -> tuple[object, ...]:
    """What the read model holds of the plan and where it stands."""
    store = views.store
    return (
        store.plan_state(plan_id),
        sorted((p.person_id, p.role) for p in store.people_of(plan_id)),
        store.statistics(),
        store.max_tracking_id(PlanService.name),
    )


def renamed_row(views: PlanViews, plan_id: str, position: int) -> tuple[PlanRow, list]:
    plan = views.projection.load(plan_id)
    assert plan is not None
    summary = {**summarise(plan), "needs_by_category": {"work": {"all": 9, "open": 9}}}
    row = PlanRow(
        plan_id=plan_id,
        version=plan.version + 1,
        position=position,
        search_name="toinen nimi",
        is_closed=False,
        updated_at="2026-12-03T00:00:00+00:00",
        summary=summary,
        state="{}",
    )
    return row, people_of(plan)[:1]


@pytest.fixture
def caught_up(service: PlanService, open_views: Callable[..., PlanViews]) -> tuple[PlanViews, str, int]:
    views = open_views(follow=False)
    follower = open_views()
    random_commands(service, random.Random(41), 20, "save")
    end = catch_up(follower, service)
    plan_id = next(p for p in all_plan_ids(service) if len(views.store.people_of(p)) > 1)
    return views, plan_id, end


def test_a_row_that_moved_under_the_writer_writes_nothing(caught_up: tuple[PlanViews, str, int]) -> None:
    views, plan_id, end = caught_up
    before = snapshot(views, plan_id)
    version = before[0][0]  # type: ignore[index]
    row, people = renamed_row(views, plan_id, end + 1)
    with pytest.raises(StaleRow):
        views.store.save_plan(
            row, people, Tracking(PlanService.name, end + 1), onto=version - 1, written=None
        )
    assert snapshot(views, plan_id) == before


def test_a_position_already_passed_writes_nothing(caught_up: tuple[PlanViews, str, int]) -> None:
    views, plan_id, end = caught_up
    before = snapshot(views, plan_id)
    version = before[0][0]  # type: ignore[index]
    row, people = renamed_row(views, plan_id, end)
    with pytest.raises(IntegrityError) as raised:
        views.store.save_plan(row, people, Tracking(PlanService.name, end), onto=version)
    assert _is_fenced(raised.value)
    assert snapshot(views, plan_id) == before


def test_a_write_changes_the_row_summary_rows_and_position_together(caught_up: tuple[PlanViews, str, int]) -> None:
    views, plan_id, end = caught_up
    version = views.store.plan_state(plan_id)[0]  # type: ignore[index]
    row, people = renamed_row(views, plan_id, end + 1)
    views.store.save_plan(row, people, Tracking(PlanService.name, end + 1), onto=version)
    assert views.store.plan_state(plan_id) == (version + 1, end + 1, "{}")
    assert [p.person_id for p in views.store.people_of(plan_id)] == [people[0].person_id]
    assert {n.category: n.needs for n in views.store.statistics().needs}.get("work", 0) >= 9
    assert views.store.max_tracking_id(PlanService.name) == end + 1
