"""A writer of another read-model version is fenced off (projections.views, READ_MODEL_VERSION).

During an upgrade that changes the read model's shape, an instance of the earlier release may
still hold the writer lock when a new one recreates the tables. Every write checks the version
stored in the read model in its own transaction, so the old writer's writes are refused
instead of filling the new tables with rows of the old shape and moving the position past
plans that nobody refilled.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import msgspec
import psycopg
import pytest
from eventsourcing.persistence import Tracking
from psycopg.rows import dict_row

import projections.views as views_module
from domain.application import PlanService
from domain.storage import StoreSettings
from projections.plans import PlanViews, open_view_store, rebuild
from projections.views import DERIVED_TABLES, READ_MODEL_VERSION, PlanRow, ReadModelSuperseded, StaleRow
from tests.projections.helpers import all_plan_ids, random_commands, read_side, write_side
from tests.projections.test_multi_instance import wait_until

OLD_VERSION = READ_MODEL_VERSION - 1


def _row(plan_id: str, position: int) -> PlanRow:
    return PlanRow(
        plan_id=plan_id, version=1, position=position, search_name="x", is_closed=False,
        updated_at="2026-01-01T00:00:00+00:00", summary={"segment": "s"}, state="{}",
    )


def test_an_older_writers_writes_after_the_recreate_are_refused_and_write_nothing(
    settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(views_module, "READ_MODEL_VERSION", OLD_VERSION)
        old = open_view_store(settings)
    try:
        old.skip(Tracking(application_name=PlanService.name, notification_id=1))
        old.save_plan(_row("before", 2), [], Tracking(application_name=PlanService.name, notification_id=2))
        new = open_view_store(settings)  # recreates the tables, at READ_MODEL_VERSION
        try:
            assert new.max_tracking_id(PlanService.name) is None and new.plan_state("before") is None
            writes: list[Callable[[], None]] = [
                lambda: old.save_plan(_row("after", 3), [], Tracking(application_name=PlanService.name, notification_id=3)),
                lambda: old.skip(Tracking(application_name=PlanService.name, notification_id=4)),
                lambda: old.drop_plan("after", Tracking(application_name=PlanService.name, notification_id=5)),
            ]
            for write in writes:
                with pytest.raises(ReadModelSuperseded, match=f"version {READ_MODEL_VERSION}"):
                    write()
            assert new.max_tracking_id(PlanService.name) is None and new.plan_state("after") is None
            assert old.superseded is not None and new.superseded is None
            new.save_plan(_row("new", 6), [], Tracking(application_name=PlanService.name, notification_id=6))
            assert new.max_tracking_id(PlanService.name) == 6
        finally:
            new.datastore.close()
    finally:
        old.datastore.close()


def test_an_older_writers_update_of_a_row_at_the_version_it_names_is_refused_and_writes_nothing(
    settings: StoreSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The follower's usual write (a plan's row onto the version it folded from) asks the
    stored version in the update itself: a row that is at that version still refuses an
    older writer, as superseded and not as a row that moved."""
    with monkeypatch.context() as patch:
        patch.setattr(views_module, "READ_MODEL_VERSION", OLD_VERSION)
        old = open_view_store(settings)
    try:
        old.save_plan(_row("gone", 1), [], Tracking(application_name=PlanService.name, notification_id=1))
        new = open_view_store(settings)  # recreates the tables, at READ_MODEL_VERSION
        try:
            new.save_plan(_row("kept", 2), [], Tracking(application_name=PlanService.name, notification_id=2))
            for plan_id, position in (("kept", 3), ("gone", 4)):  # a row at version 1, and none at all
                onto_first = msgspec.structs.replace(_row(plan_id, position), version=2)
                with pytest.raises(ReadModelSuperseded, match=f"version {READ_MODEL_VERSION}"):
                    old.save_plan(
                        onto_first, [], Tracking(application_name=PlanService.name, notification_id=position), onto=1
                    )
            assert new.plan_state("kept")[:2] == (1, 2) and new.plan_state("gone") is None  # type: ignore[index]
            assert new.max_tracking_id(PlanService.name) == 2
            moved = msgspec.structs.replace(_row("kept", 5), version=3)
            with pytest.raises(StaleRow):  # this writer's own version: the row moved, as before
                new.save_plan(moved, [], Tracking(application_name=PlanService.name, notification_id=5), onto=2)
            assert new.superseded is None and new.max_tracking_id(PlanService.name) == 2
        finally:
            new.datastore.close()
    finally:
        old.datastore.close()


def _derived_rows(settings: StoreSettings) -> dict[str, list[dict[str, Any]]]:
    with psycopg.connect(settings.pg_conninfo, row_factory=dict_row) as conn:
        return {
            table: conn.execute(f'SELECT * FROM "{settings.pg_schema}_views".{table} ORDER BY 1, 2').fetchall()
            for table in DERIVED_TABLES
        }


@pytest.mark.postgres
@pytest.mark.parametrize("store_env", ["postgres"], indirect=True)
def test_an_instance_of_the_earlier_version_still_writing_is_fenced_and_the_new_one_ends_equal_to_a_rebuild(
    service: PlanService,
    settings: StoreSettings,
    open_views: Callable[..., PlanViews],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    random_commands(service, random.Random(1), 20, "before")
    with monkeypatch.context() as patch:
        patch.setattr(views_module, "READ_MODEL_VERSION", OLD_VERSION)
        old = open_views()
    assert wait_until(lambda: old.is_leader, 5) is not None
    assert old.wait_for(service.recorder.max_notification_id(), timeout=10)

    new = open_views()  # recreates the read model while the old instance holds the writer lock
    assert not new.is_leader
    random_commands(service, random.Random(2), 20, "mixed")
    head = service.recorder.max_notification_id()

    assert wait_until(lambda: old.superseded is not None, 10) is not None, "the old writer was not refused"
    assert wait_until(lambda: new.is_leader, 5) is not None, "the old writer kept the lock"
    assert not old.is_leader
    assert new.wait_for(head, timeout=20)
    assert new.superseded is None
    plan_ids = all_plan_ids(service)
    assert read_side(new, plan_ids) == write_side(service, plan_ids)

    open_views.close(old)  # type: ignore[attr-defined]
    open_views.close(new)  # type: ignore[attr-defined]
    followed = _derived_rows(settings)
    rebuild(settings)
    assert _derived_rows(settings) == followed
