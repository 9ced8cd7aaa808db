"""The SQLite read model commits with synchronous=NORMAL, the event store with FULL (projections.sqlite).

NORMAL may lose the read model's last commits on a power failure: losing them must only
take it back to an earlier position, from which the follower applies each later event
exactly once.
"""

from __future__ import annotations

import random
import shutil
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from domain.application import PlanService
from domain.storage import StoreSettings
from projections.plans import PlanViews
from tests.projections.helpers import all_plan_ids, caseloads, catch_up, random_commands, read_side, write_side

NORMAL, FULL = 1, 2
"""``PRAGMA synchronous`` as SQLite reports it."""


@pytest.fixture
def sqlite_settings(data_dir: Path) -> StoreSettings:
    return StoreSettings.from_environ({"POLKU_STORE": "sqlite", "POLKU_DATA_DIR": str(data_dir)})


def _synchronous(datastore: object) -> set[int]:
    """The setting of every connection the pool opened so far (and of one more, fetched now)."""
    pool = datastore.pool  # type: ignore[attr-defined]
    found = set()
    with datastore.transaction(commit=False) as cursor:  # type: ignore[attr-defined]
        cursor.execute("PRAGMA synchronous")
        found.add(cursor.fetchone()[0])
    for connection in list(pool._pool):
        found.add(connection._sqlite_conn.execute("PRAGMA synchronous").fetchone()[0])
    return found


def test_the_view_file_is_normal_and_the_event_store_stays_full(sqlite_settings: StoreSettings) -> None:
    service = PlanService(sqlite_settings)
    views = PlanViews(sqlite_settings)
    try:
        random_commands(service, random.Random(1), 5, "sync")
        catch_up(views, service)
        assert _synchronous(views.store.datastore) == {NORMAL}
        assert _synchronous(service.recorder.datastore) == {FULL}
    finally:
        views.close()
        service.close()


def test_a_read_model_that_lost_its_last_commits_applies_each_later_event_exactly_once(
    sqlite_settings: StoreSettings, applied: Counter[int]
) -> None:
    """What a power failure can do to a NORMAL file: its last commits are gone, whole."""
    view_file = Path(sqlite_settings.view_store_path)
    saved = view_file.parent / "saved"
    service = PlanService(sqlite_settings)
    try:
        views = PlanViews(sqlite_settings)
        random_commands(service, random.Random(2), 15, "before")
        earlier = catch_up(views, service)
        views.close()
        saved.mkdir()
        for part in view_file.parent.glob(f"{view_file.name}*"):
            shutil.copy2(part, saved / part.name)

        views = PlanViews(sqlite_settings)
        random_commands(service, random.Random(3), 15, "lost")
        end = catch_up(views, service)
        views.close()
        assert end > earlier
        for part in view_file.parent.glob(f"{view_file.name}*"):
            part.unlink()
        for part in saved.iterdir():
            shutil.copy2(part, view_file.parent / part.name)
        applied.clear()

        views = PlanViews(sqlite_settings)
        try:
            assert views.position == earlier
            random_commands(service, random.Random(4), 5, "after")
            final = catch_up(views, service)
            plan_ids = all_plan_ids(service)
            assert read_side(views, plan_ids) == write_side(service, plan_ids)
            stored = PlanViews(sqlite_settings, follow=False)
            try:
                assert read_side(stored, plan_ids) == read_side(views, plan_ids)  # the rows, not the cache
                assert caseloads(stored) == caseloads(views)
            finally:
                stored.close()
        finally:
            views.close()
        assert applied == Counter(range(earlier + 1, final + 1))
    finally:
        service.close()
